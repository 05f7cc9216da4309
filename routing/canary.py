"""Canary analysis and control, decided from data (DESIGN.md, Splits, stickiness, canary).

Three parts, all pure (time comes in as `now`, wall-clock seconds):

- **Windows.** `SideWindow` keeps one side's last `window` seconds in 1-s buckets: requests,
  errors and a log-linear latency histogram (16 bins per power of two, so a percentile is off
  by at most ~3%). `Snapshot` is a window frozen for sharing: snapshots of several workers and
  replicas merge exactly (counts add, histograms add).
- **Verdict.** `judge` compares the candidate with the baseline in two lanes (docs/canary.md,
  "The verdict"): "insufficient_data" under `min_requests` on either side of the window; else
  "unhealthy" when, over the whole window, the candidate's error rate is over `max_error_rate`
  *and* significantly over the baseline's (one-sided Fisher's exact test, p <= 1 - `confidence`,
  plus an optional absolute `error_margin`), or its p95 is over `max_p95_ratio` x the baseline's
  (and by `p95_margin`) *and* significantly more of its requests are slower than that threshold;
  or when the same holds for the candidate's last `recent.window` seconds, judged against the
  baseline's whole window (at `recent.confidence`, with `recent.min_errors` failures, standing
  aside while the baseline's own recent rate rose); else "healthy". Both sides failing alike on
  the same seconds is never blamed on the candidate.
- **Control.** `Control` is a route's shared control state (weights in force, phase, rollback
  latch, ramp-down, the last step judged good); `apply` runs one command through the transition
  table `TRANSITIONS` and returns the new state and the event that explains it.
- **Promotion gates.** Besides time, requests and a healthy verdict, automatic promotion can
  require a parity rate (`promotion.min_parity`): `parity_gate` judges the reading the caller
  measured (`ParityReading`, from the mirrored comparisons); too few comparisons hold the step.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from statistics import NormalDist
from typing import Any, Literal

__all__ = [
    "TRANSITIONS",
    "CanaryConfig",
    "Command",
    "CommandOutcome",
    "Control",
    "Criteria",
    "Gate",
    "ParityReading",
    "PromotionGate",
    "Ramp",
    "RecentLane",
    "RollbackPolicy",
    "RouteCanary",
    "SideStats",
    "SideWindow",
    "Snapshot",
    "Verdict",
    "apply",
    "bin_of",
    "bin_value",
    "fisher_p",
    "initial_control",
    "judge",
    "next_step",
    "parity_gate",
    "percentile",
    "reconcile",
    "rollback_target",
    "settled_phase",
    "with_candidate_weight",
    "z_of_p",
    "z_score",
]

Split = tuple[tuple[str, int], ...]
Phase = Literal["observing", "stepping", "holding", "rolled_back", "promoted"]
Status = Literal["healthy", "unhealthy", "insufficient_data"]
PHASES: tuple[Phase, ...] = ("observing", "stepping", "holding", "rolled_back", "promoted")
STATUSES: tuple[Status, ...] = ("healthy", "unhealthy", "insufficient_data")


# ---------------------------------------------------------------------------------------------
# Configuration (parsed by canary/config.py)


@dataclass(frozen=True, slots=True)
class RollbackPolicy:
    mode: Literal["instant", "ramp"] = "instant"
    over: float = 30.0  # seconds, for mode "ramp": candidate weight reaches 0 after this long


@dataclass(frozen=True, slots=True)
class RecentLane:
    """The fast lane (`canary.recent`): the candidate's last `window` seconds judged beside the
    whole window, so that a break is seen in seconds however long things went well before."""

    window: int = 6  # seconds of the newest 1-s buckets (the current one, partly filled, too)
    confidence: float = 0.999998  # one-sided; significant when Fisher's p <= 1 - confidence
    min_errors: int = 3  # candidate failures in the recent window before it can blame
    min_requests: int = 100  # requests per side in the recent window for its latency test

    @property
    def alpha(self) -> float:
        return round(1.0 - self.confidence, 12)


# The recent lane stands aside while the baseline's own recent error rate is significantly over
# its earlier rate (at this p): both sides failing at once is not the candidate's fault.
BASELINE_CHANGED_P = 0.01


@dataclass(frozen=True, slots=True)
class Criteria:
    """What `judge` needs: the seeds' rollback criteria and the significance rule."""

    max_error_rate: float = 0.01
    max_p95_ratio: float = 2.0
    min_requests: int = 200
    confidence: float = 0.999999  # one-sided; significant when Fisher's p <= 1 - confidence
    error_margin: float = 0.0  # candidate rate must also exceed the baseline's by this much
    p95_margin: float = 0.010  # seconds the candidate's p95 must also exceed the baseline's by
    recent: RecentLane | None = field(default_factory=RecentLane)  # None: whole window only

    @property
    def alpha(self) -> float:
        return round(1.0 - self.confidence, 12)

    @property
    def z_critical(self) -> float:
        return z_of_p(self.alpha)


@dataclass(frozen=True, slots=True)
class PromotionGate:
    """Extra conditions for automatic promotion (`canary.promotion`, per route under
    `canary.routes.<name>.promotion`)."""

    min_parity: float | None = None  # 0..1: parity_rate(route) must be at least this


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """The `canary:` section."""

    baseline: str
    candidate: str
    criteria: Criteria = field(default_factory=Criteria)
    window: int = 60  # seconds of 1-s buckets
    steps: tuple[int, ...] = ()  # the candidate's weights, increasing
    step_interval: float = 60.0  # minimum time at one weight before the next step
    step_min_requests: int = 200  # candidate requests within the step before the next step
    auto_promote: bool = True
    auto_rollback: bool = True
    rollback: RollbackPolicy = field(default_factory=RollbackPolicy)
    rollback_to: Literal["zero", "last_good_step"] = "zero"
    redis_prefix: str = "cutover:"
    promotion: PromotionGate = field(default_factory=PromotionGate)
    route_promotion: Mapping[str, PromotionGate] = field(default_factory=dict)  # by route name

    def promotion_for(self, route: str) -> PromotionGate:
        """The route's own `promotion` when it has one, else the block's."""
        return self.route_promotion.get(route, self.promotion)

    def applies_to(self, split: Split) -> bool:
        """The block applies to every route whose split names both baseline and candidate."""
        names = {b for b, _ in split}
        return self.baseline in names and self.candidate in names


# ---------------------------------------------------------------------------------------------
# Latency histogram: log-linear bins over microseconds

_SUB_BITS = 4
_SUB = 1 << _SUB_BITS  # 16 bins per power of two
_LINEAR = 2 * _SUB  # values below 32 us have a bin each


def bin_of(seconds: float) -> int:
    """The histogram bin of a duration (bins are ~6% wide; exact below 32 microseconds)."""
    v = int(seconds * 1_000_000) if seconds > 0 else 0
    if v < _LINEAR:
        return v
    e = v.bit_length() - (_SUB_BITS + 1)
    return (e + 1) * _SUB + (v >> e) - _SUB


def _bin_bounds(index: int) -> tuple[int, int]:
    """[low, high) in microseconds."""
    if index < _LINEAR:
        return index, index + 1
    e = index // _SUB - 1
    m = index % _SUB + _SUB
    return m << e, (m + 1) << e


def bin_value(index: int) -> float:
    """A bin's representative duration in seconds (its midpoint)."""
    low, high = _bin_bounds(index)
    return (low + high) / 2 / 1_000_000


def percentile(bins: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a histogram, in seconds; None when it is empty."""
    return percentiles(bins, (q,))[0]


def percentiles(bins: Mapping[int, int], qs: tuple[float, ...]) -> tuple[float | None, ...]:
    """`percentile` of each of `qs`, sorting the bins once."""
    total = sum(bins.values())
    if total == 0:
        return (None,) * len(qs)
    keys = sorted(bins)
    seen = list(accumulate(map(bins.__getitem__, keys)))  # requests up to each bin
    return tuple(bin_value(keys[bisect_left(seen, max(1, math.ceil(q * total)))]) for q in qs)


def _count_above(bins: Mapping[int, int], threshold: float) -> int:
    """Requests in bins whose value is over `threshold` (bin values grow with the index)."""
    cut = bin_of(threshold)
    if bin_value(cut) > threshold:
        cut -= 1
    return sum(n for i, n in bins.items() if i > cut)


# ---------------------------------------------------------------------------------------------
# Windows


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One side's window as numbers that merge across workers and replicas; `recent` is the same
    for the newest seconds only (the fast lane's window), when the window keeps one."""

    requests: int = 0
    errors: int = 0
    bins: Mapping[int, int] = field(default_factory=dict)
    per_second: Mapping[int, int] = field(default_factory=dict)  # second -> requests
    recent: Snapshot | None = None

    def requests_since(self, t: float) -> int:
        """Requests in the buckets of whole seconds that started at or after `t`."""
        start = math.ceil(t)
        return sum(n for s, n in self.per_second.items() if s >= start)

    @staticmethod
    def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
        requests = errors = 0
        bins: dict[int, int] = {}
        per_second: dict[int, int] = {}
        recents: list[Snapshot] = []
        for s in snapshots:
            requests += s.requests
            errors += s.errors
            for i, n in s.bins.items():
                bins[i] = bins.get(i, 0) + n
            for sec, n in s.per_second.items():
                per_second[sec] = per_second.get(sec, 0) + n
            if s.recent is not None:
                recents.append(s.recent)
        recent = Snapshot.merge(recents) if recents else None
        return Snapshot(requests, errors, bins, per_second, recent)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "bins": [[i, n] for i, n in sorted(self.bins.items())],
            "per_second": [[s, n] for s, n in sorted(self.per_second.items())],
        }
        if self.recent is not None:
            out["recent"] = self.recent.to_dict()
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Snapshot:
        recent = data.get("recent")
        return Snapshot(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            bins={int(i): int(n) for i, n in data.get("bins", ())},
            per_second={int(s): int(n) for s, n in data.get("per_second", ())},
            recent=Snapshot.from_dict(recent) if isinstance(recent, Mapping) else None,
        )


class _Bucket:
    __slots__ = ("bins", "errors", "requests", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        self.requests = 0
        self.errors = 0
        self.bins: dict[int, int] = {}


class SideWindow:
    """One side's sliding window of `window` 1-s buckets, with running totals; `recent` > 0
    also sums the newest `recent` seconds into each snapshot (the fast lane)."""

    __slots__ = ("_bins", "_buckets", "errors", "recent", "requests", "window")

    def __init__(self, window: int = 60, recent: int = 0) -> None:
        self.window = window
        self.recent = min(recent, window)
        self._buckets: deque[_Bucket] = deque()
        self._bins: dict[int, int] = {}
        self.requests = 0
        self.errors = 0

    def _expire(self, now: float) -> None:
        oldest = math.floor(now) - self.window + 1
        buckets = self._buckets
        while buckets and buckets[0].second < oldest:
            gone = buckets.popleft()
            self.requests -= gone.requests
            self.errors -= gone.errors
            totals = self._bins
            for i, n in gone.bins.items():
                left = totals[i] - n
                if left:
                    totals[i] = left
                else:
                    del totals[i]

    def _bucket(self, now: float) -> _Bucket:
        second = math.floor(now)
        buckets = self._buckets
        if buckets and buckets[-1].second == second:
            return buckets[-1]
        if buckets and buckets[-1].second > second:
            return buckets[-1]  # the clock stepped back: count it in the newest bucket
        self._expire(now)
        bucket = _Bucket(second)
        buckets.append(bucket)
        return bucket

    def record(self, now: float, error: bool, duration: float | None) -> None:
        """Count one request; `duration` None: it was not served by this side (no latency)."""
        bucket = self._bucket(now)
        bucket.requests += 1
        if duration is not None:
            index = bin_of(duration)
            bucket.bins[index] = bucket.bins.get(index, 0) + 1
            self._bins[index] = self._bins.get(index, 0) + 1
        self.requests += 1
        if error:
            bucket.errors += 1
            self.errors += 1

    def add(self, now: float, requests: int, errors: int, bins: Mapping[int, int]) -> None:
        """Count a batch observed at `now` at once (`bins`: latency bin -> requests, summing to
        `requests`); the same as `requests` calls of `record`, for callers that aggregate."""
        bucket = self._bucket(now)
        bucket.requests += requests
        bucket.errors += errors
        self.requests += requests
        self.errors += errors
        mine, totals = bucket.bins, self._bins
        if not mine:
            bucket.bins = mine = dict(bins)
            for index, n in mine.items():
                totals[index] = totals.get(index, 0) + n
            return
        for index, n in bins.items():
            mine[index] = mine.get(index, 0) + n
            totals[index] = totals.get(index, 0) + n

    def snapshot(self, now: float) -> Snapshot:
        self._expire(now)
        recent = None
        if self.recent > 0:
            start = math.floor(now) - self.recent + 1
            requests = errors = 0
            bins: dict[int, int] = {}
            for bucket in reversed(self._buckets):
                if bucket.second < start:
                    break
                requests += bucket.requests
                errors += bucket.errors
                if not bins:
                    bins.update(bucket.bins)
                    continue
                get = bins.get
                for i, n in bucket.bins.items():
                    bins[i] = get(i, 0) + n
            recent = Snapshot(requests, errors, bins)
        return Snapshot(
            self.requests,
            self.errors,
            dict(self._bins),
            {b.second: b.requests for b in self._buckets},
            recent,
        )


class RouteCanary:
    """The baseline's and the candidate's windows of one route."""

    __slots__ = ("baseline", "candidate")

    def __init__(self, window: int, recent: int = 0) -> None:
        self.baseline = SideWindow(window, recent)
        self.candidate = SideWindow(window, recent)

    def side(self, name: str) -> SideWindow:
        return self.baseline if name == "baseline" else self.candidate


# ---------------------------------------------------------------------------------------------
# Verdict


@dataclass(frozen=True, slots=True)
class SideStats:
    requests: int
    errors: int
    error_rate: float | None
    p50: float | None
    p95: float | None
    p99: float | None

    @staticmethod
    def of(s: Snapshot) -> SideStats:
        p50, p95, p99 = percentiles(s.bins, (0.50, 0.95, 0.99))
        return SideStats(
            requests=s.requests,
            errors=s.errors,
            error_rate=s.errors / s.requests if s.requests else None,
            p50=p50,
            p95=p95,
            p99=p99,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p50_ms": _ms(self.p50),
            "p95_ms": _ms(self.p95),
            "p99_ms": _ms(self.p99),
        }


Criterion = Literal[
    "min_requests", "error_rate", "p95_latency", "recent_error_rate", "recent_p95_latency"
]


@dataclass(frozen=True, slots=True)
class Check:
    criterion: Criterion
    failed: bool
    detail: str  # the sentence a human reads, with the figures
    figures: Mapping[str, float | int | str | None]


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    criterion: str | None  # the check that decided (see `Criterion`)
    reason: str
    baseline: SideStats
    candidate: SideStats
    checks: tuple[Check, ...]

    def failed(self, criterion: str) -> bool:
        return any(c.failed and c.criterion == criterion for c in self.checks)

    @property
    def recent_failed(self) -> bool:
        """A check of the recent lane failed: the evidence is no older than its window."""
        return any(c.failed and c.criterion.startswith("recent_") for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "criterion": self.criterion,
            "reason": self.reason,
            "checks": [
                {
                    "criterion": c.criterion,
                    "failed": c.failed,
                    "detail": c.detail,
                    "figures": dict(c.figures),
                }
                for c in self.checks
            ],
        }

    def figures(self) -> dict[str, Any]:
        """What was judged, for events: both sides and the deciding check's figures."""
        out: dict[str, Any] = {
            "verdict": self.status,
            "criterion": self.criterion,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
        }
        for c in self.checks:
            if c.criterion == self.criterion:
                out["judged"] = dict(c.figures)
        return out


def z_score(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided two-proportion z statistic of x1/n1 over x2/n2 (pooled variance)."""
    if n1 == 0 or n2 == 0:
        return 0.0
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0
    return (p1 - p2) / se


def fisher_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value of Fisher's exact test that x1/n1 is higher than x2/n2.

    Given the k = x1 + x2 failures among n1 + n2 requests, under "both sides fail alike" x1 is
    hypergeometric; p = P(X >= x1). Exact at any count, small ones included (where the z-test's
    normal approximation overstates significance many times over), so that a threshold on p is a
    false-alarm rate per judgment. Sums from x1 in the direction in which the terms shrink.
    """
    total, k = n1 + n2, x1 + x2
    if n1 <= 0 or n2 <= 0 or k == 0 or x1 <= 0:
        return 1.0
    lo, hi = max(0, n1 - (total - k)), min(k, n1)
    if x1 <= lo:
        return 1.0
    x1 = min(x1, hi)
    lg = math.lgamma
    const = lg(k + 1) + lg(total - k + 1) + lg(n1 + 1) + lg(total - n1 + 1) - lg(total + 1)

    def pmf(x: int) -> float:
        return math.exp(
            const - lg(x + 1) - lg(k - x + 1) - lg(n1 - x + 1) - lg(total - k - n1 + x + 1)
        )

    rest = total - k - n1
    if x1 > k * n1 / total:  # upper tail: terms fall from x1 on
        term, acc, x = pmf(x1), 0.0, x1
        while x <= hi and term > 0.0:
            acc += term
            if term < acc * 1e-17:
                break
            term *= (k - x) * (n1 - x) / ((x + 1) * (rest + x + 1))
            x += 1
        return min(1.0, acc)
    x = x1 - 1  # below the mean: 1 - P(X <= x1 - 1), whose terms fall from x1 - 1 down
    term, acc = pmf(x), 0.0
    while x >= lo and term > 0.0:
        acc += term
        if term < acc * 1e-17:
            break
        term *= x * (rest + x) / ((k - x + 1) * (n1 - x + 1))
        x -= 1
    return max(0.0, 1.0 - acc)


_NORMAL = NormalDist()


def z_of_p(p: float) -> float:
    """The one-sided normal z-score of a p-value (what "z" means in reasons and figures)."""
    return -_NORMAL.inv_cdf(min(max(p, 1e-300), 0.5)) + 0.0  # p >= 0.5: z = 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def _pct_vs(rate: float, limit: float) -> tuple[str, str, str]:
    """`rate` and `limit` as percentages with enough digits that their order shows, and the
    comparison: 8/799 -> ("1.001%", ">", "1.000%") against 1%, never "1.00% ... max 1.00%"."""
    for digits in range(3, 9):
        a, b = f"{rate * 100:.{digits}f}%", f"{limit * 100:.{digits}f}%"
        if a != b or rate == limit:
            break
    return a, (">" if rate > limit else "<="), b


def _rate(x: int, n: int) -> str:
    return f"{x}/{n} = {x / n * 100 if n else 0.0:.3f}%"


def _p(p: float) -> str:
    return f"{p:.1e}"


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 3)


def _fmt_ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.1f}ms"


def judge(baseline: Snapshot, candidate: Snapshot, criteria: Criteria, window: int = 0) -> Verdict:
    """The verdict on one window, `window` seconds long (see the module docstring for the rule;
    docs/canary.md, "The verdict")."""
    b, c = SideStats.of(baseline), SideStats.of(candidate)
    need = criteria.min_requests
    if b.requests < need or c.requests < need:
        detail = (
            f"needs {need} requests on each side in the window: "
            f"candidate {c.requests}, baseline {b.requests}"
        )
        check = Check(
            "min_requests",
            True,
            detail,
            {"min_requests": need, "candidate": c.requests, "baseline": b.requests},
        )
        return Verdict("insufficient_data", "min_requests", detail, b, c, (check,))
    checks = [
        _error_check(b, c, criteria, window),
        _latency_check(baseline, candidate, criteria, window, (b.p95, c.p95)),
    ]
    lane = criteria.recent
    if lane is not None and baseline.recent is not None and candidate.recent is not None:
        checks.append(_recent_error_check(baseline, candidate, criteria, lane, window))
        checks.append(_recent_latency_check(baseline.recent, candidate.recent, criteria, lane))
    for check in checks:
        if check.failed:
            return Verdict("unhealthy", check.criterion, check.detail, b, c, tuple(checks))
    reason = "; ".join(ch.detail for ch in checks)
    return Verdict("healthy", None, reason, b, c, tuple(checks))


def _over(seconds: int) -> str:
    return f" over {seconds}s" if seconds else ""


def _error_check(b: SideStats, c: SideStats, cr: Criteria, window: int) -> Check:
    cr_rate = c.error_rate or 0.0
    b_rate = b.error_rate or 0.0
    p = fisher_p(c.errors, c.requests, b.errors, b.requests)
    z = z_of_p(p)
    alpha = cr.alpha
    over_max = cr_rate > cr.max_error_rate
    over_margin = cr_rate - b_rate > cr.error_margin
    significant = p <= alpha
    failed = over_max and over_margin and significant
    shown, op, limit = _pct_vs(cr_rate, cr.max_error_rate)
    figures = {
        "window_s": window,
        "candidate_errors": c.errors,
        "candidate_requests": c.requests,
        "candidate_error_rate": cr_rate,
        "baseline_errors": b.errors,
        "baseline_requests": b.requests,
        "baseline_error_rate": b_rate,
        "max_error_rate": cr.max_error_rate,
        "error_margin": cr.error_margin,
        "p": p,
        "alpha": alpha,
        "z": round(z, 3),
        "z_critical": round(cr.z_critical, 3),
    }
    head = (
        f"candidate error rate{_over(window)}: {c.errors}/{c.requests} = {shown} {op} max "
        f"{limit}, baseline {_rate(b.errors, b.requests)}; Fisher p={_p(p)} (z={z:.2f}) "
        f"{'<=' if significant else '>'} {_p(alpha)}"
    )
    if failed:
        detail = f"{head}: candidate errors significantly more than the baseline"
    elif not over_max:
        detail = f"{head}: within the maximum"
    else:
        detail = f"{head}: not significantly worse than the baseline"
    return Check("error_rate", failed, detail, figures)


def _recent_error_check(
    baseline: Snapshot, candidate: Snapshot, cr: Criteria, lane: RecentLane, window: int
) -> Check:
    """The candidate's last `lane.window` seconds against the baseline's whole window, while
    the baseline's own recent rate is not over its earlier one (see docs/canary.md)."""
    rb, rc = baseline.recent, candidate.recent
    assert rb is not None and rc is not None
    c_rate = rc.errors / rc.requests if rc.requests else 0.0
    b_rate = baseline.errors / baseline.requests if baseline.requests else 0.0
    p = fisher_p(rc.errors, rc.requests, baseline.errors, baseline.requests)
    z = z_of_p(p)
    earlier_n, earlier_x = baseline.requests - rb.requests, baseline.errors - rb.errors
    p_baseline = fisher_p(rb.errors, rb.requests, earlier_x, earlier_n)
    baseline_changed = p_baseline <= BASELINE_CHANGED_P
    enough = rc.errors >= lane.min_errors
    over_max = c_rate > cr.max_error_rate
    over_margin = c_rate - b_rate > cr.error_margin
    significant = p <= lane.alpha
    failed = enough and over_max and over_margin and significant and not baseline_changed
    shown, op, limit = _pct_vs(c_rate, cr.max_error_rate)
    figures = {
        "window_s": lane.window,
        "candidate_errors": rc.errors,
        "candidate_requests": rc.requests,
        "candidate_error_rate": c_rate,
        "baseline_window_s": window,
        "baseline_errors": baseline.errors,
        "baseline_requests": baseline.requests,
        "baseline_error_rate": b_rate,
        "baseline_recent_errors": rb.errors,
        "baseline_recent_requests": rb.requests,
        "baseline_changed_p": p_baseline,
        "max_error_rate": cr.max_error_rate,
        "min_errors": lane.min_errors,
        "p": p,
        "alpha": lane.alpha,
        "z": round(z, 3),
        "z_critical": round(z_of_p(lane.alpha), 3),
    }
    head = (
        f"candidate error rate over {lane.window}s: {rc.errors}/{rc.requests} = {shown} {op} "
        f"max {limit}, baseline {_rate(baseline.errors, baseline.requests)}{_over(window)}; "
        f"Fisher p={_p(p)} (z={z:.2f}) {'<=' if significant else '>'} "
        f"{_p(lane.alpha)}, {rc.errors} failures (min {lane.min_errors})"
    )
    if failed:
        detail = f"{head}: candidate errors significantly more than the baseline"
    elif baseline_changed:
        detail = (
            f"{head}: the baseline fails more too (its last {lane.window}s "
            f"{_rate(rb.errors, rb.requests)}, p={_p(p_baseline)} against its earlier rate): "
            f"not the candidate's doing"
        )
    elif not over_max:
        detail = f"{head}: within the maximum"
    elif not enough:
        detail = f"{head}: too few failures to judge"
    else:
        detail = f"{head}: not significantly worse than the baseline"
    return Check("recent_error_rate", failed, detail, figures)


def _slow_check(
    baseline: Snapshot,
    candidate: Snapshot,
    cr: Criteria,
    alpha: float,
    criterion: Criterion,
    seconds: int,
    min_requests: int = 0,
    p95s: tuple[float | None, float | None] | None = None,
) -> Check:
    """p95 over `max_p95_ratio` x the baseline's (and by `p95_margin`), and significantly more
    of the candidate's requests slower than that threshold than the baseline's (Fisher).
    `p95s`: the two sides' p95 when already known (baseline, candidate)."""
    if p95s is None:
        p95s = percentile(baseline.bins, 0.95), percentile(candidate.bins, 0.95)
    b95 = p95s[0] or 0.0
    c95 = p95s[1] or 0.0
    threshold = cr.max_p95_ratio * b95
    slow_c = _count_above(candidate.bins, threshold)
    slow_b = _count_above(baseline.bins, threshold)
    # served requests only: one the split gave an unavailable side has no latency
    nc, nb = sum(candidate.bins.values()), sum(baseline.bins.values())
    p = fisher_p(slow_c, nc, slow_b, nb)
    z = z_of_p(p)
    enough = nc >= min_requests and nb >= min_requests
    over_ratio = c95 > threshold
    over_margin = c95 - b95 >= cr.p95_margin
    significant = p <= alpha
    failed = enough and over_ratio and over_margin and significant
    ratio = c95 / b95 if b95 else None
    figures = {
        "window_s": seconds,
        "candidate_requests": nc,
        "baseline_requests": nb,
        "candidate_p95_ms": _ms(c95),
        "baseline_p95_ms": _ms(b95),
        "ratio": None if ratio is None else round(ratio, 3),
        "max_p95_ratio": cr.max_p95_ratio,
        "threshold_ms": _ms(threshold),
        "p95_margin_ms": _ms(cr.p95_margin),
        "candidate_slower_than_threshold": slow_c,
        "baseline_slower_than_threshold": slow_b,
        "p": p,
        "alpha": alpha,
        "z": round(z, 3),
        "z_critical": round(z_of_p(alpha), 3),
    }
    if min_requests:
        figures["min_requests"] = min_requests
    shown_ratio = "n/a" if ratio is None else f"{ratio:.2f}x"
    head = (
        f"candidate p95{_over(seconds)}: {_fmt_ms(c95)} vs baseline {_fmt_ms(b95)} "
        f"({shown_ratio}, max {cr.max_p95_ratio:g}x); slower than {_fmt_ms(threshold)}: "
        f"candidate {slow_c}/{nc}, baseline {slow_b}/{nb}, Fisher p={_p(p)} "
        f"(z={z:.2f}) {'<=' if significant else '>'} {_p(alpha)}"
    )
    if failed:
        detail = f"{head}: candidate significantly slower than the baseline"
    elif not enough:
        detail = f"{head}: fewer than {min_requests} requests on a side to judge"
    elif not over_ratio or not over_margin:
        detail = f"{head}: within the maximum"
    else:
        detail = f"{head}: not significantly slower than the baseline"
    return Check(criterion, failed, detail, figures)


def _latency_check(
    baseline: Snapshot,
    candidate: Snapshot,
    cr: Criteria,
    window: int,
    p95s: tuple[float | None, float | None] | None = None,
) -> Check:
    return _slow_check(baseline, candidate, cr, cr.alpha, "p95_latency", window, p95s=p95s)


def _recent_latency_check(
    baseline: Snapshot, candidate: Snapshot, cr: Criteria, lane: RecentLane
) -> Check:
    """The same test on the recent window of both sides, with `lane.min_requests` per side."""
    return _slow_check(
        baseline, candidate, cr, lane.alpha, "recent_p95_latency", lane.window, lane.min_requests
    )


# ---------------------------------------------------------------------------------------------
# Promotion gates


@dataclass(frozen=True, slots=True)
class ParityReading:
    """The route's parity as measured from mirrored comparisons."""

    rate: float | None  # share without a reported difference; None: too few comparisons
    compared: int = 0  # comparisons behind the rate
    needed: int = 0  # comparisons needed before there is a rate (parity.min_samples)


@dataclass(frozen=True, slots=True)
class Gate:
    """One promotion gate's answer: open or not, why, and the figures it judged."""

    name: str
    state: Literal["open", "insufficient", "below"]
    reason: str
    figures: Mapping[str, Any]

    @property
    def open(self) -> bool:
        return self.state == "open"


def _ratio(x: float) -> str:
    """0.95 -> `0.95`; rounded down, so that a rate under its minimum never looks equal to it."""
    text = f"{math.floor(x * 10_000 + 1e-9) / 10_000:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def parity_gate(min_parity: float | None, reading: ParityReading | None) -> Gate | None:
    """The parity gate: None when no minimum is configured; else open when the reading's rate
    is at least `min_parity`. No rate (too few comparisons, no mirror) keeps it closed."""
    if min_parity is None:
        return None
    rate = reading.rate if reading is not None else None
    figures: dict[str, Any] = {
        "parity_rate": rate,
        "min_parity": min_parity,
        "parity_compared": reading.compared if reading is not None else 0,
        "parity_min_samples": reading.needed if reading is not None else None,
    }
    if rate is None:
        if reading is not None and reading.needed:
            detail = f" ({reading.compared} of {reading.needed} needed)"
        else:
            detail = " (no mirrored comparisons)"
        return Gate("parity", "insufficient", f"parity: insufficient comparisons{detail}", figures)
    if rate < min_parity:
        return Gate("parity", "below", f"parity {_ratio(rate)} < {min_parity:g}", figures)
    return Gate("parity", "open", f"parity {_ratio(rate)} >= {min_parity:g}", figures)


# ---------------------------------------------------------------------------------------------
# Control: the shared per-route state and its transition table


@dataclass(frozen=True, slots=True)
class Ramp:
    """A ramp-down: the candidate's weight falls linearly from `start` to `to` over `over` s."""

    start: int
    started_at: float
    over: float
    to: int = 0  # 0, or the last step judged good (`rollback_to: last_good_step`)

    def weight(self, now: float) -> int:
        elapsed = max(0.0, now - self.started_at)
        if elapsed >= self.over:
            return self.to
        span = self.start - self.to
        return min(self.start, self.to + math.ceil(span * (1 - elapsed / self.over) - 1e-9))


@dataclass(frozen=True, slots=True)
class Control:
    """A route's control state, shared by every worker and replica."""

    route: str
    weights: Split  # in force, in the config's written order
    config_split: Split  # the config's split these weights were decided over
    source: Literal["config", "operator", "controller"] = "config"
    phase: Phase = "observing"
    latched: bool = False  # set by a rollback; cleared by resume, promote or set_weights
    ramp: Ramp | None = None
    since: float = 0.0  # when the candidate's weight took its current value
    last_good: int = 0  # the highest weight a promotion left: judged good (rollback_to)
    version: int = 0  # 0: never written
    actor: str = "config"
    reason: str = ""

    def weight_of(self, backend: str) -> int:
        return dict(self.weights).get(backend, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "weights": [list(p) for p in self.weights],
            "config_split": [list(p) for p in self.config_split],
            "source": self.source,
            "phase": self.phase,
            "latched": self.latched,
            "ramp": None
            if self.ramp is None
            else {
                "start": self.ramp.start,
                "started_at": self.ramp.started_at,
                "over": self.ramp.over,
                "to": self.ramp.to,
            },
            "since": self.since,
            "last_good": self.last_good,
            "version": self.version,
            "actor": self.actor,
            "reason": self.reason,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Control:
        ramp = d.get("ramp")
        return Control(
            route=str(d["route"]),
            weights=tuple((str(b), int(w)) for b, w in d["weights"]),
            config_split=tuple((str(b), int(w)) for b, w in d["config_split"]),
            source=d.get("source", "config"),
            phase=d.get("phase", "observing"),
            latched=bool(d.get("latched", False)),
            ramp=None
            if not ramp
            else Ramp(
                int(ramp["start"]),
                float(ramp["started_at"]),
                float(ramp["over"]),
                int(ramp.get("to", 0)),
            ),
            since=float(d.get("since", 0.0)),
            last_good=int(d.get("last_good", 0)),
            version=int(d.get("version", 0)),
            actor=str(d.get("actor", "")),
            reason=str(d.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class Command:
    """One input to the state machine."""

    kind: Literal["tick", "rollback", "promote", "pause", "resume", "set_weights"]
    actor: str
    now: float
    reason: str = ""
    verdict: Verdict | None = None  # tick
    candidate_window: Snapshot | None = None  # tick: for the per-step request count
    weights: Split | None = None  # set_weights, in the config's written order
    parity: ParityReading | None = None  # tick: the route's parity, when a gate needs it
    mode: Literal["instant", "ramp"] | None = None  # rollback: overrides the policy
    over: float | None = None  # rollback: ramp duration, overrides the policy


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What `apply` decided: `control` None = nothing changes; `error` = refused (HTTP 409).
    A tick whose promotion a gate holds says so: no control, `event` "hold", the reason."""

    control: Control | None = None
    event: str | None = None  # rollback, promote, pause, resume, weights, ramp, config; hold
    reason: str = ""
    figures: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


def with_candidate_weight(weights: Split, candidate: str, baseline: str, weight: int) -> Split:
    """`weights` with the candidate at `weight`; the baseline takes up the difference (and when
    it has too little, the other backends give theirs up in written order)."""
    current = dict(weights)
    delta = weight - current.get(candidate, 0)
    current[candidate] = weight
    take = min(delta, current.get(baseline, 0)) if delta > 0 else delta
    current[baseline] = current.get(baseline, 0) - take
    rest = delta - take if delta > 0 else 0
    for name, _ in weights:
        if rest <= 0:
            break
        if name in (candidate, baseline):
            continue
        give = min(rest, current[name])
        current[name] -= give
        rest -= give
    return tuple((name, current[name]) for name, _ in weights)


def next_step(steps: Sequence[int], weight: int) -> int | None:
    """The next higher step after `weight` (100 when there are no steps), or None."""
    higher = [s for s in (steps or (100,)) if s > weight]
    return min(higher) if higher else None


def settled_phase(weight: int, cfg: CanaryConfig | None) -> Phase:
    """The phase a route is in at `weight` when nothing holds it."""
    if cfg is None:
        return "observing"
    if weight >= 100:
        return "promoted"
    if cfg.steps and cfg.auto_promote and weight < max(cfg.steps):
        return "stepping"
    return "observing"


def initial_control(route: str, split: Split, cfg: CanaryConfig | None, now: float) -> Control:
    """The control of a route nobody has changed yet: the config's split."""
    weight = dict(split).get(cfg.candidate, 0) if cfg else 0
    return Control(
        route=route,
        weights=split,
        config_split=split,
        source="config",
        phase=settled_phase(weight, cfg),
        since=now,
    )


def reconcile(
    control: Control, split: Split, cfg: CanaryConfig | None, now: float
) -> CommandOutcome:
    """When the config's split for the route changed, the config wins again (an event says so)."""
    if control.config_split == split or control.source == "config":
        return CommandOutcome()
    fresh = initial_control(control.route, split, cfg, now)
    new = replace(fresh, version=control.version, actor="config")
    return CommandOutcome(
        new,
        "config",
        f"the config's split changed to {_fmt(split)}: it is in force again, runtime weights "
        f"{_fmt(control.weights)} ({control.source}) dropped",
        {"old_config_split": dict(control.config_split), "new_config_split": dict(split)},
    )


def _fmt(split: Split) -> str:
    return "/".join(f"{b} {w}" for b, w in split)


# -- transitions ------------------------------------------------------------------------------

Handler = Callable[[Control, Command, CanaryConfig], CommandOutcome]


def _change(
    c: Control, cmd: Command, cfg: CanaryConfig, weight: int, **changes: Any
) -> tuple[Control, Split]:
    weights = with_candidate_weight(c.weights, cfg.candidate, cfg.baseline, weight)
    since = cmd.now if weight != c.weight_of(cfg.candidate) else c.since
    source = "controller" if cmd.actor == "controller" else "operator"
    new = replace(
        c,
        weights=weights,
        since=since,
        source=source,
        actor=cmd.actor,
        reason=cmd.reason or c.reason,
        **changes,
    )
    return new, weights


def rollback_target(c: Control, cfg: CanaryConfig) -> int:
    """Where a rollback takes the candidate: 0, or with `rollback_to: last_good_step` the last
    step judged good when it is below the current weight (users there stay where they are)."""
    current = c.weight_of(cfg.candidate)
    if cfg.rollback_to == "last_good_step" and 0 < c.last_good < current:
        return c.last_good
    return 0


def _rollback(
    c: Control, cmd: Command, cfg: CanaryConfig, target: int | None = None
) -> CommandOutcome:
    current = c.weight_of(cfg.candidate)
    to = rollback_target(c, cfg) if target is None else target
    mode = cmd.mode or cfg.rollback.mode
    over = cmd.over if cmd.over is not None else cfg.rollback.over
    figures: dict[str, Any] = dict(cmd.verdict.figures()) if cmd.verdict else {}
    figures.update({"mode": mode, "from_weight": current, "to_weight": to})
    figures["rollback_to"] = cfg.rollback_to
    if mode == "ramp" and current > to and over > 0:
        ramp = Ramp(current, cmd.now, over, to)
        figures["over_s"] = over
        new, _ = _change(c, cmd, cfg, current, phase="rolled_back", latched=True, ramp=ramp)
        why = f"ramp {cfg.candidate} down from {current}% to {to}% over {over:g}s"
    else:
        new, _ = _change(c, cmd, cfg, to, phase="rolled_back", latched=True, ramp=None)
        if to:
            why = (
                f"{cfg.candidate} back to {to}%, the last step judged good "
                f"({cfg.candidate} was at {current}%)"
            )
        else:
            why = f"{cfg.baseline} takes 100% at once ({cfg.candidate} was at {current}%)"
    new = replace(new, last_good=min(c.last_good, to))
    reason = f"{cmd.reason}: {why}" if cmd.reason else why
    return CommandOutcome(replace(new, reason=reason), "rollback", reason, figures)


def _promote(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    current = c.weight_of(cfg.candidate)
    target = next_step(cfg.steps, current)
    if target is None:
        return CommandOutcome(error=f"{cfg.candidate} is already at {current}%, the last step")
    phase = "holding" if c.phase == "holding" and cmd.actor != "controller" else None
    new, _ = _change(c, cmd, cfg, target, latched=False, ramp=None)
    # Leaving a weight by a promotion judges it good: a later rollback may return there.
    new = replace(
        new, phase=phase or settled_phase(target, cfg), last_good=max(c.last_good, current)
    )
    why = f"{cfg.candidate} {current}% -> {target}% (next step)"
    reason = f"{cmd.reason}: {why}" if cmd.reason else why
    figures: dict[str, Any] = dict(cmd.verdict.figures()) if cmd.verdict else {}
    figures.update({"from_weight": current, "to_weight": target})
    return CommandOutcome(replace(new, reason=reason), "promote", reason, figures)


def _pause(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    reason = cmd.reason or "paused: no automatic promotion until resumed"
    new = replace(c, phase="holding", actor=cmd.actor, reason=reason)
    return CommandOutcome(new, "pause", reason, {"weight": c.weight_of(cfg.candidate)})


def _already_paused(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    return CommandOutcome(error="already paused")


def _resume(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    weight = c.weight_of(cfg.candidate)
    reason = cmd.reason or (
        "resumed after a rollback: the latch is released" if c.latched else "resumed"
    )
    if c.ramp is not None:  # a ramp in progress stops where it is
        weight = c.ramp.weight(cmd.now)
        new, _ = _change(c, cmd, cfg, weight, ramp=None)
    else:
        new = replace(c, actor=cmd.actor)
    new = replace(new, phase=settled_phase(weight, cfg), latched=False, reason=reason)
    return CommandOutcome(new, "resume", reason, {"weight": weight})


def _not_paused(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    return CommandOutcome(error="nothing to resume: the canary is neither paused nor rolled back")


def _set_weights(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    assert cmd.weights is not None
    weight = dict(cmd.weights).get(cfg.candidate, 0)
    phase = "holding" if c.phase == "holding" else settled_phase(weight, cfg)
    since = cmd.now if weight != c.weight_of(cfg.candidate) else c.since
    reason = cmd.reason or f"weights set to {_fmt(cmd.weights)}"
    new = replace(
        c,
        weights=cmd.weights,
        source="operator",
        phase=phase,
        latched=False,
        ramp=None,
        since=since,
        last_good=min(c.last_good, weight),
        actor=cmd.actor,
        reason=reason,
    )
    return CommandOutcome(
        new, "weights", reason, {"before": dict(c.weights), "after": dict(cmd.weights)}
    )


def _tick_watch(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    """observing / holding / promoted: roll back on an unhealthy verdict, never promote."""
    v = cmd.verdict
    if (
        v is not None
        and v.status == "unhealthy"
        and cfg.auto_rollback
        and c.weight_of(cfg.candidate) > 0
    ):
        return _rollback(c, replace(cmd, reason=f"automatic rollback: {v.reason}"), cfg)
    return CommandOutcome()


def _tick_step(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    """stepping: roll back on an unhealthy verdict; promote when every gate is open."""
    back = _tick_watch(c, cmd, cfg)
    if back.control is not None:
        return back
    v = cmd.verdict
    weight = c.weight_of(cfg.candidate)
    if v is None or v.status == "unhealthy" or (v.status != "healthy" and weight > 0):
        return CommandOutcome()  # insufficient data: neither promote nor roll back
    if cmd.now - c.since < cfg.step_interval:
        return CommandOutcome()
    in_step = cmd.candidate_window.requests_since(c.since) if cmd.candidate_window else 0
    if weight > 0 and in_step < cfg.step_min_requests:
        return CommandOutcome()
    gate = (
        f"{cmd.now - c.since:.0f}s at {weight}% (min {cfg.step_interval:g}s), "
        f"{in_step} candidate requests in the step (min {cfg.step_min_requests}), "
        f"verdict {v.status}"
    )
    parity = parity_gate(cfg.promotion_for(c.route).min_parity, cmd.parity)
    if parity is not None and not parity.open:
        # Every other gate is open: say what holds the step (the caller records it once).
        figures = {**v.figures(), **parity.figures, "gate": parity.name}
        figures.update(parity_state=parity.state, weight=weight, requests_in_step=in_step)
        reason = f"promotion held at {weight}%: {parity.reason} ({gate})"
        return CommandOutcome(event="hold", reason=reason, figures=figures)
    if parity is not None:
        gate = f"{gate}, {parity.reason}"
    out = _promote(c, replace(cmd, reason=f"automatic promotion: {gate}"), cfg)
    if out.control is not None:
        figures = dict(out.figures)
        figures["requests_in_step"] = in_step
        if parity is not None:
            figures.update(parity.figures)
        out = replace(out, figures=figures)
    return out


def _fresh_failure(c: Control, cmd: Command, cfg: CanaryConfig) -> bool:
    """An unhealthy verdict on evidence newer than the weight in force: a failed recent check
    once its window has passed since, or any failed check once the whole window has."""
    v = cmd.verdict
    if v is None or v.status != "unhealthy":
        return False
    held = cmd.now - c.since
    lane = cfg.criteria.recent
    if lane is not None and v.recent_failed and held >= lane.window:
        return True
    return held >= cfg.window


def _tick_ramp(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    """rolled_back: follow the ramp-down schedule; the latch holds everything else. Rolled
    back to a last good step that fails too (on evidence gathered there), go on to 0."""
    ramp = c.ramp
    current = c.weight_of(cfg.candidate)
    if ramp is None:
        if current > 0 and cfg.auto_rollback and _fresh_failure(c, cmd, cfg):
            v = cmd.verdict
            assert v is not None
            why = f"automatic rollback: the last good step fails too: {v.reason}"
            return _rollback(c, replace(cmd, reason=why), cfg, 0)
        return CommandOutcome()
    target = ramp.weight(cmd.now)
    if target >= current:
        return CommandOutcome()
    done = target == ramp.to
    new, _ = _change(c, cmd, cfg, target, ramp=None if done else ramp)
    reason = (
        f"ramp-down: {cfg.candidate} {current}% -> {target}% "
        f"({cmd.now - ramp.started_at:.0f}s of {ramp.over:g}s)"
        + ("; ramp-down complete" if done else "")
    )
    figures = {
        "from_weight": current,
        "to_weight": target,
        "ramp_start": ramp.start,
        "ramp_to": ramp.to,
    }
    return CommandOutcome(replace(new, reason=reason, source=c.source), "ramp", reason, figures)


def _tick_held_ramp(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    """holding: a ramp-down that began before the pause still completes."""
    if c.ramp is not None:
        return _tick_ramp(c, cmd, cfg)
    return _tick_watch(c, cmd, cfg)


def _already_rolled_back(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    if c.ramp is not None and (cmd.mode or cfg.rollback.mode) == "instant":
        return _rollback(c, replace(cmd, mode="instant"), cfg, c.ramp.to)  # finish a ramp now
    if c.ramp is None and c.weight_of(cfg.candidate) > 0:
        return _rollback(c, cmd, cfg, 0)  # from the last good step on to 0
    return CommandOutcome(
        error=f"already rolled back ({cfg.candidate} at {c.weight_of(cfg.candidate)}%)"
    )


def _rollback_or_refuse(c: Control, cmd: Command, cfg: CanaryConfig) -> CommandOutcome:
    if c.latched:
        return _already_rolled_back(c, cmd, cfg)
    return _rollback(c, cmd, cfg)


# (phase, command) -> handler; a pair that is absent is refused.
TRANSITIONS: dict[tuple[Phase, str], Handler] = {
    ("observing", "tick"): _tick_watch,
    ("observing", "rollback"): _rollback,
    ("observing", "promote"): _promote,
    ("observing", "pause"): _pause,
    ("observing", "resume"): _not_paused,
    ("observing", "set_weights"): _set_weights,
    ("stepping", "tick"): _tick_step,
    ("stepping", "rollback"): _rollback,
    ("stepping", "promote"): _promote,
    ("stepping", "pause"): _pause,
    ("stepping", "resume"): _not_paused,
    ("stepping", "set_weights"): _set_weights,
    ("holding", "tick"): _tick_held_ramp,
    ("holding", "rollback"): _rollback_or_refuse,
    ("holding", "promote"): _promote,
    ("holding", "pause"): _already_paused,
    ("holding", "resume"): _resume,
    ("holding", "set_weights"): _set_weights,
    ("rolled_back", "tick"): _tick_ramp,
    ("rolled_back", "rollback"): _already_rolled_back,
    ("rolled_back", "promote"): _promote,
    ("rolled_back", "pause"): _pause,
    ("rolled_back", "resume"): _resume,
    ("rolled_back", "set_weights"): _set_weights,
    ("promoted", "tick"): _tick_watch,
    ("promoted", "rollback"): _rollback,
    ("promoted", "promote"): _promote,
    ("promoted", "pause"): _pause,
    ("promoted", "resume"): _not_paused,
    ("promoted", "set_weights"): _set_weights,
}


def apply(control: Control, cmd: Command, cfg: CanaryConfig | None) -> CommandOutcome:
    """Run one command. Without a canary block only `set_weights` applies."""
    if cfg is None:
        if cmd.kind == "set_weights":
            assert cmd.weights is not None
            reason = cmd.reason or f"weights set to {_fmt(cmd.weights)}"
            new = replace(
                control,
                weights=cmd.weights,
                source="operator",
                since=cmd.now,
                actor=cmd.actor,
                reason=reason,
            )
            return CommandOutcome(
                new,
                "weights",
                reason,
                {"before": dict(control.weights), "after": dict(cmd.weights)},
            )
        if cmd.kind == "tick":
            return CommandOutcome()
        return CommandOutcome(
            error=f"route {control.route!r} has no canary (no canary block applies)"
        )
    handler = TRANSITIONS.get((control.phase, cmd.kind))
    if handler is None:  # pragma: no cover - the table is complete
        return CommandOutcome(error=f"{cmd.kind} is not possible while {control.phase}")
    return handler(control, cmd, cfg)
