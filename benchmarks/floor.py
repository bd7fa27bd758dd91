"""The FUSE floor: what a pyfuse3 filesystem that stores nothing reaches on this machine.

    python benchmarks/floor.py [--dir DIR] [--files 256] [--repeat 3]
    python benchmarks/floor.py --smoke

A null filesystem (this file, ``--serve MOUNTPOINT``) answers every request from
a dict: writes are counted and dropped, reads return zeros. It runs pyfuse3 +
trio like icefs, with the same read-ahead and request sizes. Side by side with
icefs (a local repository, branch ``main``) and a native tmpfs directory, in
one run:

* writing --files files of 2 MiB the way zarr's LocalStore does (mkdir -p,
  create a temporary file, write, close, rename onto the chunk name), 6 threads;
* reading them back cold (page cache dropped), 6 threads;
* one request round trip: ``getxattr`` of a missing name, which the kernel
  never caches.

What icefs reaches as a share of the null filesystem is what its own work
costs; the rest is the price of FUSE in Python on this machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Row,
    drop_caches,
    parse_args,
    report,
    steady_memory,
    wait_for_cue,
)
from harness.mount import Mount

FILE_SIZE = 2 << 20
THREADS = 6


# -- the null filesystem (runs in its own process) -------------------------------------------


def floor_entry(ino: int, is_dir: bool, size: int, perm: int) -> Any:
    """The pyfuse3 attributes a floor filesystem answers for *ino*: those icefs would
    give a file or directory of *size* bytes (``st_blksize``, ``st_blocks``: ``cp``
    copies a file with no blocks another way), held by the kernel for a minute."""
    import pyfuse3

    from icefs.fuse.ops import IO_BLOCK

    entry = pyfuse3.EntryAttributes()
    entry.st_ino = ino
    entry.st_mode = (stat.S_IFDIR if is_dir else stat.S_IFREG) | perm
    entry.st_nlink = 2 if is_dir else 1
    entry.st_size = size
    entry.st_blocks = (size + 511) // 512
    entry.st_blksize = IO_BLOCK
    entry.entry_timeout = entry.attr_timeout = 60.0
    return entry


def serve(mountpoint: str, entries: int = 0, dirs: int = 0) -> None:
    """Serve the null filesystem; with *entries*, also ``listing/`` of that many 1 KiB files,
    spread over ``listing/<d>/`` for d < *dirs* when *dirs* is given."""
    import pyfuse3
    import trio

    zeros = memoryview(bytes(FILE_SIZE))

    class NullFs(pyfuse3.Operations):
        enable_writeback_cache = False

        def __init__(self) -> None:
            super().__init__()
            #: inode -> [is a directory, size]
            self.nodes: dict[int, list[Any]] = {pyfuse3.ROOT_INODE: [True, 0]}
            self.next = pyfuse3.ROOT_INODE + 1
            #: directory inode -> the names in it and their inodes
            self.children: dict[int, dict[bytes, int]] = {}
            #: directory inode -> its children's names and attributes, made once (the floor
            #: of a listing: no work per entry but the reply itself)
            self.listings: dict[int, list[tuple[bytes, Any]]] = {}
            if entries:
                folder = self._add(pyfuse3.ROOT_INODE, b"listing", True)
                parents = [folder]
                if dirs:
                    subs = [self._add(folder, str(d).encode(), True) for d in range(dirs)]
                    self.listings[folder] = [
                        (str(d).encode(), self._attr(s)) for d, s in enumerate(subs)
                    ]
                    parents = subs
                per = -(-entries // len(parents))
                for parent in parents:
                    kids = []
                    for i in range(per):
                        ino = self._add(parent, str(i).encode(), False)
                        self.nodes[ino][1] = 1024
                        kids.append((str(i).encode(), self._attr(ino)))
                    self.listings[parent] = kids

        def _attr(self, ino: int) -> Any:
            is_dir, size = self.nodes[ino]
            return floor_entry(ino, is_dir, size, 0o755 if is_dir else 0o644)

        def _add(self, parent: int, name: bytes, is_dir: bool) -> int:
            names = self.children.setdefault(parent, {})
            ino = names.get(name)
            if ino is None:
                ino = names[name] = self.next
                self.next += 1
                self.nodes[ino] = [is_dir, 0]
            return ino

        async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> Any:
            ino = self.children.get(parent, {}).get(name)
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attr(ino)

        async def getattr(self, ino: int, ctx: Any = None) -> Any:
            return self._attr(ino)

        async def setattr(self, ino: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
            if fields.update_size:
                self.nodes[ino][1] = attr.st_size
            return self._attr(ino)

        async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> Any:
            return self._attr(self._add(parent, name, True))

        async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
            ino = self._add(parent, name, False)
            return pyfuse3.FileInfo(fh=ino), self._attr(ino)

        async def open(self, ino: int, flags: int, ctx: Any) -> Any:
            if flags & os.O_TRUNC:
                self.nodes[ino][1] = 0
            # as icefs opens a tag's files: the kernel keeps their pages between opens
            return pyfuse3.FileInfo(fh=ino, keep_cache=True)

        async def read(self, fh: int, off: int, size: int) -> Any:
            return zeros[: max(0, min(size, self.nodes[fh][1] - off))]

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            self.nodes[fh][1] = max(self.nodes[fh][1], off + len(buf))
            return len(buf)

        async def flush(self, fh: int) -> None:
            return None

        async def release(self, fh: int) -> None:
            return None

        async def rename(
            self, p_old: int, n_old: bytes, p_new: int, n_new: bytes, flags: int, ctx: Any
        ) -> None:
            ino = self.children[p_old].pop(n_old)
            replaced = self.children.setdefault(p_new, {}).get(n_new)
            if replaced is not None:
                del self.nodes[replaced]
            self.children[p_new][n_new] = ino

        async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
            ino = self.children.get(parent, {}).pop(name, None)
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            del self.nodes[ino]

        async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
            await self.unlink(parent, name, ctx)  # a directory goes with whatever it holds

        async def getxattr(self, ino: int, name: bytes, ctx: Any) -> bytes:
            raise pyfuse3.FUSEError(errno.ENODATA)

        async def opendir(self, ino: int, ctx: Any) -> int:
            return ino

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            kids = self.listings.get(fh)
            if kids is None:  # a written directory: what was made in it
                kids = [(n, self._attr(i)) for n, i in self.children.get(fh, {}).items()]
            for i in range(start_id, len(kids)):
                if not pyfuse3.readdir_reply(token, kids[i][0], kids[i][1], i + 1):
                    return

        async def releasedir(self, fh: int) -> None:
            return None

    options = {"fsname=nullfs", "subtype=nullfs", "default_permissions"}
    pyfuse3.init(NullFs(), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


class FloorMount:
    """A floor filesystem served by ``python <script> --serve MOUNTPOINT *args*`` in a
    subprocess (given *stdin*, if any), with icefs's kernel read-ahead."""

    def __init__(
        self, script: str, mountpoint: Path, *args: str, stdin: bytes | None = None
    ) -> None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.mountpoint = mountpoint
        self.proc = subprocess.Popen(
            [sys.executable, script, "--serve", str(mountpoint), *args],
            stdin=None if stdin is None else subprocess.PIPE,
        )
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        deadline = time.monotonic() + 60
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{Path(script).name} did not mount")
            time.sleep(0.05)
        from icefs.daemon.lifecycle import _tune_read_ahead

        _tune_read_ahead(str(mountpoint), 1024)

    def __enter__(self) -> FloorMount:
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["fusermount3", "-u", str(self.mountpoint)], check=False)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class NullMount(FloorMount):
    """`serve` in a subprocess, with icefs's read-ahead."""

    def __init__(self, mountpoint: Path, entries: int = 0, dirs: int = 0) -> None:
        super().__init__(__file__, mountpoint, str(entries), str(dirs))


# -- the measurements ------------------------------------------------------------------------


def write_files(root: Path, files: int) -> float:
    """Write *files* 2 MiB chunk files as LocalStore does; return MiB/s."""
    blob = os.urandom(FILE_SIZE)

    def work(k: int) -> None:
        for i in range(k, files, THREADS):
            folder = root / "data" / "c" / str(i) / "0"
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"0.{k}.partial"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.rename(tmp, folder / "0")

    return _threads(work, files)


def read_files(root: Path, files: int, array: str = "data") -> float:
    """Read the files `write_files` wrote (or the chunk files of a zarr *array* of
    2 MiB chunks shaped like read.py's ``big``); return MiB/s."""

    def work(k: int) -> None:
        for i in range(k, files, THREADS):
            with open(root / array / "c" / str(i) / "0" / "0", "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass

    return _threads(work, files)


def _threads(work: Any, files: int) -> float:
    """Run *work(k)* on `THREADS` threads; a failure in any of them fails the measure."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        for done in [pool.submit(work, k) for k in range(THREADS)]:
            done.result()
    return files * FILE_SIZE / (1 << 20) / (time.perf_counter() - started)


def round_trip_us(path: Path, n: int) -> float:
    """Microseconds per getxattr of a missing name (never cached by the kernel)."""
    started = time.perf_counter()
    for _ in range(n):
        with contextlib.suppress(OSError):
            os.getxattr(path, "user.absent")
    return (time.perf_counter() - started) / n * 1e6


def collect(argv: list[str] | None = None) -> tuple[list[Row], int]:
    args = parse_args(__doc__, "floor", argv, files=(256, 8), trips=(20_000, 200))
    import icechunk

    base = Path(args.dir).resolve()
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    icechunk.Repository.create(icechunk.local_filesystem_storage(str(base / "repo")))
    native = Path("/dev/shm") / f"icefs-floor-{os.getpid()}"
    best: dict[tuple[str, str], float] = {}

    def keep(kind: str, what: str, value: float, low: bool = False) -> None:
        old = best.get((kind, what))
        best[kind, what] = value if old is None else (min if low else max)(old, value)

    try:
        for _ in range(args.repeat):
            for kind in ("null", "icefs", "native"):
                shutil.rmtree(native, ignore_errors=True)
                native.mkdir()
                with _Target(kind, base, native) as root:
                    drop_caches()  # each write starts with free RAM (see write.py's settle)
                    keep(kind, "write", write_files(root, args.files))
                    drop_caches()
                    keep(kind, "read", read_files(root, args.files))
                    keep(kind, "trip", round_trip_us(root, args.trips), low=True)
    finally:
        shutil.rmtree(native, ignore_errors=True)
    mib = args.files * FILE_SIZE >> 20
    rows: list[Row] = []
    for what, label in (
        ("write", f"write {mib} MiB as 2 MiB chunk files ({THREADS} threads)"),
        ("read", f"read them back, cold ({THREADS} threads)"),
    ):
        null, ice, nat = best["null", what], best["icefs", what], best["native", what]
        rows.append(
            (
                f"floor: {label}: MiB/s",
                f"{ice:.0f}",
                f"null pyfuse3 fs {null:.0f} (tmpfs {nat:.0f})",
                f"{ice / null:.2f}x of the floor",
                "-",
            )
        )
    null, ice, nat = best["null", "trip"], best["icefs", "trip"], best["native", "trip"]
    rows.append(
        (
            "floor: one request round trip (getxattr, never cached): us",
            f"{ice:.0f}",
            f"null pyfuse3 fs {null:.0f} (tmpfs {nat:.1f})",
            f"{ice / null:.2f}x",
            "-",
        )
    )
    return rows, args.repeat


class _Target:
    """The directory one kind of target is measured in, mounted for the time it is used."""

    def __init__(self, kind: str, base: Path, native: Path) -> None:
        self.kind, self.base, self.native = kind, base, native
        self.mount: Any = None

    def __enter__(self) -> Path:
        if self.kind == "native":
            return self.native
        if self.kind == "null":
            self.mount = NullMount(self.base / "null")
            return Path(self.mount.mountpoint)
        shutil.rmtree(self.base / "repo", ignore_errors=True)
        import icechunk

        icechunk.Repository.create(icechunk.local_filesystem_storage(str(self.base / "repo")))
        self.mount = Mount(
            str(self.base / "repo"), self.base / "mnt", "--cache-dir", str(self.base / "cache")
        )
        root = self.mount.mountpoint / "branches" / "main"
        _make_array(root)
        return Path(root)

    def __exit__(self, *exc: object) -> None:
        if self.mount is not None:
            self.mount.__exit__(*exc)


def _make_array(root: Path) -> None:
    """icefs stores chunks only inside an array: make ``data`` big enough for every file."""
    import zarr

    group = zarr.open_group(str(root), mode="w")
    # uncompressed chunks of exactly FILE_SIZE bytes: icefs checks each chunk it stores
    group.create_array(
        "data",
        shape=(1 << 20, 1024, FILE_SIZE // 1024),
        chunks=(1, 1024, FILE_SIZE // 1024),
        dtype="u1",
        compressors=None,
    )


def read_on_cue(root: str, files: int) -> None:
    """`read_files` under *root* when read.py says go (`at_once`): it reads Icechunk
    meanwhile."""
    wait_for_cue()
    read_files(Path(root), files)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) in (3, 4, 5) and sys.argv[1] == "--serve":
        serve(sys.argv[2], *(int(a) for a in sys.argv[3:]))
        return 0
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--read-on-cue":
        read_on_cue(sys.argv[2], int(sys.argv[3]))
        return 0
    with steady_memory():
        rows, repeat = collect(argv)
    report(f"icefs FUSE floor ({repeat} repeats, best)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
