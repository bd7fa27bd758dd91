"""Write-behind: chunk files closed on a branch are stored in the background.

On object storage each store is a round trip: a program that closes chunk files
one after another would wait for one round trip per file.  With write-behind,
close(2) checks the chunk as a store would (a Zarr key, inside its array's
grid, its frame or its decoding) and returns; so does a rename of a file onto a
chunk's name (`WriteOverlay.place`), which is how zarr publishes each chunk.
The store runs in the background, `CONCURRENCY` at most at once, and at most
the write buffer's size in bytes waits to be stored (past that a close waits
for room).  Metadata documents and chunks of arrays that do not exist yet are
stored as before, before the close returns.

Until its store has ended a file keeps its bytes in its `OverlayFile`, so reads
see what was written.  A store that fails keeps them too, and says so where
POSIX lets it: the next close or fsync of the file stores it again and fails
with the reason; every commit waits for the stores started before it, stores
the failed ones again and fails naming the first that still cannot be stored.
Whatever changes a key with a store in flight (another store, a delete, a
rename, a discard) waits for it first: stores land in the order they were made.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

import trio

from icefs.errors import IcefsError
from icefs.tasks import TaskNursery

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from icefs.fs.branch import BranchState
    from icefs.fs.files import OverlayFile
    from icefs.store import KeyClass

__all__ = ["CONCURRENCY", "Uploader"]

log = logging.getLogger(__name__)

#: Background stores running at once, over the whole mount.
CONCURRENCY: Final = 16


class Uploader:
    """Runs the background stores of a mount (see the module doc)."""

    def __init__(self, budget: int, *, enabled: bool) -> None:
        #: whether closes store in the background (the ``write_behind`` setting)
        self.enabled = enabled
        #: bytes that may wait to be stored; a close past it waits for room
        self.budget = budget
        self.stored = 0
        self.failed = 0
        self.waiting_bytes = 0
        self._limiter = trio.CapacityLimiter(CONCURRENCY)
        self._room = trio.Event()
        self._tasks = TaskNursery()

    @property
    def active(self) -> bool:
        """Whether a close may leave its store to the background now."""
        return self.enabled and self._tasks.nursery is not None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Take background stores while inside; leaving waits for those in flight."""
        async with self._tasks.open():
            yield

    async def submit(
        self,
        state: BranchState,
        key: str,
        overlay: OverlayFile,
        what: KeyClass,
        data: Any,
        version: int,
    ) -> None:
        """Store *data* (the bytes of *overlay* at its *version*, checked as *what*) at
        *key* in the background; return once it is queued."""
        await state.settle(key)  # one store per file at a time, in the order of the closes
        size = overlay.spool.size
        while self.waiting_bytes and self.waiting_bytes + size > self.budget:
            await self._room.wait()
        nursery = self._tasks.nursery
        assert nursery is not None
        done = overlay.upload = trio.Event()
        overlay.upload_error = None
        if overlay.version == version:  # else a write came in meanwhile: still to store
            overlay.dirty = False
        state.upload_started(key, overlay)  # the journal names files not yet stored
        self.waiting_bytes += size
        nursery.start_soon(self._store, state, key, overlay, what, data, size, done)

    async def _store(
        self,
        state: BranchState,
        key: str,
        overlay: OverlayFile,
        what: KeyClass,
        data: Any,
        size: int,
        done: trio.Event,
    ) -> None:
        try:
            async with self._limiter:
                await state.store_checked(key, what, data, size)
        except IcefsError as exc:  # recorded in the branch's last_error by the store
            self._failed(overlay, exc)
        except Exception:
            log.exception("storing %s in the background failed unexpectedly", key)
            self._failed(overlay, IcefsError(f"storing {key} failed: an internal error"))
        else:
            self.stored += 1
            if (
                not overlay.dirty
                and overlay.handles <= 0
                and not overlay.pending
                and state.local.drop(key, overlay)
            ):
                overlay.spool.close()
        finally:
            state.local.upload_ended(key, overlay)
            self.waiting_bytes -= size
            self._room.set()
            self._room = trio.Event()
            done.set()

    def _failed(self, overlay: OverlayFile, exc: IcefsError) -> None:
        self.failed += 1
        overlay.upload_error = exc
        overlay.dirty = True  # the next close or fsync stores it again
