"""The icefs filesystem core: every request the kernel can make, without pyfuse3.

`IcefsCore` answers lookups, attributes, listings, opens and reads on plain
values (`Attr`, `OpenReply`, `StatFs`) and raises `IcefsError`s; the pyfuse3
adapter in `icefs.fuse_ops` only converts.  Tests call the core directly.

Namespace (see README.md)::

    /                       ROOT            branches/ tags/ snapshots/ (.icefs/ hidden)
    /.icefs/<f>             ROOT_CTRL_*     version pid stats status refresh
    /<kind>/                REF_LIST        one directory per branch / tag / snapshot
    /<kind>/<ref>/          REF_ROOT        the Zarr tree at the view's snapshot
    /<kind>/<ref>/.icefs/   REF_CTRL_*      status snapshot_id log
    /<kind>/<ref>/<key...>  TREE_DIR/FILE   groups, arrays, chunk directories, files
"""

from __future__ import annotations

import enum
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from icefs import __version__, control
from icefs.errors import (
    BadHandle,
    IcefsError,
    InvalidInput,
    IsADirectory,
    NoAttribute,
    NotADirectory,
    NotFound,
    PermissionDenied,
    ReadOnly,
)
from icefs.inodes import InodeTable, Path
from icefs.paths import CONTROL_DIR, check_name, name_to_ref, ref_to_name
from icefs.stats import Stats
from icefs.tree import DirPos, SnapshotTree, TreeEntry

if TYPE_CHECKING:
    from icefs.repo import Repo

__all__ = ["Attr", "IcefsCore", "MountOptions", "NodeKind", "OpenReply", "StatFs"]

log = logging.getLogger(__name__)

#: Kernel cache lifetime for what can never change (tag and snapshot contents).
IMMUTABLE_TTL: Final = 24 * 3600.0
#: Files up to this size are fetched whole on first read and served from the handle.
WHOLE_FETCH_LIMIT: Final = 8 * 1024 * 1024
#: Snapshot trees kept in memory (listings, metadata, chunk indexes).
TREES_KEPT: Final = 32

KINDS: Final = {"branches": "branch", "tags": "tag", "snapshots": "snapshot"}
XATTR_SNAPSHOT: Final = "user.icefs.snapshot_id"
XATTR_UNCOMMITTED: Final = "user.icefs.uncommitted"
XATTR_REF: Final = "user.icefs.ref"
XATTR_KIND: Final = "user.icefs.kind"
_ROOT_POS: Final = DirPos("")


class NodeKind(enum.Enum):
    ROOT = "root"
    ROOT_CTRL_DIR = "root control directory"
    ROOT_CTRL_FILE = "root control file"
    REF_LIST = "ref list"
    REF_ROOT = "ref root"
    REF_CTRL_DIR = "ref control directory"
    REF_CTRL_FILE = "ref control file"
    TREE_DIR = "directory"
    TREE_FILE = "file"


_DIRS: Final = frozenset({NodeKind.ROOT, NodeKind.ROOT_CTRL_DIR, NodeKind.REF_LIST,
                          NodeKind.REF_ROOT, NodeKind.REF_CTRL_DIR, NodeKind.TREE_DIR})


@dataclass(frozen=True, slots=True)
class MountOptions:
    """What the core needs to know about how it is mounted."""

    read_only: bool = False
    refresh: float = 1.0
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    mountpoint: str = ""
    storage: str = ""


@dataclass(frozen=True, slots=True)
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

    @property
    def is_dir(self) -> bool:
        return self.kind in _DIRS


@dataclass(slots=True)
class _FileHandle:
    node: Node
    tree: SnapshotTree | None = None
    data: bytes | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)


@dataclass(slots=True)
class _DirHandle:
    entries: list[Node]


class IcefsCore:
    """Serves the icefs namespace over a `Repo`."""

    def __init__(self, repo: Repo, options: MountOptions) -> None:
        self.repo = repo
        self.options = options
        self.stats = Stats()
        self.inodes = InodeTable()
        self.branches: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.last_refresh = 0.0
        self.last_error: str | None = None
        self._started_ns = time.time_ns()
        self._trees: dict[str, SnapshotTree] = {}
        self._handles: dict[int, _FileHandle | _DirHandle] = {}
        self._next_fh = 1
        self._opened_at: dict[int, str] = {}  # ino -> snapshot id of its last open (branches)
        self._refresh_wanted = trio.Event()

    # -- refs ---------------------------------------------------------------------------------

    async def refresh_refs(self) -> None:
        """Re-read every branch and tag from the repository."""
        branches, tags = await self.repo.refs()
        moved = [b for b, sid in branches.items() if self.branches.get(b, sid) != sid]
        if moved:
            log.info("branches moved: %s", ", ".join(sorted(moved)))
        self.branches, self.tags = branches, tags
        self.last_refresh = time.time()

    async def run_refresher(self) -> None:
        """Refresh refs every `MountOptions.refresh` seconds (or when asked), forever."""
        while True:
            with trio.move_on_after(self.options.refresh):
                await self._refresh_wanted.wait()
            self._refresh_wanted = trio.Event()
            try:
                await self.refresh_refs()
            except IcefsError as exc:
                self._note_error(f"refreshing refs failed: {exc}")

    def _note_error(self, message: str) -> None:
        log.warning("%s", message)
        self.last_error = message

    async def _view(self, kind: str, name: str) -> View:
        """Resolve the ref directory *name* under the list of *kind*; `NotFound` if none."""
        if kind == "snapshot":
            try:
                meta = await self.repo.snapshot(name)
            except (NotFound, InvalidInput):
                raise NotFound(f"no snapshot {name}") from None
            return View("snapshot", name, meta.id, meta.written_ns, True)
        ref = name_to_ref(name)
        if ref_to_name(ref) != name:
            raise NotFound(f"no {kind} {name}")
        known = self.branches if kind == "branch" else self.tags
        sid = known.get(ref)
        if sid is None:
            # Not seen at the last refresh: ask the repository now, so a ref made
            # elsewhere is reachable at once by name.
            try:
                lookup = self.repo.lookup_branch if kind == "branch" else self.repo.lookup_tag
                sid = await lookup(ref)
            except (NotFound, InvalidInput):
                raise NotFound(f"no {kind} {ref}") from None
            known[ref] = sid
        meta = await self.repo.snapshot(sid)
        read_only = kind != "branch" or self.options.read_only
        return View(kind, ref, sid, meta.written_ns, read_only)

    async def _tree(self, snapshot_id: str) -> SnapshotTree:
        tree = self._trees.pop(snapshot_id, None)
        if tree is None:
            tree = SnapshotTree(await self.repo.reader(snapshot_id))
            self.stats.cache_misses += 1
        else:
            self.stats.cache_hits += 1
        self._trees[snapshot_id] = tree  # most recently used last
        while len(self._trees) > TREES_KEPT:
            del self._trees[next(iter(self._trees))]
        return tree

    # -- resolution ---------------------------------------------------------------------------

    async def _child(self, parent: Node, name: str) -> Node:
        path = (*parent.path, name)
        kind = parent.kind
        if kind is NodeKind.ROOT:
            if name in KINDS:
                return Node(path, NodeKind.REF_LIST)
            if name == CONTROL_DIR:
                return Node(path, NodeKind.ROOT_CTRL_DIR)
        elif kind is NodeKind.ROOT_CTRL_DIR:
            if name in control.ROOT_FILES:
                return Node(path, NodeKind.ROOT_CTRL_FILE, ctrl=name)
        elif kind is NodeKind.REF_LIST:
            view = await self._view(KINDS[parent.path[0]], name)
            return Node(path, NodeKind.REF_ROOT, view, TreeEntry(True, pos=_ROOT_POS))
        elif kind is NodeKind.REF_CTRL_DIR:
            if name in control.REF_FILES:
                return Node(path, NodeKind.REF_CTRL_FILE, parent.view, ctrl=name)
        elif kind in (NodeKind.REF_ROOT, NodeKind.TREE_DIR):
            assert parent.view is not None
            assert parent.entry is not None
            if kind is NodeKind.REF_ROOT and name == CONTROL_DIR:
                return Node(path, NodeKind.REF_CTRL_DIR, parent.view)
            assert parent.entry.pos is not None
            tree = await self._tree(parent.view.snapshot_id)
            entry = await tree.child(parent.entry.pos, name)
            return Node(path, NodeKind.TREE_DIR if entry.is_dir else NodeKind.TREE_FILE,
                        parent.view, entry)
        else:
            raise NotADirectory("/".join(parent.path))
        raise NotFound("/".join(path))

    async def _resolve(self, path: Path) -> Node:
        """Resolve *path* from the root, against the refs as they are now."""
        node = Node((), NodeKind.ROOT)
        for name in path:
            node = await self._child(node, name)
        return node

    async def _node(self, ino: int) -> Node:
        return await self._resolve(self.inodes.path(ino))

    # -- attributes ---------------------------------------------------------------------------

    def _attr(self, node: Node, ino: int) -> Attr:
        opts = self.options
        view = node.view
        ttl = IMMUTABLE_TTL if view is not None and view.immutable else opts.refresh
        size = 0
        mtime = self._started_ns
        kind = node.kind
        if kind in (NodeKind.ROOT_CTRL_DIR, NodeKind.REF_CTRL_DIR):
            mode, ttl = stat.S_IFDIR | 0o700, IMMUTABLE_TTL
        elif kind is NodeKind.ROOT_CTRL_FILE:
            writable = node.ctrl in control.WRITABLE_ROOT_FILES
            mode, ttl = stat.S_IFREG | (0o600 if writable else 0o400), 0.0
        elif kind is NodeKind.REF_CTRL_FILE:
            mode, ttl = stat.S_IFREG | 0o400, 0.0
        elif kind in (NodeKind.ROOT, NodeKind.REF_LIST):
            read_only = opts.read_only or node.path == ("snapshots",)
            mode, ttl = stat.S_IFDIR | (0o555 if read_only else 0o755), opts.refresh
        else:
            assert view is not None
            assert node.entry is not None
            mtime = view.mtime_ns
            perm = 0o555 if view.read_only else 0o755
            if node.entry.is_dir:
                mode = stat.S_IFDIR | perm
            else:
                mode, size = stat.S_IFREG | (perm & 0o666), node.entry.size
            if kind is NodeKind.REF_ROOT:
                ttl = opts.refresh  # the ref itself can move or vanish
        return Attr(
            ino=ino,
            mode=mode,
            nlink=2 if stat.S_ISDIR(mode) else 1,
            size=size,
            mtime_ns=mtime,
            uid=opts.uid,
            gid=opts.gid,
            entry_timeout=ttl,
            attr_timeout=ttl,
        )

    def negative_timeout(self, parent: Node) -> float:
        """How long the kernel may remember that a name is absent below *parent*."""
        if parent.view is not None and parent.view.immutable and parent.kind in (
            NodeKind.TREE_DIR, NodeKind.REF_ROOT, NodeKind.REF_CTRL_DIR
        ):
            return IMMUTABLE_TTL
        return 0.0 if parent.kind is NodeKind.REF_LIST else self.options.refresh

    # -- requests -----------------------------------------------------------------------------

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        """Resolve *name* in *parent_ino*, count a kernel lookup, return its attributes.

        Raises `NotFound` (whose ``cache_for`` says how long the absence may be cached).
        """
        parent = await self._node(parent_ino)
        if name in (".", ".."):  # asked by NFS export; the kernel counts these too
            path = parent.path if name == "." else parent.path[:-1]
            return self._attr(await self._resolve(path), self.inodes.lookup(path))
        try:
            check_name(name)
        except InvalidInput:
            raise NotFound(f"no valid name {name!r}") from None  # such a file cannot exist
        if not parent.is_dir:
            raise NotADirectory("/".join(parent.path))
        try:
            node = await self._child(parent, name)
        except NotFound as exc:
            exc.cache_for = self.negative_timeout(parent)
            raise
        return self._attr(node, self.inodes.lookup(node.path))

    async def getattr(self, ino: int) -> Attr:
        """Return the attributes of *ino*."""
        return self._attr(await self._node(ino), ino)

    def forget(self, forgets: list[tuple[int, int]]) -> None:
        """Drop kernel lookups: (ino, count) pairs.  Never raises."""
        for ino, count in forgets:
            self.inodes.forget(ino, count)
            if not self.inodes.lookup_count(ino):
                self._opened_at.pop(ino, None)

    async def opendir(self, ino: int) -> int:
        """Open the directory *ino*: pin its listing to a handle and return the handle."""
        node = await self._node(ino)
        if not node.is_dir:
            raise NotADirectory("/".join(node.path))
        entries = await self._list(node)
        return self._new_handle(_DirHandle(entries))

    async def _list(self, node: Node) -> list[Node]:
        kind = node.kind
        if kind is NodeKind.ROOT:
            return [Node((name,), NodeKind.REF_LIST) for name in KINDS]
        if kind is NodeKind.ROOT_CTRL_DIR:
            return [Node((*node.path, f), NodeKind.ROOT_CTRL_FILE, ctrl=f)
                    for f in control.ROOT_FILES]
        if kind is NodeKind.REF_CTRL_DIR:
            return [Node((*node.path, f), NodeKind.REF_CTRL_FILE, node.view, ctrl=f)
                    for f in control.REF_FILES]
        if kind is NodeKind.REF_LIST:
            return await self._list_refs(node)
        assert node.view is not None
        assert node.entry is not None
        assert node.entry.pos is not None
        tree = await self._tree(node.view.snapshot_id)
        return [
            Node((*node.path, name), NodeKind.TREE_DIR if e.is_dir else NodeKind.TREE_FILE,
                 node.view, e)
            for name, e in await tree.listdir(node.entry.pos)
        ]

    async def _list_refs(self, node: Node) -> list[Node]:
        kind = KINDS[node.path[0]]
        if kind == "snapshot":
            ids = await self.snapshot_ids()
        else:
            ids = sorted(self.branches if kind == "branch" else self.tags)
        out = []
        for ref in ids:
            name = ref if kind == "snapshot" else ref_to_name(ref)
            if name is None:
                log.warning("%s %r cannot be shown as a file name; skipped", kind, ref)
                continue
            try:
                view = await self._view(kind, name)
            except NotFound:
                continue  # deleted since the refresh
            out.append(Node((*node.path, name), NodeKind.REF_ROOT, view,
                            TreeEntry(True, pos=_ROOT_POS)))
        return out

    async def snapshot_ids(self) -> list[str]:
        """Return every snapshot reachable from a branch or a tag, newest first."""
        seen: dict[str, int] = {}
        for sid in {*self.branches.values(), *self.tags.values()}:
            for meta in await self.repo.ancestry(sid):
                if meta.id in seen:
                    break
                seen[meta.id] = meta.written_ns
        return sorted(seen, key=lambda s: (-seen[s], s))

    def readdir(self, fh: int, start: int) -> list[tuple[int, str, Attr]]:
        """Return (next offset, name, attributes) of the entries from offset *start*.

        No lookup is counted: the adapter calls `entry_returned` for each entry the
        kernel took.  Offsets index the listing pinned at `opendir`.
        """
        handle = self._handles.get(fh)
        if not isinstance(handle, _DirHandle):
            raise BadHandle(f"no directory handle {fh}")
        if start > len(handle.entries):
            raise BadHandle(f"readdir offset {start} past the end")
        return [
            (i + 1, node.path[-1], self._attr(node, self.inodes.ino(node.path)))
            for i, node in enumerate(handle.entries[start:], start)
        ]

    def entry_returned(self, ino: int) -> None:
        """Count the lookup the kernel takes for an entry it accepted from readdirplus."""
        self.inodes.lookup(self.inodes.path(ino))

    def release(self, fh: int) -> None:
        """Forget the file or directory handle *fh*.  Never raises."""
        self._handles.pop(fh, None)

    def _new_handle(self, handle: _FileHandle | _DirHandle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    async def open(self, ino: int, flags: int) -> OpenReply:
        """Open the file *ino* with the open(2) *flags*."""
        node = await self._node(ino)
        if node.is_dir:
            raise IsADirectory("/".join(node.path))
        writing = (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC
        if node.kind is NodeKind.TREE_FILE:
            assert node.view is not None
            if writing:
                raise ReadOnly(f"{'/'.join(node.path)} is read-only")
            tree = await self._tree(node.view.snapshot_id)
            keep = node.view.immutable or self._opened_at.get(ino) == node.view.snapshot_id
            self._opened_at[ino] = node.view.snapshot_id
            return OpenReply(self._new_handle(_FileHandle(node, tree)), keep_cache=keep)
        if writing and node.ctrl not in control.WRITABLE_ROOT_FILES:
            raise PermissionDenied(f"{'/'.join(node.path)} is read-only")
        handle = _FileHandle(node)
        if not writing:
            handle.data = await self._render(node)
        return OpenReply(self._new_handle(handle), direct_io=True)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        """Read up to *size* bytes at *offset* from the open file *fh*."""
        handle = self._handles.get(fh)
        if not isinstance(handle, _FileHandle):
            raise BadHandle(f"no file handle {fh}")
        if handle.tree is None or handle.node.entry is None:
            data = (handle.data or b"")[offset : offset + size]
        else:
            entry = handle.node.entry
            if handle.data is None and entry.size <= WHOLE_FETCH_LIMIT:
                async with handle.lock:  # one fetch even when reads arrive together
                    if handle.data is None:
                        handle.data = await handle.tree.read_whole(entry)
            if handle.data is not None:
                data = handle.data[offset : offset + size]
            else:
                data = await handle.tree.read(entry, offset, size)
        self.stats.bytes_read += len(data)
        return data

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        """Write *data* to the open file *fh*: only writable control files accept it."""
        handle = self._handles.get(fh)
        if not isinstance(handle, _FileHandle):
            raise BadHandle(f"no file handle {fh}")
        node = handle.node
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl == "refresh":
            self._refresh_wanted.set()
            await self.refresh_refs()
            return len(data)
        raise ReadOnly(f"{'/'.join(node.path)} is read-only")

    async def truncate(self, ino: int, size: int) -> Attr:
        """Handle setattr(size): allowed only as the O_TRUNC of a writable control file."""
        node = await self._node(ino)
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl in control.WRITABLE_ROOT_FILES:
            return self._attr(node, ino)
        if node.is_dir:
            raise IsADirectory("/".join(node.path))
        raise ReadOnly(f"{'/'.join(node.path)} is read-only")

    async def refuse_write(self, ino: int, op: str) -> None:
        """Answer a namespace-changing *op* on or below *ino*: EROFS (writes come later)."""
        node = await self._node(ino)
        raise ReadOnly(f"{op} on {'/'.join(node.path) or '/'}: read-only")

    async def access(self, ino: int, mode: int) -> None:
        """Check access(2) *mode*: writes are refused with EROFS where nothing is writable."""
        node = await self._node(ino)
        if mode & os.W_OK and not (
            node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl in control.WRITABLE_ROOT_FILES
        ):
            raise ReadOnly("/".join(node.path))

    def statfs(self) -> StatFs:
        """Return filesystem-wide numbers (capacity is that of the object store: unbounded)."""
        blocks = 1 << 40
        return StatFs(bsize=4096, blocks=blocks, bfree=0 if self.options.read_only else blocks,
                      files=1 << 32, ffree=1 << 31, namemax=255)

    async def getxattr(self, ino: int, name: str) -> bytes:
        """Return the extended attribute *name* of *ino*; `NoAttribute` if it has none."""
        values = await self._xattrs(await self._node(ino))
        if name not in values:
            raise NoAttribute(name)
        return values[name]

    async def listxattr(self, ino: int) -> list[str]:
        """Return the names of the extended attributes of *ino*."""
        return sorted(await self._xattrs(await self._node(ino)))

    async def _xattrs(self, node: Node) -> dict[str, bytes]:
        if node.kind is not NodeKind.REF_ROOT or node.view is None:
            return {}
        view = node.view
        return {
            XATTR_SNAPSHOT: view.snapshot_id.encode(),
            XATTR_UNCOMMITTED: b"0",
            XATTR_REF: view.ref.encode(),
            XATTR_KIND: view.kind.encode(),
        }

    # -- control files ------------------------------------------------------------------------

    async def _render(self, node: Node) -> bytes:
        name = node.ctrl
        if node.kind is NodeKind.ROOT_CTRL_FILE:
            if name == "version":
                return f"{__version__}\n".encode()
            if name == "pid":
                return f"{os.getpid()}\n".encode()
            if name == "stats":
                return control.render_json(self.stats.as_json())
            if name == "refresh":
                return f"{self.options.refresh:g}\n".encode()
            if name == "status":
                return control.render_json(self.mount_status())
        view = node.view
        assert view is not None
        if name == "snapshot_id":
            return f"{view.snapshot_id}\n".encode()
        if name == "log":
            return control.render_log(await self.repo.ancestry(view.snapshot_id))
        if name == "status":
            return control.render_json(self.view_status(view))
        raise NotFound(name)

    def mount_status(self) -> dict[str, object]:
        """Return the mount-wide status document."""
        return {
            "version": __version__,
            "pid": os.getpid(),
            "storage": self.options.storage,
            "mountpoint": self.options.mountpoint,
            "read_only": self.options.read_only,
            "refresh_seconds": self.options.refresh,
            "branches": len(self.branches),
            "tags": len(self.tags),
            "last_refresh": (control.render_time(int(self.last_refresh * 1e9))
                             if self.last_refresh else None),
            "last_error": self.last_error,
        }

    def view_status(self, view: View) -> dict[str, object]:
        """Return the status document of one ref view."""
        return {
            "ref": view.ref,
            "kind": view.kind,
            "snapshot_id": view.snapshot_id,
            "read_only": view.read_only,
            "has_uncommitted_changes": False,
            "changed_nodes": 0,
            "changed_chunks": 0,
            "scratch_files": [],
            "last_commit": None,
            "last_error": self.last_error,
        }

