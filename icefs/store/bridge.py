"""The one bridge between trio (the FUSE side) and Icechunk's asyncio coroutines.

Icechunk's store methods are asyncio coroutines driven by Rust futures; trio
cannot await them.  `Bridge` keeps one long-lived asyncio event loop in a
daemon thread and lets trio tasks await coroutines on it:

* `Bridge.run` awaits ``fn(*args)`` on the loop thread: it submits it with
  `asyncio.run_coroutine_threadsafe` and wakes the waiting trio task through
  the trio token when it is done, so thousands of requests can be in flight
  from one trio thread.  A `trio.CapacityLimiter` caps them (uncapped,
  Icechunk grows hundreds of tokio workers).  Cancelling the trio task cancels
  the asyncio future.
* Icechunk's Rust methods return an asyncio future made by
  pyo3-async-runtimes, which asks ``asyncio.get_running_loop()`` for
  ``create_future`` and later calls its ``call_soon_threadsafe`` from a tokio
  thread.  Once `Bridge.enable_direct` has seen that protocol work, `run`
  calls ``fn`` on the trio thread with a small stand-in loop (`_TrioLoop`)
  lent for the moment of the call, and the tokio thread wakes trio directly:
  two thread hand-offs per call instead of four.  This leans on private details
  (``asyncio._set_running_loop``, the loop methods pyo3 uses), hence the
  self-test at mount time.  A coroutine, or anything else that is not the
  stand-in's future, still goes to the loop thread.
* `Bridge.run_sync` runs a blocking function (Icechunk's synchronous Repository
  and Session methods, which release the GIL) in a trio worker thread.
* `Bridge.run_blocking` is for code outside trio (CLI, tests, start-up).

Every call through `run` and `run_sync` is one storage request of a *kind*
(chunk, metadata, manifest, snapshot, ref, commit): it is timed and its outcome
told to `observe` (the mount's stats), and unless the caller says otherwise it
must end within `deadline` seconds, else it fails with `TimedOut` (ETIMEDOUT).
A direct call past its deadline is cancelled (Icechunk drops the request); a
blocking one is abandoned to finish in its thread, which keeps its place under
the thread limit until it ends.

No other icefs module imports asyncio.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import trio

from icefs.errors import TimedOut

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterator

__all__ = ["Bridge"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a request past its deadline says, and a wait for a session past it.
_NO_ANSWER: Final = (
    "the storage did not answer a {kind} request within {seconds} s (request_timeout)"
)
_WAITED: Final = (
    "a {kind} request waited {seconds} s for the session, which a commit holds (request_timeout)"
)
#: How long the start-up self-test of the direct path may take.
PROBE_TIMEOUT: Final = 10.0


class _DirectFuture:
    """The future `_TrioLoop.create_future` hands to pyo3; completed on the trio thread.

    pyo3-async-runtimes uses: ``add_done_callback`` (its callback forwards a
    cancellation to the Rust future), ``cancelled``, ``set_result`` and
    ``set_exception`` (called through ``call_soon_threadsafe``).
    """

    __slots__ = ("_callbacks", "_cancelled", "_done", "_error", "_result", "_task")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[_DirectFuture], object]] = []
        self._done = False
        self._cancelled = False
        self._result: object = None
        self._error: BaseException | None = None
        self._task: trio.lowlevel.Task | None = None

    def add_done_callback(
        self, fn: Callable[[_DirectFuture], object], *, context: object = None
    ) -> None:
        if self._done:
            fn(self)
        else:
            self._callbacks.append(fn)

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def set_result(self, value: object) -> None:
        if not self._done:
            self._result = value
            self._finish()

    def set_exception(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
            self._finish()

    def cancel(self) -> bool:
        if self._done:
            return False
        self._cancelled = True
        self._finish()
        return True

    def _finish(self) -> None:
        self._done = True
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                log.exception("callback of a direct Icechunk call failed")
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> Any:
        """Wait (cancellably) on the trio thread until done; return the result or raise."""
        if not self._done:
            self._task = trio.lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._task = None
                self.cancel()  # pyo3's done callback drops the Rust future
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        if self._error is not None:
            raise self._error
        return self._result


class _TrioLoop:
    """The two loop methods pyo3-async-runtimes calls, served by the trio run."""

    def __init__(self, token: trio.lowlevel.TrioToken) -> None:
        self.token = token

    def create_future(self) -> _DirectFuture:
        return _DirectFuture()

    def call_soon_threadsafe(
        self, callback: Callable[..., object], *args: object, context: object = None
    ) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the mount is going away
            self.token.run_sync_soon(callback, *args)


class Bridge:
    """One asyncio loop thread plus the limits that keep calls into it bounded.

    *max_async* caps coroutines in flight on the loop; *max_threads* caps
    blocking calls run in trio worker threads.
    """

    def __init__(
        self, *, max_async: int = 64, max_threads: int = 16, deadline: float | None = None
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="icefs-asyncio", daemon=True)
        self._thread.start()
        self._ready.wait()
        self._async_limit = max_async
        self._thread_limit = max_threads
        # Limiters belong to one trio run; created lazily inside it.
        self._limiters: dict[int, tuple[trio.CapacityLimiter, trio.CapacityLimiter]] = {}
        #: `run` lets the tokio thread wake trio (set by `enable_direct`)
        self.direct = False
        self._trio_loop: _TrioLoop | None = None
        #: seconds a bounded call may wait for the storage (None: Icechunk's own limits)
        self.deadline = deadline
        #: told (kind, outcome, seconds) after every call: outcome is ok, not_found,
        #: timeout, error or cancelled
        self.observe: Callable[[str, str, float], None] | None = None

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

    async def run(
        self, fn: Callable[..., Awaitable[T]], *args: Any, kind: str = "other", bounded: bool = True
    ) -> T:
        """Await ``fn(*args)``: an asyncio coroutine function, or an Icechunk Rust method
        returning a pyo3 future (completed on the trio thread once `direct`); one request
        of *kind*, within `deadline` if *bounded*."""
        with self._request(kind, bounded):
            return await self._run(fn, args)

    async def _run(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        async_limit, _ = self._trio_limiters()
        async with async_limit:
            loop = self._trio_loop
            if (
                not self.direct
                or loop is None
                or loop.token is not trio.lowlevel.current_trio_token()
            ):
                return await self._await_on_loop(fn, args)
            previous = asyncio.events._get_running_loop()
            asyncio.events._set_running_loop(loop)  # type: ignore[arg-type]
            try:
                awaitable = fn(*args)
            finally:
                asyncio.events._set_running_loop(previous)
            if isinstance(awaitable, _DirectFuture):
                return cast("T", await awaitable.wait())
            # Not the protocol the self-test saw (a coroutine, say): the loop thread runs it.
            return await self._await_on_loop(_awaited, (awaitable,))

    @contextlib.contextmanager
    def waiting(self, kind: str) -> Iterator[None]:
        """Bound a wait for something a storage request of *kind* needs (a session that a
        commit holds, say) by `deadline`: past it, `TimedOut`."""
        with _within(self.deadline, kind, _WAITED):
            yield

    @contextlib.contextmanager
    def _request(self, kind: str, bounded: bool) -> Iterator[None]:
        """Time the request in the body, tell `observe`, and bound it by `deadline`."""
        started = time.monotonic()
        outcome = "error"
        try:
            with _within(self.deadline if bounded else None, kind, _NO_ANSWER):
                yield
            outcome = "ok"
        except TimedOut:
            outcome = "timeout"
            raise
        except KeyError:  # Icechunk's answer for a missing key
            outcome = "not_found"
            raise
        except trio.Cancelled:
            outcome = "cancelled"
            raise
        finally:
            if self.observe is not None:
                self.observe(kind, outcome, time.monotonic() - started)

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

    async def enable_direct(self, probe: Callable[[Bridge], Awaitable[object]]) -> bool:
        """Switch `run` to the direct path if *probe* succeeds on it; return whether it did.

        *probe* makes real Icechunk calls through `run` and raises if a result is
        wrong.  Any failure, or no answer within `PROBE_TIMEOUT`, keeps the loop
        thread.
        """
        self._trio_loop = _TrioLoop(trio.lowlevel.current_trio_token())
        self.direct = True
        try:
            with trio.fail_after(PROBE_TIMEOUT):
                await probe(self)
        except Exception as exc:
            self.direct = False
            log.warning("direct Icechunk calls unavailable, using the loop thread: %r", exc)
        return self.direct

    async def run_sync(
        self, fn: Callable[..., T], *args: Any, kind: str = "other", bounded: bool = True
    ) -> T:
        """Run the blocking ``fn(*args)`` in a trio worker thread: one request of *kind*.

        If *bounded*, past `deadline` the caller gets `TimedOut` and the thread is left
        to finish: only for calls whose late end changes nothing the caller relies on.
        """
        _, thread_limit = self._trio_limiters()
        abandon = bounded and self.deadline is not None
        with self._request(kind, bounded):
            return await trio.to_thread.run_sync(
                fn, *args, limiter=thread_limit, abandon_on_cancel=abandon
            )

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


@contextlib.contextmanager
def _within(seconds: float | None, kind: str, message: str) -> Iterator[None]:
    """Run the body within *seconds* (None: no limit); past them, `TimedOut` with
    *message* (a format of *kind* and *seconds*, made only then)."""
    if seconds is None:
        yield
        return
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise TimedOut(message.format(kind=kind, seconds=f"{seconds:g}")) from None


async def _awaited[R](awaitable: Awaitable[R]) -> R:
    return await awaitable
