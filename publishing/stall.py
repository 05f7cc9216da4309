"""Is the delivery engine moving? A stall: no progress for `after` seconds while jobs wait.

Progress is a delivery attempt that finished (whatever its outcome), a job set aside (unknown
or disabled target, metrics-only mode), or a claim that found nothing it could take (the engine
is caught up: what waits is not due, or its targets are saturated, rate-limited or held). So a
target that fails or throttles is not a stall -- its breaker and stats show it -- but claims
that time out or fail, a wedged loop, or deliveries that never end are.

Pure: every method takes `now` (monotonic seconds); the engine feeds it, its loop logs the
transitions, and /readyz reads `stalled(now)` at the moment it is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Transition = Literal["started", "ended"]


@dataclass(slots=True)
class StallWatch:
    after: float  # seconds without progress that make a stall
    last_progress: float
    pending: int | None = None  # jobs pending when last counted during a stall; None: unknown
    counted_at: float | None = None
    began: float | None = None  # last progress before the stall announced, until it ends

    def progress(self, now: float) -> None:
        self.last_progress = max(self.last_progress, now)
        self.pending = None
        self.counted_at = None

    def overdue(self, now: float) -> bool:
        return now - self.last_progress >= self.after

    def stalled(self, now: float) -> bool:
        """No progress for `after` seconds, and jobs pending (or not known to be none)."""
        return self.overdue(now) and self.pending != 0

    def wants_count(self, now: float, every: float) -> bool:
        """Count the pending jobs now? Only while overdue, at most once per `every` seconds."""
        if not self.overdue(now):
            return False
        return self.counted_at is None or now - self.counted_at >= every

    def counted(self, now: float, pending: int | None) -> None:
        """The store says `pending` jobs wait (None: it could not say). None pending is not a
        stall: the engine has nothing to do."""
        if pending == 0:
            self.progress(now)
            return
        self.pending = pending
        self.counted_at = now

    def transition(self, now: float) -> Transition | None:
        """A stall `started` or `ended` (once per change), for the log line and the gauge."""
        stalled = self.stalled(now)
        if stalled and self.began is None:
            self.began = self.last_progress
            return "started"
        if not stalled and self.began is not None:
            self.began = None
            return "ended"
        return None
