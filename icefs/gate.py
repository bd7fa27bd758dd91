"""`Gate`: a trio lock shared by holders of one mode at a time, or held alone."""

from __future__ import annotations

import collections
import contextlib
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["ALONE", "Gate"]

#: The mode that excludes every other holder.
ALONE: Final = "alone"


class Gate:
    """Any number of holders that share one mode, or a single `ALONE` holder.

    Modes take turns: waiters queue in arrival order, and while anyone waits,
    newcomers queue behind them, so a stream of one mode cannot starve the others.
    When the gate frees, the first waiter enters, and with it the waiters of its
    mode right behind it.

    Entering and leaving change plain fields with no await in between (trio runs
    one task at a time), so an uncontended `hold` never goes through the scheduler;
    a waiter is let in by the holder that leaves.  Every chunk stored passes three
    gates, so the uncontended path must stay this cheap.
    """

    def __init__(self) -> None:
        self._mode: str | None = None
        self._holders = 0
        self._queue: collections.deque[tuple[str, trio.Event]] = collections.deque()

    def _may_join(self, mode: str) -> bool:
        """Whether a holder of *mode* could enter now, the queue aside."""
        return self._mode is None or (mode == self._mode and mode != ALONE)

    def _enter(self, mode: str) -> None:
        self._mode = mode
        self._holders += 1

    def _admit(self) -> None:
        """Let in waiters from the head of the queue while their mode may enter."""
        while self._queue and self._may_join(self._queue[0][0]):
            mode, admitted = self._queue.popleft()
            self._enter(mode)
            admitted.set()

    def _leave(self) -> None:
        self._holders -= 1
        if not self._holders:
            self._mode = None
            self._admit()

    async def acquire(self, mode: str) -> None:
        """Enter in *mode*, waiting for the holders of another mode to leave; pair with
        `release` (for a holder that leaves from elsewhere than where it entered)."""
        if not self._queue and self._may_join(mode):
            self._enter(mode)
            return
        waiter = (mode, trio.Event())
        self._queue.append(waiter)
        try:
            await waiter[1].wait()
        except BaseException:
            if waiter[1].is_set():  # let in as the wait was cancelled: give it back
                self._leave()
            else:  # it may have held back the waiters behind it
                self._queue.remove(waiter)
                self._admit()
            raise

    def release(self) -> None:
        """Leave (one holder entered by `acquire`)."""
        self._leave()

    @contextlib.asynccontextmanager
    async def hold(self, mode: str) -> AsyncIterator[None]:
        await self.acquire(mode)
        try:
            yield
        finally:
            self._leave()
