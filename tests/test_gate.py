"""The trio `Gate`: one mode shares, ALONE excludes, modes take turns."""

from __future__ import annotations

import trio

from icefs.gate import ALONE, Gate


async def _hold(gate: Gate, mode: str, log: list[str], name: str, seconds: float) -> None:
    async with gate.hold(mode):
        log.append(f"+{name}")
        await trio.sleep(seconds)
        log.append(f"-{name}")


def test_same_mode_shares():
    async def main() -> list[str]:
        gate, log = Gate(), list[str]()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, gate, "read", log, "a", 0.05)
            nursery.start_soon(_hold, gate, "read", log, "b", 0.05)
        return log

    assert sorted(trio.run(main)[:2]) == ["+a", "+b"]


def test_modes_and_alone_exclude():
    async def main() -> list[str]:
        gate, log = Gate(), list[str]()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, gate, "read", log, "r", 0.05)
            await trio.sleep(0.01)
            nursery.start_soon(_hold, gate, "write", log, "w", 0.05)
            nursery.start_soon(_hold, gate, ALONE, log, "x", 0.05)
            nursery.start_soon(_hold, gate, ALONE, log, "y", 0.05)
        return log

    log = trio.run(main)
    for i in range(0, len(log), 2):  # every holder left before the next one came in
        assert log[i][0] == "+", log
        assert log[i + 1] == "-" + log[i][1:], log


def test_waiting_mode_is_not_starved():
    async def main() -> list[str]:
        gate, log = Gate(), list[str]()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, gate, "read", log, "r1", 0.05)
            await trio.sleep(0.01)
            nursery.start_soon(_hold, gate, "write", log, "w", 0.01)
            await trio.sleep(0.01)
            nursery.start_soon(_hold, gate, "read", log, "r2", 0.01)  # queues behind w
        return log

    log = trio.run(main)
    assert log.index("+w") < log.index("+r2"), log


def test_cancelled_waiter_leaves_no_trace():
    async def main() -> None:
        gate = Gate()
        async with gate.hold(ALONE):
            with trio.move_on_after(0.01):
                async with gate.hold("read"):
                    raise AssertionError("entered while held alone")
        with trio.fail_after(1):
            async with gate.hold("write"), trio.open_nursery() as nursery:
                nursery.start_soon(_hold, gate, "write", [], "w2", 0)

    trio.run(main)


def test_giving_up_lets_the_queued_mode_in():
    """A waiter of another mode that is cancelled no longer holds newcomers back."""

    async def main() -> list[str]:
        gate, log = Gate(), list[str]()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hold, gate, "read", log, "r1", 0.2)
            await trio.sleep(0.01)

            async def impatient() -> None:
                with trio.move_on_after(0.02):
                    await _hold(gate, "write", log, "w", 0)

            nursery.start_soon(impatient)
            await trio.sleep(0.01)
            nursery.start_soon(_hold, gate, "read", log, "r2", 0)  # queues behind w
        return log

    log = trio.run(main)
    assert "+w" not in log, log
    assert log.index("+r2") < log.index("-r1"), log
