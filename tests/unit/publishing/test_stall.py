"""StallWatch: no progress for `after` seconds while jobs wait is a stall, announced once."""

from __future__ import annotations

from cutover.publishing.stall import StallWatch


def test_no_progress_for_after_seconds_is_a_stall_until_progress():
    watch = StallWatch(after=60.0, last_progress=100.0)
    assert not watch.stalled(159.9) and watch.transition(159.9) is None
    assert watch.stalled(160.0)  # pending not counted yet: not known to be none
    assert watch.transition(160.0) == "started" and watch.began == 100.0
    assert watch.transition(170.0) is None  # announced once
    watch.progress(175.0)
    assert not watch.stalled(175.0)
    assert watch.transition(175.0) == "ended" and watch.began is None
    assert watch.transition(176.0) is None


def test_the_pending_count_decides_and_is_taken_at_most_every_few_seconds():
    watch = StallWatch(after=60.0, last_progress=0.0)
    assert not watch.wants_count(59.0, every=10.0)  # progress is recent: no count
    assert watch.wants_count(60.0, every=10.0)
    watch.counted(60.0, 250)
    assert watch.stalled(60.0) and watch.pending == 250
    assert not watch.wants_count(65.0, every=10.0) and watch.wants_count(70.0, every=10.0)
    watch.counted(70.0, None)  # the store could not say: still a stall
    assert watch.stalled(70.0) and watch.pending is None
    watch.counted(80.0, 0)  # nothing waits: nothing is stuck
    assert not watch.stalled(80.0) and not watch.overdue(80.0)
    assert watch.stalled(140.0)  # ... until another stall_after without progress


def test_progress_never_goes_back_and_forgets_the_count():
    watch = StallWatch(after=10.0, last_progress=50.0)
    watch.counted(60.0, 7)
    watch.progress(40.0)  # a late report of older progress
    assert watch.last_progress == 50.0 and watch.pending is None
