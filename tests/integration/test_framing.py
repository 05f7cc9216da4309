"""The raw-socket catalogue: request lines, targets, versions and framing (RFC 9112), sent as bytes.

Every vector goes to a real gateway in front of a real backend, on both listener paths (the fast
path and aiohttp alone), and asserts: the answers in order (the same on both paths, unless the
vector says where they differ on purpose), that the connection is closed after them (the header
timeout is a minute, the read deadline ten seconds: an answer "at once" is not the header
timeout's), no 500 and nothing logged at ERROR, exactly the request targets that reached the
backend (none for a malformed request), and that the gateway serves the next connection. What
nginx 1.22 does differently, and why, is in docs/fastpath.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import pytest

from tests.conftest import gateway_config, wait_for
from tests.integration.wire_helpers import exchange

# Every test runs on both listener paths: proxy.fastpath and aiohttp alone.
pytestmark = pytest.mark.usefixtures("serving_path")

CLOSE = b"Connection: close\r\n"


@dataclass(frozen=True)
class Vector:
    raw: bytes
    statuses: tuple[int, ...]  # the answers in order; () = closed without one
    reached: tuple[str, ...] = ()  # request targets the backend saw, as it saw them
    host: str | None = None  # the Host (and X-Forwarded-Host) the backend saw
    contains: bytes = b""  # in the answer's bytes
    eof: bool = False  # the client half-closes after sending
    fast: tuple[tuple[int, ...], tuple[str, ...]] | None = None  # where the fast path differs

    def expected(self, path: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
        if path == "fast" and self.fast is not None:
            return self.fast
        return self.statuses, self.reached


def get(target: bytes, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + target + b" " + version + b"\r\n" + b"".join(headers) + b"\r\n"


def post(framing: bytes, body: bytes, target: bytes = b"/") -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\nHost: a\r\n" + CLOSE + framing + b"\r\n" + body


HOST = b"Host: a\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"

SERVED = {
    "origin_form": Vector(get(b"/c?q=1", HOST, CLOSE), (200,), ("/c?q=1",)),
    # absolute-form (RFC 9112 §3.2.2): forwarded as origin-form, its authority is the Host
    "absolute_form": Vector(
        get(b"http://example.test/c?q=1", b"Host: example.test\r\n", CLOSE),
        (200,),
        ("/c?q=1",),
        host="example.test",
    ),
    "absolute_form_authority_wins_over_host": Vector(
        get(b"http://example.test/c", b"Host: other.test\r\n", CLOSE),
        (200,),
        ("/c",),
        host="example.test",
    ),
    "absolute_form_empty_path": Vector(
        get(b"http://example.test", HOST, CLOSE), (200,), ("/",), host="example.test"
    ),
    "absolute_form_https_uppercase": Vector(
        get(b"HTTPS://Example.Test:8443/c", HOST, CLOSE),
        (200,),
        ("/c",),
        host="Example.Test:8443",
    ),
    "absolute_form_with_body": Vector(
        b"POST http://example.test/up HTTP/1.1\r\nHost: a\r\n"
        + CLOSE
        + b"Content-Length: 5\r\n\r\nhello",
        (200,),
        ("/up",),
        host="example.test",
        contains=b'"body_bytes":5',
    ),
    "http10_without_host": Vector(get(b"/c", version=b"HTTP/1.0"), (200,), ("/c",)),
    # dot-segments are forwarded as sent; routing sees them resolved (test_targets.py)
    "dot_segments": Vector(get(b"/a/../c", HOST, CLOSE), (200,), ("/a/../c",)),
    "pct_dot_segments": Vector(get(b"/a/%2e%2E/c", HOST, CLOSE), (200,), ("/a/%2e%2E/c",)),
    "dot_in_a_name": Vector(get(b"/.well-known/x", HOST, CLOSE), (200,), ("/.well-known/x",)),
    "encoded_slash_without_dots": Vector(get(b"/a%2Fb", HOST, CLOSE), (200,), ("/a%2Fb",)),
    "chunk_extension": Vector(
        post(CHUNKED, b"3;name=value\r\nabc\r\n0\r\n\r\n"),
        (200,),
        ("/",),
        contains=b'"body_bytes":3',
    ),
    "chunked_any_case": Vector(
        post(b"Transfer-Encoding: Chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), (200,), ("/",)
    ),
    "expect_100_continue": Vector(
        post(b"Content-Length: 3\r\nExpect: 100-continue\r\n", b"abc"), (100, 200), ("/",)
    ),
    "body_that_looks_like_a_request": Vector(
        post(b"Content-Length: 35\r\n", b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
        (200,),
        ("/",),
        contains=b'"body_bytes":35',
    ),
}

REFUSED = {
    # Host (RFC 9112 §3.2): one, valid, required in HTTP/1.1
    "missing_host": Vector(get(b"/c", CLOSE), (400,)),
    "two_hosts": Vector(get(b"/c", HOST, b"Host: b\r\n"), (400,)),
    "host_with_a_space": Vector(get(b"/c", b"Host: a b\r\n"), (400,)),
    "host_port_out_of_range": Vector(get(b"/c", b"Host: a:65536\r\n"), (400,)),
    "absolute_form_without_host": Vector(get(b"http://example.test/c"), (400,)),
    "absolute_form_two_hosts": Vector(get(b"http://example.test/c", HOST, b"Host: b\r\n"), (400,)),
    "absolute_form_userinfo": Vector(get(b"http://u:p@example.test/c", HOST), (400,)),
    "absolute_form_other_scheme": Vector(get(b"ftp://example.test/c", HOST), (400,)),
    "absolute_form_port_out_of_range": Vector(get(b"http://example.test:70000/c", HOST), (400,)),
    # targets the gateway does not serve
    "authority_form": Vector(get(b"example.test:80", HOST), (400,)),
    "asterisk_form": Vector(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", (400,)),
    "asterisk_with_get": Vector(get(b"*", HOST), (400,)),
    "connect": Vector(
        b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
        (405,),
        contains=b"Allow: GET",
    ),
    "fragment": Vector(get(b"/c#frag", HOST), (400,)),
    "dot_segments_above_root": Vector(get(b"/../etc/passwd", HOST), (400,)),
    "pct_dot_segments_above_root": Vector(get(b"/a/%2e%2e/%2E%2E/etc", HOST), (400,)),
    "dots_beside_encoded_slash": Vector(get(b"/a%2F..%2F..%2Fetc", HOST), (400,)),
    "dot_dot_after_encoded_slash": Vector(get(b"/a%2Fb/../c", HOST), (400,)),
    "non_ascii_target": Vector(get("/é".encode(), HOST), (400,)),
    # versions
    "http_2_0": Vector(get(b"/c", HOST, version=b"HTTP/2.0"), (505,)),
    "http_0_9": Vector(b"GET /\r\n", (400,)),
    "http_0_9_then_blank_line": Vector(b"GET /\r\n\r\n", (400,)),
    "http_0_9_written_out": Vector(get(b"/c", version=b"HTTP/0.9"), (400,)),
    "http_1_2": Vector(get(b"/c", HOST, version=b"HTTP/1.2"), (400,)),
    "http_3_0": Vector(get(b"/c", HOST, version=b"HTTP/3.0"), (400,)),
    "not_http": Vector(get(b"/c", HOST, version=b"FTP/1.1"), (400,)),
    # request line and fields
    "lowercase_method": Vector(b"get /c HTTP/1.1\r\nHost: a\r\n\r\n", (400,)),
    "space_in_target": Vector(get(b"/a b", HOST), (400,)),
    "overlong_request_line": Vector(get(b"/" + b"a" * 9000, HOST), (431,)),
    "overlong_field": Vector(get(b"/c", HOST, b"X-A: " + b"a" * 9000 + b"\r\n"), (431,)),
    "nul_in_request_line": Vector(get(b"/a\x00b", HOST), (400,)),
    "nul_in_field": Vector(get(b"/c", HOST, b"X-A: b\x00c\r\n"), (400,)),
    "bare_cr_in_request_line": Vector(get(b"/a\rb", HOST), (400,)),
    "bare_cr_in_field": Vector(get(b"/c", HOST, b"X-A: b\rc\r\n"), (400,)),
    "bare_lf_line_ends": Vector(b"GET /c HTTP/1.1\nHost: a\n\n", (400,)),
    "bare_lf_in_field": Vector(get(b"/c", HOST, b"X-A: b\nX-B: c\r\n"), (400,)),
    "obs_fold": Vector(get(b"/c", HOST, b"X-A: b\r\n c\r\n"), (400,)),
    "space_before_colon": Vector(post(b"Content-Length : 3\r\n", b"abc"), (400,)),
    "tab_before_colon": Vector(get(b"/c", HOST, b"X-A\t: b\r\n"), (400,)),
    "empty_field_name": Vector(get(b"/c", HOST, b": b\r\n"), (400,)),
    # framing (DESIGN.md: refused, never forwarded)
    "cl_and_te": Vector(post(b"Content-Length: 4\r\n" + CHUNKED, b"0\r\n\r\n"), (400,)),
    "two_content_lengths": Vector(
        post(b"Content-Length: 4\r\nContent-Length: 5\r\n", b"abcde"), (400,)
    ),
    "two_equal_content_lengths": Vector(
        post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"), (400,)
    ),
    "content_length_list": Vector(post(b"Content-Length: 3, 3\r\n", b"abc"), (400,)),
    "content_length_signed": Vector(post(b"Content-Length: +3\r\n", b"abc"), (400,)),
    "content_length_negative": Vector(post(b"Content-Length: -1\r\n", b""), (400,)),
    "te_gzip": Vector(post(b"Transfer-Encoding: gzip\r\n", b"abcd"), (400,)),
    "te_gzip_chunked": Vector(
        post(b"Transfer-Encoding: gzip, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), (400,)
    ),
    "te_chunked_chunked": Vector(
        post(b"Transfer-Encoding: chunked, chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"), (400,)
    ),
    "te_on_two_lines": Vector(
        post(b"Transfer-Encoding: gzip\r\n" + CHUNKED, b"3\r\nabc\r\n0\r\n\r\n"), (400,)
    ),
    "te_chunked_then_identity": Vector(
        post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"), (400,)
    ),
    "te_identity_with_length": Vector(
        post(b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n", b"abc"), (400,)
    ),
    "bad_chunk_size": Vector(post(CHUNKED, b"zz\r\nabc\r\n0\r\n\r\n"), (400,)),
    "chunk_size_overflow": Vector(post(CHUNKED, b"f" * 20 + b"\r\nabc\r\n0\r\n\r\n"), (400,)),
    "chunk_size_with_space": Vector(post(CHUNKED, b"3 ;x\r\nabc\r\n0\r\n\r\n"), (400,)),
    "chunk_extension_control_char": Vector(post(CHUNKED, b"3;\x01\r\nabc\r\n0\r\n\r\n"), (400,)),
    "chunk_data_without_crlf": Vector(post(CHUNKED, b"3\r\nabcX0\r\n\r\n"), (400,)),
    "chunk_longer_than_said": Vector(post(CHUNKED, b"3\r\nabcdef\r\n0\r\n\r\n"), (400,)),
    # a smuggled second request behind a valid one: never forwarded. The fast path answers
    # the valid request before it reads on; aiohttp's parser drops the whole read
    "pipelined_smuggled_request": Vector(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n" + CHUNKED + b"\r\n0\r\n\r\n",
        (400,),
        fast=((200, 400), ("/",)),
    ),
    # a request that ends mid-head: closed without an answer
    "ends_mid_head": Vector(b"GET /c HTTP/1.1\r\nHost: a\r\nX-A", (), eof=True),
    "ends_mid_request_line": Vector(b"GET /c HT", (), eof=True),
}

CATALOGUE = {**SERVED, **REFUSED}


@pytest.mark.parametrize("name", sorted(CATALOGUE))
async def test_catalogue(name: str, serving_path: str, backends, gateway, caplog) -> None:
    caplog.set_level(logging.ERROR)
    vector = CATALOGUE[name]
    statuses, reached = vector.expected(serving_path)
    go = await backends("go")
    config = gateway_config({"go": go.url}, limits={"header_timeout": "60s"})
    config["backends"]["go"]["host_header"] = "pass"  # the Host the gateway decided on
    gw = await gateway(config)
    port = int(gw.url.rsplit(":", 1)[1])

    answer = await exchange(port, vector.raw, eof=vector.eof)
    assert answer.statuses == list(statuses), answer.data[:400]
    assert answer.closed, f"{name}: the connection stayed open ({answer.data[:200]!r})"
    assert all(line.startswith(b"HTTP/1.") for line in answer.lines), answer.lines
    assert 500 not in answer.statuses
    assert vector.contains in answer.data

    sentinel = await exchange(port, get(b"/sentinel", HOST, CLOSE))  # still serving
    assert sentinel.statuses == [200]
    targets = [r["target"] for r in go.received if r["target"] != "/sentinel"]
    assert targets == list(reached), f"{name} reached the backend as {targets}"
    assert go.hits == len(reached) + 1  # counted as a request begins: no partial one either
    if vector.host is not None:
        headers = go.received[0]["headers"]
        assert (headers["Host"], headers["X-Forwarded-Host"]) == (vector.host, vector.host)
    await wait_for(lambda: gw.in_flight == 0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_the_catalogue_covers_each_kind_once() -> None:
    assert not set(SERVED) & set(REFUSED)
    assert len({v.raw for v in CATALOGUE.values()}) == len(CATALOGUE)


# The admin listener judges requests as the main listener's general path does (one server
# class): every refused vector gets the same answer there, and these are served by the admin
# API itself (`GET /admin/whoami` answers who is asking).
WHOAMI = b'"actor": "operator"'
ADMIN_SERVED = {
    "origin_form": Vector(get(b"/admin/whoami", HOST, CLOSE), (200,), contains=WHOAMI),
    "absolute_form": Vector(
        get(b"http://example.test/admin/whoami", HOST, CLOSE), (200,), contains=WHOAMI
    ),
    "dot_segments": Vector(get(b"/admin/x/../whoami", HOST, CLOSE), (200,), contains=WHOAMI),
    "pct_dot_segments": Vector(
        get(b"/admin/x/%2e%2E/whoami", HOST, CLOSE), (200,), contains=WHOAMI
    ),
    "pct_encoded_letter": Vector(get(b"/admin/%77hoami", HOST, CLOSE), (200,), contains=WHOAMI),
    "http10_without_host": Vector(
        get(b"/admin/whoami", version=b"HTTP/1.0"), (200,), contains=WHOAMI
    ),
    "no_such_endpoint": Vector(get(b"/c", HOST, CLOSE), (404,), contains=b'"not_found"'),
}
ADMIN_CATALOGUE = {**ADMIN_SERVED, **{f"refused_{k}": v for k, v in REFUSED.items()}}


@pytest.mark.parametrize("name", sorted(ADMIN_CATALOGUE))
async def test_admin_listener_catalogue(name: str, backends, gateway, caplog) -> None:
    caplog.set_level(logging.ERROR)
    vector = ADMIN_CATALOGUE[name]
    go = await backends("go")
    config = gateway_config(
        {"go": go.url}, admin={"listen": "127.0.0.1:0"}, limits={"header_timeout": "60s"}
    )
    gw = await gateway(config)
    assert gw.admin_url is not None
    port = int(gw.admin_url.rsplit(":", 1)[1])

    answer = await exchange(port, vector.raw, eof=vector.eof)
    assert answer.statuses == list(vector.statuses), answer.data[:400]
    assert answer.closed, f"{name}: the connection stayed open ({answer.data[:200]!r})"
    assert all(line.startswith(b"HTTP/1.") for line in answer.lines), answer.lines
    assert vector.contains in answer.data
    for status, body in zip(answer.statuses, answer.bodies, strict=True):
        if status >= 400:
            assert body.startswith(b"{"), body[:200]  # errors are JSON, as everywhere

    sentinel = await exchange(port, get(b"/admin/whoami", HOST, CLOSE))  # still serving
    assert sentinel.statuses == [200]
    assert go.hits == 0  # the admin listener forwards nothing
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_valid_chunked_request_is_forwarded(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    port = int(gw.url.rsplit(":", 1)[1])
    raw = (
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    answer = await exchange(port, raw)
    assert answer.statuses == [200], answer.data[:200]
    assert b'"body_bytes":5' in answer.data


async def test_a_malformed_chunk_after_good_ones_sends_nothing_on(backends, gateway) -> None:
    # the head and a good chunk are parsed before the bad one, in the same read: the request
    # is known malformed before anything went out, so nothing does
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    port = int(gw.url.rsplit(":", 1)[1])
    answer = await exchange(port, post(CHUNKED, b"3\r\nabc\r\nzz\r\n"))
    assert answer.statuses == [400]
    sentinel = await exchange(port, get(b"/sentinel", HOST, CLOSE))
    assert sentinel.statuses == [200]
    assert [r["target"] for r in go.received] == ["/sentinel"]
    assert go.hits == 1  # not even the start of the malformed one


async def test_a_later_version_less_line_is_refused_once_its_head_ends(backends, gateway) -> None:
    # a version-less line is judged by its bytes only where it opens a connection; pipelined
    # behind another request, it is refused once its head ends (llhttp and aiohttp call it
    # HTTP/0.9 then), and the bytes around it are never mistaken for one
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, limits={"header_timeout": "60s"}))
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(get(b"/a", HOST) + b"GET /\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.write(b"\r\n")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 10)  # until the gateway closes
    finally:
        writer.close()
    assert b"HTTP/1.1 400 Bad Request\r\n" in rest, rest[-300:]
    assert b"HTTP/0.9" in rest
    assert [r["target"] for r in go.received] == ["/a"]


async def test_slow_request_head_is_cut(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, limits={"header_timeout": "300ms"}))
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
    await writer.drain()
    try:
        for _ in range(3):  # keep trickling bytes slower than the timeout allows
            await asyncio.sleep(0.2)
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # cut while trickling: the expected outcome
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        data = b""
    writer.close()
    assert data == b""  # closed without an answer
    assert go.hits == 0


async def _slow_head_is_cut(port: int, first: bytes = b"") -> None:
    """On one connection: `first` (whole requests, answered), then a request head trickled
    slower than the header timeout (300 ms) allows, which must be cut without an answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if first:
            writer.write(first)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            await reader.readexactly(length)
        writer.write(b"GET /admin/whoami HTTP/1.1\r\nHost: a\r\n")
        await writer.drain()
        with contextlib.suppress(ConnectionError):  # cut while trickling: expected
            for _ in range(3):
                await asyncio.sleep(0.2)
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            data = b""
    finally:
        writer.close()
    assert data == b""  # closed without an answer


@pytest.mark.parametrize("listener", ["main", "admin"])
@pytest.mark.parametrize("after", ["first", "after_a_request"])
async def test_slow_head_is_cut_on_every_listener(
    listener: str, after: str, backends, gateway
) -> None:
    # the admin listener applies the header-read timeout too, and so does the main listener
    # to the request after one of the gateway's own endpoints on a kept-alive connection
    go = await backends("go")
    config = gateway_config(
        {"go": go.url}, admin={"listen": "127.0.0.1:0"}, limits={"header_timeout": "300ms"}
    )
    gw = await gateway(config)
    url = gw.url if listener == "main" else gw.admin_url
    assert url is not None
    own = b"/healthz" if listener == "main" else b"/admin/whoami"
    first = get(own, HOST) if after == "after_a_request" else b""
    await _slow_head_is_cut(int(url.rsplit(":", 1)[1]), first)
    assert go.hits == 0


async def test_keepalive_connection_serves_several_requests(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, limits={"header_timeout": "300ms"}))
    port = int(gw.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(b"GET /k HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        await reader.readexactly(length)
        await asyncio.sleep(0.5)  # idle longer than the head timeout: idle is not slow
    writer.close()
    assert go.hits == 2
