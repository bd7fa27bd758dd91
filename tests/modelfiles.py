"""How the model-based test (test_model.py) reaches a branch: `MountFiles` through a real
mount with system calls, `CoreFiles` straight on the filesystem core; and the repository
both start from (`seed`)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import icechunk
import trio
import zarr
from zarr.core.buffer import default_buffer_prototype

from harness.mount import Mount
from icefs.errors import IcefsError
from icefs.fs import AttrChange, Filesystem, MountOptions
from icefs.fs.inodes import ROOT_INODE
from icefs.store import Bridge, Repo
from icefs.store.sample import sample_storage

CHUNKS = [f"a/c/{i}" for i in range(4)]  # of a 1-d array of 8 chunks (4-7 stay)


def _errno(fn, *args) -> int:
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno or -1
    return 0


def seed(repo: icechunk.Repository) -> dict[str, bytes]:
    """Give *repo* the array ``a``; return its committed chunk files by name."""
    session = repo.writable_session("main")
    # Variable-length strings: their chunks have no fixed size and no compressor's
    # framing, so the default checks (verify_chunks=frame) take any bytes as a chunk
    # and the model can treat chunk files as opaque bytes.
    array = zarr.group(store=session.store).create_array(
        "a", shape=(8,), chunks=(1,), dtype=str, compressors=None
    )
    array[:] = [str(i) for i in range(1, 9)]  # every chunk stored: a/c exists
    session.commit("base")
    return {k: chunk_at_tip(repo, k) or b"" for k in CHUNKS}


def chunk_at_tip(repo: icechunk.Repository, key: str) -> bytes | None:
    """*key* at the tip of main, read straight from Icechunk (no icefs involved)."""
    store = repo.readonly_session(branch="main").store

    async def get() -> bytes | None:
        buf = await store.get(key, default_buffer_prototype())
        return None if buf is None else buf.to_bytes()

    return asyncio.run(get())


class MountFiles:
    """The branch through a real mount of a local repository: system calls."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = icechunk.Repository.create(sample_storage(str(tmp / "repo")))
        self.committed = seed(self.repo)
        self.mount = self._mount()

    def _mount(self) -> Mount:
        return Mount(
            str(self.tmp / "repo"),
            self.tmp / "mnt",
            "--cache-dir",
            str(self.tmp / "cache"),
            log=self.tmp / "mount.log",
        )

    def path(self, name: str) -> Path:
        return self.mount.mountpoint / "branches" / "main" / name

    def write(self, name: str, offset: int, data: bytes) -> int:
        fd = os.open(self.path(name), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, offset)
        finally:
            got = _errno(os.close, fd)
        return got

    def create_truncating(self, name: str, data: bytes) -> int:
        fd = os.open(self.path(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            got = _errno(os.close, fd)
        return got

    def truncate(self, name: str, size: int) -> int:
        return _errno(os.truncate, self.path(name), size)

    def unlink(self, name: str) -> int:
        return _errno(os.unlink, self.path(name))

    def rename(self, src: str, dst: str) -> int:
        return _errno(os.rename, self.path(src), self.path(dst))

    def link(self, src: str, dst: str) -> int:
        return _errno(os.link, self.path(src), self.path(dst))

    def mkdir(self, name: str) -> int:
        return _errno(os.mkdir, self.path(name))

    def rmdir(self, name: str) -> int:
        return _errno(os.rmdir, self.path(name))

    def read(self, name: str) -> bytes | int:
        try:
            return self.path(name).read_bytes()
        except OSError as exc:
            return exc.errno or -1

    def pread(self, name: str, offset: int, size: int) -> bytes:
        fd = os.open(self.path(name), os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self.path(name)).st_size
        except FileNotFoundError:
            return None

    def listing(self) -> set[str]:
        return set(os.listdir(self.path("")))

    def commit(self, message: str) -> None:
        (self.path(".icefs") / "commit").write_text(message)

    def discard(self) -> None:
        (self.path(".icefs") / "discard").write_text("1")

    def remount(self) -> None:
        assert self.mount.umount() == 0  # commits at unmount
        self.mount = self._mount()

    def close(self) -> None:
        self.mount.stop()


class CoreFiles:
    """The branch straight on the filesystem core, over an in-memory repository.

    The core's requests run in a trio thread of their own; each operation makes
    the requests the kernel would (lookups, then open/create, write, flush,
    release, and so on), and errors come back as errno values.
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.repo = icechunk.Repository.create(icechunk.in_memory_storage())
        self.committed = seed(self.repo)
        self.bridge = Bridge()
        self._token: trio.lowlevel.TrioToken | None = None
        ready = threading.Event()
        self._stop: trio.Event | None = None

        async def serve() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            ready.set()
            await self._stop.wait()

        self._thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
        self._thread.start()
        ready.wait()
        self.fs = self._build()

    def _build(self) -> Filesystem:
        fs = Filesystem.build(
            Repo(self.repo, self.bridge, "memory://"),
            MountOptions(cache_dir=str(self.tmp / "cache")),
        )
        self._run(fs.start, recover=False)
        return fs

    def _run(self, fn, *args, **kwargs):
        async def call():
            return await fn(*args, **kwargs)

        return trio.from_thread.run(call, trio_token=self._token)

    def _errno(self, fn, *args, **kwargs) -> int:
        try:
            self._run(fn, *args, **kwargs)
        except IcefsError as exc:
            return exc.errno
        return 0

    @property
    def core(self):
        return self.fs.core

    async def _ino(self, name: str) -> int:
        ino = ROOT_INODE
        for part in ("branches", "main", *filter(None, name.split("/"))):
            ino = (await self.core.lookup(ino, part)).ino
        return ino

    async def _parent(self, name: str) -> tuple[int, str]:
        parent, _, leaf = name.rpartition("/")
        return await self._ino(parent), leaf

    async def _write(self, name: str, offset: int, data: bytes, truncate: bool) -> None:
        # As the kernel does: a lookup first; an existing file is opened, not created.
        parent, leaf = await self._parent(name)
        flags = os.O_WRONLY | (os.O_TRUNC if truncate else 0)
        try:
            ino = (await self.core.lookup(parent, leaf)).ino
        except IcefsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            reply, _ = await self.core.create(parent, leaf, flags | os.O_CREAT)
        else:
            reply = await self.core.open(ino, flags)
        try:
            if data:
                await self.core.write(reply.fh, offset, data)
            await self.core.flush(reply.fh)
        finally:
            self.core.release(reply.fh)

    def write(self, name: str, offset: int, data: bytes) -> int:
        return self._errno(self._write, name, offset, data, False)

    def create_truncating(self, name: str, data: bytes) -> int:
        return self._errno(self._write, name, 0, data, True)

    async def _truncate(self, name: str, size: int) -> None:
        await self.core.setattr(await self._ino(name), AttrChange(size=size))

    def truncate(self, name: str, size: int) -> int:
        return self._errno(self._truncate, name, size)

    async def _unlink(self, name: str) -> None:
        await self._ino(name)  # the kernel looks the name up first
        await self.core.unlink(*(await self._parent(name)))

    def unlink(self, name: str) -> int:
        return self._errno(self._unlink, name)

    async def _rename(self, src: str, dst: str) -> None:
        await self._ino(src)
        if src == dst:
            return  # the kernel answers this itself
        old, old_name = await self._parent(src)
        new, new_name = await self._parent(dst)
        await self.core.rename(old, old_name, new, new_name)

    def rename(self, src: str, dst: str) -> int:
        return self._errno(self._rename, src, dst)

    async def _link(self, src: str, dst: str) -> None:
        ino = await self._ino(src)
        new, new_name = await self._parent(dst)
        await self.core.link(ino, new, new_name)

    def link(self, src: str, dst: str) -> int:
        return self._errno(self._link, src, dst)

    async def _mkdir(self, name: str) -> None:
        await self.core.mkdir(*(await self._parent(name)))

    def mkdir(self, name: str) -> int:
        return self._errno(self._mkdir, name)

    async def _rmdir(self, name: str) -> None:
        await self._ino(name)
        await self.core.rmdir(*(await self._parent(name)))

    def rmdir(self, name: str) -> int:
        return self._errno(self._rmdir, name)

    async def _read(self, name: str, offset: int = 0, size: int = 1 << 20) -> bytes:
        reply = await self.core.open(await self._ino(name), os.O_RDONLY)
        try:
            return bytes(await self.core.read(reply.fh, offset, size))
        finally:
            self.core.release(reply.fh)

    def read(self, name: str) -> bytes | int:
        try:
            return self._run(self._read, name)
        except IcefsError as exc:
            return exc.errno

    def pread(self, name: str, offset: int, size: int) -> bytes:
        return self._run(self._read, name, offset, size)

    async def _size(self, name: str) -> int:
        return (await self.core.getattr(await self._ino(name))).size

    def size(self, name: str) -> int | None:
        try:
            return self._run(self._size, name)
        except IcefsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            return None

    async def _listing(self) -> set[str]:
        fh = await self.core.opendir(await self._ino(""))
        try:
            return {node.path[-1] for node in self.core.readdir(fh, 0).entries}
        finally:
            self.core.releasedir(fh)

    def listing(self) -> set[str]:
        return self._run(self._listing)

    async def _control(self, name: str, text: str) -> None:
        reply = await self.core.open(await self._ino(f".icefs/{name}"), os.O_WRONLY)
        try:
            await self.core.write(reply.fh, 0, text.encode())
        finally:
            self.core.release(reply.fh)

    def commit(self, message: str) -> None:
        self._run(self._control, "commit", message)

    def discard(self) -> None:
        self._run(self._control, "discard", "1")

    def remount(self) -> None:
        self._run(self.fs.shutdown, "commit", "memory://")  # commits, as at unmount
        self.fs.close()
        self.fs = self._build()

    def close(self) -> None:
        self.fs.close()
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=10)
        self.bridge.close()
