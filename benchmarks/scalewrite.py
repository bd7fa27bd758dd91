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
  (d) native: into a local directory.
Each phase starts from a clean page cache.
"""

from __future__ import annotations

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
from benchmarks.scale import rss_mib
from harness.mount import Mount

icechunk.set_logs_filter("error")

#: Values per chunk: 1 KiB of int32.
PER_CHUNK = 256
BUDGET_MIB = 256  # the default --metadata-memory


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


def new_repo(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    return path


def direct(base: Path, chunks: int) -> float:
    repo = icechunk.Repository.open(
        icechunk.local_filesystem_storage(str(new_repo(base / "direct")))
    )

    def run() -> None:
        session = repo.writable_session("main")
        write(session.store, chunks)
        session.commit("direct")

    return timed(run)


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
        __doc__, "scalewrite", argv, sizes=("100000", "2000", "array sizes, in chunks")
    )
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for chunks in (int(s) for s in args.sizes.split(",")):
        got = through_icefs(base, chunks)
        sides = {"direct": direct(base, chunks), "null fs": floor(base, chunks)}
        sides["native"] = native(base, chunks)
        total = got["write"] + got["commit"]
        per = 1e6 / chunks
        rows.append(
            (
                f"write {chunks:,} chunks of 1 KiB with zarr + commit: us per chunk",
                f"{total * per:.0f} (write {got['write']:.1f} s, commit {got['commit']:.1f} s)",
                ", ".join(f"{k} {v * per:.0f}" for k, v in sides.items()),
                f"{total / sides['null fs']:.2f}x null fs, {total / sides['direct']:.2f}x direct",
                "within 10% of the null fs",
            )
        )
        rows.append(
            (
                f"daemon RSS writing {chunks:,} chunks: start / written / committed / +5 s",
                " / ".join(
                    f"{got[k]:.0f}"
                    for k in ("rss start", "rss written", "rss committed", "rss later")
                )
                + " MiB",
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
