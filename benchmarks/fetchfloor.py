"""The fetching floor: the least a pyfuse3 filesystem that reads through Icechunk can do.

    python benchmarks/fetchfloor.py --serve MOUNTPOINT < where.json

A read-only filesystem of one array of one tag (``<array>/zarr.json`` and its
chunk files), written for the benchmark's readers and nothing else: it knows in
advance the order they ask for chunks (C order of the coordinates, which is
also the order of its directory listings) and fetches them in that order
through Icechunk, `IN_FLIGHT` gets at a time, up to `WINDOW` chunks past the
furthest chunk read, from the first read on. Fetched bytes are served straight
from Icechunk's buffers and dropped once every byte of them was sent. No
checks, inodes that never go away, no control files, no stats.

It runs as icefs does: pyfuse3's loop on trio, Icechunk's gets on its own
threads and an asyncio loop, one process, one GIL. What it reaches is what
that shape reaches on this machine, with perfect read-ahead; what icefs reaches
below it is its own work. *where.json* names the S3 repository (`Where`); it
comes on standard input to keep the key out of ``ps``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sys
import threading
from pathlib import Path
from typing import Any, Final, TypedDict

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.floor import FloorMount, floor_entry

#: Gets in flight at most.
IN_FLIGHT: Final = 16
#: Chunks fetched past the furthest chunk read, at most (2 MiB chunks: 128 MiB).
WINDOW: Final = 64


class Where(TypedDict):
    """The repository, tag and array the floor serves."""

    bucket: str
    prefix: str
    endpoint: str
    key_id: str
    secret: str
    tag: str
    array: str


class _Chunks:
    """The array's chunks: fetched in order on the asyncio loop, waited for on trio.

    *keys* are the chunk keys in the order the readers want them.  State shared by
    the two threads is guarded by one lock; each side wakes the other through its
    own loop's thread-safe entry.
    """

    def __init__(self, raw: Any, keys: list[str], loop: asyncio.AbstractEventLoop) -> None:
        self.raw, self.keys, self.loop = raw, keys, loop
        self.token: trio.lowlevel.TrioToken | None = None
        self.lock = threading.Lock()
        self.held: dict[int, Any] = {}
        self.waiting: dict[int, trio.Event] = {}
        self.asked: set[int] = set()
        self.sent: dict[int, int] = {}  # bytes of a held chunk sent so far
        self.furthest = -1  # the furthest chunk read
        self.next = 0  # the next chunk the scan fetches
        self.in_flight = 0
        self.more = asyncio.Event()  # on the loop: the scan may go on

    async def get(self, index: int) -> Any:
        """The bytes of chunk *index* (on trio)."""
        with self.lock:
            data = self.held.get(index)
            if data is not None and not isinstance(data, Exception):
                self._read_to(index)
                return data
            event = self.waiting.get(index)
            if event is None:
                event = self.waiting[index] = trio.Event()
            if index not in self.asked and index < self.next:  # dropped: fetch it again
                self.asked.add(index)
                self.in_flight += 1
                self.loop.call_soon_threadsafe(self._start, index)
            self._read_to(index)
        await event.wait()
        with self.lock:
            data = self.held.get(index)
        if data is None:  # sent in full to another read meanwhile: fetch it again
            return await self.get(index)
        if isinstance(data, Exception):
            raise OSError(f"get {self.keys[index]}: {data!r}")
        return data

    def served(self, index: int, size: int, length: int) -> None:
        """*size* bytes of chunk *index* (*length* in all) were sent; once all of them
        were, it goes (on trio)."""
        with self.lock:
            done = self.sent.get(index, 0) + size
            if done < length:
                self.sent[index] = done
            else:
                self.sent.pop(index, None)
                self.held.pop(index, None)

    def _read_to(self, index: int) -> None:
        if index > self.furthest:
            self.furthest = index
            self.loop.call_soon_threadsafe(self.more.set)

    async def scan(self) -> None:
        """Fetch the chunks in order, within the window (on the loop)."""
        while self.next < len(self.keys):
            await self.more.wait()
            self.more.clear()
            with self.lock:
                while (
                    self.next < len(self.keys)
                    and self.next <= self.furthest + WINDOW
                    and self.in_flight < IN_FLIGHT
                ):
                    if self.next not in self.asked:
                        self.asked.add(self.next)
                        self.in_flight += 1
                        self._start(self.next)
                    self.next += 1

    def _start(self, index: int) -> None:
        self.loop.create_task(self._fetch(index))

    async def _fetch(self, index: int) -> None:
        try:
            data = await self.raw.get(self.keys[index], (None, None))
        except Exception as exc:  # the read that waits for it fails, not the scan
            data = exc
        with self.lock:
            self.in_flight -= 1
            self.asked.discard(index)
            self.held[index] = data
            event = self.waiting.pop(index, None)
        if event is not None and self.token is not None:
            self.token.run_sync_soon(event.set)
        self.more.set()


def _order(key: str) -> tuple[Any, ...]:
    """Names that are numbers sort as numbers: C order of chunk coordinates."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in key.split("/"))


def serve(mountpoint: str, where: Where) -> None:
    """Serve *where*'s array at *mountpoint* until unmounted."""
    import icechunk
    import pyfuse3

    storage = icechunk.s3_storage(
        bucket=where["bucket"],
        prefix=where["prefix"],
        region="us-east-1",
        endpoint_url=where["endpoint"],
        allow_http=True,
        force_path_style=True,
        access_key_id=where["key_id"],
        secret_access_key=where["secret"],
    )
    store = icechunk.Repository.open(storage).readonly_session(tag=where["tag"]).store
    raw = store._store  # Icechunk's own store: gets return its buffers, not copies
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def listing() -> tuple[dict[str, int], dict[str, Any]]:
        keys = [k async for k in store.list_prefix(where["array"] + "/")]
        sizes = {k: await store.getsize(k) for k in keys}
        meta = {k: await raw.get(k, (None, None)) for k in keys if k.endswith("zarr.json")}
        return sizes, meta

    sizes, meta = asyncio.run_coroutine_threadsafe(listing(), loop).result()
    chunk_keys = sorted((k for k in sizes if k not in meta), key=_order)
    chunks = _Chunks(raw, chunk_keys, loop)
    index = {k: i for i, k in enumerate(chunk_keys)}
    asyncio.run_coroutine_threadsafe(chunks.scan(), loop)

    class FetchFs(pyfuse3.Operations):
        def __init__(self) -> None:
            super().__init__()
            #: inode -> (key, size) of a file, or (None, 0) of a directory
            self.nodes: dict[int, tuple[str | None, int]] = {pyfuse3.ROOT_INODE: (None, 0)}
            self.children: dict[int, dict[bytes, int]] = {pyfuse3.ROOT_INODE: {}}
            for key in sorted(sizes, key=_order):
                parent, *dirs, name = [pyfuse3.ROOT_INODE, *key.split("/")]
                for d in dirs:
                    parent = self._add(parent, d.encode(), None, 0)
                self._add(parent, name.encode(), key, sizes[key])

        def _add(self, parent: int, name: bytes, key: str | None, size: int) -> int:
            ino = self.children[parent].get(name)
            if ino is None:
                ino = self.children[parent][name] = len(self.nodes) + 1
                self.nodes[ino] = (key, size)
                if key is None:
                    self.children[ino] = {}
            return ino

        def _attr(self, ino: int) -> Any:
            key, size = self.nodes[ino]
            return floor_entry(ino, key is None, size, 0o555 if key is None else 0o444)

        async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> Any:
            ino = self.children.get(parent, {}).get(name)
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attr(ino)

        async def getattr(self, ino: int, ctx: Any = None) -> Any:
            return self._attr(ino)

        async def open(self, ino: int, flags: int, ctx: Any) -> Any:
            return pyfuse3.FileInfo(fh=ino, keep_cache=True)

        async def read(self, fh: int, off: int, size: int) -> Any:
            key, length = self.nodes[fh]
            assert key is not None
            if key in meta:
                return memoryview(meta[key])[off : off + size]
            i = index[key]
            try:
                data = await chunks.get(i)
            except OSError as exc:
                print(exc, file=sys.stderr)
                raise pyfuse3.FUSEError(errno.EIO) from None
            reply = memoryview(data)[off : off + size]
            chunks.served(i, len(reply), length)
            return reply

        async def release(self, fh: int) -> None:
            return None

        async def flush(self, fh: int) -> None:
            return None

        async def getxattr(self, ino: int, name: bytes, ctx: Any) -> bytes:
            raise pyfuse3.FUSEError(errno.ENODATA)

        async def opendir(self, ino: int, ctx: Any) -> int:
            return ino

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            kids = list(self.children[fh].items())
            for i in range(start_id, len(kids)):
                if not pyfuse3.readdir_reply(token, kids[i][0], self._attr(kids[i][1]), i + 1):
                    return

        async def releasedir(self, fh: int) -> None:
            return None

    async def main() -> None:
        chunks.token = trio.lowlevel.current_trio_token()
        await pyfuse3.main()

    options = {"fsname=fetchfloor", "subtype=fetchfloor", "default_permissions", "ro"}
    pyfuse3.init(FetchFs(), mountpoint, options)
    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)


class FetchMount(FloorMount):
    """`serve` of *where* at *mountpoint* in a subprocess, with icefs's kernel read-ahead."""

    def __init__(self, mountpoint: Path, where: Where) -> None:
        super().__init__(__file__, mountpoint, stdin=json.dumps(where).encode())


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--serve":
        sys.exit(__doc__)
    serve(sys.argv[2], json.load(sys.stdin))
