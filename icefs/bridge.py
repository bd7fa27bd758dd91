"""The one bridge between trio (the FUSE side) and Icechunk's asyncio coroutines.

Icechunk's store methods are asyncio coroutines driven by Rust futures; trio
cannot await them.  `Bridge` keeps one long-lived asyncio event loop in a
daemon thread and lets trio tasks await coroutines on it:

* `Bridge.run` submits a coroutine with `asyncio.run_coroutine_threadsafe` and
  wakes the waiting trio task through the trio token when it is done, so
  thousands of requests can be in flight from one trio thread.  A
  `trio.CapacityLimiter` caps them (uncapped, Icechunk grows hundreds of tokio
  workers).  Cancelling the trio task cancels the asyncio future.
* `Bridge.run_sync` runs a blocking function (Icechunk's synchronous Repository
  and Session methods, which release the GIL) in a trio worker thread.
* `Bridge.run_blocking` is for code outside trio (CLI, tests, start-up).

No other icefs module imports asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

__all__ = ["Bridge"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Bridge:
    """One asyncio loop thread plus the limits that keep calls into it bounded.

    *max_async* caps coroutines in flight on the loop; *max_threads* caps
    blocking calls run in trio worker threads.
    """

    def __init__(self, *, max_async: int = 64, max_threads: int = 16) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="icefs-asyncio", daemon=True)
        self._thread.start()
        self._ready.wait()
        self._async_limit = max_async
        self._thread_limit = max_threads
        # Limiters belong to one trio run; created lazily inside it.
        self._limiters: dict[int, tuple[trio.CapacityLimiter, trio.CapacityLimiter]] = {}

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    def _trio_limiters(self) -> tuple[trio.CapacityLimiter, trio.CapacityLimiter]:
        token = id(trio.lowlevel.current_trio_token())
        pair = self._limiters.get(token)
        if pair is None:
            pair = (
                trio.CapacityLimiter(self._async_limit),
                trio.CapacityLimiter(self._thread_limit),
            )
            self._limiters = {token: pair}
        return pair

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` (an asyncio coroutine function) on the loop thread."""
        async_limit, _ = self._trio_limiters()
        async with async_limit:
            return await self._await_on_loop(fn, args)

    async def _await_on_loop(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        async def call() -> T:
            return await fn(*args)

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    async def gather(self, fn: Callable[..., Awaitable[T]], args_list: list[tuple[Any, ...]],
                     *, concurrency: int = 32) -> list[T | BaseException]:
        """Run ``fn(*args)`` for every *args* on the loop, at most *concurrency* at once.

        One trip across the bridge for the whole batch; each result is the value
        or the exception that call raised.
        """
        async def batch() -> list[T | BaseException]:
            sem = asyncio.Semaphore(concurrency)

            async def one(a: tuple[Any, ...]) -> T:
                async with sem:
                    return await fn(*a)

            return await asyncio.gather(*(one(a) for a in args_list), return_exceptions=True)

        async_limit, _ = self._trio_limiters()
        async with async_limit:
            return await self._await_on_loop(batch, ())

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the blocking ``fn(*args)`` in a trio worker thread."""
        _, thread_limit = self._trio_limiters()
        return await trio.to_thread.run_sync(fn, *args, limiter=thread_limit)

    def run_blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run *coro* on the loop and wait for it; for callers outside trio."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self) -> None:
        """Stop the loop thread (pending coroutines are abandoned)."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()
