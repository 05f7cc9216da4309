"""`ClaimMeter`: every claim of a work queue timed, a timed-out one counted, a slow one logged
at most once a minute with what waits (the outbox and the classify queue share it)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from cutover.core.clock import FakeClock
from cutover.core.db import SLOW_CLAIM, ClaimMeter, StoreTimeout, StoreUnavailable


def meter(clock: FakeClock, waiting: list[int | None]) -> tuple[ClaimMeter, CollectorRegistry]:
    registry = CollectorRegistry()

    async def count() -> int:
        value = waiting[0]
        if value is None:
            raise StoreUnavailable("down")
        return value

    return (
        ClaimMeter(
            "queue: claiming work",
            "items waiting",
            clock,
            Histogram("q_claim_seconds", "", registry=registry),
            Counter("q_claim_timeouts_total", "", registry=registry),
            count,
            logging.getLogger("test.claims"),
        ),
        registry,
    )


async def claim(clock: FakeClock, seconds: float, result: object = "rows") -> object:
    clock.advance(seconds)
    return result


async def timed_out(clock: FakeClock, seconds: float) -> object:
    clock.advance(seconds)
    raise StoreTimeout("bound reached")


async def test_claims_are_timed_and_slow_ones_logged_once_a_minute(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="test.claims")
    clock = FakeClock()
    waiting: list[int | None] = [12]
    m, registry = meter(clock, waiting)
    assert await m.measure(claim(clock, 0.01), 5.0) == "rows"
    assert m.last == pytest.approx(0.01) and not caplog.records
    assert await m.measure(claim(clock, SLOW_CLAIM + 1), 5.0) == "rows"
    [record] = caplog.records
    assert record.getMessage() == ("queue: claiming work took 2.00s (12 items waiting; bound 5s)")
    await m.measure(claim(clock, 3), 5.0)  # slow again within the minute: not logged again
    assert len(caplog.records) == 1
    clock.advance(60)
    waiting[0] = None  # the store cannot say how much waits
    await m.measure(claim(clock, 2), None)
    assert caplog.records[-1].getMessage() == (
        "queue: claiming work took 2.00s (an unknown number of items waiting; bound none)"
    )
    assert registry.get_sample_value("q_claim_seconds_count") == 4
    assert registry.get_sample_value("q_claim_seconds_sum") == pytest.approx(7.01)
    assert registry.get_sample_value("q_claim_timeouts_total") == 0


async def test_a_claim_that_runs_out_of_its_bound_is_counted_and_raised() -> None:
    clock = FakeClock()
    m, registry = meter(clock, [3])
    with pytest.raises(StoreTimeout):
        await m.measure(timed_out(clock, 0.2), 0.2)
    assert m.timed_out == 1 and m.last == pytest.approx(0.2)
    assert registry.get_sample_value("q_claim_timeouts_total") == 1
    assert registry.get_sample_value("q_claim_seconds_count") == 1  # timed-out claims included
