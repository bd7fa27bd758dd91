"""The read cache's rows of benchmarks/cloud.py (group ``cache``).

Against a mount of a local-disk copy of the same repository (what a warm cache should
feel like) and direct Icechunk (which has no disk cache), with the kernel's page cache
dropped before every timed read (the cache's files and the local repository are read
from disk, as a remount after a reboot would):

* remount cold read of ``big``: a mount whose read cache a previous mount filled;
  the chunk and manifest requests it made (the daemon's own count: 0 means 0 GETs);
* remount ``find`` of ``grid`` against ``find`` on the local-disk mount;
* a second pass over ``big`` in the same mount, page cache dropped (as a dataset
  larger than it finds it): the chunk requests it made;
* the first fill against a mount with ``--read-cache-size 0``;
* the remount read against direct Icechunk reading ``big`` again;
* ``cp -r`` of ``big`` (one file at a time) under ``tags/``, ``snapshots/<id>/`` and
  ``branches/main/`` (the branch's committed base) on a new mount, against direct.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import icechunk
import zarr
from zarr.storage import LocalStore

from benchmarks.cloudread import _copy, _direct_read, _one_reader_floors
from benchmarks.common import Row, Timing, drop_caches
from benchmarks.floor import FILE_SIZE
from benchmarks.read import read_one
from harness.mount import Mount

if TYPE_CHECKING:
    from collections.abc import Callable

    from benchmarks.cloudsetup import Cloud

#: The views ``cp -r`` reads ``big`` under, one file at a time.
VIEWS = ("tags", "snapshots", "branches")


def local_copy(cloud: Cloud) -> Path:
    """A local-disk repository holding what the S3 one does (``big``, ``grid``, tag v1),
    copied once at zero delay."""
    path = cloud.base / "local-repo"
    if path.exists():
        return path
    delay = cloud.proxy.delay_ms
    cloud.proxy.set_delay(0)
    try:
        source = icechunk.Repository.open(cloud.storage("read")).readonly_session(tag="v1")
        repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(path)))
        session = repo.writable_session("main")
        root = zarr.open_group(session.store)
        for name in ("big", "grid"):
            src = zarr.open_array(source.store, path=name, mode="r")
            dst = root.create_array(
                name, shape=src.shape, chunks=src.chunks, dtype=src.dtype, compressors=None
            )
            for i in range(0, src.shape[0], src.chunks[0]):
                dst[i : i + src.chunks[0]] = src[i : i + src.chunks[0]]
        repo.create_tag("v1", session.commit("a local copy"))
    finally:
        cloud.proxy.set_delay(delay)
    return path


def _read(m: Mount) -> int:
    return read_one(LocalStore(m.mountpoint / "tags" / "v1", read_only=True), "big")


def _read_entries(cache: Path) -> int:
    """Read every file of the read cache *cache* straight from the disk (page cache
    dropped), 16 threads: the disk's part of a remount read."""
    files = [p for p in (cache / "read").glob("[0-9a-f]/[!.]*") if p.is_file()]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return sum(pool.map(lambda p: len(p.read_bytes()), files))


def _find(root: Path) -> int:
    out = subprocess.run(["find", str(root)], capture_output=True, check=True).stdout
    return out.count(b"\n")


def _timed_cache_passes(
    cloud: Cloud, local: Path, repeat: int
) -> tuple[dict[str, Timing], dict[str, int]]:
    """Every timing of the module doc, *repeat* times; the requests of the last repeat."""
    names = (
        "local", "fill", "off", "remount", "second", "direct", "find local", "find remount",
        "disk",
    )  # fmt: skip
    t = {n: Timing(n) for n in (*names, *(f"cp {v}" for v in VIEWS))}
    made: dict[str, int] = {}
    for r in range(repeat):
        with Mount(str(local), cloud.base / "mnt-local", "--cache-dir", str(cloud.base / "c")) as m:
            _cold(t["local"], partial(_read, m))
            _cold(t["find local"], partial(_find, m.mountpoint / "tags" / "v1" / "grid"))
        cache = cloud.base / f"read-cache-{r}"
        with cloud.mount("read", cache=cache) as m:
            _cold(t["fill"], partial(_read, m))
            drop_caches()
            _find(m.mountpoint / "tags" / "v1" / "grid")  # its chunk index goes to the cache
        with cloud.mount("read", "--read-cache-size", "0") as m:
            _cold(t["off"], partial(_read, m))
        with cloud.mount("read", cache=cache) as m:
            _cold(t["remount"], partial(_read, m))
            made["remount chunk"] = m.storage_requests("chunk")
            made["remount manifest"] = m.storage_requests("manifest")
            _cold(t["second"], partial(_read, m))
            made["second chunk"] = m.storage_requests("chunk") - made["remount chunk"]
        with cloud.mount("read", cache=cache) as m:
            _cold(t["find remount"], partial(_find, m.mountpoint / "tags" / "v1" / "grid"))
            made["find manifest"] = m.storage_requests("manifest")
        _cold(t["disk"], partial(_read_entries, cache))
        t["direct"].timed(partial(_direct_read, cloud))
        for view in VIEWS:
            with cloud.mount("read") as m, tempfile.TemporaryDirectory(dir="/dev/shm") as out:
                tag = m.mountpoint / "tags" / "v1"
                root = {
                    "tags": tag,
                    "snapshots": m.mountpoint
                    / "snapshots"
                    / (tag / ".icefs" / "snapshot_id").read_text().strip(),
                    "branches": m.mountpoint / "branches" / "main",
                }[view]
                _cold(t[f"cp {view}"], partial(_copy, root / "big", Path(out)))
        shutil.rmtree(cache, ignore_errors=True)
    return t, made


def _cold(timing: Timing, fn: Callable[[], int]) -> None:
    """Time *fn* with the page cache dropped first (not timed)."""
    drop_caches()
    timing.timed(fn)


def _busy(timing: Timing) -> float:
    """CPUs the whole machine kept busy during *timing*'s best repeat."""
    best = timing.seconds.index(timing.best)
    return timing.cpu[best] / timing.best


def _ceiling(timing: Timing) -> float:
    """The MiB/s *timing*'s work could reach with every CPU of the machine busy: the CPUs
    over its CPU-seconds per MiB (measured in its best repeat)."""
    best = timing.seconds.index(timing.best)
    per_mib = timing.cpu[best] / (timing.nbytes / (1 << 20))
    return (os.cpu_count() or 1) / per_mib if per_mib else float("inf")


def cache_rows(cloud: Cloud, repeat: int) -> list[Row]:
    t, made = _timed_cache_passes(cloud, local_copy(cloud), repeat)
    size = f"{t['local'].nbytes >> 20} MiB"

    def mib(name: str) -> str:
        return f"{t[name].mib_s(t[name].best):.0f}"

    rows: list[Row] = [
        (
            f"read cache: remount cold read of {size} (zarr), MiB/s best",
            mib("remount"),
            f"local-disk mount {mib('local')}",
            f"{t['local'].best / t['remount'].best:.2f}x throughput",
            ">= 0.9x",
        ),
        (
            "  (floor) the cache's entry files read straight from its disk, page cache "
            "dropped, 16 threads: MiB/s best",
            "",
            f"disk {mib('disk')}",
            f"remount {t['disk'].best / t['remount'].best:.2f}x of it; machine busy "
            f"{_busy(t['remount']):.2f} of {os.cpu_count()} CPUs during the remount read, "
            f"whose CPU-seconds allow at most {_ceiling(t['remount']):.0f} MiB/s",
            "-",
        ),
        (
            "  chunk / manifest requests of that read",
            f"{made['remount chunk']} / {made['remount manifest']}",
            "",
            "",
            "0",
        ),
        (
            "read cache: remount find of grid, s best",
            f"{t['find remount'].best:.3f}",
            f"local-disk mount {t['find local'].best:.3f}",
            f"{t['find remount'].best / t['find local'].best:.2f}x time; "
            f"{made['find manifest']} manifest requests",
            "<= 1.3x, 0 manifest",
        ),
        (
            "read cache: second pass, page cache dropped (a dataset larger than it), MiB/s",
            mib("second"),
            "",
            f"{made['second chunk']} chunk requests",
            "0 chunk GETs",
        ),
        (
            "read cache: first fill against the cache off, MiB/s best",
            mib("fill"),
            f"cache off {mib('off')}",
            f"{t['fill'].best / t['off'].best - 1:+.1%} time; CPU-s per GiB, whole machine: "
            f"{t['fill'].cpu_per_gib():.2f} against {t['off'].cpu_per_gib():.2f}, so at most "
            f"{_ceiling(t['fill']):.0f} against {_ceiling(t['off']):.0f} MiB/s with every CPU "
            f"busy ({_ceiling(t['off']) / _ceiling(t['fill']) - 1:+.1%})",
            "<= +5%",
        ),
        (
            "read cache: remount read against direct Icechunk reading again, MiB/s best",
            mib("remount"),
            f"direct {mib('direct')}",
            f"{t['direct'].best / t['remount'].best:.2f}x faster",
            ">= 2x at 20 ms",
        ),
    ]
    floor = _one_reader_floors(
        cloud.base, partial(_direct_read, cloud), t["local"].nbytes // FILE_SIZE, repeat
    )["cp -r"]
    rows += [
        (
            f"cp -r of big under {view}/ (one file at a time, new mount), MiB/s best",
            mib(f"cp {view}"),
            f"direct zarr {mib('direct')}",
            f"{t['direct'].best / t[f'cp {view}'].best:.2f}x throughput; at most "
            f"{_ceiling(t[f'cp {view}']):.0f} MiB/s with every CPU busy",
            ">= 0.8x",
        )
        for view in VIEWS
    ]
    rows.append(
        (
            "  (floor) one reader: cp -r of as many bytes from a null pyfuse3 fs while the "
            "direct read runs: MiB/s best",
            "",
            f"both done at {floor.mib_s(floor.best):.0f}",
            f"{t['direct'].best / floor.best:.2f}x of direct; cp -r under snapshots/ "
            f"{floor.best / t['cp snapshots'].best:.2f}x of it",
            "-",
        )
    )
    return rows
