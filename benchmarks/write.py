"""Write benchmark: zarr through an icefs mount vs a direct Icechunk session, plus daemon RSS.

    python benchmarks/write.py [--dir DIR] [--size-mib 1024] [--repeat 3] [--rss-gib 4]
    python benchmarks/write.py --smoke      # tiny data, one repeat (CI)

For each repeat, into a new local repository:
  (a) direct: a writable session, zarr writes every chunk, commit;
  (b) icefs: a fresh mount, zarr's LocalStore on branches/main, commit by writing
      .icefs/commit;
  (c) floor: zarr's LocalStore on floor.py's null pyfuse3 filesystem, which
      drops what is written: the most any pyfuse3 filesystem reaches here;
  (c') both halves at once: (a) in this process while another process does (c),
      timed until both are done. Not a floor: two writers at once interfere on
      this machine, and icefs has beaten it;
  (d) native: zarr's LocalStore on a local directory (reference only).
Each phase starts from a clean page cache (synced and dropped, outside its
timing); none syncs its own data.
Then the daemon's peak RSS while writing --rss-gib GiB through the mount with
--write-buffer 256M: once as one file (it spools to disk) and once as zarr
chunks (each chunk is stored when closed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import icechunk
import numpy as np
import zarr
from zarr.storage import LocalStore

from benchmarks.common import (
    Row,
    Timing,
    at_once,
    drop_caches,
    parse_args,
    report,
    steady_memory,
    wait_for_cue,
)
from benchmarks.floor import NullMount
from harness.mount import Mount, rss_mib

icechunk.set_logs_filter("error")

CHUNK = (1, 512, 1024)  # 2 MiB of float32


def write_array(store: Any, data: np.ndarray, compressors: Any = None) -> None:
    root = zarr.open_group(store=store, mode="w")
    arr = root.create_array(
        "data", shape=data.shape, chunks=CHUNK, dtype="f4", compressors=compressors
    )
    arr[:] = data


def make_data(size_mib: int) -> np.ndarray:
    return np.random.default_rng(0).random((max(1, size_mib // 2), 512, 1024), dtype="f4")


def settle() -> None:
    """Start a timed phase from a clean page cache: written back and dropped.

    Measured here: without it each phase paid for the one before it. Writeback of
    the last phase's 1 GiB of dirty pages, and, once the page cache had filled the
    RAM, reclaim on every new page (sys time 0.3 -> 2.5 s per GiB) moved direct
    writes between 600 and 3600 MiB/s from run to run."""
    drop_caches()


def new_repo(path: Path) -> Path:
    """An empty local repository at *path* (whatever was there removed); *path*."""
    shutil.rmtree(path, ignore_errors=True)
    icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
    return path


class RssSampler:
    """Samples the VmRSS of *pid* every 50 ms in a thread; `peak` in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            return round(rss_mib(self.pid) * (1 << 20))
        except AssertionError:  # no VmRSS: a process that has exited
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._rss())
            except OSError:
                return
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.start = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_on_cue(null_dir: str, size_mib: int) -> None:
    """Make the benchmark's data, then write it into *null_dir* when told to (`at_once`)."""
    data = make_data(size_mib)
    wait_for_cue()
    write_array(LocalStore(null_dir), data)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--write-on-cue":
        write_on_cue(sys.argv[2], int(sys.argv[3]))
        return 0
    with steady_memory():
        rows, repeat = collect(argv)
    report(f"icefs write benchmark ({repeat} repeats)", rows)
    return 0


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    """Run the write rows; return them and the number of repeats."""
    args = parse_args(__doc__, "write", argv, size_mib=(1024, 16), rss_gib=(4.0, 0.0625))
    base = Path(args.dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    data = make_data(args.size_mib)
    direct, mounted, native = Timing("direct"), Timing("icefs"), Timing("native")
    floor, both = Timing("null fs"), Timing("direct and null fs at once")

    def direct_write(repo: Path) -> int:
        session = icechunk.Repository.open(
            icechunk.local_filesystem_storage(str(repo))
        ).writable_session("main")
        write_array(session.store, data)
        session.commit("direct")
        return int(data.nbytes)

    def icefs_write(main_dir: Path) -> int:
        write_array(LocalStore(main_dir), data)
        with open(main_dir / ".icefs" / "commit", "w") as f:
            f.write("through icefs")
        return int(data.nbytes)

    def local_write(target: Path) -> int:
        write_array(LocalStore(target), data)
        return int(data.nbytes)

    for i in range(args.repeat):
        repo = base / f"direct-{i}"
        new_repo(repo)
        settle()
        direct.timed(partial(direct_write, repo))

        repo = base / f"icefs-{i}"
        new_repo(repo)
        with Mount(str(repo), base / "mnt", "--cache-dir", str(base / "cache")) as m:
            main_dir = m.mountpoint / "branches" / "main"
            settle()
            mounted.timed(partial(icefs_write, main_dir))

        with NullMount(base / "null") as null:
            settle()
            floor.timed(partial(local_write, null.mountpoint / "data"))

        repo = base / f"both-{i}"
        new_repo(repo)
        with NullMount(base / "null") as null:
            both.timed(
                at_once(
                    [
                        sys.executable,
                        __file__,
                        "--write-on-cue",
                        str(null.mountpoint / "data"),
                        str(args.size_mib),
                    ],
                    partial(direct_write, repo),
                    settle,
                )
            )

        target = base / f"native-{i}"
        shutil.rmtree(target, ignore_errors=True)
        settle()
        native.timed(partial(local_write, target))

    rows = [
        (
            f"write {data.nbytes >> 20} MiB (2 MiB chunks) + commit: MiB/s best / median",
            f"{mounted.mib_s(mounted.best):.0f} / {mounted.mib_s(mounted.median):.0f}",
            f"direct {direct.mib_s(direct.best):.0f} / {direct.mib_s(direct.median):.0f}",
            f"{direct.best / mounted.best:.2f}x throughput",
            ">= 0.7x",
        ),
        (
            "  (floor) the same zarr write into floor.py's null pyfuse3 fs: MiB/s best",
            "",
            f"null fs {floor.mib_s(floor.best):.0f}",
            f"{direct.best / floor.best:.2f}x of direct",
            "-",
        ),
        (
            "  (reference) the direct write + commit while another process writes the same "
            "into the null fs: MiB/s best",
            "",
            f"both done at {both.mib_s(both.best):.0f}",
            f"{direct.best / both.best:.2f}x of direct; icefs {both.best / mounted.best:.2f}x "
            "of it",
            "-",
        ),
        (
            "  CPU-seconds per GiB, whole machine, median: icefs / both at once",
            f"{mounted.cpu_per_gib():.2f}",
            f"both {both.cpu_per_gib():.2f} (direct alone "
            f"{direct.cpu_per_gib():.2f}, null fs alone {floor.cpu_per_gib():.2f})",
            f"{mounted.cpu_per_gib() / both.cpu_per_gib():.2f}x",
            "-",
        ),
        (
            "  (reference) native LocalStore MiB/s best",
            "",
            f"native {native.mib_s(native.best):.0f}",
            f"{native.best / mounted.best:.2f}x",
            "-",
        ),
    ]
    rows += verify_rows(base, data, args.repeat)
    if args.rss_gib > 0:
        rows += rss_rows(base, args.rss_gib)
    return rows, args.repeat


def verify_rows(base: Path, data: np.ndarray, repeat: int) -> list[Row]:
    """zstd-compressed writes through icefs with each chunk decoded before it is stored
    (verify_chunks=decode) and with only its frame checked (frame, the default), in
    alternating order."""
    timings = {mode: Timing(mode) for mode in ("decode", "frame")}
    smooth = np.round(data * 64) / 64  # compresses to about half, as measured data often does
    for i in range(repeat):
        for mode in ("decode", "frame") if i % 2 == 0 else ("frame", "decode"):
            repo = base / f"verify-{mode}-{i}"
            new_repo(repo)
            with Mount(
                str(repo), base / "mnt", "--cache-dir", str(base / "cache"), "--verify-chunks", mode
            ) as m:
                main_dir = m.mountpoint / "branches" / "main"

                def write(target: Path = main_dir) -> int:
                    write_array(LocalStore(target), smooth, zarr.codecs.ZstdCodec())
                    with open(target / ".icefs" / "commit", "w") as f:
                        f.write("compressed")
                    return int(smooth.nbytes)

                settle()
                timings[mode].timed(write)
    on, off = timings["decode"], timings["frame"]
    return [
        (
            "write zstd chunks: each decoded before it is stored (verify_chunks=decode) "
            "vs its frame checked (frame, the default): MiB/s median",
            f"{on.mib_s(on.median):.0f}",
            f"frame {off.mib_s(off.median):.0f}",
            f"costs {100 * (1 - off.median / on.median):.0f}% of throughput",
            "<= 15%",
        )
    ]


def rss_rows(base: Path, gib: float) -> list[Row]:
    bound = 256 << 20
    total = int(gib * (1 << 30))
    rows = []
    repo = base / "rss"
    new_repo(repo)
    with Mount(
        str(repo), base / "mnt", "--write-buffer", str(bound), "--cache-dir", str(base / "cache")
    ) as m:
        main_dir = m.mountpoint / "branches" / "main"
        with RssSampler(m.proc.pid) as rss:
            subprocess.run(
                [
                    "dd",
                    "if=/dev/zero",
                    f"of={main_dir / 'big.bin'}",
                    "bs=1M",
                    f"count={total >> 20}",
                    "status=none",
                ],
                check=True,
            )
        rows.append(
            (
                f"daemon RSS writing one {gib:g} GiB file (--write-buffer 256M)",
                f"peak {rss.peak >> 20} MiB",
                f"start {rss.start >> 20} MiB",
                f"+{(rss.peak - rss.start) >> 20} MiB",
                "<= bound + 200 MiB",
            )
        )
        os.unlink(main_dir / "big.bin")
        chunks = max(1, total // (2 << 20))
        block = np.zeros(CHUNK, dtype="f4")
        root = zarr.open_group(LocalStore(main_dir), mode="w")
        arr = root.create_array(
            "big", shape=(chunks, 512, 1024), chunks=CHUNK, dtype="f4", compressors=None
        )
        with RssSampler(m.proc.pid) as rss:
            for i in range(chunks):
                arr[i] = block + i
        rows.append(
            (
                f"daemon RSS writing {gib:g} GiB as 2 MiB zarr chunks",
                f"peak {rss.peak >> 20} MiB",
                f"start {rss.start >> 20} MiB",
                f"+{(rss.peak - rss.start) >> 20} MiB",
                "<= bound + 200 MiB",
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
