"""Prometheus metrics: one idiom for the gateway's own and every feature's.

A feature declares its metrics once, as a dataclass deriving from `MetricSet` whose fields are
made with `counter`, `gauge` or `histogram` (name, help, labels; a gauge's multiprocess mode,
a histogram's buckets). Constructing it with the gateway's registry creates every metric on
it, once, at start; the request path and the features then only take children and increment.

With several workers (`--workers N`) the parent sets PROMETHEUS_MULTIPROC_DIR and /metrics
aggregates every worker's values; with one worker each gateway keeps its own registry.

`fast_inc`, `fast_observe` and `CounterSlots` reach into prometheus_client's metric children
(their `_value`, `_sum`, `_buckets`, `_upper_bounds`) for the fast path's per-request counting;
they live here alone, and tests/unit/proxy/test_metrics_internals.py fails if those internals
change.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp
from prometheus_client.values import MutexValue

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@dataclass(frozen=True, slots=True)
class _Spec:
    """One metric as declared: made on a registry by `MetricSet`."""

    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...]
    mode: str | None = None  # a gauge's multiprocess mode (how /metrics merges workers)
    buckets: tuple[float, ...] | None = None

    def create(self, registry: CollectorRegistry) -> Any:
        kw: dict[str, Any] = {"registry": registry}
        if self.mode is not None:
            kw["multiprocess_mode"] = self.mode
        if self.buckets is not None:
            kw["buckets"] = self.buckets
        return self.kind(self.name, self.help, list(self.labels), **kw)


def counter(name: str, help: str, labels: Sequence[str] = ()) -> Any:
    """A Counter field of a `MetricSet` (`name` with `_total`, as prometheus_client takes it)."""
    return field(init=False, metadata={"metric": _Spec(Counter, name, help, tuple(labels))})


def gauge(name: str, help: str, labels: Sequence[str] = (), *, mode: str) -> Any:
    """A Gauge field of a `MetricSet`; `mode` says how /metrics merges the workers' values
    (livesum, livemin, livemax, livemostrecent): a choice every gauge must make."""
    spec = _Spec(Gauge, name, help, tuple(labels), mode=mode)
    return field(init=False, metadata={"metric": spec})


def histogram(
    name: str, help: str, labels: Sequence[str] = (), *, buckets: Sequence[float] = LATENCY_BUCKETS
) -> Any:
    """A Histogram field of a `MetricSet`."""
    spec = _Spec(Histogram, name, help, tuple(labels), buckets=tuple(buckets))
    return field(init=False, metadata={"metric": spec})


class MetricSet:
    """Base of a feature's metrics: a dataclass with a `registry` field and metric fields
    (`counter`, `gauge`, `histogram`); constructing it creates each metric on the registry."""

    __slots__ = ()
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            spec = f.metadata.get("metric")
            if spec is not None:
                object.__setattr__(self, f.name, spec.create(self.registry))


def counter_samples(name: str, registry: CollectorRegistry) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every child of the counter `name` (given without `_total`): summed
    over every worker process when they share a multiprocess directory (as /metrics is),
    else as `registry` holds it."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)
    total = f"{name}_total"
    return [
        (sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == total
    ]


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@dataclass(eq=False, slots=True)
class Metrics(MetricSet):
    """The gateway's own metrics, with the `cutover_` prefix; features declare theirs on
    `registry` (one exposition for all). `Metrics()` makes a registry of its own."""

    registry: CollectorRegistry = field(default_factory=_registry)
    requests: Counter = counter(
        "cutover_requests_total",
        "Requests answered, by route, backend and status code.",
        ["route", "backend", "status"],
    )
    duration: Histogram = histogram(
        "cutover_request_duration_seconds",
        "Time from request head to the end of the response, by route and backend.",
        ["route", "backend"],
    )
    upstream_errors: Counter = counter(
        "cutover_upstream_errors_total",
        "Failed upstream attempts, by backend and kind (connect, timeout, reset, status).",
        ["backend", "kind"],
    )
    fallbacks: Counter = counter(
        "cutover_fallbacks_total",
        "Requests replayed on another backend after a failed attempt.",
        ["route", "from_backend", "to_backend"],
    )
    budget_exhausted: Counter = counter(
        "cutover_retry_budget_exhausted_total",
        "Replays refused because the route's retry budget was used up.",
        ["route"],
    )
    rejected: Counter = counter(
        "cutover_rejected_total",
        "Requests the gateway refused itself, by reason.",
        ["reason"],
    )
    health: Gauge = gauge(
        "cutover_backend_healthy",
        "1 when the backend takes traffic (healthy and not ejected), else 0.",
        ["backend"],
        mode="livemin",
    )
    ejections: Counter = counter(
        "cutover_backend_ejections_total",
        "Passive ejections after consecutive failures.",
        ["backend"],
    )
    in_flight: Gauge = gauge(
        "cutover_in_flight_requests",
        "Requests being handled now.",
        mode="livesum",
    )
    task_failures: Counter = counter(
        "cutover_task_failures_total",
        "Unexpected failures of background tasks, by task (each is logged with its"
        " traceback and the task restarted; /readyz `tasks` shows the last error).",
        ["task"],
    )

    def exposition(self) -> tuple[bytes, str]:
        """The /metrics body and its content type."""
        if multiprocess_enabled():
            registry = CollectorRegistry()
            _mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# -- the fast path's direct counting (prometheus_client internals, here only) ---------------


def fast_inc(child: Any) -> Callable[..., None]:
    """A counter child's `inc` without its per-call checks: its value's own `inc`."""
    value = getattr(child, "_value", None)
    return value.inc if value is not None and hasattr(value, "inc") else child.inc  # type: ignore[no-any-return]


def fast_observe(child: Any) -> Callable[[float], None]:
    """`Histogram.observe` without its per-call checks: one bisect, two increments."""
    try:
        add_sum = child._sum.inc
        buckets = [b.inc for b in child._buckets]
        bounds = list(child._upper_bounds)
    except AttributeError:
        return child.observe  # type: ignore[no-any-return]

    def observe(amount: float) -> None:
        add_sum(amount)
        buckets[bisect_left(bounds, amount)](1)

    return observe


class _SlotValue:
    """A counter child's value kept in a `CounterSlots` list slot (one worker): what
    prometheus_client's `MutexValue` offers, without the lock (one thread counts)."""

    __slots__ = ("_i", "_slots")
    _multiprocess = False

    def __init__(self, slots: list[float], i: int) -> None:
        self._slots = slots
        self._i = i

    def inc(self, amount: float) -> None:
        self._slots[self._i] += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._slots[self._i] = value

    def get(self) -> float:
        return self._slots[self._i]

    def set_exemplar(self, exemplar: object) -> None:
        """(no exemplars on these counters)"""

    def get_exemplar(self) -> None:
        return None


class CounterSlots:
    """Counter children counted through a plain list: `slots[i] += 1` costs no call at all
    (the path of a request whose mirror copy is dropped: most of a mirrored route's requests
    at a rate the mirror cannot keep up with), and the counters read the slots.

    With one worker the children's values are the slots (each collection reads them: the
    counts are exact at any time). With several (PROMETHEUS_MULTIPROC_DIR) a child's value
    is a file that /metrics reads from every worker: `fold` adds what the slots gained since
    its last call, and the owner calls it often and before a scrape. Counting through a
    child's `inc` stays right in both cases."""

    __slots__ = ("_folded", "_incs", "slots")

    def __init__(self, children: list[Any]) -> None:
        values = [getattr(c, "_value", None) for c in children]
        self.slots: list[float] = [v.get() if v is not None else 0.0 for v in values]
        self._incs: list[Callable[[float], None]] | None = None
        self._folded: list[float] = list(self.slots)
        if all(type(v) in (MutexValue, _SlotValue) for v in values):
            for i, child in enumerate(children):
                child._value = _SlotValue(self.slots, i)
        else:  # a multiprocess value (or internals that changed): folded into `inc`
            self._incs = [fast_inc(c) for c in children]

    def fold(self) -> None:
        """Hand the counters what the slots gained (several workers; else nothing to do)."""
        incs = self._incs
        if incs is None:
            return
        folded = self._folded
        for i, now in enumerate(self.slots):
            if now != folded[i]:
                incs[i](now - folded[i])
                folded[i] = now
