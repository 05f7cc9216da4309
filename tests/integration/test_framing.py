"""Malformed HTTP framing (RFC 9112) is refused and never reaches a backend; slow heads are cut."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import gateway_config

# Every test runs on both listener paths: proxy.fastpath and aiohttp alone.
pytestmark = pytest.mark.usefixtures("serving_path")

SMUGGLING = {
    "cl_and_te": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two_content_lengths": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"
    ),
    "te_not_chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
    "te_chunked_then_other": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
    ),
    "bad_chunk_size": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "nul_in_field": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
    "bad_request_line": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad_version": b"GET / HTTP/7.1\r\nHost: a\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc",
    "bad_host": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "negative_length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
}


async def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    finally:
        writer.close()


@pytest.mark.parametrize("case", sorted(SMUGGLING))
async def test_malformed_framing_is_refused(case: str, backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    port = int(gw.url.rsplit(":", 1)[1])
    answer = await exchange(port, SMUGGLING[case])
    if answer:  # a closed connection is an acceptable refusal too
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
    await asyncio.sleep(0.1)
    assert go.hits == 0, f"{case} reached the backend"


async def test_valid_chunked_request_is_forwarded(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    port = int(gw.url.rsplit(":", 1)[1])
    raw = (
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    answer = await exchange(port, raw)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"body_bytes":5' in answer


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
