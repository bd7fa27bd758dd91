"""Reading one snapshot: its listings, chunk indexes and bytes (and a session's, with its
changes).

`SnapshotReader` reads an immutable snapshot through a read-only session;
`SessionReader` reads a writable session and lets its `Gate` keep readers and
writers of the session apart.  Every call goes through the `Bridge`; Icechunk's
exceptions become `IcefsError`s (`icefs.store.errors`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import icechunk
import trio

from icefs import errors
from icefs.gate import Gate
from icefs.store.chunkindex import VIRTUAL, ChunkIndex
from icefs.store.errors import translate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Buffer, Callable, Iterable

    from icefs.cache import ReadCache
    from icefs.store.bridge import Bridge

__all__ = ["SessionReader", "SnapshotReader", "VirtualLocation", "direct_probe", "key_kind"]

log = logging.getLogger(__name__)

R = TypeVar("R")


def key_kind(key: str) -> str:
    """The kind of storage request that reads or writes *key*: metadata or chunk."""
    return "metadata" if key == "zarr.json" or key.endswith("/zarr.json") else "chunk"


@dataclass(frozen=True, slots=True)
class VirtualLocation:
    """Where a virtual chunk's bytes are: *length* bytes at *offset* of *url*."""

    url: str
    offset: int
    length: int

    def render(self) -> str:
        return f"{self.url} {self.offset} {self.length}"


def _byte_range(start: int | None, end: int | None) -> tuple[int | None, int | None]:
    """Icechunk's form of the byte range [start, end); (None, None) means all of it."""
    return (None, None) if start is None or end is None else (start, end)


_PROBE_GROUP = b'{"zarr_format": 3, "node_type": "group"}'


async def direct_probe(bridge: Bridge) -> None:
    """Check `Bridge.run`'s direct path on an in-memory repository: a set, a get, an error.

    Raises (anything) if a call misbehaves; `Bridge.enable_direct` bounds its time.
    """
    repository = await bridge.run_sync(icechunk.Repository.create, icechunk.in_memory_storage())
    session = await bridge.run_sync(repository.writable_session, "main")
    raw = session.store._store
    await bridge.run(raw.set, "zarr.json", _PROBE_GROUP)
    if bytes(await bridge.run(raw.get, "zarr.json", (None, None))) != _PROBE_GROUP:
        raise RuntimeError("the direct path returned other bytes")
    try:
        await bridge.run(raw.get, "absent/zarr.json", (None, None))
    except KeyError:
        return
    raise RuntimeError("the direct path lost an error")


def _snapshot_nodes(repository: icechunk.Repository, snapshot_id: str) -> set[str] | None:
    """The path of every node of the snapshot *snapshot_id*, read from the snapshot alone;
    None if Icechunk's answer is not the shape we know (its inspection call may change)."""
    try:
        paths = [node["path"] for node in repository.inspect_snapshot(snapshot_id)["nodes"]]
        if all(isinstance(p, str) and p.startswith("/") for p in paths):
            return {p.strip("/") for p in paths}
        why: object = f"node paths {paths[:3]!r}"
    except (AttributeError, KeyError, TypeError) as exc:
        why = exc
    SnapshotReader.inspect_refused += 1
    if SnapshotReader.inspect_refused == 1:
        log.warning("listing nodes by their keys: Icechunk's snapshot inspection gave %r", why)
    return None


class SnapshotReader:
    """Reads one immutable snapshot through a read-only session."""

    #: whether what it reads can change (a writable session's uncommitted changes)
    writable = False
    #: how often Icechunk's snapshot inspection gave no node list we know (logged once)
    inspect_refused = 0

    def __init__(
        self,
        session: icechunk.Session,
        bridge: Bridge,
        repository: icechunk.Repository | None = None,
        cache: ReadCache | None = None,
    ) -> None:
        self.snapshot_id: str = session.snapshot_id
        #: the persistent read cache (immutable snapshots only): bytes, node lists, indexes
        self._cache = None if self.writable else cache
        self._session = session
        #: lists the snapshot's nodes without its manifests (`node_paths`); None: by keys
        self._repository = repository
        # Taken once: the ``store`` property locks the session, blocking, with the GIL.
        self._store = session.store
        #: Icechunk's Rust store under the zarr one: its methods return pyo3 futures for
        #: `Bridge.run`, take any buffer and give bytes-like results, skipping zarr's
        #: Buffer wrappers.
        self._raw = self._store._store
        self._bridge = bridge

    def _using(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Hold this around every use of the session (`SessionReader` gates it)."""
        return contextlib.nullcontext()

    async def _sync(self, kind: str, fn: Callable[..., R], *args: Any) -> R:
        """Run the blocking ``fn(*args)`` on the session: a storage request of *kind*,
        within the bridge's deadline."""
        return await self._bridge.run_sync(fn, *args, kind=kind)

    def _list_dir_sync(self, prefix: str) -> list[str]:
        # Icechunk's listing iterators are typed async but also iterate synchronously
        # (cheap: no thread hop); list_dir can repeat names and has no stable order.
        names = cast("Iterable[str]", self._store.list_dir(prefix))
        return sorted(set(names))

    async def _cached(self, kind: str, name: str, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """``fetch()``'s bytes, kept in the read cache under (*kind*, *name*) if there is one."""
        if self._cache is None:
            return await fetch()
        key = self._cache.key(self.snapshot_id, kind, name)
        return bytes(await self._cache.through(key, fetch))

    async def list_dir(self, prefix: str) -> list[str]:
        """Return the sorted, de-duplicated child names below key *prefix* ('' = root)."""

        async def fetch() -> bytes:
            try:
                names = await self._sync("snapshot", self._list_dir_sync, prefix)
            except Exception as exc:
                raise translate(exc) from exc
            return json.dumps(names).encode()

        return cast("list[str]", json.loads(await self._cached("list", prefix, fetch)))

    def _has_changes(self) -> bool:
        return False

    def _node_paths_sync(self) -> set[str]:
        if self._repository is not None and not self._has_changes():
            paths = _snapshot_nodes(self._repository, self._session.snapshot_id)
            if paths is not None:
                return paths
        keys = cast("Iterable[str]", self._store.list())
        suffix = "/zarr.json"
        return {
            k[: -len(suffix)] if k != "zarr.json" else ""
            for k in keys
            if k == "zarr.json" or k.endswith(suffix)
        }

    async def node_paths(self) -> set[str]:
        """Return the path of every group and array ('' for the root group).

        `list_dir` misses directories that only hold deeper nodes (a group stored
        without its parent group).  Every key of the store would show them, but
        Icechunk lists the keys of all chunks too and fetches every array's
        manifest for that: one request per array on object storage, one after
        another, before the first listing of a tag.  The snapshot
        itself names every node: read from it wherever the reader has no
        changes of its own; by the keys where it has, or where Icechunk gives
        no node list we know.
        """

        async def fetch() -> bytes:
            try:
                paths = await self._sync("snapshot", self._node_paths_sync)
            except Exception as exc:
                raise translate(exc) from exc
            return json.dumps(sorted(paths)).encode()

        return set(json.loads(await self._cached("nodes", "", fetch)))

    def _chunk_index_sync(
        self, array_path: str, ndim: int, grid: tuple[int, ...] | None
    ) -> ChunkIndex:
        batches = cast(
            "Iterable[tuple[Any, Any, Any, Any, Any, Any]]",
            self._store.array_chunk_iterator(array_path),
        )
        return ChunkIndex.build(
            ndim, grid, ((coords, kinds, lens) for coords, kinds, _, _, lens, _ in batches)
        )

    def _location_sync(self, array_path: str, coords: tuple[int, ...]) -> VirtualLocation | None:
        batches = cast(
            "Iterable[tuple[Any, Any, Any, Any, Any, Any]]",
            self._store.array_chunk_iterator(array_path),
        )
        for rows, kinds, paths, offsets, lens, _ in batches:
            for i, row in enumerate(rows.tolist()):
                if tuple(row) == coords:
                    if int(kinds[i]) != VIRTUAL:
                        return None
                    return VirtualLocation(str(paths[i]), int(offsets[i]), int(lens[i]))
        return None

    async def chunk_location(
        self, array_path: str, coords: tuple[int, ...]
    ) -> VirtualLocation | None:
        """Where the chunk *coords* of *array_path* points, if it is virtual (a pass over
        the array's manifest: for debugging, not for every read)."""
        try:
            return await self._sync("manifest", self._location_sync, array_path, coords)
        except Exception as exc:
            raise translate(exc) from exc

    async def chunk_index(
        self, array_path: str, ndim: int, grid: tuple[int, ...] | None
    ) -> ChunkIndex:
        """Return the `ChunkIndex` of the array at *array_path*, whose chunk grid is *grid*
        (None: not regular): one pass over its manifest, in a worker thread."""

        async def fetch() -> ChunkIndex:
            try:
                return await self._sync("manifest", self._chunk_index_sync, array_path, ndim, grid)
            except Exception as exc:
                raise translate(exc) from exc

        if self._cache is None:
            return await fetch()

        async def fetch_bytes() -> bytes:
            return (await fetch()).to_bytes()

        blob = await self._cached("index", f"{array_path}\n{ndim}\n{grid}", fetch_bytes)
        return ChunkIndex.from_bytes(blob)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> Buffer:
        """Return the bytes of *key*, or of [start, end) when both are given.

        The caller clamps *end* to the size: Icechunk raises past the end.
        Raises `NotFound` if the key does not exist.

        The result is Icechunk's own read-only buffer, not a copy: read replies
        slice it with memoryview (a copy would cost a chunk's worth of copying on the FUSE
        thread). Use ``bytes()`` where a `bytes` is needed.  Whole reads of an immutable
        snapshot go through the read cache where there is one.
        """
        if self._cache is not None and start is None:
            cached = self._cache.key(self.snapshot_id, "bytes", key)
            return await self._cache.through(cached, lambda: self._get(key, None, None))
        return await self._get(key, start, end)

    async def _get(self, key: str, start: int | None, end: int | None) -> Buffer:
        try:
            async with self._using():
                data = await self._bridge.run(
                    self._raw.get, key, _byte_range(start, end), kind=key_kind(key)
                )
        except KeyError:  # Icechunk's answer for a missing key
            raise errors.NotFound(f"no key {key}") from None
        except Exception as exc:
            raise translate(exc) from exc
        return cast("Buffer", data)


class SessionReader(SnapshotReader):
    """A `SnapshotReader` over a writable session: it sees the session's uncommitted changes.

    Every use of the session passes `gate`: reads and listings together, stores and
    deletes together, the synchronous calls (status, commit) alone. Icechunk's
    session lock is not reentrant-safe under contention: with a listing in progress
    and a store queued, daemon threads stuck for good inside Icechunk's ``list_dir``
    (seen under concurrent zarr writes). Keeping readers and writers of one session
    apart in our own trio lock makes that impossible.
    """

    writable = True

    @functools.cached_property
    def gate(self) -> Gate:
        """Taken around every use of the session (made at the first, on the trio thread)."""
        return Gate()

    def _has_changes(self) -> bool:
        # Called under the gate's read side: no store or delete runs meanwhile.
        return bool(self._session.has_uncommitted_changes)

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[None]:
        await self._enter("chunk")
        try:
            yield
        finally:
            self.gate.release()

    async def _enter(self, kind: str) -> None:
        """Take the gate's read side, within the bridge's deadline (a commit holds the gate
        alone until it ends)."""
        with self._bridge.waiting(kind):
            await self.gate.acquire("read")

    async def _sync(self, kind: str, fn: Callable[..., R], *args: Any) -> R:
        # A call past its deadline is abandoned in its thread, still using the session:
        # the gate stays held until that thread ends.  Whichever side takes *claim*
        # releases it: the thread (it then runs fn), or this task if no thread took it.
        await self._enter(kind)
        claim = [True]
        token = trio.lowlevel.current_trio_token()

        def call() -> R:
            try:
                claim.pop()
            except IndexError:  # given up before the thread started
                raise RuntimeError("abandoned before it started") from None  # result dropped
            try:
                return fn(*args)
            finally:
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(self.gate.release, trio_token=token)

        try:
            return await self._bridge.run_sync(call, kind=kind)
        except BaseException:
            try:
                claim.pop()
            except IndexError:  # the thread has it, and releases the gate when it ends
                pass
            else:
                self.gate.release()
            raise
