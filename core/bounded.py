"""A bounded wait on a store call, for callers that must answer promptly (the admin API).

`asyncio.timeout` around an asyncpg call does not bound the caller's wait: the query is
cancelled, and releasing its connection then waits for the cancellation to reach a server that
does not answer (up to the pool's acquire timeout). `bounded` runs the call in a task of its
own and stops waiting at the deadline; the task is cancelled and finishes its cleanup in the
background, where nobody waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

# One store call on a path that answers an operator (admin writes, the audit log, the shared
# state without Redis): small statements that take milliseconds on a store that answers.
STORE_TIMEOUT = 2.0

_detached: set[asyncio.Future[object]] = set()  # strong references until they finish


async def bounded(call: Awaitable[T], timeout: float) -> T:
    """The result of `call`, or TimeoutError once `timeout` seconds have passed without one."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        _detach(task)
        raise
    if done:
        return task.result()
    _detach(task)
    raise TimeoutError(f"no answer within {timeout:g}s")


def _detach(task: asyncio.Future[T]) -> None:
    task.cancel()
    _detached.add(task)  # type: ignore[arg-type]
    task.add_done_callback(_finished)


def _finished(task: asyncio.Future[object]) -> None:
    _detached.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a late failure is expected, not an unhandled error
