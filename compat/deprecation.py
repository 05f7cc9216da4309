"""Deprecation signalling: the header values, computed once at load. Pure.

- `Deprecation: @<unix seconds>` — RFC 9745 §2.1 (a Structured Field Date).
- `Sunset: <HTTP-date>` — RFC 8594 §3 (IMF-fixdate, RFC 9110 §5.6.7).
- `Link: <uri>; rel="deprecation"` (RFC 9745 §3) and `Link: <uri>; rel="sunset"` (RFC 8594 §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Deprecation", "deprecation_headers", "http_date", "structured_date"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: int) -> str:
    """IMF-fixdate (`Tue, 01 Apr 2025 00:00:00 GMT`), independent of the locale."""
    dt = datetime.fromtimestamp(seconds, UTC)
    return (
        f"{_DAYS[dt.weekday()]}, {dt.day:02d} {_MONTHS[dt.month - 1]} {dt.year:04d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} GMT"
    )


def structured_date(seconds: int) -> str:
    """An RFC 9651 Date item: `@` and the integer seconds."""
    return f"@{int(seconds)}"


@dataclass(frozen=True, slots=True)
class Deprecation:
    """When a legacy endpoint was deprecated, when it goes away, and where to read about it."""

    since: int | None = None  # unix seconds
    sunset: int | None = None  # unix seconds
    link: str | None = None  # rel="deprecation"
    sunset_link: str | None = None  # rel="sunset"

    def merged(self, over: Deprecation) -> Deprecation:
        """`over`'s fields where set, else this one's (rule fields over profile-wide ones)."""
        return Deprecation(
            since=over.since if over.since is not None else self.since,
            sunset=over.sunset if over.sunset is not None else self.sunset,
            link=over.link if over.link is not None else self.link,
            sunset_link=over.sunset_link if over.sunset_link is not None else self.sunset_link,
        )


def deprecation_headers(dep: Deprecation | None) -> tuple[tuple[str, str], ...]:
    """The response headers announcing `dep` (empty when None)."""
    if dep is None:
        return ()
    out: list[tuple[str, str]] = []
    if dep.since is not None:
        out.append(("Deprecation", structured_date(dep.since)))
    if dep.sunset is not None:
        out.append(("Sunset", http_date(dep.sunset)))
    if dep.link:
        out.append(("Link", f'<{dep.link}>; rel="deprecation"; type="text/html"'))
    if dep.sunset_link:
        out.append(("Link", f'<{dep.sunset_link}>; rel="sunset"; type="text/html"'))
    return tuple(out)
