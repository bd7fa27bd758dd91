"""The read rows of benchmarks/cloud.py: a cold read of ``big`` through zarr, ``cp -r``
and fio; time to the first byte of a chunk; and the floors measured beside them."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import LocalStore

from benchmarks.cloudsetup import requests_row, server_apart
from benchmarks.common import Row, Timing, at_once, drop_caches, on_cue
from benchmarks.fetchfloor import FetchMount
from benchmarks.floor import FILE_SIZE, NullMount, write_files
from benchmarks.read import floor_reads, read_one

if TYPE_CHECKING:
    from collections.abc import Callable

    from benchmarks.cloudsetup import Cloud, Counts

#: The readers of ``big``, in the order each repeat runs them.
READERS = ("direct", "icefs", "cp -r", "fio")


def _copy_argv(source: Path, target: Path) -> list[str]:
    """``cp -r`` of *source* into *target*."""
    return ["cp", "-r", str(source), str(target)]


def _fio_argv(directory: Path) -> list[str]:
    """Sequential 1 MiB psync reads of every file below *directory*, one file after the
    other in the order a directory walk meets them (fio's opendir)."""
    return [
        "fio",
        "--name=seq",
        "--rw=read",
        "--bs=1M",
        "--ioengine=psync",
        "--readonly",
        "--file_service_type=sequential",
        f"--opendir={directory}",
        "--output-format=json",
    ]


def _copy(source: Path, target: Path) -> int:
    """``cp -r`` of *source* into *target*; the bytes copied, counted in the copy (walking
    the mount again would time its directory requests too)."""
    subprocess.run(_copy_argv(source, target), check=True, capture_output=True)
    return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())


def _fio(directory: Path) -> int:
    """fio's reads of the files below *directory*; the bytes fio says it read."""
    out = subprocess.run(_fio_argv(directory), check=True, capture_output=True, text=True).stdout
    report = json.loads(out[out.index("{") :])  # fio may print a line before it
    return int(report["jobs"][0]["read"]["io_bytes"])


def _direct_read(cloud: Cloud) -> int:
    repo = icechunk.Repository.open(cloud.storage("read"))
    return read_one(repo.readonly_session(tag="v1").store, "big")


def _read_big(
    cloud: Cloud, repeat: int, counts: dict[str, Counts], floors: bool = False
) -> dict[str, Timing]:
    """Cold reads of ``big`` by each of `READERS`, *repeat* times, each icefs reader on a
    new mount; the requests of each reader's last repeat go into *counts*. With
    *floors*, each reader of the mount also reads ``big`` from a new fetching floor
    (benchmarks/fetchfloor.py) right after, as ``floor <reader>``."""
    times = {name: Timing(name) for name in READERS}
    if floors:
        times.update({f"floor {name}": Timing(f"floor {name}") for name in READERS[1:]})
    for _ in range(repeat):
        with cloud.counted(counts, "direct"):
            times["direct"].timed(partial(_direct_read, cloud))
        for name in READERS[1:]:
            with (
                cloud.mount("read") as m,
                tempfile.TemporaryDirectory(dir="/dev/shm") as out,
                cloud.counted(counts, name),
            ):
                big = m.mountpoint / "tags" / "v1" / "big"
                times[name].timed(partial(_MOUNT_READERS[name], big, Path(out)))
            if floors:
                with (
                    FetchMount(cloud.base / "fetchfloor", cloud.where("read", "v1", "big")) as f,
                    tempfile.TemporaryDirectory(dir="/dev/shm") as out,
                ):
                    big = f.mountpoint / "big"
                    times[f"floor {name}"].timed(partial(_MOUNT_READERS[name], big, Path(out)))
    return times


#: How each reader of the mount reads ``big`` (a tag's array directory), given a
#: scratch directory on tmpfs; each returns the bytes it read.
_MOUNT_READERS: dict[str, Callable[[Path, Path], int]] = {
    "icefs": lambda big, _: read_one(LocalStore(big.parent, read_only=True), "big"),
    "cp -r": _copy,
    "fio": lambda big, _: _fio(big / "c"),
}


def read_rows(cloud: Cloud, repeat: int, counts: dict[str, Counts]) -> list[Row]:
    seen: dict[str, Counts] = {}
    t = _read_big(cloud, repeat, seen, floors=True)
    counts.update({f"{k} read": v for k, v in seen.items()})
    direct, mounted, cp, fio = (t[name] for name in READERS)
    files = direct.nbytes // FILE_SIZE
    both, _ = floor_reads(cloud.base, partial(_direct_read, cloud), files, repeat)
    ones = _one_reader_floors(cloud.base, partial(_direct_read, cloud), files, repeat)
    delay = cloud.proxy.delay_ms
    cloud.proxy.set_delay(0)
    try:
        at_zero = _read_big(cloud, repeat, {})
    finally:
        cloud.proxy.set_delay(delay)
    with server_apart(cloud) as cpus:
        apart = _read_big(cloud, repeat, {}) if cpus else {}
    size = f"{direct.nbytes >> 20} MiB, 2 MiB chunks"
    rows: list[Row] = [
        (
            f"cold read {size}, zarr: MiB/s best / median",
            f"{mounted.mib_s(mounted.best):.0f} / {mounted.mib_s(mounted.median):.0f}",
            f"direct {direct.mib_s(direct.best):.0f} / {direct.mib_s(direct.median):.0f}",
            f"{direct.best / mounted.best:.2f}x throughput",
            ">= 0.9x",
        ),
        requests_row("icefs", seen["icefs"], "direct", seen["direct"]),
        (
            "  CPU-seconds per GiB, whole machine (the S3 server and proxy included)",
            f"{mounted.cpu_per_gib():.2f}",
            f"direct {direct.cpu_per_gib():.2f}",
            f"{mounted.cpu_per_gib() / direct.cpu_per_gib():.2f}x",
            "-",
        ),
        (
            "  (floor) both halves at once: the direct read while a null pyfuse3 fs serves "
            "as many bytes to another process: MiB/s best",
            "",
            f"both done at {both.mib_s(both.best):.0f}",
            f"{direct.best / both.best:.2f}x of direct; icefs {both.best / mounted.best:.2f}x "
            "of it",
            "-",
        ),
    ]
    for timing, name in ((cp, "cp -r"), (fio, "fio psync 1 MiB, one file at a time")):
        rows.append(
            (
                f"cold {name} of big: MiB/s best / median",
                f"{timing.mib_s(timing.best):.0f} / {timing.mib_s(timing.median):.0f}",
                f"direct zarr {direct.mib_s(direct.best):.0f}",
                f"{direct.best / timing.best:.2f}x throughput",
                ">= 0.8x",
            )
        )
    rows.append(requests_row("cp -r", seen["cp -r"], "fio", seen["fio"]))
    rows += [
        (
            f"  (floor) one reader: {name} of as many bytes from a null pyfuse3 fs while the "
            "direct read runs: MiB/s best",
            "",
            f"both done at {one.mib_s(one.best):.0f}",
            f"{direct.best / one.best:.2f}x of direct; {name} {one.best / mine.best:.2f}x of it",
            "-",
        )
        for (name, one), mine in zip(ones.items(), (cp, fio), strict=True)
    ]
    rows += [
        (
            f"  (floor) {'zarr' if name == 'icefs' else name} of big from a pyfuse3 fs that "
            "only fetches through Icechunk, ahead in the readers' order: MiB/s best",
            f"{t[f'floor {name}'].mib_s(t[f'floor {name}'].best):.0f}",
            f"direct zarr {direct.mib_s(direct.best):.0f}",
            f"{direct.best / t[f'floor {name}'].best:.2f}x of direct; icefs "
            f"{t[f'floor {name}'].best / t[name].best:.2f}x of it",
            "-",
        )
        for name in READERS[1:]
    ]
    rows += _again_rows("  (floor) no latency added (0 ms per request)", at_zero)
    what = "  (floor) the S3 server and proxy apart, on their own CPU"
    if cpus:
        rows += _again_rows(f"{what} (the readers on the other {cpus})", apart)
    else:
        rows.append((f"{what}: one CPU, not measured", "", "", "", "-"))
    return rows


def _again_rows(what: str, times: dict[str, Timing]) -> list[Row]:
    """The reads of `_read_big` run again as *what* says: best of each, against direct."""
    direct = times["direct"]
    return [
        (
            f"{what}: {name}, MiB/s best",
            f"{times[name].mib_s(times[name].best):.0f}",
            f"direct zarr {direct.mib_s(direct.best):.0f}",
            f"{direct.best / times[name].best:.2f}x throughput",
            "-",
        )
        for name in READERS[1:]
    ]


def _one_reader_floors(
    base: Path, direct: Callable[[], int], files: int, repeat: int
) -> dict[str, Timing]:
    """The floors of the one-file-at-a-time readers: ``cp -r`` and fio of *files* 2 MiB
    files from floor.py's null filesystem (FUSE transport, nothing fetched) in another
    process while this one runs *direct*, timed until both are done."""
    floors = {name: Timing(f"floor {name}") for name in READERS[2:]}
    with NullMount(base / "null") as null:
        write_files(null.mountpoint, files)
        data = null.mountpoint / "data"
        for _ in range(repeat):
            for name, timing in floors.items():
                with tempfile.TemporaryDirectory(dir="/dev/shm") as out:
                    argv = _copy_argv(data, Path(out)) if name == "cp -r" else _fio_argv(data)
                    timing.timed(at_once(on_cue(argv), direct, drop_caches))
    return floors


def first_byte_rows(cloud: Cloud, repeat: int, counts: dict[str, Counts]) -> list[Row]:
    """Time to the first byte of a chunk not read before (nor read ahead), its array's
    index in memory."""
    n = max(3, repeat * 3)
    direct, mounted = Timing("direct get"), Timing("icefs head -c1")
    session = icechunk.Repository.open(cloud.storage("read")).readonly_session(tag="v1")
    store = session.store

    async def get(key: str) -> int:
        buf = await store.get(key, default_buffer_prototype())
        assert buf is not None
        return len(buf)

    def get_now(key: str) -> int:
        return asyncio.run(get(key))

    asyncio.run(get("big/c/0/0/0"))  # the manifest, once
    # Backwards, so that no read follows another the way a scan does: read-ahead would
    # have the chunk in hand before it is asked for.
    last = zarr.open_array(store, path="big", mode="r").shape[0] - 1
    step = max(1, last // n)
    rows_read = [last - k * step for k in range(n) if last - k * step > 0]
    with cloud.counted(counts, "direct get"):
        for i in rows_read:
            direct.timed(functools.partial(get_now, f"big/c/{i}/0/0"))
    with cloud.mount("read") as m:
        chunks = m.mountpoint / "tags" / "v1" / "big" / "c"
        (chunks / "0" / "0" / "0").stat()  # the manifest, once
        with cloud.counted(counts, "icefs head"):
            for i in rows_read:
                path = chunks / str(i) / "0" / "0"

                def head(path: Path = path) -> int:
                    with open(path, "rb") as f:
                        return len(f.read(1))

                mounted.timed(head)
    return [
        (
            "time to first byte of a 2 MiB chunk (open + read 1 byte): ms median",
            f"{mounted.median * 1e3:.1f}",
            f"one direct get {direct.median * 1e3:.1f}",
            f"{mounted.median / direct.median:.2f}x time",
            "<= 1.2x",
        ),
        requests_row("icefs", counts["icefs head"], "direct", counts["direct get"]),
    ]
