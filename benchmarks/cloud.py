"""Object storage with latency: icefs and its baselines through one slow S3 endpoint.

    python benchmarks/cloud.py [--delays 20,50] [--size-mib 1024] [--grid 10,40,250]
                               [--commit-chunks 10000] [--rss-mib 4096] [--repeat 3]
                               [--rows read,first-byte,walk,write,rss]
    python benchmarks/cloud.py --smoke     # tiny data, one repeat, one delay

Starts the loopback S3 server (moto) and proxy.py in front of it, which delays
every request by each of --delays in turn (milliseconds: 20 is a same-region
cloud round trip) and counts requests by kind.  icefs and its baseline go
through the same proxy, side by side in one run; each row prints the requests
each side made.  The repository (built once per run at zero delay) holds

* ``big``: float32 in 2 MiB uncompressed chunks, --size-mib in total;
* ``grid``: a 3-D uint8 array of --grid chunks (hundreds of chunk directories),
  16 bytes each, and a native directory holding the same array.

Rows (the read rows in cloudread.py): cold read of ``big`` with zarr (mount vs
Icechunk + zarr, and the CPU-seconds per GiB the whole machine spent; the
floor: that direct read while a null pyfuse3 filesystem serves as many bytes);
the same through one-file-at-a-time readers (``cp -r``, fio's sequential psync
reads; the floors: each of them reading a null pyfuse3 filesystem beside the
direct read); all these reads again with no latency added, and again with the S3
server and the proxy on a CPU of their own (the loopback server otherwise
takes the readers' CPUs, as a cloud's never does);
time to the first byte of a chunk whose array is known (mount vs one get);
``find`` and ``ls -lR`` of ``grid``, cold and warm (mount vs native; the floors:
a null pyfuse3 filesystem with as many files in as many directories; Icechunk
listing the keys directly); zarr write of --size-mib + commit (and again with
the S3 server and the proxy on a CPU of their own); a commit of
--commit-chunks changed chunks (their background stores ended first, as the
direct side's are); the daemon's RSS while writing --rss-mib through the mount.
``--rows`` runs some of these groups only.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.storage import LocalStore

from benchmarks.cloudcache import cache_rows
from benchmarks.cloudread import first_byte_rows, read_rows
from benchmarks.cloudsetup import Cloud, Counts, build, requests_row, server_apart
from benchmarks.common import Row, Timing, drop_caches, parse_args, report, steady_memory
from benchmarks.floor import NullMount
from benchmarks.peers import peer_rows
from benchmarks.proxy import Proxy, summary
from benchmarks.read import BIG_CHUNK
from benchmarks.write import RssSampler, make_data, write_array
from harness.servers import start_moto, stop

if TYPE_CHECKING:
    from collections.abc import Callable

icechunk.set_logs_filter("error")

#: The groups of rows, in the order they run (``--rows``).
GROUPS = ("read", "first-byte", "walk", "cache", "peers", "write", "rss")


def _walk(argv: list[str], root: Path) -> Callable[[], int]:
    def run() -> int:
        out = subprocess.run([*argv, str(root)], capture_output=True, check=True).stdout
        return out.count(b"\n")

    return run


def _commit(branch: Path, chunks: int) -> int:
    (branch / ".icefs" / "commit").write_text(f"{chunks} chunks")
    return chunks


def _commit_session(session: icechunk.Session, chunks: int) -> int:
    session.commit(f"{chunks} chunks")
    return chunks


def _uploaded(mountpoint: Path) -> None:
    """Wait until the mount's background stores (write-behind) have ended."""
    stats = mountpoint / ".icefs" / "stats"
    while json.loads(stats.read_text())["background_stores"]["in_flight"]:
        time.sleep(0.05)


def walk_rows(
    cloud: Cloud, repeat: int, counts: dict[str, Counts], grid: tuple[int, int, int]
) -> list[Row]:
    """``find`` and ``ls -lR`` of ``grid``: cold is a new mount (the snapshot and its
    manifest fetched through the proxy) with the kernel's caches dropped, warm the same
    walk again.  The floor of ``find``: floor.py's null pyfuse3 filesystem holding as
    many files in as many leaf directories, walked in the same run; beside a cold walk:
    Icechunk opening the tag and listing the keys directly."""
    chunks, dirs = int(np.prod(grid)), int(np.prod(grid[:-1]))
    rows: list[Row] = []
    for argv in (["find"], ["ls", "-lR"]):
        name = " ".join(argv)
        # the null fs answers ls -l's getxattr and statx no faster than icefs: a floor of find
        sides = ("icefs", "native", "null") if argv == ["find"] else ("icefs", "native")
        times = {f"{k} {s}": Timing(k) for k in sides for s in ("cold", "warm")}
        for _ in range(repeat):
            with cloud.mount("read") as m:
                grid_dir = m.mountpoint / "tags" / "v1" / "grid"
                drop_caches()
                with cloud.counted(counts, f"{name} cold"):
                    times["icefs cold"].timed(_walk(argv, grid_dir))
                with cloud.counted(counts, f"{name} warm"):
                    times["icefs warm"].timed(_walk(argv, grid_dir))
            _cold_then_warm(argv, cloud.base / "native" / "grid", times, "native")
            if "null" in sides:
                with NullMount(cloud.base / "null", entries=chunks, dirs=dirs) as null:
                    _cold_then_warm(argv, null.mountpoint / "listing", times, "null")
        for state in ("cold", "warm"):
            ice, nat = times[f"icefs {state}"], times[f"native {state}"]
            base, ratio = f"native {nat.best:.2f}", f"{ice.best / nat.best:.2f}x time"
            if "null" in sides:
                null_t = times[f"null {state}"]
                base += f"; null pyfuse3 fs {null_t.best:.2f}"
                ratio += f" (null fs {null_t.best / nat.best:.2f}x)"
            rows.append(
                (
                    f"{name} over {chunks} chunks in {dirs} directories, {state}: s best",
                    f"{ice.best:.2f}",
                    base,
                    ratio,
                    "<= 2x",
                )
            )
        rows.append(
            requests_row(f"{name} cold", counts[f"{name} cold"], "warm", counts[f"{name} warm"])
        )
    rows.append(_direct_list_row(cloud, repeat, counts, chunks))
    return rows


def _cold_then_warm(argv: list[str], root: Path, times: dict[str, Timing], side: str) -> None:
    """Walk *root* with the kernel's caches dropped, then again, into *times* of *side*."""
    drop_caches()
    times[f"{side} cold"].timed(_walk(argv, root))
    times[f"{side} warm"].timed(_walk(argv, root))


def _direct_list_row(cloud: Cloud, repeat: int, counts: dict[str, Counts], chunks: int) -> Row:
    """Icechunk itself opening the repository and the tag and listing ``grid``'s keys
    through the proxy: the requests a cold walk needs first, and what enumerating the
    keys costs without icefs."""

    def direct_list() -> int:
        store = icechunk.Repository.open(cloud.storage("read")).readonly_session(tag="v1").store

        async def keys() -> int:
            return sum([1 async for _ in store.list_prefix("grid/")])

        return asyncio.run(keys())

    listing = Timing("direct list")
    for _ in range(repeat):
        with cloud.counted(counts, "direct list"):
            listing.timed(direct_list)
    return (
        f"  (reference) direct: open the repository and tag, list {chunks} chunk keys: s",
        "",
        f"direct {listing.best:.2f}",
        summary(counts["direct list"]),
        "-",
    )


def _write_direct(repo: icechunk.Repository, data: np.ndarray) -> int:
    session = repo.writable_session("main")
    write_array(session.store, data)
    session.commit("direct")
    return int(data.nbytes)


def _write_mount(main: Path, data: np.ndarray) -> int:
    write_array(LocalStore(main), data)
    (main / ".icefs" / "commit").write_text("through icefs")
    return int(data.nbytes)


def write_rows(
    cloud: Cloud, repeat: int, counts: dict[str, Counts], size_mib: int, commit_chunks: int
) -> list[Row]:
    data = make_data(size_mib)
    direct, mounted = Timing("direct"), Timing("icefs")
    commit_direct, commit_icefs = Timing("direct commit"), Timing("icefs commit")
    small = np.arange(commit_chunks * 256, dtype="<i4")
    for i in range(repeat):
        prefix = f"w-direct-{i}"
        repo = icechunk.Repository.create(cloud.storage(prefix))
        with cloud.counted(counts, "direct write"):
            direct.timed(partial(_write_direct, repo, data))
        session = repo.writable_session("main")
        zarr.open_group(session.store).create_array(
            "small", shape=small.shape, chunks=(256,), dtype="<i4", compressors=None
        )[:] = small
        with cloud.counted(counts, "direct commit"):
            commit_direct.timed(partial(_commit_session, session, commit_chunks))
        cloud.forget(prefix)

        prefix = f"w-icefs-{i}"
        icechunk.Repository.create(cloud.storage(prefix))
        with cloud.mount(prefix) as m:
            main = m.mountpoint / "branches" / "main"
            with cloud.counted(counts, "icefs write"):
                mounted.timed(partial(_write_mount, main, data))
            zarr.open_group(LocalStore(main)).create_array(
                "small", shape=small.shape, chunks=(256,), dtype="<i4", compressors=None
            )[:] = small
            _uploaded(m.mountpoint)  # as the direct side's chunks are before its commit
            with cloud.counted(counts, "icefs commit"):
                commit_icefs.timed(partial(_commit, main, commit_chunks))
        cloud.forget(prefix)
    apart = _writes_apart(cloud, repeat, data)
    return [
        (
            f"write {data.nbytes >> 20} MiB with zarr + commit: MiB/s best / median",
            f"{mounted.mib_s(mounted.best):.0f} / {mounted.mib_s(mounted.median):.0f}",
            f"direct {direct.mib_s(direct.best):.0f} / {direct.mib_s(direct.median):.0f}",
            f"{direct.best / mounted.best:.2f}x throughput",
            ">= 0.8x",
        ),
        requests_row("icefs", counts["icefs write"], "direct", counts["direct write"]),
        *apart,
        (
            f"commit of {commit_chunks} changed 1 KiB chunks: s best / median",
            f"{commit_icefs.best:.2f} / {commit_icefs.median:.2f}",
            f"direct {commit_direct.best:.2f} / {commit_direct.median:.2f}",
            f"{commit_icefs.best / commit_direct.best:.2f}x time",
            "<= 1.2x",
        ),
        requests_row("icefs", counts["icefs commit"], "direct", counts["direct commit"]),
    ]


def _writes_apart(cloud: Cloud, repeat: int, data: np.ndarray) -> list[Row]:
    """The write + commit of both sides again with the S3 server and the proxy on a CPU
    of their own (none on a machine with one CPU): on two CPUs the loopback server
    takes the writers' CPU time, as a cloud's never does."""
    direct, mounted = Timing("direct"), Timing("icefs")
    with server_apart(cloud) as cpus:
        if not cpus:
            return []
        for i in range(repeat):
            prefix = f"w-apart-direct-{i}"
            direct.timed(
                partial(_write_direct, icechunk.Repository.create(cloud.storage(prefix)), data)
            )
            cloud.forget(prefix)
            prefix = f"w-apart-icefs-{i}"
            icechunk.Repository.create(cloud.storage(prefix))
            with cloud.mount(prefix) as m:
                mounted.timed(partial(_write_mount, m.mountpoint / "branches" / "main", data))
            cloud.forget(prefix)
    return [
        (
            "  (floor) the S3 server and proxy apart, on their own CPU "
            f"(the writers on the other {cpus}): write + commit, MiB/s best",
            f"{mounted.mib_s(mounted.best):.0f}",
            f"direct {direct.mib_s(direct.best):.0f}",
            f"{direct.best / mounted.best:.2f}x throughput",
            "-",
        )
    ]


def rss_rows(cloud: Cloud, rss_mib: int) -> list[Row]:
    bound = 256 << 20
    prefix = "rss"
    icechunk.Repository.create(cloud.storage(prefix))
    block = np.zeros(BIG_CHUNK, dtype="f4")
    chunks = max(1, rss_mib // 2)
    with cloud.mount(prefix, "--write-buffer", str(bound)) as m:
        main = m.mountpoint / "branches" / "main"
        arr = zarr.open_group(LocalStore(main), mode="w").create_array(
            "big", shape=(chunks, 512, 1024), chunks=BIG_CHUNK, dtype="f4", compressors=None
        )
        with RssSampler(m.proc.pid) as rss:
            for i in range(chunks):
                arr[i] = block + i
            (main / ".icefs" / "commit").write_text("rss")
    cloud.forget(prefix)
    return [
        (
            f"daemon RSS writing {rss_mib} MiB as 2 MiB zarr chunks + commit (--write-buffer 256M)",
            f"peak {rss.peak >> 20} MiB",
            f"start {rss.start >> 20} MiB",
            f"+{(rss.peak - rss.start) >> 20} MiB",
            "<= bound + 200 MiB",
        )
    ]


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    args = parse_args(
        __doc__,
        "cloud",
        argv,
        delays=("20,50", "20", "request delays to run, ms"),
        size_mib=(1024, 8),
        grid=("10,40,250", "2,10,20", "chunks of grid along each axis"),
        few=("1,20,250", "1,4,25", "chunks of few (the peers' find) along each axis"),
        commit_chunks=(10_000, 200),
        rss_mib=(4096, 16),
        rows=(",".join(GROUPS), ",".join(GROUPS), "row groups to run: " + ", ".join(GROUPS)),
    )
    groups = args.rows.split(",")
    if unknown := set(groups) - set(GROUPS):
        raise SystemExit(f"unknown row groups: {', '.join(sorted(unknown))}")
    grid = tuple(int(n) for n in args.grid.split(","))
    assert len(grid) == 3
    base = Path(args.dir).resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    s3 = start_moto()
    rows: list[Row] = []
    try:
        with Proxy(s3.endpoint, 0) as proxy:
            cloud = Cloud(s3, proxy, base)
            t0 = time.perf_counter()
            build(cloud, args.size_mib, grid, tuple(int(n) for n in args.few.split(",")))
            print(f"dataset ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            for delay in (float(d) for d in args.delays.split(",")):
                proxy.set_delay(delay)
                counts: dict[str, Counts] = {}
                rows.append((f"**{delay:g} ms per request**", "", "", "", ""))
                if "read" in groups:
                    rows += read_rows(cloud, args.repeat, counts)
                if "first-byte" in groups:
                    rows += first_byte_rows(cloud, args.repeat, counts)
                if "walk" in groups:
                    rows += walk_rows(cloud, args.repeat, counts, grid)
                if "cache" in groups:
                    rows += cache_rows(cloud, args.repeat)
                if "peers" in groups:
                    rows += peer_rows(cloud)
                if "write" in groups:
                    rows += write_rows(
                        cloud, args.repeat, counts, args.size_mib, args.commit_chunks
                    )
                if "rss" in groups:
                    rows += rss_rows(cloud, args.rss_mib)
                print(json.dumps({"delay": delay, "counts": counts}), file=sys.stderr)
    finally:
        stop(s3.proc)
    return rows, args.repeat


def main(argv: list[str] | None = None) -> int:
    with steady_memory():
        rows, repeat = collect(argv)
    report(f"icefs on object storage with latency ({repeat} repeats)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
