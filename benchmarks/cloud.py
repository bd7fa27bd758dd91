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

Rows: cold read of ``big`` with zarr (mount vs Icechunk + zarr; the floor: that
direct read while a null pyfuse3 filesystem serves as many bytes); the same
through one-file-at-a-time readers (``cp -r``, fio's sequential psync reads;
the floor: ``cp -r`` of a null pyfuse3 filesystem beside the direct read);
time to the first byte of a chunk whose array is known (mount vs one get);
``find`` and ``ls -lR`` of ``grid``, cold and warm (mount vs native; the floors:
a null pyfuse3 filesystem with as many files in as many directories; Icechunk
listing the keys directly); zarr write of --size-mib + commit; a commit of
--commit-chunks changed chunks (their background stores ended first, as the
direct side's are); the daemon's RSS while writing --rss-mib through the mount.
``--rows`` runs some of these groups only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import LocalStore

from benchmarks.common import (
    Row,
    Timing,
    at_once,
    drop_caches,
    parse_args,
    report,
    steady_memory,
)
from benchmarks.floor import FILE_SIZE, NullMount, write_files
from benchmarks.proxy import Proxy, summary
from benchmarks.read import BIG_CHUNK, floor_reads, read_one
from benchmarks.write import RssSampler, make_data, write_array
from tests.helpers import Mount
from tests.servers import S3Server, start_moto, stop

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

icechunk.set_logs_filter("error")

GRID_CHUNK = (1, 1, 16)
#: The groups of rows, in the order they run (``--rows``).
GROUPS = ("read", "first-byte", "walk", "write", "rss")
Counts = dict[str, dict[str, int]]


class Cloud:
    """The S3 server, the proxy in front of it, and a repository reached through both."""

    def __init__(self, s3: S3Server, proxy: Proxy, base: Path) -> None:
        self.s3, self.proxy, self.base = s3, proxy, base
        self.bucket = s3.create_bucket(f"cloud-{uuid.uuid4().hex[:8]}")
        self.config = base / "s3.toml"
        self.config.write_text(
            f'region = "us-east-1"\nendpoint_url = "{proxy.endpoint}"\n'
            "allow_http = true\nforce_path_style = true\n"
            f'access_key_id = "{s3.key_id}"\nsecret_access_key = "{s3.secret}"\n'
        )
        self.config.chmod(0o600)

    def storage(self, prefix: str) -> icechunk.Storage:
        return icechunk.s3_storage(
            bucket=self.bucket,
            prefix=prefix,
            region="us-east-1",
            endpoint_url=self.proxy.endpoint,
            allow_http=True,
            force_path_style=True,
            access_key_id=self.s3.key_id,
            secret_access_key=self.s3.secret,
        )

    def mount(self, prefix: str, *args: str) -> Mount:
        cache = self.base / f"cache-{uuid.uuid4().hex[:6]}"
        return Mount(
            f"s3://{self.bucket}/{prefix}",
            self.base / "mnt",
            "--config",
            str(self.config),
            "--cache-dir",
            str(cache),
            *args,
        )

    def forget(self, prefix: str) -> None:
        """Delete every object under *prefix* (the server keeps them in memory)."""
        client = self.s3.client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix + "/"
        )
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    @contextlib.contextmanager
    def counted(self, into: dict[str, Counts], side: str) -> Iterator[None]:
        """Count the requests made inside the block into *into[side]* (the last repeat's)."""
        self.proxy.reset()
        yield
        into[side] = self.proxy.counts()


def build(cloud: Cloud, size_mib: int, grid: tuple[int, int, int]) -> None:
    """The read repository (tag ``v1``) and the native copy of ``grid``, at zero delay."""
    repo = icechunk.Repository.create(cloud.storage("read"))
    session = repo.writable_session("main")
    root = zarr.group(store=session.store)
    big = root.create_array(
        "big",
        shape=(max(1, size_mib // 2), 512, 1024),
        chunks=BIG_CHUNK,
        dtype="f4",
        compressors=None,
    )
    big[:] = np.random.default_rng(0).random(big.shape, dtype="f4")
    shape = tuple(n * c for n, c in zip(grid, GRID_CHUNK, strict=True))
    values = np.random.default_rng(1).integers(0, 255, shape, dtype="u1")
    for store in (session.store, LocalStore(cloud.base / "native")):
        g = zarr.open_group(store=store).create_array(
            "grid", shape=shape, chunks=GRID_CHUNK, dtype="u1", compressors=None
        )
        g[:] = values
    repo.create_tag("v1", session.commit("cloud benchmark data"))


def _walk(argv: list[str], root: Path) -> Callable[[], int]:
    def run() -> int:
        out = subprocess.run([*argv, str(root)], capture_output=True, check=True).stdout
        return out.count(b"\n")

    return run


def _copy(source: Path, target: Path) -> int:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())


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


def _fio(directory: Path) -> int:
    """Sequential 1 MiB psync reads of every file below *directory*, one file after the
    other in the order a directory walk meets them (fio's opendir); bytes read."""
    subprocess.run(
        [
            "fio",
            "--name=seq",
            "--rw=read",
            "--bs=1M",
            "--ioengine=psync",
            "--readonly",
            "--file_service_type=sequential",
            f"--opendir={directory}",
            "--output-format=json",
        ],
        check=True,
        capture_output=True,
    )
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def read_rows(cloud: Cloud, repeat: int, counts: dict[str, Counts]) -> list[Row]:
    tag = lambda m: m.mountpoint / "tags" / "v1"  # noqa: E731
    direct, mounted, cp, fio = (Timing(n) for n in ("direct", "icefs", "cp", "fio"))

    def direct_read() -> int:
        repo = icechunk.Repository.open(cloud.storage("read"))
        return read_one(repo.readonly_session(tag="v1").store, "big")

    for _ in range(repeat):
        with cloud.counted(counts, "direct read"):
            direct.timed(direct_read)
        with cloud.mount("read") as m, cloud.counted(counts, "icefs read"):
            mounted.timed(lambda: read_one(LocalStore(tag(m), read_only=True), "big"))
        with (
            cloud.mount("read") as m,
            tempfile.TemporaryDirectory(dir="/dev/shm") as out,
            cloud.counted(counts, "cp -r"),
        ):
            cp.timed(partial(_copy, tag(m) / "big", Path(out)))
        with cloud.mount("read") as m, cloud.counted(counts, "fio"):
            fio.timed(lambda: _fio(tag(m) / "big" / "c"))
    files = direct.nbytes // FILE_SIZE
    both, _ = floor_reads(cloud.base, direct_read, files, repeat)
    one = _one_reader_floor(cloud.base, direct_read, files, repeat)
    size = f"{direct.nbytes >> 20} MiB, 2 MiB chunks"
    rows: list[Row] = [
        (
            f"cold read {size}, zarr: MiB/s best / median",
            f"{mounted.mib_s(mounted.best):.0f} / {mounted.mib_s(mounted.median):.0f}",
            f"direct {direct.mib_s(direct.best):.0f} / {direct.mib_s(direct.median):.0f}",
            f"{direct.best / mounted.best:.2f}x throughput",
            ">= 0.9x",
        ),
        _requests("icefs", counts["icefs read"], "direct", counts["direct read"]),
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
    for t, name in ((cp, "cp -r"), (fio, "fio psync 1 MiB, one file at a time")):
        rows.append(
            (
                f"cold {name} of big: MiB/s best / median",
                f"{t.mib_s(t.best):.0f} / {t.mib_s(t.median):.0f}",
                f"direct zarr {direct.mib_s(direct.best):.0f}",
                f"{direct.best / t.best:.2f}x throughput",
                ">= 0.8x",
            )
        )
    rows.append(_requests("cp -r", counts["cp -r"], "fio", counts["fio"]))
    rows.append(
        (
            "  (floor) one reader: cp -r of as many bytes from a null pyfuse3 fs while the "
            "direct read runs: MiB/s best",
            "",
            f"both done at {one.mib_s(one.best):.0f}",
            f"{direct.best / one.best:.2f}x of direct; cp -r {one.best / cp.best:.2f}x, "
            f"fio {one.best / fio.best:.2f}x of it",
            "-",
        )
    )
    return rows


def _one_reader_floor(base: Path, direct: Callable[[], int], files: int, repeat: int) -> Timing:
    """The floor of a one-file-at-a-time reader: ``cp -r`` of *files* 2 MiB files from
    floor.py's null filesystem (FUSE transport, nothing fetched) in another process
    while this one runs *direct*, timed until both are done."""
    timing = Timing("floor one reader")
    with NullMount(base / "null") as null:
        write_files(null.mountpoint, files)
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(dir="/dev/shm") as out:
                copy = (
                    "import subprocess, sys; print('ready', flush=True); sys.stdin.readline(); "
                    f"subprocess.run(['cp', '-r', {str(null.mountpoint / 'data')!r}, {out!r}], "
                    "check=True)"
                )
                timing.timed(at_once([sys.executable, "-c", copy], direct, drop_caches))
    return timing


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

    asyncio.run(get("big/c/0/0/0"))  # the manifest, once
    # Backwards, so that no read follows another the way a scan does: read-ahead would
    # have the chunk in hand before it is asked for.
    last = zarr.open_array(store, path="big", mode="r").shape[0] - 1
    step = max(1, last // n)
    rows_read = [last - k * step for k in range(n) if last - k * step > 0]
    with cloud.counted(counts, "direct get"):
        for i in rows_read:
            direct.timed(lambda i=i: asyncio.run(get(f"big/c/{i}/0/0")))
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
        _requests("icefs", counts["icefs head"], "direct", counts["direct get"]),
    ]


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
            _requests(f"{name} cold", counts[f"{name} cold"], "warm", counts[f"{name} warm"])
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

            def direct_write(repo: icechunk.Repository = repo) -> int:
                session = repo.writable_session("main")
                write_array(session.store, data)
                session.commit("direct")
                return int(data.nbytes)

            direct.timed(direct_write)
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

            def icefs_write(main: Path = main) -> int:
                write_array(LocalStore(main), data)
                (main / ".icefs" / "commit").write_text("through icefs")
                return int(data.nbytes)

            with cloud.counted(counts, "icefs write"):
                mounted.timed(icefs_write)
            zarr.open_group(LocalStore(main)).create_array(
                "small", shape=small.shape, chunks=(256,), dtype="<i4", compressors=None
            )[:] = small
            _uploaded(m.mountpoint)  # as the direct side's chunks are before its commit
            with cloud.counted(counts, "icefs commit"):
                commit_icefs.timed(partial(_commit, main, commit_chunks))
        cloud.forget(prefix)
    return [
        (
            f"write {data.nbytes >> 20} MiB with zarr + commit: MiB/s best / median",
            f"{mounted.mib_s(mounted.best):.0f} / {mounted.mib_s(mounted.median):.0f}",
            f"direct {direct.mib_s(direct.best):.0f} / {direct.mib_s(direct.median):.0f}",
            f"{direct.best / mounted.best:.2f}x throughput",
            ">= 0.8x",
        ),
        _requests("icefs", counts["icefs write"], "direct", counts["direct write"]),
        (
            f"commit of {commit_chunks} changed 1 KiB chunks: s best / median",
            f"{commit_icefs.best:.2f} / {commit_icefs.median:.2f}",
            f"direct {commit_direct.best:.2f} / {commit_direct.median:.2f}",
            f"{commit_icefs.best / commit_direct.best:.2f}x time",
            "<= 1.2x",
        ),
        _requests("icefs", counts["icefs commit"], "direct", counts["direct commit"]),
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


def _requests(a: str, ca: Counts, b: str, cb: Counts) -> Row:
    return ("  requests (last repeat)", f"{a}: {summary(ca)}", f"{b}: {summary(cb)}", "", "-")


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    args = parse_args(
        __doc__,
        "cloud",
        argv,
        delays=("20,50", "20", "request delays to run, ms"),
        size_mib=(1024, 8),
        grid=("10,40,250", "2,10,20", "chunks of grid along each axis"),
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
            build(cloud, args.size_mib, grid)  # type: ignore[arg-type]
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
                    rows += walk_rows(cloud, args.repeat, counts, grid)  # type: ignore[arg-type]
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
