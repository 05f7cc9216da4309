"""Shared fixtures: small real backends on 127.0.0.1 and a gateway in front of them."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from cutover.app import start_gateway
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.quiescence import Closings

ROOT = Path(__file__).resolve().parent.parent


class EchoBackend:
    """A backend that says who it is and what it received; hits are counted."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.received: list[dict[str, Any]] = []
        self.fail_status: int | None = None  # answer every request with this status
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("*", "/sse", self.sse)
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/gzip", self.gz)
        app.router.add_get("/big/{size}", self.big)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "backend": self.name})

    async def echo(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        delay = float(request.query.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        self.received.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "target": request.raw_path,  # the request target exactly as it arrived
                "headers": {str(k): v for k, v in request.headers.items()},
            }
        )
        status = self.fail_status or int(request.query.get("status", "200"))
        body = {
            "backend": self.name,
            "method": request.method,
            "path": request.path_qs,
            "headers": {str(k): v for k, v in request.headers.items()},
            "body_bytes": size,
        }
        resp = web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
        resp.headers["Keep-Alive"] = "timeout=5"
        resp.headers["Connection"] = "X-Backend-Private"
        resp.headers["X-Backend-Private"] = "secret"
        resp.headers["X-Backend"] = self.name
        return resp

    async def sse(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.3)
        await resp.write_eof()
        return resp

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str(f"{self.name}: {msg.data}")
            elif msg.type == web.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    async def gz(self, request: web.Request) -> web.Response:
        body = gzip.compress(b'{"hello": "world"}' * 100)
        return web.Response(
            body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
        )

    async def big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            part = chunk[: min(len(chunk), size - sent)]
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        return resp

    async def start(self, port: int = 0) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None, auto_decompress=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Awaitable[EchoBackend]]]:
    started: list[EchoBackend] = []

    async def make(name: str) -> EchoBackend:
        b = EchoBackend(name)
        await b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        await b.stop()


def gateway_config(backends: dict[str, str], **overrides: Any) -> dict[str, Any]:
    """A config mapping for the given backend URLs, with one catch-all route."""
    route = {
        "name": "default",
        "match": {"path_prefix": "/"},
        "split": {name: (100 if i == 0 else 0) for i, name in enumerate(backends)},
    }
    route.update(overrides.pop("route", {}))
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": "off",
        "access_log": {"enabled": False},
        "backends": {
            name: {
                "url": url,
                "health": {"path": "/healthz", "interval": "200ms", "timeout": "150ms"},
            }
            for name, url in backends.items()
        },
        "routes": [route],
    }
    data.update(overrides)
    return data


@pytest.fixture(params=["fast", "general"])
def serving_path(request: pytest.FixtureRequest) -> str:
    """The listener path under test (proxy.fastpath, or aiohttp for every request).

    A module opts its tests into running on both with
    `pytestmark = pytest.mark.usefixtures("serving_path")`; `gateway` and `gateway_process`
    then set `fast_path` accordingly (unless the config sets it).
    """
    return str(request.param)


def _on_path(request: pytest.FixtureRequest, data: dict[str, Any]) -> dict[str, Any]:
    if "serving_path" not in request.fixturenames or "fast_path" in data:
        return data
    return dict(data, fast_path=request.getfixturevalue("serving_path") == "fast")


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    started: list[Gateway] = []

    async def make(data: dict[str, Any]) -> Gateway:
        gw = await start_gateway(parse_config(_on_path(request, data), "test.yaml"))
        started.append(gw)
        return gw

    yield make
    for gw in started:  # each checked for what it still holds as it closes (closing_checks)
        await gw.close()


@pytest.fixture(autouse=True)
def closing_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every gateway a test starts ends with the in-flight invariant (tests/quiescence.py:
    once traffic stopped, nothing is held; DESIGN.md, Decisions), however it is closed — by
    a fixture, a helper or the test itself — and none is left running. Problems fail the
    test at its end, once every gateway was closed."""
    closings = Closings()
    monkeypatch.setattr(Gateway, "start", closings.wrap_start(Gateway.start))
    monkeypatch.setattr(Gateway, "close", closings.wrap_close(Gateway.close))
    yield
    problems = closings.verdict()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """`python -m cutover serve` in a subprocess, for signal, worker and memory tests."""

    def __init__(self, config: dict[str, Any], tmp_path: Path, workers: int | None = 1) -> None:
        """`workers`: passed as `--workers`; None leaves the count to the config file."""
        self.port = free_port()
        self.pinned = {"fast_path": config["fast_path"]} if "fast_path" in config else {}
        config = dict(config, listen=f"127.0.0.1:{self.port}")
        self.config_path = tmp_path / "cutover.yaml"
        self.write_config(config)
        self.log_path = tmp_path / "gateway.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        count = [] if workers is None else ["--workers", str(workers)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cutover", "serve", "-c", str(self.config_path), *count],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def write_config(self, config: dict[str, Any]) -> None:
        config = dict(self.pinned, **config)  # the listener path under test stays
        config = dict(config, listen=f"127.0.0.1:{self.port}")
        self.config_path.write_text(yaml.safe_dump(config))

    def wait_ready(self, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited early:\n{self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"gateway never listened:\n{self.output()}")

    async def ready(self) -> GatewayProcess:
        await asyncio.to_thread(self.wait_ready)
        return self

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def held(self, deadline: float = 10.0) -> float | None:
        """The in-flight requests /metrics still shows (summed over the workers) once `deadline`
        seconds passed without it reading zero; None when it reads zero, or when the process no
        longer listens (it was stopped or is draining: nothing to ask)."""
        end = time.monotonic() + deadline
        value: float | None = None
        while True:
            try:
                with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except ConnectionRefusedError:
                return None
            except (OSError, urllib.error.URLError) as exc:
                if isinstance(getattr(exc, "reason", None), ConnectionRefusedError):
                    return None
                raise
            value = next(
                float(line.split(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("cutover_in_flight_requests ")
            )
            if value == 0 or time.monotonic() >= end:
                return value or None
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def gateway_process(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    started: list[GatewayProcess] = []

    def make(config: dict[str, Any], workers: int | None = 1) -> GatewayProcess:
        gp = GatewayProcess(_on_path(request, config), tmp_path, workers)
        started.append(gp)
        return gp

    yield make
    problems = []
    for gp in started:  # the in-flight invariant, as for the gateways in this process
        held = gp.held() if gp.proc.poll() is None else None
        if held:
            problems.append(f"gateway process {gp.url}: {held:g} requests still in flight")
        gp.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


async def wait_for(
    predicate: Callable[[], bool], deadline: float = 10.0, interval: float = 0.05
) -> None:
    """Poll until `predicate()` holds; fail after a generous deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met before the deadline")
