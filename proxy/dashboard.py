"""The dashboard: one live page on the admin listener (docs/dashboard.md).

    GET /dashboard                  the page (HTML; no data in it, so no token needed)
    GET /dashboard/static/{file}    its script, style sheet and icon (package data)
    GET /favicon.ico                the icon, as browsers ask every origin for it
    GET /dashboard/events           Server-Sent Events: a `snapshot` at least once a second
    GET /dashboard/snapshot         the same snapshot, once, as JSON

Data endpoints need the admin token like every admin route (`proxy.admin.admin_auth`); the page
keeps the token in the browser's `sessionStorage` and sends it as `Authorization: Bearer`, never
in a cookie or a URL, so another site can neither read nor act. Actions on the page call the admin
API's own endpoints (weights, promote, pause, resume, rollback, DLQ replay), which record them
with the token's name as they record any API call.

The snapshot is built once per second while at least one page is open, and the same bytes are
offered to every stream. A stream holds at most one snapshot waiting (a newer one replaces it),
so a slow reader costs one snapshot and its socket buffer, never a queue; a write that cannot
finish within `WRITE_TIMEOUT` drops the reader. Streams are capped (`MAX_STREAMS`), released in
a `finally` whatever ends them, and end within a tick when the gateway starts closing or the
reader's token stops passing (a reload rotated it): the page then asks for a token again.

The 15-minute series (per backend requests/s, error rate, p50/p95; per route weights) come from
`proxy.series`, fed by a request observer: the same per-request accounting the canary reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from cutover.core.errors import error_response
from cutover.proxy.admin import still_authorized
from cutover.proxy.host import Feature
from cutover.proxy.series import Series

if TYPE_CHECKING:
    from cutover.core.tasks import Supervised
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.host import Host, RequestRecord

log = logging.getLogger("cutover.dashboard")

TICK = 1.0  # seconds between two snapshots (the issue: at least once a second)
MAX_STREAMS = 32  # event streams open at once; more get 503
WRITE_TIMEOUT = 10.0  # seconds one snapshot may take to reach a reader before it is dropped
FRESH = 0.5  # seconds a built snapshot is reused for a new stream
STATIC_PACKAGE = "cutover.proxy"
STATIC_DIR = "static"
# file name -> content type; nothing else is served (no path from the request reaches the disk)
STATIC_FILES = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def static_file(name: str) -> bytes:
    """One of the page's files, read from the installed package (wheel or editable)."""
    if name not in STATIC_FILES:
        raise KeyError(name)
    return resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR, name).read_bytes()


def sse_event(data: bytes, event: str, ident: int) -> bytes:
    """One Server-Sent Event; `data` is a single line (orjson never writes a newline)."""
    return b"event: %s\nid: %d\ndata: %s\n\n" % (event.encode(), ident, data)


class _Stream:
    """One open event stream: the newest snapshot not yet written, and a wake-up."""

    __slots__ = ("ended", "pending", "wake")

    def __init__(self) -> None:
        self.pending: bytes | None = None
        self.wake = asyncio.Event()
        self.ended = False

    def end(self) -> None:
        self.ended = True
        self.wake.set()

    def offer(self, data: bytes) -> None:
        self.pending = data  # replaces an unwritten one: a slow reader skips, never queues
        self.wake.set()


class DashboardFeature(Feature):
    name = "dashboard"

    @classmethod
    def wanted(cls, config: CutoverConfig) -> bool:
        """On wherever the admin API listens: the page lives there."""
        return config.admin.listen is not None

    def __init__(self, gw: Host) -> None:
        super().__init__(gw)
        self.series = Series()
        self.streams: set[_Stream] = set()
        self.sequence = 0
        self.latest: bytes | None = None  # the newest snapshot, as JSON
        self.latest_at = float("-inf")  # monotonic
        self._build_lock = asyncio.Lock()
        self._task: Supervised | None = None
        self._files: dict[str, bytes] = {}
        self._sample_weights()
        gw.add_observer(self.observe)

    # -- the data plane -----------------------------------------------------------------

    def observe(self, rec: RequestRecord) -> None:
        """Count one finished proxied request: every failed attempt as an error of its
        backend, then the answer (a 5xx, or nobody answering, is an error) with its latency."""
        if rec.status == 499:  # the client went away: neither side's doing
            return
        now = self.gw.clock.now()
        series = self.series
        for backend, _ in rec.failures:
            series.record(backend, now, None, True)
        who = rec.backend or rec.primary
        if who is not None:
            answered = rec.backend is not None
            series.record(
                who, now, rec.duration if answered else None, rec.status >= 500 or not answered
            )

    def _sample_weights(self) -> None:
        for name, table in self.gw.state.tables.items():
            self.series.set_weights(name, table.weights)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = self.gw.tasks.start("dashboard", self._loop)

    async def stop(self) -> None:
        self.end_streams()
        task, self._task = self._task, None
        if task is not None:
            await task.stop()

    async def _loop(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(TICK)

    async def tick(self) -> None:
        """Sample the weights, close the series' second; while pages are open, build a
        snapshot and offer it to each; once the gateway closes, end every stream."""
        self._sample_weights()
        self.series.roll(self.gw.clock.now())
        if self.gw.draining:
            self.end_streams()
            return
        if self.streams:
            data = await self.refresh(force=True)
            for stream in list(self.streams):
                stream.offer(data)

    def end_streams(self) -> None:
        """End every open stream (its reader reconnects by itself, and is asked for the token
        again if it no longer passes)."""
        for stream in list(self.streams):
            stream.end()

    def in_flight(self) -> dict[str, int]:
        return {"streams": len(self.streams)}  # each open page holds one

    def readiness(self) -> dict[str, object] | None:
        return {"streams": len(self.streams), "max_streams": MAX_STREAMS}

    # -- the snapshot ---------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        """What the page shows, from the gateway's state and every feature's panel."""
        gw = self.gw
        now = gw.clock.now()
        self._sample_weights()
        available = gw.health.available(gw.clock.monotonic())
        routes = []
        for route in gw.config.routes:
            table = gw.state.tables.get(route.name)
            names = [b for b, _ in route.split] + [
                b for b in route.fallback if b not in dict(route.split)
            ]
            routes.append(
                {
                    "name": route.name,
                    "weights": dict(table.weights) if table is not None else dict(route.split),
                    "config_split": dict(route.split),
                    "backends": {n: {"healthy": n in available} for n in names},
                }
            )
        return {
            "at": now,
            "worker": os.getpid(),
            "draining": gw.draining,
            "routes": routes,
            "series": self.series.snapshot(now),
            "panels": await gw.panels(),
        }

    async def refresh(self, force: bool = False) -> bytes:
        """The newest snapshot as an SSE event, built now unless one is fresh (or `force`)."""
        async with self._build_lock:
            if force or self.latest is None or self.gw.clock.monotonic() - self.latest_at > FRESH:
                body = orjson.dumps(await self.snapshot(), option=orjson.OPT_NON_STR_KEYS)
                self.sequence += 1
                self.latest = sse_event(body, "snapshot", self.sequence)
                self.latest_at = self.gw.clock.monotonic()
            return self.latest

    # -- routes ---------------------------------------------------------------------------

    def add_admin_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/dashboard", self.page)
        router.add_get("/dashboard/", self.page)
        router.add_get("/dashboard/static/{name}", self.static)
        router.add_get("/favicon.ico", self.icon)
        router.add_get("/dashboard/events", self.events)
        router.add_get("/dashboard/snapshot", self.snapshot_endpoint)

    def _file(self, name: str) -> bytes:
        found = self._files.get(name)
        if found is None:
            found = self._files[name] = static_file(name)
        return found

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._file("dashboard.html"),
            headers={**SECURITY_HEADERS, "Content-Type": STATIC_FILES["dashboard.html"]},
        )

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES or name == "dashboard.html":
            return error_response(404, "not_found", f"no dashboard file named {name!r}", None)
        return web.Response(
            body=self._file(name),
            headers={**SECURITY_HEADERS, "Content-Type": STATIC_FILES[name]},
        )

    async def icon(self, request: web.Request) -> web.Response:
        """What a browser asks every origin for (the page names its icon; a JSON tab does not)."""
        return web.Response(
            body=self._file("favicon.svg"),
            headers={**SECURITY_HEADERS, "Content-Type": STATIC_FILES["favicon.svg"]},
        )

    async def snapshot_endpoint(self, request: web.Request) -> web.Response:
        body = orjson.dumps(await self.snapshot(), option=orjson.OPT_NON_STR_KEYS)
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The live stream: one `snapshot` event a second until the reader or the gateway
        goes away."""
        if self.gw.draining:
            return error_response(
                503, "draining", "the gateway is shutting down", None, headers={"Retry-After": "5"}
            )
        if len(self.streams) >= MAX_STREAMS:
            return error_response(
                503,
                "too_many_streams",
                f"at most {MAX_STREAMS} dashboard streams are open at once; retry later",
                None,
                headers={"Retry-After": "5"},
            )
        stream = _Stream()
        self.streams.add(stream)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # a proxy in between must not hold events back
            }
        )
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 2000\n\n")
            stream.offer(await self.refresh())
            while not (self.gw.draining or stream.ended):
                if not still_authorized(request, self.gw):
                    break  # the token was rotated away: the page asks for one again
                try:
                    await asyncio.wait_for(stream.wake.wait(), 3 * TICK)
                except TimeoutError:
                    data: bytes | None = b": keep-alive\n\n"
                else:
                    stream.wake.clear()
                    data, stream.pending = stream.pending, None
                if data and not stream.ended:
                    await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT)
        except TimeoutError:
            # a reader that does not read: drop it and what its socket holds
            log.info("dashboard: a stream's reader stopped reading; closing it")
            if request.transport is not None:
                request.transport.abort()
        except (ConnectionError, RuntimeError):
            pass  # the reader went away (RuntimeError: the transport is already closed)
        finally:
            self.streams.discard(stream)
            stream.pending = None
        with contextlib.suppress(ConnectionError, RuntimeError):
            if request.transport is not None and not request.transport.is_closing():
                await resp.write_eof()
        return resp
