"""The read cache as the store uses it, from trio: look up, or fetch once and fill.

`ReadCache.through` answers a read of immutable data from the disk cache, or fetches it
(through the caller's *fetch*) and fills the cache in the background.  A miss first
claims the entry (`EntryStore.claim`): while another daemon or task fetches the same
entry, the read waits for its fill instead of fetching again, so one fetch serves
every daemon sharing the directory.

The cache never fails a read.  A damaged entry is dropped, counted, logged and
fetched again; a full disk (or any other error writing) pauses filling for
`PAUSE_SECONDS` and the reads go on from storage.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from icefs.cache._entries import Damaged, EntryStore
from icefs.tasks import TaskNursery

if TYPE_CHECKING:
    from collections.abc import Awaitable, Buffer, Callable

__all__ = ["CacheCounters", "ReadCache"]

log = logging.getLogger(__name__)

#: After a fill failed (a full disk), filling stops for this long; reads go on.
PAUSE_SECONDS: Final = 30.0
#: Bytes fetched and waiting to be written to the cache, at most (more are not cached).
PENDING_BYTES: Final = 128 << 20
#: A read whose entry another daemon fetches waits at most this long before fetching too.
WAIT_SECONDS: Final = 30.0
#: The claim of a read that fetches without filling the cache.
UNCLAIMED: Final = -1
#: Damaged entries logged one by one; after these, only counted.
DAMAGED_LOGGED: Final = 10


@dataclass(slots=True)
class CacheCounters:
    """What the cache did for one mount (``.icefs/stats``, metrics)."""

    hits: int = 0
    misses: int = 0
    #: bytes answered from the cache
    bytes_served: int = 0
    #: bytes written into it
    bytes_filled: int = 0
    evictions: int = 0
    damaged: int = 0
    #: reads that found another daemon (or task) fetching the entry and waited for it
    waited: int = 0
    #: fetched data not cached: a full disk, an error, too much waiting to be written
    not_filled: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class ReadCache:
    """Immutable data of one repository in an `EntryStore` (see the module doc).

    *repository* names the repository in every key: with the snapshot id and the key
    within it, an entry can only be served to the same repository's same snapshot.
    """

    def __init__(self, entries: EntryStore, repository: str) -> None:
        self.entries = entries
        self.repository = repository
        self.counters = CacheCounters()
        self._paused_until = 0.0
        self._pending = 0
        self._tasks = TaskNursery()

    @property
    def limit(self) -> int:
        return self.entries.limit

    def key(self, snapshot_id: str, kind: str, name: str) -> str:
        """The cache key of *name* (of *kind*: bytes, nodes, index...) in *snapshot_id*."""
        return f"{self.repository}\n{snapshot_id}\n{kind}\n{name}"

    async def run(self) -> None:
        """Write fills in the background until cancelled (a task of the mount's nursery);
        first remove what crashed fills left behind."""
        await trio.to_thread.run_sync(self.entries.sweep)
        await self._tasks.run()

    async def through(self, key: str, fetch: Callable[[], Awaitable[Buffer]]) -> Buffer:
        """The bytes of *key*: from the cache, or from ``fetch()`` (then cached)."""
        data, claim = await self._lookup(key)
        deadline = trio.current_time() + WAIT_SECONDS
        delay = 0.002
        while data is None and claim is None and trio.current_time() < deadline:
            await trio.sleep(delay)  # another daemon or task is fetching it: wait for its fill
            delay = min(delay * 2, 0.05)
            data, claim = await self._lookup(key)
            if data is not None:
                self.counters.waited += 1
        if data is not None:
            self.counters.hits += 1
            self.counters.bytes_served += len(data)
            return data
        self.counters.misses += 1
        if claim is None or claim == UNCLAIMED:  # waited too long, or not filling now
            return await fetch()
        try:
            fetched = await fetch()
        except BaseException:
            with trio.CancelScope(shield=True):  # a claim kept would stall every daemon
                await trio.to_thread.run_sync(self.entries.release, key, claim)
            raise
        self._fill(key, fetched, claim)
        return fetched

    async def _lookup(self, key: str) -> tuple[memoryview | None, int | None]:
        try:
            return await trio.to_thread.run_sync(self._lookup_sync, key)
        except OSError as exc:  # the cache directory went bad: read from storage
            self._pause(exc)
            return None, UNCLAIMED

    def _lookup_sync(self, key: str) -> tuple[memoryview | None, int | None]:
        """The entry of *key*; if there is none, a claim to fill it (None: another task or
        daemon has it; `UNCLAIMED`: fetch it without filling)."""
        try:
            data = self.entries.read(key)
        except Damaged as why:
            self.counters.damaged += 1
            if self.counters.damaged <= DAMAGED_LOGGED:
                log.warning(
                    "read cache: dropped a damaged entry (%s), fetching it again: %s",
                    why,
                    self.entries.path(key),
                )
                if self.counters.damaged == DAMAGED_LOGGED:
                    log.warning("read cache: further damaged entries are only counted")
            data = None
        if data is not None:
            return data, None
        if time.monotonic() < self._paused_until:
            return None, UNCLAIMED
        return None, self.entries.claim(key)

    def _fill(self, key: str, data: Buffer, claim: int) -> None:
        size = memoryview(data).nbytes
        nursery = self._tasks.nursery
        if nursery is None:
            return self._fill_now(key, data, claim, size)  # not running: tests, one-off reads
        if self._pending + size > PENDING_BYTES:
            self.counters.not_filled += 1
            nursery.start_soon(partial(trio.to_thread.run_sync, self.entries.release, key, claim))
            return None
        self._pending += size
        nursery.start_soon(self._fill_later, key, data, claim, size)
        return None

    async def _fill_later(self, key: str, data: Buffer, claim: int, size: int) -> None:
        try:
            await trio.to_thread.run_sync(self._fill_now, key, data, claim, size)
        finally:
            self._pending -= size

    def _fill_now(self, key: str, data: Buffer, claim: int, size: int) -> None:
        try:
            if time.monotonic() < self._paused_until:
                self.counters.not_filled += 1
                return
            self.counters.evictions += self.entries.write(key, data)
            self.counters.bytes_filled += size
        except OSError as exc:
            self.counters.not_filled += 1
            self._pause(exc)
        finally:
            try:
                self.entries.release(key, claim)
            except OSError as exc:
                self._pause(exc)

    def _pause(self, exc: OSError) -> None:
        """Filling failed with *exc*: stop filling for a while (logged once a pause)."""
        now = time.monotonic()
        if now >= self._paused_until:
            what = "full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "failing"
            log.warning(
                "read cache: %s is %s (%s); not caching for %d s, reads go on from storage",
                self.entries.directory,
                what,
                os.strerror(exc.errno or 0) if exc.errno else exc,
                PAUSE_SECONDS,
            )
        self._paused_until = now + PAUSE_SECONDS
