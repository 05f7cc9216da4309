"""Every sender books through the one attempt loop: WebSocket upgrades and history deliveries
book passive health, draw on the route's retry budget, and are refused a fallback once it is
spent — on both listener paths."""

from __future__ import annotations

import asyncio
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from cutover.alerts.model import Alert
from cutover.proxy.server import Gateway
from cutover.publishing.config import PublishingConfig
from cutover.publishing.delivery import DeliveryEngine, PublishingMetrics
from cutover.publishing.outbox import Job, alert_to_json
from cutover.publishing.targets import TargetRegistry
from tests.conftest import gateway_config

pytestmark = pytest.mark.usefixtures("serving_path")

DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


def _config(live: str, budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """`dead` takes every request; `live` is its fallback."""
    route: dict[str, Any] = {"split": {"dead": 100, "live": 0}, "fallback": ["live"]}
    if budget is not None:
        route["retry"] = {"attempts": 1, "budget": budget}
    data = gateway_config({"dead": DEAD, "live": live}, route=route)
    for backend in data["backends"].values():
        backend["health"] = "off"  # passive health alone sees the dead backend
        backend["outlier"] = {"max_ejection_percent": 100}
    return data


def _sample(gw: Gateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


async def _quiet(gw: Gateway) -> None:
    """The route's budget reads zero once the last session's handler has ended."""
    budget = gw.state.budgets["default"]
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while (budget.in_flight, budget.replays) != (0, 0) and loop.time() < end:
        await asyncio.sleep(0.01)
    assert (budget.in_flight, budget.replays) == (0, 0)


async def test_a_websocket_to_a_dead_backend_books_passive_health(backends, gateway) -> None:
    live = await backends("live")
    gw = await gateway(_config(live.url))
    async with aiohttp.ClientSession() as s:
        for _ in range(5):  # consecutive connect failures: `dead` is ejected
            async with s.ws_connect(gw.url + "/ws") as ws:
                await ws.send_str("hello")
                assert (await ws.receive_str(timeout=5)) == "live: hello"
    assert "dead" not in gw.health.available(gw.clock.monotonic())
    assert _sample(gw, "cutover_backend_ejections_total", backend="dead") == 1
    assert _sample(gw, "cutover_upstream_errors_total", backend="dead", kind="connect") == 5
    fallback = {"route": "default", "from_backend": "dead", "to_backend": "live"}
    assert _sample(gw, "cutover_fallbacks_total", **fallback) == 5
    await _quiet(gw)


async def test_a_websocket_fallback_is_refused_when_the_budget_is_spent(backends, gateway) -> None:
    live = await backends("live")
    gw = await gateway(_config(live.url, budget={"percent": 0, "min": 0}))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(gw.url + "/ws")
    assert info.value.status == 502
    assert _sample(gw, "cutover_retry_budget_exhausted_total", route="default") == 1
    assert live.hits == 0
    await _quiet(gw)


def _job(route: str = "default") -> Job:
    alert = Alert(
        fingerprint="f00d",
        status="firing",
        labels=MappingProxyType({"alertname": "DiskFull"}),
        starts_at="2026-11-21T21:38:32Z",
    )
    return Job(
        id=1,
        target=f"backend:{route}",
        fingerprint=alert.fingerprint,
        alert_status="firing",
        alert_json=alert_to_json(alert).decode(),
        state="pending",
        attempts=0,
        created_at=0.0,
        next_at=0.0,
        last_error=None,
        dead_at=None,
    )


def _engine(gw: Gateway) -> DeliveryEngine:
    return DeliveryEngine(
        gw,
        None,  # type: ignore[arg-type]  # no outbox: one delivery is driven by hand
        TargetRegistry(),
        PublishingConfig(),
        metrics=PublishingMetrics(CollectorRegistry()),
    )


async def test_a_history_delivery_falls_back_and_books_health(backends, gateway) -> None:
    live = await backends("live")
    gw = await gateway(_config(live.url))
    out = await _engine(gw)._deliver_backend(_job(), _job().alert)
    assert out.ok and "stored by live" in out.error
    assert sum(1 for r in live.received if r["method"] == "POST") == 1
    assert _sample(gw, "cutover_upstream_errors_total", backend="dead", kind="connect") == 1
    assert _sample(gw, "cutover_upstream_errors_total", backend="dead", kind="publish") == 0
    assert gw.health["dead"].failures == 1
    await _quiet(gw)


async def test_a_history_delivery_is_refused_when_the_budget_is_spent(backends, gateway) -> None:
    live = await backends("live")
    gw = await gateway(_config(live.url, budget={"percent": 0, "min": 0}))
    out = await _engine(gw)._deliver_backend(_job(), _job().alert)
    assert not out.ok and out.retry  # the outbox tries again later
    assert "retry budget is spent" in out.error
    assert live.hits == 0
    assert _sample(gw, "cutover_retry_budget_exhausted_total", route="default") == 1
    await _quiet(gw)
