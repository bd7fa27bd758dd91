"""The files and directories being written through the Zarr v2 views of branches.

`Zarr2Files` holds them, by (branch, v2 key), until `icefs.fs.zarr2writes`
has stored them; `icefs.fs.namespace` and `icefs.fs.listings` show them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from icefs.fs.values import Node, NodeKind
from icefs.store import DirPos, TreeEntry
from icefs.store.zarr2 import ARRAY, ATTRS, CONSOLIDATED, GROUP

if TYPE_CHECKING:
    from icefs.fs.files import OverlayFile
    from icefs.fs.inodes import Path
    from icefs.fs.values import View

__all__ = ["DOCUMENTS", "Zarr2Files", "stored_name"]

#: A chunk's name in a v2 array directory: coordinates joined by "." (or one of them).
_CHUNK_NAME: Final = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: The v2 documents a node directory holds.
DOCUMENTS: Final = (GROUP, ARRAY, ATTRS, CONSOLIDATED)


def stored_name(name: str) -> bool:
    """Whether a file named *name* is stored (a v2 document or chunk), not scratch."""
    return name in DOCUMENTS or _CHUNK_NAME.fullmatch(name) is not None


class Zarr2Files:
    """Files and empty directories written through v2 views, by (branch, v2 key)."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], OverlayFile] = {}
        self.dirs: dict[tuple[str, str], int] = {}

    def child(self, view: View, path: Path) -> Node | None:
        """The node at *path* (a v2 view's) if it lives here."""
        key = "/".join(path[3:])
        overlay = self.files.get((view.ref, key))
        if overlay is not None:
            entry = TreeEntry(False, key, overlay.spool.size)
            return Node(path, NodeKind.TREE_FILE, view, entry, overlay=overlay)
        if (view.ref, key) in self.dirs:
            return Node(path, NodeKind.TREE_DIR, view, TreeEntry(True, pos=DirPos(key)))
        return None

    def of_branch(self, branch: str) -> list[tuple[str, OverlayFile]]:
        """The files held for *branch*, named as the branch's status names them: the v2
        key below ``zarr2/``."""
        return [(f"zarr2/{key}", f) for (ref, key), f in self.files.items() if ref == branch]

    def names_below(self, view: View, key: str) -> list[str]:
        """Names of the files and directories here directly inside *key*."""
        prefix = f"{key}/" if key else ""
        return [
            k[len(prefix) :]
            for ref, k in (*self.files, *self.dirs)
            if ref == view.ref and k.startswith(prefix) and "/" not in k[len(prefix) :] and k
        ]
