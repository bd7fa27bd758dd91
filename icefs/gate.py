"""`Gate`: a trio lock shared by holders of one mode at a time, or held alone."""

from __future__ import annotations

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

    Modes take turns: while holders of another mode wait, newcomers of the current
    mode queue behind them, so a stream of one mode cannot starve the others.
    """

    def __init__(self) -> None:
        self._mode: str | None = None
        self._holders = 0
        self._waiting: dict[str, int] = {}
        self._changed = trio.Condition()

    def _may_enter(self, mode: str) -> bool:
        if self._mode is None:
            return True
        if mode == ALONE or self._mode != mode:
            return False
        # join the holders of our mode unless another mode is waiting its turn
        return not any(n for m, n in self._waiting.items() if m != mode)

    @contextlib.asynccontextmanager
    async def hold(self, mode: str) -> AsyncIterator[None]:
        async with self._changed:
            if not self._may_enter(mode):
                self._waiting[mode] = self._waiting.get(mode, 0) + 1
                try:
                    while True:
                        await self._changed.wait()
                        self._waiting[mode] -= 1
                        entered = self._may_enter(mode)
                        self._waiting[mode] += 1
                        if entered:
                            break
                finally:
                    self._waiting[mode] -= 1
            self._mode = mode
            self._holders += 1
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                async with self._changed:
                    self._holders -= 1
                    if not self._holders:
                        self._mode = None
                    self._changed.notify_all()
