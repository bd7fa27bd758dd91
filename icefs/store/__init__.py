"""The storage layer: Icechunk behind one bridge, snapshots as Zarr trees.

The core (`icefs.fs`) uses what is named here: `Repo` (refs, snapshots, readers),
`Bridge` (the only way into Icechunk's asyncio), `SnapshotTree` and the layout
values it resolves paths to.  Modules with one user import their own module.
"""

from __future__ import annotations

from icefs.store.bridge import Bridge
from icefs.store.layout import CHUNK_DIR, DirPos, KeyClass, KeyKind, TreeEntry
from icefs.store.repo import Repo
from icefs.store.tree import SnapshotTree

__all__ = [
    "CHUNK_DIR",
    "Bridge",
    "DirPos",
    "KeyClass",
    "KeyKind",
    "Repo",
    "SnapshotTree",
    "TreeEntry",
]
