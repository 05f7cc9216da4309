"""Shadow traffic: mirror sampled requests to a candidate, compare, keep the results.

A route's `mirror: {to, percent, methods}` copies a sample of its requests to `to` *after*
the primary's answer has been streamed to the client. Both listener paths ask this feature
for a `Tap` once a backend answered (`sample`, the one sampling: the fast path hands it the
raw head, the general path its aiohttp request through `tap`; one way to build a job and a
capture line); the tap
copies the primary's response body as it streams (decoded, bounded by
`parity.mirror.max_body`) and, once the client has its answer, hands one job to the mirror
process (`parity.mirror_process`; `mirror.process: false`: to a bounded queue of this
feature's own workers) — when either is full the job is dropped and counted, so a slow
candidate never holds memory or the client. Mirror work yields to primary traffic: while the
gateway is short of CPU (`parity.lag`: the loop lags over `shed_lag`, or its thread waits for
a CPU over `shed_wait`) new jobs are shed and counted. The exchange (`parity.mirror`) sends the
copy (marked `X-Cutover-Mirror: 1`), asks the primary once more for safe methods (its own
noise; a field where the candidate agrees with that later reading changed in between and is
not counted against it), compares with `parity.diff`; the result is stored
(`parity_results`, SQLite or PostgreSQL; `parity.results_store`) and booked where it was made
(`parity.book`): the mirror process keeps the per-route windows and sends this feature a tally
per frame (counts to add, each window's size and rate), the own workers book into this
feature's windows. `parity_rate(route)` and `GET /admin/parity` apply Diffy's rule
(`parity.noise`) to the latest `parity.window` results per route.

A route's `capture:` writes sampled requests to a JSONL corpus (auth headers, secret query
parameters and configured body fields redacted) for `cutover parity run`.

Only requests whose body the forwarder buffered (`retry.buffer`, 1 MiB by default) can be
mirrored or captured: the others stream through untouched and are counted as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry, Counter, Gauge

from cutover.core.bounded import STORE_TIMEOUT, bounded
from cutover.core.clock import format_rfc3339
from cutover.core.db import Database, StoreUnavailable
from cutover.core.errors import NotFound
from cutover.core.group_commit import GroupCommit, Overloaded
from cutover.core.tasks import Supervised
from cutover.parity import results_store
from cutover.parity.book import FULL_REFRESH, REFRESH_SECONDS, Tally, WindowBook
from cutover.parity.config import ParityConfig
from cutover.parity.corpus import REDACTED, redact_json, redact_query, to_line
from cutover.parity.diff import compile_pattern
from cutover.parity.lag import INTERVAL, LoopLag
from cutover.parity.mirror import (
    MIRROR_HEADER,
    Booking,
    MirrorJob,
    RawJob,
    decoded,
    exchange,
    sample_of,
)
from cutover.parity.mirror_process import MirrorProcess, MirrorSpec
from cutover.parity.noise import EndpointStats, analyse, diff_rate
from cutover.parity.report import endpoint_json
from cutover.parity.results_store import PRUNE_EVERY, RESULTS_BATCH, insert_results, prune
from cutover.proxy.host import Feature
from cutover.proxy.metrics import CounterSlots, MetricSet, counter, fast_inc, gauge
from cutover.routing.canary import ParityReading

if TYPE_CHECKING:
    from cutover.core.config_model import Capture, Route
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.host import Host

__all__ = ["MIRROR_HEADER", "ParityFeature", "RequestCopy", "Tap"]

log = logging.getLogger("cutover.parity")

STALL_MARGIN = 30.0  # seconds beyond its deadlines before a silent mirror process is killed
STOP_GRACE = 2.0  # seconds the mirror process gets at shutdown to finish the jobs it holds
_CAPTURE_DROP = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
     "proxy-connection", "trailer", "expect"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RequestCopy:
    """The client's request as a mirror job and a capture line copy it, from either listener
    path (built only for a sampled request: the headers cost a dict)."""

    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    peer: str
    scheme: str

    @classmethod
    def of_request(cls, request: web.BaseRequest) -> RequestCopy:
        """From the general path's aiohttp request."""
        return cls(
            request.method, request.raw_path, request.headers, request.remote or "", request.scheme
        )

    @classmethod
    def of_raw(
        cls,
        method: str,
        raw_path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        peer: str,
        scheme: str,
    ) -> RequestCopy:
        """From the fast path's raw head (its target ASCII, as the fast path admits it; names
        and values decoded as aiohttp decodes them: UTF-8, bytes that are not kept as
        surrogate escapes)."""
        fields = CIMultiDictProxy(CIMultiDict(decoded(headers)))
        return cls(method, raw_path.decode("ascii"), fields, peer, scheme)


class Tap:
    """Copies the primary's answer while it streams; `finish` queues the mirror job.

    The request's copy is made by `finish`, once the client has its answer: nothing of the
    mirror's work runs on the primary request's clock. A fast-path copy keeps the request's
    raw head (`RawHead`) and hands the job on as a `RawJob`: its header fields are decoded by
    whoever runs it (off the gateway's loop, with the mirror process)."""

    __slots__ = ("_body", "_chunks", "_feature", "_primary", "_request", "_request_id",
                 "_route", "_size", "_to")  # fmt: skip

    def __init__(
        self,
        feature: ParityFeature,
        route: str,
        to: str,
        primary: str,
        body: bytes,
        request_id: str,
        request: RequestCopy | RawHead | Callable[[], RequestCopy],
    ) -> None:
        self._feature = feature
        self._route = route
        self._to = to
        self._primary = primary
        self._body = body
        self._request_id = request_id
        self._request = request
        self._chunks: list[bytes] | None = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            return
        self._size += len(chunk)
        if self._size > self._feature.settings.mirror.max_body:
            self._chunks = None  # too large to compare: give up the copy, keep streaming
            return
        chunks.append(chunk)

    def finish(self, status: int, headers: CIMultiDictProxy[str]) -> None:
        """Called once the client has the whole answer (the general path)."""
        try:
            self._finish(status, tuple(headers.items()))
        except Exception:
            log.exception("parity: queueing a mirror copy failed")

    def finish_raw(self, status: int, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """`finish` with the backend's raw header fields (the fast path)."""
        try:
            request = self._request
            if type(request) is not tuple:  # decoded already (a capture took it too)
                self._finish(status, decoded(headers))
                return
            chunks = self._chunks
            if chunks is None:
                self._feature.skip(self._route, "response_too_large")
                return
            method, raw_path, fields, peer, scheme = request
            job: RawJob = (
                self._route, self._to, self._primary, method, raw_path.decode("ascii"), fields,
                self._body, peer, scheme, self._request_id, status, headers,
                b"".join(chunks),
            )  # fmt: skip
            self._feature.enqueue_raw(self._route, job)
        except Exception:
            log.exception("parity: queueing a mirror copy failed")

    def _finish(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        feature = self._feature
        route = self._route
        if self._chunks is None:
            feature.skip(route, "response_too_large")
            return
        request = self._request
        if isinstance(request, tuple):
            request = RequestCopy.of_raw(*request)
        elif not isinstance(request, RequestCopy):
            request = request()
        job = MirrorJob(
            route=route,
            to=self._to,
            primary=self._primary,
            method=request.method,
            raw_path=request.raw_path,
            headers=request.headers,
            body=self._body,
            peer=request.peer,
            scheme=request.scheme,
            host=request.headers.get("Host"),
            request_id=self._request_id,
            status=status,
            response_headers=headers,
            response_body=b"".join(self._chunks),
        )
        feature.enqueue(job)


# The fast path's request head as a tap keeps it: method, raw request target (ASCII bytes), raw
# header fields, peer, scheme (`RequestCopy.of_raw`'s arguments). Decoded only for a copy.
RawHead = tuple[str, bytes, Sequence[tuple[bytes, bytes]], str, str]


@dataclass(eq=False, slots=True)
class ParityMetrics(MetricSet):
    """The parity feature's metrics: mirroring, comparisons, the parity rate, captures."""

    registry: CollectorRegistry
    mirrored: Counter = counter(
        "cutover_parity_mirror_requests_total",
        "Sampled requests for the mirror, by route and result (queued, dropped: queue full, "
        "shed: the gateway was short of CPU, parity.mirror.shed_lag or shed_wait).",
        ["route", "result"],
    )
    skipped: Counter = counter(
        "cutover_parity_mirror_skipped_total",
        "Sampled requests not mirrored, by route and reason (method, body_not_buffered, "
        "same_backend, response_too_large, compat, cpu_budget).",
        ["route", "reason"],
    )
    failures: Counter = counter(
        "cutover_parity_mirror_failures_total",
        "Mirror requests that got no answer, by route and kind (connect, timeout, error).",
        ["route", "kind"],
    )
    comparisons: Counter = counter(
        "cutover_parity_comparisons_total",
        "Mirrored pairs compared, by route and result (same, differ: any raw difference).",
        ["route", "result"],
    )
    rate: Gauge = gauge(
        "cutover_parity_rate",
        "Share of the route's latest mirrored pairs without a reported difference.",
        ["route"],
        mode="livemin",
    )
    queue: Gauge = gauge(
        "cutover_parity_mirror_queue_depth",
        "Mirror jobs waiting, or held by the mirror process (waiting or under way).",
        mode="livesum",
    )
    lag: Gauge = gauge(
        "cutover_parity_loop_lag_seconds",
        "Smoothed event-loop lag the mirror sheds by (how late a 50 ms timer wakes).",
        mode="livemax",
    )
    cpu_wait: Gauge = gauge(
        "cutover_parity_loop_cpu_wait_ratio",
        "Smoothed share of time the event loop's thread was ready to run but waited for a CPU "
        "(Linux schedstat); the mirror sheds by it too.",
        mode="livemax",
    )
    store_errors: Counter = counter(
        "cutover_parity_store_errors_total",
        "Comparison results that could not be stored.",
    )
    captured: Counter = counter(
        "cutover_parity_capture_total",
        "Requests sampled for a capture file, by route and result (written, dropped, skipped).",
        ["route", "result"],
    )


class ParityFeature(Feature):
    """Mirror, compare, store; capture; `GET /admin/parity`; `parity_rate(route)`."""

    name = "parity"

    def __init__(self, gw: Host) -> None:
        super().__init__(gw)
        self.metrics = ParityMetrics(gw.metrics.registry)
        self.settings: ParityConfig = ParityConfig()
        self.routes: dict[str, Route] = {}
        # The own workers' comparisons per mirrored route (`mirror.process: false`)...
        self.book = WindowBook(self._database, self.settings)
        # ...or what the mirror process last said of its windows: comparisons, rate.
        self._readings: dict[str, tuple[int, float | None]] = {}
        self.queue: asyncio.Queue[MirrorJob] | None = None  # the own workers' jobs
        self.process: MirrorProcess | None = None  # or the mirror process's
        self.captures: asyncio.Queue[tuple[str, str, bytes]] | None = None
        self._tasks: list[Supervised] = []
        self._mirror_tasks: list[Supervised] = []  # the own workers, or the process's task
        self._mode: str | None = None  # "process", "workers" or None (nothing mirrors)
        self.results: GroupCommit[tuple[Any, ...], int] | None = None  # results writer
        self._results_task: Supervised | None = None
        self.lag = LoopLag(0.0)  # threshold set from the config
        self._shed_logged = -1e9
        self._shedding = False
        self._capture_fds: dict[str, int] = {}
        self._redact: dict[str, tuple[Any, ...]] = {}
        self._migrated = False
        self._migrate_lock = asyncio.Lock()
        self._inserts = 0
        self._rate_at: dict[str, float] = {}
        self._rate_pending: dict[str, asyncio.TimerHandle] = {}
        # A route's mirror counts (queued, dropped, shed) are plain list slots (`CounterSlots`):
        # counting a dropped copy, what most requests of a mirrored route do at a rate the
        # mirror cannot keep up with, costs no call.
        self._mirrored: dict[str, list[float]] = {}
        self._mirrored_slots: list[CounterSlots] = []
        # Per route, its comparison counters' increments (the labels looked up once).
        self._compared: dict[str, tuple[Callable[..., None], ...]] = {}
        self._configure(gw.config)
        gw.set_parity(self)  # the canary's parity gate reads this feature's comparisons

    # -- lifecycle -------------------------------------------------------------------------

    def _configure(self, config: CutoverConfig) -> None:
        self.settings = config.parity or ParityConfig()
        self.lag.threshold = self.settings.mirror.shed_lag
        self.lag.wait_threshold = self.settings.mirror.shed_wait
        self.routes = {
            r.name: r for r in config.routes if r.mirror is not None or r.capture is not None
        }
        mirrored = {n for n, r in self.routes.items() if r.mirror is not None}
        for name in [n for n in self._readings if n not in mirrored]:
            del self._readings[name]  # (a route that mirrors no more has no rate)
        for name, route in self.routes.items():
            if route.mirror is not None:
                self._mirrored_counts(name)
                self._compared_counts(name)
            if route.capture is not None:
                self._redact[name] = tuple(compile_pattern(p) for p in route.capture.redact_fields)
                for result in ("written", "dropped", "skipped"):
                    self.metrics.captured.labels(name, result)
        self.gw.set_mirror(self if self.routes else None)  # None: the forwarder skips the hook

    async def start(self) -> None:
        self.captures = asyncio.Queue(maxsize=self.settings.mirror.queue)
        tasks = self.gw.tasks
        self._tasks.append(tasks.start("parity-capture", self._capture_writer))
        self._tasks.append(tasks.start("parity-refresh", self._refresh))
        self.results = GroupCommit(
            self._write_results,
            max_batch=RESULTS_BATCH,
            max_queue=self.settings.mirror.queue,
            expected=(StoreUnavailable,),
        )
        self._results_task = tasks.start("parity-results", self.results.run)
        self._tasks.append(tasks.start("parity-lag", self._lag_loop))
        await self._arrange()

    async def _arrange(self) -> None:
        """Run the mirror the config asks for: the mirror process, the gateway's own workers,
        or neither (no route mirrors: no process is started for nothing)."""
        mirror = self.settings.mirror
        wanted = None
        mirrored = [n for n, r in self.routes.items() if r.mirror is not None]
        if mirrored:
            wanted = "process" if mirror.process else "workers"
        # The own workers book into this feature's windows; the mirror process into its own.
        self.book.configure(self.settings, mirrored if wanted == "workers" else ())
        if wanted == self._mode:
            if self.process is not None:  # a reload: the child gets the new backends, rules
                self.process.capacity = mirror.queue
                self.process.stall_after = self._stall_after()
                self.process.reconfigure()
            return
        await self._stop_mirror()
        self._mode = wanted
        tasks = self.gw.tasks
        if wanted == "process":
            self.process = MirrorProcess(
                self._spec,
                self._book_process,
                self._lost,
                mirror.queue,
                self.gw.clock,
                self._stall_after(),
            )
            await self.process.spawn()
            self._mirror_tasks.append(tasks.start("parity-mirror-process", self.process.run))
        elif wanted == "workers":
            self.queue = asyncio.Queue(maxsize=mirror.queue)
            for i in range(mirror.workers):
                self._mirror_tasks.append(tasks.start(f"parity-mirror-{i}", self._worker))

    async def _stop_mirror(self) -> None:
        """Stop the mirror: the process gets `STOP_GRACE` (or `mirror.timeout`, if shorter) to
        finish the jobs it holds, then is killed with the rest counted as dropped; jobs still
        queued for the own workers are counted as dropped."""
        process, self.process = self.process, None
        if process is not None:
            process.close()
        # The process gets a short while to finish its jobs (a hung candidate's are dropped).
        grace = min(self.settings.mirror.timeout, STOP_GRACE) if process is not None else 0.0
        tasks, self._mirror_tasks = self._mirror_tasks, []
        for task in tasks:
            await task.stop(grace=grace)
        self._mode = None
        queue, self.queue = self.queue, None
        if queue is not None:  # mirror jobs never compared: counted as dropped
            left = 0
            while not queue.empty():
                self.metrics.mirrored.labels(queue.get_nowait().route, "dropped").inc()
                left += 1
            if left:
                log.info("parity: %d mirrored requests not compared at shutdown (dropped)", left)
        self.metrics.queue.set(0)

    async def _lag_loop(self) -> None:
        """Probe the event loop's lag (parity.lag), the signal mirror work is shed by."""
        await self.lag.run(on_probe=self._probed)

    def _probed(self) -> None:
        """Every lag probe (`parity.lag.INTERVAL`): the gauges that would cost every copy or
        every request to keep exact, and a line when shedding starts."""
        lag = self.lag
        self._fold()
        self.metrics.lag.set(lag.lag)
        self.metrics.cpu_wait.set(lag.wait)
        self.metrics.queue.set(self.depth)
        was, self._shedding = self._shedding, lag.shedding
        if not self._shedding or was:
            return
        now = self.gw.clock.monotonic()
        if now - self._shed_logged >= 60.0:  # one line a minute at most
            self._shed_logged = now
            log.warning(
                "parity: short of CPU (event-loop lag %.1f ms, parity.mirror.shed_lag %.1f ms;"
                " waiting for a CPU %.0f%% of the time, parity.mirror.shed_wait %.0f%%):"
                " shedding mirror work",
                lag.lag * 1000,
                lag.threshold * 1000,
                lag.wait * 100,
                lag.wait_threshold * 100,
            )

    def in_flight(self) -> dict[str, int]:
        queues = (("mirror.queued", self.queue), ("capture.queued", self.captures))
        counts = {name: q.qsize() for name, q in queues if q is not None}
        if self.process is not None:
            counts["mirror.process"] = self.process.in_flight
        if self.results is not None:
            counts["results.queued"] = self.results.queued
            counts["results.committing"] = self.results.committing
        return counts

    async def stop(self) -> None:
        self.gw.set_mirror(None)
        for handle in self._rate_pending.values():
            handle.cancel()
        self._rate_pending.clear()
        await self._stop_mirror()  # before the results writer: the last outcomes are stored
        self._fold()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await task.stop()
        writer, self._results_task = self._results_task, None
        if self.results is not None and writer is not None:
            self.results.close()  # the workers are stopped: write what they handed over
            await writer.stop(grace=STORE_TIMEOUT)
        if self.captures is not None:
            await self._write_captures(self._drain(self.captures))
        for fd in self._capture_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._capture_fds.clear()

    async def reload(self, config: CutoverConfig) -> None:
        self._configure(config)
        await self._arrange()

    # -- the forwarder's hook ---------------------------------------------------------------

    def tap(
        self,
        request: web.BaseRequest,
        route: Route,
        primary: str,
        body: bytes | None,
        request_id: str,
    ) -> Tap | None:
        """`sample` for the general path's aiohttp request (its copy made only if taken)."""
        copy = functools.partial(RequestCopy.of_request, request)
        return self.sample(route, primary, request.method, body, request_id, copy)

    def sample(
        self,
        route: Route,
        primary: str,
        method: str,
        body: bytes | None,
        request_id: str,
        copy: Callable[[], RequestCopy] | RawHead,
    ) -> Tap | None:
        """For a request `primary` is about to answer: a Tap when it is to be mirrored. The
        one sampling of both paths: capture roll, then the mirror's roll and checks.

        `body` is the request body the forwarder buffered (b"" for none); None when it streamed
        through unbuffered (such requests cannot be copied). Captures are queued here. `copy`
        is the fast path's raw head, or what makes the general path's copy.

        Every request of a mirrored route comes here, and at a rate the mirror cannot keep up
        with most are dropped: that way costs no call beyond this one and the count's (the
        shedding and fullness checks are attributes kept by their owners)."""
        try:
            mirror, capture = route.mirror, route.capture
            request: RequestCopy | None = None
            if capture is not None and random.random() * 100.0 < capture.percent:
                request = RequestCopy.of_raw(*copy) if isinstance(copy, tuple) else copy()
                self._capture(request, route, capture, body)
            if mirror is None:
                return None
            percent = mirror.percent  # (at 100 no roll: random() * 100 is always under it)
            if percent < 100.0 and random.random() * 100.0 >= percent:
                return None
            if method not in mirror.methods:
                self.skip(route.name, "method")
                return None
            if body is None:
                self.skip(route.name, "body_not_buffered")
                return None
            if primary == mirror.to:
                self.skip(route.name, "same_backend")
                return None
            # Short of CPU, mirror work goes first (shed); a mirror with no room would drop
            # the copy when the answer is in (dropped): either way the copy is not even taken.
            shed = self.lag.shedding
            process = self.process  # (`_full`, its common case inline)
            if shed or (process.full if process is not None else self._full()):
                try:
                    self._mirrored[route.name][2 if shed else 1] += 1
                except KeyError:  # (a route configured since: its slots are made once)
                    self._mirrored_counts(route.name)[2 if shed else 1] += 1
                return None
            return Tap(self, route.name, mirror.to, primary, body, request_id, request or copy)
        except Exception:  # the client's request never pays for a parity problem
            log.exception("parity: sampling a request failed")
            return None

    def _full(self) -> bool:
        """The mirror takes no job now (the mirror process, or the own workers' queue, is at
        `mirror.queue`): at a rate the mirror cannot keep up with, most copies are dropped, and
        each costs the primary's loop nothing more than this check."""
        if self.process is not None:
            return self.process.full
        return self.queue is None or self.queue.full()

    def compat(self, request: web.BaseRequest, route: Route, body: bytes | None) -> None:
        """A request a compat rule rewrites: captured as the client sent it (the legacy corpus
        a parity replay needs), but not mirrored — the candidate would get the legacy request
        without the rule's rewrite. Counted as skipped, reason `compat`."""
        try:
            capture, mirror = route.capture, route.mirror
            if capture is not None and random.random() * 100.0 < capture.percent:
                self._capture(RequestCopy.of_request(request), route, capture, body)
            if mirror is not None and random.random() * 100.0 < mirror.percent:
                self.skip(route.name, "compat")
        except Exception:  # the client's request never pays for a parity problem
            log.exception("parity: sampling a request failed")

    def skip(self, route: str, reason: str) -> None:
        self.metrics.skipped.labels(route, reason).inc()

    def enqueue(self, job: MirrorJob) -> None:
        """Queue a finished copy for the mirror: to the mirror process, or the own workers."""
        counts = self._mirrored.get(job.route) or self._mirrored_counts(job.route)
        if self.lag.shedding:  # the loop started lagging while the primary answered
            counts[2] += 1  # (queued, dropped, shed)
            return
        process = self.process
        taken = process.submit(job) if process is not None else self._put(job)
        counts[0 if taken else 1] += 1

    def enqueue_raw(self, route: str, values: RawJob) -> None:
        """`enqueue` for a fast-path copy: the mirror process gets it as it is (and decodes
        its headers), the own workers a `MirrorJob` of it. (The queue gauge is set by each
        lag probe, not per copy: `_probed`.)"""
        counts = self._mirrored.get(route) or self._mirrored_counts(route)
        if self.lag.shedding:
            counts[2] += 1
            return
        process = self.process
        if process is not None:
            taken = process.submit_raw(route, values)
        else:
            taken = self._put(MirrorJob.of_raw(values))
        counts[0 if taken else 1] += 1

    def _put(self, job: MirrorJob) -> bool:
        """To the own workers' queue; False when it is full (or gone: stopping)."""
        queue = self.queue
        if queue is None:
            return False
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            return False
        return True

    def _mirrored_counts(self, route: str) -> list[float]:
        """`route`'s mirror counts (queued, dropped, shed): the slots its counters read."""
        counts = self._mirrored.get(route)
        if counts is None:
            children = [
                self.metrics.mirrored.labels(route, r) for r in ("queued", "dropped", "shed")
            ]
            slots = CounterSlots(children)
            self._mirrored_slots.append(slots)
            counts = self._mirrored[route] = slots.slots
        return counts

    def _fold(self) -> None:
        """With several workers, hand /metrics what the mirror counts gained (`CounterSlots`)."""
        for slots in self._mirrored_slots:
            slots.fold()

    async def before_scrape(self) -> None:
        self._fold()

    def _compared_counts(self, route: str) -> tuple[Callable[..., None], ...]:
        """`route`'s comparison counters (same, differ), each an increment taken once."""
        comparisons = self.metrics.comparisons
        counts = tuple(fast_inc(comparisons.labels(route, r)) for r in ("same", "differ"))
        self._compared[route] = counts
        return counts

    @property
    def depth(self) -> int:
        """Mirror jobs waiting or under way (in the mirror process, or the own queue)."""
        if self.process is not None:
            return self.process.in_flight
        return self.queue.qsize() if self.queue is not None else 0

    # -- mirror work ------------------------------------------------------------------------

    def _spec(self) -> MirrorSpec:
        config = self.gw.config
        store = self.gw.store_location()
        mirrored = tuple(n for n, r in self.routes.items() if r.mirror is not None)
        return MirrorSpec(
            dict(config.backends),
            self.settings,
            config.headers.request_id,
            store,
            mirrored,
            (REFRESH_SECONDS, FULL_REFRESH),
        )

    def _stall_after(self) -> float:
        """How long the mirror process may hold one job: its wait for a worker and its own
        exchange (a mirror timeout each), the store write, and a wide margin for a child
        that gets little CPU."""
        return 2 * self.settings.mirror.timeout + STORE_TIMEOUT + STALL_MARGIN

    def _lost(self, route: str) -> None:
        """A job the mirror process held when it died: dropped."""
        self.metrics.mirrored.labels(route, "dropped").inc()

    async def _worker(self) -> None:
        """The gateway's own mirror worker (`parity.mirror.process: false`)."""
        assert self.queue is not None
        queue = self.queue
        lag = self.lag
        while True:
            while lag.shedding:  # short of CPU: primary traffic first, queued jobs wait
                self.metrics.lag.set(lag.lag)
                await asyncio.sleep(INTERVAL)
            job = await queue.get()
            # A failure restarts the worker (core.tasks).
            outcome = await exchange(
                job, self.gw.state.upstreams, self.settings, self.gw.config.headers.request_id
            )
            if outcome is not None:
                row_id = None
                if outcome.row is not None:  # (a refused row is counted by `_store`)
                    (row_id,) = await self._store([(self.gw.clock.now(), *outcome.row)])
                await self._book([outcome.booking(row_id)])
            await asyncio.sleep(0)  # ready primary callbacks run before the next job

    def _book_process(self, tally: Tally) -> None:
        """Book a frame of the mirror process's: it stored the results and windowed them
        itself, so this is a few counts per route, whatever the number of copies."""
        metrics = self.metrics
        if tally.store_errors:
            metrics.store_errors.inc(tally.store_errors)
        for route, t in tally.routes.items():
            for kind, n in t.failures.items():
                metrics.failures.labels(route, kind).inc(n)
            for reason, n in t.skipped.items():
                metrics.skipped.labels(route, reason).inc(n)
            if t.same or t.differ:
                counts = self._compared.get(route) or self._compared_counts(route)
                counts[0](t.same)
                counts[1](t.differ)
            if (r := self.routes.get(route)) is not None and r.mirror is not None:
                if t.rate is not None and self._readings.get(route, (0, None))[1] != t.rate:
                    metrics.rate.labels(route).set(t.rate)
                self._readings[route] = (t.compared, t.rate)

    async def _book(self, bookings: list[Booking]) -> None:
        """Count and window what the own workers' jobs came to."""
        metrics = self.metrics
        for booking in bookings:
            route = booking.route
            if booking.failure is not None:
                metrics.failures.labels(route, booking.failure).inc()
            if booking.skipped is not None:
                self.skip(route, booking.skipped)
            sample = booking.sample
            if sample is None:
                continue
            self.book.add(route, booking.row_id, sample)
            counts = self._compared.get(route) or self._compared_counts(route)
            counts[1 if sample.raw else 0](1)
            self._update_rate(route)

    # -- results ----------------------------------------------------------------------------

    async def _database(self) -> Database:
        db = await self.gw.database()
        if not self._migrated:
            async with self._migrate_lock:
                if not self._migrated:
                    await results_store.migrate(db)
                    self._migrated = True
        return db

    async def _store(self, rows: list[tuple[Any, ...]]) -> list[int | None]:
        """Store results through the results writer (one statement for the results finished
        together); their row ids, None for one that could not be stored."""
        results = self.results
        assert results is not None
        ids: list[int | None] = []
        problem: Exception | None = None
        for future in [results.submit(row) for row in rows]:
            try:
                ids.append(await GroupCommit.wait(future))
            except (StoreUnavailable, Overloaded) as exc:
                problem = exc
                ids.append(None)
            except Exception:  # a bug in the writer: its task logs it and starts again
                ids.append(None)
        lost = ids.count(None)
        if lost:
            self.metrics.store_errors.inc(lost)
            if problem is not None:
                log.warning("parity: %d result(s) not stored (%s)", lost, problem)
        stored = sum(i is not None for i in ids)
        before, self._inserts = self._inserts, self._inserts + stored
        if stored and before // PRUNE_EVERY != self._inserts // PRUNE_EVERY:
            for route in {row[1] for row in rows}:
                try:
                    await prune(await self._database(), route, 2 * self.settings.window)
                except StoreUnavailable as exc:
                    log.warning("parity: old results not pruned (%s)", exc)
        return ids

    async def _write_results(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """The results writer's commit: a batch of results in one statement."""
        return await self._insert_results(await self._database(), rows)

    async def _insert_results(self, db: Database, rows: list[tuple[Any, ...]]) -> list[int]:
        return await insert_results(db, rows)

    async def _refresh(self) -> None:
        """The own workers' windows read what other workers stored (`WindowBook.run`); the
        mirror process reads into its own."""
        await self.book.run(self._refreshed, REFRESH_SECONDS, FULL_REFRESH)

    def _refreshed(self, route: str) -> None:
        self._rate_at.pop(route, None)
        self._update_rate(route)

    def _update_rate(self, route: str) -> None:
        """Refresh the rate gauge at most once a second per route (the analysis costs a few
        milliseconds per thousand results); a skipped update runs when the second is over."""
        loop = asyncio.get_running_loop()
        wait = self._rate_at.get(route, -1e9) + 1.0 - loop.time()
        if wait > 0:
            if route not in self._rate_pending:
                self._rate_pending[route] = loop.call_later(wait, self._rate_now, route)
            return
        self._rate_now(route)

    def _rate_now(self, route: str) -> None:
        self._rate_pending.pop(route, None)
        self._rate_at[route] = asyncio.get_running_loop().time()
        rate = self.parity_rate(route)
        if rate is not None:
            self.metrics.rate.labels(route).set(rate)

    def parity_rate(self, route: str) -> float | None:
        """Share of `route`'s latest mirrored requests (up to `parity.window`) that show no
        reported difference, from 0.0 to 1.0.

        None while fewer than `parity.min_samples` pairs were compared (or the route has no
        mirror): a promotion gate should then wait, not pass. This is what the canary
        promotion can require (`parity_rate(route) >= threshold`) before its next step.
        """
        return self.parity_reading(route).rate

    def parity_reading(self, route: str) -> ParityReading:
        """What the canary's parity gate judges: the rate, the pairs compared, the minimum
        (as the mirror process last said, or of the own workers' window)."""
        if self._mode == "process":
            compared, rate = self._readings.get(route, (0, None))
        else:
            compared, rate = self.book.compared(route), self.book.rate(route)
        return ParityReading(rate, compared, self.settings.min_samples)

    # -- admin --------------------------------------------------------------------------------

    def add_admin_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/admin/parity", self._admin)

    async def _admin(self, request: web.Request) -> web.Response:
        wanted = request.query.get("route")
        if wanted is not None and wanted not in self.routes:
            raise NotFound(f"no mirrored route {wanted!r}", code="unknown_route")
        return web.json_response(
            await self.report(wanted), dumps=lambda v: orjson.dumps(v).decode()
        )

    async def dashboard(self) -> dict[str, Any] | None:
        """Parity by endpoint with the differing fields and examples (GET /admin/parity)."""
        return await self.report(None)

    async def report(self, wanted: str | None) -> dict[str, Any]:
        """Per mirrored route (all, or `wanted`): the rate, endpoints, fields and examples."""
        routes: dict[str, Any] = {}
        store = "ok"
        for name, route in self.routes.items():
            if route.mirror is None or (wanted is not None and name != wanted):
                continue
            rows: list[dict[str, Any]] | None = None
            try:
                rows = await bounded(self.book.latest_rows(name), STORE_TIMEOUT)
                samples = [sample_of(r["endpoint"], r["fields"], r["noise_fields"]) for r in rows]
            except (StoreUnavailable, TimeoutError):  # down, or hanging: this worker's window
                store = "unavailable"
                window = self.book.windows.get(name)
                samples = window.samples() if window is not None else []
            stats = analyse(samples, self.settings.thresholds)
            compared, rate = len(samples), diff_rate(stats)
            if rows is None and self._mode == "process":  # the window is the mirror process's
                reading = self.parity_reading(name)
                compared, rate = reading.compared, reading.rate
            endpoints = []
            for e in stats:
                item = endpoint_json(e)
                item["examples"] = _examples(e, rows or [])
                endpoints.append(item)
            routes[name] = {
                "mirror": {
                    "to": route.mirror.to,
                    "percent": route.mirror.percent,
                    "methods": sorted(route.mirror.methods),
                },
                "compared": compared,
                "parity_rate": rate if compared >= self.settings.min_samples else None,
                "min_samples": self.settings.min_samples,
                "endpoints": endpoints,
            }
        return {
            "routes": routes,
            "store": store,
            "queue": {
                "depth": self.depth,
                "capacity": self.settings.mirror.queue,
            },
            "thresholds": {
                "relative": self.settings.thresholds.relative,
                "absolute": self.settings.thresholds.absolute,
            },
        }

    # -- capture ----------------------------------------------------------------------------

    def _capture(
        self, request: RequestCopy, route: Route, capture: Capture, body: bytes | None
    ) -> None:
        queue = self.captures
        if queue is None:
            return
        if body is None or len(body) > capture.max_body:
            self.metrics.captured.labels(route.name, "skipped").inc()
            return
        headers = []
        for name, value in request.headers.items():
            low = name.lower()
            if low in _CAPTURE_DROP:
                continue
            headers.append((name, REDACTED if low in capture.redact_headers else value))
        patterns = self._redact.get(route.name, ())
        if body and patterns:
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
            else:
                body = orjson.dumps(redact_json(data, patterns))
        line = to_line(
            request.method,
            redact_query(request.raw_path),
            headers,
            body,
            ts=round(self.gw.clock.now(), 3),
            route=route.name,
        )
        try:
            queue.put_nowait((route.name, capture.file, line))
        except asyncio.QueueFull:
            self.metrics.captured.labels(route.name, "dropped").inc()

    @staticmethod
    def _drain(queue: asyncio.Queue[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return items

    async def _capture_writer(self) -> None:
        assert self.captures is not None
        queue = self.captures
        while True:
            batch = [await queue.get()]
            batch.extend(self._drain(queue))
            await self._write_captures(batch)

    async def _write_captures(self, batch: list[tuple[str, str, bytes]]) -> None:
        if not batch:
            return

        def write() -> list[tuple[str, bool]]:
            done = []
            for route, path, line in batch:
                try:
                    fd = self._capture_fds.get(path)
                    if fd is None:
                        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                        self._capture_fds[path] = fd
                    os.write(fd, line)  # one write per line: lines of several workers never mix
                    done.append((route, True))
                except OSError as exc:
                    log.warning("parity: cannot write capture file %s (%s)", path, exc.strerror)
                    done.append((route, False))
            return done

        for route, ok in await asyncio.to_thread(write):
            self.metrics.captured.labels(route, "written" if ok else "dropped").inc()


def _examples(e: EndpointStats, rows: list[dict[str, Any]], limit: int = 5) -> list[dict[str, Any]]:
    """The latest stored results of endpoint `e` that show one of its reported fields."""
    reported = {f.field for f in e.reported}
    if not reported:
        return []
    out = []
    for row in reversed(rows):
        if row["endpoint"] != e.endpoint:
            continue
        differences = [d for d in orjson.loads(row["differences"]) if d["field"] in reported]
        if not differences:
            continue
        out.append(
            {
                "ts": format_rfc3339(float(row["ts"])),
                "request": {"method": row["method"], "path": row["path"]},
                "primary": {"backend": row["primary_backend"], "status": row["primary_status"]},
                "candidate": {
                    "backend": row["candidate_backend"],
                    "status": row["candidate_status"],
                },
                "differences": differences,
            }
        )
        if len(out) >= limit:
            break
    return out
