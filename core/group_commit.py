"""Group commit: many callers' writes share one transaction, as databases do for their logs.

A caller `submit`s an item and awaits its future. One loop (`run`, a supervised background task)
takes everything waiting, up to `max_batch` units (an item may count several: a webhook counts
its alerts), and hands the batch to `commit`, which writes it in one transaction and returns one
result per item. Items that arrive while a commit is in flight wait for the next batch, so the
batch grows with the load and a lone item never waits for company.

- A batch that fails with one of the `expected` errors (the store refused) fails its members
  only: each future gets the error, and the next batch is tried as usual. Any other error fails
  the members too, then ends the loop so that the supervisor counts it and starts it again.
- The queue is bounded (`max_queue` units): past it `submit` raises `Overloaded` at once, so a
  storm beyond what the store can take costs an answer, not memory. A single item larger than
  the whole bound is still taken when nothing waits (it could never be taken otherwise).
- A caller that stops waiting (its request was cancelled) does not take its item back: once
  submitted, an item is committed, or not, with its batch (`asyncio.shield` in `wait`).
- `close` refuses new items; `run` returns once what was queued has been committed (a graceful
  shutdown flushes the pending batch).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """The queue is full (or closing): nothing was taken; the caller should retry later."""


@dataclass(slots=True)
class _Waiting(Generic[T, R]):
    item: T
    size: int
    future: asyncio.Future[R]


def _retrieve(future: asyncio.Future[object]) -> None:
    """A member that stopped waiting never reads its error; read it here, so asyncio does not
    log it as never retrieved."""
    if not future.cancelled():
        future.exception()


class GroupCommit(Generic[T, R]):
    """See the module docstring. `commit(items)` returns one result per item, in order."""

    def __init__(
        self,
        commit: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        max_queue: int,
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self._commit = commit
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._expected = expected
        self._queue: deque[_Waiting[T, R]] = deque()
        self.queued = 0  # units waiting for a batch
        self.committing = 0  # units in the batch being committed
        self.batches = 0  # batches committed (or failed), for tests and stats
        self._kick = asyncio.Event()
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def submit(self, item: T, size: int = 1) -> asyncio.Future[R]:
        """Queue `item` (worth `size` units) for the next batch; raises `Overloaded`."""
        if self._closing:
            raise Overloaded("closing")
        if self.queued and self.queued + size > self.max_queue:
            raise Overloaded(f"{self.queued} waiting")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._queue.append(_Waiting(item, size, future))
        self.queued += size
        self._kick.set()
        return future

    @staticmethod
    async def wait(future: asyncio.Future[R]) -> R:
        """The item's result once its batch committed; cancelling the waiter leaves the item
        in its batch."""
        return await asyncio.shield(future)

    def close(self) -> None:
        """Take nothing new; `run` returns once the queue is flushed."""
        self._closing = True
        self._kick.set()

    def _take(self) -> list[_Waiting[T, R]]:
        batch: list[_Waiting[T, R]] = []
        units = 0
        while self._queue and (not batch or units + self._queue[0].size <= self.max_batch):
            waiting = self._queue.popleft()
            batch.append(waiting)
            units += waiting.size
        self.queued -= units
        self.committing = units
        return batch

    async def run(self) -> None:
        """The loop: commit batches until closed and flushed."""
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._kick.clear()
                await self._kick.wait()
                continue
            batch = self._take()
            try:
                results = await self._commit([w.item for w in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for {len(batch)} items")
            except BaseException as exc:
                # CancelledError too: the loop was stopped in the middle of a commit (which
                # rolled back), so its members are answered rather than left waiting.
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc if isinstance(exc, Exception) else _stopped())
                if not isinstance(exc, self._expected):
                    raise
            else:
                for w, result in zip(batch, results, strict=True):
                    if not w.future.done():
                        w.future.set_result(result)
            finally:
                self.committing = 0
                self.batches += 1


def _stopped() -> Exception:
    return Overloaded("stopped before the batch committed")
