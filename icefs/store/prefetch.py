"""Read-ahead across chunk files of immutable snapshots.

A program that reads an array's chunk files one after another (``cp -r``,
``tar``, ``fio``, a zarr reader with few threads) waits for one Icechunk get per
file. `Prefetcher` notices such a scan and fetches the next chunks while the
program is still busy with the current one: in C order of the coordinates, or
in the order a directory walk meets the files (names sorted as text).

Fetched bytes wait in a bounded holding area until read; a scan that stops
leaves at most `BUDGET` bytes behind, dropped oldest first. Only tags and
snapshots are prefetched: their chunks never change.

Several readers of one array (zarr's threads, ``find | xargs -P``, the
benchmark's 8 readers) each look ahead over chunks the others are reading at
the same moment. Each chunk is therefore fetched once: a read joins a fetch
already in flight for the same chunk, and the look-ahead skips chunks being
read or read within the last `RECENT` reads.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from icefs.errors import IcefsError

if TYPE_CHECKING:
    from collections.abc import Buffer

    from icefs.store.tree import SnapshotTree, TreeEntry

__all__ = ["Prefetcher"]

log = logging.getLogger(__name__)

#: Chunks fetched ahead of a sequential reader, and fetches in flight at most.
DEPTH: Final = 4
#: Bytes fetched ahead and not yet read, over the whole mount.
BUDGET: Final = 64 << 20
#: A read at most this many chunks after the previous read of the array is sequential.
NEAR: Final = 8
#: Chunks remembered as just read: the look-ahead of another reader skips them.
RECENT: Final = 64


@dataclass(slots=True)
class _Fetch:
    size: int
    #: when it was asked for (counts `_hold` calls)
    seq: int
    #: asked for by the file's open (`fetch_soon`), not by the look-ahead
    at_open: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    data: Buffer | None = None


class Prefetcher:
    """Fetches the chunks a sequential reader will ask for next (see the module doc)."""

    def __init__(self, largest: int, depth: int = DEPTH, budget: int = BUDGET) -> None:
        #: chunks bigger than this are read in ranges, never whole: not prefetched
        self.largest = largest
        self.depth = depth
        self.budget = budget
        #: reads served by the look-ahead
        self.hits = 0
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
        self._send, self._receive = trio.open_memory_channel[
            "tuple[SnapshotTree, TreeEntry, _Fetch]"
        ](depth * 8)
        self._running = False

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    async def run(self) -> None:
        """Serve fetches until cancelled (a task of the mount's nursery)."""
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                slots = trio.Semaphore(self.depth)
                async for tree, entry, fetch in self._receive:
                    await slots.acquire()
                    nursery.start_soon(self._fetch, tree, entry, fetch, slots)
        finally:
            self._running = False

    async def _fetch(
        self, tree: SnapshotTree, entry: TreeEntry, fetch: _Fetch, slots: trio.Semaphore
    ) -> None:
        try:
            fetch.data = await tree.read_whole(entry)
        except IcefsError as exc:  # the reader's own get will report it
            log.debug("prefetch of %s failed: %s", entry.key, exc)
        finally:
            fetch.done.set()
            slots.release()

    async def read_whole(self, tree: SnapshotTree, entry: TreeEntry) -> Buffer:
        """Return all bytes of the chunk *entry*, prefetched if it was; then look ahead."""
        key = (tree.snapshot_id, entry.key)
        self._recent[key] = None
        self._recent.move_to_end(key)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        data = await self._join(key)
        if data is None:
            data = await self._read(tree, entry, key)
        if self._running and entry.array is not None:
            await tree.load_chunk_orders(entry.array)
            self._look_ahead(tree, entry)
        return data

    async def _join(self, key: tuple[str, str]) -> Buffer | None:
        """The chunk's bytes from the read-ahead or another reader's fetch; None if neither."""
        fetch = self._held.pop(key, None)
        if fetch is not None:
            self._held_bytes -= fetch.size
            await fetch.done.wait()
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
        if fetch.data is not None:
            self.joined += 1
        return fetch.data

    async def _read(self, tree: SnapshotTree, entry: TreeEntry, key: tuple[str, str]) -> Buffer:
        fetch = _Fetch(entry.size, self._seq)
        self._reading[key] = fetch
        try:
            fetch.data = await tree.read_whole(entry)
        finally:
            fetch.done.set()
            if self._reading.get(key) is fetch:
                del self._reading[key]
        return fetch.data

    def _look_ahead(self, tree: SnapshotTree, entry: TreeEntry) -> None:
        assert entry.array is not None
        # Each order scores the reads in a row it saw coming (a little out of order is
        # fine: zarr reads with several threads); the better one, C order on a tie,
        # says what to fetch.  Only the winner's entries are made: random reads make none.
        best_streak, best_order, best_pos = 0, False, -1
        for by_name in (False, True):
            pos = tree.chunk_position(entry, by_name)
            scan = (tree.snapshot_id, entry.array, by_name)
            last, streak = self._last.get(scan, (-1, 0))
            streak = streak + 1 if pos >= 0 and last < pos <= last + NEAR else 0
            self._last[scan] = (pos, streak)
            if streak > best_streak:
                best_streak, best_order, best_pos = streak, by_name, pos
        if best_streak:
            for ahead in tree.chunks_from(entry, best_order, best_pos, self.depth):
                self._hold(tree, ahead)

    def fetch_soon(self, tree: SnapshotTree, entry: TreeEntry) -> None:
        """Fetch the chunk *entry* into the holding area: a read of it is coming."""
        if self._running:
            self._hold(tree, entry, at_open=True)

    def _hold(self, tree: SnapshotTree, entry: TreeEntry, *, at_open: bool = False) -> None:
        key = (tree.snapshot_id, entry.key)
        if (
            key in self._held
            or key in self._reading
            or key in self._recent
            or entry.size > self.largest
        ):
            return
        self._seq += 1
        while self._held_bytes + entry.size > self.budget:
            # Make room only by dropping what many look-aheads since have passed over
            # (a scan that stopped or went elsewhere), never what a live scan will read.
            oldest = next(iter(self._held.values()), None)
            if oldest is None or self._seq - oldest.seq <= 4 * self.depth:
                return
            self._held.popitem(last=False)
            self._held_bytes -= oldest.size
            self.unused += 1
        fetch = _Fetch(entry.size, self._seq, at_open)
        try:
            self._send.send_nowait((tree, entry, fetch))
        except trio.WouldBlock:
            return  # enough queued already
        self._held[key] = fetch
        self._held_bytes += entry.size
