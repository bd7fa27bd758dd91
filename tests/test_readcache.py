"""The persistent read cache on real directories: verified entries, sharing between
caches (and processes), crashes mid-fill, a full disk and the eviction bound."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from icefs.cache import SHARDS, Damaged, EntryStore, ReadCache, default_size
from icefs.cache._entries import FREE_SHARE


def _cache(directory: Path, limit: int = 64 << 20) -> ReadCache:
    return ReadCache(EntryStore(str(directory), limit), "s3://bucket/repo at test")


class _Fetches:
    """A fetch that counts its calls and takes *seconds*."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.calls: dict[str, int] = {}
        self.seconds = seconds

    def of(self, key: str, data: bytes):
        async def fetch() -> bytes:
            self.calls[key] = self.calls.get(key, 0) + 1
            await trio.sleep(self.seconds)
            return data

        return fetch


async def test_round_trip_private_and_keyed(tmp_path):
    cache = _cache(tmp_path / "read")
    fetches = _Fetches()
    key = cache.key("SNAP1", "bytes", "a/c/0")
    assert bytes(await cache.through(key, fetches.of(key, b"chunk"))) == b"chunk"
    assert bytes(await cache.through(key, fetches.of(key, b"other"))) == b"chunk"
    assert fetches.calls == {key: 1}
    assert (cache.counters.hits, cache.counters.misses) == (1, 1)
    assert cache.counters.bytes_served == len(b"chunk") == cache.counters.bytes_filled
    # another snapshot's (or repository's) same key is another entry
    other = ReadCache(cache.entries, "s3://bucket/other at test")
    for k in (cache.key("SNAP2", "bytes", "a/c/0"), other.key("SNAP1", "bytes", "a/c/0")):
        assert bytes(await other.through(k, fetches.of(k, b"fresh"))) == b"fresh"
    path = Path(cache.entries.path(key))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "read").stat().st_mode) == 0o700
    for shard in SHARDS:
        assert stat.S_IMODE((tmp_path / "read" / shard).stat().st_mode) == 0o700


async def test_entry_for_another_key_is_never_served(tmp_path):
    entries = EntryStore(str(tmp_path), 64 << 20)
    entries.write("k1", b"one")
    # an entry moved under another key's name (a hash collision, a hand-made copy)
    Path(entries.path("k2")).write_bytes(Path(entries.path("k1")).read_bytes())
    with pytest.raises(Damaged, match="another key"):
        entries.read("k2")
    assert not os.path.exists(entries.path("k2"))
    assert bytes(entries.read("k1") or b"") == b"one"


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
async def test_damaged_entry_is_dropped_fetched_again_and_logged(tmp_path, caplog, damage):
    cache = _cache(tmp_path)
    fetches = _Fetches()
    key = cache.key("S", "bytes", "x/c/1")
    data = os.urandom(10_000)
    await cache.through(key, fetches.of(key, data))
    path = Path(cache.entries.path(key))
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[-100] ^= 0x01
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]  # a crash before the kernel wrote it all out
    elif damage == "empty":
        blob = bytearray()
    else:
        blob = bytearray(os.urandom(len(blob)))
    path.write_bytes(blob)
    assert bytes(await cache.through(key, fetches.of(key, data))) == data
    assert fetches.calls[key] == 2
    assert cache.counters.damaged == 1
    assert "dropped a damaged entry" in caplog.text
    # filled again, whole
    assert bytes(await cache.through(key, fetches.of(key, data))) == data
    assert fetches.calls[key] == 2
    bytes_, count = cache.entries.counted()
    assert count == 1
    assert bytes_ == path.stat().st_size


async def test_two_caches_share_one_fetch(tmp_path):
    """Two daemons' caches on one directory: each chunk is fetched once in all."""
    first, second = _cache(tmp_path), _cache(tmp_path)
    fetches = _Fetches(seconds=0.05)
    keys = [first.key("S", "bytes", f"a/c/{i}") for i in range(20)]

    async def read_all(cache: ReadCache) -> None:
        async with trio.open_nursery() as nursery:
            for i, key in enumerate(keys):
                nursery.start_soon(cache.through, key, fetches.of(key, b"%d" % i))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all, first)
        nursery.start_soon(read_all, second)
    assert sum(fetches.calls.values()) == len(keys)
    counters = [first.counters, second.counters]
    assert sum(c.misses for c in counters) == len(keys)
    assert sum(c.hits for c in counters) == len(keys)
    assert sum(c.waited for c in counters) >= 1
    for i, key in enumerate(keys):
        assert bytes(await second.through(key, fetches.of(key, b"no"))) == b"%d" % i


_FILLER = """
import sys
from icefs.cache import EntryStore
EntryStore(sys.argv[1], 1 << 40).write("big", b"x" * (512 << 20))
"""


def test_crash_mid_fill_leaves_nothing_served(tmp_path):
    """A process killed while writing an entry leaves only a file in tmp/: never served,
    removed by the next sweep."""
    tmp = tmp_path / "tmp"
    proc = subprocess.Popen([sys.executable, "-c", _FILLER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not (tmp.exists() and any(tmp.iterdir())):
            assert time.monotonic() < deadline, "the filler never started writing"
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    entries = EntryStore(str(tmp_path), 1 << 40)
    assert len(list((tmp_path / "tmp").iterdir())) == 1
    assert entries.read("big") is None
    assert entries.counted() == (0, 0)
    assert entries.sweep() == 1
    assert not list((tmp_path / "tmp").iterdir())


def test_prune_finds_damage_and_leftovers(tmp_path):
    entries = EntryStore(str(tmp_path), 64 << 20)
    for i in range(30):
        entries.write(f"k{i}", os.urandom(1000))
    Path(entries.path("k3")).write_bytes(b"ICEFSRC1 torn")
    (tmp_path / "tmp" / "999999999.dead").write_bytes(b"half")
    scan = entries.scan(verify=True)
    assert (scan.entries, scan.damaged, scan.leftovers) == (29, 1, 1)
    assert scan.bytes == sum(p.stat().st_size for s in SHARDS for p in (tmp_path / s).glob("[!.]*"))
    assert entries.clear() == 29
    assert entries.counted() == (0, 0)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a cache directory on a disk that fills up."""
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


async def test_full_disk_never_fails_a_read(small_disk, caplog):
    cache = _cache(small_disk / "read", limit=1 << 30)  # a bound far beyond the disk
    fetches = _Fetches()
    chunks = {cache.key("S", "bytes", f"a/c/{i}"): os.urandom(200_000) for i in range(12)}
    for key, data in chunks.items():
        assert bytes(await cache.through(key, fetches.of(key, data))) == data
    assert cache.counters.not_filled >= 1
    assert "is full" in caplog.text
    assert caplog.text.count("is full") == 1  # once a pause, not once a read
    kept = [key for key in chunks if os.path.exists(cache.entries.path(key))]
    assert 1 <= len(kept) < len(chunks)
    assert not list((small_disk / "read" / "tmp").iterdir())  # no half-written fills
    for key, data in chunks.items():  # every read goes on, from the cache or storage
        assert bytes(await cache.through(key, fetches.of(key, data))) == data


@pytest.mark.parametrize("caches", [1, 3])
async def test_eviction_keeps_the_bound_under_3x(tmp_path, caches):
    limit = 16 << 20
    many = [_cache(tmp_path, limit) for _ in range(caches)]
    fetches = _Fetches()
    size = 16 << 10
    written = 0
    rng = random.Random(7)
    i = 0
    while written < 3 * limit:
        cache = rng.choice(many)
        key = cache.key("S", "bytes", f"a/c/{i}")
        await cache.through(key, fetches.of(key, os.urandom(size)))
        written += size
        i += 1
        if i % 97 == 0:  # re-read a few early ones: recently used stays
            key = cache.key("S", "bytes", "a/c/0")
            await cache.through(key, fetches.of(key, os.urandom(size)))
    on_disk = sum(p.stat().st_size for s in SHARDS for p in (tmp_path / s).glob("[!.]*"))
    assert 0.95 * limit <= on_disk <= 1.05 * limit
    assert on_disk <= limit
    assert many[0].entries.counted()[0] == on_disk
    assert sum(c.counters.evictions for c in many) > 0
    assert os.path.exists(many[0].entries.path(many[0].key("S", "bytes", "a/c/0")))


def test_default_size_is_a_tenth_of_free_space_at_most_10g(tmp_path):
    st = os.statvfs(tmp_path)
    expected = min(10 << 30, int(st.f_bavail * st.f_frsize * FREE_SHARE))
    assert abs(default_size(str(tmp_path / "not" / "yet")) - expected) <= 64 << 20


def test_cache_command_stats_prune_clear(tmp_path, capsys):
    from icefs.cli.main import main

    entries = EntryStore(str(tmp_path / "read"), 64 << 20)
    for i in range(5):
        entries.write(f"k{i}", os.urandom(3000))
    Path(entries.path("k0")).write_bytes(b"torn")
    args = ["--cache-dir", str(tmp_path), "--json"]
    assert main(["cache", "stats", *args]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 5
    assert abs(stats["limit_bytes"] - default_size(str(tmp_path / "read"))) < 64 << 20
    assert main(["cache", "prune", *args, "--read-cache-size", "10k"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["damaged"] == 1
    assert pruned["bytes"] <= 10_000 // 16 * 16  # each shard within its share
    assert pruned["entries"] + pruned["evicted"] == 4
    assert main(["cache", "clear", *args]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == pruned["entries"]
    assert main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 0
    assert "entries 0, bytes 0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cache", "stats", "--read-cache-size", "lots"])


async def test_a_cancelled_fetch_gives_its_claim_back(tmp_path):
    cache = _cache(tmp_path)
    key = cache.key("S", "bytes", "a/c/0")
    fetches = _Fetches(seconds=60)
    with trio.move_on_after(0.2):
        await cache.through(key, fetches.of(key, b"never"))
    quick = _Fetches()
    with trio.fail_after(5):  # not WAIT_SECONDS behind a claim nobody holds
        assert bytes(await cache.through(key, quick.of(key, b"now"))) == b"now"
    assert quick.calls == {key: 1}
