"""The general (aiohttp) path: send a request to its attempts, stream the answer.

`routing/` decides (which backends, in which order, whether a replay is allowed); this module
does the network. Bodies stream both ways; a request body is buffered only when it is small
enough to be replayed (the route's `retry.buffer`), so that a failed attempt can go on to the
next backend. Plain requests take the fast path instead (`proxy.fastpath`), which books its
attempts the same way (`proxy.attempts`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from cutover.core.errors import (
    BodyTooLargeError,
    IncompleteBodyError,
    UpstreamError,
    error_response,
)
from cutover.proxy.attempts import Attempts
from cutover.proxy.headers import downstream_headers, upstream_headers
from cutover.routing.decision import Decision
from cutover.routing.replay import Failure

if TYPE_CHECKING:
    from cutover.core.config_model import Route
    from cutover.proxy.attempts import ProxyOutcome
    from cutover.proxy.server import Gateway

CHUNK = 2**16


class AttemptPlan(Protocol):
    """How one request is changed per backend (compat rules); None everywhere = as it came.

    `body` replaces the client's body for every attempt (already read, so replayable);
    `target(backend)` gives the raw path+query and body for that backend (None: unchanged);
    `wants_response(backend)` asks for the answer to be handed to `respond` instead of streamed;
    `headers` are added to every answer.
    """

    body: bytes | None
    headers: tuple[tuple[str, str], ...]

    def target(self, backend: str) -> tuple[str, bytes | None] | None: ...

    def wants_response(self, backend: str) -> bool: ...

    async def respond(
        self, request: web.BaseRequest, resp: aiohttp.ClientResponse, outcome: ProxyOutcome
    ) -> web.StreamResponse: ...


class MirrorTap(Protocol):
    """Sees a response streamed to the client (parity's shadow traffic)."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self, status: int, headers: CIMultiDictProxy[str]) -> None: ...


class MirrorHook(Protocol):
    """`Gateway.mirror`: a tap for a request about to be answered by `primary`, or None.

    `body` is the buffered request body (b"" for none), None when it streamed unbuffered.
    """

    def tap(
        self,
        request: web.BaseRequest,
        route: Route,
        primary: str,
        body: bytes | None,
        request_id: str,
    ) -> MirrorTap | None: ...

    def compat(self, request: web.BaseRequest, route: Route, body: bytes | None) -> None:
        """A request a compat rule handles: captured as the client sent it, never mirrored."""


def classify_failure(exc: BaseException) -> tuple[Failure, str]:
    """Map the client library's errors to the replay rules' failure kinds."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Failure.CONNECT, "connect"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure.CONNECT, "connect"
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return Failure.TIMEOUT, "timeout"
    return Failure.RESET, "reset"


class _LimitedBody:
    """The client's body, chunk by chunk, refusing to pass more than `limit` bytes.

    The client library wraps errors raised while it sends a body, so `tripped` tells the
    caller that the limit, not the backend, ended the attempt.
    """

    __slots__ = ("limit", "stream", "tripped")

    def __init__(self, stream: aiohttp.StreamReader, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.tripped = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        while True:
            chunk = await self.stream.readany()
            if not chunk:
                return
            seen += len(chunk)
            if seen > self.limit:
                self.tripped = True
                raise BodyTooLargeError(self.limit)
            yield chunk


async def forward(
    request: web.BaseRequest,
    gw: Gateway,
    decision: Decision,
    request_id: str,
    outcome: ProxyOutcome,
    plan: AttemptPlan | None = None,
) -> web.StreamResponse:
    """Try the decision's attempts in order and stream the first acceptable answer back.

    With a `plan` (compat rules), each attempt's path, query and body come from it, and an
    answer it asks for is handed to it whole instead of streamed.
    """
    state = gw.state
    route = state.routes_by_name[decision.route]
    retry = route.retry
    timeouts = route.timeouts
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeouts.total
    max_body = route.max_body if route.max_body is not None else gw.config.limits.max_body

    length = request.content_length
    if length is not None and length > max_body:
        raise BodyTooLargeError(max_body)
    has_body = request.body_exists
    body: bytes | None = None
    replayable = True
    if plan is not None and plan.body is not None:
        body, has_body = plan.body, True
    elif has_body:
        if length is not None and length <= retry.buffer:
            try:
                body = await request.content.readexactly(length) if length else b""
            except asyncio.IncompleteReadError as exc:
                raise IncompleteBodyError() from exc
        else:
            replayable = False

    method = request.method
    peer = request.remote or ""
    scheme = request.scheme
    host = request.headers.get("Host")
    attempts = Attempts(
        gw,
        route,
        state.budgets[route.name],
        outcome,
        method,
        "Idempotency-Key" in request.headers,
        replayable,
    )
    tries = decision.attempts[: attempts.limit]
    try:
        for index, name in enumerate(tries):
            upstream = state.upstreams[name]
            remaining = deadline - loop.time()
            if attempts.expired(remaining) or not attempts.may_try(index, name):
                break
            per_try = min(remaining, timeouts.per_try) if timeouts.per_try else remaining
            backend = upstream.backend
            host_header = backend.upstream_host
            headers = upstream_headers(
                request.headers,
                peer=peer,
                scheme=scheme,
                host=host,
                host_header=host_header,
                request_id_name=gw.config.headers.request_id,
                request_id=request_id,
                content_length=None if body is not None else length,
            )
            data: bytes | AsyncIterator[bytes] | None = body
            limited: _LimitedBody | None = None
            if has_body and body is None:
                limited = _LimitedBody(request.content, max_body)
                data = limited.__aiter__()
            raw_path = request.raw_path  # the origin-form target as sent (core.http1)
            if plan is not None and (target := plan.target(name)) is not None:
                raw_path = target[0]
                if target[1] is not None:
                    data = target[1]
            url = upstream.url(raw_path)
            try:
                async with asyncio.timeout(per_try):
                    resp = await upstream.session.request(
                        method,
                        url,
                        headers=headers,
                        data=data,
                        allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(
                            total=None, connect=timeouts.connect, sock_connect=timeouts.connect
                        ),
                        server_hostname=upstream.server_hostname,
                    )
            except BodyTooLargeError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if limited is not None and limited.tripped:
                    raise BodyTooLargeError(max_body) from exc
                kind_failure, kind = classify_failure(exc)
                if isinstance(exc, asyncio.TimeoutError) and not isinstance(
                    exc, aiohttp.ClientError
                ):
                    kind_failure, kind = Failure.TIMEOUT, "timeout"
                attempts.failed(index, name, kind_failure, kind)
                continue
            try:
                if not attempts.answered(index, name, resp.status, more=index + 1 < len(tries)):
                    continue  # worth the next backend (a retry status the replay rules allow)
                if plan is not None:
                    if gw.mirror is not None:
                        gw.mirror.compat(request, route, body if has_body else b"")
                    if plan.wants_response(name):
                        return await plan.respond(request, resp, outcome)
                    return await _stream_back(
                        request, gw, resp, outcome, request_id, route.timeouts.total, plan.headers
                    )
                hook = gw.mirror  # parity: shadow a sample once the client has its answer
                mirrored = body if has_body else b""
                tap = hook.tap(request, route, name, mirrored, request_id) if hook else None
                return await _stream_back(
                    request, gw, resp, outcome, request_id, route.timeouts.total, tap=tap
                )
            finally:
                resp.release()  # however the exchange ended; a cut one closes its connection

        raise attempts.give_up(decision.primary)
    finally:
        attempts.release()  # a fallback attempt cut short (client gone, error) ends here too


async def _stream_back(
    request: web.BaseRequest,
    gw: Gateway,
    resp: aiohttp.ClientResponse,
    outcome: ProxyOutcome,
    request_id: str,
    idle_timeout: float,
    added: tuple[tuple[str, str], ...] = (),
    tap: MirrorTap | None = None,
) -> web.StreamResponse:
    """Copy the upstream response to the client as it arrives (`added`: more headers).

    A `tap` sees every chunk, and the status and headers once the client has it all.
    """
    backend = outcome.backend or ""
    extra = [(gw.config.headers.request_id, request_id)]
    if gw.config.headers.backend:
        extra.append((gw.config.headers.backend, backend))
    headers = downstream_headers(resp.headers, extra)
    for name, value in added:
        headers.add(name, value)
    if outcome.set_cookie is not None:
        headers.add("Set-Cookie", outcome.set_cookie)
    out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
    length = resp.headers.get("Content-Length")
    if length is not None and length.isdigit():
        out.content_length = int(length)
    try:
        await out.prepare(request)
        if request.method != "HEAD" and resp.status not in (204, 304):
            content = resp.content
            while True:
                async with asyncio.timeout(idle_timeout):
                    chunk = await content.readany()
                if not chunk:
                    break
                await out.write(chunk)
                if tap is not None:
                    tap.feed(chunk)
        await out.write_eof()
    except (TimeoutError, aiohttp.ClientError, OSError):
        # The status line is gone already: the only honest signal left is a cut connection.
        resp.close()
        gw.metrics.upstream_errors.labels(backend, "reset").inc()
        if request.transport is not None:
            request.transport.close()
        return out
    finally:
        resp.release()
    if tap is not None:
        tap.finish(resp.status, resp.headers)
    return out


async def forward_websocket(
    request: web.BaseRequest,
    gw: Gateway,
    decision: Decision,
    request_id: str,
    outcome: ProxyOutcome,
) -> web.StreamResponse:
    """Pass a WebSocket session through: connect upstream first, then accept the client."""
    state = gw.state
    route = state.routes_by_name[decision.route]
    headers: CIMultiDict[str] = CIMultiDict()
    for name in ("Cookie", "Authorization", "Origin", "User-Agent"):
        value = request.headers.get(name)
        if value is not None:
            headers[name] = value
    headers[gw.config.headers.request_id] = request_id
    headers["X-Forwarded-For"] = request.remote or ""
    protocols = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    last_kind = "connect"
    for name in decision.attempts[: 1 + route.retry.attempts]:
        upstream = state.upstreams[name]
        url = upstream.url(request.raw_path)
        try:
            ws_up = await upstream.session.ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                autoping=False,
                server_hostname=upstream.server_hostname,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if 300 <= exc.status < 500:
                # The backend answered and said no (e.g. 404): that answer is the client's.
                outcome.backend = name
                return error_response(
                    exc.status,
                    "websocket_refused",
                    f"the backend refused the WebSocket upgrade with status {exc.status}",
                    request_id,
                )
            gw.metrics.upstream_errors.labels(name, "status").inc()
            last_kind = "status"
            continue
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            _, last_kind = classify_failure(exc)
            gw.metrics.upstream_errors.labels(name, last_kind).inc()
            outcome.failures.append((name, last_kind))
            continue
        outcome.backend = name
        try:
            ws_down = web.WebSocketResponse(
                protocols=[ws_up.protocol] if ws_up.protocol else (), autoping=False
            )
            await ws_down.prepare(request)  # may refuse the client's handshake, or be cancelled
            await _pump_websocket(ws_down, ws_up)
        finally:
            if not ws_up.closed:  # the upstream session never started: it must not linger
                await ws_up.close()
        return ws_down
    raise UpstreamError(decision.primary, last_kind)


async def _pump_websocket(down: web.WebSocketResponse, up: aiohttp.ClientWebSocketResponse) -> None:
    async def copy(src, dst) -> None:  # type: ignore[no-untyped-def]
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await dst.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await dst.pong(msg.data)
            else:
                break
        await dst.close(code=src.close_code or aiohttp.WSCloseCode.OK)

    tasks = [asyncio.ensure_future(copy(down, up)), asyncio.ensure_future(copy(up, down))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await up.close()
        await down.close()
