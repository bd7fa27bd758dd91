"""The icefs filesystem core: every request the kernel can make, without pyfuse3.

`IcefsCore` answers lookups, attributes, listings, opens and reads on plain
values (`Attr`, `OpenReply`, `StatFs`) and raises `IcefsError`s; the pyfuse3
adapter in `icefs.fuse.ops` only converts.  Tests call the core directly.

Namespace (see README.md)::

    /                       ROOT            branches/ tags/ snapshots/ (.icefs/ hidden)
    /.icefs/<f>             ROOT_CTRL_*     version pid stats status refresh
    /<kind>/                REF_LIST        one directory per branch / tag / snapshot
    /<kind>/<ref>/          REF_ROOT        the Zarr tree at the view's snapshot
    /<kind>/<ref>/.icefs/   REF_CTRL_*      status snapshot_id log
    /<kind>/<ref>/<key...>  TREE_DIR/FILE   groups, arrays, chunk directories, files
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import logging
import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import trio

from icefs import __version__
from icefs.daemon.journal import Journal
from icefs.errors import (
    BadHandle,
    CrossDevice,
    Exists,
    FileTooLarge,
    IcefsError,
    InvalidInput,
    IsADirectory,
    NoAttribute,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    PermissionDenied,
    ReadOnly,
    Stale,
)
from icefs.fs import control
from icefs.fs.branch import BranchState, OverlayFile, describe_leftovers
from icefs.fs.inodes import InodeTable, Path
from icefs.fs.spool import SpoolBudget, SpoolFile
from icefs.fs.stats import Stats
from icefs.paths import (
    CONTROL_DIR,
    METADATA_NAME,
    check_name,
    check_ref_name,
    name_to_ref,
    ref_to_name,
)
from icefs.settings import SETTINGS
from icefs.store.prefetch import Prefetcher
from icefs.store.tree import DirPos, SnapshotTree, TreeEntry

if TYPE_CHECKING:
    from collections.abc import Buffer, Iterator

    from icefs.store.repo import Repo

__all__ = ["Attr", "AttrChange", "IcefsCore", "MountOptions", "NodeKind", "OpenReply", "StatFs"]

#: rename(2) flags (linux/fs.h).
RENAME_NOREPLACE: Final = 1
RENAME_EXCHANGE: Final = 2

log = logging.getLogger(__name__)

#: Kernel cache lifetime for what can never change (tag and snapshot contents).
IMMUTABLE_TTL: Final = 24 * 3600.0
#: Files up to this size are fetched whole on first read and served from the handle.
WHOLE_FETCH_LIMIT: Final = 8 * 1024 * 1024
#: Snapshot trees kept in memory (listings, metadata, chunk indexes).
TREES_KEPT: Final = 32
#: Entries of tag and snapshot directory listings kept, over all directories.
LISTED_ENTRIES_KEPT: Final = 150_000  # about 400 bytes each: 60 MB
#: Resolved paths of tags and snapshots kept (see `_resolve`); all dropped when full.
RESOLVED_KEPT: Final = 50_000
#: Resolved directories of branches kept (see `_resolve_in_branch`); all dropped when full.
BRANCH_DIRS_KEPT: Final = 50_000

KINDS: Final = {"branches": "branch", "tags": "tag", "snapshots": "snapshot"}
XATTR_SNAPSHOT: Final = "user.icefs.snapshot_id"
XATTR_UNCOMMITTED: Final = "user.icefs.uncommitted"
XATTR_REF: Final = "user.icefs.ref"
XATTR_KIND: Final = "user.icefs.kind"
XATTR_PREFIX: Final = "user.icefs."
_ROOT_POS: Final = DirPos("")
#: First name of the path an unlinked open file is shown under (no name can hold NUL).
_GONE: Final = "\0unlinked"


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "icefs")


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


_IMMUTABLE_DIR: Final = stat.S_IFDIR | 0o555
_IMMUTABLE_FILE: Final = stat.S_IFREG | 0o444
_DIRS: Final = frozenset(
    {
        NodeKind.ROOT,
        NodeKind.ROOT_CTRL_DIR,
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


@dataclass(frozen=True, slots=True)
class MountOptions:
    """What the core needs to know about how it is mounted."""

    read_only: bool = False
    refresh: float = SETTINGS["refresh"].default
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    mountpoint: str = ""
    storage: str = ""
    write_buffer: int = SETTINGS["write_buffer"].default
    cache_dir: str = ""
    default_branch: str = SETTINGS["default_branch"].default
    #: keep uncommitted sessions in the cache dir's crash journal
    journal: bool = True
    #: "decode": compressed chunks are decoded with their array's codecs before storing
    verify_chunks: str = SETTINGS["verify_chunks"].default


@dataclass(slots=True)  # not frozen: 3x cheaper to build, and readdir builds one per entry
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
    #: For a file that lives in the mount (being written, or scratch).
    overlay: OverlayFile | None = None
    #: An unlinked file still open: no name, link count 0 (see `IcefsCore._orphans`)
    orphan: bool = False

    @property
    def key(self) -> str:
        """The path inside the ref ('' for the ref's root)."""
        return "/".join(self.path[2:])

    @property
    def is_dir(self) -> bool:
        return self.kind in _DIRS


@dataclass(slots=True)
class _FileHandle:
    node: Node
    #: the inode the kernel opened (an unlinked file lives on under it: `_orphans`)
    ino: int
    tree: SnapshotTree | None = None
    #: the whole file: a tree file fetched whole (Icechunk's buffer), or rendered control text
    data: Buffer | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    overlay: OverlayFile | None = None
    branch: BranchState | None = None
    #: A control file opened for writing; `wrote` tells whether anything arrived.
    command: bool = False
    wrote: bool = False


@dataclass(slots=True)
class _DirHandle:
    entries: list[Node]
    #: *entries* is the cached listing of a tag or snapshot directory (see `_list`)
    fixed: bool = False


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
        self.last_error_at: str | None = None
        self._refresh_failed = False
        self._started_ns = time.time_ns()
        self._trees: dict[str, SnapshotTree] = {}
        #: read-ahead across the chunk files of tags and snapshots (runs once `run` does)
        self.prefetcher = Prefetcher(largest=WHOLE_FETCH_LIMIT)
        #: listings of immutable directories, oldest first (see `_list`)
        self._listings: OrderedDict[tuple[View, Path], list[Node]] = OrderedDict()
        self._listed_entries = 0
        self._resolved: dict[Path, Node] = {}
        #: directories inside branches: node, the stamp it was resolved under (see
        #: `_resolve_in_branch`), and whether it was an empty directory made by mkdir
        self._branch_dirs: dict[Path, tuple[Node, tuple[object, ...], bool]] = {}
        self._handles: dict[int, _FileHandle | _DirHandle] = {}
        #: files unlinked (or replaced by a rename) while open, by inode: fstat, read and
        #: write through their descriptors go on until the last one is closed
        self._orphans: dict[int, Node] = {}
        self._next_fh = 1
        self._opened_at: dict[int, str] = {}  # ino -> snapshot id of its last open (branches)
        self._refresh_wanted = trio.Event()
        self.branch_states: dict[str, BranchState] = {}
        #: bumped by every change of `branches`/`tags` made here (see `refresh_refs`)
        self._refs_generation = 0
        #: set by the FUSE adapter: tells the kernel to drop cached inodes and names
        self.invalidator: Invalidator | None = None
        self.unmount_failures: list[str] = []
        cache_dir = options.cache_dir or _default_cache_dir()
        self.spool = SpoolBudget(options.write_buffer, cache_dir)
        # one journal per repository *and* mountpoint: two live mounts of a repository
        # must not overwrite (or later restore) each other's sessions
        self.journal = Journal(
            cache_dir if options.journal else "", f"{options.storage} at {options.mountpoint}"
        )

    # -- refs ---------------------------------------------------------------------------------

    async def refresh_refs(self) -> None:
        """Re-read every branch and tag from the repository."""
        # A commit, discard or ref change made here while the refs were being read is
        # newer than what was read: read again rather than put a branch back to its old
        # tip (seen: a just-committed chunk vanished for a refresh interval).
        for _ in range(5):
            generation = self._refs_generation
            branches, tags = await self.repo.refs()
            if generation == self._refs_generation:
                break
        else:
            return
        # A ref this mount knew that is missing from the listing is asked for by name
        # before it goes: a branch that exists must never vanish from the view.
        for known, found, lookup in (
            (self.branches, branches, self.repo.lookup_branch),
            (self.tags, tags, self.repo.lookup_tag),
        ):
            for ref in [r for r in known if r not in found]:
                with contextlib.suppress(NotFound, InvalidInput):
                    found[ref] = await lookup(ref)
        if generation != self._refs_generation:
            return  # changed here while we asked: the next refresh reads again
        moved = [b for b, sid in branches.items() if self.branches.get(b, sid) != sid]
        if moved:
            log.info("branches moved: %s", ", ".join(sorted(moved)))
        self.branches, self.tags = branches, tags
        self.last_refresh = time.time()
        if self._refresh_failed:
            self.last_error = self.last_error_at = None
            self._refresh_failed = False

    async def run_refresher(self) -> None:
        """Refresh refs every `MountOptions.refresh` seconds (or when asked), forever."""
        while True:
            with trio.move_on_after(self.options.refresh):
                await self._refresh_wanted.wait()
            self._refresh_wanted = trio.Event()
            try:
                await self.refresh_refs()
            except IcefsError as exc:
                self.note_error(f"refreshing refs failed: {exc}", refreshing=True)

    def note_error(self, message: str, *, refreshing: bool = False) -> None:
        """Log *message* as a warning and show it as the root status's `last_error`.

        An error *refreshing* the refs is cleared by the next refresh that works.
        """
        log.warning("%s", message)
        self.last_error = message
        self.last_error_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._refresh_failed = refreshing

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
        state = self.branch_states.get(ref) if kind == "branch" else None
        if state is not None and state.writer is not None:
            sid = state.writer.base_snapshot_id  # the session's base, not the moving tip
        try:
            meta = await self.repo.snapshot(sid)
        except (NotFound, InvalidInput):
            # The tip we knew is gone (moved by a reset, or dropped by a writer that
            # raced on local disk): the ref stays, at where the repository has it now.
            if state is not None and state.writer is not None:
                raise
            lookup = self.repo.lookup_branch if kind == "branch" else self.repo.lookup_tag
            try:
                sid = known[ref] = await lookup(ref)
            except (NotFound, InvalidInput):
                raise NotFound(f"no {kind} {ref}") from None
            meta = await self.repo.snapshot(sid)
        read_only = kind != "branch" or self.options.read_only
        return View(kind, ref, sid, meta.written_ns, read_only)

    async def _tree_for(self, view: View) -> SnapshotTree:
        """Return the tree a view shows: a branch's session while it is being written."""
        if view.kind == "branch":
            state = self.branch_states.get(view.ref)
            if state is not None and state.tree is not None:
                return state.tree
        return await self._tree(view.snapshot_id)

    def _branch(self, view: View | None) -> BranchState:
        """Return the state of a writable branch view; `ReadOnly` for anything else."""
        if view is None or view.read_only:
            raise ReadOnly("read-only" if view is None else f"{view.kind} {view.ref} is read-only")
        return self._branch_state(view.ref)

    def _branch_state(self, branch: str) -> BranchState:
        state = self.branch_states.get(branch)
        if state is None:
            state = self.branch_states[branch] = BranchState(
                branch,
                self.repo,
                self.journal,
                on_commit=self._committed,
                decode_chunks=self.options.verify_chunks == "decode",
            )
        return state

    def _committed(self, branch: str, sid: str) -> None:
        # Called by the commit the moment its session is dropped, before any other
        # task runs: the branch view must go from the session to the new tip, never
        # back to the old tip in between (a reader saw old chunks, or ENOENT for new ones).
        self.branches[branch] = sid
        self._refs_generation += 1

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
            assert parent.view is not None
            if name in control.ref_files(parent.view.read_only):
                return Node(path, NodeKind.REF_CTRL_FILE, parent.view, ctrl=name)
        elif kind in (NodeKind.REF_ROOT, NodeKind.TREE_DIR):
            assert parent.view is not None
            assert parent.entry is not None
            if kind is NodeKind.REF_ROOT and name == CONTROL_DIR:
                return Node(path, NodeKind.REF_CTRL_DIR, parent.view)
            overlaid = self._overlay_child(parent.view, path)
            if overlaid is not None:
                return overlaid
            assert parent.entry.pos is not None
            tree = await self._tree_for(parent.view)
            entry = await tree.child(parent.entry.pos, name)
            return Node(
                path, NodeKind.TREE_DIR if entry.is_dir else NodeKind.TREE_FILE, parent.view, entry
            )
        else:
            raise NotADirectory("/".join(parent.path))
        raise NotFound("/".join(path))

    def _overlay_child(self, view: View, path: Path) -> Node | None:
        """Return the node at *path* if it lives in the branch's overlay."""
        state = self.branch_states.get(view.ref) if view.kind == "branch" else None
        if state is None:
            return None
        key = "/".join(path[2:])
        overlay = state.files.get(key)
        if overlay is not None:
            return Node(
                path,
                NodeKind.TREE_FILE,
                view,
                TreeEntry(False, key, overlay.spool.size),
                overlay=overlay,
            )
        if key in state.dirs:
            return Node(path, NodeKind.TREE_DIR, view, TreeEntry(True, pos=DirPos(key)))
        return None

    async def _resolve(self, path: Path) -> Node:
        """Resolve *path* from the root, against the refs as they are now.

        Paths in tags and snapshots resolve once: what they name never changes
        while the tag stands at the same snapshot.  Resolving walks every name
        from the root, which was most of the daemon's time in the lookup, open
        and getattr of each small random read.  Paths in branches start from a
        directory resolved before (`_resolve_in_branch`).
        """
        if len(path) >= 2 and path[0] == "branches":
            return await self._resolve_in_branch(path)
        node = self._known(path)
        if node is not None:
            return node
        node = Node((), NodeKind.ROOT)
        for name in path:
            node = await self._child(node, name)
        return self._remember(node)

    async def _resolve_in_branch(self, path: Path) -> Node:
        """Resolve *path* inside a branch, from its directory or parent resolved before.

        Every request of a write names a path in a branch; walking it from the root
        was a sixth of the daemon's busy time while zarr wrote chunks. A directory
        kept is used only while its stamp still holds and it is still (or still not)
        an empty directory made by mkdir (the first store below such a directory
        turns it into one of the tree's).
        """
        ref = name_to_ref(path[1])
        state = self.branch_states.get(ref)
        # what its directories resolve against: the tip, the state here and its layout
        stamp = (self.branches.get(ref), state, state.layout if state is not None else 0)
        node = self._branch_dir(path, stamp, state)
        if node is not None:
            return node
        start = len(path) - 1
        parent = self._branch_dir(path[:-1], stamp, state)
        if parent is None:
            parent, start = Node((), NodeKind.ROOT), 0
        for name in path[start:]:
            parent = await self._child(parent, name)
            if parent.kind is NodeKind.TREE_DIR or parent.kind is NodeKind.REF_ROOT:
                if len(self._branch_dirs) >= BRANCH_DIRS_KEPT:
                    self._branch_dirs.clear()
                made = state is not None and parent.key in state.dirs
                self._branch_dirs[parent.path] = (parent, stamp, made)
        return parent

    def _branch_dir(
        self, path: Path, stamp: tuple[object, ...], state: BranchState | None
    ) -> Node | None:
        kept = self._branch_dirs.get(path)
        if kept is None or kept[1] != stamp:
            return None
        node, _, made = kept
        if state is not None and (node.key in state.dirs) != made:
            return None
        return node

    def _known(self, path: Path) -> Node | None:
        """The node `_remember` kept for *path*, unless its tag has gone or moved since."""
        node = self._resolved.get(path)
        if (
            node is None
            or node.view is None
            or (node.view.kind == "tag" and self.tags.get(node.view.ref) != node.view.snapshot_id)
        ):
            return None
        return node

    def _remember(self, node: Node) -> Node:
        """Keep *node* for `_resolve` if it lies in a tag or snapshot; return it."""
        if node.view is not None and node.view.immutable:
            if len(self._resolved) >= RESOLVED_KEPT:
                self._resolved.clear()
            self._resolved[node.path] = node
        return node

    async def _node(self, ino: int) -> Node:
        orphan = self._orphans.get(ino)
        if orphan is not None:
            return orphan
        path = self.inodes.path(ino)
        try:
            return await self._resolve(path)
        except NotFound:
            if len(path) >= 2 and path[0] in ("branches", "tags"):
                known = self.branches if path[0] == "branches" else self.tags
                if name_to_ref(path[1]) not in known:
                    # Something the kernel holds (an open file, a cwd) inside a ref that
                    # was deleted: stale, not merely missing.
                    raise Stale(f"{path[0]}/{path[1]} was deleted") from None
            raise

    # -- attributes ---------------------------------------------------------------------------

    def _attr(self, node: Node, ino: int) -> Attr:
        opts = self.options
        view = node.view
        kind = node.kind
        if (
            (kind is NodeKind.TREE_FILE or kind is NodeKind.TREE_DIR)
            and view is not None
            and view.immutable
            and node.entry is not None
        ):
            # The common case, first and with positional arguments: a readdir of a
            # tag builds one per entry (a third of `find`'s time in the daemon).
            if node.entry.is_dir:
                return Attr(
                    ino,
                    _IMMUTABLE_DIR,
                    2,
                    0,
                    view.mtime_ns,
                    opts.uid,
                    opts.gid,
                    IMMUTABLE_TTL,
                    IMMUTABLE_TTL,
                )
            return Attr(
                ino,
                _IMMUTABLE_FILE,
                1,
                node.entry.size,
                view.mtime_ns,
                opts.uid,
                opts.gid,
                IMMUTABLE_TTL,
                IMMUTABLE_TTL,
            )
        ttl = IMMUTABLE_TTL if view is not None and view.immutable else opts.refresh
        size = 0
        mtime = self._started_ns
        if kind in (NodeKind.ROOT_CTRL_DIR, NodeKind.REF_CTRL_DIR):
            mode, ttl = stat.S_IFDIR | 0o700, IMMUTABLE_TTL
        elif kind is NodeKind.ROOT_CTRL_FILE:
            writable = node.ctrl in control.WRITABLE_ROOT_FILES
            mode, ttl = stat.S_IFREG | (0o600 if writable else 0o400), 0.0
        elif kind is NodeKind.REF_CTRL_FILE:
            writable = node.ctrl in control.BRANCH_COMMANDS | control.REF_COMMANDS
            mode, ttl = stat.S_IFREG | (0o600 if writable else 0o400), 0.0
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
            state = self.branch_states.get(view.ref) if view.kind == "branch" else None
            if node.overlay is not None:
                mtime, size = node.overlay.mtime_ns, node.overlay.spool.size
            elif state is not None:
                mtime = state.written_ns.get(node.key, state.dirs.get(node.key, mtime))
            if kind is NodeKind.REF_ROOT:
                ttl = opts.refresh  # the ref itself can move or vanish
            stamp = state.stamps.get(node.key) if state is not None else None
            if stamp is not None:  # chmod, chown, utime made in this mount
                return Attr(
                    ino,
                    stamp.mode_of(mode),
                    2 if node.entry.is_dir else 1,
                    size,
                    stamp.mtime_ns or mtime,
                    opts.uid if stamp.uid is None else stamp.uid,
                    opts.gid if stamp.gid is None else stamp.gid,
                    ttl,
                    ttl,
                    stamp.atime_ns or stamp.mtime_ns or mtime,
                    max(mtime, stamp.ctime_ns),
                )
        return Attr(
            ino=ino,
            mode=mode,
            nlink=0 if node.orphan else 2 if stat.S_ISDIR(mode) else 1,
            size=size,
            mtime_ns=mtime,
            uid=opts.uid,
            gid=opts.gid,
            entry_timeout=ttl,
            attr_timeout=ttl,
        )

    def negative_timeout(self, parent: Node) -> float:
        """How long the kernel may remember that a name is absent below *parent*."""
        if (
            parent.view is not None
            and parent.view.immutable
            and parent.kind in (NodeKind.TREE_DIR, NodeKind.REF_ROOT, NodeKind.REF_CTRL_DIR)
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
            node = self._known((*parent.path, name)) or self._remember(
                await self._child(parent, name)
            )
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
        fixed = node.view is not None and self._listings.get((node.view, node.path)) is entries
        return self._new_handle(_DirHandle(entries, fixed))

    async def _list(self, node: Node) -> list[Node]:
        kind = node.kind
        if kind is NodeKind.ROOT:
            return [Node((name,), NodeKind.REF_LIST) for name in KINDS]
        if kind is NodeKind.ROOT_CTRL_DIR:
            return [
                Node((*node.path, f), NodeKind.ROOT_CTRL_FILE, ctrl=f) for f in control.ROOT_FILES
            ]
        if kind is NodeKind.REF_CTRL_DIR:
            assert node.view is not None
            return [
                Node((*node.path, f), NodeKind.REF_CTRL_FILE, node.view, ctrl=f)
                for f in control.ref_files(node.view.read_only)
            ]
        if kind is NodeKind.REF_LIST:
            return await self._list_refs(node)
        assert node.view is not None
        if node.view.immutable:
            # A tag or snapshot directory never changes: `find` or `ls -R` run again
            # skip building the listing (a 100k-entry one took 0.3 s of `find`'s time).
            key = (node.view, node.path)
            cached = self._listings.get(key)
            if cached is None:
                cached = self._listings[key] = await self._list_tree(node)
                self._listed_entries += len(cached)
                while self._listed_entries > LISTED_ENTRIES_KEPT and len(self._listings) > 1:
                    self._listed_entries -= len(self._listings.popitem(last=False)[1])
            self._listings.move_to_end(key)
            return cached
        return await self._list_tree(node)

    async def _list_tree(self, node: Node) -> list[Node]:
        assert node.view is not None
        assert node.entry is not None
        assert node.entry.pos is not None
        tree = await self._tree_for(node.view)
        entries = {
            name: Node(
                (*node.path, name),
                NodeKind.TREE_DIR if e.is_dir else NodeKind.TREE_FILE,
                node.view,
                e,
            )
            for name, e in await tree.listdir(node.entry.pos)
        }
        state = self.branch_states.get(node.view.ref) if node.view.kind == "branch" else None
        if state is not None:
            prefix = f"{node.key}/" if node.key else ""
            below = [
                k
                for k in (*state.files, *state.dirs)
                if k.startswith(prefix) and k != node.key and "/" not in k[len(prefix) :]
            ]
            for key in below:
                child = self._overlay_child(node.view, (*node.path, key[len(prefix) :]))
                if child is not None:
                    entries[child.path[-1]] = child
        # zarr.json last: `rm -r` then deletes a node's contents before the node itself.
        return [entries[n] for n in sorted(entries, key=lambda n: (n == METADATA_NAME, n))]

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
            out.append(
                Node((*node.path, name), NodeKind.REF_ROOT, view, TreeEntry(True, pos=_ROOT_POS))
            )
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

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Attr]]:
        """Yield (next offset, name, attributes) of the entries from offset *start*.

        Lazy: the kernel's buffer takes a few thousand entries per call, so building
        the attributes of the whole rest of a 100k-entry listing on every call made
        `find` quadratic. No lookup is counted: the adapter calls `entry_returned`
        for each entry the kernel took. Offsets index the listing pinned at `opendir`.
        """
        handle = self._dir_handle(fh, start)
        return (
            (i + 1, node.path[-1], self._attr(node, self.inodes.ino(node.path)))
            for i, node in enumerate(itertools.islice(handle.entries, start, None), start)
        )

    def fixed_listing(self, fh: int, start: int) -> list[Node] | None:
        """The listing the directory handle *fh* pinned, if it is a tag's or snapshot's.

        That list is the same object for every handle while the listing stays
        cached, and never changes: the adapter may keep replies built from it
        (see `FuseOperations.readdir`).  Entries are answered with `listed_attr`
        and `listed_ino`, offsets as `readdir` gives them.  None for any other
        directory.
        """
        handle = self._dir_handle(fh, start)
        return handle.entries if handle.fixed else None

    def _dir_handle(self, fh: int, start: int) -> _DirHandle:
        """The directory handle *fh*, checked for a readdir from offset *start*."""
        handle = self._handles.get(fh)
        if not isinstance(handle, _DirHandle):
            raise BadHandle(f"no directory handle {fh}")
        if start > len(handle.entries):
            raise BadHandle(f"readdir offset {start} past the end")
        return handle

    def listed_attr(self, node: Node) -> Attr:
        """Attributes of an entry of a `fixed_listing`, but for the inode number (0)."""
        return self._attr(node, 0)

    def listed_ino(self, node: Node) -> int:
        """The inode number of an entry of a `fixed_listing` (no lookup counted)."""
        return self.inodes.ino(node.path)

    def entry_returned(self, ino: int) -> None:
        """Count the lookup the kernel takes for an entry it accepted from readdirplus."""
        self.inodes.count_lookup(ino)

    def releasedir(self, fh: int) -> None:
        """Forget the directory handle *fh*.  Never raises."""
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
        writing = bool((flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC)
        if node.kind is NodeKind.TREE_FILE:
            assert node.view is not None
            if writing or node.overlay is not None:
                return await self._open_overlay(node, ino, flags, writing)
            tree = await self._tree_for(node.view)
            version = f"{node.view.snapshot_id}:{id(tree)}"
            first = ino not in self._opened_at  # so the kernel holds none of its pages
            keep = node.view.immutable or self._opened_at.get(ino) == version
            self._opened_at[ino] = version
            if (
                first
                and node.view.immutable
                and node.entry is not None
                and node.entry.array is not None
            ):
                # A read follows at once: start its get now, while the reply to the
                # open goes back and the read comes in (random 1 KiB reads: 775-814
                # -> 746-784 us each). Reopening a cached file fetches nothing.
                self.prefetcher.fetch_soon(tree, node.entry)
            return OpenReply(self._new_handle(_FileHandle(node, ino, tree)), keep_cache=keep)
        is_root_file = node.kind is NodeKind.ROOT_CTRL_FILE
        if writing and node.ctrl not in control.writable_files(is_root_file):
            raise PermissionDenied(f"{'/'.join(node.path)} is read-only")
        if writing and node.kind is NodeKind.REF_CTRL_FILE:
            if node.ctrl in control.BRANCH_COMMANDS:
                self._branch(node.view)  # commit and discard exist on writable branches only
            elif self.options.read_only:
                raise ReadOnly("the mount is read-only: no new branches or tags")
        handle = _FileHandle(node, ino, command=writing)
        if not writing:
            handle.data = await self._render(node)
        return OpenReply(self._new_handle(handle), direct_io=True)

    async def _open_overlay(self, node: Node, ino: int, flags: int, writing: bool) -> OpenReply:
        """Open a branch file through the overlay: its bytes in a write buffer."""
        assert node.view is not None
        assert node.entry is not None
        state = self._branch(node.view) if writing else self.branch_states[node.view.ref]
        overlay = state.files.get(node.key)
        if overlay is None:
            tree = await self._tree_for(node.view)
            data = b"" if flags & os.O_TRUNC else bytes(await tree.read_whole(node.entry))
            what = await state.classify(node.key, tree)
            # Another open may have made the buffer while we awaited: share it, or the
            # writes through one of the two handles would go nowhere.
            overlay = state.files.get(node.key)
            if overlay is None:
                # O_TRUNC of a non-empty file is a change even if nothing is written
                overlay = OverlayFile(
                    SpoolFile(self.spool, data),
                    scratch=what.kind == "scratch",
                    dirty=bool(flags & os.O_TRUNC and node.entry.size),
                )
                state.files[node.key] = overlay
        if flags & os.O_TRUNC:
            if overlay.spool.size:
                overlay.spool.truncate(0)
                overlay.dirty = True
            # POSIX: O_TRUNC of an existing file changes its mtime and ctime, empty or not
            overlay.mtime_ns = state.modified(node.key)
        overlay.handles += 1
        handle = _FileHandle(node, ino, overlay=overlay, branch=state)
        return OpenReply(self._new_handle(handle))

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        """Read up to *size* bytes at *offset* from the open file *fh*.

        A file fetched whole answers with a view of its bytes, not a copy.
        """
        handle = self._file_handle(fh)
        view = handle.node.view
        if (
            view is not None
            and handle.node.kind is NodeKind.TREE_FILE
            and (
                (view.kind == "branch" and view.ref not in self.branches)
                or (view.kind == "tag" and view.ref not in self.tags)
            )
        ):
            raise Stale(f"{view.kind} {view.ref} was deleted")
        data: bytes | memoryview
        if handle.overlay is not None:
            data = handle.overlay.spool.read(offset, size)
        elif handle.tree is None or handle.node.entry is None:
            data = memoryview(handle.data or b"")[offset : offset + size]
        else:
            entry = handle.node.entry
            if handle.data is None and entry.size <= WHOLE_FETCH_LIMIT:
                async with handle.lock:  # one fetch even when reads arrive together
                    if handle.data is None:
                        if view is not None and view.immutable:  # read-ahead: tags, snapshots
                            handle.data = await self.prefetcher.read_whole(handle.tree, entry)
                        else:
                            handle.data = await handle.tree.read_whole(entry)
            if handle.data is not None:
                data = memoryview(handle.data)[offset : offset + size]
            else:
                data = memoryview(await handle.tree.read(entry, offset, size))
        self.stats.bytes_read += len(data)
        return data

    def _file_handle(self, fh: int) -> _FileHandle:
        handle = self._handles.get(fh)
        if not isinstance(handle, _FileHandle):
            raise BadHandle(f"no file handle {fh}")
        return handle

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        """Write *data* at *offset* to the open file *fh*."""
        handle = self._file_handle(fh)
        node = handle.node
        if handle.overlay is not None:
            try:
                written = handle.overlay.spool.write(offset, data)
            except OverflowError:
                raise FileTooLarge(f"{node.key}: past the largest file size") from None
            handle.overlay.dirty = True
            handle.overlay.mtime_ns = (
                handle.branch.modified(node.key) if handle.branch else time.time_ns()
            )
            self.stats.bytes_written += written
            return written
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl == "refresh":
            self._refresh_wanted.set()
            await self.refresh_refs()
            return len(data)
        if node.kind is NodeKind.REF_CTRL_FILE and node.ctrl in control.BRANCH_COMMANDS:
            handle.wrote = True
            await self._control_write(node, data)
            return len(data)
        if node.kind is NodeKind.REF_CTRL_FILE and node.ctrl in control.REF_COMMANDS:
            handle.wrote = True
            await self._make_ref(node, data)
            return len(data)
        raise ReadOnly(f"{'/'.join(node.path)} is read-only")

    async def _invalidate_view(self, prefix: Path, keys: set[str]) -> None:
        """Make the kernel forget what it caches of the ref directory *prefix*, whose
        content just changed under it (a discard): attributes, pages and names, and
        the cached absence of each of *keys*; return when it has, so that the next
        call sees the new content."""
        if self.invalidator is None:
            return
        names: dict[Path, int] = dict(self.inodes.below(prefix))
        for key in keys:
            names.setdefault((*prefix, *key.split("/")), 0)
        for ino in names.values():
            if ino:
                self.invalidator.inode(ino)
        await self.invalidator.entries(
            [(self.inodes.ino(p[:-1]), p[-1]) for p in names if self.inodes.known(p[:-1])]
        )

    def _invalidate(self, path: Path, ino: int | None = None) -> None:
        if self.invalidator is not None and self.inodes.known(path):
            self.invalidator.inode(self.inodes.ino(path) if ino is None else ino)
            self.invalidator.entry(self.inodes.ino(path[:-1]), path[-1])

    async def _control_write(self, node: Node, data: bytes) -> None:
        state = self._branch(node.view)
        if node.ctrl == "discard":
            changed = set(state.changed_keys)
            await state.discard()
            with contextlib.suppress(IcefsError):
                self.branches[state.branch] = await self.repo.lookup_branch(state.branch)
                self._refs_generation += 1
            await self._invalidate_view(node.path[:2], changed)
            return
        try:
            message = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            state.error("commit refused: the message is not UTF-8 text")
            raise InvalidInput("commit message is not UTF-8") from None
        if not message:
            state.error("commit refused: empty commit message")
            raise InvalidInput("empty commit message")
        await self.commit_branch(state, message)

    async def _make_ref(self, node: Node, data: bytes) -> None:
        """Create the branch or tag named by *data* at the snapshot of *node*'s view."""
        assert node.view is not None
        try:
            name = check_ref_name(data.decode("utf-8").strip("\n"))
        except UnicodeDecodeError:
            raise self._ref_error(InvalidInput("a ref name must be UTF-8 text")) from None
        except InvalidInput as exc:
            raise self._ref_error(exc) from None
        # A branch being written stands on its session's base: its last commit.
        sid = node.view.snapshot_id
        try:
            if node.ctrl == "branch":
                if name in self.branches:
                    raise Exists(f"branch {name!r} already exists")
                await self.repo.create_branch(name, sid)
                self.branches[name] = sid
                self._refs_generation += 1
            else:
                await self.repo.create_tag(name, sid)
                self.tags[name] = sid
                self._refs_generation += 1
        except IcefsError as exc:
            raise self._ref_error(exc) from None
        log.info(
            "%s %s created at %s (from %s %s)", node.ctrl, name, sid, node.view.kind, node.view.ref
        )

    def _ref_error(self, exc: IcefsError) -> IcefsError:
        """Record a failed ref operation in the mount's status and return *exc* to raise."""
        self.note_error(str(exc))
        return exc

    async def commit_branch(self, state: BranchState, message: str) -> str | None:
        """Commit *state*'s branch with *message*; return the new snapshot (None: no changes)."""
        started = time.monotonic()
        try:
            sid = await state.commit(message)
        except IcefsError:
            self.stats.record_commit(time.monotonic() - started, ok=False)
            raise
        if sid is not None:
            self.stats.record_commit(time.monotonic() - started, ok=True)
        return sid

    async def flush(self, fh: int, *, sync: bool = False) -> None:
        """Store the file's new contents (close, and fsync if *sync*): errors reach close(2).

        A chunk whose array does not exist yet stays in the mount, pending, until
        the array's zarr.json is stored (copy tools write files in any order);
        fsync of such a chunk answers ENOENT.
        """
        handle = self._file_handle(fh)
        # A command file closed before anything was written is no error here: the shell's
        # `echo msg > .icefs/commit` closes a duplicate of the descriptor before it writes.
        # Only the last close (`release`) can tell that nothing was ever written.
        await self._store_handle(handle, sync)
        view = handle.node.view
        state = (
            self.branch_states.get(view.ref) if sync and view and view.kind == "branch" else None
        )
        if state is not None:
            await state.save_journal()  # fsync: what is stored survives a crash

    async def _store_handle(self, handle: _FileHandle, sync: bool) -> None:
        overlay, state = handle.overlay, handle.branch
        if overlay is None or state is None or overlay.scratch:
            return
        if not overlay.dirty and not (sync and overlay.pending):
            return
        key = handle.node.key
        if state.files.get(key) is not overlay:
            return  # renamed or deleted while open: its bytes went with it
        try:
            await state.store(key, overlay.spool.contents(), overlay.spool.size)
        except NotFound:
            if sync:
                raise
            overlay.pending = True
            log.info("%s waits for its array's zarr.json (kept in the mount)", key)
            return
        except IcefsError:
            overlay.dirty = False  # the previous content stays; do not retry at release
            self._drop_overlay(state, key, overlay)
            self._invalidate(handle.node.path)  # the kernel saw the new size (or name)
            raise
        overlay.dirty = overlay.pending = False

    def release(self, fh: int) -> None:
        """Forget the file or directory handle *fh*.  Never raises."""
        handle = self._handles.pop(fh, None)
        if (
            isinstance(handle, _FileHandle)
            and handle.command
            and not handle.wrote
            and handle.node.ctrl == "commit"
            and handle.node.view is not None
        ):
            # no errno can reach anyone now: status and log say it
            self._branch_state(handle.node.view.ref).error(
                "nothing was written to .icefs/commit before it was closed: nothing "
                "committed (write a message)"
            )
        if not isinstance(handle, _FileHandle) or handle.overlay is None:
            return
        overlay, state = handle.overlay, handle.branch
        overlay.handles -= 1
        if overlay.detached:
            if overlay.handles <= 0:  # the last descriptor of an unlinked file: it goes
                overlay.spool.close()
                self._orphans.pop(handle.ino, None)
            return
        keep = overlay.scratch or overlay.pending
        if overlay.handles <= 0 and not keep and state is not None:
            if overlay.dirty:
                state.error(f"{handle.node.key}: released with unstored changes (dropped)")
            self._drop_overlay(state, handle.node.key, overlay)

    def _drop_overlay(self, state: BranchState, key: str, overlay: OverlayFile) -> None:
        if state.files.get(key) is overlay and overlay.handles <= 0:
            del state.files[key]
            overlay.spool.close()

    # -- namespace changes --------------------------------------------------------------------

    async def _writable_dir(self, ino: int) -> tuple[Node, BranchState]:
        parent = await self._node(ino)
        return parent, self._writable(parent)

    def _writable(self, parent: Node) -> BranchState:
        """The branch state of the directory *parent*, if names may be made in it."""
        if parent.kind not in (NodeKind.REF_ROOT, NodeKind.TREE_DIR):
            if parent.kind is NodeKind.REF_LIST and parent.path == ("tags",):
                raise NotPermitted("tags are made with <ref>/.icefs/tag")
            if parent.kind is NodeKind.REF_LIST and parent.path == ("snapshots",):
                raise NotPermitted("snapshots are made by commits")
            raise ReadOnly(f"{'/'.join(parent.path) or '/'} is read-only")
        return self._branch(parent.view)

    async def _mkdir_branch(self, name: str) -> Attr:
        """``mkdir branches/<name>``: a new branch at the default branch's tip."""
        if self.options.read_only:
            raise ReadOnly("the mount is read-only: no new branches")
        ref = name_to_ref(name)
        try:
            check_ref_name(ref)
            if ref_to_name(ref) != name:
                raise InvalidInput(f"{name!r} is not how icefs shows a ref name")
            if ref in self.branches:
                raise Exists(f"branch {ref!r} already exists")
            default = self.options.default_branch
            sid = self.branches.get(default) or await self.repo.lookup_branch(default)
            await self.repo.create_branch(ref, sid)
        except IcefsError as exc:
            raise self._ref_error(exc) from None
        self.branches[ref] = sid
        self._refs_generation += 1
        log.info("branch %s created at %s (the tip of %s)", ref, sid, self.options.default_branch)
        path = ("branches", name)
        return self._attr(await self._resolve(path), self.inodes.lookup(path))

    async def _rmdir_ref(self, ref_list: Node, name: str) -> None:
        """``rmdir branches/<b>`` or ``rmdir tags/<t>``: delete the ref."""
        root = await self._child(ref_list, name)
        assert root.view is not None
        view = root.view
        if view.kind == "snapshot":
            raise NotPermitted("snapshots cannot be removed")
        if self.options.read_only:
            raise ReadOnly("the mount is read-only: refs cannot be deleted")
        if view.kind == "tag":
            try:
                await self.repo.delete_tag(view.ref)
            except IcefsError as exc:
                raise self._ref_error(exc) from None
            self.tags.pop(view.ref, None)
            self._refs_generation += 1
            log.info("tag %s deleted", view.ref)
            return
        state = self.branch_states.get(view.ref)
        empty = not await self._list(root)
        if empty and (view.ref == self.options.default_branch or (state and state.dirty)):
            # The tail of `rm -r` or zarr's mode="w" on a branch root that was just
            # emptied: the directory is empty, the branch stays.
            return
        if view.ref == self.options.default_branch:
            raise self._ref_error(NotPermitted(f"{view.ref} is the default branch"))
        if state is not None and (state.dirty or state.files):
            raise self._ref_error(NotPermitted(f"branch {view.ref}: {state.kept_because()}"))
        try:
            await self.repo.delete_branch(view.ref)
        except IcefsError as exc:
            raise self._ref_error(exc) from None
        self.branches.pop(view.ref, None)
        self._refs_generation += 1
        self.branch_states.pop(view.ref, None)
        self.inodes.forget_path(root.path)
        log.info("branch %s deleted", view.ref)

    async def _lookup_optional(self, parent: Node, name: str) -> Node | None:
        check_name(name)
        if parent.kind is NodeKind.REF_ROOT and name == CONTROL_DIR:
            raise PermissionDenied(f"{CONTROL_DIR} is reserved")
        try:
            return await self._child(parent, name)
        except NotFound:
            return None

    async def create(self, parent_ino: int, name: str, flags: int) -> tuple[OpenReply, Attr]:
        """Create the file *name* in *parent_ino* and open it."""
        parent, state = await self._writable_dir(parent_ino)
        existing = await self._lookup_optional(parent, name)
        if existing is not None:
            if flags & os.O_EXCL or existing.is_dir:
                raise Exists("/".join(existing.path))
            reply = await self.open(self.inodes.ino(existing.path), flags | os.O_TRUNC)
            return reply, self._attr(existing, self.inodes.lookup(existing.path))
        assert parent.view is not None
        path = (*parent.path, name)
        key = "/".join(path[2:])
        tree = await self._tree_for(parent.view)
        await tree.check_new_name(key)
        what = await state.classify(key, tree)
        if key in state.files:  # created by a concurrent request while we awaited
            if flags & os.O_EXCL:
                raise Exists("/".join(path))
            reply = await self.open(self.inodes.ino(path), flags | os.O_TRUNC)
            return reply, self._attr(await self._resolve(path), self.inodes.lookup(path))
        overlay = OverlayFile(SpoolFile(self.spool), scratch=what.kind == "scratch", dirty=True)
        state.files[key] = overlay
        node = Node(
            path, NodeKind.TREE_FILE, parent.view, TreeEntry(False, key, 0), overlay=overlay
        )
        overlay.handles += 1
        state.entries_changed(parent.key)
        ino = self.inodes.lookup(path)
        fh = self._new_handle(_FileHandle(node, ino, overlay=overlay, branch=state))
        return OpenReply(fh), self._attr(node, ino)

    async def mknod(self, parent_ino: int, name: str, mode: int) -> Attr:
        """Make a regular file *name*, as creat(2) and close would; EPERM for special files."""
        if not stat.S_ISREG(mode):
            await self.refuse_write(parent_ino, "mknod of a special file")
        reply, attr = await self.create(parent_ino, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            await self.flush(reply.fh)
        finally:
            self.release(reply.fh)
        return attr

    async def mkdir(self, parent_ino: int, name: str) -> Attr:
        """Make the directory *name*: it lives in the mount until something is stored below.

        In ``branches/`` it makes a branch at the default branch's tip.
        """
        parent = await self._node(parent_ino)
        if parent.kind is NodeKind.REF_LIST and parent.path == ("branches",):
            return await self._mkdir_branch(name)
        state = self._writable(parent)
        if await self._lookup_optional(parent, name) is not None:
            raise Exists("/".join((*parent.path, name)))
        path = (*parent.path, name)
        assert parent.view is not None
        await (await self._tree_for(parent.view)).check_new_name("/".join(path[2:]))
        state.dirs["/".join(path[2:])] = time.time_ns()
        state.entries_changed(parent.key)
        return self._attr(await self._child(parent, name), self.inodes.lookup(path))

    async def unlink(self, parent_ino: int, name: str) -> None:
        """Remove the file *name*: a chunk, a node (its ``zarr.json``) or a scratch file."""
        parent, state = await self._writable_dir(parent_ino)
        node = await self._lookup_optional(parent, name)
        if node is None:
            raise NotFound("/".join((*parent.path, name)))
        if node.is_dir:
            raise IsADirectory("/".join(node.path))
        await self._unlinked(node, await self._detach_open(node))
        await self._remove_file(state, node)
        self.inodes.forget_path(node.path)
        state.stamps.pop(node.key, None)
        state.entries_changed(parent.key)

    def _handles_of(self, ino: int | None) -> list[_FileHandle]:
        """The open file handles of the inode *ino*."""
        if ino is None:
            return []
        return [h for h in self._handles.values() if isinstance(h, _FileHandle) and h.ino == ino]

    async def _detach_open(self, node: Node) -> OverlayFile | None:
        """Give the open handles of the file *node* its bytes to keep, whatever happens to
        its name next (unlink, rename, replaced by a rename); return them, None if no
        handle is open.

        POSIX: an open file stays usable after its name is removed or replaced (temp
        files, editors, SQLite rely on it).  Handles that read the tree get a copy of
        the bytes (one read); handles of a file being written already share its buffer.
        """
        handles = self._handles_of(self.inodes.find(node.path))
        if not handles:
            return None
        if node.overlay is not None:
            return node.overlay
        assert node.entry is not None
        assert node.view is not None
        held = next((h.data for h in handles if h.data is not None), None)
        if held is None:
            held = await (await self._tree_for(node.view)).read_whole(node.entry)
        overlay = OverlayFile(
            self._spooled(held), scratch=True, detached=True, mtime_ns=self._attr(node, 0).mtime_ns
        )
        for handle in handles:
            handle.overlay, handle.branch = overlay, None
            overlay.handles += 1
        return overlay

    async def _unlinked(self, node: Node, overlay: OverlayFile | None) -> None:
        """Keep the inode of *node*, unlinked while *overlay* (its bytes) is open, alive."""
        ino = self.inodes.find(node.path)
        if overlay is None or ino is None:
            return
        overlay.detached = True
        self._orphans[ino] = dataclasses.replace(
            node, path=(_GONE, str(ino)), overlay=overlay, orphan=True
        )
        for handle in self._handles_of(ino):
            handle.branch = None  # nothing an unlinked file holds is ever stored

    async def _remove_file(self, state: BranchState, node: Node) -> None:
        assert node.view is not None
        key = node.key
        overlay = state.files.pop(key, None)
        if overlay is not None:
            overlay.dirty = False
            if overlay.handles <= 0:
                overlay.spool.close()
            else:
                overlay.detached = True  # its open handles free it (`release`)
            if overlay.scratch:
                return
        tree = await self._tree_for(node.view)
        try:
            await tree.resolve(tuple(key.split("/")))
        except NotFound:
            return  # only ever existed in the mount
        what = await tree.classify(key)
        await state.delete(key, what)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        """Remove the empty directory *name*.

        Icechunk has no empty directories: once `rm -r` has deleted the last key
        below a directory (and maybe below its parent), the directory is gone
        before its rmdir arrives.  A directory the kernel still knows by that path
        is then removed successfully.
        """
        path = (*self.inodes.path(parent_ino), name)
        try:
            await self._rmdir(parent_ino, name)
        except NotFound:
            if not self.inodes.known(path) or path[0] != "branches" or len(path) < 3:
                raise
            self.inodes.forget_path(path)

    async def _rmdir(self, parent_ino: int, name: str) -> None:
        ref_list = await self._node(parent_ino)
        if ref_list.kind is NodeKind.REF_LIST:
            await self._rmdir_ref(ref_list, name)
            return
        parent, state = await self._writable_dir(parent_ino)
        path = (*parent.path, name)
        node = await self._lookup_optional(parent, name)
        if node is None:
            raise NotFound("/".join(path))
        if not node.is_dir:
            raise NotADirectory("/".join(path))
        if await self._list(node):
            raise NotEmpty("/".join(path))
        state.dirs.pop(node.key, None)
        state.stamps.pop(node.key, None)
        state.entries_changed(parent.key)
        self.inodes.forget_path(path)

    async def rename(
        self, old_ino: int, old_name: str, new_ino: int, new_name: str, flags: int = 0
    ) -> None:
        """Rename a file inside one branch; the target, if any, is replaced atomically."""
        old_parent = await self._node(old_ino)
        new_parent = old_parent if new_ino == old_ino else await self._node(new_ino)
        if (
            old_parent.view is None
            or new_parent.view is None
            or old_parent.view.ref != new_parent.view.ref
            or old_parent.view.kind != new_parent.view.kind
        ):
            if old_parent.view is not None and old_parent.view.read_only:
                raise ReadOnly(f"{old_parent.view.kind} {old_parent.view.ref} is read-only")
            raise CrossDevice("rename across refs")
        state = self._writable(old_parent)
        self._writable(new_parent)
        if flags & RENAME_EXCHANGE:
            raise InvalidInput("RENAME_EXCHANGE is not supported")
        src = await self._lookup_optional(old_parent, old_name)
        if src is None:
            raise NotFound("/".join((*old_parent.path, old_name)))
        if src.is_dir:
            raise CrossDevice("directories cannot be renamed (mv copies them instead)")
        dst = await self._lookup_optional(new_parent, new_name)
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise Exists("/".join(dst.path))
            if dst.is_dir:
                raise IsADirectory("/".join(dst.path))
        dst_path = (*new_parent.path, new_name)
        log.debug("rename %s -> %s", "/".join(src.path), "/".join(dst_path))
        if dst_path == src.path:
            return
        if dst is not None:  # a replaced file still open lives on, unlinked
            await self._unlinked(dst, await self._detach_open(dst))
        if src.overlay is not None and self._handles_of(self.inodes.find(src.path)):
            await self._move_open(state, src, dst_path)
        else:
            await self._detach_open(src)  # open readers keep the bytes they opened
            await self._copy_file(state, src, new_parent, new_name)
            await self._remove_file(state, src)
        self.inodes.rename(src.path, dst_path)
        assert new_parent.view is not None
        state.moved(src.key, "/".join(dst_path[2:]))
        state.entries_changed(old_parent.key)
        state.entries_changed(new_parent.key)

    async def _move_open(self, state: BranchState, src: Node, dst_path: Path) -> None:
        """Rename *src*, a file still open for writing: its buffer and handles move along.

        What is written through the open descriptors after the rename lands at the
        new name (a log renamed while its program writes, as on any file system);
        a key there is stored when the file is closed.
        """
        overlay = src.overlay
        assert overlay is not None
        assert src.view is not None
        key = "/".join(dst_path[2:])
        tree = await self._tree_for(src.view)
        await tree.check_new_name(key)
        what = await state.classify(key, tree)
        await self._remove_file(state, src)  # the old name goes (and its stored key)
        overlay.detached = False
        old = state.files.pop(key, None)
        if old is not None and old is not overlay:
            if old.handles <= 0:
                old.spool.close()
            else:
                old.detached = True
        overlay.scratch = what.kind == "scratch"
        overlay.dirty = not overlay.scratch
        state.files[key] = overlay
        for handle in self._handles_of(self.inodes.find(src.path)):
            handle.node = dataclasses.replace(handle.node, path=dst_path)
            handle.branch = state

    async def link(self, ino: int, new_parent_ino: int, new_name: str) -> Attr:
        """Make *new_name* a copy of the file *ino* (zarr's exclusive create: link + unlink).

        Icechunk has no hard links: the new name gets its own copy of the bytes.
        """
        src = await self._node(ino)
        new_parent, state = await self._writable_dir(new_parent_ino)
        if src.is_dir:
            raise NotPermitted("hard links to directories")
        if src.view is None or new_parent.view is None or src.view.ref != new_parent.view.ref:
            raise CrossDevice("link across refs")
        if await self._lookup_optional(new_parent, new_name) is not None:
            raise Exists("/".join((*new_parent.path, new_name)))
        await self._copy_file(state, src, new_parent, new_name)
        state.entries_changed(new_parent.key)
        path = (*new_parent.path, new_name)
        return self._attr(await self._resolve(path), self.inodes.lookup(path))

    async def _copy_file(self, state: BranchState, src: Node, parent: Node, name: str) -> None:
        """Give *parent*/*name* the bytes of *src*: stored if it is a key, else a scratch file."""
        assert src.view is not None
        assert src.entry is not None
        assert parent.view is not None
        if src.overlay is not None:
            data: object = src.overlay.spool.contents()
            size = src.overlay.spool.size
        else:
            data = await (await self._tree_for(src.view)).read_whole(src.entry)
            size = src.entry.size
        key = "/".join((*parent.path, name)[2:])
        tree = await self._tree_for(parent.view)
        await tree.check_new_name(key)
        what = await state.classify(key, tree)
        copy: OverlayFile | None = None
        if what.kind == "scratch":
            copy = OverlayFile(self._spooled(data), scratch=True)
        else:
            try:
                await state.store(key, data, size)
            except NotFound:  # its array is not there yet: keep it pending
                copy = OverlayFile(self._spooled(data), scratch=False, dirty=True, pending=True)
        old = state.files.pop(key, None)
        if copy is not None:
            state.files[key] = copy
        if old is not None and old.handles <= 0:
            old.spool.close()

    def _spooled(self, data: object) -> SpoolFile:
        spool = SpoolFile(self.spool)
        spool.write(0, bytes(data))  # type: ignore[call-overload]
        return spool

    async def setattr(self, ino: int, change: AttrChange) -> Attr:
        """Apply *change* to *ino*: truncate; chmod, chown and utime (kept while mounted).

        Mode, owner and times set here live in the branch's `Stamp`s, not in
        Icechunk: committed data shows its commit time after a remount.
        """
        node = await self._node(ino)
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl in control.WRITABLE_ROOT_FILES:
            return self._attr(node, ino)
        if node.kind is NodeKind.REF_CTRL_FILE and node.ctrl in control.writable_files(False):
            if node.ctrl in control.BRANCH_COMMANDS:
                self._branch(node.view)
            return self._attr(node, ino)
        if node.kind not in (NodeKind.TREE_FILE, NodeKind.TREE_DIR, NodeKind.REF_ROOT):
            raise ReadOnly(f"{'/'.join(node.path) or '/'} is read-only")
        state = self._branch(node.view)
        if node.orphan:  # unlinked, still open: only its bytes matter now
            if change.size is not None and node.overlay is not None:
                self._truncate(node, node.overlay, change.size)
            return self._attr(node, ino)
        if change.size is not None and not node.is_dir:
            await self._truncate_file(node, ino, state, change.size)
            node = await self._resolve(node.path)
        if change.touches_stamp:
            stamp = state.stamp(node.key)
            if change.mode is not None:
                stamp.mode = change.mode & 0o7777
            if change.uid is not None:
                stamp.uid = change.uid
            if change.gid is not None:
                stamp.gid = change.gid
            if change.atime_ns is not None:
                stamp.atime_ns = change.atime_ns
            if change.mtime_ns is not None:
                stamp.mtime_ns = change.mtime_ns
            stamp.ctime_ns = time.time_ns()
        return self._attr(node, ino)

    def _truncate(self, node: Node, overlay: OverlayFile, size: int) -> None:
        try:
            overlay.spool.truncate(size)
        except OverflowError:
            raise FileTooLarge(
                f"{node.key}: {size} bytes is past the largest file size icefs holds"
            ) from None
        overlay.dirty = True
        overlay.mtime_ns = time.time_ns()

    async def _truncate_file(self, node: Node, ino: int, state: BranchState, size: int) -> None:
        """Cut or extend the branch file *node* to *size* bytes (stored if it is a key)."""
        overlay = node.overlay
        if overlay is None:
            reply = await self._open_overlay(node, ino, os.O_RDWR, True)
            try:
                handle = self._file_handle(reply.fh)
                assert handle.overlay is not None
                self._truncate(node, handle.overlay, size)
                await self.flush(reply.fh)
            finally:
                self.release(reply.fh)
        else:
            self._truncate(node, overlay, size)
            overlay.mtime_ns = state.modified(node.key)
            if overlay.handles <= 0 and not overlay.scratch:
                await state.store(node.key, overlay.spool.contents(), overlay.spool.size)
                overlay.dirty = False

    async def refuse_write(self, ino: int, op: str) -> None:
        """Answer *op* on or below *ino*, which icefs never supports.

        EROFS on read-only views; on branches ENOTSUP for extended attributes (so
        cp, mv and sed skip copying ACLs) and EPERM for symlinks and device nodes.
        """
        node = await self._node(ino)
        if node.view is not None and not node.view.read_only:
            if op.endswith("xattr"):
                raise NotSupported(f"{op}: extended attributes are not stored")
            raise NotPermitted(f"{op} is not supported ({'/'.join(node.path)})")
        raise ReadOnly(f"{op} on {'/'.join(node.path) or '/'}: read-only")

    async def access(self, ino: int, mode: int) -> None:
        """Check access(2) *mode*: writes are refused with EROFS where nothing is writable."""
        node = await self._node(ino)
        if not mode & os.W_OK:
            return
        if node.kind is NodeKind.ROOT_CTRL_FILE and node.ctrl in control.WRITABLE_ROOT_FILES:
            return
        if node.kind is NodeKind.REF_CTRL_FILE and node.ctrl in control.writable_files(False):
            if node.ctrl in control.BRANCH_COMMANDS:
                self._branch(node.view)
            return
        if node.kind in (NodeKind.TREE_FILE, NodeKind.TREE_DIR, NodeKind.REF_ROOT):
            self._branch(node.view)
            return
        raise ReadOnly("/".join(node.path))

    async def shutdown(self, on_unmount: str) -> dict[str, str]:
        """Commit (or discard) every branch with uncommitted changes; return new snapshots.

        Files still open for writing are stored first.  Failures are logged and
        leave that branch's changes uncommitted; the others still commit.
        """
        committed: dict[str, str] = {}
        for fh, handle in list(self._handles.items()):
            if isinstance(handle, _FileHandle) and handle.overlay is not None:
                with contextlib.suppress(IcefsError):
                    await self.flush(fh)
        for name, files in self.leftovers().items():
            log.warning(
                "branch %s: dropped at unmount, never committed: %s",
                name,
                describe_leftovers(files),
            )
        for name, state in sorted(self.branch_states.items()):
            if not state.dirty:
                continue
            if on_unmount == "discard":
                await state.discard()
                log.info("branch %s: uncommitted changes discarded at unmount", name)
                continue
            message = f"icefs: automatic commit at unmount of {self.options.mountpoint}"
            try:
                sid = await self.commit_branch(state, message)
            except IcefsError as exc:
                await state.save_journal()
                where = "kept in the journal for the next mount" if self.journal.enabled else "lost"
                log.error(
                    "branch %s: commit at unmount failed, its uncommitted changes are %s: %s",
                    name,
                    where,
                    exc,
                )
                self.unmount_failures.append(name)
                continue
            if sid is not None:
                committed[name] = sid
                log.info("branch %s: committed %s at unmount", name, sid)
        return committed

    async def recover_journal(self) -> None:
        """Restore the sessions a crashed daemon left in the journal (before serving)."""
        for entry in await trio.to_thread.run_sync(self.journal.entries):
            tip = self.branches.get(entry.branch)
            if tip is None:
                self.journal.set_aside(entry.branch, "the branch no longer exists")
                continue
            if any(meta.token == entry.token for meta in await self.repo.ancestry(tip)):
                # killed after the commit landed but before the journal was dropped
                log.info(
                    "journal: branch %s: the saved session was committed before the "
                    "crash; nothing to recover",
                    entry.branch,
                )
                self.journal.drop(entry.branch)
                continue
            try:
                await self._branch_state(entry.branch).recover(entry)
            except IcefsError as exc:
                self.journal.set_aside(entry.branch, str(exc))

    async def save_journals(self) -> None:
        """Save every branch's session that changed since its last save."""
        for state in list(self.branch_states.values()):
            await state.save_journal()

    async def commit_dirty(self, message: str) -> None:
        """Commit every dirty branch with *message* (for --commit-interval); log failures."""
        for state in list(self.branch_states.values()):
            if state.dirty:
                try:
                    await self.commit_branch(state, message)
                except IcefsError as exc:
                    log.warning("branch %s: periodic commit failed: %s", state.branch, exc)

    def close(self) -> None:
        """Free write buffers and remove the spool directory.  Never raises."""
        for state in self.branch_states.values():
            for overlay in state.files.values():
                overlay.spool.close()
            state.files.clear()
        self.spool.cleanup()

    def statfs(self) -> StatFs:
        """Return filesystem-wide numbers (capacity is that of the object store: unbounded)."""
        blocks = 1 << 40
        return StatFs(
            bsize=4096,
            blocks=blocks,
            bfree=0 if self.options.read_only else blocks,
            files=1 << 32,
            ffree=1 << 31,
            namemax=255,
        )

    async def getxattr(self, ino: int, name: str) -> bytes:
        """Return the extended attribute *name* of *ino*; `NoAttribute` if it has none."""
        if not name.startswith(XATTR_PREFIX):  # answered without resolving the path
            if not name.startswith("user."):
                # security.*, system.* (POSIX ACLs), trusted.*: icefs has none of these
                # namespaces.  ENOTSUP rather than ENODATA also tells `ls -l` (coreutils),
                # which asks for security.selinux and the ACL of every file, to stop asking
                # on this filesystem: that was 12 of the 14 s of `ls -lR` over 100k chunks.
                raise NotSupported(f"{name}: icefs has only user.* extended attributes")
            raise NoAttribute(name)
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
        state = self.branch_states.get(view.ref) if view.kind == "branch" else None
        return {
            XATTR_SNAPSHOT: view.snapshot_id.encode(),
            XATTR_UNCOMMITTED: b"1" if state is not None and state.dirty else b"0",
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
                self.stats.pending_bytes = sum(
                    f.spool.size
                    for st in self.branch_states.values()
                    for f in st.files.values()
                    if not f.scratch
                )
                self.stats.prefetch_hits = self.prefetcher.hits
                self.stats.prefetch_at_open = self.prefetcher.at_open
                self.stats.prefetch_unused = self.prefetcher.unused
                self.stats.prefetch_joined = self.prefetcher.joined
                self.stats.prefetch_held_bytes = self.prefetcher.held_bytes
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
            return control.render_json(await self.view_status(view))
        if name in control.BRANCH_COMMANDS | control.REF_COMMANDS:
            return b""
        raise NotFound(name)

    def leftovers(self) -> dict[str, dict[str, list[str]]]:
        """Per branch, what lives only in this mount and goes at unmount (scratch, pending)."""
        out = {}
        for name, state in sorted(self.branch_states.items()):
            files = state.leftovers()
            if any(files.values()):
                out[name] = files
        return out

    def mount_status(self) -> dict[str, object]:
        """Return the mount-wide status document."""
        return {
            "version": __version__,
            "pid": os.getpid(),
            "storage": self.options.storage,
            "mountpoint": self.options.mountpoint,
            "read_only": self.options.read_only,
            "refresh_seconds": self.options.refresh,
            "default_branch": self.options.default_branch,
            "branches": len(self.branches),
            "tags": len(self.tags),
            "last_refresh": (
                control.render_time(int(self.last_refresh * 1e9)) if self.last_refresh else None
            ),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            # what an unmount now would drop, by branch: scratch files, pending chunks
            "dropped_at_unmount": self.leftovers(),
            # how Icechunk's calls reach trio (see `Bridge.run`)
            "icechunk_calls": "direct" if self.repo.bridge.direct else "loop thread",
        }

    async def view_status(self, view: View) -> dict[str, object]:
        """Return the status document of one ref view."""
        doc: dict[str, object] = {
            "ref": view.ref,
            "kind": view.kind,
            "snapshot_id": view.snapshot_id,
            "read_only": view.read_only,
            "has_uncommitted_changes": False,
            "changed_nodes": 0,
            "changed_chunks": 0,
            "changed_paths": [],
            "scratch_files": [],
            "files_being_written": [],
            "empty_directories": [],
            "last_commit": None,
            "last_error": None,
            "last_error_at": None,
            "last_error_path": None,
            "conflicts": [],
        }
        state = self.branch_states.get(view.ref) if view.kind == "branch" else None
        if state is not None:
            doc.update(await state.status())
        if view.kind == "branch":
            doc["tip_snapshot_id"] = self.branches.get(view.ref)
        return doc
