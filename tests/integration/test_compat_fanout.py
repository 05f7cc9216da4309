"""Compat fan-out on real sockets: per-part retries under the route's replay rules, and
bounded concurrency with answers combined in item order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from cutover.compat.feature import FAN_OUT_BACKOFF_BASE, CompatFeature
from cutover.proxy.server import Gateway
from tests.conftest import EchoBackend, gateway_config

HOLD_UNTIL = 4  # held parts wait until this many parts are in flight at once


class PartsBackend:
    """The new backend: one alert per request; each item says how to behave.

    `{"id": N}` answers `{"id": N}`; `"fail": "503"` answers 503 the first time that id is
    seen, `"always"` every time; `"fail": "reset"` closes the connection without answering
    the first time; `"fail": "hang"` does not answer the first time until the part comes
    again; `"hold": true` waits (with a generous deadline) until `HOLD_UNTIL` parts
    are in flight, so that overlapping parts are seen whatever the machine's speed.
    """

    def __init__(self) -> None:
        self.received: list[tuple[int, str | None]] = []  # (id, Idempotency-Key)
        self.in_flight = 0
        self.max_in_flight = 0
        self.crowd = asyncio.Event()
        self.again = asyncio.Event()  # a hung part came again
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def one(self, request: web.Request) -> web.StreamResponse:
        item = orjson.loads(await request.read())
        ident = item["id"]
        seen = sum(1 for i, _ in self.received if i == ident)
        self.received.append((ident, request.headers.get("Idempotency-Key")))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.in_flight >= HOLD_UNTIL:
            self.crowd.set()
        try:
            fail = item.get("fail")
            if fail == "reset" and not seen:
                assert request.transport is not None
                request.transport.abort()  # no answer at all
                raise asyncio.CancelledError
            if fail == "hang":
                if seen:
                    self.again.set()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.again.wait(), 30)
            if (fail == "503" and not seen) or fail == "always":
                return web.json_response({"error": "busy"}, status=503)
            if item.get("hold"):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.crowd.wait(), 20)
                # Let any part sent beyond the limit arrive, and finish out of item order.
                await asyncio.sleep(0.005 * (ident % 3) + 0.02)
            elif item.get("linger"):
                await asyncio.sleep(0.01)
            return web.json_response({"id": ident})
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/one", self.one)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class RawBackend:
    """A minimal HTTP/1.1 server that can stop listening and listen again on the same port.

    It answers every request `{"id": N}` with `Connection: close`, and stops listening while
    answering the item `stop_after`: the next part finds its connection refused.
    """

    def __init__(self, stop_after: int) -> None:
        self.stop_after = stop_after
        self.server: asyncio.Server | None = None
        self.port = 0
        self.received: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def listen(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            ident = orjson.loads(await reader.readexactly(length))["id"]
            self.received.append(ident)
            if ident == self.stop_after:
                self.stop_listening()
            body = orjson.dumps({"id": ident})
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        finally:
            writer.close()


class FakeSleep:
    """The fan-out's backoff sleep: records the delays and does not wait on them."""

    def __init__(self, then: Callable[[], Awaitable[None]] | None = None) -> None:
        self.delays: list[float] = []
        self.then = then

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.then is not None:
            await self.then()
        await asyncio.sleep(0)


def fan_out_config(
    new: str,
    legacy: str,
    tmp_path: Path,
    retry: dict[str, Any] | None = None,
    concurrency: int | None = None,
    per_try: str | None = None,
) -> dict[str, Any]:
    route: dict[str, Any] = {"fallback": ["legacy"], "timeout": "60s"}
    if per_try is not None:
        route["per_try_timeout"] = per_try
    if retry is not None:
        route["retry"] = retry
    data = gateway_config(
        {"new": new, "legacy": legacy}, route=route, storage=f"sqlite:///{tmp_path}/state.db"
    )
    for backend in data["backends"].values():
        backend["health"] = "off"  # only the parts decide what the gateway sees
    fan_out: dict[str, Any] = {
        "applies_to": "new",
        "items": "alerts",
        "path": "/one",
        "response": {"count": "{count}", "answers": "{results}"},
    }
    if concurrency is not None:
        fan_out["concurrency"] = concurrency
    data["compat"] = {
        "backends": {"new": "new", "legacy": "legacy"},
        "rules": [{"name": "ingest", "match": {"method": "POST", "path": "/ingest"},
                   "fan_out": fan_out}],
    }  # fmt: skip
    return data


@pytest.fixture
async def parts() -> AsyncIterator[PartsBackend]:
    b = PartsBackend()
    await b.start()
    yield b
    await b.stop()


Start = Callable[..., Awaitable[tuple[Gateway, FakeSleep]]]


@pytest.fixture
async def start(
    backends: Callable[[str], Awaitable[EchoBackend]],
    gateway: Callable[[dict[str, Any]], Awaitable[Gateway]],
    tmp_path: Path,
) -> Start:
    async def make(new_url: str, **options: Any) -> tuple[Gateway, FakeSleep]:
        legacy = await backends("legacy")
        then = options.pop("then", None)
        gw = await gateway(fan_out_config(new_url, legacy.url, tmp_path, **options))
        assert isinstance(gw.compat, CompatFeature)
        sleep = FakeSleep(then)
        gw.compat.sleep = sleep
        return gw, sleep

    return make


async def post(
    gw: Gateway, alerts: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> tuple[int, Any, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + "/ingest", json={"alerts": alerts}, headers=headers) as r,
    ):
        return r.status, await r.json(), r.headers.get("X-Cutover-Backend", "")


def errors(gw: Gateway, kind: str) -> float:
    value = gw.metrics.registry.get_sample_value(
        "cutover_upstream_errors_total", {"backend": "new", "kind": kind}
    )
    return value or 0.0


OPT_IN = {"attempts": 2, "methods": ["GET", "HEAD", "POST"]}


async def test_a_503_part_is_retried_when_the_route_opts_post_in(
    parts: PartsBackend, start: Start
) -> None:
    gw, sleep = await start(parts.url, retry=OPT_IN)
    status, body, backend = await post(gw, [{"id": 0}, {"id": 1, "fail": "503"}, {"id": 2}])
    assert status == 200, body
    assert backend == "new"
    assert body == {"count": 3, "answers": [{"id": 0}, {"id": 1}, {"id": 2}]}
    assert [i for i, _ in parts.received].count(1) == 2  # once 503, once 200
    assert len(sleep.delays) == 1 and 0 <= sleep.delays[0] <= FAN_OUT_BACKOFF_BASE
    assert errors(gw, "status") == 1


async def test_a_503_part_is_not_retried_with_the_default_methods(
    parts: PartsBackend, start: Start
) -> None:
    gw, sleep = await start(parts.url)
    status, body, _ = await post(gw, [{"id": 0}, {"id": 1, "fail": "503"}, {"id": 2}])
    assert status == 502
    error = body["error"]
    assert error["code"] == "fan_out_failed"
    assert error["failures"] == [
        {"index": 1, "status": 503, "answer": {"error": "busy"}, "attempts": 1}
    ]
    assert [i for i, _ in parts.received] == [0, 1, 2]  # the others were still delivered
    assert sleep.delays == []


async def test_an_idempotency_key_makes_a_part_retryable_with_one_key_per_part(
    parts: PartsBackend, start: Start
) -> None:
    gw, sleep = await start(parts.url)  # default methods: POST is not in them
    status, body, _ = await post(
        gw, [{"id": 0}, {"id": 1, "fail": "503"}], headers={"Idempotency-Key": '"batch-7"'}
    )
    assert status == 200, body
    assert parts.received == [(0, '"batch-7-0"'), (1, '"batch-7-1"'), (1, '"batch-7-1"')]
    assert len(sleep.delays) == 1


async def test_retries_stop_at_the_routes_attempts(parts: PartsBackend, start: Start) -> None:
    gw, sleep = await start(parts.url, retry=OPT_IN)
    status, body, _ = await post(gw, [{"id": 0}, {"id": 1, "fail": "always"}])
    assert status == 502
    assert body["error"]["failures"] == [
        {"index": 1, "status": 503, "answer": {"error": "busy"}, "attempts": 3}
    ]
    assert [i for i, _ in parts.received].count(1) == 3  # the first try and 2 retries
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= FAN_OUT_BACKOFF_BASE
    assert 0 <= sleep.delays[1] <= 2 * FAN_OUT_BACKOFF_BASE
    assert errors(gw, "status") == 2  # the retried answers; the last one stands


async def test_a_reset_part_is_retried_only_when_the_replay_rules_allow(
    parts: PartsBackend, start: Start
) -> None:
    gw, _ = await start(parts.url)
    status, body, _ = await post(gw, [{"id": 0}, {"id": 1, "fail": "reset"}])
    assert status == 502
    assert body["error"]["failures"] == [{"index": 1, "error": "reset", "attempts": 1}]
    assert errors(gw, "reset") == 1

    parts.received.clear()
    gw, sleep = await start(parts.url, retry=OPT_IN)
    status, body, _ = await post(gw, [{"id": 0}, {"id": 1, "fail": "reset"}])
    assert status == 200, body
    assert body["answers"] == [{"id": 0}, {"id": 1}]
    assert [i for i, _ in parts.received] == [0, 1, 1]
    assert len(sleep.delays) == 1
    assert errors(gw, "reset") == 1


async def test_a_part_attempt_is_bounded_by_the_per_try_timeout_and_retried(
    parts: PartsBackend, start: Start
) -> None:
    gw, sleep = await start(parts.url, retry=OPT_IN, per_try="500ms")
    status, body, _ = await post(gw, [{"id": 0}, {"id": 1, "fail": "hang"}])
    assert status == 200, body
    assert body["answers"] == [{"id": 0}, {"id": 1}]
    assert [i for i, _ in parts.received] == [0, 1, 1]
    assert len(sleep.delays) == 1
    assert errors(gw, "timeout") == 1


async def test_a_part_that_could_not_connect_is_always_retried(start: Start) -> None:
    raw = RawBackend(stop_after=0)
    await raw.listen()
    try:
        # Default methods: a POST that never reached the backend may be sent again anyway.
        gw, sleep = await start(raw.url, then=raw.listen)
        status, body, backend = await post(gw, [{"id": 0}, {"id": 1}])
        assert status == 200, body
        assert backend == "new"
        assert body["answers"] == [{"id": 0}, {"id": 1}]
        assert raw.received == [0, 1]
        assert len(sleep.delays) == 1  # the backend listened again during the backoff
        assert errors(gw, "connect") == 1
    finally:
        raw.stop_listening()


async def test_retries_draw_on_the_routes_retry_budget(parts: PartsBackend, start: Start) -> None:
    retry = {**OPT_IN, "budget": {"percent": 0, "min": 0}}
    gw, sleep = await start(parts.url, retry=retry)
    status, body, _ = await post(gw, [{"id": 0}, {"id": 1, "fail": "503"}])
    assert status == 502
    assert body["error"]["failures"][0]["attempts"] == 1
    assert sleep.delays == []
    exhausted = gw.metrics.registry.get_sample_value(
        "cutover_retry_budget_exhausted_total", {"route": "default"}
    )
    assert exhausted == 1


async def test_concurrency_bounds_parts_in_flight_and_keeps_item_order(
    parts: PartsBackend, start: Start
) -> None:
    gw, _ = await start(parts.url, concurrency=4)
    alerts = [{"id": 0}] + [{"id": i, "hold": True} for i in range(1, 11)]
    status, body, _ = await post(gw, alerts)
    assert status == 200, body
    assert body == {"count": 11, "answers": [{"id": i} for i in range(11)]}
    assert 1 < parts.max_in_flight <= 4
    assert parts.received[0][0] == 0  # the first part went alone (the route has a fallback)


async def test_concurrency_one_sends_one_part_at_a_time(parts: PartsBackend, start: Start) -> None:
    gw, _ = await start(parts.url, concurrency=1)
    status, body, _ = await post(gw, [{"id": i, "linger": True} for i in range(5)])
    assert status == 200, body
    assert body["answers"] == [{"id": i} for i in range(5)]
    assert parts.max_in_flight == 1
    assert [i for i, _ in parts.received] == list(range(5))


async def test_a_first_part_that_cannot_connect_sends_the_whole_request_on(
    parts: PartsBackend, start: Start
) -> None:
    gw, sleep = await start(parts.url, retry=OPT_IN, concurrency=4)
    await parts.stop()  # refused connections: nothing was delivered
    status, body, backend = await post(gw, [{"id": i} for i in range(6)])
    assert status == 200
    assert backend == "legacy"
    assert body["path"] == "/ingest"  # the legacy backend got the request as it came
    assert sleep.delays == []  # on to the next backend, not retried on this one


async def test_sending_the_whole_request_on_draws_on_the_retry_budget(
    parts: PartsBackend, start: Start
) -> None:
    """Going on to the next backend replays a failed attempt, as the forwarder's fallbacks:
    with no budget left it is refused, and the client gets the 502."""
    gw, _ = await start(parts.url, retry={**OPT_IN, "budget": {"percent": 0, "min": 0}})
    await parts.stop()
    status, body, backend = await post(gw, [{"id": 0}, {"id": 1}])
    assert status == 502, body
    assert body["error"]["code"] == "upstream_unavailable"
    assert backend == "new"
    exhausted = gw.metrics.registry.get_sample_value(
        "cutover_retry_budget_exhausted_total", {"route": "default"}
    )
    assert exhausted == 1


async def test_an_absolute_form_request_fans_out_like_any_other(
    parts: PartsBackend, start: Start
) -> None:
    # a client with the gateway as its HTTP proxy sends `POST http://host/ingest`
    gw, _ = await start(parts.url)
    alerts = {"alerts": [{"id": 0}, {"id": 1}]}
    async with (
        aiohttp.ClientSession() as s,
        s.post("http://example.test/ingest", json=alerts, proxy=gw.url) as r,
    ):
        assert r.status == 200
        assert await r.json() == {"count": 2, "answers": [{"id": 0}, {"id": 1}]}
    assert [i for i, _ in parts.received] == [0, 1]


async def test_a_part_retry_is_refused_when_the_routes_budget_is_spent(
    parts: PartsBackend, start: Start
) -> None:
    spent = {**OPT_IN, "budget": {"percent": 0, "min": 0}}
    gw, sleep = await start(parts.url, retry=spent)
    status, body, _ = await post(gw, [{"id": 0}, {"id": 1, "fail": "503"}])
    assert status == 502
    assert body["error"]["failures"] == [
        {"index": 1, "status": 503, "answer": {"error": "busy"}, "attempts": 1}
    ]
    assert [i for i, _ in parts.received].count(1) == 1  # not sent again
    assert sleep.delays == []
    refused = gw.metrics.registry.get_sample_value(
        "cutover_retry_budget_exhausted_total", {"route": "default"}
    )
    assert refused == 1
    budget = gw.state.budgets["default"]
    assert (budget.in_flight, budget.replays) == (0, 0)
