"""A snapshot's (or session's) tree as Zarr v2 shows it, raw or decoded.

`Zarr2Tree` wraps a `SnapshotTree` and answers the same calls the filesystem
makes of it (child, listdir, read, read_whole, and the read-ahead's chunk
order), so views render it like any tree.  Each group directory holds
`.zgroup` and `.zattrs`, each array `.zarray`, `.zattrs` and its chunk files
at v2 keys (the v3 ``c/0/1`` appears as ``0/1``; a 0-d array's ``c`` as ``0``),
the root also `.zmetadata`.  Chunk entries keep their v3 key, so the raw
rendering reads (and reads ahead) the very chunk the v3 view does; the decoded
rendering decodes it with the array's compressor.  Arrays without a v2 form
are not shown; `Translations.left_out` keeps why.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import trio
from cachetools import LRUCache

from icefs.errors import NotFound, StorageFailure
from icefs.paths import join_key
from icefs.store.layout import CHUNK_DIR, DirPos, TreeEntry
from icefs.store.zarr2 import (
    ARRAY,
    ATTRS,
    CONSOLIDATED,
    EMPTY_ATTRIBUTES,
    GROUP,
    Untranslatable,
    V2Array,
    consolidated,
    decode_chunk,
    group_documents,
    translate_array,
    without_fill,
)

if TYPE_CHECKING:
    from collections.abc import Buffer

    from icefs.store.reader import VirtualLocation
    from icefs.store.tree import SnapshotTree

__all__ = ["Translations", "Zarr2Tree", "left_out"]

log = logging.getLogger(__name__)

#: v3 array documents whose v2 form is kept, least recent out.
TRANSLATIONS_KEPT: Final = 4096
#: `.zmetadata` documents of immutable snapshots kept.
CONSOLIDATED_KEPT: Final = 64
#: Decoded chunks kept for reads in pieces (files past the whole-read limit).
DECODED_KEPT: Final = 4


class Translations:
    """v2 forms of v3 array documents, by content, and the arrays left out with why."""

    def __init__(self) -> None:
        self._arrays: LRUCache[bytes, V2Array | str] = LRUCache(TRANSLATIONS_KEPT)
        self.consolidated: LRUCache[tuple[str, bool, str], bytes] = LRUCache(CONSOLIDATED_KEPT)
        #: (snapshot id, array path) -> why the v2 view leaves the array out
        self.left_out: LRUCache[tuple[str, str], str] = LRUCache(TRANSLATIONS_KEPT)
        #: (array path, why) already logged: once per array and reason while the daemon lives
        self.warned: LRUCache[tuple[str, str], bool] = LRUCache(TRANSLATIONS_KEPT)

    async def array(self, metadata: bytes) -> V2Array | str:
        """The v2 form of *metadata*, or the reason it has none."""
        known = self._arrays.get(metadata)
        if known is None:
            try:
                known = await trio.to_thread.run_sync(translate_array, metadata)
            except Untranslatable as exc:
                known = str(exc)
            self._arrays[metadata] = known
        return known


class Zarr2Tree:
    """The v2 rendering of *inner*: raw chunk bytes, or decoded with *decoded*."""

    def __init__(self, inner: SnapshotTree, decoded: bool, translations: Translations) -> None:
        self.inner = inner
        self.reader = inner.reader
        self.decoded = decoded
        # the read-ahead keys what it holds by snapshot and key: decoded bytes differ
        self.snapshot_id = f"{inner.snapshot_id}+decoded" if decoded else inner.snapshot_id
        self._translations = translations
        #: array path -> its v2 form, as last seen (the read-ahead asks synchronously)
        self._arrays: dict[str, V2Array] = {}
        self._decoded: LRUCache[tuple[str, str], bytes] = LRUCache(DECODED_KEPT)

    # -- nodes ---------------------------------------------------------------------------------

    async def _node(self, path: str) -> V2Array | str | None:
        """What the node directory *path* is: an array's v2 form, why an array is left out
        (a str), or None for a group (also one only implied by deeper nodes)."""
        metadata = await self.inner.metadata(path)
        if metadata is None or await self.inner.array_ndim(path) is None:
            return None
        form = await self._translations.array(metadata)
        if isinstance(form, V2Array) and self.decoded and form.decoded_zarray is None:
            form = form.why_not
        if isinstance(form, str):
            self._translations.left_out[(self.snapshot_id, path)] = form
            if (path, form) not in self._translations.warned:
                self._translations.warned[(path, form)] = True
                log.warning("the Zarr v2 view leaves out /%s: %s", path, form)
            return form
        self._arrays[path] = form
        return form

    async def _documents(
        self, path: str, form: V2Array | None, whole: bool = True
    ) -> dict[str, bytes]:
        """The v2 documents of the node directory *path* by name.

        As zarr 2 writes them: `.zgroup` for a group the tree holds (a group only
        implied by deeper nodes has it in `.zmetadata` alone), `.zattrs` only if the
        node has attributes. So a copy tool's exclusive create of either finds no
        file in its way. With *whole*, the root and each group the tree holds also
        have `.zmetadata`: their subtree consolidated, so a reader opens any of them
        in one read.
        """
        documents: dict[str, bytes] = {}
        if form is None:
            metadata = await self.inner.metadata(path)
            if metadata is not None or not whole or not path:  # the root is always a group
                documents[GROUP], documents[ATTRS] = group_documents(metadata)
            if whole and (not path or metadata is not None):
                documents[CONSOLIDATED] = await self._consolidated(path)
        else:
            zarray = form.decoded_zarray if self.decoded else form.zarray
            assert zarray is not None
            if (
                not form.fill_from_attribute
                and await self.inner.chunk_count(path) == form.grid_chunks
            ):
                zarray = without_fill(zarray)
            documents[ARRAY] = zarray
            documents[ATTRS] = form.decoded_zattrs if self.decoded else form.zattrs
        if documents.get(ATTRS) == EMPTY_ATTRIBUTES:
            del documents[ATTRS]
        return documents

    async def _consolidated(self, top: str) -> bytes:
        """`.zmetadata` of the group at *top*: the documents of every node it shows below
        it, keyed from there (cached for immutable snapshots)."""
        key = (self.inner.snapshot_id, self.decoded, top)
        immutable = not self.inner.reader.writable
        kept = self._translations.consolidated.get(key) if immutable else None
        if kept is not None:
            return kept
        paths = {top}
        prefix = f"{top}/" if top else ""
        for path in await self.inner.node_paths():
            if not path.startswith(prefix):
                continue
            while path not in paths:  # with the groups only implied by deeper nodes
                paths.add(path)
                path = path.rpartition("/")[0]
        documents: dict[str, bytes] = {}
        for path in sorted(paths):
            form = await self._node(path)
            if not isinstance(form, str):
                for name, doc in (await self._documents(path, form, whole=False)).items():
                    documents[join_key(path[len(prefix) :], name)] = doc
        result = consolidated(documents)
        if immutable:
            self._translations.consolidated[key] = result
        return result

    async def _form(self, array: str) -> V2Array:
        """The v2 form of the shown array *array*."""
        form = self._arrays.get(array)
        if form is None:
            found = await self._node(array)
            if not isinstance(found, V2Array):
                raise NotFound(array)
            form = found
        return form

    # -- resolution ----------------------------------------------------------------------------

    def _chunk(self, entry: TreeEntry) -> TreeEntry:
        """The v2 entry of the v3 chunk file *entry* (same key; decoded size if decoded)."""
        if not self.decoded or entry.is_dir or entry.array is None:
            return entry
        form = self._arrays.get(entry.array)
        # a chunk is only met below its array's directory, which recorded the form
        return entry if form is None else replace(entry, size=form.chunk_bytes)

    def _shown(self, entry: TreeEntry) -> TreeEntry:
        """*entry* as listed: a chunk file of an array shown in netCDF-C's char form (one
        more dimension) is a directory holding the chunk as its file ``0``."""
        entry = self._chunk(entry)
        form = self._arrays.get(entry.array) if entry.array is not None else None
        if entry.is_dir or form is None or not self.decoded or not form.chars or not form.ndim:
            return entry
        assert entry.array is not None
        return TreeEntry(True, pos=DirPos(entry.array, entry.array, entry.coords))

    def _chars_dir(self, pos: DirPos) -> bool:
        """Whether *pos* is the directory `_shown` makes of a whole chunk's coordinates."""
        form = self._arrays.get(pos.array) if pos.array is not None else None
        return form is not None and form.chars > 0 and len(pos.coords) == form.ndim

    async def child(self, pos: DirPos, name: str) -> TreeEntry:
        """Resolve *name* inside the directory at *pos*; raise `NotFound` if absent."""
        if pos.array is not None:
            if self._chars_dir(pos):
                if name != "0":
                    raise NotFound(name)
                return self._chunk(
                    await self._raw(TreeEntry(False, array=pos.array, coords=pos.coords))
                )
            return self._shown(await self.inner.child(pos, name))
        form = await self._node(pos.node)
        if isinstance(form, str):
            raise NotFound(pos.node)
        if name.startswith(".z"):
            documents = await self._documents(pos.node, form)
            if name not in documents:
                raise NotFound(join_key(pos.node, name))
            return TreeEntry(False, join_key(pos.node, name), len(documents[name]))
        if form is not None:
            if form.ndim == 0:
                if name != "0":
                    raise NotFound(join_key(pos.node, name))
                return self._chunk(await self.inner.child(pos, CHUNK_DIR))
            await self.inner.child(pos, CHUNK_DIR)  # NotFound: no chunk written
            return self._shown(await self.inner.child(DirPos(pos.node, pos.node, ()), name))
        entry = await self.inner.child(pos, name)
        if not entry.is_dir or isinstance(await self._node(join_key(pos.node, name)), str):
            raise NotFound(join_key(pos.node, name))
        return entry

    async def chunk_files(self, pos: DirPos) -> tuple[Any, Any] | None:
        """As `SnapshotTree.chunk_files`, for the chunk directories this rendering shows
        as the v3 tree does (not an array's own directory, nor netCDF-C's char form)."""
        form = self._arrays.get(pos.array) if pos.array is not None else None
        if form is None or not pos.coords or (self.decoded and form.chars):
            return None
        found = await self.inner.chunk_files(pos)
        if found is None or not self.decoded:
            return found
        return found[0], np.full(len(found[0]), form.chunk_bytes, dtype=np.int64)

    async def listdir(self, pos: DirPos) -> list[tuple[str, TreeEntry]]:
        """Return the (name, entry) pairs of the directory at *pos*, sorted by name."""
        if pos.array is not None:
            if self._chars_dir(pos):
                return [("0", await self.child(pos, "0"))]
            return [(n, self._shown(e)) for n, e in await self.inner.listdir(pos)]
        form = await self._node(pos.node)
        if isinstance(form, str):
            raise NotFound(pos.node)
        out = [
            (name, TreeEntry(False, join_key(pos.node, name), len(doc)))
            for name, doc in (await self._documents(pos.node, form)).items()
        ]
        if form is None:
            for name, entry in await self.inner.listdir(pos):
                if entry.is_dir and not isinstance(await self._node(join_key(pos.node, name)), str):
                    out.append((name, entry))
        else:
            try:
                chunks = await self.inner.child(pos, CHUNK_DIR)
            except NotFound:
                chunks = None  # no chunk written
            if chunks is not None and not chunks.is_dir:
                out.append(("0", self._chunk(chunks)))
            elif chunks is not None:
                out.extend(
                    (n, self._shown(e))
                    for n, e in await self.inner.listdir(DirPos(pos.node, pos.node, ()))
                )
        return sorted(out, key=lambda item: item[0])

    # -- data ----------------------------------------------------------------------------------

    async def read_whole(self, entry: TreeEntry) -> Buffer:
        """Return all bytes of the file *entry*."""
        if entry.array is None:
            node, _, name = entry.key.rpartition("/")
            form = await self._node(node)
            if isinstance(form, str):
                raise NotFound(entry.key)
            return (await self._documents(node, form))[name]
        if not self.decoded:
            return await self.inner.read_whole(entry)
        immutable = not self.inner.reader.writable  # a session's chunk may change
        kept = self._decoded.get((self.inner.snapshot_id, entry.key)) if immutable else None
        if kept is not None:
            return kept
        form = await self._form(entry.array)
        raw = await self.inner.read_whole(await self._raw(entry))
        try:
            data = await trio.to_thread.run_sync(decode_chunk, form, bytes(raw))
        except ValueError as exc:
            raise StorageFailure(f"chunk /{entry.key} does not decode: {exc}") from None
        if immutable:
            self._decoded[(self.inner.snapshot_id, entry.key)] = data
        return data

    async def _raw(self, entry: TreeEntry) -> TreeEntry:
        """The v3 tree's entry of the chunk file *entry* (its stored size)."""
        assert entry.array is not None
        if not entry.coords:
            return await self.inner.child(DirPos(entry.array), CHUNK_DIR)
        pos = DirPos(entry.array, entry.array, entry.coords[:-1])
        return await self.inner.child(pos, str(entry.coords[-1]))

    async def read(self, entry: TreeEntry, offset: int, size: int) -> Buffer:
        """Return up to *size* bytes of the file *entry* from *offset*."""
        if entry.array is not None and not self.decoded:
            return await self.inner.read(entry, offset, size)
        return memoryview(await self.read_whole(entry))[offset : offset + size]

    async def is_virtual(self, entry: TreeEntry) -> bool:
        return entry.array is not None and await self.inner.is_virtual(entry)

    async def chunk_location(self, entry: TreeEntry) -> VirtualLocation | None:
        return await self.inner.chunk_location(entry)

    # -- the read-ahead's chunk order (delegated; sizes as this rendering shows them) ---------

    async def load_chunk_orders(self, array: str) -> None:
        await self.inner.load_chunk_orders(array)

    def chunk_position(self, entry: TreeEntry, by_name: bool) -> int:
        return self.inner.chunk_position(entry, by_name)

    def chunks_between(
        self, entry: TreeEntry, by_name: bool, start: int, stop: int
    ) -> list[TreeEntry]:
        return [self._chunk(e) for e in self.inner.chunks_between(entry, by_name, start, stop)]


async def left_out(tree: SnapshotTree, translations: Translations) -> dict[str, dict[str, str]]:
    """The arrays of *tree* each v2 rendering leaves out: rendering -> path -> why."""
    out: dict[str, dict[str, str]] = {"zarr2": {}, "zarr2-decoded": {}}
    for render, decoded in (("zarr2", False), ("zarr2-decoded", True)):
        rendered = Zarr2Tree(tree, decoded, translations)
        for path in sorted(await tree.node_paths()):
            why = await rendered._node(path)
            if isinstance(why, str):
                out[render][f"/{path}"] = why
    return out
