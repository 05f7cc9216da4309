"""The fast path's HTTP/1.1 client: kept-alive connections to one backend, parsed by httptools.

One `LeanPool` per backend (held by `proxy.upstreams.Upstream` beside the aiohttp session the
general path uses). A connection carries one exchange at a time:

    conn = pool.take() or await pool.connect(timeout)
    resp = conn.begin(head_only=method == "HEAD")
    conn.transport.write(request_bytes)
    await resp.wait_head()          # status, reason, raw headers
    chunks = resp.take()            # body as it arrived; `await resp.wait_more()` for the rest
    conn.finish(resp)               # back to the pool if the exchange ended cleanly, else closed

Instead of awaiting, a caller may set `resp.listener`: it is called (synchronously, once per
read from the socket and when the connection closes) until it clears it again.

A caller that wants the whole (small) answer in one piece sends with `send_whole` instead:
one deadline over connect, request and answer, the connection back to the pool only after a
complete answer that keeps it alive (the delivery engine's client, `publishing.transport`).

Errors:

    UpstreamFailure                 a failed exchange; `connected` is False when the request
     |                              never reached the backend (connect phase)
     ├── ConnectFailed              refused, unreachable, TLS handshake, connect timeout
     |    └── ConnectTimeout        no connection (or no free slot) in time
     ├── UpstreamReset              closed, reset or unparsable before the response ended
     |    └── UpstreamClosed        the backend closed (or reset) the connection
     └── ExchangeTimeout            `send_whole`'s deadline passed after the connect

Flow control: a response buffers at most `HIGH_WATER` bytes before the connection stops
reading; writes to the backend wait while its transport reports a full buffer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import httptools

from cutover.core.config_model import Backend, PoolConfig, TLSConfig
from cutover.core.waitline import WaitLine

HIGH_WATER = 256 * 1024  # response bytes buffered before the backend socket stops being read
_MAX_HEAD = 64 * 1024  # a response head larger than this is a protocol error


class UpstreamFailure(Exception):
    """An exchange with a backend failed before its response ended."""

    connected = True


class ConnectFailed(UpstreamFailure):
    """The request never reached the backend (`os_error`: the socket's or TLS's error, when
    there was one)."""

    connected = False
    os_error: OSError | None = None


class ConnectTimeout(ConnectFailed):
    """No connection, or no free slot in a full pool, within the connect bound."""


class UpstreamReset(UpstreamFailure):
    """The connection closed, reset or sent something unparsable mid-exchange."""


class UpstreamClosed(UpstreamReset):
    """The backend closed or reset the connection before the response ended. `untouched`:
    not one byte of a response had arrived on it (a kept-alive connection the backend had
    let go while it was idle looks like this)."""

    def __init__(self, message: str, untouched: bool) -> None:
        super().__init__(message)
        self.untouched = untouched


class ExchangeTimeout(UpstreamFailure):
    """`send_whole`'s deadline passed before the whole answer was in."""


class Response:
    """One response, filled in by its connection's parser as bytes arrive.

    Class attributes are the defaults; a response sets only what it meets.
    """

    status = 0
    reason = b""
    head_size = 0
    interim = False
    head_done = False
    complete = False
    keep_alive = True
    buffered = 0
    error: UpstreamFailure | None = None
    content_length: int | None = None
    chunked = False
    last_activity = 0.0
    # Called (synchronously) after every read from the socket and when it closes, while set.
    listener: Callable[[Response], None] | None = None
    lower: list[bytes]  # the header names, lowercased, once the head is in
    _waiter: asyncio.Future[None] | None = None
    _paused = False

    def __init__(self, conn: Connection, head_only: bool) -> None:
        self.conn = conn
        self.head_only = head_only
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    # -- consumer side -------------------------------------------------------------------

    def release(self) -> None:
        """Let the exchange go unread: its connection goes back if it ended cleanly, else
        it is closed (the attempt loop passing over an answer)."""
        if self.conn.resp is self:
            self.conn.finish(self)

    async def wait_head(self) -> None:
        """Until the status line and headers are in; raises `UpstreamFailure`."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    def take(self) -> list[bytes]:
        """Every body chunk buffered so far (maybe none); raises on a failed exchange."""
        chunks = self.chunks
        if not chunks:
            if self.error is not None:
                raise self.error
            return chunks
        self.chunks = []
        self.buffered = 0
        if self._paused:
            self._paused = False
            self.conn.resume_reading()
        return chunks

    async def wait_more(self) -> None:
        """Until more body arrived, the response ended or failed."""
        if self.chunks or self.complete or self.error is not None:
            return
        await self._wait()

    def _wait(self) -> asyncio.Future[None]:
        fut = self._waiter = self.conn.loop.create_future()
        return fut

    # -- parser side ---------------------------------------------------------------------

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None:
            self._waiter = None
            if not fut.done():
                fut.set_result(None)

    def _fail(self, error: UpstreamFailure) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self._wake()


class Connection(asyncio.Protocol):
    """One kept-alive connection to a backend."""

    __slots__ = (
        "_drain",
        "_paused_writing",
        "closed",
        "idle_since",
        "loop",
        "parser",
        "pool",
        "resp",
        "transport",
    )

    def __init__(self, pool: LeanPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused_writing = False
        self._drain: asyncio.Future[None] | None = None

    # -- exchange API --------------------------------------------------------------------

    def begin(self, head_only: bool) -> Response:
        """A fresh response for the request about to be written on this connection."""
        resp = self.resp = Response(self, head_only)
        return resp

    def finish(self, resp: Response) -> None:
        """The exchange is over: keep the connection if it ended cleanly, else close it."""
        self.resp = None
        if resp.complete and resp.keep_alive and resp.error is None and not self.closed:
            if resp._paused:
                self.resume_reading()
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is full (request bodies)."""
        if self.closed:
            raise UpstreamReset("connection closed while sending")
        if self._paused_writing:
            fut = self._drain = self.loop.create_future()
            await fut

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            resp._fail(UpstreamReset(f"unparsable response: {exc}"))
            self.close()
            listener = resp.listener
            if listener is not None:
                listener(resp)
            return
        if not resp.head_done:
            resp.head_size += len(data)
            if resp.head_size > _MAX_HEAD:
                resp._fail(UpstreamReset("response head too large"))
                self.close()
        listener = resp.listener
        if listener is not None:
            listener(resp)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool.lost(self)
        resp = self.resp
        if resp is not None and not resp.complete:
            if resp.head_done and exc is None and _until_close(resp):
                resp.complete = True  # a body delimited by the end of the connection
                resp.keep_alive = False
                resp._wake()
            else:
                untouched = resp.head_size == 0 and not resp.head_done
                resp._fail(UpstreamClosed("connection closed by the backend", untouched))
            listener = resp.listener
            if listener is not None:
                listener(resp)
        fut = self._drain
        if fut is not None and not fut.done():
            fut.set_exception(UpstreamReset("connection closed while sending"))
            fut.exception()  # retrieved: a sender may be gone already

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        fut = self._drain
        if fut is not None:
            self._drain = None
            if not fut.done():
                fut.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp.headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            resp.interim = True  # 103 Early Hints and the like: wait for the real answer
            return
        resp.status = status
        resp.keep_alive = self.parser.should_keep_alive()
        resp.head_done = True
        resp.last_activity = self.loop.time()
        lower = resp.lower = [name.lower() for name, _ in resp.headers]
        if b"content-length" in lower:
            value = resp.headers[lower.index(b"content-length")][1]
            if value.isdigit():
                resp.content_length = int(value)
        if b"transfer-encoding" in lower:
            value = resp.headers[lower.index(b"transfer-encoding")][1]
            resp.chunked = value.lower().endswith(b"chunked")
        if resp.head_only:
            # httptools cannot be told the request was HEAD; it would wait for the announced
            # body. The answer is complete; a fresh parser takes the next one.
            resp.complete = True
            self.parser = httptools.HttpResponseParser(self)
        resp._wake()

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is None or resp.head_only:
            return
        resp.chunks.append(body)
        resp.buffered += len(body)
        resp.last_activity = self.loop.time()
        if resp.buffered > HIGH_WATER and not resp._paused:
            resp._paused = True
            self.transport.pause_reading()
        resp._wake()

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        if resp.interim:
            resp.interim = False
            resp.headers = []
            resp.reason = b""
            return
        resp.complete = True
        resp._wake()


def _until_close(resp: Response) -> bool:
    """True when the response body runs until the backend closes the connection."""
    return resp.content_length is None and not resp.chunked


class LeanPool:
    """Kept-alive connections to one backend: newest idle first, capped, expired at checkout."""

    __slots__ = (
        "_cleanup",
        "_idle",
        "_waiters",
        "base_path",
        "closed",
        "fallback_host",
        "host",
        "host_line",
        "keepalive",
        "limit",
        "loop",
        "open",
        "port",
        "server_hostname",
        "ssl",
    )

    def __init__(self, backend: Backend, ssl_context: ssl.SSLContext | bool) -> None:
        self.host = backend.host
        self.port = backend.port
        self.ssl: ssl.SSLContext | None = ssl_context if ssl_context else None
        tls = backend.tls
        self.server_hostname = (tls.server_name if tls and tls.server_name else None) or (
            backend.host if self.ssl is not None else None
        )
        self.limit = backend.pool.max_connections
        self.keepalive = backend.pool.keepalive_timeout
        # Constant parts of the request heads sent to this backend.
        self.base_path = backend.base_path.encode("latin-1")
        self.fallback_host = b"Host: " + backend.authority.encode("latin-1") + b"\r\n"
        host = backend.upstream_host
        self.host_line: bytes | None = None  # None: the client's Host is passed
        if host is not None:
            self.host_line = b"Host: " + host.encode("latin-1") + b"\r\n"
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set on first use
        self._idle: list[Connection] = []
        self._waiters = WaitLine()
        self._cleanup: asyncio.TimerHandle | None = None
        self.open = 0  # connections open or being opened
        self.closed = False

    @classmethod
    def for_origin(
        cls,
        scheme: str,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str | None = None,
        limit: int = 20,
        keepalive: float = 15.0,
    ) -> LeanPool:
        """A pool to one origin given by its parts rather than a configured backend (the
        delivery engine's targets): `host` as it is dialled (an IPv6 address without
        brackets), `ssl_context` for https (`server_name`, SNI and the certificate's name,
        defaults to `host`), at most `limit` connections, each kept `keepalive` seconds idle.
        The Host its requests carry is the origin's authority (the caller may send its own)."""
        if scheme not in ("http", "https") or (scheme == "https") != (ssl_context is not None):
            raise ValueError("an http origin without TLS or an https origin with a TLS context")
        backend = Backend(
            name=f"{scheme}://{host}:{port}",
            url=f"{scheme}://{host}:{port}",
            scheme="https" if scheme == "https" else "http",
            host=host,
            port=port,
            base_path="",
            health=None,
            tls=TLSConfig(server_name=server_name) if server_name else None,
            pool=PoolConfig(max_connections=limit, keepalive_timeout=keepalive),
        )
        return cls(backend, ssl_context or False)

    @property
    def busy(self) -> int:
        """Connections out on an exchange or being opened (zero once traffic stopped)."""
        return self.open - sum(1 for conn in self._idle if not conn.closed)

    @property
    def waiting(self) -> int:
        """Callers waiting for a free connection (the pool is at `limit`)."""
        return len(self._waiters)

    def take(self) -> Connection | None:
        """An idle connection that is still open and not expired, or None."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if self.loop.time() - conn.idle_since < self.keepalive:
                return conn
            conn.close()
        return None

    async def connect(self, timeout: float) -> Connection:
        """A new connection (waiting for a free slot when the pool is full)."""
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.open >= self.limit:
            if self.closed:
                raise ConnectFailed("pool closed")
            try:
                await self._waiters.wait(deadline)
            except TimeoutError:
                raise ConnectTimeout("no free connection in time") from None
            conn = self.take()
            if conn is not None:
                return conn
        self.open += 1
        conn = Connection(self)
        try:
            async with asyncio.timeout_at(deadline):
                await loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname,
                )
        except TimeoutError:
            self._connect_failed(conn)
            raise ConnectTimeout("connect timeout") from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._connect_failed(conn)
            failure = ConnectFailed(str(exc) or type(exc).__name__)
            if isinstance(exc, OSError):
                failure.os_error = exc
            raise failure from None
        except BaseException:
            self._connect_failed(conn)
            raise
        if self.closed:
            conn.close()
            raise ConnectFailed("pool closed")
        return conn

    def _connect_failed(self, conn: Connection) -> None:
        if not conn.closed:
            conn.closed = True
            self.lost(conn)
        if conn.transport is not None:
            conn.transport.abort()

    def release(self, conn: Connection) -> None:
        """An exchange ended cleanly: the connection waits for the next one."""
        if self.closed:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        if self._waiters:
            self._waiters.wake_one()
        if self._cleanup is None:
            self._cleanup = self.loop.call_later(self.keepalive, self._expire)

    def lost(self, conn: Connection) -> None:
        """A connection closed (counted once)."""
        self.open -= 1
        if self._waiters:
            self._waiters.wake_one()

    def _expire(self) -> None:
        self._cleanup = None
        now = self.loop.time()
        keep: list[Connection] = []
        for conn in self._idle:
            if conn.closed:
                continue
            if now - conn.idle_since >= self.keepalive:
                conn.close()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            self._cleanup = self.loop.call_later(self.keepalive, self._expire)

    async def close(self) -> None:
        self.closed = True
        if self._cleanup is not None:
            self._cleanup.cancel()
            self._cleanup = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        self._waiters.wake_all()
        if idle:
            await asyncio.sleep(0)  # let the transports finish closing


class Whole:
    """A whole answer read by `send_whole`: status, raw headers (and their lowercased names),
    the body (at most `max_body` bytes; `cut` when there was more)."""

    __slots__ = ("body", "cut", "headers", "lower", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        lower: list[bytes],
        body: bytes,
        cut: bool,
    ) -> None:
        self.status = status
        self.headers = headers
        self.lower = lower
        self.body = body
        self.cut = cut

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (`name` lowercased), or None."""
        lower = self.lower
        return self.headers[lower.index(name)][1] if name in lower else None


def _expire(resp: Response) -> None:
    resp._fail(ExchangeTimeout("deadline passed before the whole answer"))


async def send_whole(
    pool: LeanPool,
    request: bytes,
    deadline: float,
    *,
    max_body: int,
    connect_timeout: float | None = None,
    head_only: bool = False,
) -> Whole:
    """One exchange read whole: `request` (head and body, as bytes) out on a kept-alive or new
    connection, the answer in until it ends or `max_body` bytes of body are in.

    `deadline` (the running loop's clock) bounds everything, connect included, with one timer
    per exchange (a new connection's dial also stays within `connect_timeout`). On the deadline,
    a failure, or cancellation the connection is aborted, never reused; it goes back to the pool
    only after a complete answer that keeps it alive. An answer cut at `max_body` closes it.

    A kept-alive connection the backend closed while it sat idle is told apart from a failed
    exchange only when the close came before a single byte of an answer: then, once, the same
    bytes go out again on a new connection. The backend never answered on that connection, so
    it most likely never read the request (RFC 9112 §9.3.1 lets a client retry such a request
    automatically when it knows that). It may have read it and died before answering: the
    callers send POSTs that carry idempotency keys (`Idempotency-Key`, PagerDuty's `dedup_key`,
    Rootly's `deduplication_key`), delivery is at least once, and a failure here would be
    retried by the delivery engine anyway, so a repeat is no new risk. Any other failure —
    bytes of an answer arrived, a new connection failed, a parse error, the deadline — is raised.

    Raises `ConnectFailed` (`ConnectTimeout`), `ExchangeTimeout` or `UpstreamReset`.
    """
    conn = pool.take()
    fresh = conn is None
    while True:
        if conn is None:
            loop = pool.loop or asyncio.get_running_loop()
            left = deadline - loop.time()
            if left <= 0:
                raise ConnectTimeout("connect timeout")
            if connect_timeout is not None and connect_timeout < left:
                left = connect_timeout
            conn = await pool.connect(left)
        try:
            return await _exchange(conn, request, deadline, max_body, head_only)
        except UpstreamClosed as exc:
            if fresh or not exc.untouched:
                raise
        fresh = True  # the idle connection had been closed by the backend: once more, anew
        conn = None


async def _exchange(
    conn: Connection, request: bytes, deadline: float, max_body: int, head_only: bool
) -> Whole:
    resp = conn.begin(head_only)
    timer = conn.loop.call_at(deadline, _expire, resp)
    try:
        conn.transport.write(request)
        while not resp.complete:
            if resp.error is not None:
                raise resp.error
            if resp.buffered > max_body:
                break
            await resp._wait()
    except BaseException:
        conn.resp = None
        conn.abort()
        raise
    finally:
        timer.cancel()
    chunks = resp.chunks
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if resp.complete:
        conn.finish(resp)
    else:
        conn.resp = None
        conn.abort()  # the rest of the answer is not wanted: the connection cannot be reused
    cut = len(body) > max_body
    if cut:
        body = body[:max_body]
    return Whole(resp.status, resp.headers, resp.lower, body, cut)
