"""Access-pattern benchmark: concurrent readers, metadata walks, small random reads, fio.

    python benchmarks/access.py [--dir DIR] [--many 100000] [--repeat 3]
    python benchmarks/access.py --smoke

Builds (once, under DIR) a local repository tagged ``v1`` and a native Zarr
directory holding the same arrays:

* ``big``:   float32, 2 MiB chunks, --big-mib in total (concurrent readers, fio);
* ``many``:  uint8, --many chunks of 16 bytes (``find`` and ``ls -lR``);
* ``small``: uint8, --small chunks of 1 KiB (random reads);
* ``tree``:  uint8, a 3-D grid of --tree chunks of 16 bytes: hundreds of chunk
  directories, as real arrays have (``find`` cold and warm, and its floor).

Rows: 8 concurrent readers vs 1 through the mount (cold daemon each time);
``find`` / ``ls -lR`` of ``many`` through the mount vs the native directory vs
a direct ``store.list()``; --reads random 1 KiB chunk reads through the mount
(open, read, close) vs direct Icechunk gets; and, when ``fio`` is installed, a
sequential read of the big chunk files through the mount and natively.

Two floor rows run the same ``find`` and reads on floor.py's null pyfuse3
filesystem (--many ready-made 1 KiB files): what any pyfuse3 filesystem pays.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import LocalStore

from benchmarks.common import (
    CpuMeter,
    Row,
    drop_caches,
    measure,
    parse_args,
    report,
    steady_memory,
)
from benchmarks.floor import NullMount
from harness.mount import Mount

icechunk.set_logs_filter("error")


TREE_CHUNK = (1, 1, 16)


def build(base: Path, big_mib: int, many: int, small: int, tree: tuple[int, ...]) -> None:
    marker = base / f"built-{big_mib}-{many}-{small}-{'x'.join(map(str, tree))}"
    if marker.exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    big = rng.random((max(1, big_mib // 2), 512, 1024), dtype="f4")
    many_data = rng.integers(0, 255, many * 16, dtype="u1")
    small_data = rng.integers(0, 255, small * 1024, dtype="u1")
    tree_shape = tuple(n * c for n, c in zip(tree, TREE_CHUNK, strict=True))
    tree_data = rng.integers(0, 255, tree_shape, dtype="u1")
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(base / "repo")))
    session = repo.writable_session("main")
    for store in (session.store, LocalStore(base / "native")):
        root = zarr.group(store=store)
        for name, data, chunks in (
            ("big", big, (1, 512, 1024)),
            ("many", many_data, (16,)),
            ("small", small_data, (1024,)),
            ("tree", tree_data, TREE_CHUNK),
        ):
            root.create_array(
                name, shape=data.shape, chunks=chunks, dtype=data.dtype, compressors=None
            )[:] = data
    repo.create_tag("v1", session.commit("benchmark data"))
    marker.touch()


def chunk_files(root: Path, name: str) -> list[Path]:
    meta = json.loads((root / name / "zarr.json").read_text())
    shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    grid = [-(-s // c) for s, c in zip(shape, chunks, strict=True)]
    return [root / name / "c" / "/".join(map(str, idx)) for idx in np.ndindex(*grid)]


def read_files(files: list[Path], readers: int) -> int:
    total = [0] * readers

    def work(k: int) -> None:
        for path in files[k::readers]:
            with open(path, "rb", buffering=0) as f:
                while block := f.read(1 << 20):
                    total[k] += len(block)

    with concurrent.futures.ThreadPoolExecutor(readers) as pool:  # a failed read fails it
        for done in [pool.submit(work, k) for k in range(readers)]:
            done.result()
    return sum(total)


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _timed_int(argv: list[str]) -> int:
    """`timed`, as the whole seconds `measure` takes for bytes (only the time counts)."""
    return int(timed(argv))


def fio_row(directory: Path) -> float | None:
    """Sequential 1 MiB reads of every file below *directory* with fio; MiB/s (None: no fio)."""
    fio = shutil.which("fio")
    if fio is None:
        return None
    result = subprocess.run(
        [
            fio,
            "--name=seqread",
            "--rw=read",
            "--bs=1M",
            "--ioengine=psync",
            "--readonly",
            f"--opendir={directory}",
            "--output-format=json",
            "--invalidate=1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = result.stdout[result.stdout.index("{") :]  # fio may print a line before it
    return float(json.loads(report)["jobs"][0]["read"]["bw"]) / 1024


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    args = parse_args(
        __doc__,
        "access",
        argv,
        big_mib=(512, 16),
        many=(100_000, 500),
        small=(20_000, 200),
        reads=(10_000, 200),
        readers=(8, 8),
        tree=("4,50,100", "2,5,20", "chunks of tree along each axis"),
    )
    if args.smoke:
        args.dir = f"{args.dir}-smoke"
    base = Path(args.dir).resolve()
    tree_grid = tuple(int(n) for n in args.tree.split(","))
    build(base, args.big_mib, args.many, args.small, tree_grid)
    repo_path, mnt, native = str(base / "repo"), base / "mnt", base / "native"
    rows: list[Row] = []

    # -- concurrent readers (cold daemon and page cache each time) ---------------------------
    # Each run also notes how many CPUs the machine kept busy: the ceiling of the ratio.
    per: dict[int, list[tuple[float, float]]] = {1: [], args.readers: []}
    nbytes = 0
    for _ in range(args.repeat):
        for readers in per:
            drop_caches()
            with Mount(repo_path, mnt):
                files = chunk_files(mnt / "tags" / "v1", "big")
                meter, started = CpuMeter(), time.perf_counter()
                nbytes = read_files(files, readers)
                per[readers].append((time.perf_counter() - started, meter.busy()))
    (one, one_cpus), (many_r, many_cpus) = min(per[1]), min(per[args.readers])
    rows.append(
        (
            f"{args.readers} concurrent readers vs 1, cold ({nbytes >> 20} MiB of 2 MiB "
            f"chunk files): MiB/s (CPUs busy of {os.cpu_count()})",
            f"{nbytes / 2**20 / many_r:.0f} ({many_cpus:.1f})",
            f"1 reader {nbytes / 2**20 / one:.0f} ({one_cpus:.1f})",
            f"{one / many_r:.2f}x throughput",
            ">= 3x",
        )
    )

    # -- the floor: the same walk and reads on a null pyfuse3 filesystem (floor.py) ----------
    # It answers from ready-made entries, so what it takes is FUSE's and pyfuse3's own cost.
    with NullMount(base / "null", entries=args.many) as null:
        listing = null.mountpoint / "listing"
        null_find = measure(
            "null find", lambda: int(timed(["find", str(listing)])), args.repeat, drop_caches
        )
        null_files = [
            listing / str(random.Random(i).randrange(args.many)) for i in range(args.reads)
        ]
        null_reads: list[float] = []
        for _ in range(args.repeat):
            drop_caches()
            started = time.perf_counter()
            for path in null_files:
                path.read_bytes()
            null_reads.append(time.perf_counter() - started)

    # -- metadata walks ------------------------------------------------------------------------
    with Mount(repo_path, mnt):
        tree = mnt / "tags" / "v1" / "many"
        for tool, argv in (("find", ["find"]), ("ls -lR", ["ls", "-lR"])):
            walk = measure(
                f"mount {tool}",
                functools.partial(_timed_int, [*argv, str(tree)]),
                args.repeat,
                drop_caches,
            )
            nat = measure(
                f"native {tool}",
                functools.partial(_timed_int, [*argv, str(native / "many")]),
                args.repeat,
                drop_caches,
            )
            rows.append(
                (
                    f"`{tool}` over {args.many} chunks, cold: s min / median",
                    f"{walk.best:.3f} / {walk.median:.3f}",
                    f"native {nat.best:.3f} / {nat.median:.3f}",
                    f"{walk.best / nat.best:.2f}x time",
                    "<= 2x",
                )
            )
            if tool == "find":
                rows.append(
                    (
                        f"  (floor) `find` over {args.many} files of a null pyfuse3 fs, cold: s",
                        f"{null_find.best:.3f}",
                        f"native {nat.best:.3f}",
                        f"{null_find.best / nat.best:.2f}x time",
                        "-",
                    )
                )
    with Mount(repo_path, mnt, "-o", "noxattr"):
        walk = measure(
            "mount ls -lR noxattr",
            lambda: int(timed(["ls", "-lR", str(tree)])),
            args.repeat,
            drop_caches,
        )
        rows.append(
            (
                f"`ls -lR` over {args.many} chunks with `-o noxattr`, cold: s min / median",
                f"{walk.best:.3f} / {walk.median:.3f}",
                f"native {nat.best:.3f}",
                f"{walk.best / nat.best:.2f}x time",
                "<= 2x",
            )
        )

    rows += tree_rows(base, tree_grid, args.repeat)

    def direct_list() -> int:
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(repo_path))
        store = repo.readonly_session(tag="v1").store
        keys = store.list_prefix("many/")  # also a plain iterator, which its stub omits
        return sum(1 for _ in keys)  # type: ignore[attr-defined, misc]

    listed = measure("direct list", direct_list, args.repeat)
    rows.append(
        (
            f"  (reference) direct store.list_prefix of {args.many} chunks: s",
            "",
            f"direct {listed.best:.3f}",
            "-",
            "-",
        )
    )

    # -- small random reads ---------------------------------------------------------------------
    keys = [f"small/c/{random.Random(i).randrange(args.small)}" for i in range(args.reads)]

    def direct_gets() -> int:
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(repo_path))
        store = repo.readonly_session(tag="v1").store
        proto = default_buffer_prototype()

        async def run() -> int:
            n = 0
            for key in keys:
                buf = await store.get(key, proto)
                n += len(buf.to_bytes()) if buf is not None else 0
            return n

        return asyncio.run(run())

    gets = measure("direct gets", direct_gets, args.repeat, drop_caches)
    mount_reads: list[float] = []
    for _ in range(args.repeat):
        drop_caches()
        with Mount(repo_path, mnt):
            root = mnt / "tags" / "v1"
            started = time.perf_counter()
            for key in keys:
                (root / key).read_bytes()
            mount_reads.append(time.perf_counter() - started)
    per_read, per_get = min(mount_reads) / args.reads, gets.best / args.reads
    rows.append(
        (
            f"{args.reads} random 1 KiB chunk reads, cold: us per read",
            f"{per_read * 1e6:.0f}",
            f"direct get {per_get * 1e6:.0f}",
            f"{per_read / per_get:.2f}x time",
            "<= 1.5x",
        )
    )
    per_null = min(null_reads) / args.reads
    rows.append(
        (
            "  (floor) the same reads of a null pyfuse3 fs's files, plus the direct get: "
            "us per read",
            f"{(per_null + per_get) * 1e6:.0f} (null fs {per_null * 1e6:.0f})",
            f"direct get {per_get * 1e6:.0f}",
            f"{(per_null + per_get) / per_get:.2f}x time",
            "-",
        )
    )

    # -- fio -------------------------------------------------------------------------------------
    with Mount(repo_path, mnt):
        drop_caches()
        through = fio_row(mnt / "tags" / "v1" / "big" / "c")
    drop_caches()
    natively = fio_row(native / "big" / "c")
    if through is None or natively is None:
        rows.append(
            (
                "fio sequential read (1 MiB blocks) of the big chunk files",
                "fio not installed",
                "",
                "-",
                "-",
            )
        )
    else:
        rows.append(
            (
                "fio sequential read (1 MiB blocks, psync) of the big chunk files, cold: MiB/s",
                f"{through:.0f}",
                f"native {natively:.0f}",
                f"{through / natively:.2f}x throughput",
                "-",
            )
        )
    return rows, args.repeat


def tree_rows(base: Path, grid: tuple[int, ...], repeat: int) -> list[Row]:
    """``find`` over ``tree`` (many chunk directories), cold and warm: through the mount,
    a null pyfuse3 fs with as many directories of as many files, and natively; and what
    each directory costs us beyond the null fs."""
    chunks, dirs = int(np.prod(grid)), int(np.prod(grid[:-1]))
    find: dict[str, tuple[float, float]] = {}
    with NullMount(base / "null", entries=chunks, dirs=dirs) as null_fs:
        find["null"] = _cold_warm(null_fs.mountpoint / "listing", repeat)
    with Mount(str(base / "repo"), base / "mnt"):
        find["icefs"] = _cold_warm(base / "mnt" / "tags" / "v1" / "tree", repeat)
    find["native"] = _cold_warm(base / "native" / "tree", repeat)
    rows: list[Row] = []
    for state in (0, 1):
        ice, null, nat = (find[k][state] for k in ("icefs", "null", "native"))
        rows.append(
            (
                f"`find` over {chunks} chunks in {dirs} directories, "
                f"{('cold', 'warm')[state]}: s best",
                f"{ice:.3f}",
                f"native {nat:.3f}; null pyfuse3 fs {null:.3f}",
                f"{ice / nat:.2f}x time (null fs {null / nat:.2f}x)",
                "<= 2x",
            )
        )
        rows.append(
            (
                f"  per directory, {('cold', 'warm')[state]}: us beyond the null fs / "
                "the null fs beyond native",
                f"{(ice - null) / dirs * 1e6:.0f}",
                f"{(null - nat) / dirs * 1e6:.0f}",
                "-",
                "-",
            )
        )
    return rows


def _cold_warm(root: Path, repeat: int) -> tuple[float, float]:
    """The best times of ``find`` over *root*: caches dropped first, and not."""
    cold = measure("find cold", lambda: int(timed(["find", str(root)])), repeat, drop_caches)
    warm = measure("find warm", lambda: int(timed(["find", str(root)])), repeat)
    return cold.best, warm.best


def main(argv: list[str] | None = None) -> int:
    with steady_memory():
        rows, repeat = collect(argv)
    report(f"icefs access benchmark ({repeat} repeats)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
