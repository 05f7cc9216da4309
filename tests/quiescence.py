"""After traffic stops, every in-flight count of a gateway reads zero (DESIGN.md, Decisions).

`assert_quiescent(gw)` polls them all (with a generous deadline: a cancelled exchange may
take a few loop turns to unwind) and fails naming every count that stayed above zero:

- the gateway's `in_flight` (what the concurrency cap `limits.max_concurrency` reads);
- each route's retry budget: requests and replays in flight;
- the fast listener: its share of in-flight requests, exchanges still being answered, queued
  requests, quick lanes waiting for a backend;
- each backend's pools: the fast path's `LeanPool` connections out on an exchange (and
  callers waiting for one), the aiohttp connector's acquired connections;
- what each feature holds in memory (`Feature.in_flight`): deliveries being sent per target and
  the delivery engine's tasks, mirror and capture jobs queued, canary audit events waiting;
- the dashboard's open event streams (each page holds one while it is open);
  the alert intake's group commit (alerts queued for a batch, and in the batch committing);
- `cutover_in_flight_requests` as /metrics shows it.

Every gateway a test starts ends with this check, however it is closed (a fixture, a helper,
the test itself): `closing_checks` (an autouse fixture in tests/conftest.py installs it) runs
it before each gateway closes, and again, without the scrape, once it has closed. A count a
test leaves above zero on purpose is declared with `expect_held(gw, counts, why)`; the check
then wants exactly those counts, never skips.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from cutover.proxy.server import Gateway

__all__ = [
    "DEADLINE",
    "Closings",
    "assert_quiescent",
    "expect_held",
    "in_flight_counts",
]

DEADLINE = 10.0  # seconds a count may take to come back to zero (a loaded machine is slow)


async def in_flight_counts(gw: Gateway, scrape: bool = True) -> dict[str, float]:
    """Every in-flight count of `gw` that is not zero, by name (empty: all quiet).

    `scrape`: also read the gauge from /metrics (the gateway must still be listening).
    """
    held: dict[str, float] = {}

    def note(name: str, value: float) -> None:
        if value:
            held[name] = value

    note("gateway.in_flight", gw.in_flight)
    for route, budget in gw.state.budgets.items():
        note(f"budget[{route}].in_flight", budget.in_flight)
        note(f"budget[{route}].replays", budget.replays)
    fast = gw._fast
    if fast is not None:
        note("fast.in_flight", fast.meters.in_flight)
        note("fast.exchanges", sum(1 for c in fast.conns if c.current is not None))
        note("fast.queued", sum(len(c.queue) for c in fast.conns))
        note("fast.waiting", len(fast.waiting))
    for name, upstream in gw.state.upstreams.items():
        note(f"lean[{name}].busy", upstream.lean.busy)
        note(f"lean[{name}].waiters", upstream.lean.waiting)
        connector = upstream.session.connector
        if connector is not None:
            note(f"session[{name}].acquired", len(connector._acquired))
    for feature in gw.features:
        for name, value in feature.in_flight().items():
            note(f"{feature.name}.{name}", value)
    if scrape:
        note("/metrics cutover_in_flight_requests", await _scraped_in_flight(gw))
    return held


async def assert_quiescent(gw: Gateway, deadline: float | None = None) -> None:
    """Fail unless every in-flight count of `gw` is zero (or, where `expect_held` declared
    some, exactly those), at one moment, within `deadline` seconds (default `DEADLINE`)."""
    if deadline is None:
        deadline = DEADLINE
    serving, closed, why = _EXPECTED.get(gw, ({}, None, ""))
    end = time.monotonic() + deadline
    scrape = not gw.draining  # a closed gateway answers no /metrics
    expected = serving
    if not scrape:  # closed: the gauge went with the listener
        expected = closed if closed is not None else serving
        # the gauge went with the listener, the dashboard's streams with the close
        expected = {
            k: v for k, v in expected.items() if not k.startswith(("/metrics", "dashboard."))
        }
    while True:
        held = await in_flight_counts(gw, scrape)
        if held == expected:
            return
        if time.monotonic() >= end:
            wanted = f"{expected} ({why})" if expected else "zero"
            raise AssertionError(
                f"in-flight counts not back to {wanted} after {deadline:g} s: {held}"
            )
        await asyncio.sleep(0.02)


_EXPECTED: weakref.WeakKeyDictionary[
    Gateway, tuple[dict[str, float], dict[str, float] | None, str]
] = weakref.WeakKeyDictionary()


def expect_held(
    gw: Gateway,
    counts: Mapping[str, float],
    why: str,
    once_closed: Mapping[str, float] | None = None,
) -> None:
    """`gw` keeps `counts` (names as `in_flight_counts` gives them) above zero on purpose when
    the test ends, for the reason `why`: the check wants exactly these, not zero. Once closed
    it wants `once_closed` (default: the same counts; a close gives up some work by design)."""
    _EXPECTED[gw] = (dict(counts), dict(once_closed) if once_closed is not None else None, why)


class Closings:
    """What `closing_checks` found for one test: every gateway started, and every problem."""

    def __init__(self) -> None:
        self.started: list[Gateway] = []
        self.closed: weakref.WeakSet[Gateway] = weakref.WeakSet()
        self.problems: list[str] = []

    def wrap_start(self, start: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        closings = self

        async def checked_start(gw: Gateway, *args: object, **kwargs: object) -> None:
            await start(gw, *args, **kwargs)
            closings.started.append(gw)

        return checked_start

    def wrap_close(
        self, close: Callable[[Gateway], Awaitable[None]]
    ) -> Callable[..., Awaitable[None]]:
        closings = self

        async def checked_close(gw: Gateway) -> None:
            """The check while `gw` still serves, the close (whatever the check found), the
            check once closed; problems are kept for the test's end, so that every gateway
            is closed first."""
            serving = gw in closings.started and gw not in closings.closed and not gw.draining
            if serving:
                await closings._check(gw, "before it closed")
            try:
                await close(gw)
            finally:
                if serving:
                    closings.closed.add(gw)
                    await closings._check(gw, "once closed")

        return checked_close

    async def _check(self, gw: Gateway, when: str) -> None:
        try:
            await assert_quiescent(gw)
        except AssertionError as exc:
            self.problems.append(f"gateway {gw.url} {when}: {exc}")

    def verdict(self) -> list[str]:
        """Every problem, and every gateway the test left running."""
        left = [gw.url for gw in self.started if gw not in self.closed and not gw.draining]
        return self.problems + [f"gateway {url} was never closed" for url in left]


async def _scraped_in_flight(gw: Gateway) -> float:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(gw.url + "/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "cutover_in_flight_requests":
            return float(value)
    raise AssertionError("/metrics has no cutover_in_flight_requests")
