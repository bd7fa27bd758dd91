"""Scale: arrays of 100k to 16M chunks, listed, stat'ed and walked, with the daemon's memory.

    python benchmarks/scale.py [--dir DIR] [--sizes 100000,1000000,4000000,16000000]
                               [--native-array 1000000] [--history 100000]
    python benchmarks/scale.py --smoke

Each array is made of virtual references (`build_virtual_grid`: one 4 KiB source file,
millions in seconds), chunk grid 1 x 1, shape (directories, chunks per directory),
tagged ``v1`` in its own local repository kept in --dir. For each size, on a new
mount: ``ls`` of one chunk directory (it builds the array's chunk index), ``stat`` of
one chunk on another new mount (index built by that lookup), ``find`` cold (the
mount's first walk) and warm, and the daemon's RSS after each step. Beside the
icefs rows, up to --native-max chunks: the same layout as a native directory of
empty files and on the null pyfuse3 filesystem (benchmarks/floor.py), same walks.

The same steps run on one array of --native-array real chunks (1 KiB each, same
layout), written once with zarr into a local repository kept in --dir: what a
repository that holds its chunks looks like (its manifests carry no locations).
Last, a repository whose ``main`` has --history snapshots (kept too): ``ls`` of
``snapshots/``, a read of ``.icefs/log`` (its first page) and the daemon's memory.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, drop_caches, parse_args, report
from benchmarks.floor import NullMount
from harness.mount import Mount, rss_mib
from icefs.store.sample import build_long_history, build_virtual_grid

if TYPE_CHECKING:
    from collections.abc import Callable

#: Values (int32) in one chunk of the native array: 1 KiB.
NATIVE_CHUNK = 256


def layout(chunks: int) -> tuple[int, int]:
    """(directories, chunks per directory) of an array of about *chunks* chunks."""
    dirs = max(1, round(math.sqrt(chunks)))
    return dirs, -(-chunks // dirs)


def kept(path: Path, make: Callable[[Path], object]) -> Path:
    """*path*, made by ``make(path)`` unless a run before finished making it (its
    ``done`` marker); a half-made one is removed first."""
    if not (path / "done").exists():
        shutil.rmtree(path, ignore_errors=True)
        make(path)
        (path / "done").touch()
    return path


def build(base: Path, chunks: int) -> Path:
    """A local repository whose tag ``v1`` holds ``a``: *chunks* virtual chunks (kept)."""
    return kept(base / f"virtual-{chunks}", lambda p: build_virtual_grid(str(p), *layout(chunks)))


def build_native_array(base: Path, chunks: int) -> Path:
    """A local repository whose tag ``v1`` holds ``a``: *chunks* chunks of 1 KiB written
    with zarr, in `layout` (kept)."""
    import icechunk
    import numpy as np
    import zarr

    dirs, per = layout(chunks)

    def make(path: Path) -> None:
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path / "repo")))
        session = repo.writable_session("main")
        arr = zarr.create_array(
            session.store,
            name="a",
            shape=(dirs, per * NATIVE_CHUNK),
            chunks=(1, NATIVE_CHUNK),
            dtype="i4",
            compressors=None,
        )
        step = max(1, 100_000 // per)  # rows written at once: about 100k chunks
        for row in range(0, dirs, step):
            rows = min(step, dirs - row)
            data = np.arange(rows * per * NATIVE_CHUNK, dtype="i4")
            arr[row : row + rows] = data.reshape(rows, -1)
        repo.create_tag("v1", session.commit(f"{dirs * per} chunks of 1 KiB"))

    return kept(base / f"array-{chunks}", make)


def build_history(base: Path, snapshots: int) -> Path:
    """A local repository whose ``main`` has *snapshots* snapshots (kept)."""
    return kept(
        base / f"history-{snapshots}", lambda p: build_long_history(str(p / "repo"), snapshots)
    )


def native(base: Path, chunks: int) -> Path:
    """The same layout as a native directory of empty files (kept)."""
    dirs, per = layout(chunks)

    def make(path: Path) -> None:
        for d in range(dirs):
            here = path / "a" / "c" / str(d)
            here.mkdir(parents=True)
            for j in range(per):
                (here / str(j)).touch()

    return kept(base / f"native-{chunks}", make) / "a"


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def find(root: Path) -> int:
    out = subprocess.run(
        ["find", str(root), "-type", "f"], capture_output=True, text=True, check=True
    ).stdout
    return out.count("\n")


def mounted(repo: Path, mnt: Path, base: Path) -> Mount:
    """A new mount of the repository *repo*/repo (its virtual chunks, if any, under *repo*)."""
    virtual = ["--virtual", f"file://{repo}/"] if (repo / "src.bin").exists() else []
    return Mount(
        str(repo / "repo"),
        mnt,
        *virtual,
        "--cache-dir",
        str(base / "cache"),
        log=base / f"{mnt.name}.log",
    )


def measure_icefs(base: Path, repo: Path, chunks: int) -> dict[str, float]:
    dirs, per = layout(chunks)
    found: dict[str, float] = {}
    with mounted(repo, base / "mnt", base) as m:
        start = rss_mib(m.proc.pid)
        found["rss start"] = start
        chunk_dir = m.mountpoint / "tags" / "v1" / "a" / "c" / str(dirs // 2)
        found["ls"] = timed(lambda: os.listdir(chunk_dir))
        found["rss ls"] = rss_mib(m.proc.pid)
    with mounted(repo, base / "mnt", base) as m:
        one = m.mountpoint / "tags" / "v1" / "a" / "c" / str(dirs - 1) / str(per - 1)
        found["stat"] = timed(lambda: os.stat(one))
        found["rss stat"] = rss_mib(m.proc.pid)
        top = m.mountpoint / "tags" / "v1" / "a"
        drop_caches()
        count = 0

        def walk() -> None:
            nonlocal count
            count = find(top)

        found["find cold"] = timed(walk)
        found["rss find cold"] = rss_mib(m.proc.pid)
        found["find warm"] = timed(walk)
        found["rss find warm"] = rss_mib(m.proc.pid)
        found["files"] = count
    return found


def measure_floor(base: Path, chunks: int) -> dict[str, float]:
    dirs, per = layout(chunks)
    found: dict[str, float] = {}
    root = native(base, chunks)
    drop_caches()
    found["native cold"] = timed(lambda: find(root))
    found["native warm"] = timed(lambda: find(root))
    with NullMount(base / "null", entries=dirs * per, dirs=dirs) as null:
        listing = null.mountpoint / "listing"
        found["null cold"] = timed(lambda: find(listing))
        found["null warm"] = timed(lambda: find(listing))
    return found


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    args = parse_args(
        __doc__,
        "scale",
        argv,
        sizes=("100000,1000000,4000000,16000000", "20000", "array sizes, in chunks"),
        native_max=(1_000_000, 20_000, "largest size also measured native and on the null fs"),
        native_array=(1_000_000, 20_000, "chunks of the array of real chunks (0: none)"),
        history=(100_000, 2000, "snapshots of the long history (0: none)"),
    )
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    arrays = [(int(s), build, "") for s in args.sizes.split(",")]
    if args.native_array:
        arrays.append((args.native_array, build_native_array, "real "))
    for chunks, builder, what in arrays:
        started = time.perf_counter()
        repo = builder(base, chunks)
        built = time.perf_counter() - started
        got = measure_icefs(base, repo, chunks)
        name = f"{chunks:,} {what}chunks ({layout(chunks)[0]} dirs)"
        rows.append(
            (
                f"scale {name}: `ls` of one chunk dir / `stat` of one chunk (new mount)",
                f"{got['ls']:.3f} s / {got['stat']:.3f} s",
                "-",
                f"RSS +{got['rss ls'] - got['rss start']:.0f} / "
                f"+{got['rss stat'] - got['rss start']:.0f} MiB",
                f"(built in {built:.0f} s)",
            )
        )
        floor = measure_floor(base, chunks) if chunks <= args.native_max else {}
        for kind in ("cold", "warm"):
            ratio, baseline = "-", "-"
            if floor:
                baseline = (
                    f"native {floor[f'native {kind}']:.2f} s, null fs {floor[f'null {kind}']:.2f} s"
                )
                ratio = (
                    f"{got[f'find {kind}'] / floor[f'native {kind}']:.2f}x native, "
                    f"{got[f'find {kind}'] / floor[f'null {kind}']:.2f}x null fs"
                )
            rows.append(
                (
                    f"scale {name}: `find` {kind} ({int(got['files']):,} files)",
                    f"{got[f'find {kind}']:.2f} s, RSS +"
                    f"{got[f'rss find {kind}'] - got['rss start']:.0f} MiB",
                    baseline,
                    ratio,
                    "cold <= 4x, warm <= 8x native, or within 10% of the null fs",
                )
            )
    if args.history:
        rows.extend(measure_history(base, args.history))
    return rows, args.repeat


def measure_history(base: Path, snapshots: int) -> list[Row]:
    """``ls snapshots/`` twice and the log's first page, over a history of *snapshots*."""
    started = time.perf_counter()
    repo = build_history(base, snapshots)
    built = time.perf_counter() - started
    with mounted(repo, base / "mnt", base) as m:
        start = rss_mib(m.proc.pid)
        listed: list[str] = []
        cold = timed(lambda: listed.extend(os.listdir(m.mountpoint / "snapshots")))
        rss_cold = rss_mib(m.proc.pid)
        warm = timed(lambda: os.listdir(m.mountpoint / "snapshots"))
        lines: list[str] = []
        log_file = m.mountpoint / "branches" / "main" / ".icefs" / "log"
        page = timed(lambda: lines.extend(log_file.read_text().splitlines()))
        rss_end = rss_mib(m.proc.pid)
    return [
        (
            f"history of {snapshots:,} snapshots: `ls snapshots/` first / again",
            f"{cold:.2f} s / {warm:.2f} s ({len(listed):,} entries)",
            "-",
            f"RSS +{rss_cold - start:.0f} MiB, +{rss_end - start:.0f} MiB at the end",
            f"(built in {built:.0f} s)",
        ),
        (
            f"history of {snapshots:,} snapshots: read `.icefs/log` (first page)",
            f"{page:.3f} s ({len(lines):,} lines)",
            "-",
            "-",
            "a page, whatever the history",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    rows, _ = collect(argv)
    report("Scale: arrays of millions of chunks", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
