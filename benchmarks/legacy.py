"""The Zarr v2 views against the v3 tree, with the same reader, in one run.

``python -m benchmarks.legacy [--size-mib N] [--chunks N] [--repeat N] [--smoke]``

* read: zarr 3 reads one zstd-compressed float32 array (2 MiB chunks) whole,
  cold (a fresh mount each time, page cache dropped when root), through
  ``tags/v1/`` and through ``zarr2/tags/v1/`` (the same chunk bytes; zarr 3
  reads v2 too), and through ``zarr2-decoded/tags/v1/`` (the daemon decodes,
  zarr reads uncompressed chunks).
* list: ``find`` over an array of --chunks chunks in a 2-D grid (hundreds of
  chunk directories), cold, through the v3 tree and the v2 view.

Each pair alternates which side goes first.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore

from benchmarks.common import Row, Timing, drop_caches, parse_args, report
from benchmarks.read import read_one
from harness.mount import Mount

icechunk.set_logs_filter("error")

CHUNK_ITEMS = 1 << 19  # float32: 2 MiB
#: chunks per row of the listing's grid: the chunk directories hold this many files
ROW = 100


def build(base: Path, size_mib: int, chunks: int) -> None:
    """Build (or reuse) the repository: array `t` to read, array `many` to list."""
    marker = base / f"built-{size_mib}-{chunks}"
    if marker.exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(base / "repo")))
    session = repo.writable_session("main")
    root = zarr.group(store=session.store)
    items = max(1, size_mib // 2) * CHUNK_ITEMS
    t = root.create_array(
        "t", shape=(items,), chunks=(CHUNK_ITEMS,), dtype="<f4", compressors=ZstdCodec(level=1)
    )
    rng = np.random.default_rng(0)
    for start in range(0, items, CHUNK_ITEMS):  # smooth data: zstd halves it
        t[start : start + CHUNK_ITEMS] = np.cumsum(rng.standard_normal(CHUNK_ITEMS)).astype("<f4")
    rows = max(1, chunks // ROW)
    many = root.create_array("many", shape=(rows, ROW), chunks=(1, 1), dtype="u1", compressors=None)
    many[:] = 1
    repo.create_tag("v1", session.commit("legacy benchmark data"))
    marker.touch()


def _cold_read(mnt: Path, view: str) -> int:
    return read_one(LocalStore(mnt / view / "tags" / "v1", read_only=True), "t")


def _find(mnt: Path, view: str) -> int:
    out = subprocess.run(
        ["find", str(mnt / view / "tags" / "v1" / "many")],
        capture_output=True,
        check=True,
        timeout=3600,
    ).stdout
    return out.count(b"\n")


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    """Run the legacy-view rows; return them and the number of repeats."""
    args = parse_args(__doc__, "legacy", argv, size_mib=(512, 8), chunks=(100_000, 2_000))
    if args.smoke:
        args.dir = f"{args.dir}-smoke"
    base = Path(args.dir).resolve()
    build(base, args.size_mib, args.chunks)
    views = {"v3": "", "v2": "zarr2", "decoded": "zarr2-decoded"}
    reads = {name: Timing(f"read {name}") for name in views}
    finds = {name: Timing(f"find {name}") for name in ("v3", "v2")}
    for i in range(args.repeat):
        for name in list(views)[i % 3 :] + list(views)[: i % 3]:
            drop_caches()
            with Mount(str(base / "repo"), base / "mnt"):
                reads[name].timed(functools.partial(_cold_read, base / "mnt", views[name]))
        for name in ("v3", "v2")[:: 1 if i % 2 == 0 else -1]:
            with Mount(str(base / "repo"), base / "mnt"):
                finds[name].timed(functools.partial(_find, base / "mnt", views[name]))
    v3, v2, decoded = reads["v3"], reads["v2"], reads["decoded"]
    mib = v3.nbytes >> 20
    rows: list[Row] = [
        (
            f"cold zarr read of {mib} MiB (zstd, 2 MiB chunks) through zarr2/ vs the v3 tree, "
            "same reader (zarr 3): MiB/s best / median",
            f"{v2.mib_s(v2.best):.0f} / {v2.mib_s(v2.median):.0f}",
            f"v3 tree {v3.mib_s(v3.best):.0f} / {v3.mib_s(v3.median):.0f}",
            f"{v2.best / v3.best:.2f}x time",
            "<= 1.1x",
        ),
        (
            "  the same through zarr2-decoded/ (the daemon decodes): MiB/s best / median",
            f"{decoded.mib_s(decoded.best):.0f} / {decoded.mib_s(decoded.median):.0f}",
            f"zarr2/ {v2.mib_s(v2.best):.0f} / {v2.mib_s(v2.median):.0f}",
            f"{decoded.best / v2.best:.2f}x time",
            "-",
        ),
        (
            f"cold `find` over {finds['v3'].nbytes} entries ({args.chunks} chunks in "
            f"{args.chunks // ROW} directories) of zarr2/ vs the v3 tree: s best / median",
            f"{finds['v2'].best:.2f} / {finds['v2'].median:.2f}",
            f"v3 tree {finds['v3'].best:.2f} / {finds['v3'].median:.2f}",
            f"{finds['v2'].best / finds['v3'].best:.2f}x time",
            "<= 1.2x",
        ),
    ]
    return rows, args.repeat


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    rows, repeat = collect(argv)
    report(f"icefs Zarr v2 views ({repeat} repeats; {time.perf_counter() - started:.0f} s)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
