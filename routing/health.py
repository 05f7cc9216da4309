"""Backend health: active checks and passive outlier ejection, as pure state with `now` arguments.

A backend is available when it passes its active checks (it starts healthy) and is not ejected.
Ejection follows Envoy's outlier detection: each ejection raises a multiplier by one and lasts
min(multiplier * base_ejection, max_ejection); each `decay_interval` the backend then stays
available lowers the multiplier by one, so a backend that recovered for good is out for
`base_ejection` again the next time, not for n times it for the life of the process. The
multiplier stops growing once it reaches `max_ejection`, so that the way back down stays short.
Decay is computed from `now` when asked, never by a timer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from cutover.core.clock import format_rfc3339
from cutover.core.config_model import Backend, HealthCheck, OutlierDetection

__all__ = ["BackendHealth", "HealthTable"]

_DEFAULT_CHECK = HealthCheck()


class BackendHealth:
    """Health state machine of one backend."""

    __slots__ = (
        "_check_fails",
        "_check_oks",
        "_decay_from",
        "_max_multiplier",
        "_multiplier",
        "check",
        "ejected_until",
        "ejections",
        "failures",
        "healthy",
        "name",
        "outlier",
    )

    def __init__(
        self, name: str, check: HealthCheck | None, outlier: OutlierDetection | None = None
    ) -> None:
        self.name = name
        self.check = check
        self.outlier = outlier if outlier is not None else OutlierDetection()
        self.healthy = True  # by active checks
        self.ejected_until = -math.inf  # ejected while now < ejected_until
        self.ejections = 0  # ejections so far (a counter; the duration follows the multiplier)
        self.failures = 0  # consecutive failed responses
        self._check_oks = 0
        self._check_fails = 0
        o = self.outlier
        self._max_multiplier = max(1, math.ceil(o.max_ejection / o.base_ejection))
        self._multiplier = 0  # as it was at `_decay_from`
        self._decay_from: float | None = None  # available since; None while checks fail

    def record_check(self, ok: bool, now: float) -> str | None:
        """Record an active check; "healthy"/"unhealthy" when the state changes, else None."""
        check = self.check or _DEFAULT_CHECK
        if ok:
            self._check_fails = 0
            self._check_oks += 1
            if not self.healthy and self._check_oks >= check.healthy_threshold:
                self.healthy = True
                self._decay_from = max(now, self.ejected_until)  # decay resumes
                return "healthy"
        else:
            self._check_oks = 0
            self._check_fails += 1
            if self.healthy and self._check_fails >= check.unhealthy_threshold:
                self._multiplier = self.multiplier(now)  # decay pauses: down is not healthy
                self._decay_from = None
                self.healthy = False
                return "unhealthy"
        return None

    def record_response(self, ok: bool, now: float, *, may_eject: bool = True) -> str | None:
        """Record a proxied response; "ejected" when this failure ejects the backend, else None.

        A success resets the failure count. Failures while ejected (late in-flight responses) do
        not extend the ejection. With `may_eject` False the ejection is refused, and the count is
        kept so that the next failure asks again.
        """
        if ok:
            self.failures = 0
            return None
        if now < self.ejected_until:
            return None
        self.failures += 1
        if self.failures < self.outlier.consecutive_failures or not may_eject:
            return None
        self.eject(now)
        return "ejected"

    def would_eject(self, ok: bool, now: float) -> bool:
        """Whether `record_response(ok, now)` would eject the backend."""
        return (
            not ok
            and now >= self.ejected_until
            and self.failures + 1 >= self.outlier.consecutive_failures
        )

    def eject(self, now: float) -> None:
        """Eject now, for the duration the raised multiplier gives."""
        o = self.outlier
        multiplier = min(self.multiplier(now) + 1, self._max_multiplier)
        self.ejections += 1
        self.ejected_until = now + min(o.base_ejection * multiplier, o.max_ejection)
        self._multiplier = multiplier
        self._decay_from = self.ejected_until if self.healthy else None
        self.failures = 0

    def multiplier(self, now: float) -> int:
        """The ejection multiplier at `now`: the next ejection lasts one more base than this."""
        m = self._multiplier
        start = self._decay_from
        if m and start is not None and now > start:
            m = max(0, m - int((now - start) // self.outlier.decay_interval))
        return m

    def is_ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def available(self, now: float) -> bool:
        """Healthy by active checks and not ejected."""
        return self.healthy and now >= self.ejected_until

    def state(self, now: float) -> str:
        """One of "unhealthy" (active checks fail), "ejected" or "healthy"."""
        if not self.healthy:
            return "unhealthy"
        return "ejected" if now < self.ejected_until else "healthy"


class HealthTable:
    """One `BackendHealth` per backend, with a cached set of available backends.

    `available(now)` is O(1) while nothing changes: the set is recomputed only after a state change
    or once `now` reaches the earliest ejection expiry.

    `max_ejection_percent` (of the ejecting backend's outlier settings) is enforced per group:
    `groups` maps a name (a route) to its backends; by default all backends form one group. An
    ejection is refused when the backend shares a group in which another backend is already
    ejected and ejecting it would eject more than that share of the group (as in Envoy, one
    backend of a group can always be ejected).
    """

    __slots__ = ("_available", "_dirty", "_groups_of", "_next_expiry", "backends", "refused")

    def __init__(
        self,
        backends: Mapping[str, Backend],
        groups: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.backends: dict[str, BackendHealth] = {
            name: BackendHealth(name, b.health, b.outlier) for name, b in backends.items()
        }
        if groups is None:
            groups = {"": tuple(self.backends)}
        self._groups_of: dict[str, list[tuple[str, ...]]] = {name: [] for name in self.backends}
        for members in groups.values():
            group = tuple(dict.fromkeys(m for m in members if m in self.backends))
            for m in group:
                self._groups_of[m].append(group)
        self.refused: dict[str, int] = dict.fromkeys(self.backends, 0)  # refused ejections
        self._available: frozenset[str] = frozenset()
        self._next_expiry = -math.inf
        self._dirty = True

    def __getitem__(self, name: str) -> BackendHealth:
        return self.backends[name]

    def __contains__(self, name: object) -> bool:
        return name in self.backends

    def available(self, now: float) -> frozenset[str]:
        """Names of the available backends at `now`."""
        if self._dirty or now >= self._next_expiry:
            self._recompute(now)
        return self._available

    def record_check(self, name: str, ok: bool, now: float) -> str | None:
        """Record an active check of `name`; the state change, if any (see BackendHealth)."""
        event = self.backends[name].record_check(ok, now)
        if event is not None:
            self._dirty = True
        return event

    def record_response(self, name: str, ok: bool, now: float) -> str | None:
        """Record a proxied response from `name`; "ejected" when it ejects the backend.

        An ejection past `max_ejection_percent` is refused (counted in `refused`).
        """
        bh = self.backends[name]
        if ok or not bh.would_eject(ok, now):
            return bh.record_response(ok, now)
        if not self._may_eject(bh, now):
            self.refused[name] += 1
            return bh.record_response(ok, now, may_eject=False)
        event = bh.record_response(ok, now)
        self._dirty = True
        return event

    def snapshot(self, now: float, wall: float) -> dict[str, dict[str, Any]]:
        """Per-backend state for /readyz (JSON-ready).

        `now` is the monotonic time the state runs on and `wall` the epoch time at the same
        instant: a reader gets the ejection's end as seconds left and as an RFC 3339 UTC time,
        never as a monotonic reading that means nothing outside this process.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, bh in self.backends.items():
            ejected = bh.is_ejected(now)
            left = bh.ejected_until - now if ejected else None
            out[name] = {
                "state": bh.state(now),
                "available": bh.available(now),
                "healthy": bh.healthy,
                "ejected": ejected,
                "ejected_until": format_rfc3339(wall + left) if left is not None else None,
                "ejection_seconds_left": round(left, 3) if left is not None else None,
                "ejections": bh.ejections,
                "ejection_multiplier": bh.multiplier(now),
                "ejections_refused": self.refused[name],
                "consecutive_failures": bh.failures,
            }
        return out

    def _may_eject(self, bh: BackendHealth, now: float) -> bool:
        percent = bh.outlier.max_ejection_percent
        backends = self.backends
        for group in self._groups_of[bh.name]:
            ejected = sum(1 for m in group if m != bh.name and backends[m].is_ejected(now))
            if ejected and (ejected + 1) * 100 > percent * len(group):
                return False
        return True

    def _recompute(self, now: float) -> None:
        available = []
        expiry = math.inf
        for name, bh in self.backends.items():
            until = bh.ejected_until
            if now < until:
                expiry = min(expiry, until)
            elif bh.healthy:
                available.append(name)
        self._available = frozenset(available)
        self._next_expiry = expiry
        self._dirty = False
