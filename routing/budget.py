"""Envoy-style retry budget of one route: counters only, O(1)."""

from __future__ import annotations

from cutover.core.config_model import Retry

__all__ = ["RetryBudget"]


class RetryBudget:
    """Replays are allowed while replays in flight < max(minimum, percent% of requests in flight).

    Call `start()`/`finish()` around every request of the route, and `try_replay()` before a
    replay; when it returns True, call `replay_done()` once that replay attempt has ended.
    """

    __slots__ = ("in_flight", "minimum", "percent", "refused", "replays")

    def __init__(self, percent: float = 20.0, minimum: int = 3) -> None:
        if percent < 0 or minimum < 0:
            raise ValueError("retry budget percent and minimum must not be negative")
        self.percent = float(percent)
        self.minimum = int(minimum)
        self.in_flight = 0  # requests of the route in flight
        self.replays = 0  # replays in flight
        self.refused = 0  # replays refused so far (a counter for metrics)

    @classmethod
    def from_retry(cls, retry: Retry) -> RetryBudget:
        """The budget a route's `retry` block describes."""
        return cls(retry.budget_percent, retry.budget_min)

    def start(self) -> None:
        """A request of the route began."""
        self.in_flight += 1

    def finish(self) -> None:
        """A request of the route ended."""
        self.in_flight -= 1

    def try_replay(self) -> bool:
        """Reserve one replay if the budget allows it."""
        replays = self.replays
        if replays < self.minimum or replays * 100.0 < self.percent * self.in_flight:
            self.replays = replays + 1
            return True
        self.refused += 1
        return False

    def replay_done(self) -> None:
        """A replay reserved by `try_replay()` ended."""
        self.replays -= 1
