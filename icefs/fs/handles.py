"""Open files and directories: one class per kind of handle, and the table of them.

* `TreeFile`: a file of a snapshot tree opened for reading (a tag's chunk, a
  branch's committed file); fetched whole on first read when small.
* `Buffered`: a file whose bytes live in the mount, in an `OverlayFile`: being
  written, a scratch file, or unlinked while open.
* `Command`: a control file opened for writing (commit, discard, reset, branch,
  tag, refresh).
* `Query`: a query file (diff, log, ops) opened for writing: a JSON request
  in, its JSON answer read back.
* `Text`: a control file opened for reading, its text rendered at open.
* `Listing`: a directory, its entries pinned at open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from icefs.errors import BadHandle

if TYPE_CHECKING:
    from collections.abc import Buffer

    import numpy as np

    from icefs.fs.branch import BranchState
    from icefs.fs.files import OverlayFile
    from icefs.fs.values import Attr, Node
    from icefs.store import SnapshotTree

__all__ = [
    "Buffered",
    "ChunkFiles",
    "Command",
    "FileHandle",
    "HandleTable",
    "Listing",
    "Query",
    "Text",
    "TreeFile",
]


@dataclass(slots=True)
class TreeFile:
    node: Node
    #: the inode the kernel opened
    ino: int
    tree: SnapshotTree
    #: the whole file once fetched (Icechunk's buffer)
    data: Buffer | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass(slots=True)
class Buffered:
    node: Node
    ino: int
    overlay: OverlayFile
    #: the branch its bytes are stored into; None once unlinked (nothing is stored then)
    branch: BranchState | None


@dataclass(slots=True)
class Command:
    node: Node
    ino: int
    #: who opened it (a commit records them)
    uid: int | None = None
    #: whether anything was written (a close with nothing written commits nothing)
    wrote: bool = False


@dataclass(slots=True)
class Query:
    node: Node
    ino: int
    #: the JSON answer to the request written last (None: nothing asked yet)
    answer: bytes | None = None


@dataclass(slots=True)
class Text:
    node: Node
    ino: int
    data: bytes


@dataclass(slots=True)
class Listing:
    entries: list[Node]
    #: *entries* is the kept listing of a tag or snapshot directory (`Listings.listing`):
    #: the same object for every handle of that directory, and it never changes
    fixed: bool = False
    #: what the FUSE adapter built once from a fixed listing (opaque to the core)
    replies: object = None
    #: a tag's or snapshot's chunk directory of files, held as arrays instead of
    #: *entries* (empty then): a directory of a million chunks costs no object each
    chunks: ChunkFiles | None = None

    @property
    def count(self) -> int:
        return len(self.chunks.names) if self.chunks is not None else len(self.entries)


@dataclass(slots=True)
class ChunkFiles:
    """The chunk files of one directory of an immutable tree, in the order of their names
    as integers: numbered from *first_ino* on (`InodeTable.number`)."""

    names: np.ndarray[Any, Any]
    sizes: np.ndarray[Any, Any]
    first_ino: int
    #: the attributes every file shares (size and inode set per file)
    template: Attr


FileHandle = TreeFile | Buffered | Command | Query | Text


class HandleTable:
    """Handle numbers given to the kernel and what each stands for."""

    def __init__(self) -> None:
        self._handles: dict[int, FileHandle | Listing] = {}
        self._next = 1

    def add(self, handle: FileHandle | Listing) -> int:
        """Keep *handle*; return its number."""
        fh = self._next
        self._next += 1
        self._handles[fh] = handle
        return fh

    def file(self, fh: int) -> FileHandle:
        """The open file *fh*; `BadHandle` if it is none."""
        handle = self._handles.get(fh)
        if handle is None or isinstance(handle, Listing):
            raise BadHandle(f"no file handle {fh}")
        return handle

    def listing(self, fh: int, start: int) -> Listing:
        """The open directory *fh*, checked for a readdir from offset *start*."""
        handle = self._handles.get(fh)
        if not isinstance(handle, Listing):
            raise BadHandle(f"no directory handle {fh}")
        if start > handle.count:
            raise BadHandle(f"readdir offset {start} past the end")
        return handle

    def pop(self, fh: int) -> FileHandle | Listing | None:
        """Forget *fh*; return what it was (None if nothing)."""
        return self._handles.pop(fh, None)

    def replace(self, fh: int, handle: FileHandle) -> None:
        """Let *fh* stand for *handle* from now on (a reader that must keep its bytes)."""
        self._handles[fh] = handle

    def of_inode(self, ino: int | None) -> list[tuple[int, FileHandle]]:
        """The open files of the inode *ino*, with their numbers."""
        if ino is None:
            return []
        return [
            (fh, h)
            for fh, h in self._handles.items()
            if not isinstance(h, Listing) and h.ino == ino
        ]

    def buffered(self) -> list[tuple[int, Buffered]]:
        """Every open file whose bytes live in the mount."""
        return [(fh, h) for fh, h in self._handles.items() if isinstance(h, Buffered)]
