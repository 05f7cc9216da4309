"""`core.waitline`: callers waiting for a slot, first come, first served, no turn lost."""

from __future__ import annotations

import asyncio

import pytest

from cutover.core.waitline import WaitLine


async def _waiter(line: WaitLine, name: str, woken: list[str], deadline: float) -> None:
    await line.wait(deadline)
    woken.append(name)


async def test_callers_are_woken_in_arrival_order() -> None:
    line, woken = WaitLine(), []
    deadline = asyncio.get_running_loop().time() + 5
    tasks = [asyncio.ensure_future(_waiter(line, n, woken, deadline)) for n in "abc"]
    await asyncio.sleep(0)
    assert len(line) == 3
    for _ in range(3):
        line.wake_one()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert woken == ["a", "b", "c"]
    assert len(line) == 0


async def test_a_deadline_raises_and_leaves_the_line() -> None:
    line = WaitLine()
    with pytest.raises(TimeoutError):
        await line.wait(asyncio.get_running_loop().time() + 0.01)
    assert len(line) == 0


async def test_a_caller_cancelled_before_being_woken_leaves_the_line() -> None:
    line = WaitLine()
    task = asyncio.ensure_future(line.wait(asyncio.get_running_loop().time() + 5))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(line) == 0


async def test_a_caller_woken_then_cancelled_passes_the_wake_up_on() -> None:
    line, woken = WaitLine(), []
    deadline = asyncio.get_running_loop().time() + 5
    first = asyncio.ensure_future(_waiter(line, "first", woken, deadline))
    second = asyncio.ensure_future(_waiter(line, "second", woken, deadline))
    await asyncio.sleep(0)
    line.wake_one()  # for `first` ...
    first.cancel()  # ... which leaves before it runs
    await asyncio.wait_for(second, 1.0)
    assert woken == ["second"]
    assert first.cancelled()


async def test_wake_all_wakes_every_caller() -> None:
    line, woken = WaitLine(), []
    deadline = asyncio.get_running_loop().time() + 5
    tasks = [asyncio.ensure_future(_waiter(line, n, woken, deadline)) for n in "ab"]
    await asyncio.sleep(0)
    line.wake_all()
    await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert sorted(woken) == ["a", "b"]
    assert len(line) == 0
