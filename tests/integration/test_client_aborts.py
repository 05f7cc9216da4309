"""A client that goes away at any moment of its request leaves nothing held behind.

Whatever the phase the client closes its connection in — while the gateway connects to the
backend, waits for its head, streams the answer down or the body up, replays on a fallback,
sends a compat fan-out part, upgrades to a WebSocket — the exchange ends: the upstream
connection is cut, and every in-flight count (retry budget, concurrency cap, pool leases,
in-flight gauge) is back to zero (`tests.quiescence`). Both listener paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from cutover.proxy import forwarder
from cutover.proxy.server import Gateway
from tests.conftest import gateway_config, wait_for
from tests.integration.fault_helpers import Blackhole, FaultBackend, refused_url
from tests.quiescence import assert_quiescent

# Every test runs on both listener paths: proxy.fastpath and aiohttp alone.
pytestmark = pytest.mark.usefixtures("serving_path")


@pytest.fixture
async def faulty() -> AsyncIterator[Callable[[], Awaitable[FaultBackend]]]:
    started: list[FaultBackend] = []

    async def make() -> FaultBackend:
        backend = await FaultBackend().start()
        started.append(backend)
        return backend

    yield make
    for backend in started:
        await backend.stop()


def port_of(gw: Gateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def no_checks(data: dict[str, Any]) -> dict[str, Any]:
    """Active health checks off: only the requests under test touch the backends."""
    for backend in data["backends"].values():
        backend["health"] = "off"
    return data


class Client:
    """A raw client connection to the gateway, which goes away when the test says so."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, gw: Gateway) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port_of(gw)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> bytes:
        """The answer's head, and at least one byte of its body."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.wait_for(self.reader.readexactly(1), 10)
        return head

    def leave(self, how: str = "close") -> None:
        """Go away: `close` (FIN, as a client that gives up) or `reset` (RST)."""
        if how == "reset":
            self.writer.transport.abort()
        else:
            self.writer.close()


async def gone_after(
    gw: Gateway, raw: bytes, until: Callable[[], Awaitable[None]], how: str = "close"
) -> None:
    """A client sends `raw`, waits for `until()`, then goes away."""
    client = await Client.connect(gw)
    try:
        await client.send(raw)
        await until()
    finally:
        client.leave(how)


async def in_flight(gw: Gateway, *pools: str) -> None:
    """Until the gateway holds one request, and (if named) a connection of one of `pools`."""

    def holding() -> bool:
        if gw.in_flight != 1:
            return False
        if not pools:
            return True
        upstreams = gw.state.upstreams
        return any(
            upstreams[n].lean.busy or upstreams[n].session.connector._acquired  # type: ignore[union-attr]
            for n in pools
        )

    await wait_for(holding)


async def ok(gw: Gateway, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(gw.url + path) as r:
        await r.read()
        return r.status, r.headers.get("X-Cutover-Backend", "")


def budget_exhausted(gw: Gateway) -> float:
    value = gw.metrics.registry.get_sample_value(
        "cutover_retry_budget_exhausted_total", {"route": "default"}
    )
    return value or 0.0


# -- issue 13 item 1: a replay cut short by its client returns its retry-budget slot ----------


async def test_fallback_keeps_working_after_clients_abort_during_replays(faulty, gateway) -> None:
    """`split: {dead: 100}, fallback: [slow]`: three clients give up while `slow` hangs on
    their fallback attempt; once `slow` answers again, plain requests all fall back and get
    200 (each aborted replay used to keep its budget slot: after `budget.min` of them the
    route refused every fallback until a reload)."""
    slow = await faulty()
    data = gateway_config(
        {"dead": refused_url(), "slow": slow.url},
        route={"split": {"dead": 100}, "fallback": ["slow"]},
    )
    # Never eject `dead`: a request must reach the replay every time, as between two checks.
    data["backends"]["dead"]["outlier"] = {"consecutive_failures": 1000}
    gw = await gateway(no_checks(data))

    for n in range(1, 4):  # default budget: min 3 replays in flight
        request = b"GET /hang/%d HTTP/1.1\r\nHost: a\r\n\r\n" % n
        await gone_after(gw, request, lambda n=n: slow.arrived(n))
    await wait_for(lambda: slow.cut == 3)  # each fallback attempt was cut with its client
    await assert_quiescent(gw)

    slow.release.set()  # `slow` answers again
    answers = [await ok(gw, f"/hang/after-{i}") for i in range(5)]
    assert answers == [(200, "slow")] * 5
    assert budget_exhausted(gw) == 0
    await assert_quiescent(gw)


# -- issue 13: a client that goes away, at every phase -------------------------------------


async def test_client_gone_while_the_gateway_connects(gateway) -> None:
    hole = Blackhole()  # connects hang
    try:
        data = gateway_config({"hole": hole.url}, route={"connect_timeout": "30s"})
        gw = await gateway(no_checks(data))
        await gone_after(gw, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", lambda: in_flight(gw, "hole"))
        await assert_quiescent(gw)
    finally:
        hole.close()


async def warm(gw: Gateway, lane: str) -> None:
    """`pooled`: leave an idle kept-alive connection to the backend (the fast path's quick
    lane takes it, without a task); `new`: none, a connection is opened for the request."""
    if lane == "pooled":
        assert await ok(gw, "/warm") == (200, "slow")


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("lane", ["new", "pooled"])
async def test_client_gone_while_the_backend_has_not_answered(faulty, gateway, lane, how) -> None:
    slow = await faulty()
    gw = await gateway(no_checks(gateway_config({"slow": slow.url})))
    await warm(gw, lane)
    before = len(slow.requests)
    await gone_after(
        gw, b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n", lambda: slow.arrived(before + 1), how
    )
    await wait_for(lambda: slow.cut == 1)  # the upstream exchange was cut with the client
    await assert_quiescent(gw)


@pytest.mark.parametrize("lane", ["new", "pooled"])
async def test_client_gone_while_the_answer_streams_down(faulty, gateway, lane) -> None:
    slow = await faulty()
    gw = await gateway(no_checks(gateway_config({"slow": slow.url})))
    await warm(gw, lane)
    client = await Client.connect(gw)
    try:
        await client.send(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await client.head()).startswith(b"HTTP/1.1 200")
    finally:
        client.leave()
    await wait_for(lambda: slow.cut == 1)
    await assert_quiescent(gw)


@pytest.mark.parametrize("size", [4 << 20, 512 << 10], ids=["streamed", "buffered"])
async def test_client_gone_while_its_body_goes_up(faulty, gateway, size) -> None:
    """A body over `retry.buffer` streams to the backend as it comes; a smaller one is read
    whole first. The client sends a part of it, then goes away."""
    slow = await faulty()
    gw = await gateway(no_checks(gateway_config({"slow": slow.url})))
    client = await Client.connect(gw)
    try:
        await client.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        await client.send(b"u" * (256 << 10))
        if size > 1 << 20:
            await wait_for(lambda: slow.body_bytes > 0)  # on its way to the backend
        else:
            await in_flight(gw)  # being read by the gateway
    finally:
        client.leave()
    if size > 1 << 20:
        await wait_for(lambda: slow.cut == 1)
    await assert_quiescent(gw)
    assert slow.body_bytes < size


@pytest.mark.parametrize("primary", ["refused", "503"])
async def test_client_gone_during_a_replay(faulty, gateway, primary) -> None:
    """The fallback attempt holds a replay of the retry budget when its client goes away:
    after a refused connection, or after a 503 (which the fast path's quick lane hands to a
    task along with the answer)."""
    slow = await faulty()
    first_url = refused_url()
    if primary == "503":
        busy = await faulty()
        busy.fail_first = 1000
        first_url = busy.url
    data = gateway_config(
        {"first": first_url, "slow": slow.url},
        route={"split": {"first": 100}, "fallback": ["slow"]},
    )
    gw = await gateway(no_checks(data))
    if primary == "503":  # a kept-alive connection to `first`: the quick lane's way
        assert await ok(gw, "/warm") == (200, "slow")
    before = len(slow.requests)
    await gone_after(gw, b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n", lambda: slow.arrived(before + 1))
    await wait_for(lambda: slow.cut == 1)
    await assert_quiescent(gw)


@pytest.mark.parametrize("phase", ["first-try", "backoff", "retry", "next-backend"])
async def test_client_gone_during_a_fan_out_part(faulty, gateway, tmp_path, phase):
    """A compat fan-out sends one request per item; the client goes away while a part waits
    for its answer on its first try, or after a 503, in the backoff before its retry or during
    the retry (both hold a replay of the route's retry budget); or, when the first part could
    not connect, while the whole request waits on the next backend (a replay too)."""
    slow = await faulty()
    legacy = await faulty()
    new_url = slow.url
    route: dict[str, Any] = {"fallback": ["legacy"]}
    if phase in ("backoff", "retry"):
        slow.fail_first = 1  # the first part's first try gets a 503
        route["retry"] = {"attempts": 2, "methods": ["GET", "HEAD", "POST"]}
    if phase == "next-backend":
        new_url = refused_url()
        slow = legacy
        slow.hold_all = True
    data = gateway_config(
        {"new": new_url, "legacy": legacy.url},
        route=route,
        storage=f"sqlite:///{tmp_path}/state.db",
    )
    data["compat"] = {
        "backends": {"new": "new", "legacy": "legacy"},
        "rules": [
            {
                "name": "ingest",
                "match": {"method": "POST", "path": "/ingest"},
                "fan_out": {"applies_to": "new", "items": "alerts", "path": "/hang/one"},
            }
        ],
    }
    gw = await gateway(no_checks(data))
    sleeping = asyncio.Event()
    if phase == "backoff":
        assert gw.compat is not None

        async def endless(delay: float) -> None:
            sleeping.set()
            await asyncio.Event().wait()

        gw.compat.sleep = endless
    body = b'{"alerts": [{"id": 0}, {"id": 1}, {"id": 2}]}'
    raw = b"POST /ingest HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
    raw += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    until = {
        "first-try": lambda: slow.arrived(1),
        "backoff": lambda: wait_for(sleeping.is_set),
        "retry": lambda: slow.arrived(2),
        "next-backend": lambda: slow.arrived(1),
    }[phase]
    await gone_after(gw, raw, until)
    if phase != "backoff":
        await wait_for(lambda: slow.cut == 1)
    await assert_quiescent(gw)
    if phase != "next-backend":
        assert legacy.requests == []


WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def ws_request(path: bytes, key: bytes = WS_KEY) -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


async def test_client_gone_during_a_websocket_upgrade(faulty, gateway) -> None:
    slow = await faulty()  # answers the upgrade only once released
    gw = await gateway(no_checks(gateway_config({"slow": slow.url})))
    await gone_after(gw, ws_request(b"/ws"), lambda: slow.arrived(1))
    await wait_for(lambda: slow.cut == 1)
    await assert_quiescent(gw)


async def test_client_gone_from_an_open_websocket_session(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(no_checks(gateway_config({"go": go.url})))
    client = await Client.connect(gw)
    try:
        await client.send(ws_request(b"/ws"))
        head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        await client.send(b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"ab", strict=True)))
        frame = await asyncio.wait_for(client.reader.readexactly(2), 10)
        assert frame[0] == 0x81  # the backend's text answer came through
    finally:
        client.leave("reset")
    await assert_quiescent(gw)


async def test_a_websocket_the_backend_accepted_but_the_gateway_cannot(
    faulty, gateway, monkeypatch
) -> None:
    """The client's handshake is invalid (its key is not 16 bytes of base64), which only the
    gateway checks: the upgrade is refused with a 400 and the upstream session, open already,
    is closed rather than left behind."""
    # This backend never answers a close frame: the close gives up after 0.5 s, not 5 s.
    monkeypatch.setattr(forwarder, "_WS_TIMEOUT", aiohttp.ClientWSTimeout(ws_close=0.5))
    ready = await faulty()
    ready.release.set()  # answers 101 at once
    gw = await gateway(no_checks(gateway_config({"ready": ready.url})))
    client = await Client.connect(gw)
    try:
        await client.send(ws_request(b"/ws", key=b"short"))
        head = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        client.leave()
    assert head.startswith(b"HTTP/1.1 400")
    await wait_for(lambda: ready.open == 0)  # the upstream session was closed
    await assert_quiescent(gw)


async def test_client_gone_while_waiting_for_a_free_backend_connection(faulty, gateway) -> None:
    """The backend's pool is full (`max_connections: 1`, held by a hanging request): a second
    request waits for a connection when its client goes away."""
    slow = await faulty()
    data = no_checks(gateway_config({"slow": slow.url}))
    data["backends"]["slow"]["pool"] = {"max_connections": 1}
    gw = await gateway(data)
    first = asyncio.ensure_future(ok(gw, "/hang/first"))
    await slow.arrived(1)
    await gone_after(gw, b"GET /hang/second HTTP/1.1\r\nHost: a\r\n\r\n", lambda: waiting(gw))
    slow.release.set()
    assert await first == (200, "slow")
    await assert_quiescent(gw)
    assert slow.requests == ["/hang/first"]  # the second never reached the backend


async def waiting(gw: Gateway) -> None:
    """Until two requests are in flight, one of them waiting for a backend connection."""
    upstream = gw.state.upstreams["slow"]
    connector = upstream.session.connector
    assert connector is not None

    def queued() -> bool:
        return gw.in_flight == 2 and (upstream.lean.waiting == 1 or bool(connector._waiters))

    await wait_for(queued)


class HeldAnswer:
    """A backend that answers its first request at once (so a kept-alive connection to it is
    pooled) and holds every later one until the test writes the answer itself."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.url = ""
        self.served = 0

    async def start(self) -> HeldAnswer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                self.served += 1
                if self.served == 1:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:
                    self.writers.append(writer)

    def answer(self, data: bytes) -> None:
        self.writers[-1].write(data)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()


async def test_client_gone_in_the_loop_turn_its_answer_comes(backends, gateway) -> None:
    """The client's EOF and the backend's 503 are read in the same loop turn, the EOF first.
    On the fast path the 503 (a possible replay) hands the exchange to a task that the lost
    connection cancels before it ever ran: the exchange still ends, and the backend
    connection it was handed is cut."""
    held = await HeldAnswer().start()
    try:
        other = await backends("other")
        data = gateway_config(
            {"held": held.url, "other": other.url},
            route={"split": {"held": 100}, "fallback": ["other"]},
        )
        gw = await gateway(no_checks(data))
        assert (await ok(gw, "/warm"))[0] == 200  # a pooled connection to `held`
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port_of(gw)))
            await loop.sock_sendall(sock, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            await wait_for(lambda: len(held.writers) == 1)
            sock.shutdown(socket.SHUT_WR)  # the client is gone ...
            held.answer(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            await assert_quiescent(gw)  # ... and its answer came in the same turn
    finally:
        await held.stop()
