"""Callers waiting their turn for a bounded resource, first come, first served.

One mechanism for every pool that makes callers wait when it is full (the fast path's
connections, the delivery engine's exchanges): `wait` until `wake_one` is called for you or a
deadline passes. A caller that was woken but leaves before it runs (cancelled: its client went
away) hands the wake-up on to the next one, so a turn is never lost and nobody waits for a
release that already happened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

__all__ = ["WaitLine"]


class WaitLine:
    """The callers waiting for a free slot, in arrival order."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._waiters)

    async def wait(self, deadline: float) -> None:
        """Until woken (then look again: another may have taken the slot first); raises
        TimeoutError at `deadline` (the loop's clock)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.wake_one()  # woken, but leaving: the wake-up goes to the next one
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def wake_one(self) -> None:
        """A slot came free: the longest-waiting caller looks again."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def wake_all(self) -> None:
        """The pool closed: every caller looks again (and finds it closed)."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
