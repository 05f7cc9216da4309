"""Event-loop lag: shedding starts above the threshold, stops below it, never when off."""

from __future__ import annotations

import asyncio

import pytest

from cutover.parity.lag import INTERVAL, LoopLag


def test_shedding_starts_above_the_threshold_and_stops_below_it() -> None:
    lag = LoopLag(0.020)
    for _ in range(20):
        lag.observe(0.001)  # an idle loop
    assert not lag.shedding
    lag.observe(0.100)  # one 100 ms stall: 0.3 x 100 ms is over 20 ms
    assert lag.shedding and lag.lag > 0.020
    lag.observe(0.0)
    assert lag.shedding  # smoothed: a stall sheds for the next probe too
    lag.observe(0.0)
    assert not lag.shedding and lag.lag < 0.020
    assert lag.probes == 23


def test_a_sustained_lag_just_under_the_threshold_never_sheds() -> None:
    lag = LoopLag(0.020)
    for _ in range(1000):
        lag.observe(0.019)
    assert not lag.shedding
    for _ in range(20):
        lag.observe(0.021)
    assert lag.shedding


def test_zero_threshold_never_sheds_and_negative_lateness_counts_as_none() -> None:
    off = LoopLag(0.0)
    for _ in range(50):
        off.observe(5.0)
    assert not off.shedding
    on = LoopLag(0.020)
    on.observe(-1.0)  # a timer that fired early is not negative lag
    assert on.lag == 0.0


async def test_the_probe_measures_how_late_its_timer_wakes() -> None:
    now = [100.0]
    lateness = iter([0.0, 0.0, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    seen: list[bool] = []
    lag = LoopLag(0.020)

    async def sleep(seconds: float) -> None:
        assert seconds == INTERVAL
        try:
            now[0] += seconds + next(lateness)
        except StopIteration:
            raise asyncio.CancelledError from None

    with pytest.raises(asyncio.CancelledError):
        await lag.run(time=lambda: now[0], sleep=sleep, on_probe=lambda: seen.append(lag.shedding))
    assert seen[:2] == [False, False]
    assert seen[2] and seen[3]  # shedding while the loop is 200 ms late
    assert not seen[-1]  # and not once it caught up
    assert lag.probes == 12
