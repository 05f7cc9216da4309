"""The Alert History profile against the sample backends: legacy-shaped requests to the gateway,
answered by the Go-shaped backend in the legacy shapes (spec digest §2.8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cutover.app import start_gateway
from cutover.examples.backends import GO_STORE, LEGACY_STORE, go_app, legacy_app
from cutover.examples.samples import alertmanager_payload
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway

GUIDE = "https://github.com/ipiton/alert-history-service/blob/main/MIGRATION.md"


async def _serve(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


class Stack:
    def __init__(self) -> None:
        self.go = go_app()
        self.legacy = legacy_app()
        self.runners: list[web.AppRunner] = []
        self.urls: dict[str, str] = {}
        self.gateways: list[Gateway] = []

    async def gateway(self, tmp_path: Path, split: dict[str, int]) -> Gateway:
        data = {
            "listen": "127.0.0.1:0",
            "admin": "off",
            "access_log": {"enabled": False},
            "storage": f"sqlite:///{tmp_path}/state.db",
            "backends": {
                name: {"url": url, "health": {"path": "/healthz", "interval": "200ms",
                                           "timeout": "150ms"}}
                for name, url in self.urls.items()
            },
            "routes": [
                {"name": "default", "match": {"path_prefix": "/"}, "split": split,
                 "fallback": ["python"]}
            ],
            "compat": {"profile": "builtin:alert-history",
                       "backends": {"new": "go", "legacy": "python"}},
        }  # fmt: skip
        gw = await start_gateway(parse_config(data, str(tmp_path / "cutover.yaml")))
        self.gateways.append(gw)
        return gw


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    st = Stack()
    st.urls["go"] = await _serve(st.go, st.runners)
    st.urls["python"] = await _serve(st.legacy, st.runners)
    yield st
    for gw in st.gateways:
        await gw.close()
    for runner in st.runners:
        await runner.cleanup()


def announced(headers: Any) -> bool:
    return (
        headers.get("Deprecation") == "@1738368000"
        and headers.get("Sunset") == "Tue, 01 Apr 2025 00:00:00 GMT"
        and any('rel="deprecation"' in link for link in headers.getall("Link", []))
    )


async def test_legacy_clients_served_by_go_in_legacy_shapes(stack: Stack, tmp_path: Path) -> None:
    gw = await stack.gateway(tmp_path, {"go": 100, "python": 0})
    payload = alertmanager_payload()
    async with aiohttp.ClientSession() as s:
        # the legacy service itself, for the shapes to compare with
        async with s.post(stack.urls["python"] + "/webhook/", json=payload) as r:
            legacy_webhook = await r.json()
        async with s.get(stack.urls["python"] + "/history?limit=10") as r:
            legacy_history = await r.json()

        # the Alertmanager envelope at legacy /webhook (no slash): fanned out to Go's flat one
        async with s.post(gw.url + "/webhook", json=payload) as r:
            assert r.status == 200, await r.text()
            assert r.headers["X-Cutover-Backend"] == "go"
            assert announced(r.headers)
            webhook = await r.json()
        assert webhook.keys() == legacy_webhook.keys()
        assert webhook["processed_alerts"] == 2 and webhook["mode"] == "legacy"
        assert list(stack.go[GO_STORE]) == ["1481b3e4e23664d0", "d27718e7a37dc0a9"]

        # legacy /history served by Go's /api/v2/alerts, in the legacy {alerts, total} shape
        async with s.get(gw.url + "/history?alertname=ProxyUpstreamDown&limit=10") as r:
            assert r.status == 200
            assert r.headers["X-Cutover-Backend"] == "go"
            assert announced(r.headers)
            history = await r.json()
        assert history.keys() == legacy_history.keys() == {"alerts", "total"}
        assert history["total"] == len(history["alerts"]) == legacy_history["total"] == 2
        for ours, theirs in zip(history["alerts"], legacy_history["alerts"], strict=True):
            assert ours.keys() == theirs.keys()
            assert (ours["fingerprint"], ours["alertname"], ours["status"]) == (
                theirs["fingerprint"], theirs["alertname"], theirs["status"]
            )  # fmt: skip
        async with s.get(gw.url + "/history?alertname=Other&status=firing&limit=10") as r:
            assert await r.json() == {"alerts": [], "total": 0}
        async with s.get(gw.url + "/history?limit=1") as r:
            assert (await r.json())["total"] == 1
        async with s.get(gw.url + "/history?limit=5000") as r:  # Go caps limit at 1000
            assert (r.status, await r.json()) == (422, {"detail": "invalid pagination parameters"})

        # a fingerprint query stays on the legacy backend (Go cannot filter by it)
        async with s.get(gw.url + "/history?fingerprint=1481b3e4e23664d0") as r:
            assert r.headers["X-Cutover-Backend"] == "python"
            assert [a["fingerprint"] for a in (await r.json())["alerts"]] == ["1481b3e4e23664d0"]

        # /health answered by the gateway in the legacy shape; /healthz is the gateway's own
        async with s.get(gw.url + "/health") as r:
            health = await r.json()
            assert r.status == 200 and announced(r.headers)
        assert health["status"] == "healthy" and isinstance(health["timestamp"], float)
        async with s.get(gw.url + "/healthz") as r:
            assert r.status == 200

        # /legacy/* is gone, with a pointer to MIGRATION.md
        async with s.get(gw.url + "/legacy/report?days=7") as r:
            assert r.status == 410 and announced(r.headers)
            gone = (await r.json())["error"]
        assert gone["migration_guide"] == GUIDE
        assert gone["replacement"] == "GET /api/v2/report"


async def test_on_the_legacy_side_of_the_split_requests_pass_as_legacy(
    stack: Stack, tmp_path: Path
) -> None:
    gw = await stack.gateway(tmp_path, {"go": 0, "python": 100})
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/webhook", json=alertmanager_payload()) as r:
            assert r.status == 200  # /webhook/ directly: no 307 round trip
            assert r.headers["X-Cutover-Backend"] == "python"
            assert (await r.json())["mode"] == "legacy"
            assert announced(r.headers)
        assert len(stack.legacy[LEGACY_STORE]) == 2
        assert not stack.go[GO_STORE]
        async with s.get(gw.url + "/history?limit=10") as r:
            assert r.headers["X-Cutover-Backend"] == "python"
            assert (await r.json())["total"] == 2
