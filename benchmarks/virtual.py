"""Virtual chunks: a cold read of a virtual array through the mount against Icechunk's own.

``python -m benchmarks.virtual [--size-mib N] [--repeat N] [--smoke]``

The array's chunks (1 MiB each, uncompressed float32) are references into one
local file, as VirtualiZarr makes them for a NetCDF file. Both sides read the
whole array with zarr, the page cache dropped before each run (root only): the
mount through ``LocalStore`` on ``tags/v1`` with ``--virtual file://...``,
Icechunk directly through its store with the same container authorized. The
floor row does both halves of the mount's work at once, each as cheaply as it
can be had (read.py's `floor_reads`): the direct read, while another process
reads as many bytes through floor.py's null filesystem.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.storage import LocalStore

from benchmarks import floor
from benchmarks.common import Row, Timing, drop_caches, measure, parse_args, report
from benchmarks.read import floor_reads, read_one
from harness.mount import Mount

icechunk.set_logs_filter("error")

CHUNK_ITEMS = 1 << 18  # float32: 1 MiB


def _access(prefix: str) -> dict[str, Any]:
    return icechunk.containers_credentials({prefix: icechunk.credentials.LocalFileSystemAccess})


def build(base: Path, size_mib: int) -> str:
    """Build (or reuse) the source file and the repository; return the container prefix."""
    src, repo_path = base / "src", base / "repo"
    prefix = f"file://{src}/"
    marker = base / f"built-{size_mib}"
    if marker.exists():
        return prefix
    shutil.rmtree(base, ignore_errors=True)
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(src / "data.bin", "wb") as f:
        for _ in range(size_mib):
            f.write(rng.standard_normal(CHUNK_ITEMS).astype("<f4").tobytes())
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(f"{src}/"))
    )
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(repo_path)),
        config,
        authorize_virtual_chunk_access=_access(prefix),
    )
    session = repo.writable_session("main")
    zarr.group(store=session.store).create_array(
        "v",
        shape=(size_mib * CHUNK_ITEMS,),
        chunks=(CHUNK_ITEMS,),
        dtype="<f4",
        compressors=None,
        fill_value=0,
    )
    for i in range(size_mib):
        session.store.set_virtual_ref(
            f"v/c/{i}", f"{prefix}data.bin", offset=i << 20, length=1 << 20
        )
    repo.create_tag("v1", session.commit("virtual array"))
    marker.touch()
    return prefix


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    """Run the virtual read rows; return them and the number of repeats."""
    args = parse_args(__doc__, "virtual", argv, size_mib=(512, 8))
    if args.smoke:
        args.dir = f"{args.dir}-smoke"
    base = Path(args.dir).resolve()
    prefix = build(base, args.size_mib)
    repo_path = str(base / "repo")

    def direct() -> int:
        repo = icechunk.Repository.open(
            icechunk.local_filesystem_storage(repo_path),
            authorize_virtual_chunk_access=_access(prefix),
        )
        return read_one(repo.readonly_session(tag="v1").store, "v")

    d = measure("direct virtual", direct, args.repeat, drop_caches)
    m = Timing("mount virtual")
    for _ in range(args.repeat):
        drop_caches()
        with Mount(repo_path, base / "mnt", "--virtual", prefix):
            m.timed(lambda: read_one(LocalStore(base / "mnt" / "tags" / "v1", read_only=True), "v"))
    both, _ = floor_reads(base, direct, max(1, d.nbytes // floor.FILE_SIZE), args.repeat)
    rows = [
        (
            f"cold read of a virtual array ({d.nbytes >> 20} MiB, 1 MiB chunks in a local "
            "file): MiB/s best / median",
            f"{m.mib_s(m.best):.0f} / {m.mib_s(m.median):.0f}",
            f"direct {d.mib_s(d.best):.0f} / {d.mib_s(d.median):.0f}",
            f"{d.best / m.best:.2f}x throughput",
            ">= 0.8x",
        ),
        (
            "  (floor) both halves at once: the direct virtual read while a null pyfuse3 fs "
            "serves as many bytes to another process, cold: MiB/s best",
            "",
            f"both done at {both.mib_s(both.best):.0f}",
            f"{d.best / both.best:.2f}x of direct; icefs {both.best / m.best:.2f}x of it",
            "-",
        ),
    ]
    return rows, args.repeat


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    rows, repeat = collect(argv)
    report(f"icefs virtual read ({repeat} repeats; {time.perf_counter() - started:.0f} s)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
