"""The fast path: the main listener's connections, parsed by httptools, forwarding plain requests.

Every client connection starts here. A request that needs nothing but the gateway core (route
match, split, stickiness, health, fallback and replay rules, retry budget, timeouts, limits,
metrics, access log, request observers) is forwarded by this module over the backend's
`proxy.pool.LeanPool`, its head and body handled as raw bytes. It behaves as the general path
(`Gateway.handle` → `_proxy` → `proxy.forwarder.forward`) does; the core's behaviour tests run
against both paths.

Any other request goes to the general path: from that request on, the connection is handed to
aiohttp's connection handler, which serves it and everything after it on that connection:

- the gateway's own endpoints and the features' (everything on the aiohttp router besides the
  catch-all proxy route), WebSocket and any other `Upgrade`, `Expect: 100-continue`;
- requests a compat rule matches;
- HTTP/1.0, targets that are not plain ASCII origin-form or hold dot-segments (`core.http1`);
- everything, when the config says `fast_path: false`.

The handoff replays the request head (and any body bytes already parsed, re-framed) into
aiohttp's handler and switches the transport over to it at the next message boundary.

Routes that mirror or capture (parity) stay here: `_parity` samples the request through
`Gateway.mirror.sample` once a backend answered, and the answer's decoded bytes go to its tap
once they are written to the client (the copy is never made on the primary request's clock).

One request at a time per connection (pipelined ones wait, reading paused). The common case
runs without a task: a complete request goes out on an idle pooled connection from the parser
callback, and a response that arrives whole in one read goes back from the backend
connection's callback (`_begin`, `_quick`, `_on_upstream`). Anything else (a body still
arriving or streamed, a new connection to open, a replay, a timeout, a streamed answer)
continues in a task (`_run`), from where the quick lane stopped. Reading pauses while a request
body is not consumed and writing waits while a transport's buffer is full, in both directions,
so memory stays flat whatever the size.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools
from aiohttp import web
from aiohttp.web_request import parse_cookie_header
from yarl import URL

from cutover.core.errors import (
    BodyTooLargeError,
    CutoverError,
    IncompleteBodyError,
    Overloaded,
    UpstreamError,
    error_body,
)
from cutover.core.http1 import (
    HOST_RE,
    is_plain_path,
    normalize_escapes,
    transfer_coding_refusal,
    version_refusal,
    versionless_line,
)
from cutover.proxy.admin import admin_authorizations, carries_admin_token, log_admin_token_dropped
from cutover.proxy.attempts import Attempts, ProxyOutcome, book_answer
from cutover.proxy.headers import HOP_BY_HOP, NOT_FORWARDED_DOWN, NOT_FORWARDED_UP
from cutover.proxy.metrics import fast_inc, fast_observe
from cutover.proxy.pipeline import run_attempts
from cutover.proxy.pool import ConnectFailed, Connection, LeanPool, Response, UpstreamFailure
from cutover.proxy.requestflow import book_request, decide_request
from cutover.routing.decision import Decision

if TYPE_CHECKING:
    from cutover.core.config_model import Route
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.forwarder import MirrorTap
    from cutover.proxy.metrics import Metrics
    from cutover.proxy.server import Gateway, RuntimeState

log = logging.getLogger("cutover")

HIGH_WATER = 256 * 1024  # request body bytes buffered before the client socket stops being read
SWEEP_INTERVAL = 1.0  # seconds between checks for idle keep-alive connections
# The quick lane's attempt deadlines are checked on one shared tick instead of a timer per
# request: a deadline fires up to this late (the task lane's timers are exact).
DEADLINE_TICK = 0.01
_SMALL_WRITE = 8 * 1024  # a body below this is copied after its head; larger: writev

_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
_DROP_UP = frozenset(h.encode() for h in NOT_FORWARDED_UP)  # `proxy.headers`' policy, as bytes
_DROP_DOWN = frozenset(h.encode() for h in NOT_FORWARDED_DOWN)
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"close"))
_AUTHORIZATION = frozenset((b"authorization",))
_HOST_RE_B = re.compile(HOST_RE.pattern.encode())
_EMPTY_BODY_STATUSES = frozenset((204, 304))
_BODYLESS_UP = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"DELETE", b"CONNECT"))
_CRLF = b"\r\n"
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
_LAST_CHUNK = b"0\r\n\r\n"


class _Refusal(Exception):
    """A request that cannot be served (malformed or too large): answer this, then close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


class _TooLargeUnsent(BodyTooLargeError):
    """The body is over the limit, and not a byte of the request went to the backend."""


def _let_go(resp: Response) -> None:
    """Cut `resp`'s backend connection if that exchange is still on it (it did not end cleanly:
    an error or a cancellation came first); a no-op once it was finished or cut."""
    conn = resp.conn
    if conn.resp is resp:
        conn.resp = None
        conn.abort()


# -- wire helpers (pure) -------------------------------------------------------------------


def status_line(status: int, reason: bytes | None = None) -> bytes:
    """`HTTP/1.1 <status> <reason>\\r\\n` (the standard phrase when `reason` is None)."""
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


_STATUS_LINES = {s.value: status_line(s.value) for s in HTTPStatus}
_LINES: dict[tuple[int, bytes], bytes] = {}  # (status, reason) as backends send them


def connection_tokens(headers: list[tuple[bytes, bytes]], lower: list[bytes]) -> frozenset[bytes]:
    """Field names a message lists in `Connection` beyond keep-alive and close (hop-by-hop for
    that message only)."""
    tokens: set[bytes] = set()
    for (_, value), name in zip(headers, lower, strict=False):
        if name == b"connection":
            value = value.lower()
            if value in _PLAIN_CONNECTION:
                continue
            tokens.update(t.strip() for t in value.split(b","))
    tokens -= _PLAIN_CONNECTION
    tokens.discard(b"")
    return frozenset(tokens)


def serialize_head(
    method: bytes, url: bytes, version: str, headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A request head as the client sent it (replayed to the general path after a handoff)."""
    parts = [method, b" ", url, b" HTTP/", version.encode(), _CRLF]
    for name, value in headers:
        parts += (name, b": ", value, _CRLF)
    parts.append(_CRLF)
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _DateHeader:
    """The `Date` header value, formatted once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


_DATE = _DateHeader()


def error_bytes(
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    headers: tuple[tuple[str, str], ...] = (),
    close: bool = False,
) -> bytes:
    """The gateway's JSON error (`core.errors.error_body`) as one HTTP/1.1 message."""
    data = error_body(code, message, request_id)
    parts = [
        _STATUS_LINES.get(status) or status_line(status),
        b"Content-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\n"
        % (len(data), _DATE.value()),
    ]
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if close:
        parts.append(b"Connection: close\r\n")
    parts += (_CRLF, data)
    return b"".join(parts)


class _HeaderView:
    """Case-insensitive `get` over raw request headers (the first value wins, as CIMultiDict)."""

    __slots__ = ("_first",)

    def __init__(self, first: dict[bytes, bytes]) -> None:
        self._first = first

    def get(self, key: str, default: Any = None) -> Any:
        lkey = _LOWER_KEYS.get(key)
        if lkey is None:
            lkey = _lower_key(key)
        value = self._first.get(lkey)
        return default if value is None else value.decode("utf-8", "surrogateescape")

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        lkey = _LOWER_KEYS.get(key)
        return (lkey if lkey is not None else _lower_key(key)) in self._first


_LOWER_KEYS: dict[str, bytes] = {}  # header names as the config and routing ask for them


def _lower_key(key: str) -> bytes:
    lkey = key.lower().encode("latin-1")
    if len(_LOWER_KEYS) < 256:
        _LOWER_KEYS[key] = lkey
    return lkey


# -- values bound once ---------------------------------------------------------------------


class _Meters:
    """The request metrics' children, bound on first use (the hot path only increments)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._requests: dict[tuple[str, str, int], Callable[..., None]] = {}
        self._durations: dict[tuple[str, str], Callable[[float], None]] = {}
        # (route, backend, status) -> (its counter's inc, its histogram's observe)
        self._pairs: dict[
            tuple[str, str, int], tuple[Callable[..., None], Callable[..., None]]
        ] = {}
        self.in_flight = 0  # fast-path requests in flight (the general path counts its own)
        self._published = 0

    def publish(self) -> None:
        """Bring `cutover_in_flight_requests` up to date with the fast path's share."""
        delta = self.in_flight - self._published
        if delta:
            self._published = self.in_flight
            self.metrics.in_flight.inc(delta)

    def count(self, route: str, backend: str, status: int, elapsed: float) -> None:
        pair = self._pairs.get((route, backend, status))
        if pair is not None:
            pair[0](1)
            pair[1](elapsed)
            return
        inc = self._requests.get((route, backend, status))
        if inc is None:
            child = self.metrics.requests.labels(route, backend, str(status))
            inc = self._requests[(route, backend, status)] = fast_inc(child)
        inc(1)
        observe = self._durations.get((route, backend))
        if observe is None:
            child = self.metrics.duration.labels(route, backend)
            observe = self._durations[(route, backend)] = fast_observe(child)
        observe(elapsed)
        if len(self._pairs) < 4096:
            self._pairs[(route, backend, status)] = (inc, observe)


class _Bound:
    """Values the hot path needs from one config, turned into bytes once."""

    __slots__ = (
        "admin_authorizations",
        "backend_header",
        "backend_lines",
        "backend_lower",
        "config",
        "drop_down",
        "drop_up",
        "max_body",
        "max_field",
        "max_head",
        "max_headers",
        "rid_line",
        "rid_lower",
    )

    def __init__(self, config: CutoverConfig, admin_authorizations: frozenset[str]) -> None:
        self.config = config
        self.admin_authorizations = admin_authorizations  # never sent upstream
        headers = config.headers
        self.rid_lower = headers.request_id.lower().encode("latin-1")
        self.rid_line = headers.request_id.encode("latin-1") + b": "
        self.backend_header = headers.backend
        self.backend_lower = headers.backend.lower().encode("latin-1") if headers.backend else b""
        self.backend_lines: dict[str, bytes] = {}
        # Fields never passed on: hop-by-hop, framing, and those the gateway sets itself.
        self.drop_up = _DROP_UP | {self.rid_lower, b"x-forwarded-for"}
        self.drop_down = _DROP_DOWN | {self.rid_lower} | ({self.backend_lower} - {b""})
        limits = config.limits
        self.max_body = limits.max_body
        self.max_field = limits.max_header_size
        self.max_headers = limits.max_headers
        self.max_head = limits.max_header_size * (limits.max_headers + 2)

    def backend_line(self, backend: str) -> bytes:
        line = self.backend_lines.get(backend)
        if line is None:
            line = b""
            if self.backend_header:
                line = f"{self.backend_header}: {backend}\r\n".encode("latin-1")
            self.backend_lines[backend] = line
        return line


# -- one request ---------------------------------------------------------------------------


class _Exchange:
    """One request on a client connection: its head, its body as it arrives, how it is served.

    Class attributes are the defaults; an instance sets only what its request uses.
    """

    # the request, as parsed
    url = b""
    method = b""
    method_s = ""  # `method` as text, once `_needs_general` judged it
    version = "1.1"
    keep_alive = True
    content_length: int | None = None
    chunked = False
    has_body = False  # chunked, or a Content-Length above 0
    head_done = False
    body_done = False
    buffered = 0
    lower: list[bytes]
    first: dict[bytes, bytes]
    waiter: asyncio.Future[None] | None = None
    fatal: _Refusal | None = None  # its body turned out malformed
    lost = False  # the client went away
    # where it goes
    handoff = False
    bridged = False
    upgrade_tail: bytes | None = None
    route: Route | None = None
    view: _HeaderView
    path = ""
    pending = False  # to begin once its (small) body is in
    # how it is being served
    task: asyncio.Task[None] | None = None
    counted = False  # holds a slot of the concurrency cap
    started: float | None = None
    bound: _Bound
    state: RuntimeState
    request_id = ""
    rid_line = b""  # `X-Request-ID: <id>\r\n`, sent both ways
    outcome: ProxyOutcome
    route_name = "-"
    primary: str | None = None
    owner: str | None = None  # Decision.owner: the side the canary charges
    decision: Decision
    budget: Any = None
    body: bytes | None = None
    deadline = 0.0
    try_deadline = 0.0  # of the quick lane's attempt; while it streams: of the idle timeout
    resp: Response | None = None  # awaited by the quick lane
    # the quick lane streaming an answer back from the backend connection's callbacks
    streaming = False
    stream_chunked = False
    stream_close = False
    stream_sent = 0
    stalled = False  # the client's transport is full: the backend is not being read
    name = ""  # backend of the quick lane's attempt
    expired = False
    watchdog: asyncio.TimerHandle | None = None
    ended = False
    admin_token_dropped = False  # its Authorization carried an admin token (logged once)
    tap: MirrorTap | None = None  # parity: copies the answer of a mirrored request

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    def wake(self) -> None:
        fut = self.waiter
        if fut is not None:
            self.waiter = None
            if not fut.done():
                fut.set_result(None)

    def expire(self) -> None:
        """A deadline passed: interrupt whatever the task awaits."""
        self.expired = True
        if self.task is not None:
            self.task.cancel()


# -- the listener --------------------------------------------------------------------------


def _cookies(headers: _HeaderView) -> dict[str, str]:
    raw = headers.get("Cookie")
    return {name: m.value for name, m in parse_cookie_header(raw)} if raw else {}


class _LeanTransport:
    """The lean pool as the attempt loop's transport, for one exchange of the task lane."""

    __slots__ = ("body", "conn", "connect", "ex", "max_body")

    def __init__(
        self, conn: _Conn, ex: _Exchange, body: bytes | None, connect: float, max_body: int
    ) -> None:
        self.conn = conn
        self.ex = ex
        self.body = body
        self.connect = connect
        self.max_body = max_body

    def send(self, backend: str, per_try: float) -> Awaitable[Response]:
        return self.conn._attempt(self.ex, backend, self.body, per_try, self.connect, self.max_body)


class FastListener:
    """The main listener: fast-path connections that hand requests to aiohttp when needed."""

    def __init__(self, gw: Gateway, general: web.Server, app: web.Application) -> None:
        self.gw = gw
        self.general = general  # makes aiohttp's connection handlers (the general path)
        self.server: asyncio.AbstractServer | None = None
        self.conns: set[_Conn] = set()
        self.closing = False
        self.meters = _Meters(gw.metrics)
        self._all_closed: asyncio.Event | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._bound: _Bound | None = None
        self._own_exact, self._own_prefixes, self._own_patterns = _own_endpoints(app, gw)
        self._rand = random.Random()
        self.waiting: set[_Conn] = set()  # connections whose quick lane awaits a backend
        self._ticker: asyncio.TimerHandle | None = None
        self.good_hosts: set[bytes] = set()  # Host values already found valid
        self.decisions: dict[tuple[Any, ...], Decision] = {}  # `decide` is pure: memoized

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, sock: Any) -> str:
        """Accept on the listening socket `sock` (`proxy.listen`); returns the listener's URL."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._connection, sock=sock, backlog=1024)
        self.server = server
        sockname = server.sockets[0].getsockname()
        host = sockname[0]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{sockname[1]}"

    def _connection(self) -> _Conn:
        conn = _Conn(self)
        self.conns.add(conn)
        if self._sweeper is None and not self.closing:
            self._sweeper = conn.loop.call_later(SWEEP_INTERVAL, self._sweep)
        return conn

    def watch(self, conn: _Conn) -> None:
        """`conn`'s quick lane waits for a backend until `conn.current.try_deadline`."""
        self.waiting.add(conn)
        if self._ticker is None:
            self._ticker = conn.loop.call_later(DEADLINE_TICK, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        waiting = self.waiting
        if not waiting:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(waiting):
            ex = conn.current
            if ex is None or ex.resp is None:
                waiting.discard(conn)
            elif now >= ex.try_deadline:
                conn._quick_expired()
        if waiting:
            self._ticker = loop.call_later(DEADLINE_TICK, self._tick)

    def forget(self, conn: _Conn) -> None:
        self.waiting.discard(conn)
        self.conns.discard(conn)
        if self.closing and not self.conns and self._all_closed is not None:
            self._all_closed.set()

    def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than `limits.keepalive_timeout`."""
        self._sweeper = None
        self.meters.publish()
        if not self.conns or self.closing:
            return
        loop = asyncio.get_running_loop()
        limit = loop.time() - self.gw.config.limits.keepalive_timeout
        for conn in list(self.conns):
            if conn.idle_since is not None and conn.idle_since < limit:
                conn.close()
        if self.conns:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    async def close(self, timeout: float) -> None:
        """Stop accepting; let in-flight requests finish (up to `timeout`); close the rest."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        server = self.server
        if server is not None:
            server.close()
        self._all_closed = asyncio.Event()
        for conn in list(self.conns):
            conn.shutdown()
        if self.conns:
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout)
            except TimeoutError:
                for conn in list(self.conns):
                    conn.abort()
        self.meters.publish()
        if server is not None:
            self.server = None
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except TimeoutError:
                log.warning("fast path: listener did not close within 1 s")

    # -- lookups, bound once -------------------------------------------------------------

    def bound(self) -> _Bound:
        bound = self._bound
        config = self.gw.config
        if bound is None or bound.config is not config:
            bound = self._bound = _Bound(config, admin_authorizations(self.gw))
        return bound

    def request_id(self) -> str:
        return "%032x" % self._rand.getrandbits(128)  # noqa: UP031 - the fastest spelling

    def is_own(self, path: str) -> bool:
        """True for the gateway's own endpoints and the features' (the aiohttp router's)."""
        if path in self._own_exact:
            return True
        if self._own_prefixes and path.startswith(self._own_prefixes):
            return any(p.fullmatch(path) for p in self._own_patterns)
        return False


def _own_endpoints(
    app: web.Application, gw: Gateway
) -> tuple[frozenset[str], tuple[str, ...], tuple[re.Pattern[str], ...]]:
    """Paths registered on the aiohttp router besides the catch-all proxy route."""
    exact: set[str] = set()
    prefixes: list[str] = []
    patterns: list[re.Pattern[str]] = []
    proxy_handler = type(gw).handle
    for resource in app.router.resources():
        if any(getattr(r.handler, "__func__", None) is proxy_handler for r in resource):
            continue  # the catch-all: what the fast path serves itself
        info = resource.get_info()
        if "path" in info:
            exact.add(info["path"])
        elif "pattern" in info:
            patterns.append(info["pattern"])
            prefixes.append(info.get("formatter", "").split("{", 1)[0] or "/")
        elif "prefix" in info:
            prefixes.append(info["prefix"])
            patterns.append(re.compile(re.escape(info["prefix"]) + ".*"))
        else:  # a kind of resource this module does not know: everything goes general
            prefixes.append("/")
            patterns.append(re.compile(".*"))
    return frozenset(exact), tuple(prefixes), tuple(patterns)


# -- one client connection -----------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """A client connection on the fast path (until a request hands it to aiohttp)."""

    __slots__ = (
        "_bound",
        "_bridge_buf",
        "_drain",
        "_fatal",
        "_feeding",
        "_first_line",
        "bridge",
        "current",
        "ex",
        "gw",
        "head_bytes",
        "head_timer",
        "idle_since",
        "listener",
        "loop",
        "parser",
        "paused_reading",
        "paused_writing",
        "peer",
        "peer_b",
        "queue",
        "shutting",
        "transport",
    )

    def __init__(self, listener: FastListener) -> None:
        self.listener = listener
        self.gw = listener.gw
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.peer_b = b""
        self.ex: _Exchange | None = None  # being parsed
        self.current: _Exchange | None = None  # being answered
        self.queue: list[_Exchange] = []  # parsed, waiting for their turn
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_bytes = 0
        self.idle_since: float | None = self.loop.time()
        self.paused_reading = False
        self.paused_writing = False
        self._drain: asyncio.Future[None] | None = None
        self.shutting = False
        self.bridge: Any = None  # aiohttp's connection handler, once handed over
        self._bridge_buf: list[bytes] | None = None
        self._fatal: _Refusal | None = None
        self._feeding = False
        self._first_line: bytes | None = b""  # the connection's first bytes, until judged
        self._bound = listener.bound()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peername = transport.get_extra_info("peername")
        if isinstance(peername, (list, tuple)):
            self.peer = str(peername[0])
        elif peername:
            self.peer = str(peername)
        self.peer_b = self.peer.encode("latin-1", "replace")

    def data_received(self, data: bytes) -> None:
        self._feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._feeding = False
            self._upgraded(data[exc.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self._feeding = False
            self._parse_failed(exc)
            return
        finally:
            self._feeding = False
        if self.bridge is not None:
            self._bridge_flush()
            return
        current = self.current
        if current is not None and current.pending:
            current.pending = False  # its body did not come whole with the head: go on without
            self._begin(current)
        ex = self.ex
        if ex is not None and not ex.head_done:  # an incomplete head: bound it in size and time
            self.head_bytes += len(data)
            if self.head_bytes > self._bound.max_head:
                self._refuse(_Refusal(431, "header_too_large", "request header fields too large"))
                return
            if self._first_line is not None and self._versionless(data):
                return
            if self.head_timer is None:
                timeout = self.gw.config.limits.header_timeout
                if timeout:
                    self.head_timer = self.loop.call_later(timeout, self._head_expired)

    def _versionless(self, data: bytes) -> bool:
        """The connection's first request line ended without an HTTP version (HTTP/0.9): llhttp
        waits for headers that never come, so it is answered here, at once (`core.http1`)."""
        start = self._first_line = (self._first_line or b"") + data
        verdict = versionless_line(start)
        if verdict is None:
            return False
        self._first_line = None
        if verdict:
            refusal = version_refusal("0.9")
            assert refusal is not None
            self._refuse(_Refusal(refusal.status, refusal.code, refusal.message))
        return verdict

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        if self.bridge is not None:
            self._bridge_flush()
            self.transport.close()
            return
        cause = exc.__context__
        if isinstance(cause, _Refusal):
            self._refuse(cause)
            return
        if cause is not None:  # a callback failed: a bug here, not the client's fault
            log.error("fast path: request parsing failed", exc_info=cause)
        self._refuse(_Refusal(400, "bad_request", "malformed HTTP request"))

    def eof_received(self) -> bool | None:
        if self.bridge is not None:
            return self.bridge.eof_received()  # type: ignore[no-any-return]
        return None  # close the transport, as aiohttp does

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.listener.forget(self)
        if self.bridge is not None:
            self.bridge.connection_lost(exc)
            return
        queued, self.queue = self.queue, []
        for ex in queued:
            ex.lost = True
        ex = self.current
        if ex is not None:
            ex.lost = True
            ex.wake()
            if ex.task is not None:
                ex.task.cancel()  # the client is gone, so is its request (handler cancellation)
            elif ex.resp is not None:  # the quick lane was waiting for the backend
                self._leave_quick(ex, abort=True)
                self._end(ex, 499, ex.stream_sent, True)
        fut = self._drain
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionResetError("client connection lost"))
            fut.exception()

    def pause_writing(self) -> None:
        if self.bridge is not None:
            self.bridge.pause_writing()
            return
        self.paused_writing = True

    def resume_writing(self) -> None:
        if self.bridge is not None:
            self.bridge.resume_writing()
            return
        self.paused_writing = False
        ex = self.current
        if ex is not None and ex.stalled:
            ex.stalled = False  # the quick lane streams again
            if ex.resp is not None:
                ex.resp.conn.resume_reading()
        fut = self._drain
        if fut is not None:
            self._drain = None
            if not fut.done():
                fut.set_result(None)

    # -- connection control --------------------------------------------------------------

    def shutdown(self) -> None:
        """Draining: close now when idle, else after the response in progress."""
        self.shutting = True
        if self.current is None and self.bridge is None:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _pause(self) -> None:
        if not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused_reading and not self.queue:
            self.paused_reading = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    async def drain(self) -> None:
        if self.paused_writing:
            fut = self._drain = self.loop.create_future()
            await fut

    def _head_expired(self) -> None:
        self.head_timer = None
        ex = self.ex
        if ex is not None and not ex.head_done and self.bridge is None:
            self.abort()  # a slow client never finished its request head

    def _refuse(self, refusal: _Refusal) -> None:
        """A request that cannot be parsed or is too large: answer it, then close."""
        self._pause()
        current = self.current
        if current is not None:
            if not current.body_done:  # it is the body of the request in progress that failed
                current.fatal = refusal
                current.wake()
                if current.pending:
                    current.pending = False
                    self._begin(current)
            else:
                self._fatal = refusal  # a later request's: answered after the current response
            return
        self.transport.write(
            error_bytes(refusal.status, refusal.code, refusal.message, None, close=True)
        )
        self.transport.close()

    # -- httptools callbacks (client requests) --------------------------------------------

    def on_message_begin(self) -> None:
        ex = self.ex = _Exchange()
        self.idle_since = None
        self.head_bytes = 0
        self._bound = self.listener.bound()
        if self.bridge is not None:
            ex.bridged = True

    def on_url(self, url: bytes) -> None:
        ex = self.ex
        assert ex is not None
        ex.url += url
        if len(ex.url) > self._bound.max_field:
            raise _Refusal(431, "header_too_large", "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.ex
        assert ex is not None
        headers = ex.headers
        headers.append((name, value))
        bound = self._bound
        if len(headers) > bound.max_headers:
            raise _Refusal(431, "header_too_large", "request header fields too large")
        if len(value) > bound.max_field or len(name) > bound.max_field:
            raise _Refusal(431, "header_too_large", "request header fields too large")

    def on_headers_complete(self) -> None:
        ex = self.ex
        assert ex is not None
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        parser = self.parser
        ex.head_done = True
        self._first_line = None
        ex.method = parser.get_method()
        ex.version = version = parser.get_http_version()
        if version != "1.1" and self.bridge is None:
            refusal = version_refusal(version)
            if refusal is not None:
                raise _Refusal(refusal.status, refusal.code, refusal.message)
        ex.keep_alive = parser.should_keep_alive()
        lower: list[bytes] = []
        first: dict[bytes, bytes] = {}
        for name, value in ex.headers:
            lname = name.lower()
            lower.append(lname)
            if lname not in first:
                first[lname] = value
        ex.lower = lower
        ex.first = first
        if b"content-length" in first:
            length = ex.content_length = int(first[b"content-length"])  # llhttp checked it
            ex.has_body = length > 0
        if b"transfer-encoding" in first:
            if self.bridge is None:  # only `chunked` (core.http1); llhttp lets others by
                codings = [
                    value.decode("latin-1")
                    for (_, value), name in zip(ex.headers, lower, strict=False)
                    if name == b"transfer-encoding"
                ]
                refusal = transfer_coding_refusal(codings)
                if refusal is not None:
                    raise _Refusal(refusal.status, refusal.code, refusal.message)
            ex.chunked = ex.has_body = True
        if self.bridge is not None:
            self._bridge_head(ex)
            return
        if self.transport.is_closing():
            ex.lost = True  # pipelined behind an answer that closes the connection: dropped
            return
        ex.handoff = self._needs_general(ex, parser)
        if self.current is None and not self.queue:
            self._start(ex)
        else:
            self.queue.append(ex)
            self._pause()  # one pipelined request waiting is plenty

    def on_body(self, body: bytes) -> None:
        ex = self.ex
        assert ex is not None
        if ex.bridged:
            self._bridge_buf.append(chunk(body) if ex.chunked else body)  # type: ignore[union-attr]
            return
        ex.chunks.append(body)
        ex.buffered += len(body)
        if ex.buffered > HIGH_WATER:
            self._pause()
        if ex.waiter is not None:
            ex.wake()

    def on_message_complete(self) -> None:
        ex = self.ex
        assert ex is not None
        self.ex = None
        ex.body_done = True
        if ex.bridged:
            if ex.chunked:
                self._bridge_buf.append(_LAST_CHUNK)  # type: ignore[union-attr]
            return
        if ex.pending:
            ex.pending = False
            self._begin(ex)
        elif ex.waiter is not None:
            ex.wake()

    # -- which path ----------------------------------------------------------------------

    def _needs_general(self, ex: _Exchange, parser: Any) -> bool:
        """From the head alone: does this request need the general (aiohttp) path?"""
        gw = self.gw
        if not gw.config.fast_path or ex.version != "1.1":
            return True
        first = ex.first
        if b"upgrade" in first or b"expect" in first or parser.should_upgrade():
            return True
        url = ex.url
        if url[:1] != b"/" or not url.isascii() or b"#" in url:
            return True  # not plain origin-form: core.http1's rules, on the general path
        text = url.decode("ascii")
        raw_path = text.partition("?")[0]
        if not is_plain_path(raw_path):
            return True  # dot-segments: resolved for routing on the general path
        # what every matcher reads (core.http1): /%61pi is /api; %2F stays an encoded slash
        path = normalize_escapes(raw_path) if "%" in raw_path else raw_path
        ex.path = path
        if self.listener.is_own(path):
            return True
        headers = ex.view = _HeaderView(first)
        method = ex.method_s = _METHODS.get(ex.method) or ex.method.decode("ascii")
        compat = gw.compat
        if compat is not None:
            try:
                hit = compat.ruleset.match(
                    method, path, lambda: URL(text, encoded=True).query, headers
                )
            except Exception:
                log.exception("fast path: compat pre-check failed; using the general path")
                return True
            if hit is not None:
                return True
        state = ex.state = gw.state  # the snapshot this request is served with, start to end
        ex.route = state.router.match(method, path, headers)
        return False

    def _start(self, ex: _Exchange) -> None:
        """`ex` is next to be answered."""
        self.current = ex
        if ex.handoff:
            self._handoff(ex)
            return
        if ex.has_body and not ex.body_done and not ex.lost:
            route = ex.route
            length = ex.content_length
            if (
                self._feeding
                and route is not None
                and length is not None
                and length <= route.retry.buffer
            ):
                ex.pending = True  # most small bodies come with their head: wait for the parser
                return
        self._begin(ex)

    def _done(self, ex: _Exchange, close: bool) -> None:
        """The response to `ex` is out: the next request, keep-alive or close."""
        self.current = None
        if ex.lost:
            return
        if ex.fatal is not None:
            self.close()
            return
        fatal = self._fatal
        if fatal is not None:
            self._fatal = None
            self._refuse(fatal)
            return
        if close or not ex.body_done or not ex.keep_alive or self.shutting:
            self.close()
            return
        if self.queue:
            self._start(self.queue.pop(0))
            if self.bridge is None:
                self._resume()
            return
        self.idle_since = self.loop.time()
        if self.paused_reading:
            self._resume()

    # -- handoff to the general path -----------------------------------------------------

    def _handoff(self, ex: _Exchange) -> None:
        """Give this connection, from `ex` on, to aiohttp's connection handler."""
        self.listener.forget(self)
        self.current = None
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        proto = self.listener.general()
        self.bridge = proto
        buf = self._bridge_buf = []
        proto.connection_made(self.transport)
        tail: bytes | None = None
        for item in (ex, *self.queue):
            self._bridge_head(item)
            buf.extend(chunk(c) if item.chunked else c for c in item.chunks)
            item.chunks.clear()
            if item.body_done and item.chunked:
                buf.append(_LAST_CHUNK)
            if item.upgrade_tail is not None:
                tail = item.upgrade_tail
        self.queue.clear()
        if self.ex is not None:
            self.ex.bridged = True  # its head and body are serialized as they are parsed
        if self.paused_reading:
            self.paused_reading = False
            self.transport.resume_reading()
        if tail is not None:
            self._upgraded(tail)
        elif not self._feeding:  # else data_received flushes once the parser returns
            self._bridge_flush()

    def _bridge_head(self, ex: _Exchange) -> None:
        ex.bridged = True
        self._bridge_buf.append(  # type: ignore[union-attr]
            serialize_head(ex.method, ex.url, ex.version, ex.headers)
        )

    def _bridge_flush(self) -> None:
        buf = self._bridge_buf
        if buf:
            data = b"".join(buf)
            buf.clear()
            self.bridge.data_received(data)
        if self.ex is None and not self.transport.is_closing():
            # between two messages: from now on the bytes go to aiohttp untouched
            self.transport.set_protocol(self.bridge)
            self._bridge_buf = None

    def _upgraded(self, tail: bytes) -> None:
        """The request asked for an upgrade: what follows its head is not HTTP any more."""
        if self.bridge is None:
            # it waits behind a request still being answered: keep the bytes until its turn
            self._pause()
            if self.queue:
                self.queue[-1].upgrade_tail = tail
            return
        buf = self._bridge_buf or []
        buf.append(tail)
        data = b"".join(buf)
        self._bridge_buf = None
        if data:
            self.bridge.data_received(data)
        self.transport.set_protocol(self.bridge)
        if self.paused_reading:
            self.paused_reading = False
            self.transport.resume_reading()

    # -- serving: the quick lane (no task) -------------------------------------------------

    def _begin(self, ex: _Exchange) -> None:
        """Serve `ex` (as `Gateway.handle` and `_proxy`): errors answered here, the first
        attempt made here when it can be, the rest in a task."""
        gw = self.gw
        limits = gw.config.limits
        if gw.in_flight >= limits.max_concurrency:
            gw.metrics.rejected.labels("overloaded").inc()
            over = Overloaded(limits.retry_after)
            self.transport.write(
                error_bytes(
                    over.status_hint, over.code, over.message, None, (*over.headers.items(),)
                )
            )
            self._done(ex, False)
            return
        gw.in_flight += 1
        listener = self.listener
        listener.meters.in_flight += 1
        ex.counted = True
        ex.started = time.perf_counter()  # the loop's clock moves in whole milliseconds
        bound = ex.bound = self._bound
        state = ex.state
        rid = ex.first.get(bound.rid_lower)
        if rid:
            request_id = ex.request_id = rid.decode("utf-8", "surrogateescape")
            ex.rid_line = bound.rid_line + rid + _CRLF  # the same bytes the decode came from
        else:
            request_id = ex.request_id = listener.request_id()
            ex.rid_line = bound.rid_line + request_id.encode("ascii") + _CRLF
        outcome = ex.outcome = ProxyOutcome()
        try:
            lower = ex.lower
            host = ex.first.get(b"host")
            if host is None or not self._host_ok(host, lower):  # HTTP/1.1 needs one Host
                gw.metrics.rejected.labels("bad_host").inc()
                text = "missing Host header" if host is None else "invalid Host header"
                data = error_bytes(400, "bad_host", text, request_id, close=True)
                self.transport.write(data)
                self._end(ex, 400, len(data), True)
                return
            route = ex.route
            if route is None:
                data = error_bytes(404, "no_route", "no route matches this request", request_id)
                self.transport.write(data)
                self._end(ex, 404, len(data), False)
                return
            ex.route_name = route.name
            budget = ex.budget = state.budgets[route.name]
            budget.start()
            decision = ex.decision = self._decide(ex, route, state, outcome)
            ex.primary = decision.primary
            ex.owner = decision.owner
            max_body = route.max_body if route.max_body is not None else bound.max_body
            length = ex.content_length
            if length is not None and length > max_body:
                raise BodyTooLargeError(max_body)
            ex.deadline = self.loop.time() + route.timeouts.total
            if ex.has_body:
                if ex.fatal is not None or not ex.body_done or length is None:
                    self._spawn(ex, None)
                    return
                if length <= route.retry.buffer:
                    ex.body = b"".join(ex.chunks)
                    ex.chunks.clear()
                    ex.buffered = 0
            if not self._quick(ex):
                self._spawn(ex, None)
        except BodyTooLargeError as exc:
            gw.metrics.rejected.labels("body_too_large").inc()
            data = error_bytes(413, exc.code, exc.message, request_id, close=True)
            self.transport.write(data)
            self._end(ex, 413, len(data), True)
        except Exception:
            self._crashed(ex)

    def _host_ok(self, host: bytes, lower: list[bytes]) -> bool:
        """One Host, and a valid authority (RFC 9110 §7.2), as the general path checks it."""
        if lower.count(b"host") > 1:
            return False
        good = self.listener.good_hosts
        if host in good:
            return True
        if not _HOST_RE_B.match(host):
            return False
        if len(good) < 1024:
            good.add(host)
        return True

    def _crashed(self, ex: _Exchange) -> None:
        """A bug while serving `ex` outside a task: log it, cut the connection, book it."""
        log.exception("fast path: request failed")
        if ex.resp is not None:
            self._leave_quick(ex, abort=True)
        self.abort()
        self._end(ex, 500, 0, True)

    def _quick(self, ex: _Exchange) -> bool:
        """The first attempt on an idle pooled connection, without a task (False: cannot)."""
        loop = self.loop
        remaining = ex.deadline - loop.time()
        if remaining <= 0 or (ex.has_body and ex.body is None):
            return False
        name = ex.decision.attempts[0]
        pool = ex.state.upstreams[name].lean
        conn = pool.take()
        if conn is None:
            return False
        timeouts = ex.route.timeouts  # type: ignore[union-attr]
        per_try = min(remaining, timeouts.per_try) if timeouts.per_try else remaining
        body = ex.body
        try:
            head = self._request_head(
                ex, pool, len(body) if body is not None else ex.content_length
            )
        except BaseException:
            pool.release(conn)  # untouched: back where it came from
            raise
        resp = conn.begin(ex.method == b"HEAD")  # from here on `ex.resp` holds the connection
        resp.listener = self._on_upstream
        ex.resp = resp
        ex.name = name
        ex.try_deadline = loop.time() + per_try
        self.listener.watch(self)
        if body is None:
            conn.transport.write(head)
        elif len(body) < _SMALL_WRITE:
            conn.transport.write(head + body)
        else:
            conn.transport.writelines((head, body))
        return True

    def _leave_quick(self, ex: _Exchange, abort: bool = False) -> Response:
        """The quick lane stops waiting for `ex.resp` (a task or nobody takes over)."""
        resp = ex.resp
        assert resp is not None
        ex.resp = None
        resp.listener = None
        self.listener.waiting.discard(self)
        if abort:
            resp.conn.resp = None
            resp.conn.abort()
        return resp

    def _on_upstream(self, resp: Response) -> None:
        """The backend connection of the quick lane read something (or closed)."""
        ex = self.current
        if ex is None or ex.resp is not resp:
            resp.listener = None
            return
        try:
            if ex.streaming:
                self._stream_more(ex, resp)
            else:
                self._quick_answer(ex, resp)
        except Exception:
            self._crashed(ex)

    def _quick_answer(self, ex: _Exchange, resp: Response) -> None:
        if resp.error is not None:
            self._leave_quick(ex, abort=True)
            self._spawn(ex, UpstreamError(ex.name, "reset"))
            return
        if not resp.head_done:
            return
        route = ex.route
        assert route is not None
        retry = route.retry
        status = resp.status
        if status in retry.on_status and min(1 + retry.attempts, len(ex.decision.attempts)) > 1:
            self._leave_quick(ex)  # a possible replay: the task's job
            self._spawn(ex, resp)
            return
        book_answer(self.gw, ex.outcome, ex.name, status)  # as `Attempts.answered` books it
        if route.mirror is not None or route.capture is not None:
            self._parity(ex, ex.name)
        if not resp.complete:
            self._stream_start(ex, resp)
            return
        self._leave_quick(ex)
        status, sent, close = self._answer_whole(ex, resp)
        self._end(ex, status, sent, close)

    # -- serving: the quick lane streams an answer ------------------------------------------

    def _stream_start(self, ex: _Exchange, resp: Response) -> None:
        """The head is in, the body still arriving: send it on as it comes, from the backend
        connection's callbacks (as `_stream_back` does in a task)."""
        close = not ex.keep_alive or self.shutting or not ex.body_done
        head, chunked = self._response_head(ex, resp, close)
        ex.streaming = True
        ex.stream_chunked = chunked
        ex.stream_close = close
        ex.stream_sent = len(head)
        self.transport.write(head)
        self._stream_more(ex, resp)

    def _stream_more(self, ex: _Exchange, resp: Response) -> None:
        """Pass on what the backend sent since the last call; finish when its answer ended."""
        chunked = ex.stream_chunked
        transport = self.transport
        if resp.error is not None and not resp.chunks:
            self._stream_cut(ex)
            return
        tap = ex.tap
        for data in resp.take():
            if tap is not None:
                tap.feed(data)
            if chunked:
                if not data:
                    continue
                data = chunk(data)
            ex.stream_sent += len(data)
            transport.write(data)
        if resp.complete:
            if chunked:
                transport.write(_LAST_CHUNK)
                ex.stream_sent += len(_LAST_CHUNK)
            self._leave_quick(ex)
            resp.conn.finish(resp)
            if tap is not None:
                tap.finish_raw(resp.status, resp.headers)
            self._end(ex, resp.status, ex.stream_sent, ex.stream_close)
            return
        if resp.error is not None:
            self._stream_cut(ex)
            return
        assert ex.route is not None
        ex.try_deadline = resp.last_activity + ex.route.timeouts.total  # idle, as the task lane
        if self.paused_writing and not ex.stalled:
            ex.stalled = True  # the client reads slower than the backend sends: stop reading
            resp.conn.pause_reading()

    def _stream_cut(self, ex: _Exchange) -> None:
        """The backend failed or went quiet mid-answer: the status line is gone already, so
        the only honest signal left is a cut connection (as `_stream_back`)."""
        status = self._leave_quick(ex, abort=True).status
        self.gw.metrics.upstream_errors.labels(ex.name, "reset").inc()
        self.abort()
        self._end(ex, status, ex.stream_sent, True)

    def _quick_expired(self) -> None:
        ex = self.current
        if ex is None or ex.resp is None:
            return
        if ex.streaming:
            self._stream_cut(ex)
            return
        self._leave_quick(ex, abort=True)
        self._spawn(ex, UpstreamError(ex.name, "timeout"))

    def _spawn(self, ex: _Exchange, first: Response | UpstreamError | None) -> None:
        """Go on in a task; `first` is the result of the quick lane's attempt, if it made one."""
        task = ex.task = self.loop.create_task(self._run(ex, first))
        task.add_done_callback(lambda _: self._ran(ex, first))

    def _ran(self, ex: _Exchange, first: Response | UpstreamError | None) -> None:
        """The task of `ex` is over. A task cancelled before its first step (the client went
        away in the same loop turn) never ran `_run`, whose end books the exchange: book it
        here, and cut the quick lane's answer it was handed, so that nothing stays held."""
        if isinstance(first, Response):
            _let_go(first)
        self._end(ex, 499, ex.stream_sent, True)  # a no-op once `_run` ended it

    def _end(self, ex: _Exchange, status: int, sent: int, close: bool) -> None:
        """The request is over: release what it held, book it (`proxy.requestflow`)."""
        if ex.ended:
            return
        ex.ended = True
        gw = self.gw
        budget = ex.budget
        if budget is not None:
            ex.budget = None
            budget.finish()
        if ex.counted:
            ex.counted = False
            gw.in_flight -= 1
            self.listener.meters.in_flight -= 1
        started = ex.started
        if started is not None:
            book_request(
                gw,
                self.listener.meters.count,
                ex.route_name,
                ex.primary,
                ex.outcome,
                status,
                time.perf_counter() - started,
                ex.method_s or ex.method.decode("ascii"),
                ex.path,
                ex.request_id,
                sent,
                self.peer,
                ex.owner,
            )
        self._done(ex, close)

    def _decide(
        self, ex: _Exchange, route: Route, state: RuntimeState, outcome: ProxyOutcome
    ) -> Decision:
        return decide_request(
            self.gw,
            route,
            state,
            outcome,
            ex.view,
            _cookies,
            self.peer,
            self.listener.decisions,
        )

    # -- serving: the task -----------------------------------------------------------------

    async def _run(self, ex: _Exchange, first: Response | UpstreamError | None) -> None:
        status, sent, close = 500, 0, True
        gw = self.gw
        request_id = ex.request_id
        try:
            status, sent, close = await self._forward(ex, first)
        except _Refusal as exc:  # the request's body was malformed
            status = exc.status
            data = error_bytes(status, exc.code, exc.message, request_id, close=True)
            self.transport.write(data)
            sent = len(data)
        except BodyTooLargeError as exc:
            gw.metrics.rejected.labels("body_too_large").inc()
            status = 413
            data = error_bytes(413, exc.code, exc.message, request_id, close=True)
            self.transport.write(data)
            sent = len(data)
        except CutoverError as exc:
            status = exc.status_hint
            extra: tuple[tuple[str, str], ...] = ()
            backend = ex.outcome.backend
            if ex.bound.backend_header and backend:
                extra = ((ex.bound.backend_header, backend),)
            close = not ex.body_done
            data = error_bytes(status, exc.code, exc.message, request_id, extra, close=close)
            self.transport.write(data)
            sent = len(data)
        except asyncio.CancelledError:
            status = 499  # the client went away; the upstream request was cancelled with us
            if not ex.lost:
                self._end(ex, status, sent, True)
                raise
        except Exception:
            log.exception("fast path: request failed")
            self.abort()
        self._end(ex, status, sent, close)

    async def _forward(
        self, ex: _Exchange, first: Response | UpstreamError | None
    ) -> tuple[int, int, bool]:
        """The attempts (as `proxy.forwarder.forward`): status, bytes sent, close after."""
        gw = self.gw
        route = ex.route
        assert route is not None
        retry = route.retry
        timeouts = route.timeouts
        loop = self.loop
        state = ex.state
        decision = ex.decision
        outcome = ex.outcome
        max_body = route.max_body if route.max_body is not None else ex.bound.max_body
        body = ex.body
        replayable = True
        if ex.has_body and body is None:
            length = ex.content_length
            if length is not None and length <= retry.buffer:
                body = ex.body = await self._read_body(ex)
            else:
                replayable = False
        keyed = b"idempotency-key" in ex.first
        budget = state.budgets[route.name]
        method = ex.method_s or ex.method.decode("ascii")
        attempts = Attempts(gw, route, budget, outcome, method, keyed, replayable)
        transport = _LeanTransport(self, ex, body, timeouts.connect, max_body)
        _, resp = await run_attempts(
            attempts, decision.attempts, ex.deadline, transport, first=first, clock=loop.time
        )
        try:
            return await self._stream_back(ex, resp, timeouts.total)
        finally:
            _let_go(resp)

    async def _read_body(self, ex: _Exchange) -> bytes:
        """The whole request body (its Content-Length is within the route's replay buffer)."""
        parts: list[bytes] = []
        while True:
            if ex.chunks:
                parts.extend(ex.chunks)
                ex.chunks.clear()
                ex.buffered = 0
                self._resume()
            if ex.body_done:
                return b"".join(parts)
            if ex.fatal is not None:
                raise ex.fatal
            if ex.lost:
                raise IncompleteBodyError()
            fut = ex.waiter = self.loop.create_future()
            await fut

    def _request_head(self, ex: _Exchange, pool: LeanPool, length: int | None) -> bytes:
        """The head sent to the backend, as bytes: `proxy.headers`' upstream policy (the
        fields it drops, then X-Forwarded-* and the request id as `upstream_headers` adds them).

        `ex.url` is plain origin-form here (`_needs_general` hands any other target to the
        general path), so it follows the backend's base path as it came."""
        first = ex.first
        bound = ex.bound
        host = first.get(b"host")
        parts = [ex.method + b" " + pool.base_path + ex.url + b" HTTP/1.1\r\n"]
        if pool.host_line is not None:
            parts.append(pool.host_line)
        elif host:
            parts.append(b"Host: " + host + _CRLF)
        else:
            parts.append(pool.fallback_host)
        drop = bound.drop_up
        if b"connection" in first:
            drop = drop | connection_tokens(ex.headers, ex.lower)
        if b"authorization" in first and bound.admin_authorizations and self._admin_token(ex):
            drop = drop | _AUTHORIZATION
        append = parts.append
        for (name, value), lname in zip(ex.headers, ex.lower, strict=False):
            if lname not in drop:
                append(name + b": " + value + _CRLF)
        peer = self.peer_b
        if b"x-forwarded-for" in first:
            prior = [
                v
                for (_, v), n in zip(ex.headers, ex.lower, strict=False)
                if n == b"x-forwarded-for"
            ]
            append(b"X-Forwarded-For: " + b", ".join(prior) + b", " + peer + _CRLF)
        else:
            append(b"X-Forwarded-For: " + peer + _CRLF)
        if b"x-forwarded-proto" not in first:
            append(b"X-Forwarded-Proto: http\r\n")
        if host and b"x-forwarded-host" not in first:
            append(b"X-Forwarded-Host: " + host + _CRLF)
        append(ex.rid_line)
        if length is not None:
            append(b"Content-Length: %d\r\n\r\n" % length)
        elif ex.has_body:
            append(b"Transfer-Encoding: chunked\r\n\r\n")
        elif ex.method not in _BODYLESS_UP:
            append(b"Content-Length: 0\r\n\r\n")
        else:
            append(_CRLF)
        return b"".join(parts)

    def _admin_token(self, ex: _Exchange) -> bool:
        """Whether the request carries one of the gateway's admin tokens (logged once)."""
        authorizations = ex.bound.admin_authorizations
        for (_, value), lname in zip(ex.headers, ex.lower, strict=False):
            if lname == b"authorization":
                text = value.decode("utf-8", "surrogateescape")
                if carries_admin_token(text, authorizations):
                    if not ex.admin_token_dropped:
                        ex.admin_token_dropped = True
                        method = ex.method.decode("latin-1")
                        log_admin_token_dropped(self.gw, text, ex.request_id, method)
                    return True
        return False

    async def _attempt(
        self,
        ex: _Exchange,
        name: str,
        body: bytes | None,
        per_try: float,
        connect_timeout: float,
        max_body: int,
    ) -> Response:
        """One attempt: the request out, the response head in; raises `UpstreamError`."""
        loop = self.loop
        pool = ex.state.upstreams[name].lean
        attempt_deadline = loop.time() + per_try
        length = len(body) if body is not None else ex.content_length
        head = self._request_head(ex, pool, length)  # before a connection is held
        conn = pool.take()
        if conn is None:
            try:
                conn = await pool.connect(min(connect_timeout, per_try))
            except ConnectFailed as exc:
                if per_try <= connect_timeout and "timeout" in str(exc):
                    raise UpstreamError(name, "timeout") from exc
                raise UpstreamError(name, "connect") from exc
        resp = conn.begin(ex.method == b"HEAD")
        ex.expired = False
        timer = loop.call_at(attempt_deadline, ex.expire)
        try:
            if body is not None:
                if len(body) < _SMALL_WRITE:
                    conn.transport.write(head + body)
                else:
                    conn.transport.writelines((head, body))
            elif ex.has_body:
                await self._pump(ex, conn, max_body, head)
            else:
                conn.transport.write(head)
            if not resp.head_done:
                await resp.wait_head()
        except asyncio.CancelledError:
            conn.resp = None
            conn.abort()
            if ex.expired and not ex.lost:
                ex.task.uncancel()  # type: ignore[union-attr]
                raise UpstreamError(name, "timeout") from None
            raise
        except UpstreamFailure as exc:
            conn.resp = None
            conn.close()
            raise UpstreamError(name, "reset") from exc
        except _TooLargeUnsent:
            conn.resp = None  # nothing went out: the connection is as good as new
            pool.release(conn)
            raise
        except BaseException:
            conn.resp = None
            conn.abort()
            raise
        finally:
            timer.cancel()
        return resp

    async def _pump(self, ex: _Exchange, conn: Connection, max_body: int, head: bytes) -> None:
        """Stream the client's body to the backend, refusing more than `max_body` bytes.

        The head goes out with the first body bytes, so that a body over the limit from its
        first bytes on never reaches the backend at all.
        """
        chunked = ex.content_length is None
        seen = 0
        transport = conn.transport
        pending: bytes | None = head
        while True:
            if ex.fatal is not None:
                raise ex.fatal  # the body turned out malformed: not a byte more goes out
            if ex.chunks:
                out = [pending] if pending is not None else []
                for data in ex.chunks:
                    seen += len(data)
                    if seen > max_body:
                        if pending is not None:
                            raise _TooLargeUnsent(max_body)
                        raise BodyTooLargeError(max_body)
                    out.append(chunk(data) if chunked else data)
                transport.writelines(out)
                pending = None
                ex.chunks.clear()
                ex.buffered = 0
                self._resume()
                await conn.drain()
                continue
            if ex.body_done:
                break
            if ex.lost:
                raise IncompleteBodyError()
            resp = conn.resp
            if resp is not None and resp.error is not None:
                raise resp.error
            fut = ex.waiter = self.loop.create_future()
            await fut
        if pending is not None:
            transport.write(pending + _LAST_CHUNK if chunked else pending)
        elif chunked:
            transport.write(_LAST_CHUNK)

    def _response_head(self, ex: _Exchange, resp: Response, close: bool) -> tuple[bytes, bool]:
        """The head for the client (as `proxy.headers.downstream_headers`) and whether the body
        goes out chunked."""
        status = resp.status
        key = (status, resp.reason)
        line = _LINES.get(key)
        if line is None:
            line = status_line(status, resp.reason or None)
            if len(_LINES) < 1024:
                _LINES[key] = line
        parts = [line]
        append = parts.append
        headers = resp.headers
        lower = resp.lower
        bound = ex.bound
        drop = bound.drop_down
        if b"connection" in lower and (
            headers[lower.index(b"connection")][1].lower() not in _PLAIN_CONNECTION
            or lower.count(b"connection") > 1
        ):
            drop = drop | connection_tokens(headers, lower)
        for (name, value), lname in zip(headers, lower, strict=False):
            if lname not in drop:
                append(name + b": " + value + _CRLF)
        if b"date" not in lower:
            append(b"Date: " + _DATE.value() + _CRLF)
        append(ex.rid_line)
        outcome = ex.outcome
        append(bound.backend_line(outcome.backend or ""))
        if outcome.set_cookie is not None:
            append(b"Set-Cookie: " + outcome.set_cookie.encode("latin-1") + _CRLF)
        chunked = False
        if resp.content_length is not None and status != 204:
            append(b"Content-Length: %d\r\n" % resp.content_length)
        elif not (ex.method == b"HEAD" or status in _EMPTY_BODY_STATUSES or status < 200):
            chunked = True
            append(b"Transfer-Encoding: chunked\r\n")
        if close:
            append(b"Connection: close\r\n")
        append(_CRLF)
        return b"".join(parts), chunked

    def _answer_whole(self, ex: _Exchange, resp: Response) -> tuple[int, int, bool]:
        """The backend's whole answer is in: to the client in one write."""
        close = not ex.keep_alive or self.shutting or not ex.body_done
        head, chunked = self._response_head(ex, resp, close)
        status = resp.status
        if ex.method == b"HEAD" or status in _EMPTY_BODY_STATUSES:
            chunks: list[bytes] = []
            resp.chunks.clear()
        else:
            chunks = resp.take()
        resp.conn.finish(resp)
        body = chunks  # as decoded, for the mirror's copy
        if chunked:
            chunks = [chunk(c) for c in chunks if c]
            chunks.append(_LAST_CHUNK)
        size = len(head)
        if not chunks:
            self.transport.write(head)
        else:
            for c in chunks:
                size += len(c)
            if size < _SMALL_WRITE:
                self.transport.write(head + b"".join(chunks))
            else:
                self.transport.writelines([head, *chunks])
        tap = ex.tap
        if tap is not None:  # the copy once the client has its answer: never on its clock
            for data in body:
                tap.feed(data)
            tap.finish_raw(status, resp.headers)
        return status, size, close

    async def _stream_back(
        self, ex: _Exchange, resp: Response, idle_timeout: float
    ) -> tuple[int, int, bool]:
        """Copy the backend's answer to the client as it arrives (status, bytes sent, close)."""
        route = ex.route
        if route is not None and (route.mirror is not None or route.capture is not None):
            self._parity(ex, ex.outcome.backend or "")
        if resp.complete:
            return self._answer_whole(ex, resp)
        conn = resp.conn
        transport = self.transport
        close = not ex.keep_alive or self.shutting or not ex.body_done
        head, chunked = self._response_head(ex, resp, close)
        status = resp.status
        sent = len(head)
        transport.write(head)
        ex.expired = False
        try:
            if ex.method != b"HEAD" and status not in _EMPTY_BODY_STATUSES:
                ex.watchdog = self.loop.call_at(
                    resp.last_activity + idle_timeout, self._idle_check, ex, resp, idle_timeout
                )
                tap = ex.tap
                while True:
                    for data in resp.take():
                        if tap is not None:
                            tap.feed(data)
                        if chunked:
                            if not data:
                                continue
                            data = chunk(data)
                        sent += len(data)
                        transport.write(data)
                    if resp.complete and not resp.chunks:
                        break
                    if self.paused_writing:
                        await self.drain()
                        continue
                    await resp.wait_more()
                    if resp.error is not None and not resp.chunks:
                        raise resp.error
            if chunked:
                transport.write(_LAST_CHUNK)
                sent += len(_LAST_CHUNK)
        except (UpstreamFailure, asyncio.CancelledError) as exc:
            conn.resp = None
            conn.abort()
            if isinstance(exc, asyncio.CancelledError):
                if not ex.expired or ex.lost:
                    raise
                ex.task.uncancel()  # type: ignore[union-attr]
            # the status line is gone already: the only honest signal left is a cut connection
            self.gw.metrics.upstream_errors.labels(ex.outcome.backend or "", "reset").inc()
            self.abort()
            return status, sent, True
        finally:
            if ex.watchdog is not None:
                ex.watchdog.cancel()
                ex.watchdog = None
        conn.finish(resp)
        if ex.tap is not None:
            ex.tap.finish_raw(status, resp.headers)
        return status, sent, close

    def _parity(self, ex: _Exchange, backend: str) -> None:
        """A mirrored or captured route: parity samples the request (`Gateway.mirror`) as the
        general path's forwarder does, once `backend` answered; a tap copies the answer."""
        hook = self.gw.mirror
        if hook is None:
            return
        body = ex.body
        if body is None and not ex.has_body:
            body = b""  # None: a body that streamed through unbuffered
        headers = ex.headers
        if b"authorization" in ex.first and ex.bound.admin_authorizations and self._admin_token(ex):
            # as upstream (`_request_head`, `proxy.admin.without_admin_token`): never a copy
            headers = [h for h, n in zip(headers, ex.lower, strict=False) if n != b"authorization"]
        method = ex.method_s or ex.method.decode("ascii")
        head = (method, ex.url, headers, self.peer, "http")  # decoded only for a copy
        ex.tap = hook.sample(ex.route, backend, method, body, ex.request_id, head)  # type: ignore[arg-type]

    def _idle_check(self, ex: _Exchange, resp: Response, idle_timeout: float) -> None:
        """The streamed answer went quiet for `idle_timeout`: end it (as the general path)."""
        ex.watchdog = None
        if resp.complete or ex.lost:
            return
        due = resp.last_activity + idle_timeout
        if self.loop.time() >= due:
            ex.expire()
        else:
            ex.watchdog = self.loop.call_at(due, self._idle_check, ex, resp, idle_timeout)
