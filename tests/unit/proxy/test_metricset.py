"""The one way to declare metrics (`proxy.metrics.MetricSet`): fields become metrics on the
registry the set is made with, with their labels, help, buckets and multiprocess mode, once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cutover.proxy.metrics import LATENCY_BUCKETS, Metrics, MetricSet, counter, gauge, histogram


@dataclass(eq=False, slots=True)
class _Sample(MetricSet):
    registry: CollectorRegistry
    hits: Counter = counter("t_hits_total", "Hits, by route.", ["route"])
    up: Gauge = gauge("t_up", "1 when up.", mode="livemin")
    took: Histogram = histogram("t_took_seconds", "Time taken.", ["route"], buckets=(0.1, 1.0))
    lat: Histogram = histogram("t_lat_seconds", "Latency.")


def test_fields_become_metrics_on_the_given_registry() -> None:
    registry = CollectorRegistry()
    m = _Sample(registry)
    m.hits.labels("a").inc(2)
    m.up.set(1)
    m.took.labels("a").observe(0.5)
    assert registry.get_sample_value("t_hits_total", {"route": "a"}) == 2
    assert registry.get_sample_value("t_up") == 1
    assert registry.get_sample_value("t_took_seconds_bucket", {"route": "a", "le": "1.0"}) == 1
    assert m.up._multiprocess_mode == "livemin"
    assert tuple(m.lat._upper_bounds[:-1]) == LATENCY_BUCKETS  # the default buckets
    assert {f.name for f in registry.collect()} == {
        "t_hits",
        "t_up",
        "t_took_seconds",
        "t_lat_seconds",
    }


def test_a_set_is_declared_once_per_registry() -> None:
    registry = CollectorRegistry()
    _Sample(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        _Sample(registry)
    _Sample(CollectorRegistry())  # another gateway, another registry: fine


def test_the_gateway_metrics_make_their_own_registry() -> None:
    a, b = Metrics(), Metrics()
    assert a.registry is not b.registry
    a.requests.labels("r", "go", "200").inc()
    assert (
        a.registry.get_sample_value(
            "cutover_requests_total", {"route": "r", "backend": "go", "status": "200"}
        )
        == 1
    )
    assert (
        b.registry.get_sample_value(
            "cutover_requests_total", {"route": "r", "backend": "go", "status": "200"}
        )
        is None
    )
