"""Two sample implementations for parity tests: planted differences and planted noise.

Both answer the same API. Noise (in both, different on every call): `generated_at` (a timestamp
with microseconds), `request_id` (a random UUID), `tags` (a shuffled list), and line 3 of
`/version`. Differences (the candidate only):

- `GET /alerts/{id}`: `alertname` renamed to `alert_name`; `count` sent as a string;
- `GET /history`: the last alert of the list is missing;
- `GET /version`: line 2 says `version: 2.0`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web

PLANTED = {
    "GET /alerts/{id}": {"$.alertname", "$.alert_name", "$.count"},
    "GET /history": {"$.alerts[*]"},
    "GET /version": {"body:2"},
}
NOISE = {"$.generated_at", "$.request_id", "$.tags[*]", "body:3"}
TAGS = ["api", "db", "cache", "queue", "auth", "edge", "batch", "search"]


class Sample:
    """One implementation; `candidate=True` plants the differences."""

    def __init__(self, candidate: bool) -> None:
        self.candidate = candidate
        self.calls = 0
        self.seen: list[dict[str, str]] = []  # headers of every request
        self.gate: asyncio.Event | None = None  # when set, requests wait for it
        self.hold: asyncio.Event | None = None  # when set, /stream waits after its first part
        self.streamed = 0  # /stream answers over (sent whole or cut)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def _noise(self) -> dict[str, object]:
        self.calls += 1
        tags = TAGS[:]
        random.shuffle(tags)
        return {
            # never the same twice: the clock plus one microsecond per call
            "generated_at": (datetime.now(UTC) + timedelta(microseconds=self.calls)).isoformat(),
            "request_id": str(uuid.uuid4()),
            "tags": tags,
        }

    def _alert(self, i: int) -> dict[str, object]:
        return {"id": i, "alertname": f"Alert{i}", "severity": "critical", "count": i * 2}

    async def _wait(self, request: web.Request) -> None:
        self.seen.append(dict(request.headers))
        if self.gate is not None:
            await self.gate.wait()

    async def alert(self, request: web.Request) -> web.Response:
        await self._wait(request)
        i = int(request.match_info["id"])
        body = {**self._alert(i), **self._noise(), "labels": {"team": "core", "env": "prod"}}
        if self.candidate:
            body["alert_name"] = body.pop("alertname")
            body["count"] = str(body["count"])
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def history(self, request: web.Request) -> web.Response:
        await self._wait(request)
        limit = int(request.query.get("limit", "3"))
        alerts = [self._alert(i) for i in range(1, limit + 1)]
        if self.candidate:
            alerts = alerts[:-1]
        body = {"alerts": alerts, "total": limit, **self._noise()}
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def version(self, request: web.Request) -> web.Response:
        await self._wait(request)
        version = "2.0" if self.candidate else "1.0"
        text = f"service: alerts\nversion: {version}\nbuilt: {uuid.uuid4().hex}\nok\n"
        return web.Response(text=text)

    async def echo(self, request: web.Request) -> web.Response:
        """Deterministic, for byte-identical checks: the same bytes on every call."""
        await self._wait(request)
        body = await request.read()
        return web.Response(
            body=b"echo:" + request.path_qs.encode() + b":" + body,
            content_type="application/octet-stream",
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """`stream_body(n)` in `n` writes, chunked (no Content-Length), the same on both
        sides; with `hold` set, the rest waits for it after the first part."""
        await self._wait(request)
        n = int(request.match_info["n"])
        body = stream_body(n)
        step = -(-len(body) // n)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await resp.prepare(request)
            for i in range(n):
                await resp.write(body[i * step : (i + 1) * step])
                if i == 0 and self.hold is not None:
                    await self.hold.wait()
                await asyncio.sleep(0.005)  # separate reads at the gateway
            await resp.write_eof()
        finally:
            self.streamed += 1
        return resp

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/alerts/{id}", self.alert)
        app.router.add_get("/history", self.history)
        app.router.add_get("/version", self.version)
        app.router.add_route("*", "/echo/{tail:.*}", self.echo)
        app.router.add_get("/stream/{n}", self.stream)
        return app

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def stream_body(parts: int) -> bytes:
    """The JSON `/stream/{parts}` answers: ~24 KiB per part, the same on every call."""
    items = [{"i": i, "text": f"item {i} " + "x" * 200} for i in range(100 * parts)]
    return orjson.dumps({"parts": parts, "items": items})


@asynccontextmanager
async def samples() -> AsyncIterator[tuple[Sample, Sample]]:
    """(primary, candidate), started on 127.0.0.1."""
    primary, candidate = Sample(False), Sample(True)
    await primary.start()
    await candidate.start()
    try:
        yield primary, candidate
    finally:
        await primary.stop()
        await candidate.stop()


def corpus_lines(alerts: int = 12, history: int = 6, version: int = 6) -> list[bytes]:
    lines = [orjson.dumps({"method": "GET", "path": f"/alerts/{i}"}) for i in range(1, alerts + 1)]
    lines += [orjson.dumps({"method": "GET", "path": "/history?limit=3"})] * history
    lines += [orjson.dumps({"method": "GET", "path": "/version"})] * version
    return lines
