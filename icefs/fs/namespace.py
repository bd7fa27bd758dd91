"""Paths to nodes: what each name of the mount is, in which view, as of now.

`Namespace.resolve` walks a path through the root, the ref lists, a ref's view
and its tree (a branch's session while it is written, with the files that live
only in the mount).  Two caches spare the walk: paths in tags and snapshots
resolve once (what they name never changes while the tag stays), and paths in
branches start from a directory resolved before, while the branch's stamp
(tip, state, layout) still holds.  Snapshot trees are kept per snapshot.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from cachetools import LRUCache

from icefs.errors import InvalidInput, NotADirectory, NotFound, PermissionDenied, Stale
from icefs.fs import controltext
from icefs.fs.values import KINDS, RENDERINGS, ROOT_POS, Node, NodeKind
from icefs.memory import MemoryBudget
from icefs.paths import CONTROL_DIR, check_name, name_to_ref
from icefs.store import DirPos, SnapshotTree, TreeEntry
from icefs.store.zarr2tree import Translations, Zarr2Tree

if TYPE_CHECKING:
    from collections.abc import Sequence

    from icefs.fs.branch import BranchState
    from icefs.fs.branches import Branches
    from icefs.fs.inodes import InodeTable, Path
    from icefs.fs.refs import RefTable
    from icefs.fs.stats import Stats
    from icefs.fs.values import View
    from icefs.fs.zarr2files import Zarr2Files
    from icefs.store import Repo

__all__ = ["Namespace"]

log = logging.getLogger(__name__)

#: Snapshot trees kept in memory, least recent out (what they hold counts in the budget).
TREES_KEPT: Final = 32
#: Resolved paths of tags and snapshots kept (see `resolve`); all dropped when full.
RESOLVED_KEPT: Final = 200_000
#: Bytes a resolved path takes in `Namespace._resolved` beside its listing's node.
RESOLVED_BYTES: Final = 120


class _Trees(LRUCache[str, SnapshotTree]):
    """Snapshot trees by id; one pushed out gives its budget entries back."""

    def popitem(self) -> tuple[str, SnapshotTree]:
        key, tree = super().popitem()
        tree.release()
        return key, tree


#: Resolved directories of branches kept (see `_resolve_in_branch`); all dropped when full.
BRANCH_DIRS_KEPT: Final = 50_000


class Namespace:
    """Resolves paths and inodes to `Node`s; keeps the snapshot trees they come from."""

    def __init__(
        self,
        repo: Repo,
        refs: RefTable,
        branches: Branches,
        inodes: InodeTable,
        stats: Stats,
        zarr2_files: Zarr2Files,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._repo = repo
        #: the mount's one budget for what grows with the repository (`icefs.memory`)
        self.budget = budget if budget is not None else MemoryBudget(1 << 62)
        #: files and directories being written through the v2 views of branches
        self.zarr2_files = zarr2_files
        self._refs = refs
        self._branches = branches
        self.inodes = inodes
        self._stats = stats
        self._trees = _Trees(TREES_KEPT)
        # Both path caches are plain dicts cleared when full: a lookup is one dict get,
        # and a `find` over a big tag looks up every path once.
        self._resolved: dict[Path, Node] = {}
        #: directories inside branches: node, the stamp it was resolved under (see
        #: `_resolve_in_branch`), and whether it was an empty directory made by mkdir
        self._branch_dirs: dict[Path, tuple[Node, tuple[object, ...], bool]] = {}
        #: files unlinked (or replaced by a rename) while open, by inode: fstat, read and
        #: write through their descriptors go on until the last one is closed
        self.orphans: dict[int, Node] = {}
        #: the v2 renderings of trees in use, and the translations they share
        self.translations = Translations()
        self._rendered: weakref.WeakKeyDictionary[SnapshotTree, dict[bool, Zarr2Tree]] = (
            weakref.WeakKeyDictionary()
        )

    # -- trees --------------------------------------------------------------------------------

    async def tree(self, snapshot_id: str) -> SnapshotTree:
        """The (cached) tree of the snapshot *snapshot_id*."""
        tree = self._trees.get(snapshot_id)
        if tree is None:
            tree = SnapshotTree(await self._repo.reader(snapshot_id), self.budget)
            self._trees[snapshot_id] = tree
            self._stats.cache_misses += 1
        else:
            self._stats.cache_hits += 1
        return tree

    async def tree_for(self, view: View) -> SnapshotTree:
        """The tree a view shows: a branch's session while it is being written; rendered
        as Zarr v2 for the views below `RENDERINGS` (a `Zarr2Tree` answers alike)."""
        tree = self._branches.session_tree(view.ref) if view.kind == "branch" else None
        if tree is None:
            tree = await self.tree(view.snapshot_id)
        return self._render(tree, view.render) if view.render else tree

    def _render(self, tree: SnapshotTree, render: str) -> SnapshotTree:
        decoded = render == "zarr2-decoded"
        kept = self._rendered.setdefault(tree, {})
        rendered = kept.get(decoded)
        if rendered is None:
            rendered = kept[decoded] = Zarr2Tree(tree, decoded, self.translations)
        return rendered  # type: ignore[return-value]  # the same calls, duck-typed

    async def immutable_tree(
        self, view: View, tree: SnapshotTree, entry: TreeEntry
    ) -> SnapshotTree | None:
        """An immutable tree that holds what *tree* (of *view*) holds at the chunk file
        *entry*, for the read-ahead: *tree* itself if it is a snapshot's; for the session
        of a branch, its base snapshot's where the session has not changed the chunk;
        else None."""
        if entry.array is None:
            return None
        shown: object = tree  # a rendering stands in for a SnapshotTree (see `_render`)
        if isinstance(shown, Zarr2Tree):  # its chunk entries keep their v3 key
            inner = await self.immutable_tree(view, shown.inner, entry)
            if inner is None or not shown.decoded:
                return inner
            return self._render(inner, "zarr2-decoded")
        if not tree.reader.writable:
            return tree
        state = self._branches.states.get(view.ref) if view.kind == "branch" else None
        if state is None or state.tree is not tree or not state.unchanged(entry.key, entry.array):
            return None
        return await self.tree(tree.snapshot_id)

    # -- resolution ---------------------------------------------------------------------------

    async def child(self, parent: Node, name: str) -> Node:
        """The node *name* in the directory *parent*; `NotFound` if there is none."""
        path = (*parent.path, name)
        kind = parent.kind
        if kind is NodeKind.ROOT:
            if name in KINDS:
                return Node(path, NodeKind.REF_LIST)
            if name == CONTROL_DIR:
                return Node(path, NodeKind.ROOT_CTRL_DIR)
            if name in RENDERINGS:
                return Node(path, NodeKind.RENDERING)
        elif kind is NodeKind.RENDERING:
            if name in KINDS:
                return Node(path, NodeKind.REF_LIST)
        elif kind is NodeKind.ROOT_CTRL_DIR:
            if name in controltext.ROOT_FILES:
                return Node(path, NodeKind.ROOT_CTRL_FILE, ctrl=name)
        elif kind is NodeKind.REF_LIST:
            view = await self.ref_view(parent, name)
            return Node(path, NodeKind.REF_ROOT, view, TreeEntry(True, pos=ROOT_POS))
        elif kind is NodeKind.REF_CTRL_DIR:
            assert parent.view is not None
            if name in controltext.ref_files(parent.view.read_only):
                return Node(path, NodeKind.REF_CTRL_FILE, parent.view, ctrl=name)
        elif kind in (NodeKind.REF_ROOT, NodeKind.TREE_DIR):
            assert parent.view is not None
            assert parent.entry is not None
            if kind is NodeKind.REF_ROOT and name == CONTROL_DIR and not parent.view.render:
                return Node(path, NodeKind.REF_CTRL_DIR, parent.view)
            overlaid = (
                self.zarr2_files.child(parent.view, path)
                if parent.view.render
                else self.overlay_child(parent.view, path)
            )
            if overlaid is not None:
                return overlaid
            assert parent.entry.pos is not None
            tree = await self.tree_for(parent.view)
            entry = await tree.child(parent.entry.pos, name)
            return Node(
                path, NodeKind.TREE_DIR if entry.is_dir else NodeKind.TREE_FILE, parent.view, entry
            )
        else:
            raise NotADirectory("/".join(parent.path))
        raise NotFound("/".join(path))

    async def ref_view(self, ref_list: Node, name: str) -> View:
        """The view of the ref *name* in the directory *ref_list* (`NotFound` if none)."""
        ref_kind = KINDS[ref_list.path[-1]]
        base = self._branches.session_base(name_to_ref(name)) if ref_kind == "branch" else None
        view = await self._refs.view(ref_kind, name, base)
        if len(ref_list.path) > 1:  # below one of RENDERINGS: only zarr2/branches is writable
            render = ref_list.path[0]
            writable = render == "zarr2" and ref_kind == "branch" and not view.read_only
            view = replace(view, render=render, read_only=not writable)
        return view

    def overlay_child(self, view: View, path: Path) -> Node | None:
        """The node at *path* if it lives in the branch's overlay (only in this mount)."""
        state = self._branches.of_view(view)
        if state is None:
            return None
        key = "/".join(path[2:])
        overlay = state.local.files.get(key)
        if overlay is not None:
            return Node(
                path,
                NodeKind.TREE_FILE,
                view,
                TreeEntry(False, key, overlay.spool.size),
                overlay=overlay,
            )
        if key in state.local.dirs:
            return Node(path, NodeKind.TREE_DIR, view, TreeEntry(True, pos=DirPos(key)))
        return None

    async def child_or_none(self, parent: Node, name: str) -> Node | None:
        """The node *name* in *parent*, None if there is none; for names about to be made.

        Raises for a name that cannot be made: too long, not UTF-8, or the control
        directory's own name.
        """
        check_name(name)
        if parent.kind is NodeKind.REF_ROOT and name == CONTROL_DIR:
            raise PermissionDenied(f"{CONTROL_DIR} is reserved")
        try:
            return await self.child(parent, name)
        except NotFound:
            return None

    async def resolve(self, path: Path) -> Node:
        """Resolve *path* from the root, against the refs as they are now.

        Paths in tags and snapshots resolve once: what they name never changes
        while the tag stands at the same snapshot, and the entries of their
        listings are kept as listed (`remember_listed`).  A path not resolved before
        starts from its nearest ancestor that was (walking every name from the
        root was most of the daemon's time in the lookup, open and getattr of
        each small random read, and in the opendir and open of a cold walk).
        Paths in branches start from a directory resolved before
        (`_resolve_in_branch`).
        """
        if len(path) >= 2 and path[0] == "branches":
            return await self._resolve_in_branch(path)
        node = self.known(path)
        if node is not None:
            return node
        # From the nearest directory kept: a walk (`cp -r`, `find`) opens each directory
        # and file just after listing its parent, so the rest is one name.
        start, node = 0, Node((), NodeKind.ROOT)
        for depth in range(len(path) - 1, 1, -1):
            above = self.known(path[:depth])
            if above is not None:
                start, node = depth, above
                break
        for name in path[start:]:
            node = await self.child(node, name)
        return self.remember(node)

    async def _resolve_in_branch(self, path: Path) -> Node:
        """Resolve *path* inside a branch, from its directory or parent resolved before.

        Every request of a write names a path in a branch; walking it from the root
        was a large share of the daemon's busy time while zarr wrote chunks. A directory
        kept is used only while its stamp still holds and it is still (or still not)
        an empty directory made by mkdir (the first store below such a directory
        turns it into one of the tree's).
        """
        ref = name_to_ref(path[1])
        state = self._branches.get(ref)
        # what its directories resolve against: the tip, the state here and its layout
        stamp = (self._refs.branches.get(ref), state, state.layout if state is not None else 0)
        node = self._branch_dir(path, stamp, state)
        if node is not None:
            return node
        start = len(path) - 1
        parent = self._branch_dir(path[:-1], stamp, state)
        if parent is None:
            parent, start = Node((), NodeKind.ROOT), 0
        for name in path[start:]:
            parent = await self.child(parent, name)
            if parent.kind is NodeKind.TREE_DIR or parent.kind is NodeKind.REF_ROOT:
                if len(self._branch_dirs) >= BRANCH_DIRS_KEPT:
                    self._branch_dirs.clear()
                made = state is not None and parent.key in state.local.dirs
                self._branch_dirs[parent.path] = (parent, stamp, made)
        return parent

    def _branch_dir(
        self, path: Path, stamp: tuple[object, ...], state: BranchState | None
    ) -> Node | None:
        kept = self._branch_dirs.get(path)
        if kept is None or kept[1] != stamp:
            return None
        node, _, made = kept
        if state is not None and (node.key in state.local.dirs) != made:
            return None
        return node

    def known(self, path: Path) -> Node | None:
        """The node `remember` kept for *path*, unless its tag has gone or moved since."""
        node = self._resolved.get(path)
        if (
            node is None
            or node.view is None
            or (
                node.view.kind == "tag"
                and self._refs.tags.get(node.view.ref) != node.view.snapshot_id
            )
        ):
            return None
        return node

    def remember(self, node: Node) -> Node:
        """Keep *node* for `resolve` if it lies in a tag or snapshot; return it."""
        if node.view is not None and node.view.immutable:
            self.remember_listed((node,))
        return node

    def remember_listed(self, nodes: Sequence[Node]) -> None:
        """Keep the entries of a tag's or snapshot's listing just built for `resolve`: a
        walk opens each directory and file it lists, and they resolve as kept.  All kept
        paths are dropped first if these would pass `RESOLVED_KEPT`, or when the budget
        evicts them (they count `RESOLVED_BYTES` each)."""
        if len(self._resolved) + len(nodes) > RESOLVED_KEPT:
            self._resolved.clear()
        if len(nodes) <= RESOLVED_KEPT:
            self._resolved.update((node.path, node) for node in nodes)
            if not self.budget.put(
                ("resolved",),
                self._resolved,
                RESOLVED_BYTES * len(self._resolved),
                dict.clear,
            ):
                self._resolved.clear()  # more than the whole budget: none kept

    async def node(self, ino: int) -> Node:
        """The node of the inode *ino*: its path resolved now, or the unlinked file it is.

        Raises `Stale` for an inode inside a ref that was deleted since the kernel
        got it (an open file, a working directory there), `NotFound` otherwise.
        """
        orphan = self.orphans.get(ino)
        if orphan is not None:
            return orphan
        path = self.inodes.path(ino)
        try:
            return await self.resolve(path)
        except NotFound:
            if (
                len(path) >= 2
                and path[0] in ("branches", "tags")
                and not self._refs.known(path[0], name_to_ref(path[1]))
            ):
                # Something the kernel holds (an open file, a cwd) inside a ref that
                # was deleted: stale, not merely missing.
                raise Stale(f"{path[0]}/{path[1]} was deleted") from None
            raise

    async def lookup(self, parent: Node, name: str) -> Node:
        """*name* in the directory *parent*, for a kernel lookup (cached in tags)."""
        try:
            check_name(name)
        except InvalidInput:
            raise NotFound(f"no valid name {name!r}") from None  # such a file cannot exist
        if not parent.is_dir:
            raise NotADirectory("/".join(parent.path))
        return self.known((*parent.path, name)) or self.remember(await self.child(parent, name))
