"""Canary analysis: windows, percentiles and the verdict's significance rule (routing/canary.py)."""

from __future__ import annotations

import random

import pytest

from cutover.routing.canary import (
    Criteria,
    SideWindow,
    Snapshot,
    bin_of,
    bin_value,
    judge,
    percentile,
    z_score,
)

CRITERIA = Criteria(max_error_rate=0.01, max_p95_ratio=2.0, min_requests=200)


def window_of(
    n: int,
    error_every: int | None = None,
    latency: float = 0.020,
    slow: tuple[int, float] | None = None,
    now: float = 1000.0,
) -> Snapshot:
    """n requests over the last 10 s; every `error_every`-th fails; every slow[0]-th is slow."""
    w = SideWindow(60)
    for i in range(n):
        duration = latency
        if slow is not None and i % slow[0] == 0:
            duration = slow[1]
        w.record(now - 10 + 10 * i / n, error_every is not None and i % error_every == 0, duration)
    return w.snapshot(now)


def test_histogram_bins_are_tight() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        seconds = rng.uniform(0.00001, 30.0)
        assert abs(bin_value(bin_of(seconds)) - seconds) / seconds < 0.035
    assert bin_of(0) == 0 and bin_of(-1) == 0


def test_percentiles_from_the_histogram() -> None:
    w = SideWindow(60)
    for i in range(1, 1001):  # 1 ms .. 1000 ms
        w.record(100.0, False, i / 1000)
    snap = w.snapshot(100.0)
    for q, expected in ((0.5, 0.5), (0.95, 0.95), (0.99, 0.99)):
        got = percentile(snap.bins, q)
        assert got is not None and abs(got - expected) / expected < 0.035
    assert percentile({}, 0.95) is None


def test_window_slides_in_one_second_buckets() -> None:
    w = SideWindow(60)
    w.record(100.2, True, 0.01)
    w.record(130.7, False, 0.01)
    assert (w.snapshot(159.9).requests, w.snapshot(159.9).errors) == (2, 1)
    snap = w.snapshot(160.0)  # the bucket of second 100 left the 60-s window
    assert (snap.requests, snap.errors) == (1, 0)
    assert w.snapshot(191.0).requests == 0
    assert w.snapshot(191.0).bins == {}


def test_snapshots_merge_exactly_and_survive_json() -> None:
    a, b = window_of(300, error_every=10), window_of(500, error_every=50, latency=0.1)
    merged = Snapshot.merge([Snapshot.from_dict(a.to_dict()), Snapshot.from_dict(b.to_dict())])
    assert merged.requests == 800 and merged.errors == 30 + 10
    assert sum(merged.bins.values()) == 800
    assert merged.requests_since(0) == 800
    assert merged.requests_since(995.0) == sum(n for s, n in merged.per_second.items() if s >= 995)


def test_z_score() -> None:
    assert z_score(10, 200, 100, 2000) == pytest.approx(0.0)  # 5% and 5%
    assert z_score(10, 200, 0, 2000) > 6
    assert z_score(0, 0, 5, 100) == 0.0
    assert z_score(0, 200, 0, 2000) == 0.0


def test_candidate_with_5_percent_errors_is_unhealthy() -> None:
    v = judge(window_of(4000), window_of(400, error_every=20), CRITERIA)
    assert v.status == "unhealthy"
    assert v.criterion == "error_rate"
    judged = v.figures()["judged"]
    assert judged["candidate_errors"] == 20 and judged["candidate_requests"] == 400
    assert judged["candidate_error_rate"] == pytest.approx(0.05)
    assert judged["baseline_error_rate"] == 0.0
    assert judged["z"] >= judged["z_critical"]
    assert "20/400 = 5.000% > max 1.000%" in v.reason


def test_both_sides_failing_alike_never_blames_the_candidate() -> None:
    v = judge(window_of(4000, error_every=20), window_of(400, error_every=20), CRITERIA)
    assert v.status == "healthy"
    error_check = next(c for c in v.checks if c.criterion == "error_rate")
    assert not error_check.failed
    assert "not significantly worse" in error_check.detail


def test_a_few_errors_on_little_traffic_are_not_significant() -> None:
    # 3/200 = 1.5% is over the 1% maximum, but the baseline fails at 1% too: noise.
    v = judge(window_of(2000, error_every=100), window_of(200, error_every=67), CRITERIA)
    assert v.status == "healthy"


def test_seeds_criterion_baseline_under_a_tenth_of_a_percent() -> None:
    # candidate 2%, baseline 0.05%: the seeds' rollback case.
    v = judge(window_of(4000, error_every=2000), window_of(500, error_every=50), CRITERIA)
    assert (v.status, v.criterion) == ("unhealthy", "error_rate")


def test_under_min_requests_is_its_own_verdict() -> None:
    v = judge(window_of(5000), window_of(199, error_every=2), CRITERIA)
    assert v.status == "insufficient_data"
    assert v.criterion == "min_requests"
    assert v.checks[0].figures == {"min_requests": 200, "candidate": 199, "baseline": 5000}


def test_slow_candidate_p95_over_twice_the_baseline() -> None:
    v = judge(window_of(4000, latency=0.020), window_of(400, latency=0.060), CRITERIA)
    assert (v.status, v.criterion) == ("unhealthy", "p95_latency")
    judged = v.figures()["judged"]
    assert judged["ratio"] == pytest.approx(3.0, rel=0.05)
    assert judged["candidate_slower_than_threshold"] == 400


def test_both_sides_slow_alike_is_healthy() -> None:
    slow = (10, 0.5)  # every 10th request takes 500 ms on both sides
    v = judge(window_of(4000, slow=slow), window_of(400, slow=slow), CRITERIA)
    assert v.status == "healthy"


def test_tiny_latencies_need_the_absolute_margin() -> None:
    # 0.3 ms vs 0.1 ms is 3x, but under the 10 ms margin: not a regression worth a rollback.
    v = judge(window_of(4000, latency=0.0001), window_of(400, latency=0.0003), CRITERIA)
    assert v.status == "healthy"
