"""core.bounded: the caller stops waiting at the deadline; the call finishes on its own."""

from __future__ import annotations

import asyncio
import gc

import pytest

from cutover.core.bounded import bounded


async def test_the_result_when_it_comes_in_time() -> None:
    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert await bounded(quick(), 5.0) == 7


async def test_an_error_in_time_is_the_callers() -> None:
    async def broken() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await bounded(broken(), 5.0)


async def test_the_caller_is_free_at_the_deadline_while_the_cleanup_runs_on() -> None:
    """As a release of a cancelled asyncpg query does: cleanup that itself takes a while."""
    cleaned = asyncio.Event()
    release = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()  # a server that never answers
        finally:
            await release.wait()  # the slow cleanup after the cancellation
            cleaned.set()

    with pytest.raises(TimeoutError, match=r"no answer within 0\.05s"):
        await bounded(hangs(), 0.05)
    assert not cleaned.is_set()  # the caller did not wait for the cleanup
    release.set()
    await asyncio.wait_for(cleaned.wait(), 5.0)


async def test_a_late_failure_is_not_reported_as_never_retrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    gate = asyncio.Event()

    async def fails_late() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await gate.wait()
            raise OSError("connection reset during the cleanup")

    with pytest.raises(TimeoutError):
        await bounded(fails_late(), 0.01)
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()
    assert reported == []
    loop.set_exception_handler(None)


async def test_a_cancelled_caller_cancels_the_call() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.ensure_future(bounded(hangs(), 60.0))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(cancelled.wait(), 5.0)
