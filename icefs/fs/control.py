"""The hidden control directories: which files exist and what they say.

Rendering is pure; `icefs.fs.core` gathers the facts and calls these functions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from icefs.store.repo import SnapshotMeta

__all__ = [
    "BRANCH_COMMANDS",
    "REF_COMMANDS",
    "REF_FILES",
    "ROOT_FILES",
    "WRITABLE_ROOT_FILES",
    "ref_files",
    "render_json",
    "render_log",
    "render_time",
    "writable_files",
]

#: Files of the mount-wide ``.icefs/``.
ROOT_FILES: Final = ("pid", "refresh", "stats", "status", "version")
#: Root control files that accept writes (``refresh``: re-read refs now).
WRITABLE_ROOT_FILES: Final = frozenset({"refresh"})
#: Read-only files of each ref view's ``.icefs/``.
REF_FILES: Final = ("log", "snapshot_id", "status")
#: Files of a writable branch's ``.icefs/`` that take commands.
BRANCH_COMMANDS: Final = frozenset({"commit", "discard"})
#: Files of every ref view's ``.icefs/`` that make refs: a branch or a tag at its snapshot.
REF_COMMANDS: Final = frozenset({"branch", "tag"})


def ref_files(read_only: bool) -> tuple[str, ...]:
    """Return the names in a ref view's ``.icefs/`` (commit/discard only on branches)."""
    commands = REF_COMMANDS if read_only else REF_COMMANDS | BRANCH_COMMANDS
    return tuple(sorted((*REF_FILES, *commands)))


def writable_files(root: bool) -> frozenset[str]:
    """Return the control files that accept writes, in the root or in a ref's ``.icefs/``."""
    return WRITABLE_ROOT_FILES if root else BRANCH_COMMANDS | REF_COMMANDS


def render_time(ns: int) -> str:
    """Return the epoch nanoseconds *ns* as an ISO 8601 UTC time with seconds."""
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_json(doc: dict[str, Any]) -> bytes:
    """Return *doc* as indented JSON with a final newline."""
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def render_log(history: list[SnapshotMeta]) -> bytes:
    """Return one line per snapshot, newest first: id, time, message (first line only)."""
    lines = []
    for meta in history:
        message = meta.message.splitlines()[0] if meta.message else ""
        lines.append(f"{meta.id}  {render_time(meta.written_ns)}  {message}\n")
    return "".join(lines).encode()
