"""Write buffers: file contents being written, in RAM up to a mount-wide bound, then on disk.

A `SpoolFile` starts as a bytearray.  When a write would take the mount's
in-memory total past the `SpoolBudget`, that file moves to a temporary file
in the cache directory and stays there.  Memory therefore stays bounded
however large a file grows; the cache directory is removed at unmount.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import tempfile
import weakref
from typing import Final

__all__ = ["SpoolBudget", "SpoolFile"]

log = logging.getLogger(__name__)

#: Largest size any file may reach: writes and truncates past it get EFBIG.
MAX_FILE_SIZE: Final = 1 << 40
#: The largest hole (a truncate up, a write past the end) filled with zeros in RAM;
#: a larger one sends the file to disk, where it stays sparse.
HOLE_IN_MEMORY: Final = 1 << 20
#: Appends are kept as they came while the file is at most this big (chunk files);
#: past it they are joined into one buffer, so joining never holds a large file twice.
KEEP_PARTS_UP_TO: Final = 8 << 20
#: A file on disk up to this size is handed to storage as a copy, never as a map of
#: the spool file. Icechunk keeps the buffer of a chunk it stores inline (up to the
#: repository's inline threshold, 512 bytes by default) until the commit: a map would
#: let a later write to the file change what was stored, and a truncate crash the
#: daemon when the commit reads it (SIGBUS). Larger chunks are written out before
#: the store returns.
COPY_FROM_DISK_UP_TO: Final = 1 << 20


def _start_time(pid: int) -> str | None:
    """The start time of process *pid* (clock ticks since boot), None if it is gone or a zombie.

    A zombie is a dead daemon whose parent has not reaped it: its spool is an orphan too.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _remove_orphans(cache_dir: str) -> None:
    """Remove spool directories of daemons that died without cleaning up (SIGKILL).

    A directory is ``spool-<pid>-<start time>-<random>``: the pid alone could name a
    new process that took the dead daemon's number.
    """
    for name in os.listdir(cache_dir):
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != "spool" or not parts[1].isdigit():
            continue
        started = _start_time(int(parts[1]))
        if started is None or (len(parts) >= 4 and parts[2].isdigit() and parts[2] != started):
            log.info("removing the spool of daemon %s, which is gone: %s", parts[1], name)
            shutil.rmtree(os.path.join(cache_dir, name), ignore_errors=True)


class SpoolBudget:
    """The RAM allowance shared by every `SpoolFile` of a mount, and their cache directory."""

    def __init__(self, limit: int, cache_dir: str) -> None:
        self.limit = limit
        self.in_memory = 0
        self.spilled_files = 0
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        _remove_orphans(cache_dir)
        self.directory = tempfile.mkdtemp(
            prefix=f"spool-{os.getpid()}-{_start_time(os.getpid())}-", dir=cache_dir
        )

    def cleanup(self) -> None:
        """Remove the spool directory and everything in it."""
        shutil.rmtree(self.directory, ignore_errors=True)


class SpoolFile:
    """A growable byte buffer with random access, spilling to disk past the budget.

    In memory, a write that appends (how files are nearly always written) keeps
    the bytes object it came in, without copying it, up to `KEEP_PARTS_UP_TO`;
    the first access of another kind, or a larger size, joins the kept parts
    into one buffer. A chunk file written in a few appends and then stored
    therefore costs one copy here instead of three.
    """

    def __init__(self, budget: SpoolBudget, data: bytes = b"") -> None:
        self._budget = budget
        #: in memory, the contents are `_mem` followed by `_parts`; `_mem` is None on disk
        self._mem: bytearray | None = bytearray()
        self._parts: list[bytes] = []
        self._fd: int | None = None
        self._size = 0
        #: the map of the file on disk `contents` last handed out, while anyone holds it
        self._map: weakref.ref[mmap.mmap] | None = None
        if data:
            self.write(0, data)

    @property
    def size(self) -> int:
        return self._size

    @property
    def on_disk(self) -> bool:
        return self._fd is not None

    def _joined(self) -> bytearray:
        """The in-memory contents as one buffer (appended parts copied in once)."""
        assert self._mem is not None
        for part in self._parts:
            self._mem += part
        self._parts.clear()
        return self._mem

    def _new_file(self) -> int:
        fd, path = tempfile.mkstemp(dir=self._budget.directory)
        os.unlink(path)  # the descriptor keeps it; nothing is left behind on a crash
        return fd

    def _spill(self) -> None:
        mem = self._joined()
        fd = self._new_file()
        os.pwrite(fd, mem, 0)
        self._budget.in_memory -= len(mem)
        self._budget.spilled_files += 1
        self._mem = None
        self._fd = fd
        log.debug("write buffer of %d bytes moved to disk", self._size)

    def _room_in_memory(self, grow: int, hole: int) -> bool:
        """Whether the file may grow by *grow* bytes, *hole* of them zeros, in RAM.

        Not past the budget, and no hole (a truncate up, a write past the end) over
        `HOLE_IN_MEMORY`: that goes to disk, where the file system keeps it sparse
        (no RAM and no disk for the hole).
        """
        return hole <= HOLE_IN_MEMORY and self._budget.in_memory + grow <= self._budget.limit

    def write(self, offset: int, data: bytes) -> int:
        """Write *data* at *offset* (a gap is zero-filled); return the count written.

        Raises `OverflowError` past `MAX_FILE_SIZE`.
        """
        end = offset + len(data)
        if end > MAX_FILE_SIZE:
            raise OverflowError("file too large")
        grow = max(0, end - self._size)
        if (
            self._mem is not None
            and grow
            and not self._room_in_memory(grow, hole=max(0, offset - self._size))
        ):
            self._spill()
        if self._mem is not None:
            if offset == self._size and end <= KEEP_PARTS_UP_TO and data and type(data) is bytes:
                self._parts.append(data)  # bytes never change: keeping it is safe
            else:
                mem = self._joined()
                if offset > len(mem):
                    mem.extend(bytes(offset - len(mem)))
                mem[offset:end] = data
            self._budget.in_memory += grow
        else:
            assert self._fd is not None
            os.pwrite(self._fd, data, offset)
        self._size = max(self._size, end)
        return len(data)

    def read(self, offset: int, size: int) -> bytes:
        """Return up to *size* bytes from *offset*."""
        if self._mem is not None:
            return bytes(self._joined()[offset : offset + size])
        assert self._fd is not None
        return os.pread(self._fd, max(0, min(size, self._size - offset)), offset)

    def truncate(self, size: int) -> None:
        """Cut or zero-extend the file to *size* bytes (a large extension stays sparse).

        Raises `OverflowError` past `MAX_FILE_SIZE`, before anything changes.
        """
        if size > MAX_FILE_SIZE:
            raise OverflowError("file too large")
        if (
            self._mem is not None
            and size > self._size
            and not self._room_in_memory(size - self._size, hole=size - self._size)
        ):
            self._spill()
        if self._mem is not None:
            mem = self._joined()
            if size < len(mem):
                self._budget.in_memory -= len(mem) - size
                del mem[size:]
            elif size > len(mem):
                self.write(len(mem), bytes(size - len(mem)))
        else:
            assert self._fd is not None
            if size < self._size and self._map is not None and self._map() is not None:
                self._fd = self._moved_to_new_file(self._fd, size)
            else:
                os.ftruncate(self._fd, size)
        self._size = size

    def _moved_to_new_file(self, old: int, size: int) -> int:
        """Copy the first *size* bytes of *old* into a new spool file and close *old*.

        A map of the file that `contents` handed to storage may still be read (an
        Icechunk store in flight); cutting the file under it would kill the daemon
        with SIGBUS. The map keeps the old file alive until it is dropped.
        """
        fd = self._new_file()
        done = 0
        while done < size:
            piece = os.pread(old, min(size - done, 1 << 20), done)
            if not piece:
                break
            done += os.pwrite(fd, piece, done)
        os.close(old)
        self._map = None
        return fd

    def contents(self) -> bytes | memoryview | mmap.mmap:
        """Return the whole contents without copying where possible (for handing to storage)."""
        if self._mem is not None:
            if not self._mem:  # written by appends only: no copy, or one kept for next time
                if len(self._parts) > 1:
                    self._parts = [b"".join(self._parts)]
                return self._parts[0] if self._parts else b""
            return bytes(self._joined())  # a copy: a live view would forbid resizing
        assert self._fd is not None
        if self._size <= COPY_FROM_DISK_UP_TO:
            return os.pread(self._fd, self._size, 0)
        mapped = mmap.mmap(self._fd, self._size, prot=mmap.PROT_READ)
        self._map = weakref.ref(mapped)
        return mapped

    def close(self) -> None:
        """Free the memory or the disk space held."""
        if self._mem is not None:
            self._budget.in_memory -= self._size
            self._mem = None
            self._parts = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
