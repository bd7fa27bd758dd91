"""`TaskNursery`: where work started by a request runs on after the request has answered."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["TaskNursery"]


class TaskNursery:
    """A nursery held open by `open` (or `run`) and offered as `nursery` meanwhile.

    Outside it, `nursery` is None: callers then do their work in place or not at all.
    Leaving waits for the tasks started in it.
    """

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[trio.Nursery]:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                yield nursery
            finally:
                self.nursery = None

    async def run(self) -> None:
        """Hold it open until cancelled (a task of the mount's nursery)."""
        async with self.open():
            await trio.sleep_forever()
