"""The Zarr tree of one immutable snapshot, as directories and files.

A directory is either a *node directory* (the root, a group, an array, or a
path that only holds deeper nodes) or a *chunk directory* below an array's
``c``.  Whether a name is a file follows from the Zarr layout: ``zarr.json`` is
a file; below an array with ndim N, ``c/i/.../k`` is a file once it has N
coordinates (for a 0-d array, ``c`` itself).  Chunk listings and sizes come
from the array's manifest in one pass (`ChunkIndex`), never one call per chunk.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from icefs.errors import InvalidInput, NotADirectory, NotFound
from icefs.paths import METADATA_NAME, join_key

if TYPE_CHECKING:
    from collections.abc import Buffer

    from icefs.store.reader import ChunkIndex, SnapshotReader, VirtualLocation
    from icefs.store.validate import ChunkCheck

__all__ = ["DirPos", "KeyClass", "SnapshotTree", "TreeEntry"]

log = logging.getLogger(__name__)

CHUNK_DIR: Final = "c"


@dataclass(frozen=True, slots=True)
class DirPos:
    """Where a directory sits: a node path, or a chunk prefix of an array (array set)."""

    node: str
    array: str | None = None
    coords: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One resolved path: a directory (with its position) or a file (with key and size)."""

    is_dir: bool
    key: str = ""
    size: int = 0
    pos: DirPos | None = None
    #: For a chunk file: its array's path and coordinates.
    array: str | None = None
    coords: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyClass:
    """What a file path inside a ref is: a node's metadata, a chunk, or a scratch file."""

    kind: str  # "metadata", "chunk" or "scratch"
    node: str = ""  # the node (metadata) or array (chunk) path
    coords: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _NodeInfo:
    metadata: bytes | None
    is_array: bool
    ndim: int


def _parse_node(metadata: bytes | None) -> _NodeInfo:
    if metadata is None:
        return _NodeInfo(None, False, 0)
    try:
        doc = json.loads(metadata)
        if isinstance(doc, dict) and doc.get("node_type") == "array":
            return _NodeInfo(metadata, True, len(doc.get("shape", ())))
    except (ValueError, TypeError):
        log.warning("unreadable zarr.json (%d bytes) treated as a group", len(metadata))
    return _NodeInfo(metadata, False, 0)


#: A name that a user or tool meant as a chunk coordinate: a digit, maybe signed or suffixed.
_COORDINATE_LIKE: Final = re.compile(r"[+-]?[0-9][0-9A-Za-z_]*")


def _chunk_name(coord: str) -> int | None:
    """Return the integer a chunk path component names, or None ('01', '-1', 'x' name none)."""
    if not coord.isdigit() or not coord.isascii() or (len(coord) > 1 and coord[0] == "0"):
        return None
    return int(coord)


class SnapshotTree:
    """Resolves, lists and reads paths of one snapshot; caches what it learns (immutable)."""

    def __init__(self, reader: SnapshotReader) -> None:
        self.reader = reader
        self.snapshot_id = reader.snapshot_id
        self._nodes: dict[str, _NodeInfo] = {}
        self._listings: dict[str, list[str]] = {}
        self._chunks: dict[str, ChunkIndex] = {}
        #: per array: its chunks in C order, in walk (name) order, and the index they came from
        self._orders: dict[
            str, tuple[list[tuple[int, ...]], list[tuple[int, ...]], ChunkIndex]
        ] = {}
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

    async def _node(self, path: str) -> _NodeInfo:
        info = self._nodes.get(path)
        version = self._version
        if info is None and path not in await self._known_nodes():
            info = _NodeInfo(None, False, 0)  # no I/O for non-nodes
            if version == self._version:
                self._nodes[path] = info
        if info is None:
            key = join_key(path, METADATA_NAME)
            try:
                metadata: bytes | None = bytes(await self.reader.get(key))
            except NotFound:
                metadata = None
            info = _parse_node(metadata)
            if version == self._version:
                self._nodes[path] = info
        return info

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
        return len((await self._chunk_index(array, node.ndim)).lengths) if node.is_array else 0

    async def node_paths(self) -> frozenset[str]:
        """The path of every node (group or array) in the tree."""
        return frozenset(await self._known_nodes())

    async def _chunk_index(self, array: str, ndim: int) -> ChunkIndex:
        index = self._chunks.get(array)
        if index is None:
            version = self._version
            index = await self.reader.chunk_index(array, ndim)
            if version == self._version:
                self._chunks[array] = index
        return index

    async def is_virtual(self, entry: TreeEntry) -> bool:
        """Whether the chunk file *entry* is a virtual chunk (a reference into another file)."""
        if entry.array is None:
            return False
        node = await self._node(entry.array)
        return entry.coords in (await self._chunk_index(entry.array, node.ndim)).virtual

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
            index = await self._chunk_index(pos.node, node.ndim)
            if node.ndim == 0:
                if () not in index.lengths:
                    raise NotFound(join_key(pos.node, name))
                return TreeEntry(False, join_key(pos.node, name), index.lengths[()], array=pos.node)
            if not index.children.get(()):
                raise NotFound(join_key(pos.node, name))
            return TreeEntry(True, pos=DirPos(pos.node, pos.node, ()))
        if name not in await self._list_node(pos.node):
            raise NotFound(join_key(pos.node, name))
        return TreeEntry(True, pos=DirPos(join_key(pos.node, name)))

    async def _chunk_child(self, pos: DirPos, name: str) -> TreeEntry:
        assert pos.array is not None
        coord = _chunk_name(name)
        if coord is None:
            raise NotFound(name)
        array = await self._node(pos.array)
        index = await self._chunk_index(pos.array, array.ndim)
        coords = (*pos.coords, coord)
        if len(coords) == array.ndim:
            length = index.lengths.get(coords)
            if length is None:
                raise NotFound(name)
            return _chunk_entry(pos.array, coords, length)
        if coords not in index.children:
            raise NotFound(name)
        return TreeEntry(True, pos=DirPos(pos.node, pos.array, coords))

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
            index = await self._chunk_index(pos.array, array.ndim)
            here, below = pos.coords, index.children.get(pos.coords, ())
            if len(here) + 1 < array.ndim:
                return [
                    (str(c), TreeEntry(True, pos=DirPos(pos.node, pos.array, (*here, c))))
                    for c in below
                ]
            # Chunk files (a directory of thousands, the first time a walk meets it).
            prefix, lengths = _chunk_key(pos.array, here), index.lengths
            out: list[tuple[str, TreeEntry]] = []
            for c in below:
                coords, name = (*here, c), str(c)
                entry = TreeEntry(
                    False, f"{prefix}/{name}", lengths[coords], array=pos.array, coords=coords
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
            return KeyClass("metadata", "/".join(parts[:-1]))
        for i, part in enumerate(parts):
            if part != CHUNK_DIR:
                continue
            coords = [_chunk_name(p) for p in parts[i + 1 :]]
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
            return KeyClass("chunk", array, tuple(c for c in coords if c is not None))
        return KeyClass("scratch")

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
                p
                for p in parts[i + 1 :]
                if _COORDINATE_LIKE.fullmatch(p) and _chunk_name(p) is None
            ]
            if wrong and (await self._node("/".join(parts[:i]))).is_array:
                raise InvalidInput(
                    f"{key}: {wrong[0]!r} is not a chunk coordinate (chunk keys "
                    "use plain decimal integers: no sign, no leading zeros)"
                )

    async def load_chunk_orders(self, array: str) -> None:
        """Sort the loaded chunk index of *array* for `chunk_position`, in a worker thread.

        A million chunks take about a second to sort by name: not on the event loop.
        """
        index = self._chunks.get(array)
        orders = self._orders.get(array)
        if index is None or (orders is not None and orders[2] is index):
            return
        by_int, by_name = await trio.to_thread.run_sync(_sorted_coords, list(index.lengths))
        self._orders[array] = (by_int, by_name, index)

    def chunk_position(self, entry: TreeEntry, by_name: bool) -> int:
        """Return where the chunk *entry* stands in its array's chunk order; -1 if unknown.

        The order is C order of the coordinates, or with *by_name* the order in
        which a walk of the directories meets the files (names sorted as text).
        Known only once `load_chunk_orders` ran for the array's current index.
        """
        order = self._order(entry, by_name)
        if order is None:
            return -1
        if by_name:
            return bisect.bisect_left(order, _walk_key(entry.coords), key=_walk_key)
        return bisect.bisect_left(order, entry.coords)

    def chunks_between(
        self, entry: TreeEntry, by_name: bool, start: int, stop: int
    ) -> list[TreeEntry]:
        """Return the chunks of *entry*'s array at positions [*start*, *stop*) of the
        order `chunk_position` numbers."""
        order = self._order(entry, by_name)
        array = entry.array
        if order is None or array is None:
            return []
        lengths = self._chunks[array].lengths
        return [_chunk_entry(array, c, lengths[c]) for c in order[start:stop]]

    def _order(self, entry: TreeEntry, by_name: bool) -> list[tuple[int, ...]] | None:
        array = entry.array
        index = self._chunks.get(array) if array is not None else None
        orders = self._orders.get(array) if array is not None else None
        if (
            index is None
            or orders is None
            or orders[2] is not index
            or entry.coords not in index.lengths
        ):
            return None
        return orders[1] if by_name else orders[0]

    def note_stored(self, what: KeyClass, size: int) -> None:
        """Update the caches after *what* was stored with *size* bytes (no reload needed)."""
        self._version += 1
        if what.kind == "metadata":
            self._forget_node(what.node)
            if self._node_paths is not None:
                self._node_paths.add(what.node)
        elif what.kind == "chunk":
            names = self._listings.get(what.node)
            if names is not None and CHUNK_DIR not in names:  # the array's first chunk
                bisect.insort(names, CHUNK_DIR)
            index = self._chunks.get(what.node)
            if index is None:
                return
            index.lengths[what.coords] = size
            index.inline.pop(what.coords, None)
            for depth in range(len(what.coords)):
                below = index.children.setdefault(what.coords[:depth], [])
                i = bisect.bisect_left(below, what.coords[depth])
                if i == len(below) or below[i] != what.coords[depth]:
                    below.insert(i, what.coords[depth])

    def note_deleted(self, what: KeyClass) -> None:
        """Update the caches after *what* was deleted."""
        self._version += 1
        if what.kind == "metadata":  # the whole node, and everything below it, is gone
            self._checks.clear()
            self._nodes.clear()
            self._listings.clear()
            self._chunks.clear()
            self._node_paths = None
        elif what.kind == "chunk":
            self._chunks.pop(what.node, None)

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
        self._chunks.pop(path, None)
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
        """Return the bytes icefs already holds for *entry* (metadata, inline chunk) or None."""
        if entry.array is None:
            node_path = entry.key.rpartition("/")[0]
            return (await self._node(node_path)).metadata or b""
        index = self._chunks.get(entry.array)
        return None if index is None else index.inline.get(entry.coords)


def _walk_key(coords: tuple[int, ...]) -> tuple[str, ...]:
    """Where a directory walk meets the chunk at *coords*: names compare as text."""
    return tuple(map(str, coords))


def _sorted_coords(
    coords: list[tuple[int, ...]],
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    by_int = sorted(coords)
    return by_int, sorted(by_int, key=_walk_key)


def _chunk_key(array: str, coords: tuple[int, ...]) -> str:
    """The key of the chunk at *coords* of *array* ('' is the root array)."""
    return "/".join(
        (array, CHUNK_DIR, *map(str, coords)) if array else (CHUNK_DIR, *map(str, coords))
    )


def _chunk_entry(array: str, coords: tuple[int, ...], length: int) -> TreeEntry:
    return TreeEntry(False, _chunk_key(array, coords), length, array=array, coords=coords)
