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
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

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
from cutover.proxy.pipeline import run_attempts, upstream_errors
from cutover.routing.decision import Decision

if TYPE_CHECKING:
    from cutover.core.config_model import Route
    from cutover.proxy.attempts import ProxyOutcome
    from cutover.proxy.server import Gateway, RuntimeState

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

    def finish_raw(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """`finish` with the backend's raw header fields (the fast path's answer)."""


class MirrorHook(Protocol):
    """`Gateway.mirror`: a tap for a request about to be answered by `primary`, or None.

    `body` is the buffered request body (b"" for none), None when it streamed unbuffered.
    `sample` is the one sampling (the fast path hands it the raw head); `tap` calls it with
    the general path's aiohttp request.
    """

    def tap(
        self,
        request: web.BaseRequest,
        route: Route,
        primary: str,
        body: bytes | None,
        request_id: str,
    ) -> MirrorTap | None: ...

    def sample(
        self,
        route: Route,
        primary: str,
        method: str,
        body: bytes | None,
        request_id: str,
        copy: Callable[[], Any] | tuple[str, bytes, list[tuple[bytes, bytes]], str, str],
    ) -> MirrorTap | None:
        """The one sampling; `copy` the fast path's raw head (method, request target, raw
        header fields, peer, scheme) or what makes the general path's copy."""

    def compat(self, request: web.BaseRequest, route: Route, body: bytes | None) -> None:
        """A request a compat rule handles: captured as the client sent it, never mirrored."""


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


class ClientTransport:
    """The aiohttp client as the attempt loop's transport, for one request: each `send`
    builds that backend's request (headers, the compat plan's target and body) and returns the
    upstream's response once its head is in."""

    __slots__ = (
        "body",
        "gw",
        "has_body",
        "length",
        "limited",
        "max_body",
        "plan",
        "request",
        "request_id",
        "state",
        "timeout",
    )

    def __init__(
        self,
        request: web.BaseRequest,
        gw: Gateway,
        state: RuntimeState,
        route: Route,
        request_id: str,
        body: bytes | None,
        has_body: bool,
        max_body: int,
        plan: AttemptPlan | None,
    ) -> None:
        self.request = request
        self.gw = gw
        self.state = state
        self.request_id = request_id
        self.body = body
        self.has_body = has_body
        self.length = request.content_length
        self.max_body = max_body
        self.plan = plan
        self.timeout = state.client_timeouts[route.name]
        self.limited: _LimitedBody | None = None

    async def send(self, backend: str, per_try: float) -> aiohttp.ClientResponse:
        request = self.request
        upstream = self.state.upstreams[backend]
        body = self.body
        headers = upstream_headers(
            request.headers,
            peer=request.remote or "",
            scheme=request.scheme,
            host=request.headers.get("Host"),
            host_header=upstream.backend.upstream_host,
            request_id_name=self.gw.config.headers.request_id,
            request_id=self.request_id,
            content_length=None if body is not None else self.length,
        )
        data: bytes | AsyncIterator[bytes] | None = body
        limited: _LimitedBody | None = None
        if self.has_body and body is None:
            limited = self.limited = _LimitedBody(request.content, self.max_body)
            data = limited.__aiter__()
        raw_path = request.raw_path  # the origin-form target as sent (core.http1)
        plan = self.plan
        if plan is not None and (target := plan.target(backend)) is not None:
            raw_path = target[0]
            if target[1] is not None:
                data = target[1]
        try:
            with upstream_errors(backend):
                async with asyncio.timeout(per_try):
                    return await upstream.session.request(
                        request.method,
                        upstream.url(raw_path),
                        headers=headers,
                        data=data,
                        allow_redirects=False,
                        timeout=self.timeout,
                        server_hostname=upstream.server_hostname,
                    )
        except UpstreamError as exc:
            if limited is not None and limited.tripped:
                raise BodyTooLargeError(self.max_body) from exc
            raise


async def forward(
    request: web.BaseRequest,
    gw: Gateway,
    decision: Decision,
    request_id: str,
    outcome: ProxyOutcome,
    plan: AttemptPlan | None = None,
) -> web.StreamResponse:
    """Try the decision's attempts in order (`proxy.pipeline.run_attempts`) and stream the
    first acceptable answer back.

    With a `plan` (compat rules), each attempt's path, query and body come from it, and an
    answer it asks for is handed to it whole instead of streamed.
    """
    state = gw.state
    route = state.routes_by_name[decision.route]
    retry = route.retry
    loop = asyncio.get_running_loop()
    deadline = loop.time() + route.timeouts.total
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

    keyed = "Idempotency-Key" in request.headers
    budget = state.budgets[route.name]
    attempts = Attempts(gw, route, budget, outcome, request.method, keyed, replayable)
    transport = ClientTransport(
        request, gw, state, route, request_id, body, has_body, max_body, plan
    )
    name, resp = await run_attempts(attempts, decision.attempts, deadline, transport)
    try:
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


class _Upgrade:
    """A WebSocket handshake's answer: 101 with the upstream session, or the refusal's status."""

    __slots__ = ("status", "ws")

    def __init__(self, status: int, ws: aiohttp.ClientWebSocketResponse | None) -> None:
        self.status = status
        self.ws = ws

    def release(self) -> None:
        """Not taken (a route lists a refusal's status in `retry.on_status`): close it."""
        if self.ws is not None and not self.ws.closed:
            task = asyncio.ensure_future(self.ws.close())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Future[object]] = set()


class _WebSocketTransport:
    """The aiohttp client's WebSocket handshake as the attempt loop's transport."""

    __slots__ = ("headers", "path", "protocols", "state")

    def __init__(
        self, state: RuntimeState, path: str, headers: CIMultiDict[str], protocols: list[str]
    ) -> None:
        self.state = state
        self.path = path
        self.headers = headers
        self.protocols = protocols

    async def send(self, backend: str, per_try: float) -> _Upgrade:
        upstream = self.state.upstreams[backend]
        with upstream_errors(backend):
            try:
                async with asyncio.timeout(per_try):
                    ws = await upstream.session.ws_connect(
                        upstream.url(self.path),
                        headers=self.headers,
                        protocols=self.protocols,
                        timeout=_WS_TIMEOUT,
                        autoping=False,
                        server_hostname=upstream.server_hostname,
                    )
            except aiohttp.WSServerHandshakeError as exc:
                if 300 <= exc.status < 500:  # the backend answered and said no (e.g. 404)
                    return _Upgrade(exc.status, None)
                raise UpstreamError(backend, "status") from exc
        return _Upgrade(101, ws)


_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)


async def forward_websocket(
    request: web.BaseRequest,
    gw: Gateway,
    decision: Decision,
    request_id: str,
    outcome: ProxyOutcome,
) -> web.StreamResponse:
    """Pass a WebSocket session through: connect upstream first (through the attempt loop, on
    the route's budget and passive health), then accept the client."""
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
    attempts = Attempts(
        gw, route, state.budgets[route.name], outcome, request.method, False, replayable=True
    )
    deadline = asyncio.get_running_loop().time() + route.timeouts.total
    transport = _WebSocketTransport(state, request.raw_path, headers, protocols)
    _, answer = await run_attempts(attempts, decision.attempts, deadline, transport)
    ws_up = answer.ws
    if ws_up is None:  # the backend's refusal is the client's answer
        return error_response(
            answer.status,
            "websocket_refused",
            f"the backend refused the WebSocket upgrade with status {answer.status}",
            request_id,
        )
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
