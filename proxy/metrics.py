"""Prometheus metrics, created once per gateway and bound to routes/backends at start.

With several workers (`--workers N`) the parent sets PROMETHEUS_MULTIPROC_DIR and /metrics
aggregates every worker's values; with one worker each gateway keeps its own registry.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


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


class Metrics:
    """The gateway's own metrics, with the `cutover_` prefix; features register theirs on
    `registry` (one exposition for all)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cutover_requests_total",
            "Requests answered, by route, backend and status code.",
            ["route", "backend", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "cutover_request_duration_seconds",
            "Time from request head to the end of the response, by route and backend.",
            ["route", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "cutover_upstream_errors_total",
            "Failed upstream attempts, by backend and kind (connect, timeout, reset, status).",
            ["backend", "kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "cutover_fallbacks_total",
            "Requests replayed on another backend after a failed attempt.",
            ["route", "from_backend", "to_backend"],
            registry=r,
        )
        self.budget_exhausted = Counter(
            "cutover_retry_budget_exhausted_total",
            "Replays refused because the route's retry budget was used up.",
            ["route"],
            registry=r,
        )
        self.rejected = Counter(
            "cutover_rejected_total",
            "Requests the gateway refused itself, by reason.",
            ["reason"],
            registry=r,
        )
        self.health = Gauge(
            "cutover_backend_healthy",
            "1 when the backend takes traffic (healthy and not ejected), else 0.",
            ["backend"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.ejections = Counter(
            "cutover_backend_ejections_total",
            "Passive ejections after consecutive failures.",
            ["backend"],
            registry=r,
        )
        self.in_flight = Gauge(
            "cutover_in_flight_requests",
            "Requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.task_failures = Counter(
            "cutover_task_failures_total",
            "Unexpected failures of background tasks, by task (each is logged with its"
            " traceback and the task restarted; /readyz `tasks` shows the last error).",
            ["task"],
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The /metrics body and its content type."""
        if multiprocess_enabled():
            registry = CollectorRegistry()
            _mp.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
