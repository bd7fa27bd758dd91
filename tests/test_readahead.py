"""Read-ahead across chunk files (`icefs.store.prefetch`), through the core on in-memory
Icechunk: sequential scans, shared fetches, the fetch started at open, the window that
widens while readers wait, and branches, whose changed chunks never come from it."""

from __future__ import annotations

import os

import pytest
import trio

from icefs.store import SnapshotTree
from tests.corehelpers import close, count_fetches, read_all, rows_tag_core, walk


@pytest.mark.parametrize("scan", ["c-order", "walk-order", "backwards"])
async def test_prefetch_reads_ahead_of_a_sequential_scan(bridge, tmp_path, scan):
    core, data = await rows_tag_core(bridge, tmp_path, 24)
    core.reads.prefetcher.budget = 3 * 1024
    order = {
        "c-order": list(range(24)),
        "walk-order": sorted(range(24), key=str),
        "backwards": list(range(23, -1, -1)),
    }[scan]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.reads.prefetcher.run)
        await trio.sleep(0.01)
        for i in order:
            attr = await walk(core, "tags", "t", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
            assert core.reads.prefetcher.held_bytes <= 3 * 1024
            if scan == "backwards":  # no order sees it coming: nothing is fetched ahead
                assert core.reads.prefetcher.held_bytes == 0
        nursery.cancel_scope.cancel()
    close(core)
    if scan == "backwards":
        assert (core.reads.prefetcher.hits, core.reads.prefetcher.unused) == (0, 0)
        return
    # the first reads tell the scan's order: C order and walk order agree on 0 -> 1
    assert core.reads.prefetcher.hits >= 18, (
        core.reads.prefetcher.hits,
        core.reads.prefetcher.unused,
    )
    assert core.reads.prefetcher.unused <= core.reads.prefetcher.depth


async def test_a_scan_makes_each_chunk_entry_ahead_once(bridge, tmp_path, monkeypatch):
    """Each read of a sequential scan asks for the chunks its window newly covers, not the
    whole window again: a wide window costs no more per read than a narrow one."""
    core, data = await rows_tag_core(bridge, tmp_path, 40)
    prefetcher = core.reads.prefetcher
    prefetcher.depth = 16
    made: list[int] = []
    between = SnapshotTree.chunks_between

    def counted(self, entry, by_name, start, stop):
        chunks = between(self, entry, by_name, start, stop)
        made.append(len(chunks))
        return chunks

    monkeypatch.setattr(SnapshotTree, "chunks_between", counted)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(prefetcher.run)
        await trio.sleep(0.01)
        for i in range(40):
            attr = await walk(core, "tags", "t", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
        nursery.cancel_scope.cancel()
    close(core)
    assert prefetcher.hits >= 38
    assert sum(made) <= 40, made  # 16 at the first read, then one per read at most


async def test_concurrent_readers_fetch_each_chunk_once(bridge, tmp_path, monkeypatch):
    """Readers of one array in stride (zarr's threads, 8 cat's): no chunk is fetched twice."""
    core, data = await rows_tag_core(bridge, tmp_path, 32)
    fetched = count_fetches(monkeypatch)
    readers = 4

    async def reader(k: int) -> None:
        for i in range(k, 32, readers):
            attr = await walk(core, "tags", "t", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.reads.prefetcher.run)
        await trio.sleep(0.01)
        async with trio.open_nursery() as readers_nursery:
            for k in range(readers):
                readers_nursery.start_soon(reader, k)
        nursery.cancel_scope.cancel()
    close(core)
    assert sorted(fetched) == sorted(set(fetched)), "a chunk was fetched twice"
    assert len(fetched) == 32
    assert core.reads.prefetcher.unused == 0
    assert core.reads.prefetcher.hits > 0


async def test_first_open_of_a_chunk_starts_its_fetch(bridge, tmp_path, monkeypatch):
    """The get of a chunk the kernel has no page of starts at open, before the read."""
    core, data = await rows_tag_core(bridge, tmp_path, 64)
    fetches = Fetches(monkeypatch)
    fetched = fetches.keys

    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.reads.prefetcher.run)
        await trio.sleep(0.01)
        attr = await walk(core, "tags", "t", "a", "c", "37", "0")  # random: no look-ahead
        reply = await core.open(attr.ino, os.O_RDONLY)
        await fetches.until(lambda: len(fetched) >= 1)  # with no read asked for yet
        assert fetched == ["a/c/37/0"]
        assert bytes(await core.read(reply.fh, 0, attr.size)) == data[37].tobytes()
        core.release(reply.fh)
        assert (core.reads.prefetcher.at_open, core.reads.prefetcher.hits) == (1, 0)
        assert fetched == ["a/c/37/0"], "the read used the fetch the open started"

        # Opened again while the kernel keeps the inode (and may keep its pages): the
        # open starts nothing, and a read fetches as usual.
        core.reads.prefetcher._recent.clear()  # not "just read": only the open decides here
        reply = await core.open(attr.ino, os.O_RDONLY)
        await trio.sleep(0.05)
        assert fetched == ["a/c/37/0"]
        assert bytes(await core.read(reply.fh, 0, attr.size)) == data[37].tobytes()
        core.release(reply.fh)
        assert fetched == ["a/c/37/0", "a/c/37/0"]

        # Once the kernel forgot the inode, its next first open fetches again.
        core.forget([(attr.ino, core.inodes.lookup_count(attr.ino))])
        core.reads.prefetcher._recent.clear()
        attr = await walk(core, "tags", "t", "a", "c", "37", "0")
        reply = await core.open(attr.ino, os.O_RDONLY)
        await fetches.until(lambda: len(fetched) >= 3)
        core.release(reply.fh)
        nursery.cancel_scope.cancel()
    close(core)


class Fetches:
    """Every whole-chunk fetch `SnapshotTree.read_whole` starts, its key in `keys` in
    order; a fetch whose key *held* picks waits for `gate` first."""

    def __init__(self, monkeypatch, held=lambda key: False):
        self.keys: list[str] = []
        self.gate = trio.Event()
        self._arrived = trio.Event()
        original = SnapshotTree.read_whole

        async def watched(tree, entry):
            self.keys.append(entry.key)
            self._arrived.set()
            if held(entry.key):
                await self.gate.wait()
            return await original(tree, entry)

        monkeypatch.setattr(SnapshotTree, "read_whole", watched)

    async def until(self, done, seconds=10):
        """Wait until *done()*, re-checked at each fetch started (`TooSlowError` after
        *seconds*)."""
        with trio.fail_after(seconds):
            while not done():
                self._arrived = trio.Event()
                await self._arrived.wait()


def slow_fetches(monkeypatch, seconds):
    """Make every whole-chunk fetch take *seconds* more (an object store's round trip)."""
    original = SnapshotTree.read_whole

    async def slow(self, entry):
        await trio.sleep(seconds)
        return await original(self, entry)

    monkeypatch.setattr(SnapshotTree, "read_whole", slow)


async def test_window_widens_while_reads_wait_and_narrows_when_they_stop(
    bridge, tmp_path, monkeypatch
):
    core, data = await rows_tag_core(bridge, tmp_path, 64)
    ahead = core.reads.prefetcher
    ahead.budget = 12 * 1024  # twelve 1 KiB chunks
    slow_fetches(monkeypatch, 0.02)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ahead.run)
        await trio.sleep(0.01)
        for i in range(40):
            attr = await walk(core, "tags", "t", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
            assert ahead.held_bytes <= ahead.budget
        assert ahead.late > 0
        assert ahead.widest == 12, "doubled from 4 while reads waited, up to the budget"
        assert ahead.fetch_seconds >= 0.02
        hits = ahead.hits
        for i in (50, 3, 61, 17):  # random reads: the scan is over
            attr = await walk(core, "tags", "t", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
        assert ahead.widest == ahead.depth == 4
        nursery.cancel_scope.cancel()
    close(core)
    assert hits >= 30, (hits, ahead.late, ahead.unused)


async def test_readers_behind_the_front_keep_the_window(bridge, tmp_path, monkeypatch):
    """Readers in stride (zarr's threads) arrive a little out of order: one behind the
    scan's front, within its window, neither ends the scan nor narrows its window, so it
    widens while reads wait as one reader's would."""
    core, data = await rows_tag_core(bridge, tmp_path, 96)
    ahead = core.reads.prefetcher
    slow_fetches(monkeypatch, 0.02)
    windows = []

    async def reader(k: int, readers: int) -> None:
        for i in range(k, 96, readers):
            attr = await walk(core, "tags", "t", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
            windows.append(ahead.widest)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ahead.run)
        await trio.sleep(0.01)
        # Each reader starts a little later than the one before: every round of reads
        # comes in backwards, each read behind the one before it.
        async with trio.open_nursery() as readers_nursery:
            for k in range(4):
                readers_nursery.start_soon(reader, 3 - k, 4)
                await trio.sleep(0.002)
        nursery.cancel_scope.cancel()
    close(core)
    assert ahead.late > 0
    assert max(windows) > ahead.depth, "the window widened"
    assert windows[-1] == max(windows), "and no read behind the front narrowed it again"


async def test_an_opens_fetch_does_not_wait_for_the_look_ahead(bridge, tmp_path, monkeypatch):
    """A file's open starts the get its read will wait for even while every look-ahead
    fetch slot is taken (by gets that do not finish here until the test lets them)."""
    core, data = await rows_tag_core(bridge, tmp_path, 64)
    ahead = core.reads.prefetcher
    fetches = Fetches(monkeypatch, held=lambda key: key not in ("a/c/0/0", "a/c/37/0"))
    started = fetches.keys
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ahead.run)
        await trio.sleep(0.01)
        attr = await walk(core, "tags", "t", "a", "c", "0", "0")
        assert (await read_all(core, attr.ino))[0] == data[0].tobytes()
        await fetches.until(lambda: len(started) == 1 + ahead.depth, 5)  # 1..4: every slot
        attr = await walk(core, "tags", "t", "a", "c", "37", "0")  # no look-ahead here
        at_open = ahead.at_open
        reply = await core.open(attr.ino, os.O_RDONLY)
        await fetches.until(lambda: "a/c/37/0" in started, 5)
        assert bytes(await core.read(reply.fh, 0, attr.size)) == data[37].tobytes()
        core.release(reply.fh)
        assert ahead.at_open == at_open + 1, "the read used the fetch its open started"
        fetches.gate.set()
        nursery.cancel_scope.cancel()
    close(core)


async def test_branch_reads_ahead_but_never_serves_a_changed_chunk(bridge, tmp_path):
    """On a branch, chunks come through the read-ahead (the tip's, then the session's base
    snapshot's for chunks the session has not changed); a chunk written in the session
    is read from the session even when the look-ahead had fetched the old one."""
    core, data = await rows_tag_core(bridge, tmp_path, 24)
    ahead = core.reads.prefetcher
    new = bytes(range(256)) * 4
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ahead.run)
        await trio.sleep(0.01)
        for i in range(6):  # a clean branch: its tip is a snapshot
            attr = await walk(core, "branches", "main", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
        assert ahead.hits >= 3
        attr = await walk(core, "branches", "main", "a", "c", "8", "0")
        reply = await core.open(attr.ino, os.O_WRONLY | os.O_TRUNC)
        await core.write(reply.fh, 0, new)
        await core.flush(reply.fh)
        core.release(reply.fh)
        state = core.branches.states["main"]
        assert state.active
        assert not state.unchanged("a/c/8/0", "a")
        assert state.unchanged("a/c/9/0", "a")
        hits = ahead.hits
        for i in range(6, 14):  # the session's tree now; 8 was held from the base
            attr = await walk(core, "branches", "main", "a", "c", str(i), "0")
            got = (await read_all(core, attr.ino))[0]
            assert got == (new if i == 8 else data[i].tobytes()), i
        assert ahead.hits > hits, "unchanged chunks of a session come through the read-ahead"

        # new metadata for the array: none of its chunks is known unchanged any more
        meta = await walk(core, "branches", "main", "a", "zarr.json")
        text = (await read_all(core, meta.ino))[0]
        reply = await core.open(meta.ino, os.O_WRONLY | os.O_TRUNC)
        await core.write(reply.fh, 0, text.replace(b'"attributes": {}', b'"attributes": {"x": 1}'))
        await core.flush(reply.fh)
        core.release(reply.fh)
        assert not state.unchanged("a/c/20/0", "a")
        hits = ahead.hits
        for i in range(14, 20):
            attr = await walk(core, "branches", "main", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
        assert ahead.hits == hits
        nursery.cancel_scope.cancel()
    close(core)


@pytest.mark.parametrize("budget", [0])
async def test_no_read_ahead_memory_means_no_read_ahead(bridge, tmp_path, budget):
    core, data = await rows_tag_core(bridge, tmp_path, 16)
    ahead = core.reads.prefetcher
    ahead.budget = budget
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ahead.run)
        await trio.sleep(0.01)
        for i in range(16):
            attr = await walk(core, "tags", "t", "a", "c", str(i), "0")
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
            assert ahead.held_bytes == 0
        nursery.cancel_scope.cancel()
    close(core)
    assert (ahead.hits, ahead.at_open) == (0, 0)


@pytest.mark.parametrize("render", ["", "zarr2", "zarr2-decoded"])
@pytest.mark.parametrize("kind", ["tags", "snapshots", "branches"])
async def test_every_view_reads_ahead(bridge, tmp_path, kind, render):
    """A scan of chunk files one at a time is read ahead under tags/, snapshots/<id>/ and
    a branch (its committed base), and in each of their Zarr v2 renderings."""
    core, data = await rows_tag_core(bridge, tmp_path, 24)
    ref = {"tags": "t", "branches": "main"}.get(kind) or core.refs.tags["t"]
    top = (render, kind, ref) if render else (kind, ref)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(core.reads.prefetcher.run)
        await trio.sleep(0.01)
        for i in range(24):
            chunk = ("a", str(i), "0") if render else ("a", "c", str(i), "0")
            attr = await walk(core, *top, *chunk)
            assert (await read_all(core, attr.ino))[0] == data[i].tobytes()
        nursery.cancel_scope.cancel()
    close(core)
    assert core.reads.prefetcher.hits >= 18, (core.reads.prefetcher.hits, kind, render)
