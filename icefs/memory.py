"""One memory budget for everything the mount keeps to answer without asking again.

`MemoryBudget` holds entries by key, each with its size in bytes and what to do
when it is evicted; when the sizes together pass the limit (the
``metadata_memory`` setting), the least recently used go first, whichever cache
they belong to.  The caches that grow with a repository's size register here:
chunk indexes and node metadata of snapshot trees, kept listings of tags and
snapshots (with the replies built from them), resolved paths.  What the kernel
holds (inode numbers, open handles) is not here: it stays while the kernel
holds it.  Nothing here does I/O; it is only used from the trio thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

__all__ = ["MemoryBudget", "release_freed"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_freed() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``).

    A session's change set lives in Icechunk's native memory, growing with the chunks
    written; once a commit has dropped it, glibc
    keeps those pages unless asked.  Blocking (it walks the heap): call it in a worker
    thread.  Does nothing without glibc.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class MemoryBudget:
    """Sized entries under one limit, least recently used evicted first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.evictions = 0
        #: key -> (value, size, called with the value when evicted)
        self._kept: OrderedDict[Hashable, tuple[Any, int, Callable[[Any], None] | None]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, key: Hashable) -> Any:
        """The value kept at *key* (now the most recently used), or None."""
        kept = self._kept.get(key)
        if kept is None:
            return None
        self._kept.move_to_end(key)
        return kept[0]

    def put(
        self,
        key: Hashable,
        value: Any,
        size: int,
        on_evict: Callable[[Any], None] | None = None,
    ) -> bool:
        """Keep *value* at *key*, *size* bytes, evicting what was least recently used to
        make room; False (nothing kept) if it alone is larger than the limit."""
        self.pop(key)
        if size > self.limit:
            return False
        self._kept[key] = (value, size, on_evict)
        self.used += size
        while self.used > self.limit:
            _, (old, old_size, evicted) = self._kept.popitem(last=False)
            self.used -= old_size
            self.evictions += 1
            if evicted is not None:
                evicted(old)
        return True

    def resize(self, key: Hashable, size: int) -> None:
        """Say that the value at *key* now takes *size* bytes (it may be evicted)."""
        kept = self._kept.get(key)
        if kept is not None:
            self.put(key, kept[0], size, kept[2])

    def pop(self, key: Hashable) -> Any:
        """Forget *key* without calling its eviction; return its value, or None."""
        kept = self._kept.pop(key, None)
        if kept is None:
            return None
        self.used -= kept[1]
        return kept[0]
