"""After traffic stops, every in-flight count of a gateway reads zero (DESIGN.md, Decisions).

`assert_quiescent(gw)` polls them all (with a generous deadline: a cancelled exchange may
take a few loop turns to unwind) and fails naming every count that stayed above zero:

- the gateway's `in_flight` (what the concurrency cap `limits.max_concurrency` reads);
- each route's retry budget: requests and replays in flight;
- the fast listener: its share of in-flight requests, exchanges still being answered, queued
  requests, quick lanes waiting for a backend;
- each backend's pools: the fast path's `LeanPool` connections out on an exchange (and
  callers waiting for one), the aiohttp connector's acquired connections;
- `cutover_in_flight_requests` as /metrics shows it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from cutover.proxy.server import Gateway

__all__ = ["DEADLINE", "assert_quiescent", "in_flight_counts"]

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
    if scrape:
        note("/metrics cutover_in_flight_requests", await _scraped_in_flight(gw))
    return held


async def assert_quiescent(gw: Gateway, deadline: float | None = None) -> None:
    """Fail unless every in-flight count of `gw` is zero, at one moment, within `deadline`
    seconds (default `DEADLINE`)."""
    if deadline is None:
        deadline = DEADLINE
    end = time.monotonic() + deadline
    scrape = not gw.draining  # a closed gateway answers no /metrics
    while True:
        held = await in_flight_counts(gw, scrape)
        if not held:
            return
        if time.monotonic() >= end:
            raise AssertionError(f"in-flight counts not back to zero after {deadline:g} s: {held}")
        await asyncio.sleep(0.02)


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
