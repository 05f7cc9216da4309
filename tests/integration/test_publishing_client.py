"""The delivery engine's client (`publishing.transport.TargetClient` over `proxy.pool`) against
raw receivers on 127.0.0.1: what goes out, how answers of every framing come back, and the
faults (closes, hangs, refusals, malformed bytes, TLS) as outcomes, with nothing left in use."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cutover.core.clock import Clock
from cutover.publishing.transport import SendContext, SendOutcome, TargetClient, post_json
from tests.conftest import wait_for
from tests.integration.publishing_helpers import config, engine, enqueue, make_alert

Writer = asyncio.StreamWriter
Handler = Callable[["Receiver", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One request: its head's first line, its headers (lowercased names) and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *fields = head[:-4].split(b"\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(b":")
        headers[name.decode().lower()] = value.strip().decode("utf-8")
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body


def answer(status: int = 200, body: bytes = b"", *extra: str) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
    return (head + "".join(f"{h}\r\n" for h in extra) + "\r\n").encode() + body


class Receiver:
    """A raw HTTP/1.1 receiver: `handler` serves each connection; requests are recorded."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        self.closed = 0  # connections whose end the receiver saw
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.closed += 1
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
        seen = await read_request(reader)
        self.requests.append(seen)
        return seen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def make(handler: Handler, tls: ssl.SSLContext | None = None) -> Receiver:
        r = Receiver(handler)
        r.server = await asyncio.start_server(r._serve, "127.0.0.1", 0, ssl=tls)
        r.port = r.server.sockets[0].getsockname()[1]
        started.append(r)
        return r

    yield make
    for r in started:
        assert r.server is not None
        r.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(r.server.wait_closed(), 2)


@pytest.fixture
async def client() -> AsyncIterator[TargetClient]:
    c = TargetClient()
    yield c
    assert c.active == 0 and c.busy == 0  # nothing left in use after every test
    await c.close()


def ctx_of(client: TargetClient) -> SendContext:
    async def nothing(*_: object) -> None:
        return None

    return SendContext(
        client=client, clock=Clock(), get_ref=nothing, put_ref=nothing, drop_ref=nothing
    )


async def post(client: TargetClient, url: str, timeout: float = 5.0, **kw: object) -> SendOutcome:
    return await post_json(ctx_of(client), url, {"alert": "x"}, timeout=timeout, **kw)  # type: ignore[arg-type]


async def keep_answering(
    r: Receiver, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    while True:
        await r.request(reader)
        w.write(answer(202, b'{"status":"success"}', "Content-Type: application/json"))


# -- what goes out, and kept-alive connections ----------------------------------------------


async def test_request_bytes_and_keep_alive(receiver, client) -> None:
    r = await receiver(keep_answering)
    url = f"http://user%40x:p%3Ass@127.0.0.1:{r.port}/hook/%2Fa?k=%7e&x=1#frag"
    first = await post(client, url, headers={"X-Key": "v", "content-type": "text/x"})
    second = await post(client, url)
    assert first.ok and first.status == 202 and first.data == {"status": "success"}
    assert second.ok
    assert r.connections == 1  # the second delivery went out on the kept-alive connection
    line, headers, body = r.requests[0]
    assert line == b"POST /hook/%2Fa?k=%7e&x=1 HTTP/1.1"  # as written, fragment dropped
    assert headers["host"] == f"127.0.0.1:{r.port}"
    assert headers["content-type"] == "text/x"  # the sender's, whatever its case
    assert headers["user-agent"] == "cutover-publisher/1"
    assert headers["x-key"] == "v"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"user@x:p:ss").decode()
    assert orjson.loads(body) == {"alert": "x"}
    assert int(headers["content-length"]) == len(body)
    assert r.requests[1][1]["content-type"] == "application/json"


async def test_chunked_answer(receiver, client) -> None:
    async def chunked(r: Receiver, reader, w) -> None:
        while True:
            await r.request(reader)
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await w.drain()
            w.write(b'5\r\n{"ok"\r\n')
            await asyncio.sleep(0.01)
            w.write(b"6\r\n:true}\r\n0\r\n\r\n")

    r = await receiver(chunked)
    out = await post(client, r.url + "/x")
    assert out.ok and out.data == {"ok": True} and out.body == '{"ok":true}'
    assert (await post(client, r.url + "/x")).ok
    assert r.connections == 1


async def test_connection_close_answer(receiver, client) -> None:
    async def close_after(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(answer(200, b"fine", "Connection: close"))
        await w.drain()
        await reader.read()  # the client closes its end

    r = await receiver(close_after)
    assert (await post(client, r.url)).ok
    assert (await post(client, r.url)).ok
    assert r.connections == 2  # not kept after Connection: close


async def test_read_until_close_answer(receiver, client) -> None:
    async def until_close(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await w.drain()
        await asyncio.sleep(0.01)
        w.write(b"part two")
        await w.drain()
        w.close()

    r = await receiver(until_close)
    out = await post(client, r.url)
    assert out.ok and out.body == "part one, part two"


async def test_interim_answers_are_skipped(receiver, client) -> None:
    async def early_hints(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        await w.drain()
        w.write(answer(201, b"made"))
        await reader.read()

    r = await receiver(early_hints)
    out = await post(client, r.url)
    assert out.ok and out.status == 201 and out.body == "made"


async def test_gzip_answer_is_decompressed(receiver, client) -> None:
    packed = gzip.compress(b'{"ok": true, "ts": "1700000000.1"}')

    async def zipped(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(answer(200, packed, "Content-Encoding: gzip"))
        await reader.read()

    r = await receiver(zipped)
    out = await post(client, r.url)
    assert out.ok and out.data == {"ok": True, "ts": "1700000000.1"}
    assert r.requests[0][1]["accept-encoding"] == "gzip, deflate"


async def test_large_answer_kept_bounded(receiver, client) -> None:
    big = b"x" * (200 * 1024)

    async def large(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(answer(200, big))
        await reader.read()

    r = await receiver(large)
    out = await post(client, r.url)
    assert out.ok and out.body == "x" * 500


async def test_retry_after_on_429(receiver, client) -> None:
    async def throttled(r: Receiver, reader, w) -> None:
        while True:
            await r.request(reader)
            w.write(answer(429, b"slow down", "Retry-After: 7"))

    r = await receiver(throttled)
    out = await post(client, r.url)
    assert not out.ok and out.throttled and out.retry and out.retry_after == 7.0
    assert out.status == 429 and out.error == "429 rate limited" and out.body == "slow down"
    assert (await post(client, r.url)).throttled
    assert r.connections == 1  # an answer like any other: the connection is kept


# -- faults ----------------------------------------------------------------------------------


async def test_receiver_closes_mid_answer(receiver, client) -> None:
    async def cut(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await w.drain()

    r = await receiver(cut)
    out = await post(client, r.url)
    assert out == SendOutcome(False, None, retry=True, error="network error (connection closed)")
    assert len(r.requests) == 1  # not sent again: an answer had begun


async def test_receiver_hangs_after_the_head(receiver, client) -> None:
    async def hang(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await w.drain()
        await reader.read()  # until the client gives up on the connection

    r = await receiver(hang)
    out = await post(client, r.url, timeout=0.3)
    assert out == SendOutcome(False, None, retry=True, error="timed out after 0.3s")
    await wait_for(lambda: r.closed == 1)  # aborted, not kept for the next delivery
    await post(client, r.url, timeout=0.3)
    assert r.connections == 2


async def test_timeout_before_the_head(receiver, client) -> None:
    async def silent(r: Receiver, reader, w) -> None:
        await r.request(reader)
        await reader.read()

    r = await receiver(silent)
    loop = asyncio.get_running_loop()
    began = loop.time()
    out = await post(client, r.url, timeout=0.2)
    assert out.error == "timed out after 0.2s" and out.retry
    assert 0.19 <= loop.time() - began < 1.0


async def test_malformed_answer(receiver, client) -> None:
    async def garbage(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()

    r = await receiver(garbage)
    out = await post(client, r.url)
    assert out == SendOutcome(False, None, retry=True, error="network error (malformed answer)")
    assert len(r.requests) == 1


async def test_connection_refused(client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = await post(client, f"http://127.0.0.1:{port}/x")
    assert not out.ok and out.retry and out.status is None
    assert out.error.startswith("connect failed (")
    # the socket's own words: asyncio's loop and uvloop say it differently
    assert "refused" in out.error or f"Connect call failed ('127.0.0.1', {port})" in out.error


async def test_kept_alive_connection_closed_while_idle(receiver, client) -> None:
    """The receiver answers keep-alive, then drops the connection; the next delivery still
    succeeds: the closed connection is noticed at checkout or, when the close crosses the
    request, the request goes once more on a new connection."""

    async def one_per_connection(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(answer(200, b"first"))  # keep-alive by default: no Connection: close
        await w.drain()
        if r.connections == 1:
            await r.request(reader)  # the next request arrives on the idle connection ...
        # ... and is dropped unanswered, as a keep-alive timeout at the receiver does

    r = await receiver(one_per_connection)
    assert (await post(client, r.url)).body == "first"
    second = await post(client, r.url)  # at once: the close crosses this request
    assert second.ok and second.body == "first"
    assert r.connections == 2 and len(r.requests) == 3
    await asyncio.sleep(0.05)  # the receiver closed the second connection meanwhile
    third = await post(client, r.url)
    assert third.ok and r.connections == 3


async def test_reused_connection_cut_mid_answer_is_not_sent_again(receiver, client) -> None:
    """Only a close before any byte of an answer counts as a stale connection: once the
    receiver began answering it had the request, so it is not sent a second time."""

    async def begin_then_drop(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(answer(200, b"first"))
        await w.drain()
        await r.request(reader)
        w.write(b"HTTP/1.1 20")  # part of a status line, then gone

    r = await receiver(begin_then_drop)
    assert (await post(client, r.url)).ok
    out = await post(client, r.url)
    assert out.error == "network error (connection closed)"
    assert len(r.requests) == 2 and r.connections == 1


async def test_new_connection_closed_is_not_sent_again(receiver, client) -> None:
    async def drop(r: Receiver, reader, w) -> None:
        await r.request(reader)

    r = await receiver(drop)
    out = await post(client, r.url)
    assert out.error == "network error (connection closed)"
    assert len(r.requests) == 1  # only a reused connection is retried


async def test_cancelled_delivery_aborts_its_connection(receiver, client) -> None:
    async def silent(r: Receiver, reader, w) -> None:
        await r.request(reader)
        await reader.read()

    r = await receiver(silent)
    task = asyncio.ensure_future(post(client, r.url))
    while not r.requests:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: r.closed == 1)
    assert client.busy == 0 and client.active == 0


async def test_limits_per_origin_and_in_total(receiver) -> None:
    at_once = 0
    most = 0

    async def slow(r: Receiver, reader, w) -> None:
        nonlocal at_once, most
        while True:
            await r.request(reader)
            at_once += 1
            most = max(most, at_once)
            await asyncio.sleep(0.02)
            at_once -= 1
            w.write(answer(200))

    r = await receiver(slow)
    per_origin = TargetClient(per_origin=3)
    try:
        outs = await asyncio.gather(*(post(per_origin, r.url) for _ in range(12)))
        assert all(o.ok for o in outs) and most == 3 and r.connections == 3
        assert per_origin.busy == 0 and per_origin.active == 0
    finally:
        await per_origin.close()
    most = 0
    total = TargetClient(total=2)
    try:
        outs = await asyncio.gather(*(post(total, r.url) for _ in range(8)))
        assert all(o.ok for o in outs) and most == 2
        assert total.busy == 0 and total.active == 0
    finally:
        await total.close()


async def test_closed_client_refuses(receiver) -> None:
    r = await receiver(keep_answering)
    c = TargetClient()
    assert (await post(c, r.url)).ok
    await c.close()
    await wait_for(lambda: r.closed == 1)  # the idle connection was closed
    out = await post(c, r.url)
    assert not out.ok and out.retry and out.error.startswith("network error")


# -- TLS -------------------------------------------------------------------------------------


def tls_receiver_context(ca: trustme.CA, seen: list[str | None]) -> ssl.SSLContext:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server)

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name)

    server.sni_callback = sni  # type: ignore[assignment]
    return server


async def test_tls_self_signed_refused(receiver, client) -> None:
    r = await receiver(keep_answering, tls_receiver_context(trustme.CA(), []))
    out = await post(client, f"https://localhost:{r.port}/x")
    assert not out.ok and out.retry and out.status is None
    assert out.error.startswith("connect failed (") and "CERTIFICATE_VERIFY_FAILED" in out.error
    assert not r.requests


async def test_tls_with_a_trusted_ca(receiver, tmp_path: Path, monkeypatch) -> None:
    """The CA store is the system's, as before (`SSL_CERT_FILE` names another bundle); the
    certificate's name and SNI are the URL's host."""
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    names: list[str | None] = []
    r = await receiver(keep_answering, tls_receiver_context(ca, names))
    c = TargetClient()
    try:
        first = await post(c, f"https://localhost:{r.port}/tls?x=1")
        assert first.ok and first.status == 202
        assert (await post(c, f"https://localhost:{r.port}/tls?x=1")).ok
        assert names == ["localhost"] and r.connections == 1
        line, headers, _ = r.requests[0]
        assert line == b"POST /tls?x=1 HTTP/1.1" and headers["host"] == f"localhost:{r.port}"
        # a name the certificate does not carry is refused, SNI or not
        wrong = await post(c, f"https://127.0.0.1:{r.port}/tls")
        assert wrong.error.startswith("connect failed (") and "CERTIFICATE" in wrong.error
        assert c.busy == 0 and c.active == 0
    finally:
        await c.close()


# -- URL shapes: what the receiver sees, compared with aiohttp's client ---------------------

# RFC 3986: a path and query made of unreserved and sub-delims characters, ":@/?" and escapes.
URI_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_UNRESERVED = "ABCXYZabcxyz0189-._~"
_SUB_DELIMS = "!$&'()*+,;="
_ESCAPES = st.sampled_from(["%20", "%2F", "%2f", "%3A", "%25", "%C3%A9", "%7E", "%3F", "%23"])
_PATH_SEGMENT = st.lists(
    st.one_of(st.sampled_from(list(_UNRESERVED + _SUB_DELIMS + ":@")), _ESCAPES), max_size=8
).map("".join)
_QUERY = st.lists(
    st.one_of(st.sampled_from(list(_UNRESERVED + _SUB_DELIMS + ":@/?")), _ESCAPES), max_size=12
).map("".join)
# Anything a configured URL might hold (no whitespace or control characters: check_url refuses
# them), to compare with what the aiohttp client sent for the same URL.
_ANY = st.text(
    st.characters(
        min_codepoint=0x21,
        max_codepoint=0x2FF,
        blacklist_characters="#?",
        blacklist_categories=("Cc",),
    ),
    max_size=16,
)


def test_url_shapes_on_the_wire() -> None:
    """Valid URI text goes out byte for byte; anything else as aiohttp's client sent it; the
    Host header carries the port unless it is the scheme's default."""
    loop = asyncio.new_event_loop()
    seen: list[tuple[bytes, str]] = []

    async def serve(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                line, headers, _ = await read_request(reader)
                seen.append((line, headers["host"]))
                w.write(answer(204))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    lean = TargetClient()

    async def old_client(url: str) -> tuple[bytes, str]:
        async with aiohttp.ClientSession() as s, s.post(url, data=b"{}") as resp:
            await resp.read()
        return seen[-1]

    async def new_client(url: str) -> tuple[bytes, str]:
        out = await post(lean, url)
        assert out.ok and out.status == 204
        return seen[-1]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        host=st.sampled_from(["127.0.0.1", "localhost", "LocalHost"]),
        segments=st.lists(_PATH_SEGMENT, max_size=4),
        query=st.none() | _QUERY,
        fragment=st.booleans(),
    )
    def valid_as_written(host: str, segments: list[str], query: str | None, fragment: bool) -> None:
        path = "".join("/" + s for s in segments)
        target = (path or "/") + (f"?{query}" if query else "")
        url = f"http://{host}:{port}{path}" + (f"?{query}" if query is not None else "")
        if fragment:
            url += "#frag"
        line, host_header = loop.run_until_complete(new_client(url))
        assert line == f"POST {target} HTTP/1.1".encode()
        assert host_header == f"{host.lower()}:{port}"

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=_ANY, query=st.none() | _ANY)
    def anything_as_aiohttp(path: str, query: str | None) -> None:
        url = f"http://127.0.0.1:{port}/{path}" + (f"?{query}" if query is not None else "")
        try:
            before = loop.run_until_complete(old_client(url))
        except (aiohttp.ClientError, ValueError):
            return
        line, host_header = loop.run_until_complete(new_client(url))
        written = f"/{path}" + (f"?{query}" if query else "")
        if URI_TEXT.fullmatch(written):
            assert line == f"POST {written} HTTP/1.1".encode()  # as written
        else:
            assert line == before[0]  # encoded as the aiohttp client did
        assert host_header == before[1] == f"127.0.0.1:{port}"

    try:
        valid_as_written()
        anything_as_aiohttp()
        assert lean.busy == 0 and lean.active == 0
    finally:
        loop.run_until_complete(lean.close())
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://example.com:80/x", "example.com"),
        ("http://example.com:8080/x", "example.com:8080"),
        ("https://example.com:443/x", "example.com"),
        ("https://example.com:80/x", "example.com:80"),
        ("https://[::1]:8443/x", "[::1]:8443"),
        ("http://Bücher.example/x", "xn--bcher-kva.example"),
    ],
)
def test_host_header_by_port(url: str, host: str) -> None:
    from cutover.publishing.transport import _Target

    assert _Target(url).host_line == f"Host: {host}\r\n".encode()


# -- history deliveries: the backend's own LeanPool ------------------------------------------


async def test_history_delivery_on_the_backends_pool(receiver, gateways, tmp_path: Path) -> None:
    """`backend:<route>` jobs go out on the history backend's LeanPool (the fast path's), with
    the head the aiohttp client sent; a kept-alive connection the backend drops while idle
    does not fail the next delivery, and no connection is left in use."""

    async def history(r: Receiver, reader, w) -> None:
        await r.request(reader)
        w.write(answer(200, b'{"stored":1}'))
        await w.drain()
        if r.connections == 1:
            await r.request(reader)  # dropped unanswered: the keep-alive ran out at the backend

    r = await receiver(history)
    gw = await gateways(config(tmp_path, {"targets": []}, backends={"history": r.url}))
    [first] = await enqueue(gw, make_alert("fp-h1"), ["backend:default"])
    await wait_for(lambda: len(r.requests) == 1)
    await wait_for(lambda: engine(gw).running == 0)
    [second] = await enqueue(gw, make_alert("fp-h2"), ["backend:default"])
    await wait_for(lambda: len(r.requests) == 3)
    await wait_for(lambda: engine(gw).gates["backend:default"].stats.sent == 2)
    stats = engine(gw).gates["backend:default"].stats
    assert stats.failed == 0 and r.connections == 2
    line, headers, body = r.requests[0]
    assert line == b"POST /webhook/ HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{r.port}"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "cutover-publisher/1"
    assert headers["x-request-id"] == f"publish-{first}"
    assert headers["idempotency-key"] == "fp-h1:firing:2026-11-20T10:00:00Z"
    assert orjson.loads(body)["alerts"][0]["fingerprint"] == "fp-h1"
    assert r.requests[2][1]["x-request-id"] == f"publish-{second}"
    pool = gw.state.upstreams["history"].lean
    await wait_for(lambda: pool.busy == 0)


async def test_history_delivery_faults_are_retried(receiver, gateways, tmp_path: Path) -> None:
    """A malformed answer and a cut one are attempt failures (`reset`): the job stays in the
    outbox and a later attempt delivers it."""

    async def flaky(r: Receiver, reader, w) -> None:
        await r.request(reader)
        if len(r.requests) == 1:
            w.write(b"HTTP/1.1 2OO OK\r\n\r\n")
        elif len(r.requests) == 2:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ncut")
        else:
            w.write(answer(200, b"ok"))
        await w.drain()

    r = await receiver(flaky)
    delivery = {"backoff": {"base": "10ms", "cap": "20ms"}, "poll_interval": "50ms"}
    data = config(tmp_path, {"targets": [], "delivery": delivery}, backends={"history": r.url})
    gw = await gateways(data)
    await enqueue(gw, make_alert("fp-flaky"), ["backend:default"])
    await wait_for(lambda: engine(gw).gates.get("backend:default") is not None)
    stats = engine(gw).gates["backend:default"].stats
    await wait_for(lambda: stats.sent == 1, 20)
    assert stats.failed == 2 and len(r.requests) == 3
    assert "reset" in (stats.last_error or "")
    await wait_for(lambda: gw.state.upstreams["history"].lean.busy == 0)


# -- what a header cannot hold ---------------------------------------------------------------


async def test_a_fingerprint_a_header_cannot_hold_is_delivered_with_an_escaped_key(
    receiver, gateways, tmp_path: Path
) -> None:
    """A sender's fingerprint may hold a line break (the intake refuses only NUL and unpaired
    surrogates): the alert is still delivered, to a webhook target and to the history backend,
    its `Idempotency-Key` escaped (`%XX`, `%` too, so two keys never merge) — not retried
    until it is too old, not dead-lettered, and never a header injected."""
    r = await receiver(keep_answering)
    target = {"name": "wh", "type": "webhook", "url": r.url + "/hook"}
    data = config(tmp_path, {"targets": [target]}, backends={"history": r.url})
    gw = await gateways(data)
    await enqueue(gw, make_alert("fp\r\nX-Injected: 1\t%"), ["wh", "backend:default"])
    await wait_for(lambda: len(r.requests) == 2)
    keys = {headers["idempotency-key"] for _, headers, _ in r.requests}
    assert keys == {"fp%0D%0AX-Injected: 1\t%25:firing:2026-11-20T10:00:00Z"}
    assert all("x-injected" not in headers for _, headers, _ in r.requests)
    bodies = [orjson.loads(body) for _, _, body in r.requests]
    assert {b["alerts"][0]["fingerprint"] for b in bodies} == {"fp\r\nX-Injected: 1\t%"}
    for name in ("wh", "backend:default"):
        await wait_for(lambda name=name: engine(gw).gates[name].stats.sent == 1)
        assert engine(gw).gates[name].stats.failed == 0


async def test_a_request_that_cannot_be_written_is_given_up(receiver, client) -> None:
    """A header that cannot be written (a line break in a configured value) would fail every
    retry: it is given up at once, with the reason, and nothing is sent."""
    r = await receiver(keep_answering)
    out = await post(client, r.url + "/hook", headers={"X-Team": "a\r\nb"})
    assert not out.ok and not out.retry and out.status is None
    assert out.error.startswith("invalid request (") and "line break" in out.error
    assert r.requests == [] and r.connections == 0
