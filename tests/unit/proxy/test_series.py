"""The dashboard's 15-minute ring (`proxy.series`): per-second figures, gaps, bounds."""

from __future__ import annotations

import sys

from cutover.proxy.series import BOUNDS, Series, percentile

T0 = 1_700_000_000.0


def test_one_second_closes_into_its_figures() -> None:
    s = Series()
    for i in range(100):
        s.record("go", T0 + 0.001 * i, 0.010 if i < 90 else 0.200, error=i >= 98)
    snap = s.snapshot(T0 + 1.0)
    go = snap["backends"]["go"]
    assert snap["t"] == [int(T0)]
    assert go["rps"] == [100]
    assert go["error_rate"] == [0.02]
    assert 10 <= go["p50_ms"][0] <= 10 * 1.15 + 0.01  # within one bucket (15%) above
    assert 200 <= go["p95_ms"][0] <= 200 * 1.15 + 0.01


def test_seconds_without_traffic_are_zero_not_missing() -> None:
    s = Series()
    s.record("go", T0, 0.01, error=False)
    s.record("go", T0 + 3.2, 0.01, error=False)
    snap = s.snapshot(T0 + 4.0)
    go = snap["backends"]["go"]
    assert snap["t"] == [int(T0) + i for i in range(4)]
    assert go["rps"] == [1, 0, 0, 1]
    assert go["error_rate"] == [0.0, None, None, 0.0]  # no attempt: no rate (a gap, not 0)
    assert go["p95_ms"][1] is None


def test_a_backend_seen_later_is_padded_to_the_same_length() -> None:
    s = Series()
    s.record("go", T0, 0.01, error=False)
    s.record("python", T0 + 2, 0.01, error=True)
    snap = s.snapshot(T0 + 3)
    assert len(snap["backends"]["go"]["rps"]) == len(snap["backends"]["python"]["rps"]) == 3
    assert snap["backends"]["python"]["rps"] == [0, 0, 1]
    assert snap["backends"]["python"]["error_rate"] == [None, None, 1.0]


def test_an_attempt_without_an_answer_counts_without_latency() -> None:
    s = Series()
    s.record("go", T0, None, error=True)
    go = s.snapshot(T0 + 1)["backends"]["go"]
    assert go["rps"] == [1] and go["error_rate"] == [1.0] and go["p50_ms"] == [None]


def test_memory_is_bounded_by_the_window_not_the_traffic_or_the_time() -> None:
    s = Series(seconds=60)
    for i in range(10_000):  # almost three hours of traffic, one request a second
        s.record("go", T0 + i, 0.005, error=False)
    snap = s.snapshot(T0 + 10_000)
    assert len(snap["t"]) == 60 and len(snap["backends"]["go"]["rps"]) == 60
    assert snap["t"][-1] == int(T0) + 9_999
    assert len(s.backends["go"]) == 60


def test_a_long_silence_does_not_allocate_more_than_the_window() -> None:
    s = Series(seconds=900)
    s.record("go", T0, 0.01, error=False)
    s.snapshot(T0 + 10**9)  # 30 years later
    assert len(s.backends["go"]) == 900
    assert s.snapshot(T0 + 10**9)["backends"]["go"]["rps"] == [0] * 900


def test_backends_past_the_cap_are_dropped_and_counted() -> None:
    s = Series(max_series=2)
    for name in ("a", "b", "c", "d"):
        s.record(name, T0, 0.01, error=False)
    assert set(s.snapshot(T0 + 1)["backends"]) == {"a", "b"}
    assert s.dropped == 2


def test_weights_are_sampled_into_every_second_until_they_change() -> None:
    s = Series()
    s.set_weights("default", (("go", 10), ("python", 90)))
    s.roll(T0)
    s.roll(T0 + 3)
    s.set_weights("default", (("go", 50), ("python", 50)))
    snap = s.snapshot(T0 + 5)
    assert snap["weights"]["default"] == {
        "go": [10, 10, 10, 50, 50],
        "python": [90, 90, 90, 50, 50],
    }


def test_the_clock_going_backwards_changes_nothing() -> None:
    s = Series()
    s.record("go", T0 + 5, 0.01, error=False)
    s.record("go", T0 + 2, 0.01, error=False)  # counted in the open second
    snap = s.snapshot(T0 + 6)
    assert snap["backends"]["go"]["rps"] == [2]


def test_percentile_of_nothing_is_none_and_of_huge_values_the_top_bound() -> None:
    hist = [0] * (len(BOUNDS) + 1)
    assert percentile(hist, 0, 0.5) is None
    hist[-1] = 3
    assert percentile(hist, 3, 0.95) == BOUNDS[-1]


def test_a_closed_second_is_small() -> None:
    s = Series()
    s.record("go", T0, 0.01, error=False)
    s.roll(T0 + 1)
    slot = s.backends["go"][0]
    assert sys.getsizeof(slot) < 100  # four figures, not the histogram
