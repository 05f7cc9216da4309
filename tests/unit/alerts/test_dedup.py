"""alerts.dedup: fingerprint + status + startsAt within a window; re-fires are new."""

from __future__ import annotations

from cutover.alerts.dedup import DedupWindow, Seen, is_repeat


def test_rule() -> None:
    last = Seen("firing", "t0", at=100.0)
    assert is_repeat(last, "firing", "t0", 100.001, 300)  # milliseconds apart
    assert is_repeat(last, "firing", "t0", 399.9, 300)
    assert not is_repeat(last, "firing", "t0", 400.0, 300)  # window over: processed again
    assert not is_repeat(last, "resolved", "t0", 101, 300)
    assert not is_repeat(last, "firing", "t1", 101, 300)
    assert not is_repeat(None, "firing", "t0", 101, 300)
    assert not is_repeat(last, "firing", "t0", 101, 0)  # window 0: no dedup


def test_window_refire_after_resolve_is_new() -> None:
    w = DedupWindow(300)
    assert w.check("fp", "firing", "t0", 0)
    assert not w.check("fp", "firing", "t0", 0.01)
    assert w.check("fp", "resolved", "t0", 10)
    assert not w.check("fp", "resolved", "t0", 11)
    assert w.check("fp", "firing", "t0", 12)  # same startsAt, but after a resolve
    assert w.check("other", "firing", "t0", 12)


def test_window_bounded_and_expiry() -> None:
    w = DedupWindow(60, max_entries=3)
    for i in range(5):
        assert w.check(f"fp{i}", "firing", "t", i)
    assert len(w) == 3
    assert w.check("fp0", "firing", "t", 5)  # evicted, so new again
    # Left: fp3 (seen at 3), fp4 (4), fp0 (5). At 63.5 only fp3 is a full window old.
    assert w.expire(63.5) == 1
    assert len(w) == 2
