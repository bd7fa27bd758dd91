"""Scale: arrays of 100k to 16M chunks, listed, stat'ed and walked, with the daemon's memory.

    python benchmarks/scale.py [--dir DIR] [--sizes 100000,1000000,4000000,16000000]
    python benchmarks/scale.py --smoke

Each array is made of virtual references (`build_virtual_grid`: one 4 KiB source file,
millions in seconds), chunk grid 1 x 1, shape (directories, chunks per directory),
tagged ``v1`` in its own local repository kept in --dir. For each size, on a new
mount: ``ls`` of one chunk directory (it builds the array's chunk index), ``stat`` of
one chunk on another new mount (index built by that lookup), ``find`` cold (the
mount's first walk) and warm, and the daemon's RSS after each step. Beside the
icefs rows, up to --native-max chunks: the same layout as a native directory of
empty files and on the null pyfuse3 filesystem (benchmarks/floor.py), same walks.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, drop_caches, parse_args, report
from benchmarks.floor import NullMount
from harness.mount import Mount
from icefs.store.sample import build_virtual_grid


def layout(chunks: int) -> tuple[int, int]:
    """(directories, chunks per directory) of an array of about *chunks* chunks."""
    dirs = max(1, round(math.sqrt(chunks)))
    return dirs, -(-chunks // dirs)


def build(base: Path, chunks: int) -> Path:
    """A local repository whose tag ``v1`` holds ``a``: *chunks* virtual chunks (kept)."""
    path = base / f"virtual-{chunks}"
    if not (path / "done").exists():
        shutil.rmtree(path, ignore_errors=True)
        build_virtual_grid(str(path), *layout(chunks))
        (path / "done").touch()
    return path


def native(base: Path, chunks: int) -> Path:
    """The same layout as a native directory of empty files (kept)."""
    path = base / f"native-{chunks}"
    if (path / "done").exists():
        return path / "a"
    shutil.rmtree(path, ignore_errors=True)
    dirs, per = layout(chunks)
    for d in range(dirs):
        here = path / "a" / "c" / str(d)
        here.mkdir(parents=True)
        for j in range(per):
            (here / str(j)).touch()
    (path / "done").touch()
    return path / "a"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


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
    prefix = f"file://{repo}/"
    return Mount(
        str(repo / "repo"),
        mnt,
        "--virtual",
        prefix,
        "--cache-dir",
        str(base / "cache"),
        log=base / f"{mnt.name}.log",
    )


def measure_icefs(base: Path, chunks: int) -> dict[str, float]:
    repo = build(base, chunks)
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
    )
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for chunks in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        build(base, chunks)
        built = time.perf_counter() - started
        got = measure_icefs(base, chunks)
        name = f"{chunks:,} chunks ({layout(chunks)[0]} dirs)"
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
    return rows, args.repeat


def main(argv: list[str] | None = None) -> int:
    rows, _ = collect(argv)
    report("Scale: arrays of millions of chunks", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
