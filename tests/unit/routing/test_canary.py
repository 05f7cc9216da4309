"""Canary analysis: windows, percentiles and the verdict's significance rule (routing/canary.py)."""

from __future__ import annotations

import math
import random

import pytest

from cutover.bench.canary_sim import binomial
from cutover.routing.canary import (
    Criteria,
    RecentLane,
    SideWindow,
    Snapshot,
    bin_of,
    bin_value,
    fisher_p,
    judge,
    percentile,
    z_of_p,
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


def test_a_request_the_side_did_not_serve_counts_without_a_latency() -> None:
    w = SideWindow(60)
    for _ in range(10):
        w.record(100.0, False, 0.010)
    for _ in range(30):
        w.record(100.0, True, None)  # unavailable: the split's share, served elsewhere
    snap = w.snapshot(100.0)
    assert (snap.requests, snap.errors) == (40, 30)
    assert sum(snap.bins.values()) == 10
    p95 = percentile(snap.bins, 0.95)
    assert p95 is not None and abs(p95 - 0.010) / 0.010 < 0.035


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


# -- Fisher's exact test, rates that show "over the maximum", the recent lane ---------------------


def brute_fisher(x1: int, n1: int, x2: int, n2: int) -> float:
    k, total = x1 + x2, n1 + n2
    denominator = math.comb(total, n1)
    return (
        sum(math.comb(k, x) * math.comb(total - k, n1 - x) for x in range(x1, min(k, n1) + 1))
        / denominator
    )


@pytest.mark.parametrize(
    "x1,n1,x2,n2",
    [(3, 150, 0, 16200), (3, 150, 16, 16200), (20, 400, 0, 4000), (1, 10, 1, 10),
     (5, 30, 2, 270), (0, 100, 5, 100), (2, 100, 40, 1000), (150, 150, 0, 1350), (7, 20, 9, 20)],
)  # fmt: skip
def test_fisher_p_is_the_exact_hypergeometric_tail(x1: int, n1: int, x2: int, n2: int) -> None:
    assert fisher_p(x1, n1, x2, n2) == pytest.approx(brute_fisher(x1, n1, x2, n2), rel=1e-9)


def test_fisher_p_edges() -> None:
    assert fisher_p(0, 100, 0, 100) == 1.0
    assert fisher_p(5, 0, 0, 100) == 1.0 and fisher_p(5, 100, 0, 0) == 1.0
    assert fisher_p(3, 150, 0, 16200) < 1e-6  # three failures, the baseline clean: 0.0092^3
    assert fisher_p(3, 165, 0, 16200) < 2e-6  # 5.5 s of the recent lane at 30 req/s
    assert fisher_p(2, 150, 0, 16200) > 1e-6
    assert z_of_p(0.5) == 0.0 and z_of_p(1.0) == 0.0
    assert z_of_p(1e-6) == pytest.approx(4.753, abs=1e-3)
    assert fisher_p(100_000, 1_000_000, 0, 9_000_000) == 0.0 or z_of_p(1e-300) > 30


def test_fisher_keeps_its_false_alarm_rate_at_small_counts() -> None:
    # Both sides fail 0.5 %: P(p <= alpha) <= alpha, where the z-test's normal approximation
    # overstates significance (3/150 against 0/1350 is z = 5.2 but p = 1e-3).
    rng = random.Random(11)
    hits = 0
    for _ in range(20_000):
        x1 = binomial(rng, 150, 0.005)
        x2 = binomial(rng, 1350, 0.005)
        hits += fisher_p(x1, 150, x2, 1350) <= 1e-3
    assert hits / 20_000 <= 1e-3
    assert z_score(3, 150, 0, 1350) > 5 and fisher_p(3, 150, 0, 1350) > 5e-4


def snapshot(requests: int, errors: int, recent: tuple[int, int] | None = None) -> Snapshot:
    bins = {bin_of(0.02): requests}
    inner = None
    if recent is not None:
        inner = Snapshot(recent[0], recent[1], {bin_of(0.02): recent[0]})
    return Snapshot(requests, errors, bins, {}, inner)


def test_rates_print_with_enough_digits_to_show_over_the_maximum() -> None:
    v = judge(snapshot(7200, 0), snapshot(799, 8), CRITERIA, 60)
    assert "8/799 = 1.001% > max 1.000%" in v.reason
    assert "baseline 0/7200 = 0.000%" in v.reason
    v = judge(snapshot(7200, 0), snapshot(800, 8), CRITERIA, 60)
    assert "8/800 = 1.000% <= max 1.000%" in v.reason and v.status == "healthy"
    v = judge(snapshot(7200, 0), snapshot(1_000_000, 10_001), CRITERIA, 60)
    assert "10001/1000000 = 1.0001% > max 1.0000%" in v.reason
    figures = set(v.checks[0].figures)
    assert {"p", "alpha", "z", "z_critical", "candidate_errors", "baseline_requests"} <= figures


LANE = Criteria(min_requests=200, recent=RecentLane())


def test_the_recent_lane_blames_a_fresh_break_the_whole_window_has_not_seen_yet() -> None:
    baseline = snapshot(16200, 0, (1350, 0))
    candidate = snapshot(1800, 3, (150, 3))  # 0.17 % over the window, 2 % over the last seconds
    v = judge(baseline, candidate, LANE, 60)
    assert (v.status, v.criterion) == ("unhealthy", "recent_error_rate")
    assert v.recent_failed and not v.failed("error_rate")
    assert v.reason.startswith("candidate error rate over 6s: 3/150 = 2.000% > max 1.000%")
    assert "baseline 0/16200 = 0.000% over 60s" in v.reason and "3 failures (min 3)" in v.reason
    # The two lanes' reasons start alike ("candidate error rate over <n>s: ..."):
    whole = next(c for c in v.checks if c.criterion == "error_rate")
    assert whole.detail.startswith("candidate error rate over 60s: 3/1800 = 0.167% <= max")


def test_the_recent_lane_needs_its_minimum_of_failures() -> None:
    baseline = snapshot(160_000, 0, (13_000, 0))
    candidate = snapshot(1800, 2, (150, 2))  # p is tiny against so large a baseline, but 2 < 3
    v = judge(baseline, candidate, LANE, 60)
    assert v.status == "healthy"
    check = next(c for c in v.checks if c.criterion == "recent_error_rate")
    assert "too few failures" in check.detail


def test_the_recent_lane_stands_aside_when_the_baseline_fails_more_too() -> None:
    # Both sides start failing 20 % together (a shared database, say): the baseline's history
    # is clean, so the candidate's last seconds look bad against it, but the baseline's own
    # last seconds are as bad: not the candidate's doing.
    baseline = snapshot(16200, 270, (1350, 270))
    candidate = snapshot(1800, 30, (150, 30))
    v = judge(baseline, candidate, LANE, 60)
    check = next(c for c in v.checks if c.criterion == "recent_error_rate")
    assert not check.failed and "the baseline fails more too" in check.detail
    assert v.status == "healthy"


def test_the_recent_latency_test_needs_its_minimum_sample() -> None:
    fast, slow = bin_of(0.02), bin_of(0.06)
    baseline = Snapshot(16200, 0, {fast: 16200}, {}, Snapshot(1350, 0, {fast: 1350}))
    few = Snapshot(1800, 0, {fast: 1750, slow: 50}, {}, Snapshot(50, 0, {slow: 50}))
    v = judge(baseline, few, LANE, 60)
    assert v.status == "healthy"
    recent = Snapshot(120, 0, {fast: 70, slow: 50})
    many = Snapshot(1800, 0, {fast: 1750, slow: 50}, {}, recent)
    v = judge(baseline, many, LANE, 60)
    assert (v.status, v.criterion) == ("unhealthy", "recent_p95_latency")
    assert v.figures()["judged"]["candidate_p95_ms"] == pytest.approx(60, rel=0.04)


def test_a_batch_counts_as_its_requests_and_the_recent_window_is_the_newest_seconds() -> None:
    one, batch = SideWindow(60, 5), SideWindow(60, 5)
    for i in range(100):
        t = 100.0 + i * 0.1  # seconds 100..109
        one.record(t, i % 10 == 0, 0.02)
        batch.add(t, 1, 1 if i % 10 == 0 else 0, {bin_of(0.02): 1})
    a, b = one.snapshot(109.5), batch.snapshot(109.5)
    assert a == b
    assert a.recent is not None and (a.recent.requests, a.recent.errors) == (50, 5)  # 105..109
    merged = Snapshot.merge([Snapshot.from_dict(a.to_dict()), b])
    assert merged.recent is not None and merged.recent.requests == 100
    assert SideWindow(60).snapshot(109.5).recent is None
