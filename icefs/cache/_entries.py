"""The read cache's files: verified entries in shards, their accounting and eviction.

Blocking file calls only: `icefs.cache.ReadCache` runs them in worker threads, the
``icefs cache`` command directly.  Every daemon on the host that names the same
directory shares it; all that they change they change under locks (``flock``) or by
atomic renames, so any number of them may fill, read and evict at once.

Layout below the directory (0700, entries 0600)::

    <shard>/<name>      an entry: header, the key it holds, the bytes (16 shards 0-f)
    <shard>/.state      "<bytes> <entries>" of the shard, changed under its flock
    tmp/<pid>.<random>  an entry being written; renamed into its shard when complete
    fill/<name>         held (flock) by the one process fetching that entry now

An entry's *name* is a hash of its key, and the entry repeats the key: an entry is
served only for the key it was written for.  It carries the xxh3-128 digest of its
bytes, checked on every read: a torn or damaged entry (a crash before the kernel
wrote it out, a bad disk) is removed and reported, never served.

Each shard keeps to a sixteenth of the bound: a fill that takes it past its share
first removes the shard's least recently used entries (a read touches an entry's
mtime) until it is at `LOW_WATER` of the share.  So the whole cache stays at most at
its bound and, once full, within about 5% under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import xxhash

if TYPE_CHECKING:
    from collections.abc import Buffer, Iterator

__all__ = ["SHARDS", "Damaged", "EntryStore", "Scan", "default_size"]

log = logging.getLogger(__name__)

SHARDS: Final = tuple("0123456789abcdef")
#: Entries start with this (and the format's version).
MAGIC: Final = b"ICEFSRC1"
#: magic, digest of the bytes (16), length of the key, length of the bytes
_HEADER: Final = struct.Struct("<8s16sIQ")
#: A shard past its share is trimmed to this part of it.
LOW_WATER: Final = 0.95
#: A file in tmp/ older than this is a crashed daemon's unfinished fill.
STALE_TMP_SECONDS: Final = 3600.0
#: The default bound: at most this, and at most `FREE_SHARE` of the free space.
DEFAULT_MAX: Final = 10 << 30
FREE_SHARE: Final = 0.10


def default_size(directory: str) -> int:
    """The default bound of a cache in *directory*: the smaller of `DEFAULT_MAX` and
    `FREE_SHARE` of the free space of the filesystem holding it (or its nearest parent)."""
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return min(DEFAULT_MAX, int(st.f_bavail * st.f_frsize * FREE_SHARE))


class Damaged(Exception):
    """An entry failed its check: why."""


@dataclass(slots=True)
class Scan:
    """What a pass over the cache found (``icefs cache stats|prune``)."""

    entries: int = 0
    bytes: int = 0
    damaged: int = 0
    evicted: int = 0
    leftovers: int = 0


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _pack(key: bytes, data: Buffer) -> bytes:
    digest = xxhash.xxh3_128_digest(data)
    return _HEADER.pack(MAGIC, digest, len(key), memoryview(data).nbytes) + key


def _unpack(blob: bytes, key: bytes | None) -> memoryview:
    """The bytes an entry holds; `Damaged` if it is not whole or not for *key* (None: any)."""
    if len(blob) < _HEADER.size:
        raise Damaged("shorter than its header")
    magic, digest, key_len, data_len = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise Damaged("not an entry of this version")
    start = _HEADER.size + key_len
    if len(blob) != start + data_len:
        raise Damaged(f"{len(blob)} bytes, its header says {start + data_len}")
    if key is not None and blob[_HEADER.size : start] != key:
        raise Damaged("holds another key")
    data = memoryview(blob)[start:]
    if xxhash.xxh3_128_digest(data) != digest:
        raise Damaged("its bytes do not match their digest")
    return data


class EntryStore:
    """The entries in *directory*, kept within *limit* bytes (see the module doc)."""

    def __init__(self, directory: str, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        for sub in (*SHARDS, "tmp", "fill"):
            os.makedirs(os.path.join(directory, sub), mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)

    # -- reading -------------------------------------------------------------------------------

    def path(self, key: str) -> str:
        name = _name(key)
        return os.path.join(self.directory, name[0], name)

    def read(self, key: str) -> memoryview | None:
        """The bytes cached for *key*, checked; None if there are none.

        `Damaged` if the entry failed its check: it has been removed (and uncounted).
        """
        path = self.path(key)
        try:
            blob = _load(path)
        except FileNotFoundError:
            return None
        try:
            data = _unpack(blob, key.encode())
        except Damaged:
            self._remove(path)
            raise
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used goes first
        return data

    # -- filling -------------------------------------------------------------------------------

    def claim(self, key: str) -> int | None:
        """Take the right to fetch and fill *key*: an open, locked file to hand back to
        `release`; None while another process or task holds it."""
        path = os.path.join(self.directory, "fill", _name(key))
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def release(self, key: str, claim: int) -> None:
        """End the fill of *key* that `claim` allowed (filled or not)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, "fill", _name(key)))
        os.close(claim)

    def write(self, key: str, data: Buffer) -> int:
        """Store *data* as the entry of *key*, evicting to keep the bound; return how many
        entries were evicted for it.  OSError (ENOSPC...) leaves nothing behind."""
        raw = key.encode()
        head = _pack(raw, data)
        size = len(head) + memoryview(data).nbytes
        if size > self.limit // len(SHARDS):
            return 0  # bigger than a shard's share: never cached
        tmp = os.path.join(self.directory, "tmp", f"{os.getpid()}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _write_all(fd, head, data)
            finally:
                os.close(fd)
            path = self.path(key)
            with self._shard(os.path.basename(os.path.dirname(path))) as shard:
                replaced = _size_of(path)
                evicted = shard.add(size - replaced, 0 if replaced else 1, self.limit)
                os.rename(tmp, path)
            return evicted
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _remove(self, path: str) -> None:
        """Remove the damaged entry at *path* and count its shard again (what the entry
        was counted as is not known: its header may be the damaged part)."""
        with self._shard(os.path.basename(os.path.dirname(path))) as shard:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            shard.recount(shard.entries())

    @contextlib.contextmanager
    def _shard(self, shard: str) -> Iterator[_Shard]:
        fd = os.open(os.path.join(self.directory, shard, ".state"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield _Shard(fd, os.path.join(self.directory, shard))
        finally:
            os.close(fd)  # releases the lock

    # -- the whole cache -------------------------------------------------------------------------

    def counted(self) -> tuple[int, int]:
        """(bytes, entries) as the shards' accounting has them (no scan)."""
        total = count = 0
        for shard in SHARDS:
            with self._shard(shard) as state:
                size, n = state.load()
            total, count = total + size, count + n
        return total, count

    def scan(self, *, verify: bool = False, trim_to: int | None = None) -> Scan:
        """Count every entry again (fixing each shard's accounting); with *verify*, read and
        check each one, removing the damaged; with *trim_to*, evict to that bound; remove
        leftovers of crashed fills."""
        found = Scan(leftovers=self.sweep())
        for shard in SHARDS:
            with self._shard(shard) as state:
                entries = state.entries()
                if verify:
                    kept = []
                    for path, size, mtime in entries:
                        try:
                            _unpack(_load(path), None)
                            kept.append((path, size, mtime))
                        except Damaged:
                            found.damaged += 1
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(path)
                        except FileNotFoundError:
                            pass
                    entries = kept
                state.recount(entries)
                if trim_to is not None:
                    found.evicted += state.add(0, 0, trim_to, entries)
                size, count = state.load()
            found.bytes += size
            found.entries += count
        return found

    def clear(self) -> int:
        """Remove every entry; return how many there were."""
        removed = 0
        for shard in SHARDS:
            with self._shard(shard) as state:
                for path, _, _ in state.entries():
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                        removed += 1
                state.store(0, 0)
        self.sweep()
        return removed

    def sweep(self) -> int:
        """Remove what crashed fills left in tmp/: files of processes that are gone, and any
        older than `STALE_TMP_SECONDS`; return how many."""
        removed = 0
        now = time.time()
        for entry in os.scandir(os.path.join(self.directory, "tmp")):
            pid = entry.name.partition(".")[0]
            try:
                old = now - entry.stat().st_mtime > STALE_TMP_SECONDS
            except FileNotFoundError:
                continue
            if old or not (pid.isdigit() and os.path.exists(f"/proc/{pid}")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        return removed


def _load(path: str) -> bytes:
    """The whole file at *path*, asked of the disk in one request (not a readahead
    window at a time)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
        return _read_all(fd, size)
    finally:
        os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    """The *size* bytes of *fd* from its start (fewer if it is shorter)."""
    blob = os.read(fd, size)
    if len(blob) < size:  # a short read: ask for the rest
        parts = [blob]
        while part := os.read(fd, size - sum(map(len, parts))):
            parts.append(part)
        blob = b"".join(parts)
    return blob


def _write_all(fd: int, head: bytes, data: Buffer) -> None:
    parts = [memoryview(head), memoryview(data).cast("B")]
    while parts:
        written = os.writev(fd, parts)
        while parts and written >= len(parts[0]):
            written -= len(parts.pop(0))
        if parts:
            parts[0] = parts[0][written:]


def _size_of(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class _Shard:
    """One shard's accounting, while its lock is held."""

    def __init__(self, fd: int, directory: str) -> None:
        self._fd = fd
        self._dir = directory

    def load(self) -> tuple[int, int]:
        raw = os.pread(self._fd, 64, 0).split()
        try:
            return max(0, int(raw[0])), max(0, int(raw[1]))
        except (IndexError, ValueError):
            return 0, 0

    def store(self, size: int, count: int) -> None:
        text = f"{max(0, size)} {max(0, count)}\n".encode()
        os.pwrite(self._fd, text.ljust(40), 0)

    def recount(self, entries: list[tuple[str, int, float]]) -> None:
        """Count the shard as holding *entries* (`entries`), whatever it counted before."""
        self.store(sum(e[1] for e in entries), len(entries))

    def entries(self) -> list[tuple[str, int, float]]:
        """Every entry of the shard: (path, size, mtime)."""
        out = []
        for entry in os.scandir(self._dir):
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            out.append((entry.path, st.st_size, st.st_mtime))
        return out

    def add(
        self,
        size: int,
        count: int,
        limit: int,
        entries: list[tuple[str, int, float]] | None = None,
    ) -> int:
        """Count *size* bytes and *count* entries more; if that takes the shard past its
        share of *limit*, evict the least recently used to `LOW_WATER` of the share
        (counting them again first).  Return how many were evicted."""
        total, n = self.load()
        total, n = total + size, n + count
        share = limit // len(SHARDS)
        evicted = 0
        if total > share:
            entries = self.entries() if entries is None else entries
            total = sum(e[1] for e in entries) + max(size, 0)
            n = len(entries) + max(count, 0)
            for path, entry_size, _ in sorted(entries, key=lambda e: e[2]):
                if total <= share * LOW_WATER:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                total, n, evicted = total - entry_size, n - 1, evicted + 1
        self.store(total, n)
        return evicted
