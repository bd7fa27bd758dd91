"""Read benchmark: icefs mount vs direct Icechunk vs a native Zarr directory, side by side.

    python benchmarks/read.py [--dir DIR] [--size-mib 1024] [--small-chunks 50000] [--repeat 3]
    python benchmarks/read.py --smoke      # tiny data, one repeat (CI)

Builds (once, under DIR) a local Icechunk repository tagged ``v1`` with

* ``big``:   float32, 2 MiB uncompressed chunks, --size-mib in total;
* ``small``: uint8, --small-chunks chunks of 1 KiB;

and a native Zarr directory holding the same arrays.  Then reads every array
(a) directly through icechunk + zarr, (b) through the mount with zarr's
LocalStore, cold (new daemon, page cache dropped) and warm, and (c) from the
native directory, cold and warm.  Prints a Markdown table with min / median
and the ratios mount-warm/native-warm and mount-cold/direct throughput.

For ``big`` it also measures the read floors (`floor_reads`): cold, the direct
read and a null pyfuse3 filesystem serving as many bytes, both at once, with
the CPU-seconds per GiB the whole machine spends on each side; warm, plain
reads of the chunk files through icefs, the null filesystem and natively.
"""

from __future__ import annotations

import functools
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.core.buffer import NDBuffer, default_buffer_prototype
from zarr.storage import LocalStore

from benchmarks import floor
from benchmarks.common import (
    Row,
    Timing,
    at_once,
    drop_caches,
    measure,
    parse_args,
    report,
    steady_memory,
)
from harness.mount import Mount

if TYPE_CHECKING:
    from collections.abc import Callable

icechunk.set_logs_filter("error")

BIG_CHUNK = (1, 512, 1024)  # 2 MiB of float32


def build(base: Path, size_mib: int, small_chunks: int) -> None:
    """Create the repository and the native copy under *base* (skipped if present)."""
    marker = base / f"built-{size_mib}-{small_chunks}"
    if marker.exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    rows = max(1, size_mib // 2)
    big = np.random.default_rng(0).random((rows, 512, 1024), dtype="f4")
    small = np.random.default_rng(1).integers(0, 255, small_chunks * 1024, dtype="u1")
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(base / "repo")))
    session = repo.writable_session("main")
    for store in (session.store, LocalStore(base / "native")):
        root = zarr.group(store=store)
        a = root.create_array(
            "big", shape=big.shape, chunks=BIG_CHUNK, dtype="f4", compressors=None
        )
        a[:] = big
        s = root.create_array(
            "small", shape=small.shape, chunks=(1024,), dtype="u1", compressors=None
        )
        s[:] = small
    repo.create_tag("v1", session.commit("benchmark data"))
    marker.touch()


#: One output array per array name, reused by every read (see `read_one`).
_OUT: dict[str, NDBuffer] = {}


def read_one(store: object, name: str) -> int:
    """Read the whole array *name* into an output array allocated once per name.

    Measured here: a fresh 1 GiB result per read (``arr[:]``) cost 0.1 to 2 s
    of page faults, from run to run, on either side, because the virtual
    machine hands freed memory back to its host. Reading into one array
    leaves only the reading in the timing.
    """
    array = zarr.open_array(store=store, path=name, mode="r")
    out = _OUT.get(name)
    if out is None or out.shape != array.shape:
        out = _OUT[name] = default_buffer_prototype().nd_buffer.from_numpy_array(
            np.empty(array.shape, array.dtype)
        )
    array.get_basic_selection(..., out=out)
    return int(out.as_numpy_array().nbytes)


def _read_store(path: Path, name: str) -> int:
    """`read_one` of array *name* from a LocalStore at *path*."""
    return read_one(LocalStore(path, read_only=True), name)


def plain_reads(root: Path, files: int, array: str = "big") -> Callable[[], int]:
    """A timed part: read *files* chunk files of *array* under *root* as plain files."""

    def run() -> int:
        floor.read_files(root, files, array)
        return files * floor.FILE_SIZE

    return run


def floor_reads(
    base: Path, direct: Callable[[], int], files: int, repeat: int
) -> tuple[Timing, Timing]:
    """The read floors of any pyfuse3 filesystem over Icechunk on this machine.

    Cold: both halves of its work at once, each as cheaply as it can be had:
    this process reads ``big`` directly from Icechunk (fetch and decode) while
    another process reads *files* 2 MiB files, as many bytes, through floor.py's
    null filesystem (FUSE transport, nothing fetched). Timed until both are done.
    Warm: the same files read again through the null filesystem, from the page
    cache (`plain_reads`).
    """
    timing = Timing("floor cold big")
    with floor.NullMount(base / "null") as null:
        floor.write_files(null.mountpoint, files)
        for _ in range(repeat):
            timing.timed(
                at_once(
                    [
                        sys.executable,
                        floor.__file__,
                        "--read-on-cue",
                        str(null.mountpoint),
                        str(files),
                    ],
                    direct,
                    drop_caches,
                )
            )
        warm = plain_reads(null.mountpoint, files, "data")
        warm()  # warm up
        return timing, measure("null fs warm", warm, repeat)


def main(argv: list[str] | None = None) -> int:
    with steady_memory():
        rows, repeat, cold = collect(argv)
    report(
        f"icefs read benchmark ({repeat} repeats"
        f"{'' if cold else ', page cache NOT dropped (not root)'})",
        rows,
    )
    return 0


def collect(argv: list[str] | None = None) -> tuple[list[Row], int, bool]:
    """Run the read rows; return them, the number of repeats and whether caches dropped."""
    args = parse_args(
        __doc__,
        "read",
        argv,
        size_mib=(1024, 8),
        small_chunks=(50_000, 300),
        arrays=("big,small", "big,small", "which arrays to read"),
    )
    if args.smoke:
        args.dir = f"{args.dir}-smoke"
    base = Path(args.dir).resolve()
    t0 = time.perf_counter()
    build(base, args.size_mib, args.small_chunks)
    print(f"dataset ready in {time.perf_counter() - t0:.1f} s under {base}", file=sys.stderr)
    repo_path = str(base / "repo")
    mnt = base / "mnt"
    cold = drop_caches()
    results: dict[tuple[str, str], Any] = {}

    arrays = [a for a in ("big", "small") if a in args.arrays.split(",")]
    for name in arrays:

        def direct(name: str = name) -> int:
            repo = icechunk.Repository.open(icechunk.local_filesystem_storage(repo_path))
            return read_one(repo.readonly_session(tag="v1").store, name)

        results["direct", name] = measure(f"direct {name}", direct, args.repeat, drop_caches)
        results["native-cold", name] = measure(
            f"native cold {name}",
            functools.partial(_read_store, base / "native", name),
            args.repeat,
            drop_caches,
        )
        # Warm rows start with free RAM: a page cache that fills it makes every new
        # page cost reclaim (see write.py's settle), whichever side is measured.
        drop_caches()
        read_one(LocalStore(base / "native", read_only=True), name)  # warm up
        results["native-warm", name] = measure(
            f"native warm {name}",
            functools.partial(_read_store, base / "native", name),
            args.repeat,
        )
        files = results["direct", name].nbytes // floor.FILE_SIZE  # of 2 MiB, in big
        if name == "big":
            results["native-warm-plain", name] = measure(
                "native warm plain", plain_reads(base / "native", files), args.repeat
            )

        cold_t = Timing(f"mount cold {name}")
        for _ in range(args.repeat):
            drop_caches()
            with Mount(repo_path, mnt):
                cold_t.timed(functools.partial(_read_store, mnt / "tags" / "v1", name))
        results["mount-cold", name] = cold_t
        if name == "big":
            results["floor-cold", name], results["floor-warm", name] = floor_reads(
                base, direct, files, args.repeat
            )
        drop_caches()
        with Mount(repo_path, mnt):
            read_one(LocalStore(mnt / "tags" / "v1", read_only=True), name)  # warm up
            results["mount-warm", name] = measure(
                f"mount warm {name}",
                functools.partial(_read_store, mnt / "tags" / "v1", name),
                args.repeat,
            )
            if name == "big":
                results["mount-warm-plain", name] = measure(
                    "mount warm plain", plain_reads(mnt / "tags" / "v1", files), args.repeat
                )

    rows: list[Row] = []
    for name in arrays:
        d, nc, nw, mc, mw = (
            results[k, name]
            for k in ("direct", "native-cold", "native-warm", "mount-cold", "mount-warm")
        )
        label = (
            f"{name} ({d.nbytes >> 20} MiB, 2 MiB chunks)"
            if name == "big"
            else f"{name} ({args.small_chunks} x 1 KiB chunks)"
        )
        rows.append(
            (
                f"warm read {label}: min / median s",
                f"{mw.best:.3f} / {mw.median:.3f}",
                f"native {nw.best:.3f} / {nw.median:.3f}",
                f"{mw.best / nw.best:.2f}x time",
                "<= 1.2x" if name == "big" else "-",
            )
        )
        if name == "big":
            wi, wn, wf = (
                results[k, name] for k in ("mount-warm-plain", "native-warm-plain", "floor-warm")
            )
            rows.append(
                (
                    f"  (floor) warm plain reads of the same {wi.nbytes // floor.FILE_SIZE} chunk "
                    f"files ({floor.THREADS} threads): s best",
                    f"{wi.best:.3f}",
                    f"null pyfuse3 fs {wf.best:.3f}, native {wn.best:.3f}",
                    f"{wi.best / wn.best:.2f}x native; null fs {wf.best / wn.best:.2f}x",
                    "-",
                )
            )
        rows.append(
            (
                f"cold read {label}: MiB/s best / median",
                f"{mc.mib_s(mc.best):.0f} / {mc.mib_s(mc.median):.0f}",
                f"direct {d.mib_s(d.best):.0f} / {d.mib_s(d.median):.0f}",
                f"{d.best / mc.best:.2f}x throughput",
                ">= 0.8x" if name == "big" else "-",
            )
        )
        rows.append(
            (
                f"cold read {label}: native",
                "",
                f"native {nc.mib_s(nc.best):.0f} MiB/s",
                f"{nc.best / mc.best:.2f}x",
                "-",
            )
        )
        fl = results.get(("floor-cold", name))
        if isinstance(fl, Timing):
            rows.append(
                (
                    "  (floor) both halves at once: direct read of big while a null pyfuse3 fs "
                    "serves as many bytes to another process, cold: MiB/s best",
                    "",
                    f"both done at {fl.mib_s(fl.best):.0f}",
                    f"{d.best / fl.best:.2f}x of direct; icefs {fl.best / mc.best:.2f}x of it",
                    "-",
                )
            )
            rows.append(
                (
                    "  CPU-seconds per GiB, whole machine, median: icefs cold read / both at once",
                    f"{mc.cpu_per_gib():.2f}",
                    f"both {fl.cpu_per_gib():.2f} (direct alone {d.cpu_per_gib():.2f})",
                    f"{mc.cpu_per_gib() / fl.cpu_per_gib():.2f}x",
                    "-",
                )
            )
    return rows, args.repeat, cold


if __name__ == "__main__":
    sys.exit(main())
