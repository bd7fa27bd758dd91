"""Scale writes: arrays of many small chunks written with zarr and committed, and the
daemon's memory before, during and after.

    python benchmarks/scalewrite.py [--dir DIR] [--sizes 100000,1000000]
    python benchmarks/scalewrite.py --smoke

For each size N: an int32 array of N chunks of 1 KiB (256 values, uncompressed), all
written by one ``arr[:] = data`` through zarr's LocalStore, then committed:
  (a) direct: into a writable Icechunk session, then ``commit``;
  (b) icefs: into ``branches/main`` of a new mount of a new local repository, then a
      write to ``.icefs/commit``; the daemon's RSS at start, after the writes and
      after the commit, beside its metadata budget (``--metadata-memory``);
  (c) floor: into the null pyfuse3 filesystem (benchmarks/floor.py), which drops what
      is written: the most any pyfuse3 filesystem reaches here;
  (d) Icechunk's own store: the same chunks given to ``store.set`` of a writable
      session, 10 at once as zarr does, with no zarr and no file system (then a
      commit): what storing a chunk costs Icechunk itself;
  (e) native: into a local directory (up to --native-max chunks).
Each phase starts from a clean page cache.  A file system that stores through
Icechunk does both (c)'s and (d)'s work for each chunk: their sum is the floor
printed beside the icefs row.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.storage import LocalStore

from benchmarks.common import Row, drop_caches, parse_args, report
from benchmarks.floor import NullMount
from benchmarks.write import new_repo
from harness.mount import Mount, peak_mib, rss_mib

icechunk.set_logs_filter("error")

#: Values per chunk: 1 KiB of int32.
PER_CHUNK = 256
BUDGET_MIB = 256  # the default --metadata-memory
#: Chunks zarr stores at once (its ``async.concurrency`` default).
ZARR_CONCURRENCY = 10


def write(store: object, chunks: int) -> None:
    data = np.arange(chunks * PER_CHUNK, dtype="i4")
    root = zarr.open_group(store=store, mode="a")
    arr = root.create_array(
        "small", shape=data.shape, chunks=(PER_CHUNK,), dtype="i4", compressors=None
    )
    arr[:] = data


def timed(fn: object) -> float:
    drop_caches()
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def direct(base: Path, chunks: int) -> float:
    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(new_repo(base / "direct")))
    )

    def run() -> None:
        session = repo.writable_session("main")
        write(session.store, chunks)
        session.commit("direct")

    return timed(run)


def icechunk_only(base: Path, chunks: int) -> float:
    """Icechunk's own cost: the chunks given straight to ``store.set``, then a commit."""
    from zarr.core.buffer import default_buffer_prototype

    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(new_repo(base / "icechunk")))
    )
    chunk = default_buffer_prototype().buffer.from_bytes(np.arange(PER_CHUNK, dtype="i4").tobytes())

    async def store_all(store: object) -> None:
        room = asyncio.Semaphore(ZARR_CONCURRENCY)

        async def one(i: int) -> None:
            async with room:
                await store.set(f"small/c/{i}", chunk)  # type: ignore[attr-defined]

        await asyncio.gather(*(one(i) for i in range(chunks)))

    session = repo.writable_session("main")
    zarr.open_group(store=session.store, mode="a").create_array(
        "small", shape=(chunks * PER_CHUNK,), chunks=(PER_CHUNK,), dtype="i4", compressors=None
    )

    def run() -> None:
        asyncio.run(store_all(session.store))
        session.commit("icechunk only")

    took = timed(run)
    shutil.rmtree(base / "icechunk", ignore_errors=True)
    return took


def through_icefs(base: Path, chunks: int, *options: str) -> dict[str, float]:
    repo = new_repo(base / "icefs")
    found: dict[str, float] = {}
    with Mount(
        str(repo), base / "mnt", "--cache-dir", str(base / "cache"), *options, log=base / "mnt.log"
    ) as m:
        main = m.mountpoint / "branches" / "main"
        found["rss start"] = rss_mib(m.proc.pid)
        found["write"] = timed(lambda: write(LocalStore(str(main)), chunks))
        found["rss written"] = rss_mib(m.proc.pid)
        found["commit"] = timed(lambda: (main / ".icefs" / "commit").write_text("many"))
        found["rss committed"] = rss_mib(m.proc.pid)
        time.sleep(5)  # FORGETs from the kernel arrive as it drops its entries
        found["rss later"] = rss_mib(m.proc.pid)
        found["rss peak"] = peak_mib(m.proc.pid)
    return found


def floor(base: Path, chunks: int) -> float:
    with NullMount(base / "null") as null:
        return timed(lambda: write(LocalStore(str(null.mountpoint)), chunks))


def native(base: Path, chunks: int) -> float:
    path = base / "native"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    took = timed(lambda: write(LocalStore(str(path)), chunks))
    shutil.rmtree(path, ignore_errors=True)
    return took


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    args = parse_args(
        __doc__,
        "scalewrite",
        argv,
        sizes=("100000", "2000", "array sizes, in chunks"),
        native_max=(100_000, 2000, "largest size also written to a native directory"),
    )
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for chunks in (int(s) for s in args.sizes.split(",")):
        got = through_icefs(base, chunks)
        sides = {
            "direct": direct(base, chunks),
            "null fs": floor(base, chunks),
            "Icechunk alone": icechunk_only(base, chunks),
        }
        if chunks <= args.native_max:
            sides["native"] = native(base, chunks)
        total = got["write"] + got["commit"]
        least = sides["null fs"] + sides["Icechunk alone"]
        per = 1e6 / chunks
        rows.append(
            (
                f"write {chunks:,} chunks of 1 KiB with zarr + commit: us per chunk",
                f"{total * per:.0f} (write {got['write']:.1f} s, commit {got['commit']:.1f} s)",
                ", ".join(f"{k} {v * per:.0f}" for k, v in sides.items())
                + f"; floor (null fs + Icechunk alone) {least * per:.0f}",
                f"{total / sides['null fs']:.2f}x null fs, {total / least:.2f}x floor, "
                f"{total / sides['direct']:.2f}x direct",
                "within 10% of the null fs",
            )
        )
        rows.append(
            (
                f"daemon RSS writing {chunks:,} chunks: start / written / committed / +5 s (peak)",
                " / ".join(
                    f"{got[k]:.0f}"
                    for k in ("rss start", "rss written", "rss committed", "rss later")
                )
                + f" MiB ({got['rss peak']:.0f})",
                f"budget {BUDGET_MIB} MiB",
                f"+{got['rss later'] - got['rss start']:.0f} MiB after the commit",
                "back within the budget of the start",
            )
        )
    shutil.rmtree(base / "icefs", ignore_errors=True)
    shutil.rmtree(base / "direct", ignore_errors=True)
    return rows, args.repeat


def main(argv: list[str] | None = None) -> int:
    rows, _ = collect(argv)
    report("Scale: many small chunks written", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
