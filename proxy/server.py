"""The running gateway: listener, request dispatch, health checks, reload and drain.

`Gateway` holds one immutable `RuntimeState` built from a config; a reload builds a new
state and swaps one reference, so in-flight requests finish with the state they started with.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web, web_protocol
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from cutover.core.build import describe as build_description
from cutover.core.clock import Clock
from cutover.core.config_model import Limits, Route
from cutover.core.db import Database, open_database
from cutover.core.errors import (
    REQUEST_ID,
    BodyTooLargeError,
    CutoverError,
    MethodNotAllowed,
    NoRoute,
    Overloaded,
    error_response,
    from_error,
    json_errors,
    render,
)
from cutover.core.http1 import (
    HOST_RE,
    Refused,
    parse_target,
    transfer_coding_refusal,
    version_refusal,
    versionless_line,
)
from cutover.core.tasks import Supervised, TaskSupervisor, stop_in_order
from cutover.proxy.accesslog import AccessLog
from cutover.proxy.admin import (
    add_admin_routes,
    admin_auth,
    open_endpoints_warning,
    require_admin_token,
    same_origin,
    without_admin_token,
)
from cutover.proxy.attempts import ProxyOutcome
from cutover.proxy.config import CutoverConfig
from cutover.proxy.forwarder import MirrorHook, forward, forward_websocket
from cutover.proxy.host import CompatHook, Feature, ParitySource, RequestRecord
from cutover.proxy.listen import bind
from cutover.proxy.metrics import Metrics
from cutover.proxy.requestflow import book_request, decide_request
from cutover.proxy.restart import restart_required
from cutover.proxy.upstreams import Upstream, check_timeout, client_timeout
from cutover.routing.budget import RetryBudget
from cutover.routing.decision import Decision
from cutover.routing.health import HealthTable
from cutover.routing.match import Router
from cutover.routing.split import SplitTable

log = logging.getLogger("cutover")

PANEL_TIMEOUT = 2.0  # seconds a feature's dashboard panel may take (it reads the store)
_FIRST_LINE_MAX = 64 * 1024  # bytes kept while a connection's first request line is judged


@dataclass(frozen=True, slots=True)
class RuntimeState:
    config: CutoverConfig
    router: Router
    routes_by_name: dict[str, Route]
    tables: dict[str, SplitTable]
    budgets: dict[str, RetryBudget]
    upstreams: dict[str, Upstream]
    client_timeouts: dict[str, aiohttp.ClientTimeout]  # per route, built at load
    check_timeouts: dict[str, aiohttp.ClientTimeout]  # per backend with a health check, at load


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler plus a header-read timeout and JSON 4xx for bad framing."""

    __slots__ = ("_first_line", "_head_handle", "_head_timeout", "awaiting_head")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_handle: asyncio.TimerHandle | None = None
        self.awaiting_head = True
        self._first_line: bytes | None = b""  # the connection's first bytes, until judged

    def data_received(self, data: bytes) -> None:
        if self._first_line is not None and self._versionless(data):
            return
        if self.awaiting_head and self._head_handle is None and self._head_timeout:
            self._head_handle = self._loop.call_later(self._head_timeout, self._head_expired)
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._first_line = None
            if self._head_handle is not None:
                self._head_handle.cancel()
                self._head_handle = None
                self.awaiting_head = False

    def _versionless(self, data: bytes) -> bool:
        """A first request line without an HTTP version (HTTP/0.9): answered 400 at once, where
        the parser would wait for headers until the header timeout (`proxy.http1`)."""
        start = self._first_line = (self._first_line or b"") + data
        verdict = versionless_line(start)
        if verdict is None:
            if len(start) > _FIRST_LINE_MAX:
                self._first_line = None  # the parser's line limit refuses it
            return False
        self._first_line = None
        if not verdict or self.transport is None:
            return False
        from cutover.proxy.fastpath import error_bytes

        refusal = version_refusal("0.9")
        assert refusal is not None
        self.transport.write(
            error_bytes(refusal.status, refusal.code, refusal.message, None, close=True)
        )
        self.force_close()
        return True

    def _head_expired(self) -> None:
        self._head_handle = None
        if self.awaiting_head:
            self.force_close()  # a slow client never finished its request head

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_handle is not None:
            self._head_handle.cancel()
            self._head_handle = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        code, text = "bad_request", "malformed HTTP request"
        if isinstance(exc, BadHttpMessage) and "Missing 'Host'" in str(exc):
            code, text = "bad_host", "missing Host header"  # as the fast path says it
        elif isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)
        ):
            status, code, text = 431, "header_too_large", "request header fields too large"
        elif status >= 500:
            code, text = "internal_error", "internal error"
            self.logger.error("error handling request", exc_info=exc)
        resp = error_response(status, code, text, None)
        resp.force_close()
        return resp


class _AppRunner(web.AppRunner):
    """An AppRunner whose connections use `_Protocol` (header-read timeout, JSON 4xx) and
    whose requests `_Server` judges first: the main listener's general path and the admin
    listener alike."""

    def __init__(
        self,
        app: web.Application,
        *,
        head_timeout: float,
        rejected: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._head_timeout = head_timeout
        self._rejected = rejected

    async def _make_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        app = self._app
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        return _Server(
            app._handle,
            request_factory=app._make_request,
            loop=loop,
            head_timeout=self._head_timeout,
            rejected=self._rejected,
            **self._kwargs,
        )


async def _get_only(request: web.BaseRequest) -> web.StreamResponse:
    raise MethodNotAllowed("GET, HEAD")


def _runner(app: web.Application, limits: Limits, *, rejected: Any, **kwargs: Any) -> _AppRunner:
    """The runner of an aiohttp listener of the gateway (main or admin): the same request-line
    judgement, header-read timeout and header limits (`limits`) on both; refusals counted in
    `rejected` (`cutover_rejected_total`)."""
    return _AppRunner(
        app,
        head_timeout=limits.header_timeout,
        rejected=rejected,
        max_line_size=limits.max_header_size,
        max_field_size=limits.max_header_size,
        max_headers=limits.max_headers,
        access_log=None,
        **kwargs,
    )


class _Server(web.Server):
    """aiohttp's server for the gateway's listeners: every request's line and Host are judged
    first (`proxy.http1`), and the app sees its target in origin-form."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Any],
        *,
        request_factory: Callable[..., web.BaseRequest],
        head_timeout: float,
        rejected: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(self._checked, request_factory=self._make_request, **kwargs)
        self._app_handler = handler
        self._app_request = request_factory
        self._head_timeout = head_timeout
        self._rejected = rejected  # a Counter by reason, or None

    def __call__(self) -> _Protocol:
        return _Protocol(self, loop=self._loop, head_timeout=self._head_timeout, **self._kwargs)

    def _make_request(
        self, message: RawRequestMessage, *args: Any, **kwargs: Any
    ) -> web.BaseRequest:
        refusal: Refused | None = None
        try:
            if message is not web_protocol.ERROR:  # aiohttp's stand-in for what it could not parse
                message = _origin_form(message)
        except Refused as exc:
            refusal = exc
            message = message._replace(version=HttpVersion11)  # the answer's status line
        request = self._app_request(message, *args, **kwargs)
        if refusal is not None:
            request[_REFUSED] = refusal
        return request

    async def _checked(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            refusal: Refused | None = request.get(_REFUSED)
            if refusal is None:
                return await self._app_handler(request)  # type: ignore[no-any-return]
            if self._rejected is not None:
                self._rejected.labels(refusal.code).inc()
            resp = error_response(
                refusal.status, refusal.code, refusal.message, None, headers=dict(refusal.headers)
            )
            resp.force_close()
            return resp
        finally:
            protocol = request.protocol
            if isinstance(protocol, _Protocol):
                protocol.awaiting_head = True  # the next bytes start a new request head


_REFUSED = web.RequestKey("cutover_refused", Refused)  # the answer instead of the request


def _origin_form(message: RawRequestMessage) -> RawRequestMessage:
    """`message` with its request target in origin-form, or `Refused` (`proxy.http1`: version,
    transfer-coding, target).

    An absolute-form target's authority becomes the Host (RFC 9112 §3.2.2); the URL that every
    matcher reads (`rel_url.raw_path`: routes, compat rules, the router of the gateway's own
    endpoints) holds the normalized path (`proxy.http1.normalize_path`), while `raw_path` stays
    the target as sent (what is forwarded).
    """
    version = message.version
    if version != HttpVersion11:
        refusal = version_refusal(f"{version.major}.{version.minor}")
        if refusal is not None:
            raise refusal
    refusal = transfer_coding_refusal(message.headers.getall("Transfer-Encoding", []))
    if refusal is not None:
        raise refusal
    target = parse_target(message.method, message.path)
    hosts = message.headers.getall("Host", ())
    if len(hosts) > 1 or (hosts and not HOST_RE.match(hosts[0])):
        raise Refused(400, "bad_host", "invalid Host header")
    if target.authority is None and target.normalized == target.path:
        return message  # origin-form, matched as it reads: as aiohttp parsed it
    url = URL.build(path=target.normalized, query_string=target.query or "", encoded=True)
    if target.authority is None:
        return message._replace(url=url)
    headers = CIMultiDict(message.headers)
    headers["Host"] = target.authority
    raw = tuple((n, v) for n, v in message.raw_headers if n.lower() != b"host")
    return message._replace(
        path=target.origin,
        url=url,
        headers=CIMultiDictProxy(headers),
        raw_headers=((b"Host", target.authority.encode("ascii")), *raw),
    )


def _build_state(
    config: CutoverConfig, old: RuntimeState | None, upstreams: dict[str, Upstream]
) -> RuntimeState:
    budgets: dict[str, RetryBudget] = {}
    for route in config.routes:
        budgets[route.name] = RetryBudget(route.retry.budget_percent, route.retry.budget_min)
    return RuntimeState(
        config=config,
        router=Router(config.routes),
        routes_by_name={r.name: r for r in config.routes},
        tables={r.name: SplitTable(r.split) for r in config.routes},
        budgets=budgets,
        upstreams=upstreams,
        client_timeouts={r.name: client_timeout(r.timeouts) for r in config.routes},
        check_timeouts={
            name: check_timeout(b.health)
            for name, b in config.backends.items()
            if b.health is not None
        },
    )


class Gateway:
    """One worker's gateway, the `Host` of the features it is given (`cutover.app` lists
    them); without any it is a plain proxy."""

    def __init__(
        self,
        config: CutoverConfig,
        clock: Clock | None = None,
        features: Sequence[type[Feature]] = (),
    ) -> None:
        self.config = config
        self.started_config = config  # what the restart-only keys still follow
        self.restart_pending: list[str] = []  # what the config in force waits for a restart to do
        self.clock = clock or Clock()
        self.metrics = Metrics()
        # Every background task of the gateway and its features (core.tasks).
        self.tasks = TaskSupervisor(clock=self.clock, failures=self.metrics.task_failures)
        self.access_log = AccessLog(config.access_log.path) if config.access_log.enabled else None
        self.served: collections.Counter[str] = collections.Counter()
        self.health = _health_table(config)
        self.state: RuntimeState = _build_state(config, None, {})
        self.in_flight = 0
        self._decisions: dict[tuple[Any, ...], Decision] = {}  # requestflow's memo (aiohttp path)
        self.draining = False
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._fast: Any = None  # proxy.fastpath.FastListener: the main listener with fast_path on
        self._admin_runner: web.AppRunner | None = None
        self.admin_url: str | None = None
        self._checks: dict[str, Supervised] = {}
        # Synchronous, cheap callbacks run after every proxied request (no I/O in them).
        self.observers: list[Callable[[RequestRecord], None]] = []
        self.feature_classes = tuple(features)  # in start order (stopped in reverse)
        self.features: list[Feature] = []  # those the config wants, once started
        # Registered by the compat feature while compat rules are configured; None costs nothing.
        self.compat: CompatHook | None = None
        # Registered by the parity feature while a route mirrors or captures; None costs nothing.
        self.mirror: MirrorHook | None = None
        self.parity: ParitySource | None = None  # mirrored comparisons, for the canary's gate
        self.db: Database | None = None  # opened on first use: `await gw.database()`
        self._db_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, sock: Any = None, admin_sock: Any = None) -> None:
        """Serve on `sock` and `admin_sock` (listening sockets, `proxy.listen`), or on sockets
        bound here for the config's addresses (never shared: `proxy.listen.bind`)."""
        try:
            await self._start(sock, admin_sock)
        except BaseException:
            await self.close()  # nothing half-started is left behind (pools, checks, sockets)
            raise

    async def _start(self, sock: Any, admin_sock: Any) -> None:
        config = self.config
        self.state = _build_state(
            config, None, {n: Upstream(b) for n, b in config.backends.items()}
        )
        self.features = [
            f for f in (cls.create(self) for cls in self.feature_classes) if f is not None
        ]
        self._start_checks()
        self._sync_health_gauges()
        limits = config.limits
        errors = json_errors(
            lambda request: (
                request.get(REQUEST_ID) or request.headers.get(self.config.headers.request_id)
            )
        )
        app = web.Application(client_max_size=limits.max_body, middlewares=[errors])
        for path, own in (
            ("/healthz", self._healthz),
            ("/readyz", self._readyz),
            ("/metrics", self._metrics),
        ):
            app.router.add_get(path, own)
            # cutover's own paths: another method gets a 405, not a trip to the backend
            app.router.add_route("*", path, _get_only)
        for feature in self.features:
            feature.add_routes(app.router)
        app.router.add_route("*", "/{tail:.*}", self.handle)  # everything else is proxied
        self._runner = _runner(
            app,
            limits,
            rejected=self.metrics.rejected,
            handler_cancellation=True,
            shutdown_timeout=limits.drain_timeout,
            keepalive_timeout=limits.keepalive_timeout,
            auto_decompress=False,  # request bodies pass through as the client encoded them
        )
        for feature in self.features:
            await feature.prepare()
        await self._runner.setup()
        sock = sock if sock is not None else bind(config.listen, 1, "listen")[0]
        try:
            if config.fast_path:  # plain requests on the fast path, the others to aiohttp
                from cutover.proxy.fastpath import FastListener

                self._fast = FastListener(self, self._runner.server, app)
                self.url = await self._fast.start(sock)
            else:
                site = web.SockSite(self._runner, sock)
                await site.start()
                self.url = _site_url(site)
        except BaseException:
            sock.close()
            raise
        for feature in self.features:
            await feature.start()
        await self._start_admin(admin_sock)
        log.info(
            "cutover listening on %s (%d routes, %s build)",
            self.url,
            len(config.routes),
            build_description()["build"],  # compiled or pure: `cutover version --modules`
        )
        warning = open_endpoints_warning(config)
        if warning is not None:
            log.warning(warning)

    async def _start_admin(self, sock: Any) -> None:
        """The admin API listens apart; features add its routes (DESIGN.md, admin API)."""
        admin = self.config.admin
        if admin.listen is None:
            if sock is not None:
                sock.close()
            return
        app = web.Application(middlewares=[json_errors(), same_origin(self), admin_auth(self)])
        add_admin_routes(app.router, self)
        for feature in self.features:
            feature.add_admin_routes(app.router)
        # The same judgement of request lines, Host and framing, and the same header-read
        # timeout and limits, as the main listener's general path.
        self._admin_runner = _runner(
            app, self.config.limits, rejected=self.metrics.rejected, shutdown_timeout=5.0
        )
        await self._admin_runner.setup()
        sock = sock if sock is not None else bind(admin.listen, 1, "admin.listen")[0]
        try:
            site = web.SockSite(self._admin_runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            raise
        self.admin_url = _site_url(site)
        log.info("admin API on %s", self.admin_url)

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (up to drain_timeout), then close."""
        self.draining = True
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        if self._fast is not None:
            await self._fast.close(self.config.limits.drain_timeout)
            self._fast = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Each feature stops its own tasks; one failing never skips the others or the store.
        await stop_in_order(((f"feature {f.name}", f.stop) for f in reversed(self.features)), log)
        await self._stop_checks()
        await self.tasks.stop_all()  # what an owner left (a reload, retired pools)
        for upstream in self.state.upstreams.values():
            await upstream.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.db is not None:
            await self.db.close()
            self.db = None

    def restart_required(self, config: CutoverConfig) -> list[str]:
        """What of `config` a reload would leave for the next restart (`proxy.restart`)."""
        running = {type(f) for f in self.features}
        features = {cls.name: (cls in running, cls.wanted(config)) for cls in self.feature_classes}
        return restart_required(self.started_config, config, features)

    async def reload(self, config: CutoverConfig) -> None:
        """Swap in a new config; pools of unchanged backends are kept. What only a restart can
        apply (the listen address, the store, which features run, …) is logged and shown in
        /readyz until then."""
        pending = self.restart_required(config)
        for line in pending:
            if line not in self.restart_pending:
                log.warning("reload: %s; takes effect after a restart", line)
        self.restart_pending = pending
        old = self.state
        upstreams: dict[str, Upstream] = {}
        retired: list[Upstream] = []
        for name, backend in config.backends.items():
            current = old.upstreams.get(name)
            if current is not None and current.backend == backend:
                upstreams[name] = current
            else:
                upstreams[name] = Upstream(backend)
                if current is not None:
                    retired.append(current)
        retired.extend(u for n, u in old.upstreams.items() if n not in config.backends)
        if dict(config.backends) != dict(self.config.backends):
            self.health = _health_table(config)
        self.config = config
        self.state = _build_state(config, old, upstreams)
        await self._stop_checks()
        self._start_checks()
        self._sync_health_gauges()
        for feature in self.features:
            try:
                await feature.reload(config)
            except Exception:
                log.exception("feature %s failed to reload", feature.name)
        if retired:
            # Requests still using the old pools keep them until they finish.
            self.tasks.once(
                "close-retired-pools", _close_later(retired, config.limits.drain_timeout)
            )
        log.info("configuration reloaded from %s", config.source)

    async def database(self) -> Database:
        """The gateway's one durable store (`storage:`), opened on first use, closed in `close`.

        Raises `StoreUnavailable` when it cannot be opened (callers answer 503).
        """
        if self.db is None:
            async with self._db_lock:
                if self.db is None:
                    url, base = self.store_location()
                    self.db = await open_database(url, base_dir=base)
        return self.db

    def store_location(self) -> tuple[str | None, str]:
        """The store's URL and the directory a relative SQLite path is relative to (the config
        file's)."""
        base = os.path.dirname(self.config.source) if self.config.storage else "."
        return self.config.storage, base or "."

    # -- what features register (proxy.host) ---------------------------------------------

    def add_observer(self, observe: Callable[[RequestRecord], None]) -> None:
        self.observers.append(observe)

    def require_admin(self, request: web.BaseRequest) -> None:
        require_admin_token(request, self)

    def set_compat(self, hook: CompatHook | None) -> None:
        self.compat = hook

    def set_mirror(self, hook: MirrorHook | None) -> None:
        self.mirror = hook

    def set_parity(self, source: ParitySource | None) -> None:
        self.parity = source

    def set_split(
        self, route: str, split: tuple[tuple[str, int], ...], first: str | None = None
    ) -> None:
        """Put new weights in force for new requests of `route` (in-flight ones keep theirs).

        `first` is the backend that takes the lowest sticky buckets (the canary candidate),
        so that raising its weight only moves users towards it.
        """
        old = self.state
        tables = dict(old.tables)
        tables[route] = SplitTable(split, first)
        self.state = RuntimeState(
            config=old.config,
            router=old.router,
            routes_by_name=old.routes_by_name,
            tables=tables,
            budgets=old.budgets,
            upstreams=old.upstreams,
            client_timeouts=old.client_timeouts,
            check_timeouts=old.check_timeouts,
        )

    def record_response(self, backend: str, ok: bool) -> None:
        """Passive health: one attempt's result; logs and exports an ejection."""
        change = self.health.record_response(backend, ok, self.clock.monotonic())
        if change is not None:
            log.warning("backend %s %s after consecutive failures", backend, change)
            self.metrics.ejections.labels(backend).inc()
            self._sync_health_gauges()

    # -- health --------------------------------------------------------------------------

    def _start_checks(self) -> None:
        for name, backend in self.config.backends.items():
            if backend.health is not None:
                self._checks[name] = self.tasks.start(
                    f"health-check:{name}", lambda n=name: self._check_loop(n)
                )

    async def _stop_checks(self) -> None:
        checks, self._checks = list(self._checks.values()), {}
        for check in checks:
            await check.stop()

    def _sync_health_gauges(self) -> None:
        available = self.health.available(self.clock.monotonic())
        for name in self.config.backends:
            self.metrics.health.labels(name).set(1 if name in available else 0)

    async def _check_loop(self, name: str) -> None:
        backend = self.config.backends[name]
        check = backend.health
        assert check is not None
        upstream = self.state.upstreams[name]
        timeout = self.state.check_timeouts[name]  # of this config: a reload restarts the loop
        url = upstream.base + check.path
        low, high = check.expected_statuses
        while True:
            ok = False
            try:
                async with upstream.session.get(
                    url,
                    timeout=timeout,
                    server_hostname=upstream.server_hostname,
                    headers={"User-Agent": "cutover-health-check"},
                ) as resp:
                    ok = low <= resp.status <= high
            except (TimeoutError, aiohttp.ClientError, OSError):
                ok = False
            change = self.health.record_check(name, ok, self.clock.monotonic())
            if change is not None:
                log.warning("backend %s is now %s (active check %s)", name, change, check.path)
                self._sync_health_gauges()
            await asyncio.sleep(check.interval)

    # -- dispatch ------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        limits = self.config.limits
        if self.in_flight >= limits.max_concurrency:
            self.metrics.rejected.labels("overloaded").inc()
            return render(Overloaded(limits.retry_after), None)  # as the fast path's
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            return await self._proxy(request)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def _proxy(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()  # the loop's clock moves in whole milliseconds
        config = self.config
        state = self.state
        headers = request.headers
        rid_name = config.headers.request_id
        request_id = headers.get(rid_name) or uuid.uuid4().hex
        outcome = ProxyOutcome()
        route_name = "-"
        primary: str | None = None
        owner: str | None = None
        status = 500
        resp: web.StreamResponse | None = None
        try:
            if "Authorization" in headers:  # never an admin token upstream (DESIGN.md)
                request = without_admin_token(request, self, request_id)
                headers = request.headers
            compat = self.compat
            hit = compat.match(request) if compat is not None else None
            if hit is not None and hit.rule.local:
                assert compat is not None
                resp = await compat.answer(request, hit, request_id)
                status = resp.status
                return resp
            # the normalized path (proxy.http1), as compat rules and own endpoints read it
            route = state.router.match(request.method, request.rel_url.raw_path, headers)
            if route is None:
                status = 404
                resp = render(NoRoute(), request_id)
                return resp
            route_name = route.name
            budget = state.budgets[route.name]
            budget.start()
            try:
                decision = self._decide(request, route, state, outcome)
                primary, owner = decision.primary, decision.owner
                if headers.get("Upgrade", "").lower() == "websocket":
                    resp = await forward_websocket(request, self, decision, request_id, outcome)
                elif hit is not None:
                    assert compat is not None
                    resp = await compat.forward(request, hit, decision, request_id, outcome)
                else:
                    resp = await forward(request, self, decision, request_id, outcome)
            finally:
                budget.finish()
            status = resp.status
            return resp
        except BodyTooLargeError as exc:
            self.metrics.rejected.labels("body_too_large").inc()
            status = 413
            resp = from_error(exc, request_id)
            resp.force_close()
            return resp
        except CutoverError as exc:
            status = exc.status_hint
            resp = from_error(exc, request_id)
            if config.headers.backend and outcome.backend:
                resp.headers[config.headers.backend] = outcome.backend
            return resp
        except asyncio.CancelledError:
            status = 499  # the client went away; the upstream request was cancelled with us
            raise
        finally:
            book_request(
                self,
                self._count,
                route_name,
                primary,
                outcome,
                status,
                time.perf_counter() - started,
                request.method,
                request.rel_url.raw_path,
                request_id,
                resp.body_length if resp is not None else 0,
                request.remote,
                owner,
            )

    def _count(self, route: str, backend: str, status: int, elapsed: float) -> None:
        self.metrics.requests.labels(route, backend, str(status)).inc()
        self.metrics.duration.labels(route, backend).observe(elapsed)

    def _decide(
        self, request: web.BaseRequest, route: Route, state: RuntimeState, outcome: ProxyOutcome
    ) -> Decision:
        return decide_request(
            self,
            route,
            state,
            outcome,
            request.headers,
            lambda _: request.cookies,
            request.remote or "",
            self._decisions,
        )

    # -- the gateway's own endpoints -----------------------------------------------------

    async def _healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        available = self.health.available(self.clock.monotonic())
        routes = {}
        ready = not self.draining
        for route in self.config.routes:
            names = [b for b, _ in route.split] + list(route.fallback)
            up = [n for n in names if n in available]
            routes[route.name] = {"available": up, "ok": bool(up)}
            ready = ready and bool(up)
        detail: dict[str, Any] = {
            "status": "ready" if ready else ("draining" if self.draining else "not ready"),
            "config": self.config.source,
            "routes": routes,
            "backends": self.health.snapshot(self.clock.monotonic(), self.clock.now()),
            **build_description(),  # the fast path's build: compiled or pure (`cutover version`)
        }
        if self.restart_pending:
            detail["restart_required"] = list(self.restart_pending)
        detail["tasks"] = self.tasks.snapshot()
        for feature in self.features:
            extra = feature.readiness()
            if extra is not None:
                detail[feature.name] = extra
        return ready, detail

    async def panels(self) -> dict[str, Any]:
        """Each feature's part of the dashboard (`Feature.dashboard`), each bounded by
        `PANEL_TIMEOUT` and isolated: one slow or failing feature shows as an error."""

        async def one(feature: Feature) -> dict[str, Any] | None:
            try:
                return await asyncio.wait_for(feature.dashboard(), PANEL_TIMEOUT)
            except TimeoutError:
                return {"error": f"no answer within {PANEL_TIMEOUT:g}s"}
            except Exception as exc:
                log.warning("feature %s: dashboard panel failed (%r)", feature.name, exc)
                return {"error": type(exc).__name__}

        features = list(self.features)
        panels = await asyncio.gather(*(one(f) for f in features))  # side by side
        return {f.name: p for f, p in zip(features, panels, strict=True) if p is not None}

    async def _readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        ready, detail = self.readiness()
        return web.json_response(detail, status=200 if ready else 503)

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        for feature in self.features:
            try:  # a scrape never fails for a feature (Feature.before_scrape)
                await feature.before_scrape()
            except Exception:
                log.exception("feature %s failed to refresh its metrics", feature.name)
        if self._fast is not None:
            self._fast.meters.publish()  # its in-flight share as of now, not of its last sweep
        body, content_type = self.metrics.exposition()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp


def _site_url(site: web.BaseSite) -> str:
    sockname = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    host = sockname[0]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{sockname[1]}"


async def _close_later(upstreams: list[Upstream], delay: float) -> None:
    """Close pools a reload retired once their requests had `delay` to finish (at once when
    the gateway closes first)."""
    try:
        await asyncio.sleep(delay)
    finally:
        for upstream in upstreams:
            await upstream.close()


def _health_table(config: CutoverConfig) -> HealthTable:
    """Ejection caps apply per route: its split and fallback backends form one group."""
    groups = {r.name: [b for b, _ in r.split] + list(r.fallback) for r in config.routes}
    return HealthTable(config.backends, groups=groups)
