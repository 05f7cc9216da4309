"""The fast path's own concerns: what it hands to aiohttp, pipelining, reuse, observers.

The core's behaviour tests (test_forwarding, test_framing, test_process) run on both listener
paths; these cover what only exists because there are two.
"""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import pytest

from cutover.proxy.host import RequestRecord
from cutover.proxy.server import Gateway
from tests.conftest import gateway_config, wait_for


async def exchange(port: int, raw: bytes, until: int, timeout: float = 10.0) -> bytes:
    """Send `raw` on one connection; read until `until` responses' worth of heads came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while data.count(b"HTTP/1.") < until or not _complete(data, until):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
    finally:
        writer.close()
    return data


def _complete(data: bytes, count: int) -> bool:
    """True when `count` responses with Content-Length bodies are all in `data`."""
    rest = data
    for _ in range(count):
        head, sep, body = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return False
        rest = body[length:]
    return True


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    rest = data
    while rest:
        head, _, body = rest.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, body[:length]))
        rest = body[length:]
    return out


def port_of(gw: Gateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


async def test_own_endpoints_are_answered_through_the_fast_listener(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    assert gw._fast is not None  # the default listener is the fast path
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with s.get(gw.url + path) as r:
                assert r.status == 200, path
        async with s.get(gw.url + "/healthz") as r:
            assert await r.json() == {"status": "ok"}
    assert go.hits == 0  # none of them was proxied


async def test_one_connection_moves_to_aiohttp_and_keeps_serving(backends, gateway) -> None:
    """Proxied, then an own endpoint (the handoff), then proxied again: all on one socket."""
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    raw = (
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /third HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /fourth HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    got = responses(await exchange(port_of(gw), raw, until=4))
    assert [status for status, _, _ in got] == [200, 200, 200, 200]
    first, health, third, fourth = (json.loads(body) for _, _, body in got)
    assert first["path"] == "/first" and health == {"status": "ok"}
    assert third["path"] == "/third" and third["body_bytes"] == 5
    assert fourth["path"] == "/fourth"
    assert go.hits == 3


async def test_pipelined_requests_are_answered_in_order(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    raw = b"".join(
        f"GET /p{i}?delay={0.05 * (3 - i):.2f} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        for i in range(3)
    )
    got = responses(await exchange(port_of(gw), raw, until=3))
    assert [json.loads(body)["path"].split("?")[0] for _, _, body in got] == ["/p0", "/p1", "/p2"]


async def test_chunked_body_split_across_reads_then_handoff(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"lo\r\n0\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b'"body_bytes":5' in rest
    assert b'"routes"' in rest  # /readyz answered, by aiohttp


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_http10_and_expect_continue_go_to_aiohttp(backends, gateway, version) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    if version == b"1.0":
        raw = b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n"
    else:
        raw = b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(raw)
        await writer.drain()
        if version == b"1.1":
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert interim.startswith(b"HTTP/1.1 100")
            writer.write(b"abc")
            await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b" 200 " in head.split(b"\r\n")[0]
    finally:
        writer.close()
    await wait_for(lambda: go.hits == 1)


async def test_head_answer_leaves_the_backend_connection_reusable(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession() as s:
        async with s.head(gw.url + "/big/1000") as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == "1000"
            assert await r.read() == b""
        for _ in range(3):
            async with s.get(gw.url + "/big/1000") as r:
                assert len(await r.read()) == 1000
    pool = gw.state.upstreams["go"].lean
    assert pool.open == 1  # the HEAD's connection served every later request


async def test_backend_closing_its_connection_is_not_reused(gateway) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway(
            {
                "listen": "127.0.0.1:0",
                "admin": "off",
                "access_log": {"enabled": False},
                "backends": {"one": {"url": f"http://127.0.0.1:{port}", "health": "off"}},
                "routes": [{"name": "all", "split": {"one": 100}}],
            }
        )
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.get(gw.url + "/x") as r:
                    assert r.status == 200 and await r.read() == b"ok"
                    assert "close" not in r.headers.get("Connection", "")  # client keeps its own
        assert gw.state.upstreams["one"].lean.open == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_streamed_upload_above_the_replay_buffer(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(
        gateway_config({"go": go.url}, route={"retry": {"buffer": "64KiB"}})  # streamed
    )
    size = 3 * 1024 * 1024
    body = io.BytesIO(b"q" * size)
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/up", data=body) as r:
        assert r.status == 200
        assert (await r.json())["body_bytes"] == size


async def test_config_switch_sends_every_request_to_aiohttp(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    general = 0
    proxy = gw._proxy

    async def counted(request):  # type: ignore[no-untyped-def]
        nonlocal general
        general += 1
        return await proxy(request)

    gw._proxy = counted  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/a") as r:
            assert r.status == 200
        assert general == 0
        config = gw.config.__class__(**{**_fields(gw.config), "fast_path": False})
        await gw.reload(config)
        async with aiohttp.ClientSession() as s2, s2.get(gw.url + "/b") as r:
            assert r.status == 200
        assert general == 1


def _fields(config: object) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__slots__}  # type: ignore[attr-defined]


async def test_compat_matched_requests_take_the_general_path(backends, gateway) -> None:
    """A compat rule's match sends the request to aiohttp (compat works on aiohttp objects)."""
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    general: list[str] = []
    proxy = gw._proxy

    async def counted(request):  # type: ignore[no-untyped-def]
        general.append(request.path)
        return await proxy(request)

    class Rules:
        def match(self, method, path, query, headers):  # type: ignore[no-untyped-def]
            return object() if path.startswith("/legacy") and headers.get("X-Old") else None

    class Compat:
        ruleset = Rules()

        def match(self, request):  # type: ignore[no-untyped-def]
            return None  # (the general path then proxies it as usual)

    gw._proxy = counted  # type: ignore[method-assign]
    gw.compat = Compat()  # type: ignore[assignment]
    # (a connection handed to aiohttp stays there: one connection per request here)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        for path, headers in (("/legacy/x", {"X-Old": "1"}), ("/legacy/y", {}), ("/new", {})):
            async with s.get(gw.url + path, headers=headers) as r:
                assert r.status == 200
    assert general == ["/legacy/x"]


@pytest.mark.usefixtures("serving_path")
async def test_observers_see_every_request_with_its_failures(backends, gateway) -> None:
    py = await backends("python")
    gw = await gateway(
        gateway_config(
            {"go": "http://127.0.0.1:1", "python": py.url},
            route={"fallback": ["python"]},
        )
    )
    records: list[RequestRecord] = []
    gw.observers.append(records.append)
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/seen?x=1") as r:
            assert r.status == 200
        async with s.get(gw.url + "/big/300000") as r:  # streamed back (task lane)
            assert len(await r.read()) == 300000
    gw2 = await gateway(gateway_config({"dead": "http://127.0.0.1:1"}))
    gw2.observers.append(records.append)
    async with aiohttp.ClientSession() as s, s.get(gw2.url + "/nothing") as r:
        assert r.status == 502
    first, second, third = records
    assert (first.route, first.primary, first.backend, first.status) == (
        "default", "go", "python", 200,
    )  # fmt: skip
    assert first.failures == (("go", "connect"),)
    assert (first.method, first.path) == ("GET", "/seen")
    assert second.backend == "python" and second.path == "/big/300000"
    assert (third.status, third.backend, third.failures) == (502, "dead", (("dead", "connect"),))
    assert first.duration >= 0 and third.duration >= 0


@pytest.mark.usefixtures("serving_path")
async def test_idle_keepalive_connections_are_closed(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, limits={"keepalive_timeout": "300ms"}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(b"GET /k HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        ((_, headers, _),) = responses(head)
        await reader.readexactly(int(headers["content-length"]))
        rest = await asyncio.wait_for(reader.read(), 10)  # the gateway closes the idle socket
    finally:
        writer.close()
    assert rest == b""


class _StreamingBackend:
    """A raw backend: `/warm` answers at once (it fills the gateway's pool, so that the next
    request takes the quick lane); the others send a head and then their body in pieces."""

    BIG = 8 * 1024 * 1024

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> _StreamingBackend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if not await self._answer(path, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, path: bytes, writer: asyncio.StreamWriter) -> bool:
        if path == b"/warm":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        elif path == b"/chunks":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(5):
                await writer.drain()
                await asyncio.sleep(0.02)
                part = b"part%d;" % i
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            writer.write(b"0\r\n\r\n")
        elif path == b"/big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.BIG)
            piece = b"b" * 65536
            for _ in range(self.BIG // len(piece)):
                writer.write(piece)
                await writer.drain()
        elif path in (b"/reset", b"/quiet"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(0.05)
            if path == b"/reset":
                writer.transport.abort()
                return False
            await asyncio.sleep(30)  # goes quiet; the gateway's idle timeout cuts it
            return False
        await writer.drain()
        return True


@pytest.fixture
async def streaming_backend():
    backend = await _StreamingBackend().start()
    yield backend
    await backend.close()


def _streaming_config(port: int) -> dict:
    return {
        "listen": "127.0.0.1:0",
        "admin": "off",
        "access_log": {"enabled": False},
        "backends": {"one": {"url": f"http://127.0.0.1:{port}", "health": "off"}},
        "routes": [{"name": "all", "split": {"one": 100}, "timeout": "1s"}],
    }


async def _warm(s: aiohttp.ClientSession, gw: Gateway) -> None:
    async with s.get(gw.url + "/warm") as r:
        assert await r.read() == b"ok"
    assert gw.state.upstreams["one"].lean._idle  # the next request finds an idle connection


async def test_quick_lane_streams_an_answer_that_arrives_in_pieces(
    streaming_backend, gateway
) -> None:
    gw = await gateway(_streaming_config(streaming_backend.port))
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # the connection goes back to the pool after each streamed answer
            await _warm(s, gw)
            async with s.get(gw.url + "/chunks") as r:
                assert r.status == 200
                assert r.headers["Transfer-Encoding"] == "chunked"
                assert await r.read() == b"part0;part1;part2;part3;part4;"
    assert gw.state.upstreams["one"].lean.open == 1  # one backend connection served them all


async def test_quick_lane_streams_to_a_slow_reader_without_losing_a_byte(
    streaming_backend, gateway
) -> None:
    gw = await gateway(_streaming_config(streaming_backend.port))
    async with aiohttp.ClientSession(read_bufsize=2**16) as s:
        await _warm(s, gw)
        peak = 0
        async with s.get(gw.url + "/big") as r:
            got = 0
            async for piece in r.content.iter_chunked(65536):
                assert piece == b"b" * len(piece)
                got += len(piece)
                if got < 2 * 1024 * 1024:
                    await asyncio.sleep(0.005)  # slower than the backend: backpressure
                    buffered = [c.transport.get_write_buffer_size() for c in gw._fast.conns]
                    peak = max(peak, *buffered, 0)
        assert got == _StreamingBackend.BIG
        # the backend is not read faster than the client takes it: the gateway holds little
        assert peak < 2 * 1024 * 1024, peak
        await _warm(s, gw)  # and the backend connection is clean for the next request


@pytest.mark.parametrize("path", ["/reset", "/quiet"])
async def test_quick_lane_cuts_the_client_when_the_backend_fails_mid_answer(
    streaming_backend, gateway, path
) -> None:
    gw = await gateway(_streaming_config(streaming_backend.port))
    async with aiohttp.ClientSession() as s:
        await _warm(s, gw)
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(gw.url + path) as r:
                assert r.status == 200  # the head went out before the failure
                await r.read()
        await wait_for(lambda: gw.in_flight == 0)
        # the gateway goes on serving
        await _warm(s, gw)
    errors = gw.metrics.upstream_errors.labels("one", "reset")._value.get()
    assert errors >= 1
