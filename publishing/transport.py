"""One POST to a target and what its answer means for delivery (done, retry, give up).

    2xx                     done
    429                     retry, after Retry-After when given (flow control, not a fault)
    408, 5xx, no answer     retry with backoff
    other 4xx               give up: dead-letter with the reason

Formatters build payloads; senders (one per target type) call `post_json` with the engine's
one `TargetClient` and hand back a `SendOutcome`.

The client is the gateway's own HTTP/1.1 client (`proxy.pool.LeanPool`, the fast path's): one
pool per origin (scheme, host, port, TLS server name), made on first use, at most
`PER_ORIGIN` connections each and `TOTAL` exchanges at once over all of them, idle connections
kept `KEEPALIVE` seconds, all closed at `close`. What goes out and what comes back:

- request: `<method> <path?query> HTTP/1.1`. A URL whose path and query are already valid URI
  text (RFC 3986 characters, every `%` an escape) goes out byte for byte as written
  (percent-encoding preserved, the fragment dropped); any other is encoded as `yarl` (the URL
  library the gateway already uses) and so aiohttp's client did (characters outside URI text
  as UTF-8 escapes, a stray `%` as `%25`). aiohttp also decoded escapes of characters that need
  none (`%7E` as `~`) and removed dot segments in every URL: a valid URL now goes out as
  written instead. `Host` is the
  host (IDNA, IPv6 in brackets) with the port when it is not the scheme's default. Then
  `Content-Type`, `User-Agent`, the sender's headers (each replaces a default of the same name,
  whatever its case; a sender's `Content-Length` or `Transfer-Encoding` is ignored),
  `Accept: */*`, `Accept-Encoding: gzip, deflate`, `Authorization: Basic` from the URL's
  `user:password` when the sender gave no `Authorization`, and `Content-Length`.
- TLS: https targets are verified against the system's CA store (`ssl.create_default_context`:
  `SSL_CERT_FILE` / `SSL_CERT_DIR` name other bundles), SNI and certificate name = the host,
  as the aiohttp client did; the publishing config has no TLS options.
- answer: 1xx interim answers skipped; status, `Retry-After`, and the body up to `MAX_ANSWER`
  bytes, whether framed by Content-Length, chunked or the end of the connection; a gzip or
  deflate body is decompressed up to the same bound. `br` is no longer offered.
- one deadline, `timeout`, over connect, request and the whole answer; on the deadline,
  a failure or cancellation the connection is aborted; it is kept only after a complete answer
  that allows it. A kept-alive connection the target closed while idle is retried once on a
  new connection (`proxy.pool.send_whole` says when and why that is safe here).
- failures are outcomes, never exceptions: "timed out after …s", "connect failed (…)",
  "network error (…)"; none of them holds the URL (a Slack webhook URL is a secret).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import re
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from yarl import URL

from cutover.core.clock import Clock
from cutover.core.waitline import WaitLine
from cutover.proxy.pool import (
    ConnectFailed,
    ConnectTimeout,
    ExchangeTimeout,
    LeanPool,
    UpstreamClosed,
    UpstreamFailure,
    Whole,
    send_whole,
)

USER_AGENT = "cutover-publisher/1"
_BODY_KEPT = 500  # characters of a target's answer kept for the API and the DLQ
MAX_RETRY_AFTER = 3600.0
MAX_ANSWER = 64 * 1024  # bytes of a target's answer read (after decompression)
PER_ORIGIN = 20  # connections to one origin (aiohttp's limit_per_host before)
TOTAL = 100  # exchanges at once over every origin (aiohttp's limit before)
KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default before)
_MAX_POOLS = 64  # origins with a pool; past it, pools with no connection are dropped
_MAX_URLS = 1024  # parsed URLs remembered


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    status: int | None  # HTTP status; None when no answer came
    retry: bool = False  # a failure worth trying again
    retry_after: float | None = None  # seconds the target asked us to wait
    error: str = ""
    body: str = ""  # the start of the target's answer
    throttled: bool = False  # 429: slow down, the target is fine
    data: Any = None  # the parsed JSON answer, when there was one

    @classmethod
    def done(cls, status: int | None = None, note: str = "", data: Any = None) -> SendOutcome:
        return cls(True, status, error=note, data=data)


@dataclass(frozen=True, slots=True)
class SendContext:
    """What a sender may use: the engine's client, the clock, the reference store."""

    client: TargetClient
    clock: Clock
    get_ref: Callable[[str], Awaitable[str | None]]  # fingerprint -> remembered id
    put_ref: Callable[[str, str], Awaitable[None]]
    drop_ref: Callable[[str], Awaitable[None]]


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def judge(status: int, body: str, retry_after: float | None, data: Any = None) -> SendOutcome:
    """The delivery verdict for an HTTP answer."""
    if 200 <= status < 300:
        return SendOutcome(True, status, body=body, data=data)
    if status == 429:
        return SendOutcome(
            False,
            status,
            retry=True,
            retry_after=retry_after,
            error="429 rate limited",
            body=body,
            throttled=True,
        )
    if status == 408 or status >= 500:
        return SendOutcome(
            False, status, retry=True, retry_after=retry_after, error=f"HTTP {status}", body=body
        )
    return SendOutcome(False, status, retry=False, error=f"HTTP {status} (not retried)", body=body)


async def post_json(
    ctx: SendContext,
    url: str,
    body: object,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    method: str = "POST",
    content_type: str = "application/json",
) -> SendOutcome:
    """Send `body` as JSON; network trouble is a retryable SendOutcome, never an exception."""
    return await ctx.client.send(
        url,
        orjson.dumps(body),
        headers=headers,
        timeout=timeout,
        method=method,
        content_type=content_type,
        clock=ctx.clock,
    )


def origin_form(url: str, parsed: URL | None = None) -> str:
    """The request target (`/path?query`) for an absolute URL: as written when that is valid
    URI text, else encoded as `yarl` does (the module docstring says more)."""
    parts = urlsplit(url)
    written = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if written.startswith("/") and _URI_TEXT.fullmatch(written):
        return written
    return (parsed or URL(url)).raw_path_qs


class _Target:
    """What one URL means on the wire, worked out once per URL."""

    __slots__ = ("auth", "host_line", "key", "request_target")

    def __init__(self, url: str) -> None:
        u = URL(url)
        host = u.raw_host
        if u.scheme not in ("http", "https") or not host or u.port is None:
            raise ValueError("not an http:// or https:// URL with a host")
        self.key = (u.scheme, host, u.port, host if u.scheme == "https" else None)
        self.request_target = b" " + origin_form(url, u).encode("ascii") + b" HTTP/1.1\r\n"
        self.host_line = b"Host: " + str(u.host_port_subcomponent).encode("ascii") + b"\r\n"
        self.auth = b""
        if u.raw_user is not None or u.raw_password is not None:
            pair = f"{u.user or ''}:{u.password or ''}"
            try:
                raw = pair.encode("latin-1")  # as aiohttp's BasicAuth
            except UnicodeEncodeError:
                raw = pair.encode("utf-8")
            self.auth = b"Authorization: Basic " + base64.b64encode(raw) + b"\r\n"


_UA_LINE = f"User-Agent: {USER_AGENT}\r\n".encode()
_ACCEPT_LINES = {
    (False, False): b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n",
    (True, False): b"Accept-Encoding: gzip, deflate\r\n",
    (False, True): b"Accept: */*\r\n",
    (True, True): b"",
}
# A path and query as valid URI text: unreserved, sub-delims, ":@/?" and percent escapes.
_URI_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}


def request_head(
    target: _Target, method: str, content_type: str, headers: Mapping[str, str] | None, size: int
) -> bytes:
    """The request head for `target` (see the module docstring for what it holds)."""
    given: set[str] = set()
    extra = ""
    if headers:
        for name, value in headers.items():
            lname = name.lower()
            if lname in _FRAMING:
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError("a header with a line break or colon in its name or value")
            given.add(lname)
            extra += f"{name}: {value}\r\n"
    parts = [method.encode("ascii") + target.request_target]
    if "host" not in given:
        parts.append(target.host_line)
    if "content-type" not in given:
        parts.append(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n")
    if "user-agent" not in given:
        parts.append(_UA_LINE)
    if extra:
        parts.append(extra.encode("utf-8"))
    parts.append(_ACCEPT_LINES["accept" in given, "accept-encoding" in given])
    if target.auth and "authorization" not in given:
        parts.append(target.auth)
    parts.append(b"Content-Length: %d\r\n\r\n" % size)
    return b"".join(parts)


def _decoded(whole: Whole) -> bytes:
    """The answer's body, decompressed (gzip, deflate) up to `MAX_ANSWER` bytes."""
    raw = whole.body
    coding = whole.header(b"content-encoding")
    if not raw or coding is None:
        return raw
    wbits = _WBITS.get(coding.strip().lower())
    if wbits is None:
        return raw  # identity, or a coding never asked for: as it came
    try:
        out = zlib.decompressobj(wbits).decompress(raw, MAX_ANSWER)
    except zlib.error:
        if wbits != zlib.MAX_WBITS:
            raise
        out = zlib.decompressobj(-zlib.MAX_WBITS).decompress(raw, MAX_ANSWER)  # raw deflate
    return out


def tls_context() -> ssl.SSLContext:
    """Verified TLS as the aiohttp client had it: the system's CAs, host names checked."""
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TargetClient:
    """The delivery engine's HTTP client: a `LeanPool` per target origin (see the module
    docstring). `active`: exchanges under way; `busy`: connections out on one or being opened.
    Both are zero once deliveries stopped."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        per_origin: int = PER_ORIGIN,
        total: int = TOTAL,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.tls = tls or tls_context()
        self.per_origin = per_origin
        self.total = total
        self.keepalive = keepalive
        self.pools: dict[tuple[str, str, int, str | None], LeanPool] = {}
        self.active = 0
        self.closed = False
        self._targets: dict[str, _Target] = {}
        self._waiters = WaitLine()

    @property
    def busy(self) -> int:
        return sum(pool.busy for pool in self.pools.values())

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _MAX_URLS:
                self._targets.clear()
            target = self._targets[url] = _Target(url)
        return target

    def _pool(self, target: _Target) -> LeanPool:
        pool = self.pools.get(target.key)
        if pool is None:
            if len(self.pools) >= _MAX_POOLS:
                for key, old in list(self.pools.items()):
                    if old.open == 0:
                        del self.pools[key]
            scheme, host, port, server_name = target.key
            pool = self.pools[target.key] = LeanPool.for_origin(
                scheme,
                host,
                port,
                ssl_context=self.tls if scheme == "https" else None,
                server_name=server_name,
                limit=self.per_origin,
                keepalive=self.keepalive,
            )
        return pool

    async def send(
        self,
        url: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        method: str,
        content_type: str,
        clock: Clock,
    ) -> SendOutcome:
        """`data` to `url`, judged; failures as outcomes (the module docstring lists them)."""
        try:
            target = self._target(url)
            request = request_head(target, method, content_type, headers, len(data)) + data
        except (ValueError, UnicodeError) as exc:
            # A request that cannot be written never will be: given up (the DLQ says why).
            return SendOutcome(False, None, error=f"invalid request ({exc})")
        if self.closed:
            return SendOutcome(False, None, retry=True, error="network error (client closed)")
        pool = self._pool(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            if self.active >= self.total:
                await self._slot(deadline)
            self.active += 1
            try:
                whole = await send_whole(
                    pool, request, deadline, max_body=MAX_ANSWER, head_only=method == "HEAD"
                )
            finally:
                self.active -= 1
                if self._waiters:
                    self._waiters.wake_one()
            raw = _decoded(whole)
        except (ConnectTimeout, ExchangeTimeout, TimeoutError):
            return SendOutcome(False, None, retry=True, error=f"timed out after {timeout:g}s")
        except ConnectFailed as exc:
            os_error = exc.os_error
            reason = (os_error.strerror if os_error is not None else None) or str(exc)
            return SendOutcome(False, None, retry=True, error=f"connect failed ({reason})")
        except UpstreamClosed:
            return SendOutcome(False, None, retry=True, error="network error (connection closed)")
        except UpstreamFailure:
            return SendOutcome(False, None, retry=True, error="network error (malformed answer)")
        except zlib.error:
            return SendOutcome(False, None, retry=True, error="network error (undecodable body)")
        except OSError as exc:
            return SendOutcome(
                False, None, retry=True, error=f"network error ({type(exc).__name__})"
            )
        text = raw.decode("utf-8", "replace")
        data_out = None
        if raw[:1] in (b"{", b"["):
            try:
                data_out = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data_out = None
        retry_after = whole.header(b"retry-after")
        wait = retry_after_seconds(
            retry_after.decode("latin-1") if retry_after is not None else None, clock.now()
        )
        return judge(whole.status, text[:_BODY_KEPT], wait, data_out)

    async def _slot(self, deadline: float) -> None:
        """Wait (first come, first served) until fewer than `total` exchanges are under way."""
        while self.active >= self.total:
            if self.closed:
                raise ConnectFailed("client closed")
            await self._waiters.wait(deadline)

    async def close(self) -> None:
        """Every pool's connections closed; later sends fail as outcomes."""
        self.closed = True
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            await pool.close()
        self._waiters.wake_all()
