"""The fast path's client (`proxy.pool`) against a raw backend on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from cutover.core.config_model import Backend, PoolConfig
from cutover.proxy.pool import ConnectFailed, LeanPool, Response, UpstreamReset

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawBackend:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def raw_backend() -> AsyncIterator[Callable[[Handler], Awaitable[RawBackend]]]:
    started: list[RawBackend] = []

    async def make(handler: Handler) -> RawBackend:
        b = RawBackend(handler)
        await b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        assert b.server is not None
        b.server.close()
        await b.server.wait_closed()


def pool_for(port: int, limit: int = 8, keepalive: float = 30.0) -> LeanPool:
    backend = Backend(
        name="b",
        url=f"http://127.0.0.1:{port}",
        scheme="http",
        host="127.0.0.1",
        port=port,
        base_path="",
        pool=PoolConfig(max_connections=limit, keepalive_timeout=keepalive),
    )
    return LeanPool(backend, False)


async def fetch(pool: LeanPool, method: bytes = b"GET") -> tuple[Response, bytes]:
    conn = pool.take() or await pool.connect(5.0)
    resp = conn.begin(head_only=method == b"HEAD")
    conn.transport.write(method + b" / HTTP/1.1\r\nHost: b\r\n\r\n")
    await resp.wait_head()
    body = b""
    while True:
        body += b"".join(resp.take())
        if resp.complete and not resp.chunks:
            break
        await resp.wait_more()
    conn.finish(resp)
    return resp, body


async def keepalive_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()


async def test_connections_are_kept_alive_and_reused(raw_backend) -> None:
    backend = await raw_backend(keepalive_server)
    pool = pool_for(backend.port)
    try:
        for method in (b"GET", b"HEAD", b"GET", b"GET"):
            resp, body = await fetch(pool, method)
            assert resp.status == 200
            assert body == (b"" if method == b"HEAD" else b"hello")
        assert backend.connections == 1
        assert pool.open == 1
    finally:
        await pool.close()
    assert pool.open == 0


async def test_interim_answers_are_skipped_and_bodies_read_to_the_end(raw_backend) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"2\r\nde\r\n0\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()

    backend = await raw_backend(handler)
    pool = pool_for(backend.port)
    try:
        resp, body = await fetch(pool)
        assert (resp.status, resp.chunked, body) == (200, True, b"abcde")
        assert (b"link", b"</a.css>; rel=preload") not in [(n.lower(), v) for n, v in resp.headers]
        resp, body = await fetch(pool)  # same connection, then delimited by its close
        assert (resp.status, body, resp.keep_alive) == (200, b"until the end", False)
        assert backend.connections == 1
    finally:
        await pool.close()


async def test_failures_say_whether_the_request_reached_the_backend(raw_backend) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    backend = await raw_backend(reset)
    pool = pool_for(backend.port)
    try:
        with pytest.raises(UpstreamReset) as info:
            await fetch(pool)
        assert info.value.connected
    finally:
        await pool.close()
    refused = pool_for(1)
    with pytest.raises(ConnectFailed) as failed:
        await refused.connect(2.0)
    assert not failed.value.connected
    assert refused.open == 0


async def test_a_full_pool_makes_callers_wait_for_a_release(raw_backend) -> None:
    backend = await raw_backend(keepalive_server)
    pool = pool_for(backend.port, limit=1)
    try:
        conn = await pool.connect(2.0)
        with pytest.raises(ConnectFailed, match="no free connection"):
            await pool.connect(0.1)
        waiting = asyncio.ensure_future(pool.connect(5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        resp = conn.begin(head_only=False)
        conn.transport.write(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        await resp.wait_head()
        while not resp.complete:
            await resp.wait_more()
        resp.take()
        conn.finish(resp)  # back in the pool: the waiter gets that very connection
        assert await waiting is conn
        conn.close()
    finally:
        await pool.close()


async def test_a_waiter_cancelled_once_woken_passes_its_turn_on(raw_backend) -> None:
    """A caller woken for a free connection and cancelled before it ran (its client left)
    must not take the wake-up with it: the next caller gets the connection."""
    backend = await raw_backend(keepalive_server)
    pool = pool_for(backend.port, limit=1)
    try:
        conn = await pool.connect(2.0)
        first = asyncio.ensure_future(pool.connect(5.0))
        second = asyncio.ensure_future(pool.connect(5.0))
        await asyncio.sleep(0.05)
        assert pool.waiting == 2
        pool.release(conn)  # wakes `first` ...
        first.cancel()  # ... which leaves before it runs
        got = await asyncio.wait_for(second, 2.0)
        assert got is conn
        assert first.cancelled()
        assert pool.waiting == 0
        got.close()
    finally:
        await pool.close()


async def test_idle_connections_expire(raw_backend) -> None:
    backend = await raw_backend(keepalive_server)
    pool = pool_for(backend.port, keepalive=0.1)
    try:
        await fetch(pool)
        assert pool.open == 1
        await asyncio.sleep(0.3)  # past the pool's keep-alive: its cleanup timer closed it
        assert pool.take() is None
        assert pool.open == 0
        await fetch(pool)
        assert backend.connections == 2
    finally:
        await pool.close()


async def test_pool_for_an_origin(raw_backend) -> None:
    """`LeanPool.for_origin`: a pool from an origin's parts (no configured backend)."""

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    b = await raw_backend(ok)
    pool = LeanPool.for_origin("http", "127.0.0.1", b.port, limit=2, keepalive=5.0)
    assert pool.limit == 2 and pool.keepalive == 5.0 and pool.ssl is None
    assert pool.fallback_host == f"Host: 127.0.0.1:{b.port}\r\n".encode()
    for _ in range(3):
        resp, body = await fetch(pool)
        assert resp.status == 200 and body == b"ok"
    assert b.connections == 1 and pool.busy == 0
    await pool.close()
    with pytest.raises(ValueError):
        LeanPool.for_origin("https", "127.0.0.1", 443)  # https needs a TLS context
