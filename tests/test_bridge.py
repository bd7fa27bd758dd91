"""The trio <-> asyncio bridge: results, errors, real concurrency, cancellation (no timing)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from icefs.store import Bridge


@pytest.fixture
def bridge():
    b = Bridge(max_async=64)
    yield b
    b.close()


async def test_result_and_error(bridge):
    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    async def fail():
        raise KeyError("nope")

    assert await bridge.run(double, 21) == 42
    with pytest.raises(KeyError):
        await bridge.run(fail)


async def test_requests_are_concurrent(bridge):
    """All 50 calls must be in flight at once: none finishes until every one has started."""
    n = 50
    started = 0
    all_started = asyncio.Event()  # created and used only on the loop thread below

    async def make_event():
        nonlocal all_started
        all_started = asyncio.Event()

    await bridge.run(make_event)

    async def call():
        nonlocal started
        started += 1
        if started == n:
            all_started.set()
        await all_started.wait()
        return True

    results = []

    async def one():
        results.append(await bridge.run(call))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
    assert results == [True] * n


async def test_cancellation_reaches_asyncio(bridge):
    cancelled = trio.Event()
    token = trio.lowlevel.current_trio_token()

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            token.run_sync_soon(cancelled.set)
            raise

    with trio.move_on_after(0.2):
        await bridge.run(forever)
    with trio.fail_after(30):
        await cancelled.wait()


async def test_run_sync_runs_in_a_thread(bridge):
    import threading

    main = threading.get_ident()
    assert await bridge.run_sync(threading.get_ident) != main


# -- the direct path (Bridge.run after enable_direct) -------------------------------------------


class Pyo3Like:
    """Does what pyo3-async-runtimes does for a Rust method: a future from the running
    loop, a done callback that watches for cancellation, completion from another thread
    through ``call_soon_threadsafe``.  Records the thread it was called on."""

    def __init__(self):
        self.called_on: list[int] = []
        self.cancelled_seen: list[bool] = []

    def __call__(self, value, release: threading.Event | None = None, error=None):
        self.called_on.append(threading.get_ident())
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        future.add_done_callback(lambda f: self.cancelled_seen.append(f.cancelled()))

        def complete(f, value):
            if not f.cancelled():
                if error is not None:
                    f.set_exception(error)
                else:
                    f.set_result(value)

        def work():
            if release is not None:
                release.wait(30)
            loop.call_soon_threadsafe(complete, future, value)

        threading.Thread(target=work, daemon=True).start()
        return future


async def _probe_with(fake):
    async def probe(bridge):
        assert await bridge.run(fake, "ok") == "ok"

    return probe


async def test_direct_calls_complete_on_the_trio_thread(bridge):
    fake = Pyo3Like()
    assert await bridge.enable_direct(await _probe_with(fake))
    assert bridge.direct
    results = []

    async def one(i):
        results.append(await bridge.run(fake, i))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
    assert sorted(results) == list(range(50))
    assert set(fake.called_on) == {threading.get_ident()}  # never the loop thread
    with pytest.raises(KeyError):
        await bridge.run(fake, None, None, KeyError("absent"))


async def test_direct_cancellation_reaches_the_rust_side(bridge):
    fake = Pyo3Like()
    assert await bridge.enable_direct(await _probe_with(fake))
    release = threading.Event()
    with trio.move_on_after(0.2) as scope:
        await bridge.run(fake, "late", release)
    assert scope.cancelled_caught
    assert fake.cancelled_seen[-1] is True  # pyo3's callback would drop the Rust future
    release.set()  # completing after the cancel is ignored, not an error
    assert await bridge.run(fake, "next") == "next"


async def test_a_failing_probe_keeps_the_loop_thread(bridge):
    async def probe(b):
        raise RuntimeError("protocol changed")

    assert not await bridge.enable_direct(probe)
    fake = Pyo3Like()
    assert await bridge.run(fake, 7) == 7
    assert fake.called_on[0] != threading.get_ident()


async def test_a_silent_probe_times_out(bridge, monkeypatch):
    import icefs.store.bridge

    monkeypatch.setattr(icefs.store.bridge, "PROBE_TIMEOUT", 0.3)
    never = threading.Event()

    async def probe(b):
        await b.run(Pyo3Like(), 1, never)

    with trio.fail_after(30):
        assert not await bridge.enable_direct(probe)
    never.set()


async def test_a_coroutine_goes_through_the_loop_thread(bridge):
    fake = Pyo3Like()
    assert await bridge.enable_direct(await _probe_with(fake))

    async def coro_fn(x):
        await asyncio.sleep(0)
        return threading.current_thread().name, x

    assert await bridge.run(coro_fn, 3) == ("icefs-asyncio", 3)


def test_another_trio_run_uses_the_loop_thread(bridge):
    fake = Pyo3Like()

    async def first():
        assert await bridge.enable_direct(await _probe_with(fake))

    async def second():
        with trio.fail_after(30):
            return await bridge.run(fake, "again")

    trio.run(first)
    assert trio.run(second) == "again"
    assert fake.called_on[-1] != threading.get_ident()


async def test_icechunk_passes_the_probe(bridge):
    """Icechunk's Rust methods speak the protocol the direct path expects (fails on an
    upgrade that changes it: the mount would still work, through the loop thread)."""
    from icefs.store.reader import direct_probe

    assert await bridge.enable_direct(direct_probe)


async def test_deadline_and_outcomes_are_reported():
    """Past its deadline a call fails with TimedOut (a blocking one is left to finish in
    its thread); every call's kind and outcome reach `observe`."""
    from icefs.errors import TimedOut

    b = Bridge(deadline=0.2)
    seen: list[tuple[str, str]] = []
    b.observe = lambda kind, outcome, seconds: seen.append((kind, outcome))
    release = threading.Event()
    try:

        async def hang():
            await asyncio.Event().wait()

        async def missing():
            raise KeyError("absent")

        with pytest.raises(TimedOut, match=r"chunk request within 0\.2 s"):
            await b.run(hang, kind="chunk")
        with pytest.raises(TimedOut, match="snapshot request"):
            await b.run_sync(release.wait, kind="snapshot")
        with pytest.raises(KeyError):
            await b.run(missing, kind="chunk")
        assert await b.run_sync(lambda: 7, kind="ref", bounded=True) == 7
        release.set()
        # unbounded: waits as long as it takes
        assert await b.run_sync(lambda: release.wait(5), kind="commit", bounded=False)
        assert seen == [
            ("chunk", "timeout"),
            ("snapshot", "timeout"),
            ("chunk", "not_found"),
            ("ref", "ok"),
            ("commit", "ok"),
        ]
    finally:
        release.set()
        b.close()
