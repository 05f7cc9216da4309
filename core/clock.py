"""The one clock: monotonic time for durations, wall time for timestamps."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.time()


class FakeClock(Clock):
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_000.0, wall: float = 1_700_000_000.0) -> None:
        self._mono = start
        self._wall = wall

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._wall += seconds


def rfc3339_or_none(seconds: float | None) -> str | None:
    """`format_rfc3339`, with None for None: the one form of a time in the JSON APIs."""
    return None if seconds is None else format_rfc3339(seconds)


def format_rfc3339(seconds: float) -> str:
    """An epoch time as RFC 3339 in UTC with milliseconds (`2026-01-02T03:04:05.678Z`)."""
    dt = datetime.fromtimestamp(seconds, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
