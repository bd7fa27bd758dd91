"""Opening snapshot files for reading, and every read.

A file of a tag or snapshot never changes: the kernel keeps its pages.  The
first open of a chunk file starts fetching it (a read follows at once).  Files
up to `WHOLE_FETCH_LIMIT` are fetched whole on their first read, through the
read-ahead wherever the chunk is a snapshot's (tags, snapshots, a branch's tip,
chunks a branch's session has not changed), and answered from that buffer
without a copy; larger ones are read in byte ranges.  Files of a branch keep their pages
while the branch stands on the same snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from icefs.errors import Stale
from icefs.fs.handles import Buffered, HandleTable, Query, Text, TreeFile
from icefs.fs.values import NodeKind, OpenReply

if TYPE_CHECKING:
    from icefs.fs.handles import FileHandle
    from icefs.fs.namespace import Namespace
    from icefs.fs.refs import RefTable
    from icefs.fs.stats import Stats
    from icefs.fs.values import Node
    from icefs.store.prefetch import Prefetcher

__all__ = ["WHOLE_FETCH_LIMIT", "Reads"]

#: Files up to this size are fetched whole on first read and served from the handle.
WHOLE_FETCH_LIMIT: Final = 8 * 1024 * 1024


class Reads:
    """Opens tree files and answers reads of every kind of open file."""

    def __init__(
        self,
        namespace: Namespace,
        refs: RefTable,
        handles: HandleTable,
        prefetcher: Prefetcher,
        stats: Stats,
    ) -> None:
        self._namespace = namespace
        self._refs = refs
        self._handles = handles
        self.prefetcher = prefetcher
        self._stats = stats
        #: ino -> the snapshot (and session tree) of its last open, for branch files
        self._opened_at: dict[int, str] = {}

    async def open(self, node: Node, ino: int) -> OpenReply:
        """Open the tree file *node* (inode *ino*) for reading."""
        assert node.view is not None
        tree = await self._namespace.tree_for(node.view)
        version = f"{node.view.snapshot_id}:{id(tree)}"
        first = ino not in self._opened_at  # so the kernel holds none of its pages
        # a branch's v2 rendering changes under any name when either view writes: not kept
        keep = node.view.immutable or (not node.view.render and self._opened_at.get(ino) == version)
        self._opened_at[ino] = version
        if first and node.entry is not None:
            ahead = await self._namespace.immutable_tree(node.view, tree, node.entry)
            if ahead is not None:
                # A read follows at once: start its get now, while the reply to the open
                # goes back and the read comes in. Reopening a cached file fetches nothing.
                self.prefetcher.fetch_soon(ahead, node.entry)
        return OpenReply(self._handles.add(TreeFile(node, ino, tree)), keep_cache=keep)

    def forgotten(self, ino: int) -> None:
        """The kernel forgot *ino*: it holds none of its pages any more."""
        self._opened_at.pop(ino, None)

    async def read(self, handle: FileHandle, offset: int, size: int) -> bytes | memoryview:
        """Read up to *size* bytes at *offset* from the open file *handle*.

        A file fetched whole answers with a view of its bytes, not a copy.
        """
        node = handle.node
        view = node.view
        if (
            view is not None
            and node.kind is NodeKind.TREE_FILE
            and not node.orphan
            and view.kind != "snapshot"
            and not self._refs.known("branches" if view.kind == "branch" else "tags", view.ref)
        ):
            raise Stale(f"{view.kind} {view.ref} was deleted")
        data: bytes | memoryview
        if isinstance(handle, Buffered):
            data = handle.overlay.spool.read(offset, size)
        elif isinstance(handle, Text):
            data = memoryview(handle.data)[offset : offset + size]
        elif isinstance(handle, Query):
            data = memoryview(handle.answer or b"")[offset : offset + size]
        elif isinstance(handle, TreeFile):
            data = await self._read_tree(handle, offset, size)
        else:
            data = b""  # a command file reads as empty
        self._stats.bytes_read += len(data)
        return data

    async def _read_tree(self, handle: TreeFile, offset: int, size: int) -> memoryview:
        entry = handle.node.entry
        view = handle.node.view
        assert entry is not None
        if handle.data is None and entry.size <= WHOLE_FETCH_LIMIT:
            async with handle.lock:  # one fetch even when reads arrive together
                if handle.data is None:
                    assert view is not None
                    ahead = await self._namespace.immutable_tree(view, handle.tree, entry)
                    if ahead is not None:
                        handle.data = await self.prefetcher.read_whole(ahead, entry)
                    else:
                        handle.data = await handle.tree.read_whole(entry)
        if handle.data is not None:
            return memoryview(handle.data)[offset : offset + size]
        return memoryview(await handle.tree.read(entry, offset, size))
