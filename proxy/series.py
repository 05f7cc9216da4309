"""Fifteen minutes of per-second figures for the dashboard, kept in bounded memory.

Per backend, one slot per second: attempts, errors, p50 and p95 latency. The second being
filled holds a small latency histogram (log-spaced bounds, 15% apart, so a percentile is
within 15% of the truth); once the second is over only its four figures are kept, in a
`deque` of `seconds` slots. Per route, the weights in force, sampled once a second. Memory is
therefore fixed by the number of backends and routes the config names (capped), never by the
traffic.

Fed by the gateway's request observer (`Host.add_observer`), which already runs after every
proxied request on both listener paths: the cost per request is a dict lookup, a bisect and
three increments. Time comes in as an argument (the gateway's clock), so tests drive it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from typing import Any

SECONDS = 900  # 15 minutes
MAX_SERIES = 64  # backends (and routes) followed at most: names come from the config

# Latency histogram bounds (seconds): 0.2 ms to about 2 minutes, each 15% above the last.
BOUNDS: tuple[float, ...] = tuple(0.0002 * 1.15**i for i in range(96))


class _Second:
    """The second being filled, for one backend."""

    __slots__ = ("count", "errors", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.hist = [0] * (len(BOUNDS) + 1)


def percentile(hist: list[int], count: int, q: float) -> float | None:
    """The `q` quantile of a histogram over `BOUNDS` (the bucket's upper bound), or None."""
    if count <= 0:
        return None
    rank = q * count
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank and n:
            return BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1]
    return BOUNDS[-1]


Slot = tuple[int, int, float | None, float | None]  # attempts, errors, p50, p95
_EMPTY: Slot = (0, 0, None, None)


class Series:
    """Per-backend request figures and per-route weights, one slot per second."""

    def __init__(self, seconds: int = SECONDS, max_series: int = MAX_SERIES) -> None:
        self.seconds = seconds
        self.max_series = max_series
        self.second: int | None = None  # the second being filled (wall clock, whole seconds)
        self.current: dict[str, _Second] = {}
        self.backends: dict[str, deque[Slot]] = {}  # closed seconds, oldest first
        self.weights: dict[str, deque[tuple[tuple[str, int], ...] | None]] = {}
        self._weights_now: dict[str, tuple[tuple[str, int], ...]] = {}
        self.dropped = 0  # observations of a backend past `max_series`

    # -- feeding --------------------------------------------------------------------------

    def record(self, backend: str, now: float, duration: float | None, error: bool) -> None:
        """One attempt on `backend` (a duration when it answered)."""
        second = int(now)
        if second != self.second:
            self.roll(now)
        slot = self.current.get(backend)
        if slot is None:
            if backend not in self.backends and len(self.backends) >= self.max_series:
                self.dropped += 1
                return
            slot = self.current[backend] = _Second()
            if backend not in self.backends:
                self.backends[backend] = self._blank()
        slot.count += 1
        if error:
            slot.errors += 1
        if duration is not None:
            slot.hist[bisect_left(BOUNDS, duration)] += 1

    def set_weights(self, route: str, weights: tuple[tuple[str, int], ...]) -> None:
        """The weights in force for `route` now (sampled into every second until changed)."""
        if route not in self.weights:
            if len(self.weights) >= self.max_series:
                return
            self.weights[route] = self._blank()
        self._weights_now[route] = weights

    def _blank(self) -> deque[Any]:
        return deque(maxlen=self.seconds)

    def roll(self, now: float) -> None:
        """Close every second before `now`'s (seconds without traffic close empty)."""
        second = int(now)
        if self.second is None:
            self.second = second
            return
        if second <= self.second:
            return  # the clock never runs the ring backwards
        gap = second - self.second
        closed = {name: self._close(s) for name, s in self.current.items()}
        self.current = {}
        fill = min(gap, self.seconds)
        for name, slots in self.backends.items():
            slots.append(closed.get(name, _EMPTY))
            slots.extend((_EMPTY,) * (min(gap - 1, self.seconds)))
        for route, slots in self.weights.items():
            slots.extend((self._weights_now.get(route),) * fill)
        self.second = second

    @staticmethod
    def _close(s: _Second) -> Slot:
        served = sum(s.hist)
        return (
            s.count,
            s.errors,
            percentile(s.hist, served, 0.50),
            percentile(s.hist, served, 0.95),
        )

    # -- reading --------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        """The closed seconds up to `now`, as columns the page plots directly: `t` is the
        wall-clock second of each point; per backend `rps`, `error_rate` (None where no
        attempt), `p50_ms`, `p95_ms`; per route, each backend's weight."""
        self.roll(now)
        end = self.second if self.second is not None else int(now)
        n = max((len(s) for s in (*self.backends.values(), *self.weights.values())), default=0)
        t = list(range(end - n, end))
        backends: dict[str, Any] = {}
        for name, slots in self.backends.items():
            pad = [_EMPTY] * (n - len(slots))
            rows = [*pad, *slots]
            backends[name] = {
                "rps": [r[0] for r in rows],
                "error_rate": [round(r[1] / r[0], 4) if r[0] else None for r in rows],
                "p50_ms": [_ms(r[2]) for r in rows],
                "p95_ms": [_ms(r[3]) for r in rows],
            }
        weights: dict[str, Any] = {}
        for route, samples in self.weights.items():
            rows_w = [None] * (n - len(samples)) + list(samples)
            names: dict[str, None] = {}
            for row in rows_w:
                for b, _ in row or ():
                    names.setdefault(b)
            weights[route] = {b: [_weight_of(row, b) for row in rows_w] for b in names}
        return {"t": t, "step_s": 1, "backends": backends, "weights": weights}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _weight_of(row: tuple[tuple[str, int], ...] | None, backend: str) -> int | None:
    if row is None:
        return None
    found: Mapping[str, int] = dict(row)
    return found.get(backend, 0)
