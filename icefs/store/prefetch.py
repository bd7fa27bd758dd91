"""Read-ahead across chunk files of immutable snapshots.

A program that reads an array's chunk files one after another (``cp -r``,
``tar``, ``fio``, a zarr reader with few threads) waits for one Icechunk get per
file. `Prefetcher` notices such a scan and fetches the next chunks while the
program is still busy with the current one: in C order of the coordinates, or
in the order a directory walk meets the files (names sorted as text).

Fetched bytes wait in a bounded holding area until read; a scan that stops
leaves at most the budget behind (the ``read_ahead_memory`` setting), dropped
oldest first. Only immutable trees are prefetched (tags, snapshots, a branch's
tip): their chunks never change. A branch's session passes the chunks it has
not changed through here as chunks of its base snapshot.

How far to look follows the store's latency: each scan's window starts at
`DEPTH` chunks and doubles whenever a read has to wait for a chunk the window
already asked for (its get takes longer than the reader needs for the chunks
before it), up to `MAX_DEPTH` and the budget; a scan that stops being
sequential starts again at `DEPTH`.  Look-ahead fetches in flight follow the
widest window; the fetch a file's first open starts (its read follows at once)
never waits for one of their slots.  Where a get takes less time than the
reader's work on a chunk the window stays at `DEPTH`; where a get takes longer
(object storage, or a local disk slower than the reader) it grows until the
reader no longer waits.  `icefs stats` shows the widest window.

Several readers of one array (zarr's threads, ``find | xargs -P``, the
benchmark's 8 readers) each look ahead over chunks the others are reading at
the same moment. Each chunk is therefore fetched once: a read joins a fetch
already in flight for the same chunk, and the look-ahead skips chunks being
read or read within the last `RECENT` reads.  Their reads arrive a little out
of order: a read behind the scan's front, within its window, keeps the scan
going (the look-ahead continues from the front), where a single reader's jump
back would end it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from icefs.errors import IcefsError

if TYPE_CHECKING:
    from collections.abc import Buffer

    from icefs.store.layout import TreeEntry
    from icefs.store.tree import SnapshotTree

__all__ = ["Prefetcher"]

log = logging.getLogger(__name__)

#: Chunks a new sequential scan looks ahead, and fetches in flight at least.
DEPTH: Final = 4
#: The widest a scan's window grows, and fetches in flight at most.
MAX_DEPTH: Final = 64
#: Bytes fetched ahead and not yet read, over the whole mount (the setting's default).
BUDGET: Final = 256 << 20
#: Weight of the newest fetch in the mean fetch time shown in the stats.
_EWMA: Final = 0.1
#: A read at most this many chunks after the previous read of the array is sequential.
NEAR: Final = 8
#: Chunks remembered as just read: the look-ahead of another reader skips them.
RECENT: Final = 64


@dataclass(slots=True, eq=False)  # hashable by identity: it borrows a fetch slot
class _Fetch:
    size: int
    #: when it was asked for (counts `_hold` calls)
    seq: int
    #: asked for by the file's open (`fetch_soon`), not by the look-ahead
    at_open: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    data: Buffer | None = None
    #: why the fetch failed: a read that waited for it fails the same way, at once
    error: IcefsError | None = None


class Prefetcher:
    """Fetches the chunks a sequential reader will ask for next (see the module doc)."""

    def __init__(
        self, largest: int, depth: int = DEPTH, budget: int = BUDGET, max_depth: int = MAX_DEPTH
    ) -> None:
        #: chunks bigger than this are read in ranges, never whole: not prefetched
        self.largest = largest
        #: a new scan's window, in chunks
        self.depth = depth
        self.max_depth = max(depth, max_depth)
        self.budget = budget
        #: reads that waited for a fetch the look-ahead had started (each widens a window)
        self.late = 0
        #: the mean seconds of one fetch (EWMA), 0 before the first
        self.fetch_seconds = 0.0
        #: per array being scanned (snapshot, array): its window, when wider than `depth`
        self._windows: dict[tuple[str, str], int] = {}
        self._limiter = trio.CapacityLimiter(depth)
        #: reads served by the look-ahead
        self.hits = 0
        #: whole-chunk reads that found no fetch to join: the reader fetched it
        self.misses = 0
        #: reads served by the fetch their open started
        self.at_open = 0
        self.unused = 0
        #: reads that found the same chunk already being read by another reader
        self.joined = 0
        #: chunks being read by a reader, not by the look-ahead
        self._reading: dict[tuple[str, str], _Fetch] = {}
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._held: OrderedDict[tuple[str, str], _Fetch] = OrderedDict()
        self._held_bytes = 0
        self._seq = 0
        #: per scan (snapshot, array, order): the position last read and the streak
        self._last: dict[tuple[str, str, bool], tuple[int, int]] = {}
        #: per scan: the last position its look-ahead handed to `_hold`; the next one
        #: starts after it, so that a read makes the entries of new chunks only
        self._queued: dict[tuple[str, str, bool], int] = {}
        self._send, self._receive = trio.open_memory_channel[
            "tuple[SnapshotTree, TreeEntry, _Fetch]"
        ](self.max_depth * 2)
        #: the nursery of `run` while it runs: fetches start there
        self._nursery: trio.Nursery | None = None

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    @property
    def widest(self) -> int:
        """The widest window of any scan now (chunks)."""
        return max(self._windows.values(), default=self.depth)

    async def run(self) -> None:
        """Serve fetches until cancelled (a task of the mount's nursery)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async for tree, entry, fetch in self._receive:
                    await self._limiter.acquire_on_behalf_of(fetch)
                    nursery.start_soon(self._fetch, tree, entry, fetch)
        finally:
            self._nursery = None

    async def _fetch(self, tree: SnapshotTree, entry: TreeEntry, fetch: _Fetch) -> None:
        """Fetch *entry* for *fetch*: a look-ahead fetch holds a slot of the limiter."""
        started = time.monotonic()
        try:
            fetch.data = await tree.read_whole(entry)
            took, mean = time.monotonic() - started, self.fetch_seconds
            self.fetch_seconds = mean + _EWMA * (took - mean) if mean else took
        except IcefsError as exc:  # the read that waited for it reports it
            log.debug("prefetch of %s failed: %s", entry.key, exc)
            fetch.error = exc
        finally:
            fetch.done.set()
            if not fetch.at_open:
                self._limiter.release_on_behalf_of(fetch)

    async def read_whole(self, tree: SnapshotTree, entry: TreeEntry) -> Buffer:
        """Return all bytes of the chunk *entry*, prefetched if it was; then look ahead."""
        key = (tree.snapshot_id, entry.key)
        self._recent[key] = None
        self._recent.move_to_end(key)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        data = await self._join(key, entry.array)
        if data is None:
            self.misses += 1
            data = await self._read(tree, entry, key)
        if self._nursery is not None and entry.array is not None:
            await tree.load_chunk_orders(entry.array)
            self._look_ahead(tree, entry)
        return data

    async def _join(self, key: tuple[str, str], array: str | None) -> Buffer | None:
        """The chunk's bytes from the read-ahead or another reader's fetch; None if neither."""
        fetch = self._held.pop(key, None)
        if fetch is not None:
            self._held_bytes -= fetch.size
            if not fetch.done.is_set() and not fetch.at_open and array is not None:
                self._widen((key[0], array), fetch.size)
            await fetch.done.wait()
            if fetch.error is not None:
                raise fetch.error
            if fetch.data is not None:
                if fetch.at_open:
                    self.at_open += 1
                else:
                    self.hits += 1
            return fetch.data
        fetch = self._reading.get(key)
        if fetch is None:
            return None
        await fetch.done.wait()
        if fetch.error is not None:
            raise fetch.error
        if fetch.data is not None:
            self.joined += 1
        return fetch.data

    async def _read(self, tree: SnapshotTree, entry: TreeEntry, key: tuple[str, str]) -> Buffer:
        fetch = _Fetch(entry.size, self._seq)
        self._reading[key] = fetch
        try:
            fetch.data = await tree.read_whole(entry)
        except IcefsError as exc:
            fetch.error = exc
            raise
        finally:
            fetch.done.set()
            if self._reading.get(key) is fetch:
                del self._reading[key]
        return fetch.data

    def _widen(self, scan: tuple[str, str], size: int) -> None:
        """A read of the scan *scan* waits for its look-ahead: double its window, as far
        as the most fetches in flight and the budget (chunks of *size* bytes) allow."""
        self.late += 1
        window = self._windows.get(scan, self.depth)
        wider = min(2 * window, self.max_depth, max(self.depth, self.budget // max(size, 1)))
        if wider > window:
            self._windows[scan] = wider
            self._limiter.total_tokens = self.widest

    def _narrow(self, scan: tuple[str, str]) -> None:
        """The scan *scan* stopped being sequential: its window starts again at `depth`,
        and its look-ahead at the next read."""
        for by_name in (False, True):
            self._queued.pop((*scan, by_name), None)
        if self._windows.pop(scan, None) is not None:
            self._limiter.total_tokens = self.widest

    def _look_ahead(self, tree: SnapshotTree, entry: TreeEntry) -> None:
        assert entry.array is not None
        # Each order scores the reads in a row it saw coming (a little out of order is
        # fine: zarr reads with several threads); the better one, C order on a tie,
        # says what to fetch.  Only the winner's entries are made: random reads make none.
        scan = (tree.snapshot_id, entry.array)
        window = self._windows.get(scan, self.depth)
        best_streak, best_order, best_pos = 0, False, -1
        for by_name in (False, True):
            pos = tree.chunk_position(entry, by_name)
            ordered = (tree.snapshot_id, entry.array, by_name)
            last, streak = self._last.get(ordered, (-1, 0))
            if pos >= 0 and last < pos <= last + NEAR:
                streak, last = streak + 1, pos
            elif not (streak and last - max(NEAR, window) <= pos <= last):
                # Not a reader behind the scan's front, within its window (zarr's other
                # threads, which leave the scan and its window as they are): it stopped.
                streak, last = 0, pos
            self._last[ordered] = (last, streak)
            if streak > best_streak:  # look ahead of the scan's front
                best_streak, best_order, best_pos = streak, by_name, last
        if not best_streak:
            self._narrow(scan)
            return
        ordered = (*scan, best_order)
        start, stop = best_pos + 1, best_pos + 1 + window
        queued = self._queued.get(ordered, -1)
        if queued >= stop:  # a wider window queued these already
            return
        if queued >= start:
            start = queued + 1
        # Each chunk refused for want of room still asks (and so ages what is held: see
        # `_hold`); a later read looks again from the first one refused.
        held_to = start - 1
        for ahead in tree.chunks_between(entry, best_order, start, stop):
            if self._hold(tree, ahead) and held_to == start - 1:
                held_to = start
            start += 1
        self._queued[ordered] = held_to

    def fetch_soon(self, tree: SnapshotTree, entry: TreeEntry) -> None:
        """Fetch the chunk *entry* into the holding area: a read of it is coming."""
        if self._nursery is not None:
            self._hold(tree, entry, at_open=True)

    def _hold(self, tree: SnapshotTree, entry: TreeEntry, *, at_open: bool = False) -> bool:
        """Fetch *entry* into the holding area unless it is there, being read, just read or
        too large; False if there is no room for it now."""
        key = (tree.snapshot_id, entry.key)
        if (
            key in self._held
            or key in self._reading
            or key in self._recent
            or entry.size > self.largest
        ):
            return True
        self._seq += 1
        while self._held_bytes + entry.size > self.budget:
            # Make room only by dropping what many look-aheads since have passed over
            # (a scan that stopped or went elsewhere), never what a live scan will read.
            oldest = next(iter(self._held.values()), None)
            if oldest is None or self._seq - oldest.seq <= 4 * self.widest:
                return False
            self._held.popitem(last=False)
            self._held_bytes -= oldest.size
            self.unused += 1
            self._queued.clear()  # a look-ahead may have counted it: each looks again
        fetch = _Fetch(entry.size, self._seq, at_open)
        if at_open and self._nursery is not None:
            # A read of it follows: its fetch starts now, not behind the look-ahead's.
            self._nursery.start_soon(self._fetch, tree, entry, fetch)
        else:
            try:
                self._send.send_nowait((tree, entry, fetch))
            except trio.WouldBlock:
                return False  # enough queued already
        self._held[key] = fetch
        self._held_bytes += entry.size
        return True
