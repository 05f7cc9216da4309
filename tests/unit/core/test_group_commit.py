"""core/group_commit.py on its own: batching, bounds, failures, cancellation, close."""

from __future__ import annotations

import asyncio

import pytest

from cutover.core.group_commit import GroupCommit, Overloaded


class Refused(Exception):
    pass


class Store:
    """A commit that records its batches; `hold` keeps a batch in flight until set."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.fail: type[BaseException] | None = None
        self.poison = ""  # a batch holding this item is refused

    async def commit(self, items: list[str]) -> list[str]:
        await self.hold.wait()
        self.batches.append(items)
        if self.poison in items:
            raise Refused("refused")
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail("refused")
        return [f"ok:{i}" for i in items]


async def started(store: Store, **kw: int) -> tuple[GroupCommit[str, str], asyncio.Task[None]]:
    gc: GroupCommit[str, str] = GroupCommit(
        store.commit,
        max_batch=kw.get("max_batch", 100),
        max_queue=kw.get("max_queue", 1000),
        expected=(Refused,),
    )
    return gc, asyncio.create_task(gc.run())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_arrivals_during_a_commit_share_the_next_batch() -> None:
    store = Store()
    gc, task = await started(store)
    store.hold.clear()
    first = gc.submit("a")
    await settle()
    assert gc.committing == 1
    rest = [gc.submit(x) for x in "bcd"]
    assert gc.queued == 3
    store.hold.set()
    assert await gc.wait(first) == "ok:a"
    assert [await gc.wait(f) for f in rest] == ["ok:b", "ok:c", "ok:d"]
    assert store.batches == [["a"], ["b", "c", "d"]]
    assert gc.queued == gc.committing == 0
    gc.close()
    await task


async def test_batch_bound_counts_units_and_a_big_item_still_goes() -> None:
    store = Store()
    gc, task = await started(store, max_batch=5, max_queue=8)
    store.hold.clear()
    block = gc.submit("x")
    await settle()
    futures = [gc.submit("a", 3), gc.submit("b", 3)]
    with pytest.raises(Overloaded):
        gc.submit("c", 3)  # 6 + 3 > 8: refused at once
    store.hold.set()
    await asyncio.gather(block, *futures)
    assert store.batches == [["x"], ["a"], ["b"]]  # 3 + 3 > 5: two batches
    huge = gc.submit("huge", 50)  # larger than every bound, but nothing else waits
    assert await gc.wait(huge) == "ok:huge"
    gc.close()
    await task


async def test_a_refused_batch_fails_only_its_members() -> None:
    store = Store()
    gc, task = await started(store)
    store.hold.clear()
    before = gc.submit("a")
    await settle()
    members = [gc.submit(x) for x in "bc"]
    store.poison = "b"
    store.hold.set()
    assert await before == "ok:a"
    for f in members:
        with pytest.raises(Refused):
            await f
    after = gc.submit("d")
    assert await gc.wait(after) == "ok:d"  # the loop goes on
    assert store.batches == [["a"], ["b", "c"], ["d"]]
    assert not task.done()
    gc.close()
    await task


async def test_an_unexpected_error_fails_the_members_and_ends_the_loop() -> None:
    store = Store()
    gc, task = await started(store)
    store.fail = ZeroDivisionError
    f = gc.submit("a")
    with pytest.raises(ZeroDivisionError):
        await f
    with pytest.raises(ZeroDivisionError):
        await task  # the supervisor counts it and starts `run` again
    assert gc.committing == 0


async def test_a_waiter_cancelled_leaves_its_item_in_the_batch() -> None:
    store = Store()
    gc, task = await started(store)
    store.hold.clear()
    future = gc.submit("a")
    waiter = asyncio.create_task(gc.wait(future))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    store.hold.set()
    assert await future == "ok:a"  # committed all the same
    gc.close()
    await task


async def test_close_flushes_and_refuses_new_items() -> None:
    store = Store()
    gc, task = await started(store)
    store.hold.clear()
    futures = [gc.submit(x) for x in "abc"]
    await settle()
    gc.close()
    with pytest.raises(Overloaded):
        gc.submit("late")
    assert not task.done()
    store.hold.set()
    await task  # returns once flushed
    assert [f.result() for f in futures] == ["ok:a", "ok:b", "ok:c"]


async def test_stopped_in_the_middle_of_a_commit_answers_its_members() -> None:
    store = Store()
    gc, task = await started(store)
    store.hold.clear()
    future = gc.submit("a")
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(Overloaded):
        await future
    assert gc.committing == 0
