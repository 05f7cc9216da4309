"""Helpers for the alert intake tests: a gateway with an `alerts:` section on a store of the test's
own, a small OpenAI-compatible server, a TCP relay that can cut the store off, payloads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from cutover.alerts.intake import AlertsFeature
from cutover.app import gateway
from cutover.core.clock import Clock, FakeClock
from cutover.core.db import Database, open_database
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.conftest import gateway_config

PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CUTOVER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def am_alert(
    name: str = "DiskFull",
    status: str = "firing",
    starts_at: str = "2026-11-21T21:38:32Z",
    **labels: str,
) -> dict[str, Any]:
    """One alert as Alertmanager sends it (its fingerprint is left for the gateway to compute)."""
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": f"{name} happened"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-21T22:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
    }


def envelope(*alerts: dict[str, Any], truncated: int = 0) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": truncated,
        "status": "firing",
        "receiver": "cutover",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


class AlertsGateway:
    """Starts gateways with an alerts section; closes them and drops their PostgreSQL schemas."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Gateway] = []
        self.schemas: list[str] = []

    async def start(
        self,
        alerts: dict[str, Any],
        *,
        backend_url: str = "http://127.0.0.1:9",
        clock: Clock | None = None,
        store: str = "sqlite",
        storage_url: str | None = None,
        **top: Any,
    ) -> Gateway:
        top.setdefault("storage", f"sqlite:///{self.tmp_path}/state-{len(self.started)}.db")
        data = gateway_config({"history": backend_url}, alerts=alerts, **top)
        data["backends"]["history"].pop("health", None)
        config = parse_config(data, str(self.tmp_path / "cutover.yaml"))
        gw = gateway(config, clock or FakeClock())
        if store == "postgresql":
            schema = f"t_{uuid.uuid4().hex[:12]}"
            self.schemas.append(schema)
            gw.db = await open_database(storage_url or PG_URL, schema=schema)
        self.started.append(gw)
        await gw.start()
        return gw

    async def close(self) -> None:
        for gw in self.started:
            await gw.close()
        if self.schemas:
            db = await open_database(PG_URL)
            for schema in self.schemas:
                await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await db.close()


def feature(gw: Gateway) -> AlertsFeature:
    return next(f for f in gw.features if isinstance(f, AlertsFeature))


async def jobs(gw: Gateway) -> list[tuple[str, str, str]]:
    """(target, fingerprint, status) of every outbox job, oldest first."""
    db: Database = await gw.database()
    rows = await db.fetch(
        "SELECT target, fingerprint, alert_status FROM publishing_jobs ORDER BY id"
    )
    return [(r["target"], r["fingerprint"], r["alert_status"]) for r in rows]


async def intake_rows(gw: Gateway) -> list[dict[str, Any]]:
    db: Database = await gw.database()
    return await db.fetch(
        "SELECT id, fingerprint, alertname, status, state, mode, alert, decision"
        " FROM cutover_alerts ORDER BY id"
    )


# -- an OpenAI-compatible server ---------------------------------------------------------------


class FakeLLM:
    """`POST /v1/chat/completions` and `GET /v1/models`, answering as told by `mode`:
    good | slow | hold (until `release` is set) | error | malformed. Request bodies are kept."""

    def __init__(self) -> None:
        self.mode = "good"
        self.answer: dict[str, Any] = {
            "severity": "critical",
            "category": "database",
            "confidence": 0.92,
            "reasoning": "Replication is broken; writes may be lost.",
            "recommendations": ["Check the replica", "Page the DBA"],
        }
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.slow_seconds = 30.0
        self.release = asyncio.Event()  # mode "hold": answer once this is set
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if self.mode == "hold":
            await self.release.wait()
        if self.mode == "error":
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error"}}, status=500
            )
        content = orjson.dumps(self.answer).decode()
        if self.mode == "malformed":
            content = '{"severity": "catastrophic", "confidence": "very"}'
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model", "m"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "small-model", "object": "model", "created": 0, "owned_by": "test"}
                ],
            }
        )


# -- a relay that can cut the gateway off from PostgreSQL ----------------------------------


class TcpRelay:
    """127.0.0.1:<port> -> target; `stop()` closes the listener and every relayed connection.

    `pause()` makes the server hang instead: connections are still accepted, but no byte goes
    either way (nor is a new connection passed on) until `resume()`.
    """

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()
        if self._server is None:  # stopped meanwhile
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for t in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.create_task(t)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        server, self._server = self._server, None
        self._flowing.set()  # connections held by a pause see the relay stopped
        if server is not None:
            server.close()
        for w in list(self._writers):
            w.close()
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()


@contextlib.asynccontextmanager
async def fake_llm() -> AsyncIterator[FakeLLM]:
    server = await FakeLLM().start()
    try:
        yield server
    finally:
        await server.stop()


def llm_section(server: FakeLLM, **openai: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "base_url": server.url,
        "model": "small-model",
        "api_key": "sk-test-key-000000000000",
        "timeout": "10s",
        "retries": 0,
        "retry_backoff": 0,
        "breaker": {"failures": 2, "reset": "30s"},
        "calls_per_minute": 100,
    }
    settings.update(openai)
    return {"engine": "openai", "openai": settings}
