"""Read-ahead across chunk files of immutable snapshots.

A program that reads an array's chunk files one after another (``cp -r``,
``tar``, ``fio``, a zarr reader with few threads) waits for one Icechunk get per
file. `Prefetcher` notices such a scan and fetches the next chunks while the
program is still busy with the current one: in C order of the coordinates, or
in the order a directory walk meets the files (names sorted as text).

Fetched bytes wait in a bounded holding area until read; a scan that stops
leaves at most `BUDGET` bytes behind, dropped oldest first. Only tags and
snapshots are prefetched: their chunks never change.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import trio

from icefs.errors import IcefsError

if TYPE_CHECKING:
    from icefs.tree import SnapshotTree, TreeEntry

__all__ = ["Prefetcher"]

log = logging.getLogger(__name__)

#: Chunks fetched ahead of a sequential reader, and fetches in flight at most.
DEPTH: Final = 4
#: Bytes fetched ahead and not yet read, over the whole mount.
BUDGET: Final = 64 << 20
#: A read at most this many chunks after the previous read of the array is sequential.
NEAR: Final = 8


@dataclass(slots=True)
class _Fetch:
    size: int
    #: when it was asked for (counts `_hold` calls)
    seq: int
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None


class Prefetcher:
    """Fetches the chunks a sequential reader will ask for next (see the module doc)."""

    def __init__(self, largest: int, depth: int = DEPTH, budget: int = BUDGET) -> None:
        #: chunks bigger than this are read in ranges, never whole: not prefetched
        self.largest = largest
        self.depth = depth
        self.budget = budget
        self.hits = 0
        self.unused = 0
        self._held: OrderedDict[tuple[str, str], _Fetch] = OrderedDict()
        self._held_bytes = 0
        self._seq = 0
        #: per scan (snapshot, array, order): the position last read and the streak
        self._last: dict[tuple[str, str, bool], tuple[int, int]] = {}
        self._send, self._receive = trio.open_memory_channel[
            "tuple[SnapshotTree, TreeEntry, _Fetch]"](depth * 8)
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

    async def _fetch(self, tree: SnapshotTree, entry: TreeEntry, fetch: _Fetch,
                     slots: trio.Semaphore) -> None:
        try:
            fetch.data = await tree.read_whole(entry)
        except IcefsError as exc:  # the reader's own get will report it
            log.debug("prefetch of %s failed: %s", entry.key, exc)
        finally:
            fetch.done.set()
            slots.release()

    async def read_whole(self, tree: SnapshotTree, entry: TreeEntry) -> bytes:
        """Return all bytes of the chunk *entry*, prefetched if it was; then look ahead."""
        fetch = self._held.pop((tree.snapshot_id, entry.key), None)
        data = None
        if fetch is not None:
            self._held_bytes -= fetch.size
            await fetch.done.wait()
            data = fetch.data
        if data is None:
            data = await tree.read_whole(entry)
        else:
            self.hits += 1
        if self._running and entry.array is not None:
            await tree.load_chunk_orders(entry.array)
            self._look_ahead(tree, entry)
        return data

    def _look_ahead(self, tree: SnapshotTree, entry: TreeEntry) -> None:
        assert entry.array is not None
        # Each order scores the reads in a row it saw coming (a little out of order is
        # fine: zarr reads with several threads); the better one, C order on a tie,
        # says what to fetch.
        best: tuple[int, list[TreeEntry]] = (0, [])
        for by_name in (False, True):
            pos, following = tree.chunks_after(entry, by_name, self.depth)
            scan = (tree.snapshot_id, entry.array, by_name)
            last, streak = self._last.get(scan, (-1, 0))
            streak = streak + 1 if pos >= 0 and last < pos <= last + NEAR else 0
            self._last[scan] = (pos, streak)
            if streak > best[0]:
                best = (streak, following)
        for ahead in best[1]:
            self._hold(tree, ahead)

    def _hold(self, tree: SnapshotTree, entry: TreeEntry) -> None:
        key = (tree.snapshot_id, entry.key)
        if key in self._held or entry.size > self.largest:
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
        fetch = _Fetch(entry.size, self._seq)
        try:
            self._send.send_nowait((tree, entry, fetch))
        except trio.WouldBlock:
            return  # enough queued already
        self._held[key] = fetch
        self._held_bytes += entry.size
