"""The Zarr tree of one immutable snapshot, as directories and files.

A directory is either a *node directory* (the root, a group, an array, or a
path that only holds deeper nodes) or a *chunk directory* below an array's
``c``.  Whether a name is a file follows from the Zarr layout: ``zarr.json`` is
a file; below an array with ndim N, ``c/i/.../k`` is a file once it has N
coordinates (for a 0-d array, ``c`` itself).  Chunk listings and sizes come
from the array's manifest in one pass (`ChunkIndex`, a few bytes a chunk), never
one call per chunk; resolving one chunk path or listing one chunk directory then
costs what that path or directory holds, not the array.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import weakref
from typing import TYPE_CHECKING, Any, Final

import trio

from icefs.errors import InvalidInput, NotADirectory, NotFound
from icefs.memory import MemoryBudget
from icefs.paths import METADATA_NAME, join_key
from icefs.store.layout import (
    CHUNK_DIR,
    COORDINATE_LIKE,
    DirPos,
    KeyClass,
    KeyKind,
    NodeInfo,
    TreeEntry,
    chunk_entry,
    chunk_key,
    chunk_name,
    parse_node,
)

if TYPE_CHECKING:
    from collections.abc import Buffer, Callable

    import numpy as np

    from icefs.store.chunkindex import ChunkIndex
    from icefs.store.reader import SnapshotReader, VirtualLocation
    from icefs.store.validate import ChunkCheck

__all__ = ["SnapshotTree"]

log = logging.getLogger(__name__)

#: Bytes a cached node takes beside its metadata (path, parsed facts, dict slots).
NODE_BYTES: Final = 400
#: Names the trees' budget entries: tree caches outlive no tree, nor share a key.
_TOKENS = itertools.count()


class SnapshotTree:
    """Resolves, lists and reads paths of one snapshot; caches what it learns (immutable).

    Its chunk indexes, and its node metadata and listings together, are entries of
    the mount's `MemoryBudget`: evicted, they are read again when next needed.
    """

    def __init__(self, reader: SnapshotReader, budget: MemoryBudget | None = None) -> None:
        self.reader = reader
        self.snapshot_id = reader.snapshot_id
        self._budget = budget if budget is not None else MemoryBudget(1 << 62)
        self._token = next(_TOKENS)
        #: what the node caches hold (`NODE_BYTES` a node, plus its metadata)
        self._node_bytes = 0
        self._nodes: dict[str, NodeInfo] = {}
        self._listings: dict[str, list[str]] = {}
        self._chunks: dict[str, ChunkIndex] = {}
        self._node_paths: set[str] | None = None
        #: per array: the check its chunks must pass (`chunk_check`)
        self._checks: dict[str, ChunkCheck] = {}
        #: bumped by every store or delete noted: a fact fetched across one is stale
        self._version = 0

    # -- cached facts -------------------------------------------------------------------------
    # Each fetch awaits; a store noted meanwhile (note_stored only updates facts already
    # cached) makes what it fetched stale, so it is used once and not cached.

    async def _known_nodes(self) -> set[str]:
        if self._node_paths is None:
            version = self._version
            paths = await self.reader.node_paths()
            if version != self._version:
                return paths
            self._node_paths = paths
        return self._node_paths

    async def _node(self, path: str) -> NodeInfo:
        info = self._nodes.get(path)
        version = self._version
        if info is None and path not in await self._known_nodes():
            info = NodeInfo(None, False, 0)  # no I/O for non-nodes
            if version == self._version:
                self._keep_node(path, info)
        if info is None:
            key = join_key(path, METADATA_NAME)
            try:
                metadata: bytes | None = bytes(await self.reader.get(key))
            except NotFound:
                metadata = None
            info = parse_node(metadata)
            if version == self._version:
                self._keep_node(path, info)
        return info

    def _keep_node(self, path: str, info: NodeInfo) -> None:
        self._nodes[path] = info
        self._node_bytes += NODE_BYTES + len(path) + len(info.metadata or b"")
        key = ("nodes", self._token)
        if self._budget.get(key) is None:
            self._budget.put(key, _weak_call(self, SnapshotTree.forget_nodes), self._node_bytes,
                             _evicted)  # fmt: skip
        elif len(self._nodes) % 64 == 0:  # resized now and then: a node is small
            self._budget.resize(key, self._node_bytes)

    def forget_nodes(self) -> None:
        """Drop what this tree knows of its nodes (evicted from the budget)."""
        self._nodes.clear()
        self._listings.clear()
        self._checks.clear()
        self._node_paths = None
        self._node_bytes = 0

    def release(self) -> None:
        """Forget everything this tree keeps, and give its entries back to the budget
        (the tree is no longer used, or a deleted node made all of it stale)."""
        self._budget.pop(("nodes", self._token))
        self.forget_nodes()
        self._drop_index()

    def _drop_index(self, array: str | None = None) -> None:
        """Forget the chunk index of *array* (every one if None) and its budget entry."""
        for name in list(self._chunks) if array is None else [array]:
            if self._chunks.pop(name, None) is not None:
                self._budget.pop(("chunks", self._token, name))

    async def _list_node(self, path: str) -> list[str]:
        names = self._listings.get(path)
        if names is None:
            version = self._version
            nodes = await self._known_nodes()
            prefix = f"{path}/" if path else ""
            found = {
                n[len(prefix) :].partition("/")[0] for n in nodes if n and n.startswith(prefix)
            }
            if path in nodes:  # its own zarr.json and, for an array, "c"
                found.update(await self.reader.list_dir(path))
            names = sorted(found)
            if version == self._version:
                self._listings[path] = names
        return names

    async def metadata(self, path: str) -> bytes | None:
        """The `zarr.json` of the node at *path*; None where there is no node."""
        return (await self._node(path)).metadata

    async def array_ndim(self, path: str) -> int | None:
        """The number of dimensions of the array at *path*; None where there is none."""
        node = await self._node(path)
        return node.ndim if node.is_array else None

    async def chunk_count(self, array: str) -> int:
        """How many chunks of the array at *array* are stored."""
        node = await self._node(array)
        return len(await self._chunk_index(array, node)) if node.is_array else 0

    async def node_paths(self) -> frozenset[str]:
        """The path of every node (group or array) in the tree."""
        return frozenset(await self._known_nodes())

    async def _chunk_index(self, array: str, node: NodeInfo) -> ChunkIndex:
        index = self._chunks.get(array)
        if index is None:
            version = self._version
            index = await self.reader.chunk_index(array, node.ndim, node.grid)
            if version == self._version:
                self._chunks[array] = index
                self._budget.put(
                    ("chunks", self._token, array),
                    _weak_call(self, lambda tree: tree._chunks.pop(array, None)),
                    index.nbytes,
                    _evicted,
                )
        else:
            self._budget.get(("chunks", self._token, array))  # recently used
        return index

    async def is_virtual(self, entry: TreeEntry) -> bool:
        """Whether the chunk file *entry* is a virtual chunk (a reference into another file)."""
        if entry.array is None:
            return False
        node = await self._node(entry.array)
        return (await self._chunk_index(entry.array, node)).is_virtual(entry.coords)

    async def chunk_location(self, entry: TreeEntry) -> VirtualLocation | None:
        """Where the chunk file *entry* points, if it is a virtual chunk; else None."""
        if entry.array is None or not await self.is_virtual(entry):
            return None
        return await self.reader.chunk_location(entry.array, entry.coords)

    # -- resolution ---------------------------------------------------------------------------

    async def child(self, pos: DirPos, name: str) -> TreeEntry:
        """Resolve *name* inside the directory at *pos*; raise `NotFound` if absent."""
        if pos.array is not None:
            return await self._chunk_child(pos, name)
        node = await self._node(pos.node)
        if name == METADATA_NAME:
            if node.metadata is None:
                raise NotFound(join_key(pos.node, name))
            return TreeEntry(False, join_key(pos.node, name), len(node.metadata))
        if node.is_array and name == CHUNK_DIR:
            index = await self._chunk_index(pos.node, node)
            if node.ndim == 0:
                length = index.length(())
                if length is None:
                    raise NotFound(join_key(pos.node, name))
                return TreeEntry(False, join_key(pos.node, name), length, array=pos.node)
            if not index.has_prefix(()):
                raise NotFound(join_key(pos.node, name))
            return TreeEntry(True, pos=DirPos(pos.node, pos.node, ()))
        if name not in await self._list_node(pos.node):
            raise NotFound(join_key(pos.node, name))
        return TreeEntry(True, pos=DirPos(join_key(pos.node, name)))

    async def _chunk_child(self, pos: DirPos, name: str) -> TreeEntry:
        assert pos.array is not None
        coord = chunk_name(name)
        if coord is None:
            raise NotFound(name)
        array = await self._node(pos.array)
        index = await self._chunk_index(pos.array, array)
        coords = (*pos.coords, coord)
        if len(coords) == array.ndim:
            length = index.length(coords)
            if length is None:
                raise NotFound(name)
            return chunk_entry(pos.array, coords, length)
        if not index.has_prefix(coords):
            raise NotFound(name)
        return TreeEntry(True, pos=DirPos(pos.node, pos.array, coords))

    async def chunk_files(
        self, pos: DirPos
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
        """The files of the chunk directory at *pos* as arrays: their names as integers
        (sorted) and sizes; None unless *pos* is a chunk directory whose entries are files."""
        if pos.array is None:
            return None
        array = await self._node(pos.array)
        if not array.is_array or len(pos.coords) + 1 != array.ndim:
            return None
        names, sizes = (await self._chunk_index(pos.array, array)).below(pos.coords)
        return names, sizes

    async def resolve(self, parts: tuple[str, ...]) -> TreeEntry:
        """Resolve the path *parts* from the snapshot's root."""
        entry = TreeEntry(True, pos=DirPos(""))
        for name in parts:
            if entry.pos is None:
                raise NotADirectory("/".join(parts))
            entry = await self.child(entry.pos, name)
        return entry

    async def listdir(self, pos: DirPos) -> list[tuple[str, TreeEntry]]:
        """Return the (name, entry) pairs of the directory at *pos*, sorted by name."""
        if pos.array is not None:
            array = await self._node(pos.array)
            index = await self._chunk_index(pos.array, array)
            here = pos.coords
            below, lengths = index.below(here)
            if len(here) + 1 < array.ndim:
                return [
                    (str(c), TreeEntry(True, pos=DirPos(pos.node, pos.array, (*here, c))))
                    for c in below.tolist()
                ]
            # Chunk files (a directory of thousands, the first time a walk meets it).
            prefix = chunk_key(pos.array, here)
            out: list[tuple[str, TreeEntry]] = []
            for c, length in zip(below.tolist(), lengths.tolist(), strict=True):
                name = str(c)
                entry = TreeEntry(
                    False, f"{prefix}/{name}", length, array=pos.array, coords=(*here, c)
                )
                out.append((name, entry))
            return out
        out = []
        for name in await self._list_node(pos.node):
            try:
                out.append((name, await self.child(pos, name)))
            except NotFound:
                continue  # e.g. an array's "c" with no chunk written
        return out

    # -- writes -------------------------------------------------------------------------------

    async def classify(self, key: str) -> KeyClass:
        """Tell what the file path *key* would store.

        ``.../zarr.json`` is metadata.  ``<array>/c/<i>/.../<k>`` with canonical
        integers is a chunk: `NotFound` if no array is there, `InvalidInput` if
        the number of coordinates is not the array's ndim (Icechunk would accept
        such a key and store something no reader can find).  Anything else is a
        scratch file, kept in the mount and never committed.
        """
        parts = key.split("/")
        if parts[-1] == METADATA_NAME:
            return KeyClass(KeyKind.METADATA, "/".join(parts[:-1]))
        for i, part in enumerate(parts):
            if part != CHUNK_DIR:
                continue
            coords = [chunk_name(p) for p in parts[i + 1 :]]
            if any(c is None for c in coords):
                continue
            array = "/".join(parts[:i])
            node = await self._node(array)
            if not node.is_array:
                raise NotFound(f"chunk {key}: no array at /{array}")
            if len(coords) != node.ndim:
                raise InvalidInput(
                    f"chunk {key} has {len(coords)} coordinates; "
                    f"array /{array} has {node.ndim} dimensions"
                )
            return KeyClass(KeyKind.CHUNK, array, tuple(c for c in coords if c is not None))
        return KeyClass(KeyKind.SCRATCH)

    async def check_new_name(self, key: str) -> None:
        """Refuse (`InvalidInput`) a new file or directory *key* that miswrites a chunk key.

        Below an array's ``c/``, a name such as ``01``, ``-1``, ``+2`` or ``0x`` can
        only be a mistaken coordinate: it would become a scratch file, never
        stored, in silence.  Temporary names of real tools (zarr's
        ``0.<hex>.partial``, rsync's ``.0.XXXXXX``, editors' ``.0.swp``) hold a dot
        and stay scratch files.
        """
        parts = key.split("/")
        for i, part in enumerate(parts):
            if part != CHUNK_DIR:
                continue
            wrong = [
                p for p in parts[i + 1 :] if COORDINATE_LIKE.fullmatch(p) and chunk_name(p) is None
            ]
            if wrong and (await self._node("/".join(parts[:i]))).is_array:
                raise InvalidInput(
                    f"{key}: {wrong[0]!r} is not a chunk coordinate (chunk keys "
                    "use plain decimal integers: no sign, no leading zeros)"
                )

    async def load_chunk_orders(self, array: str) -> None:
        """Make the loaded chunk index of *array* ready for `chunk_position` in walk order,
        in a worker thread (a million chunks take about a second)."""
        index = self._chunks.get(array)
        if index is not None:
            await trio.to_thread.run_sync(index.walk_order)

    def chunk_position(self, entry: TreeEntry, by_name: bool) -> int:
        """Return where the chunk *entry* stands in its array's chunk order; -1 if unknown.

        The order is C order of the coordinates, or with *by_name* the order in
        which a walk of the directories meets the files (names sorted as text,
        known once `load_chunk_orders` ran for the array's current index).
        """
        index = self._chunks.get(entry.array) if entry.array is not None else None
        return -1 if index is None else index.position(entry.coords, by_name)

    def chunks_between(
        self, entry: TreeEntry, by_name: bool, start: int, stop: int
    ) -> list[TreeEntry]:
        """Return the chunks of *entry*'s array at positions [*start*, *stop*) of the
        order `chunk_position` numbers."""
        array = entry.array
        index = self._chunks.get(array) if array is not None else None
        if index is None or array is None:
            return []
        return [chunk_entry(array, c, n) for c, n in index.between(by_name, start, stop)]

    def note_stored(self, what: KeyClass, size: int) -> None:
        """Update the caches after *what* was stored with *size* bytes (no reload needed)."""
        self._version += 1
        if what.kind is KeyKind.METADATA:
            self._forget_node(what.node)
            if self._node_paths is not None:
                self._node_paths.add(what.node)
        elif what.kind is KeyKind.CHUNK:
            names = self._listings.get(what.node)
            if names is not None and CHUNK_DIR not in names:  # the array's first chunk
                bisect.insort(names, CHUNK_DIR)
            index = self._chunks.get(what.node)
            if index is not None and not index.stored(what.coords, size):
                self._drop_index(what.node)  # outside what it can hold: indexed anew

    def note_deleted(self, what: KeyClass) -> None:
        """Update the caches after *what* was deleted."""
        self._version += 1
        if what.kind is KeyKind.METADATA:  # the whole node, and everything below it, is gone
            self.release()
        elif what.kind is KeyKind.CHUNK:
            index = self._chunks.get(what.node)
            if index is not None:
                index.deleted(what.coords)

    async def chunk_check(self, array: str) -> ChunkCheck:
        """Return the `ChunkCheck` for chunks of the array at *array* (built in a thread)."""
        check = self._checks.get(array)
        if check is None:
            from icefs.store.validate import ChunkCheck

            metadata = (await self._node(array)).metadata
            if metadata is None:
                raise NotFound(f"no array at /{array}")
            check = await trio.to_thread.run_sync(ChunkCheck, metadata)
            self._checks[array] = check
        return check

    def _forget_node(self, path: str) -> None:
        self._checks.pop(path, None)
        self._nodes.pop(path, None)
        self._drop_index(path)
        self._listings.pop(path, None)
        while path:
            path = path.rpartition("/")[0]
            self._listings.pop(path, None)

    # -- data ---------------------------------------------------------------------------------

    async def read(self, entry: TreeEntry, offset: int, size: int) -> Buffer:
        """Return up to *size* bytes of the file *entry* from *offset* (b'' at or past EOF)."""
        end = min(offset + size, entry.size)
        if offset >= end:
            return b""
        inline = await self._inline_or_metadata(entry)
        if inline is not None:
            return inline[offset:end]
        if offset == 0 and end == entry.size:
            return await self.reader.get(entry.key)
        return await self.reader.get(entry.key, offset, end)

    async def read_whole(self, entry: TreeEntry) -> Buffer:
        """Return all bytes of the file *entry*."""
        inline = await self._inline_or_metadata(entry)
        if inline is not None:
            return inline
        if entry.size == 0:
            return b""
        return await self.reader.get(entry.key)

    async def _inline_or_metadata(self, entry: TreeEntry) -> bytes | None:
        """Return the bytes icefs already holds for *entry* (a node's metadata) or None.

        Inline chunks are not kept: Icechunk serves them from the manifest it holds."""
        if entry.array is None:
            node_path = entry.key.rpartition("/")[0]
            return (await self._node(node_path)).metadata or b""
        return None


def _weak_call(tree: SnapshotTree, act: Callable[[SnapshotTree], object]) -> Callable[[], None]:
    """*act* on *tree* when called, if the tree still lives (the budget does not keep it)."""
    ref = weakref.ref(tree)

    def call() -> None:
        alive = ref()
        if alive is not None:
            act(alive)

    return call


def _evicted(call: Callable[[], None]) -> None:
    call()
