"""Helpers for the canary tests: gateways on a FakeClock, flaky backends, admin calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from cutover.app import start_gateway
from cutover.canary.feature import CanaryFeature
from cutover.core.clock import Clock
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.conftest import EchoBackend, gateway_config

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FlakyBackend(EchoBackend):
    """Answers `fail_status` to every `every`-th request (1-based), else echoes."""

    def __init__(self, name: str, every: int = 0, status: int = 500) -> None:
        super().__init__(name)
        self.every = every
        self.status = status
        self.count = 0

    async def echo(self, request: web.Request) -> web.StreamResponse:
        self.count += 1
        if self.every and self.count % self.every == 0:
            await request.read()
            self.hits += 1
            return web.json_response({"backend": self.name}, status=self.status)
        return await super().echo(request)


@contextlib.asynccontextmanager
async def started(*backends: EchoBackend) -> AsyncIterator[None]:
    for b in backends:
        await b.start()
    try:
        yield
    finally:
        for b in backends:
            await b.stop()


def canary_config(
    go: EchoBackend,
    py: EchoBackend,
    tmp: Path,
    *,
    split: dict[str, int] | None = None,
    canary: dict[str, Any] | None = None,
    db: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    route = {"split": split or {"go": 50, "python": 50}, "fallback": ["python"]}
    route.update(extra.pop("route", {}))
    data = gateway_config(
        {"go": go.url, "python": py.url},
        route=route,
        admin={"listen": "127.0.0.1:0", "token": TOKEN},
        storage=db or f"sqlite://{tmp}/state.db",
        headers={"override": "X-Cutover-Force"},
        **extra,
    )
    if canary is not False:
        # Latency on a shared test machine is noise: only error rates decide unless asked.
        data["canary"] = {
            "baseline": "python",
            "candidate": "go",
            "p95_margin": "5s",
            **(canary or {}),
        }
    return data


async def start(data: dict[str, Any], clock: Clock | None = None, ticking: bool = False) -> Gateway:
    gw = await start_gateway(parse_config(data, "test.yaml"), clock=clock)
    feature(gw).ticking = ticking
    return gw


def feature(gw: Gateway) -> CanaryFeature:
    return next(f for f in gw.features if isinstance(f, CanaryFeature))


async def admin(
    gw: Gateway, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = orjson.dumps(body) if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gw.admin_url + path, data=data, headers=headers) as r,
    ):
        raw = await r.read()
        return r.status, orjson.loads(raw) if raw else None


async def traffic(
    gw: Gateway, n: int, *, force: str | None = None, path: str = "/x", users: bool = False
) -> list[str]:
    """Send n GETs (20 at a time); who answered request i (X-Cutover-Backend), by i."""
    served: list[str] = ["-"] * n
    sem = asyncio.Semaphore(20)
    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> None:
            headers = {"X-Cutover-Force": force} if force else {}
            if users:
                headers["X-Request-User"] = f"user-{i}"
            async with sem, s.get(gw.url + path, headers=headers) as r:
                await r.read()
                served[i] = r.headers.get("X-Cutover-Backend", "-")

        await asyncio.gather(*(one(i) for i in range(n)))
    return served


def weights(gw: Gateway, route: str = "default") -> dict[str, int]:
    return dict(gw.state.tables[route].weights)
