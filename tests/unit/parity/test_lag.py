"""Event-loop lag: shedding starts above the threshold, stops below it, never when off."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutover.parity.lag import INTERVAL, LoopLag, RunQueueWait


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


def test_run_queue_wait_sheds_above_its_threshold_and_never_when_off() -> None:
    lag = LoopLag(0.020, wait_threshold=0.25)
    for _ in range(20):
        lag.observe(0.0, 0.05)  # the loop's thread rarely waits for a CPU
    assert not lag.shedding
    for _ in range(5):
        lag.observe(0.0, 0.6)  # the machine is saturated: the loop keeps up, but waits
    assert lag.shedding and lag.lag == 0.0 and lag.wait > 0.25
    for _ in range(10):
        lag.observe(0.0, 0.0)
    assert not lag.shedding
    off = LoopLag(0.020, wait_threshold=0.0)
    for _ in range(20):
        off.observe(0.0, 1.0)
    assert not off.shedding
    unknown = LoopLag(0.020, wait_threshold=0.25)
    unknown.observe(0.0, None)  # no schedstat here: the wait is not guessed
    unknown.observe(0.0, 7.0)  # more than the interval (clock steps): counted as all of it
    assert unknown.wait == pytest.approx(0.3)


class ScriptedWaits(RunQueueWait):
    def __init__(self, values: list[int | None]) -> None:
        self.values = iter(values)

    def read(self) -> int | None:
        return next(self.values)

    def close(self) -> None:
        pass


async def test_the_probe_measures_the_share_its_thread_waited_for_a_cpu() -> None:
    now = [0.0]
    steps = iter(range(4))
    lag = LoopLag(0.0, wait_threshold=0.1)
    seen: list[float] = []

    async def sleep(seconds: float) -> None:
        try:
            next(steps)
        except StopIteration:
            raise asyncio.CancelledError from None
        now[0] += seconds

    # 0 ns, then +25 ms waited in a 50 ms interval, then +0, then unreadable
    waits = ScriptedWaits([0, 25_000_000, 25_000_000, None, None])
    with pytest.raises(asyncio.CancelledError):
        await lag.run(time=lambda: now[0], sleep=sleep, on_probe=lambda: seen.append(lag.wait),
                      waits=waits)  # fmt: skip
    assert seen[0] == pytest.approx(0.3 * 0.5)
    assert seen[1] == pytest.approx(0.15 * 0.7)
    assert seen[2] == seen[1] and seen[3] == seen[1]  # not known: left as it was


def test_the_run_queue_counter_reads_this_threads_schedstat() -> None:
    counter = RunQueueWait()
    try:
        first, second = counter.read(), counter.read()
        assert first is not None and second is not None and second >= first >= 0
    finally:
        counter.close()
    missing = RunQueueWait("/nonexistent/schedstat")
    assert missing.read() is None


_figures = st.floats(min_value=-1.0, max_value=2.0, allow_nan=False)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("observe"), _figures, st.one_of(st.none(), _figures)),
        st.tuples(st.sampled_from(["threshold", "wait_threshold", "lag", "wait"]), _figures),
    ),
    max_size=40,
)


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), _steps)
def test_shedding_is_judged_again_after_every_change(
    threshold: float, wait_threshold: float, steps: list[tuple]
) -> None:
    """`shedding` is kept, not computed on each read: after any sequence of probes and of
    figures or thresholds set (a reload; a test), it says what the figures say."""
    lag = LoopLag(threshold, wait_threshold)
    for step in steps:
        if step[0] == "observe":
            lag.observe(step[1], step[2])
        else:
            setattr(lag, step[0], step[1])
        expected = (0.0 < lag.threshold < lag.lag) or (0.0 < lag.wait_threshold < lag.wait)
        assert lag.shedding is expected
