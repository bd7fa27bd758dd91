"""The trio <-> asyncio bridge: results, errors, real concurrency, cancellation (no timing)."""

from __future__ import annotations

import asyncio

import pytest
import trio

from icefs.bridge import Bridge


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


async def test_gather_returns_values_and_exceptions(bridge):
    async def maybe(x):
        if x == 3:
            raise ValueError(x)
        return x

    results = await bridge.gather(maybe, [(i,) for i in range(5)], concurrency=2)
    assert results[:3] == [0, 1, 2]
    assert isinstance(results[3], ValueError)
    assert results[4] == 4


async def test_run_sync_runs_in_a_thread(bridge):
    import threading

    main = threading.get_ident()
    assert await bridge.run_sync(threading.get_ident) != main
