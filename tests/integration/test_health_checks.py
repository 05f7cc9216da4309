"""Active health checks: the bound of a check is built once per config load, and a reload
that changes it takes effect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.conftest import gateway_config, wait_for

SLOW = 0.5  # seconds the backend takes to answer its health check


class SeenTimeouts:
    """Stands in for an upstream's session: records the `timeout` of every GET (and keeps the
    objects alive, so that two of them never share an id), then lets the session send it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self.timeouts: list[Any] = []

    def get(self, url: Any, **kwargs: Any) -> Any:
        self.timeouts.append(kwargs.get("timeout"))
        return self._session.get(url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def watch(gw: Gateway, backend: str) -> SeenTimeouts:
    upstream = gw.state.upstreams[backend]
    seen = SeenTimeouts(upstream.session)
    upstream.session = seen  # type: ignore[assignment]
    return seen


@pytest.fixture
async def slow_backend() -> AsyncIterator[str]:
    """A backend whose /healthz answers 200 after SLOW seconds."""

    async def healthz(request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _config(url: str, health: dict[str, Any]) -> dict[str, Any]:
    data = gateway_config({"slow": url})
    data["backends"]["slow"]["health"] = health
    return data


async def test_a_check_uses_the_timeout_built_at_load_and_a_reload_changes_it(
    slow_backend: str, gateway
) -> None:
    short = {"path": "/healthz", "interval": "100ms", "timeout": "50ms", "unhealthy_threshold": 1}
    gw = await gateway(_config(slow_backend, short))
    seen = watch(gw, "slow")
    # The check gives up before the backend answers: the backend is down.
    await wait_for(lambda: "slow" not in gw.health.available(gw.clock.monotonic()))
    await wait_for(lambda: len(seen.timeouts) >= 3)
    built = gw.state.check_timeouts["slow"]
    assert built.total == 0.05
    assert all(t is built for t in seen.timeouts)  # one object, not one per check
    # A reload with a timeout the backend answers within: it is up again.
    long = {"path": "/healthz", "interval": "20s", "timeout": "10s", "healthy_threshold": 1}
    await gw.reload(parse_config(_config(slow_backend, long), "test.yaml"))
    rebuilt = gw.state.check_timeouts["slow"]
    assert rebuilt is not built and rebuilt.total == 10.0
    await wait_for(lambda: "slow" in gw.health.available(gw.clock.monotonic()), deadline=30)
