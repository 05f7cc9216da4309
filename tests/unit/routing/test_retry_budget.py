"""routing.budget: max(minimum, percent% of in-flight) replays in flight."""

from __future__ import annotations

import pytest

from cutover.core.config_model import Retry
from cutover.routing.budget import RetryBudget


def test_floor_allows_sequential_traffic() -> None:
    b = RetryBudget(20.0, 3)
    for _ in range(100):  # one request at a time, each replayed: never starved
        b.start()
        assert b.try_replay()
        b.replay_done()
        b.finish()
    assert b.refused == 0 and b.in_flight == 0 and b.replays == 0


def test_floor_caps_concurrent_replays() -> None:
    b = RetryBudget(20.0, 3)
    b.start()
    assert [b.try_replay() for _ in range(5)] == [True, True, True, False, False]
    assert b.refused == 2
    b.replay_done()
    assert b.try_replay()
    assert not b.try_replay()


@pytest.mark.parametrize(
    ("in_flight", "allowed"),
    [(0, 3), (1, 3), (10, 3), (15, 3), (16, 4), (20, 4), (21, 5), (100, 20), (1000, 200)],
)
def test_percentage(in_flight: int, allowed: int) -> None:
    b = RetryBudget(20.0, 3)
    for _ in range(in_flight):
        b.start()
    granted = 0
    while b.try_replay():
        granted += 1
        assert granted <= 10_000
    assert granted == allowed


def test_zero_minimum_and_zero_percent() -> None:
    b = RetryBudget(0.0, 0)
    b.start()
    assert not b.try_replay()
    b = RetryBudget(50.0, 0)
    assert not b.try_replay()  # nothing in flight: nothing allowed
    b.start()
    b.start()
    assert b.try_replay()
    assert not b.try_replay()


def test_from_retry() -> None:
    b = RetryBudget.from_retry(Retry(budget_percent=10.0, budget_min=1))
    assert (b.percent, b.minimum) == (10.0, 1)


def test_negative_rejected() -> None:
    with pytest.raises(ValueError):
        RetryBudget(-1.0, 3)
