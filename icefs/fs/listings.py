"""Directory listings: what each directory holds, pinned when it is opened.

A listing of a tag's or snapshot's directory never changes: it is built once
and kept (bounded by the number of entries over all kept listings), so a
second ``find`` or ``ls -R`` skips building it; the FUSE adapter may keep the
replies it builds from such a listing on the listing itself.  Listings of
branches are built at every open and show the files that live only in the
mount.  ``zarr.json`` comes last, so ``rm -r`` deletes a node's contents before
the node.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from cachetools import LRUCache

from icefs.errors import NotADirectory, NotFound
from icefs.fs import controltext
from icefs.fs.handles import ChunkFiles, Listing
from icefs.fs.values import KINDS, RENDERINGS, ROOT_POS, Node, NodeKind
from icefs.paths import METADATA_NAME, ref_to_name
from icefs.store import TreeEntry

if TYPE_CHECKING:
    from icefs.fs.attrs import Attributes
    from icefs.fs.branches import Branches
    from icefs.fs.namespace import Namespace
    from icefs.fs.refs import RefTable
    from icefs.fs.values import View
    from icefs.memory import MemoryBudget

__all__ = ["LISTED_ENTRIES_KEPT", "Listings"]

log = logging.getLogger(__name__)

#: Entries of tag and snapshot listings kept, over all of them.
LISTED_ENTRIES_KEPT: Final = 1_000_000
#: Bytes one kept entry takes, with the reply the FUSE adapter builds from it.
LISTED_ENTRY_BYTES: Final = 600


#: The names of node documents (v3, and v2 in its views), listed after their siblings.
_NODE_DOCUMENTS: Final = frozenset({METADATA_NAME, ".zarray", ".zgroup"})


class _Kept(LRUCache[tuple["View", tuple[str, ...]], Listing]):
    """Kept listings by (view, path), at most `LISTED_ENTRIES_KEPT` entries over all; one
    pushed out leaves the budget too."""

    def __init__(self, budget: MemoryBudget) -> None:
        super().__init__(
            LISTED_ENTRIES_KEPT, getsizeof=lambda listing: max(1, len(listing.entries))
        )
        self._budget = budget

    def popitem(self) -> tuple[tuple[View, tuple[str, ...]], Listing]:
        key, listing = super().popitem()
        self._budget.pop(("listing", key))
        return key, listing


class Listings:
    """Builds listings, and keeps those of tags and snapshots."""

    def __init__(
        self, namespace: Namespace, refs: RefTable, branches: Branches, attrs: Attributes
    ) -> None:
        self._namespace = namespace
        self._attrs = attrs
        self._refs = refs
        self._branches = branches
        #: kept listings, also entries of the mount's memory budget (evicted from both)
        self._budget = namespace.budget
        self._kept = _Kept(self._budget)

    def __len__(self) -> int:
        """How many entries the kept listings hold."""
        return int(self._kept.currsize)

    async def listing(self, node: Node) -> Listing:
        """The listing of the directory *node*; `NotADirectory` for a file."""
        if not node.is_dir:
            raise NotADirectory("/".join(node.path))
        if node.view is None or not node.view.immutable or node.kind is NodeKind.REF_CTRL_DIR:
            return Listing(await self.entries(node))
        chunks = await self._chunk_files(node)
        if chunks is not None:
            return Listing([], chunks=chunks)
        # A tag or snapshot directory never changes: `find` or `ls -R` run again skip
        # building the listing.
        key = (node.view, node.path)
        listing = self._kept.get(key)
        if listing is None:
            listing = Listing(await self.entries(node), fixed=True)
            self._namespace.remember_listed(listing.entries)
            try:
                self._kept[key] = listing
            except ValueError:  # bigger than all kept listings together: not kept
                listing.fixed = False
                return listing
            size = LISTED_ENTRY_BYTES * max(1, len(listing.entries))
            if not self._budget.put(("listing", key), key, size, self._evicted):
                self._kept.pop(key, None)
                listing.fixed = False
        else:
            self._budget.get(("listing", key))  # recently used
        return listing

    def _evicted(self, key: tuple[View, tuple[str, ...]]) -> None:
        self._kept.pop(key, None)

    async def _chunk_files(self, node: Node) -> ChunkFiles | None:
        """A tag's or snapshot's chunk directory of files as arrays (`ChunkFiles`), its
        files numbered as one range of inodes (`InodeTable.number`); None for any other
        directory.  Nothing is kept: the chunk index answers again at the next open."""
        entry, view = node.entry, node.view
        if entry is None or entry.pos is None or entry.pos.array is None or view is None:
            return None
        tree = await self._namespace.tree_for(view)
        found = await tree.chunk_files(entry.pos)
        if found is None:
            return None
        names, sizes = found
        first = self._namespace.inodes.number(node.path, names)
        template = self._attrs.of(
            Node((*node.path, "0"), NodeKind.TREE_FILE, view, TreeEntry(False, "", 0)), 0
        )
        return ChunkFiles(names, sizes, first, template)

    async def entries(self, node: Node) -> list[Node]:
        """The entries of the directory *node*, as they are now."""
        kind = node.kind
        if kind is NodeKind.ROOT:
            return [Node((name,), NodeKind.REF_LIST) for name in KINDS] + [
                Node((name,), NodeKind.RENDERING) for name in RENDERINGS
            ]
        if kind is NodeKind.RENDERING:
            return [Node((*node.path, name), NodeKind.REF_LIST) for name in KINDS]
        if kind is NodeKind.ROOT_CTRL_DIR:
            return [
                Node((*node.path, f), NodeKind.ROOT_CTRL_FILE, ctrl=f)
                for f in controltext.ROOT_FILES
            ]
        if kind is NodeKind.REF_CTRL_DIR:
            assert node.view is not None
            return [
                Node((*node.path, f), NodeKind.REF_CTRL_FILE, node.view, ctrl=f)
                for f in controltext.ref_files(node.view.read_only)
            ]
        if kind is NodeKind.REF_LIST:
            return await self._refs_in(node)
        return await self._tree_entries(node)

    async def _tree_entries(self, node: Node) -> list[Node]:
        assert node.view is not None
        assert node.entry is not None
        assert node.entry.pos is not None
        tree = await self._namespace.tree_for(node.view)
        entries = {
            name: Node(
                (*node.path, name),
                NodeKind.TREE_DIR if e.is_dir else NodeKind.TREE_FILE,
                node.view,
                e,
            )
            for name, e in await tree.listdir(node.entry.pos)
        }
        if node.view.render:
            files = self._namespace.zarr2_files
            for name in files.names_below(node.view, node.key):
                child = files.child(node.view, (*node.path, name))
                if child is not None:
                    entries[name] = child
        state = self._branches.of_view(node.view)
        if state is not None:
            prefix = f"{node.key}/" if node.key else ""
            below = [
                k
                for k in (*state.local.files, *state.local.dirs)
                if k.startswith(prefix) and k != node.key and "/" not in k[len(prefix) :]
            ]
            for key in below:
                child = self._namespace.overlay_child(node.view, (*node.path, key[len(prefix) :]))
                if child is not None:
                    entries[child.path[-1]] = child
        # A node's document last: `rm -r` then deletes its contents before the node itself.
        return [entries[n] for n in sorted(entries, key=lambda n: (n in _NODE_DOCUMENTS, n))]

    async def _refs_in(self, node: Node) -> list[Node]:
        kind = KINDS[node.path[-1]]
        if kind == "snapshot":
            ids = await self._refs.snapshot_ids()
        else:
            ids = sorted(self._refs.branches if kind == "branch" else self._refs.tags)
        out = []
        for ref in ids:
            name = ref if kind == "snapshot" else ref_to_name(ref)
            if name is None:
                log.warning("%s %r cannot be shown as a file name; skipped", kind, ref)
                continue
            try:
                view = await self._namespace.ref_view(node, name)
            except NotFound:
                continue  # deleted since the refresh
            out.append(
                Node((*node.path, name), NodeKind.REF_ROOT, view, TreeEntry(True, pos=ROOT_POS))
            )
        return out
