"""The one delivery engine: claims jobs from the outbox and delivers them, without losing one.

    outbox.claim (lease) -> per-target gate (concurrency, rate limit, breaker) -> sender
      -> done: job deleted (in batches) | retry: backoff with full jitter or Retry-After
      | give up: DLQ

A delivered job keeps its lease until its batch is deleted (`Outbox.start_completions`: 64
jobs or 20 ms, flushed again at `stop`), so no engine delivers it twice meanwhile; if the
process dies before the flush, it is delivered again once its lease runs out.

Several engines (worker processes, replicas) share one outbox: a job is leased by one of them
at a time, and a job whose engine died is claimed again when its lease runs out, so delivery
is at least once; targets' keys (PagerDuty `dedup_key`, Rootly `deduplication_key`, Slack's
remembered `ts`, `Idempotency-Key`) make the repeat harmless.

A claim asks for no more per target than the target can start now, and is bounded
(`delivery.claim_timeout`): one that times out is logged with the backlog, counted, and retried
with backoff. No progress for `delivery.stall_after` while jobs wait is a stall (`StallWatch`):
logged when it starts and ends, a gauge, and `/readyz` detail.

`backend:<route>` jobs go to the history backends through the gateway's own route decision
and upstream pools (each backend's `LeanPool`, the fast path's); every other target through the
engine's one `TargetClient` (a `LeanPool` per target origin: `publishing.transport`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import enum
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cutover.alerts.model import Alert
from cutover.compat.fanout import fan_out_items
from cutover.compat.jsonops import apply
from cutover.core.backoff import backoff
from cutover.core.breaker import CircuitBreaker
from cutover.core.buckets import TokenBucket
from cutover.core.db import ClaimMeter, StoreTimeout, StoreUnavailable, count_or_unknown
from cutover.core.errors import UpstreamError
from cutover.core.http1 import config_path
from cutover.core.storable import storable
from cutover.core.tasks import Supervised, stop_in_order
from cutover.proxy.attempts import Attempts, ProxyOutcome
from cutover.proxy.metrics import (
    LATENCY_BUCKETS,
    MetricSet,
    counter,
    counter_samples,
    gauge,
    histogram,
)
from cutover.proxy.pipeline import WholeAnswer, run_attempts
from cutover.proxy.pool import (
    ConnectFailed,
    ConnectTimeout,
    ExchangeTimeout,
    UpstreamFailure,
    send_whole,
)
from cutover.publishing import pagerduty, rootly, slack, webhook
from cutover.publishing.config import DeliveryPolicy, PublishingConfig
from cutover.publishing.outbox import Job, Outbox
from cutover.publishing.shared_flow import SharedFlow
from cutover.publishing.stall import StallWatch
from cutover.publishing.targets import Redactor, TargetRegistry, TargetSpec
from cutover.publishing.transport import (
    USER_AGENT,
    SendContext,
    SendOutcome,
    TargetClient,
    judge,
    origin_form,
)
from cutover.routing.decision import decide
from cutover.routing.murmur import bucket_of

if TYPE_CHECKING:
    from cutover.proxy.host import Host

log = logging.getLogger("cutover.publishing")

Sender = Callable[[SendContext, TargetSpec, Alert], Awaitable[SendOutcome]]
SENDERS: dict[str, Sender] = {
    "pagerduty": pagerduty.send,
    "slack": slack.send,
    "rootly": rootly.send,
    "webhook": webhook.send,
}
HOLD = 30.0  # seconds before a job for an unknown or disabled target is looked at again
_EMPTY_RECHECKS = (0.01, 0.05, 0.2)  # a woken engine that found nothing looks again (commit lag)
_STALL_RECOUNT = 10.0  # seconds between counts of the pending jobs during a stall
# Seconds a claim may wait for more deliveries to finish when only a few slots are free.
_REFILL_WAIT = 0.003


def iso_time(ts: float | None) -> str | None:
    """Wall-clock seconds as RFC 3339 UTC (None stays None)."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


class EngineState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


@dataclass(slots=True)
class TargetStats:
    """What this process saw of one target."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    last_success: float | None = None  # wall time
    last_failure: float | None = None
    last_error: str | None = None
    last_status: int | None = None
    recent: collections.deque[bool] = field(default_factory=lambda: collections.deque(maxlen=100))
    latencies: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=1000)
    )

    def success_rate(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    def health(self) -> str:
        """healthy | degraded (< 80% success) | unhealthy (< 50%) | unknown (no data yet)."""
        rate = self.success_rate()
        if rate is None:
            return "unknown"
        return "healthy" if rate >= 0.8 else "degraded" if rate >= 0.5 else "unhealthy"

    def latency(self) -> dict[str, float | None]:
        values = sorted(self.latencies)
        if not values:
            return {"avg_ms": None, "p50_ms": None, "p99_ms": None}

        def pick(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)

        return {
            "avg_ms": round(sum(values) / len(values) * 1000, 3),
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
        }

    def as_dict(self) -> dict[str, object]:
        rate = self.success_rate()
        return {
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "skipped": self.skipped,
            "success_rate": round(rate, 3) if rate is not None else None,
            "last_success": iso_time(self.last_success),
            "last_failure": iso_time(self.last_failure),
            "last_error": self.last_error,
            "latency": self.latency(),
        }


class TargetGate:
    """One target's runtime: concurrency slots, rate limit, breaker, stats."""

    __slots__ = ("breaker", "bucket", "concurrency", "held_until", "in_flight", "spec", "stats")

    def __init__(self, spec: TargetSpec | None, policy: DeliveryPolicy, now: float, share: int):
        self.spec = spec
        self.bucket = TokenBucket(spec.rate_limit if spec else None, now, share=share)
        self.breaker = CircuitBreaker(policy.breaker_failures, policy.breaker_open)
        if spec is None:  # a backend route: bounded by the worker count only
            self.concurrency = policy.workers
        else:
            self.concurrency = spec.concurrency or policy.concurrency
        self.in_flight = 0
        self.held_until = 0.0  # monotonic: held by the shared state (Redis)
        self.stats = TargetStats()

    def room(self, now: float, *, local_rate: bool) -> int:
        """How many jobs may start now: the free slots, and no more than the tokens when the
        rate limit is kept in this process (`local_rate`)."""
        free = max(0, self.concurrency - self.in_flight)
        if local_rate and self.spec is not None:
            tokens = self.bucket.available(now)
            if tokens < free:
                free = int(tokens)
        return free

    def wait(self, now: float) -> float:
        """0 when a job may start now, else roughly how long until it may."""
        if self.in_flight >= self.concurrency:
            return float("inf")  # a finishing job wakes the engine
        if not self.breaker.allows(now):
            return self.breaker.wait(now) or 0.05
        if now < self.held_until:
            return self.held_until - now
        return self.bucket.wait(now)


_ORIGIN_FORMS: dict[tuple[str, str], bytes] = {}  # (backend URL, path) -> request target


def _origin_form(base: str, path: str) -> bytes:
    """The request target for `path` on a backend whose URL is `base` (`transport.origin_form`:
    as written when valid, else encoded as the aiohttp client did); remembered per pair."""
    key = (base, path)
    target = _ORIGIN_FORMS.get(key)
    if target is None:
        if len(_ORIGIN_FORMS) >= 1024:
            _ORIGIN_FORMS.clear()
        target = _ORIGIN_FORMS[key] = origin_form(base + path).encode("ascii")
    return target


class _HistoryTransport:
    """The gateway's pools as the attempt loop's transport for a history delivery: one
    attempt posts every part of the alert's requests for that backend, in order, on the
    backend's `LeanPool` (the fast path's kept-alive connections), and stops at the first
    answer that is not a success. The head lines that do not depend on the part are built
    once per delivery, not once per part and attempt.

    What goes out, as the aiohttp client sent it: `<method> <base path + path> HTTP/1.1`,
    `Host` (the backend's `host_header`, its authority for `backend` and `pass`),
    `Content-Type`, `User-Agent`, the request id, `Idempotency-Key` (`<key>:<part>` when there
    are several parts), `Content-Length`. One deadline, `per_try`, covers every part, connect
    included (a new connection within the route's connect timeout too); the first 4 KiB of
    each answer are judged."""

    __slots__ = ("connect", "fixed", "gw", "key", "shaped")

    def __init__(
        self,
        gw: Host,
        job: Job,
        alert: Alert,
        shaped: dict[str, list[tuple[str, str, bytes]]],
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self.gw = gw
        self.shaped = shaped
        self.connect = timeout.connect
        self.key = webhook.idempotency_key(alert)  # a header value whatever the fingerprint
        rid = f"publish-{job.id}"
        self.fixed = (
            f"Content-Type: application/json\r\nUser-Agent: {USER_AGENT}\r\n"
            f"{gw.config.headers.request_id}: {rid}\r\n"
        ).encode()

    async def send(self, backend: str, per_try: float) -> WholeAnswer:
        """Every part to `backend`; the answer's `value` is the `SendOutcome`."""
        upstream = self.gw.state.upstreams[backend]
        pool = upstream.lean
        requests = self.shaped[backend]
        key = self.key.encode()
        several = len(requests) > 1
        host_line = pool.host_line or pool.fallback_host
        loop = asyncio.get_running_loop()
        deadline = loop.time() + per_try
        status, out = 200, SendOutcome.done(None, "nothing to send")
        for index, (method, path, body) in enumerate(requests):
            part_key = key + b":%d" % index if several else key
            request = b"".join(
                (
                    method.encode("ascii"),
                    b" ",
                    _origin_form(upstream.base, path),
                    b" HTTP/1.1\r\n",
                    host_line,
                    self.fixed,
                    b"Idempotency-Key: ",
                    part_key,
                    b"\r\nContent-Length: %d\r\n\r\n" % len(body),
                    body,
                )
            )
            try:
                whole = await send_whole(
                    pool, request, deadline, max_body=4096, connect_timeout=self.connect
                )
            except ConnectTimeout as exc:
                phase = "timeout" if loop.time() >= deadline else "connect"
                raise UpstreamError(backend, phase) from exc
            except ConnectFailed as exc:
                raise UpstreamError(backend, "connect") from exc
            except ExchangeTimeout as exc:
                raise UpstreamError(backend, "timeout") from exc
            except UpstreamFailure as exc:
                raise UpstreamError(backend, "reset") from exc
            text = whole.body.decode("utf-8", "replace")
            status, out = whole.status, judge(whole.status, text[:300], None)
            if not out.ok:
                break
        return WholeAnswer(status, out)


@dataclass(eq=False, slots=True)
class PublishingMetrics(MetricSet):
    """The publishing feature's metrics: deliveries, the outbox's claims and stalls, and
    what a scrape reads from the store (pending jobs, dead letters, the store's reachability)."""

    registry: CollectorRegistry
    deliveries: Counter = counter(
        "cutover_publishing_deliveries_total",
        "Delivery attempts by target and outcome (sent, failed, retried, dead_lettered, skipped).",
        ["target", "outcome"],
    )
    duration: Histogram = histogram(
        "cutover_publishing_delivery_seconds",
        "Time one delivery attempt took, by target.",
        ["target"],
    )
    lag: Histogram = histogram(
        "cutover_publishing_enqueue_to_delivery_seconds",
        "Time from acceptance into the outbox to successful delivery, by target.",
        ["target"],
        buckets=(*LATENCY_BUCKETS, 60.0, 300.0, 3600.0),
    )
    breaker: Gauge = gauge(
        "cutover_publishing_breaker_open",
        "1 while the target's circuit breaker is open.",
        ["target"],
        mode="livemax",
    )
    claim_seconds: Histogram = histogram(
        "cutover_outbox_claim_seconds",
        "Time one claim of due jobs took (timed-out claims included).",
    )
    claim_timeouts: Counter = counter(
        "cutover_outbox_claim_timeouts_total",
        "Claims abandoned at delivery.claim_timeout.",
    )
    stalled: Gauge = gauge(
        "cutover_outbox_stalled",
        "1 while jobs wait and delivery made no progress for delivery.stall_after.",
        mode="livemax",
    )
    pending: Gauge = gauge(
        "cutover_publishing_pending_jobs",
        "Jobs waiting in the outbox, by target (the shared store's count at scrape time:"
        " every replica reports the same).",
        ["target"],
        mode="livemostrecent",
    )
    dead: Gauge = gauge(
        "cutover_publishing_dead_letters",
        "Jobs in the dead-letter queue, by target (the shared store's count at scrape time).",
        ["target"],
        mode="livemostrecent",
    )
    store_up: Gauge = gauge(
        "cutover_store_up",
        "1 when the durable store answered the outbox count of the last scrape, else 0.",
        mode="livemostrecent",
    )


OUTCOMES = ("sent", "failed", "retried", "dead_lettered", "skipped")


def delivery_counts(metrics: PublishingMetrics) -> dict[str, dict[str, int]]:
    """target -> outcome -> deliveries, over every worker process (`counter_samples`)."""
    out: dict[str, dict[str, int]] = {}
    name = "cutover_publishing_deliveries"
    for labels, value in counter_samples(name, metrics.registry):
        target, outcome = labels.get("target"), labels.get("outcome")
        if target is not None and outcome in OUTCOMES:
            per = out.setdefault(target, dict.fromkeys(OUTCOMES, 0))
            per[outcome] += int(value)
    return out


class _TargetSeries(NamedTuple):
    """One target's metric series that every delivery touches."""

    duration: Any
    breaker: Any
    sent: Any
    lag: Any


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DeliveryEngine:
    def __init__(
        self,
        gw: Host,
        outbox: Outbox,
        registry: TargetRegistry,
        config: PublishingConfig,
        *,
        metrics: PublishingMetrics | None = None,
    ) -> None:
        self.gw = gw
        self.outbox = outbox
        self.registry = registry
        self.config = config
        self.clock = gw.clock
        self.owner = _owner()
        self.state = EngineState.NEW
        self.gates: dict[str, TargetGate] = {}
        self.redact = Redactor()
        self.client: TargetClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._finished = asyncio.Event()  # a delivery task ended (`_let_slots_free`)
        self._loop_task: Supervised | None = None
        self._soonest: float | None = None  # monotonic time of the earliest retry we scheduled
        self._completing = False
        self._target_series: dict[str, _TargetSeries] = {}
        # Without Redis (or while it is down) each worker process keeps an equal share.
        self._share = max(1, gw.config.workers)
        self.shared = SharedFlow(gw.config.redis, gw.clock) if gw.config.redis else None
        self.metrics = metrics or PublishingMetrics(gw.metrics.registry)
        self.stall = StallWatch(self.policy.stall_after, self.clock.monotonic())
        self.metrics.stalled.set(0)
        self.claims = ClaimMeter(
            "publishing: claiming due jobs",
            "jobs pending",
            self.clock,
            self.metrics.claim_seconds,
            self.metrics.claim_timeouts,
            self._pending_jobs,
            log,
        )
        self.on_targets_changed()
        registry.listeners.append(self.on_targets_changed)

    @property
    def policy(self) -> DeliveryPolicy:
        return self.config.delivery

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.state is not EngineState.NEW:
            return
        self.client = TargetClient()
        self.outbox.on_enqueue(self.wake)
        # At most lease / 100 (the config sees to it): a delivered job keeps its lease until its
        # batch is deleted.
        self.outbox.start_completions(
            batch=self.policy.complete_batch,
            interval=self.policy.complete_interval,
            tasks=self.gw.tasks,
        )
        self._completing = True
        self.state = EngineState.RUNNING
        self._loop_task = self.gw.tasks.start("publishing-delivery", self._run)

    @property
    def running(self) -> int:
        """Deliveries (and held jobs) this engine's tasks are working on now."""
        return len(self._tasks)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give in-flight deliveries `grace` seconds, then cancel them (their
        leases run out and another engine, or this one after a restart, delivers them); then
        flush delivered jobs out of the outbox. Each step runs whatever failed before it, so
        the flush always comes before the gateway closes the store."""
        if self.state is EngineState.CLOSED:
            return
        self.state = EngineState.CLOSED
        self.outbox.off_enqueue(self.wake)
        await stop_in_order(
            (
                ("delivery loop", self._stop_loop),
                ("deliveries in flight", lambda: self._stop_deliveries(grace)),
                ("delivered jobs' flush", self._stop_completions),
                ("delivery clients", self._close_clients),
            ),
            log,
        )

    async def _stop_loop(self) -> None:
        if self._loop_task is not None:
            await self._loop_task.stop()

    async def _stop_deliveries(self, grace: float) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _stop_completions(self) -> None:
        if self._completing:  # delivered jobs leave the outbox before the store closes
            self._completing = False
            await self.outbox.stop_completions()

    async def _close_clients(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.shared is not None:
            await self.shared.close()

    def wake(self) -> None:
        self._wake.set()

    def on_targets_changed(self) -> None:
        now = self.clock.monotonic()
        gates: dict[str, TargetGate] = {}
        for spec in self.registry.all():
            old = self.gates.get(spec.name)
            if old is not None and old.spec == spec:
                gates[spec.name] = old
                continue
            gate = TargetGate(spec, self.policy, now, self._share)
            if old is not None:
                gate.stats, gate.in_flight, gate.breaker = old.stats, old.in_flight, old.breaker
            gates[spec.name] = gate
        for name, gate in self.gates.items():
            if name.startswith("backend:"):
                gates[name] = gate
        self.gates = gates
        self.redact = Redactor(self.registry.secrets())
        self.wake()

    def set_config(self, config: PublishingConfig) -> None:
        self.config = config
        self.stall.after = config.delivery.stall_after
        self.on_targets_changed()

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Claim and start due jobs; an unexpected failure restarts the loop (core.tasks)."""
        failures = 0
        rechecks = 0
        while True:
            await self._watch_stall()
            await self._let_slots_free()
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                claimed = await self._tick()
                failures = 0
            except StoreUnavailable as exc:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                await self._report_store_trouble(exc, delay)
                await asyncio.sleep(delay)
                continue
            if woken and not claimed and rechecks < len(_EMPTY_RECHECKS):
                # The enqueuing transaction may not have committed yet (PostgreSQL).
                await asyncio.sleep(_EMPTY_RECHECKS[rechecks])
                rechecks += 1
                self._wake.set()
                continue
            rechecks = 0
            if claimed and len(self._tasks) < self.policy.workers:
                continue  # there may be more due right now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle_wait())

    async def _let_slots_free(self) -> None:
        """With only a few slots free while many deliveries run, wait a little (at most
        `_REFILL_WAIT`, on the loop's clock) for more of them to finish: under a backlog each
        finished delivery would otherwise cost a claim of its own (a transaction of four
        statements for one job), and claims of a quarter of the slots cost a fraction."""
        workers = self.policy.workers
        refill = max(1, workers // 4)
        if not 0 < workers - len(self._tasks) < refill:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REFILL_WAIT
        while 0 < workers - len(self._tasks) < refill and self.state is EngineState.RUNNING:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._finished.clear()
            try:
                await asyncio.wait_for(self._finished.wait(), left)
            except TimeoutError:
                return

    def _idle_wait(self) -> float:
        # An idle engine looks at least twice per stall_after: a claim that finds nothing is
        # progress, so a quiet outbox is never taken for a stalled one.
        wait = min(self.policy.poll_interval, self.policy.stall_after / 2)
        now = self.clock.monotonic()
        if self._soonest is not None:
            if self._soonest <= now:
                self._soonest = None
                return 0.001
            wait = min(wait, self._soonest - now)
        for gate in self.gates.values():
            w = gate.wait(now)
            if 0 < w < wait:
                wait = w
        return max(0.001, wait)

    async def _tick(self) -> int:
        free = self.policy.workers - len(self._tasks)
        if free <= 0 or self.state is not EngineState.RUNNING:
            return 0
        now = self.clock.monotonic()
        exclude: list[str] = []
        caps: dict[str, int] = {}
        for name, gate in self.gates.items():
            if gate.wait(now) > 0:
                exclude.append(name)
            else:
                caps[name] = gate.room(now, local_rate=self.shared is None)
        jobs = await self._claim(free, exclude, caps)
        if not jobs:
            self.stall.progress(self.clock.monotonic())  # caught up: nothing it may take now
        give_back: list[int] = []
        for job in jobs:
            gate = self._gate_for(job)
            if gate is None:
                self._spawn(self._hold(job))
                continue
            if gate.wait(now) > 0 or not await self._take_token(gate, job.target, now):
                give_back.append(job.id)
                continue
            gate.in_flight += 1
            gate.breaker.started(now)
            self._spawn(self._deliver(job, gate))
        if give_back:
            await self.outbox.release(give_back, self.owner)
        return len(jobs) - len(give_back)

    async def _claim(self, limit: int, exclude: list[str], caps: dict[str, int]) -> list[Job]:
        """One claim, bounded by `claim_timeout`, timed and counted; a slow one is logged."""
        bound = self.policy.claim_timeout
        claim = self.outbox.claim(
            self.owner,
            limit=limit,
            lease=self.policy.lease,
            exclude=exclude,
            caps=caps,
            timeout=bound,
        )
        return await self.claims.measure(claim, bound)

    @property
    def last_claim(self) -> float | None:
        """Seconds the last claim took (None: none yet)."""
        return self.claims.last

    @property
    def claim_timeouts(self) -> int:
        """Claims abandoned at `claim_timeout`."""
        return self.claims.timed_out

    async def _pending_jobs(self) -> int:
        """Pending jobs in the store, counted within the claim bound."""
        return await self.outbox.backlog(timeout=self.policy.claim_timeout)

    async def _pending(self) -> int | None:
        """Pending jobs in the store, or None when it cannot say within the claim bound."""
        return await self.claims.waiting()

    async def _report_store_trouble(self, exc: StoreUnavailable, delay: float) -> None:
        if isinstance(exc, StoreTimeout):
            log.warning(
                "publishing: claiming due jobs timed out after %.2fs (delivery.claim_timeout"
                " %gs; %s jobs pending); retrying in %.1fs: %s",
                self.last_claim or 0.0,
                self.policy.claim_timeout,
                count_or_unknown(await self._pending()),
                delay,
                exc,
            )
        else:
            log.warning("publishing: the store is unavailable (%s); retrying", exc)

    async def _watch_stall(self) -> None:
        """Count what waits once progress stopped; announce a stall's start and end."""
        watch = self.stall
        now = self.clock.monotonic()
        if watch.wants_count(now, _STALL_RECOUNT):
            watch.counted(now, await self._pending())
        began = watch.began
        change = watch.transition(now)
        if change == "started":
            self.metrics.stalled.set(1)
            log.warning(
                "publishing: the outbox is stalled: no delivery progress for %.0fs with %s jobs"
                " pending (last claim %s, %d claims timed out so far)",
                now - watch.last_progress,
                count_or_unknown(watch.pending),
                "never" if self.last_claim is None else f"{self.last_claim:.2f}s",
                self.claim_timeouts,
            )
        elif change == "ended":
            self.metrics.stalled.set(0)
            log.info(
                "publishing: the outbox delivers again after %.0fs without progress",
                watch.last_progress - (began if began is not None else watch.last_progress),
            )

    def outbox_detail(self) -> dict[str, object]:
        """What /readyz shows of the outbox (a stall is detail, not unreadiness)."""
        watch = self.stall
        now = self.clock.monotonic()
        stalled = watch.stalled(now)
        last_progress = self.clock.now() - (now - watch.last_progress)
        return {
            "stalled": stalled,
            "since": iso_time(last_progress) if stalled else None,
            "pending": watch.pending if stalled else None,
            "last_progress": iso_time(last_progress),
            "stall_after": self.policy.stall_after,
            "last_claim_seconds": None if self.last_claim is None else round(self.last_claim, 4),
            "claim_timeouts": self.claim_timeouts,
        }

    async def _take_token(self, gate: TargetGate, target: str, now: float) -> bool:
        """The target's rate limit: shared through Redis when configured, else this process's."""
        if self.shared is None or gate.spec is None:
            return gate.bucket.take(now)
        wait = await self.shared.take(target, gate.spec.rate_limit)
        if wait is None:  # Redis unavailable: this process's share of the rate
            return gate.bucket.take(now)
        if wait > 0:
            gate.held_until = now + wait
            return False
        return True

    def _gate_for(self, job: Job) -> TargetGate | None:
        """The job's gate; None when its target is unknown, disabled or publishing is off."""
        if job.backend_route is not None:
            gate = self.gates.get(job.target)
            if gate is None:
                gate = self.gates[job.target] = TargetGate(
                    None, self.policy, self.clock.monotonic(), 1
                )
            return gate
        gate = self.gates.get(job.target)
        if gate is None or gate.spec is None or not gate.spec.enabled:
            return None
        if self.config.mode == "metrics-only":
            return None
        return gate

    def _spawn(self, coro: Awaitable[None]) -> None:
        """One job's delivery: per-job work the engine holds, collects and waits for at `stop`
        (not a background task of its own)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("publishing: delivery task failed: %r", exc, exc_info=exc)
        self._wake.set()
        self._finished.set()

    # -- one job -------------------------------------------------------------------------------

    async def _hold(self, job: Job) -> None:
        """A job whose target cannot take it now: publishing off, target unknown or disabled."""
        self.stall.progress(self.clock.monotonic())
        spec = self.registry.get(job.target)
        try:
            if self.config.mode == "metrics-only" and job.backend_route is None:
                self._count(job.target, "skipped")
                await self.outbox.complete(job)
                return
            reason = (
                f"target {job.target} is disabled"
                if spec is not None
                else f"target {job.target} is not configured"
            )
            if self.clock.now() - job.created_at >= self.policy.max_age:
                await self._dead_letter(job, reason, count=False)
            else:
                await self.outbox.retry(
                    job, reason, at=self.clock.now() + HOLD, count_attempt=False
                )
        except StoreUnavailable as exc:
            log.warning("publishing: job %d left for its lease to expire (%s)", job.id, exc)

    def _count(self, target: str, outcome: str) -> None:
        gate = self.gates.get(target)
        if gate is not None:
            stats = gate.stats
            setattr(stats, outcome, getattr(stats, outcome) + 1)
        self.metrics.deliveries.labels(target, outcome).inc()

    async def _deliver(self, job: Job, gate: TargetGate) -> None:
        loop_start = self.clock.monotonic()
        try:
            alert = job.alert
            if job.backend_route is not None:
                outcome = await self._deliver_backend(job, alert)
            else:
                assert gate.spec is not None
                outcome = await self.send(gate.spec, alert)
        except asyncio.CancelledError:
            gate.in_flight -= 1
            raise
        except Exception as exc:  # a bug: the job goes to the DLQ (replayable), never lost
            log.exception("publishing: delivering job %d to %s failed", job.id, job.target)
            outcome = SendOutcome(False, None, error=f"internal error ({type(exc).__name__})")
        now = self.clock.monotonic()
        gate.in_flight -= 1
        elapsed = now - loop_start
        try:
            await self._settle(job, gate, outcome, elapsed, now)
        except StoreUnavailable as exc:
            log.warning("publishing: job %d left for its lease to expire (%s)", job.id, exc)

    async def send(self, spec: TargetSpec, alert: Alert) -> SendOutcome:
        """Format and send one alert to one target (also used by the API's test endpoint)."""
        assert self.client is not None, "engine not started"
        name = spec.name
        ctx = SendContext(
            client=self.client,
            clock=self.clock,
            get_ref=lambda fp: self.outbox.get_ref(name, fp),
            put_ref=lambda fp, ref: self.outbox.put_ref(name, fp, ref),
            drop_ref=lambda fp: self.outbox.drop_ref(name, fp),
        )
        return await SENDERS[spec.type](ctx, spec, alert)

    def _series(self, target: str) -> _TargetSeries:
        """The target's metric series, looked up once (`labels()` costs microseconds)."""
        series = self._target_series.get(target)
        if series is None:
            m = self.metrics
            series = self._target_series[target] = _TargetSeries(
                m.duration.labels(target),
                m.breaker.labels(target),
                m.deliveries.labels(target, "sent"),
                m.lag.labels(target),
            )
        return series

    async def _settle(
        self, job: Job, gate: TargetGate, outcome: SendOutcome, elapsed: float, now: float
    ) -> None:
        self.stall.progress(now)  # an attempt finished, whatever its outcome
        stats = gate.stats
        target = job.target
        series = self._series(target)
        stats.latencies.append(elapsed)
        stats.last_status = outcome.status
        series.duration.observe(elapsed)
        wall = self.clock.now()
        if not outcome.throttled:
            opened = gate.breaker.record(outcome.ok, now)
            if opened:
                log.warning("publishing: circuit breaker for %s opened", target)
                if self.shared is not None and gate.spec is not None:
                    await self.shared.hold(target, gate.breaker.open_for)
            series.breaker.set(0 if gate.breaker.opened_at is None else 1)
        if outcome.ok:
            stats.sent += 1
            stats.recent.append(True)
            stats.last_success = wall
            series.sent.inc()
            series.lag.observe(max(0.0, wall - job.created_at))
            await self.outbox.complete(job)
            return
        error = self._describe(outcome)
        stats.failed += 1
        stats.recent.append(False)
        stats.last_failure = wall
        stats.last_error = error
        self.metrics.deliveries.labels(target, "failed").inc()
        attempts = job.attempts + (0 if outcome.throttled else 1)
        if not outcome.retry:
            await self._dead_letter(job, error)
            return
        if attempts >= self.policy.max_attempts or wall - job.created_at >= self.policy.max_age:
            await self._dead_letter(job, f"gave up after {attempts} attempts: {error}")
            return
        if outcome.retry_after is not None:
            delay = outcome.retry_after
        else:
            delay = backoff(attempts, self.policy.backoff_base, self.policy.backoff_cap)
        if outcome.throttled:
            gate.bucket.pause(now + delay)  # the whole target waits, not only this job
            if self.shared is not None and gate.spec is not None:
                await self.shared.hold(target, delay)  # and every other worker and replica
        stats.retried += 1
        self.metrics.deliveries.labels(target, "retried").inc()
        await self.outbox.retry(job, error, at=wall + delay, count_attempt=not outcome.throttled)
        due = now + delay
        self._soonest = due if self._soonest is None else min(self._soonest, due)

    async def _dead_letter(self, job: Job, error: str, *, count: bool = True) -> None:
        log.warning(
            "publishing: job %d (%s, alert %s) dead-lettered: %s",
            job.id,
            job.target,
            job.fingerprint,
            error,
        )
        self._count(job.target, "dead_lettered")
        await self.outbox.dead_letter(job, error, count_attempt=count)

    def _describe(self, outcome: SendOutcome) -> str:
        text = outcome.error or "failed"
        if outcome.body:
            text += f": {outcome.body[:300]}"
        return storable(self.redact(text))  # a target's answer may hold a NUL: stored escaped

    # -- history backends ----------------------------------------------------------------------

    def history_requests(self, backend: str, alert: Alert) -> list[tuple[str, str, bytes]]:
        """(method, path, body) to store `alert` on `backend`: `history.backends.<name>` when
        set; else the compat rule for `POST <history.path>` (fan-out or rewrite for the
        backend's role) when there is one; else the envelope to `history.path`."""
        history = self.config.history
        if backend in history.backends:
            hb = history.backends[backend]
            body = webhook.flat(alert) if hb.shape == "flat" else webhook.envelope(alert)
            return [("POST", hb.path, orjson.dumps(body))]
        envelope = webhook.envelope(alert)
        path = history.path
        if history.shape == "flat":
            return [("POST", path, orjson.dumps(webhook.flat(alert)))]
        compat = self.gw.compat
        if compat is None:
            return [("POST", path, orjson.dumps(envelope))]
        hit = compat.ruleset.match("POST", config_path(path), dict, {})  # as a request is matched
        if hit is None:
            return [("POST", path, orjson.dumps(envelope))]
        role = compat.role_of(backend)
        rule = hit.rule
        if rule.fans_out_for(role):
            fo = rule.fan_out
            assert fo is not None
            items = fan_out_items(fo, envelope) or []
            target = fo.path.render(hit.params) if fo.path is not None else path
            return [(fo.method, target, orjson.dumps(item)) for item in items]
        rewrite = rule.rewrite_for(role)
        if rewrite is not None:
            if rewrite.path is not None:
                path = rewrite.path.render(hit.params)
            if rewrite.body:
                envelope = apply(rewrite.body, envelope)
        return [("POST", path, orjson.dumps(envelope))]

    async def _deliver_backend(self, job: Job, alert: Alert) -> SendOutcome:
        """POST the alert through the route's split and fallback, on the gateway's pools: the
        attempt loop (`proxy.pipeline.run_attempts`) under the route's replay rules, retry
        budget and passive health, as a proxied request with an `Idempotency-Key` is."""
        gw = self.gw
        state = gw.state
        route = state.routes_by_name.get(job.backend_route or "")
        if route is None:
            return SendOutcome(False, None, retry=True, error=f"no route {job.backend_route!r}")
        available = gw.health.available(self.clock.monotonic())
        decision = decide(
            route, state.tables[route.name], bucket_of(job.fingerprint), available, sticky=True
        )
        shaped: dict[str, list[tuple[str, str, bytes]]] = {}
        unshaped: SendOutcome | None = None
        for name in decision.attempts:
            if name not in state.upstreams:
                continue
            try:
                shaped[name] = self.history_requests(name, alert)
            except Exception as exc:  # a compat transform that cannot apply to this alert
                unshaped = SendOutcome(False, None, error=f"{name}: cannot shape the alert ({exc})")
        tries = [name for name in decision.attempts if name in shaped]
        if not tries:
            return unshaped or SendOutcome(False, None, retry=True, error="no backend to try")
        budget = state.budgets[route.name]
        outcome = ProxyOutcome()
        attempts = Attempts(gw, route, budget, outcome, "POST", True, True)
        transport = _HistoryTransport(gw, job, alert, shaped, state.client_timeouts[route.name])
        deadline = asyncio.get_running_loop().time() + route.timeouts.total
        budget.start()
        try:
            name, answer = await run_attempts(attempts, tries, deadline, transport)
        except UpstreamError as exc:
            note = " (the route's retry budget is spent)" if attempts.refused else ""
            return SendOutcome(False, None, retry=True, error=f"{exc.backend}: {exc.failure}{note}")
        finally:
            budget.finish()
        out = answer.value
        assert isinstance(out, SendOutcome)
        if out.ok:
            return SendOutcome.done(out.status, f"stored by {name}")
        return SendOutcome(
            False, out.status, retry=out.retry, error=f"{name}: {out.error}", body=out.body
        )

    # -- what the API shows --------------------------------------------------------------------

    def gate_of(self, name: str) -> TargetGate | None:
        return self.gates.get(name)

    def breaker_state(self, name: str) -> str:
        gate = self.gates.get(name)
        return gate.breaker.state(self.clock.monotonic()) if gate else "closed"
