"""The one circuit breaker (publishing targets, the LLM client).

closed -> open after `failures` consecutive failures -> half-open once `open_for` seconds have
passed, when one probe call may go -> closed on its success, open again on its failure. A
failure while open (a call that went out before it opened) keeps it open from then on.

Pure: every method takes `now` (monotonic seconds), so the owner's clock decides and tests
drive it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class CircuitBreaker:
    failures: int = 5
    open_for: float = 30.0
    consecutive: int = 0
    opened_at: float | None = None
    probing: bool = False
    opened_count: int = 0  # times it opened (a failed probe opens it again)

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if now - self.opened_at >= self.open_for else "open"

    def allows(self, now: float) -> bool:
        """Whether a call may go now (in half-open: while no probe is out)."""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self.probing)

    def wait(self, now: float) -> float:
        """Seconds until a probe may go (0: closed, or half-open already)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.open_for - now)

    def started(self, now: float) -> None:
        """A call goes out; in half-open it is the probe."""
        if self.state(now) == "half_open":
            self.probing = True

    def allow(self, now: float) -> bool:
        """`allows`, and when it does, `started`: one step for callers that go at once."""
        if not self.allows(now):
            return False
        self.started(now)
        return True

    def abandon(self) -> None:
        """The call `allow` let through was not made after all."""
        self.probing = False

    def record(self, ok: bool, now: float) -> bool:
        """One call's result; True when this opened a closed breaker."""
        probe = self.probing
        self.probing = False
        if ok:
            self.consecutive = 0
            self.opened_at = None
            return False
        self.consecutive += 1
        if self.opened_at is not None:
            if probe:
                self.opened_count += 1
            self.opened_at = now  # a failed probe, or a late failure: open from now
            return False
        if self.consecutive >= self.failures:
            self.opened_at = now
            self.opened_count += 1
            return True
        return False

    def snapshot(self, now: float) -> dict[str, object]:
        return {
            "state": self.state(now),
            "consecutive_failures": self.consecutive,
            "failure_threshold": self.failures,
            "reset_seconds": self.open_for,
            "times_opened": self.opened_count,
        }
