"""`KernelCaches`: how the core tells the kernel to drop what it caches of a path.

Writeback caching is off, so invalidating an inode does not block; entries are
dropped through pyfuse3's own thread (a request on the directory may be in
flight), off the trio loop.
"""

from __future__ import annotations

import contextlib
import logging
import os

import pyfuse3
import trio

__all__ = ["KernelCaches"]

log = logging.getLogger(__name__)


class KernelCaches:
    """An `icefs.fs.values.Invalidator` over pyfuse3's notifications (never raises)."""

    def inode(self, ino: int) -> None:
        try:
            pyfuse3.invalidate_inode(ino)
        except OSError as exc:  # ENOENT: the kernel no longer knows it
            log.debug("invalidate inode %d: %s", ino, exc)

    async def entries(self, names: list[tuple[int, str]]) -> None:
        def drop() -> None:
            for parent_ino, name in names:
                with contextlib.suppress(OSError):  # ENOENT: not cached
                    pyfuse3.invalidate_entry(parent_ino, os.fsencode(name))

        # blocking while a request on the directory is in flight: not on the trio loop
        await trio.to_thread.run_sync(drop)

    def entry(self, parent_ino: int, name: str) -> None:
        pyfuse3.invalidate_entry_async(parent_ino, os.fsencode(name), ignore_enoent=True)
