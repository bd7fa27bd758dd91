"""The plain values the filesystem core works with and answers in.

Namespace (docs/semantics.md)::

    /                       ROOT            branches/ tags/ snapshots/ (.icefs/ hidden)
    /.icefs/<f>             ROOT_CTRL_*     version pid stats status refresh
    /<kind>/                REF_LIST        one directory per branch / tag / snapshot
    /<kind>/<ref>/          REF_ROOT        the Zarr tree at the view's snapshot
    /<kind>/<ref>/.icefs/   REF_CTRL_*      status snapshot_id log commit ...
    /<kind>/<ref>/<key...>  TREE_DIR/FILE   groups, arrays, chunk directories, files
    /zarr2/ /zarr2-decoded/ RENDERING       the same ref lists, each ref's tree in Zarr v2

A `Node` is a resolved path; `Attr`, `OpenReply` and `StatFs` are what requests
answer.  Nothing here does I/O.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from icefs.settings import WriteBehind, setting_field
from icefs.store import DirPos

if TYPE_CHECKING:
    from icefs.fs.files import OverlayFile
    from icefs.fs.inodes import Path
    from icefs.store import TreeEntry

__all__ = [
    "IMMUTABLE_TTL",
    "KINDS",
    "RENDERINGS",
    "Attr",
    "AttrChange",
    "Caller",
    "Invalidator",
    "MountOptions",
    "Node",
    "NodeKind",
    "OpenReply",
    "StatFs",
    "View",
    "rendered",
]

#: Kernel cache lifetime for what can never change (tag and snapshot contents).
IMMUTABLE_TTL: Final = 24 * 3600.0
#: The ref lists at the root, and the kind of ref each holds.
KINDS: Final = {"branches": "branch", "tags": "tag", "snapshots": "snapshot"}
#: The directories at the root that show every ref again in another rendering of its
#: tree (icefs.store.zarr2tree): Zarr v2 with the chunks' own bytes (its branches take
#: v2 writes, icefs.fs.zarr2writes), and Zarr v2 with each chunk decoded (read-only).
#: Paths below them are one name longer.
RENDERINGS: Final = ("zarr2", "zarr2-decoded")


def rendered(path: Path) -> bool:
    """Whether *path* lies below one of `RENDERINGS` (where refs are neither made nor
    removed)."""
    return bool(path) and path[0] in RENDERINGS


#: Where a ref's tree starts.
ROOT_POS: Final = DirPos("")
#: First name of the path an unlinked open file is shown under (no name can hold NUL).
GONE: Final = "\0unlinked"
#: rename(2) flags (linux/fs.h).
RENAME_NOREPLACE: Final = 1
RENAME_EXCHANGE: Final = 2


class NodeKind(enum.Enum):
    ROOT = "root"
    ROOT_CTRL_DIR = "root control directory"
    ROOT_CTRL_FILE = "root control file"
    RENDERING = "rendering"
    REF_LIST = "ref list"
    REF_ROOT = "ref root"
    REF_CTRL_DIR = "ref control directory"
    REF_CTRL_FILE = "ref control file"
    TREE_DIR = "directory"
    TREE_FILE = "file"


IMMUTABLE_DIR: Final = stat.S_IFDIR | 0o555
IMMUTABLE_FILE: Final = stat.S_IFREG | 0o444
_DIRS: Final = frozenset(
    {
        NodeKind.ROOT,
        NodeKind.ROOT_CTRL_DIR,
        NodeKind.RENDERING,
        NodeKind.REF_LIST,
        NodeKind.REF_ROOT,
        NodeKind.REF_CTRL_DIR,
        NodeKind.TREE_DIR,
    }
)


class Invalidator(Protocol):
    """What the FUSE adapter offers to drop kernel caches (never raises)."""

    def inode(self, ino: int) -> None: ...

    def entry(self, parent_ino: int, name: str) -> None: ...

    async def entries(self, names: list[tuple[int, str]]) -> None:
        """Drop the cached (parent inode, name) entries and return when the kernel has."""


class NoKernel:
    """An `Invalidator` for a core that no kernel caches (tests, the core model)."""

    def inode(self, ino: int) -> None:
        pass

    def entry(self, parent_ino: int, name: str) -> None:
        pass

    async def entries(self, names: list[tuple[int, str]]) -> None:
        pass


@dataclass(frozen=True, slots=True)
class MountOptions:
    """What the core needs to know about how it is mounted.

    Fields named like a setting hold that setting (`icefs.settings.pick` fills them).
    """

    read_only: bool = setting_field("read_only")
    refresh: float = setting_field("refresh")
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    mountpoint: str = ""
    #: the repository, as logs and status show it (no secrets)
    storage: str = ""
    #: the repository is on object storage (s3, gcs, azure): each request is a round trip
    remote: bool = False
    write_buffer: int = setting_field("write_buffer")
    read_ahead_memory: int = setting_field("read_ahead_memory")
    #: one budget for chunk indexes, node metadata, listings and resolved paths
    metadata_memory: int = setting_field("metadata_memory")
    #: seconds a commit may take before its caller gets `TimedOut` (it may still land)
    commit_timeout: float = setting_field("commit_timeout")
    #: whether closes leave the store of a chunk to the background (`icefs.fs.uploads`)
    write_behind: WriteBehind = WriteBehind.OFF
    cache_dir: str = ""
    default_branch: str = setting_field("default_branch")
    #: "decode": compressed chunks are decoded with their array's codecs before storing
    verify_chunks: str = setting_field("verify_chunks")
    #: the virtual chunk containers the repository declares: prefix, store, authorized, access
    virtual_containers: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True)  # not frozen: cheaper to build, and readdir builds one per entry
class Attr:
    """Attributes of one inode plus how long the kernel may cache them."""

    ino: int
    mode: int
    nlink: int
    size: int
    mtime_ns: int
    uid: int
    gid: int
    entry_timeout: float
    attr_timeout: float
    #: 0: the same as mtime_ns (what is never changed through the mount)
    atime_ns: int = 0
    ctime_ns: int = 0


@dataclass(frozen=True, slots=True)
class AttrChange:
    """What a setattr asks for; None leaves that attribute alone."""

    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None

    @property
    def touches_stamp(self) -> bool:
        return any(
            v is not None for v in (self.mode, self.uid, self.gid, self.atime_ns, self.mtime_ns)
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a file or directory, and the mode asked for (create, mkdir, mknod)."""

    uid: int
    gid: int
    #: the permission bits asked for (the kernel applied the caller's umask already)
    mode: int
    umask: int = 0

    @property
    def perm(self) -> int:
        return self.mode & 0o7777 & ~self.umask


@dataclass(frozen=True, slots=True)
class OpenReply:
    fh: int
    keep_cache: bool = False
    direct_io: bool = False


@dataclass(frozen=True, slots=True)
class StatFs:
    bsize: int
    blocks: int
    bfree: int
    files: int
    ffree: int
    namemax: int


@dataclass(frozen=True, slots=True)
class View:
    """A ref as the mount shows it: kind, name and the snapshot it stands on."""

    kind: str  # "branch", "tag" or "snapshot"
    ref: str
    snapshot_id: str
    mtime_ns: int
    read_only: bool
    #: "" for the Zarr v3 tree, else one of `RENDERINGS`
    render: str = ""

    @property
    def immutable(self) -> bool:
        return self.kind != "branch"


@dataclass(frozen=True, slots=True)
class Node:
    """A resolved path: what it is, in which view, and its tree entry or control file name."""

    path: Path
    kind: NodeKind
    view: View | None = None
    entry: TreeEntry | None = None
    ctrl: str = ""
    #: For a file that lives in the mount (being written, or scratch).
    overlay: OverlayFile | None = None
    #: An unlinked file still open: no name, link count 0 (see `Namespace.orphans`)
    orphan: bool = False

    @property
    def key(self) -> str:
        """The path inside the ref ('' for the ref's root)."""
        if self.view is not None and self.view.render:
            return "/".join(self.path[3:])
        return "/".join(self.path[2:])

    @property
    def is_dir(self) -> bool:
        return self.kind in _DIRS
