"""Per-target flow control: a token bucket (rate limit, 429 pauses) and a circuit breaker.

Pure: every method takes `now` (monotonic seconds). Without Redis each worker process gets an
equal share of a target's rate (`TokenBucket.share`), so N workers together stay within it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from cutover.publishing.targets import RateLimit


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `pause` holds everything back."""

    __slots__ = ("burst", "paused_until", "rate", "tokens", "updated")

    def __init__(self, limit: RateLimit | None, now: float, *, share: int = 1) -> None:
        if limit is None:
            self.rate = 0.0  # unlimited
            self.burst = 0.0
        else:
            self.rate = limit.rate / max(1, share)
            self.burst = max(1.0, limit.burst / max(1, share))
        self.tokens = self.burst
        self.updated = now
        self.paused_until = 0.0

    def _refill(self, now: float) -> None:
        if self.rate and now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0: now)."""
        if now < self.paused_until:
            return self.paused_until - now
        if not self.rate:
            return 0.0
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def available(self, now: float) -> float:
        """Tokens there now (inf without a rate limit, 0 while paused)."""
        if now < self.paused_until:
            return 0.0
        if not self.rate:
            return float("inf")
        self._refill(now)
        return self.tokens

    def take(self, now: float) -> bool:
        if self.wait(now) > 0:
            return False
        if self.rate:
            self.tokens -= 1
        return True

    def pause(self, until: float) -> None:
        """The target said 429: nothing goes out before `until`."""
        self.paused_until = max(self.paused_until, until)


BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `open_for` one probe goes through;
    its success closes the breaker, its failure opens it again."""

    failures: int = 5
    open_for: float = 30.0
    consecutive: int = 0
    opened_at: float | None = None
    probing: bool = False

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        return "half_open" if now - self.opened_at >= self.open_for else "open"

    def allows(self, now: float) -> bool:
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self.probing)

    def wait(self, now: float) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.open_for - now)

    def started(self, now: float) -> None:
        if self.state(now) == "half_open":
            self.probing = True

    def record(self, ok: bool, now: float) -> bool:
        """One delivery's result; True when this opened the breaker."""
        self.probing = False
        if ok:
            self.consecutive = 0
            self.opened_at = None
            return False
        self.consecutive += 1
        if self.opened_at is not None:
            self.opened_at = now  # a failed probe: open again
            return False
        if self.consecutive >= self.failures:
            self.opened_at = now
            return True
        return False


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    ceiling = min(cap, base * (2 ** min(attempt, 32)))
    return (rng or random).uniform(0, ceiling)
