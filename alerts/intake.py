"""Alert intake: `POST /webhook/proxy` (and any other configured path), the enrichment and
classification APIs, and the background work behind them (LLM classification, delayed alerts).

An alert is accepted when its row in `cutover_alerts`, its dedup record and its outbox jobs
(the history backends' `backend:<route>` copy and the publishing targets the routing tree chose)
are committed in one transaction; only then does the gateway answer 2xx. Webhooks share that
transaction by group commit (`core.group_commit`, docs/alerts.md *Group commit*): those that
arrive while a batch commits are written together in the next, with multi-row statements, and
each is answered as it would have been alone. A store that cannot be
reached gives 503, which Alertmanager retries; a payload that can never be valid gives 400 with
every problem and its JSON path.

Per alert, by enrichment mode (DESIGN.md, Decisions):

- `transparent`: no classification; filter; route; publish.
- `enriched`: classify (rules; or the LLM, rules on any failure); filter; route; publish with it.
- `transparent_with_recommendations`: no filter; publish to every target of the routing tree,
  with the LLM's classification attached when there is one.

The webhook never waits for an LLM: a classification that is not in the cache is asked for in
the background. The alert is stored as `classifying` (durably: a restart picks it up again), its
history copy is queued at once, and its publishing jobs follow once the LLM (or the rules) answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hmac
import logging
import operator
import random
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from cutover.alerts.config import ENRICHMENT_MODES, AlertsConfig, IntakePath
from cutover.alerts.llm import AuditRecord, Classifier
from cutover.alerts.matchers import alert_facts
from cutover.alerts.model import Alert, Classification
from cutover.alerts.routes import all_targets, route_alert
from cutover.alerts.webhook_formats import (
    alert_from_stored,
    alert_to_stored,
    parse_payload,
    parse_single_alert,
)
from cutover.core.bounded import STORE_TIMEOUT, bounded
from cutover.core.clock import format_rfc3339
from cutover.core.db import ClaimMeter, Database, StoreUnavailable, Tx
from cutover.core.errors import (
    REQUEST_ID,
    BadRequest,
    BodyTooLargeError,
    CutoverError,
    MethodNotAllowed,
    Unauthorized,
    Unavailable,
    UnsupportedEncoding,
    render,
)
from cutover.core.group_commit import GroupCommit
from cutover.core.group_commit import Overloaded as QueueFull
from cutover.core.tasks import Supervised
from cutover.proxy.host import Feature
from cutover.proxy.metrics import MetricSet, counter, counter_samples, gauge, histogram

if TYPE_CHECKING:
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.host import Host
    from cutover.publishing.outbox import Outbox

log = logging.getLogger("cutover.alerts")

ENRICHMENT_KEY = "enrichment:mode"  # shared on purpose with the original services
DASHBOARD_ALERTS = 20  # the newest alerts the dashboard lists
MODE_REFRESH = 1.0  # seconds between reads of the shared mode
CLEANUP_EVERY = 60.0
CLAIM_BATCH = 16
RELEASE_BATCH = 200
_CHUNK = 65536

_MIGRATION = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS cutover_alert_dedup (
            fingerprint TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            starts_at TEXT NOT NULL,
            seen_at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS cutover_alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            fingerprint TEXT NOT NULL,
            alertname TEXT NOT NULL,
            status TEXT NOT NULL,
            received_at REAL NOT NULL,
            source TEXT NOT NULL,
            mode TEXT NOT NULL,
            state TEXT NOT NULL,
            alert TEXT NOT NULL,
            decision TEXT,
            release_at REAL,
            lease_until REAL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS cutover_alerts_work ON cutover_alerts (state, release_at)",
        "CREATE INDEX IF NOT EXISTS cutover_alerts_fp ON cutover_alerts (fingerprint, state)",
        "CREATE INDEX IF NOT EXISTS cutover_alerts_received ON cutover_alerts (received_at)",
        """CREATE TABLE IF NOT EXISTS cutover_llm_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            fingerprint TEXT NOT NULL,
            status TEXT NOT NULL,
            model TEXT NOT NULL,
            latency_ms REAL NOT NULL,
            prompt_digest TEXT NOT NULL,
            outcome TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            result TEXT,
            error TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS cutover_llm_audit_at ON cutover_llm_audit (at)",
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS cutover_alert_dedup (
            fingerprint TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            starts_at TEXT NOT NULL,
            seen_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS cutover_alerts (
            id BIGSERIAL PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            alertname TEXT NOT NULL,
            status TEXT NOT NULL,
            received_at DOUBLE PRECISION NOT NULL,
            source TEXT NOT NULL,
            mode TEXT NOT NULL,
            state TEXT NOT NULL,
            alert TEXT NOT NULL,
            decision TEXT,
            release_at DOUBLE PRECISION,
            lease_until DOUBLE PRECISION,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS cutover_alerts_work ON cutover_alerts (state, release_at)",
        "CREATE INDEX IF NOT EXISTS cutover_alerts_fp ON cutover_alerts (fingerprint, state)",
        "CREATE INDEX IF NOT EXISTS cutover_alerts_received ON cutover_alerts (received_at)",
        """CREATE TABLE IF NOT EXISTS cutover_llm_audit (
            id BIGSERIAL PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            fingerprint TEXT NOT NULL,
            status TEXT NOT NULL,
            model TEXT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            prompt_digest TEXT NOT NULL,
            outcome TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            result TEXT,
            error TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS cutover_llm_audit_at ON cutover_llm_audit (at)",
    ],
}

# The classify queue's claim, as the outbox's (publishing/outbox.py): partial indexes that hold
# only the queue, so that a claim reads about as many rows as it leases at any backlog.
_MIGRATION_2_SQL = [
    # What may be claimed now, in arrival order: an unleased alert waiting to be classified. A
    # lease takes it out of this index, so a claim never walks past alerts in flight.
    "CREATE INDEX IF NOT EXISTS cutover_alerts_ready ON cutover_alerts (id)"
    " WHERE state = 'classifying' AND lease_until IS NULL",
    # The head of each fingerprint's queue (its oldest alert waiting), the only one claimable:
    # one probe per row read.
    "CREATE INDEX IF NOT EXISTS cutover_alerts_head ON cutover_alerts (fingerprint, id)"
    " WHERE state = 'classifying'",
    # Leases, so that the ones that ran out (their worker died) are found without a scan.
    "CREATE INDEX IF NOT EXISTS cutover_alerts_leased ON cutover_alerts (lease_until)"
    " WHERE state = 'classifying' AND lease_until IS NOT NULL",
    # Alerts a delay rule holds, by when they are due.
    "CREATE INDEX IF NOT EXISTS cutover_alerts_delayed ON cutover_alerts (release_at)"
    " WHERE state = 'delayed'",
    # Superseded by the partial indexes above. Left in place, it would be chosen for
    # `state = 'classifying'` by a planner without statistics (SQLite without ANALYZE does)
    # and turn a claim into a sort of every alert waiting.
    "DROP INDEX IF EXISTS cutover_alerts_work",
]
_MIGRATION_2 = {"sqlite": _MIGRATION_2_SQL, "postgresql": _MIGRATION_2_SQL}
# Leases that ran out go back in line.
_EXPIRED_SQL = (
    "UPDATE cutover_alerts SET lease_until = NULL WHERE id IN (SELECT id FROM cutover_alerts"
    " WHERE state = 'classifying' AND lease_until IS NOT NULL AND lease_until < $1{lock})"
)
# The first unleased alerts waiting, each the head of its fingerprint's queue (publishing keeps
# each fingerprint's order): an index walk of cutover_alerts_ready, a probe of
# cutover_alerts_head per row read. (It replaces a NOT EXISTS anti-join over every alert waiting,
# sorted, which a plan made while the table was empty turned into a walk of every row per row.)
_CLAIM_SQL = (
    "UPDATE cutover_alerts SET lease_until = $1 WHERE id IN (SELECT a.id FROM cutover_alerts a"
    " WHERE a.state = 'classifying' AND a.lease_until IS NULL AND a.id = (SELECT b.id FROM"
    " cutover_alerts b WHERE b.state = 'classifying' AND b.fingerprint = a.fingerprint"
    " ORDER BY b.id LIMIT 1) ORDER BY a.id LIMIT $2{lock}) RETURNING id, mode, alert"
)

# A repeat (same fingerprint, status and startsAt seen less than the window ago) changes no row;
# anything else is recorded as the fingerprint's last alert (one row inserted or updated).
# The same rule as alerts.dedup.is_repeat, applied atomically inside the intake transaction.
_DEDUP_SQL = (
    "INSERT INTO cutover_alert_dedup (fingerprint, status, starts_at, seen_at)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint) DO UPDATE SET"
    " status = excluded.status, starts_at = excluded.starts_at, seen_at = excluded.seen_at"
    " WHERE cutover_alert_dedup.status <> excluded.status"
    " OR cutover_alert_dedup.starts_at <> excluded.starts_at"
    " OR cutover_alert_dedup.seen_at <= $5"
)
# The dedup rule for the first alert of each fingerprint in a batch, in one statement: the
# fingerprints whose record changed (new alerts) come back. Rows in fingerprint order, so that
# two workers' batches take their row locks in the same order. Later alerts of a fingerprint in
# the same batch are decided in memory against the first (alerts/intake.py, `_dedup_batch`).
_DEDUP_UNNEST_SQL = (
    "INSERT INTO cutover_alert_dedup (fingerprint, status, starts_at, seen_at)"
    " SELECT f, s, a, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(f, s, a)"
    " ORDER BY f ON CONFLICT (fingerprint) DO UPDATE SET"
    " status = excluded.status, starts_at = excluded.starts_at, seen_at = excluded.seen_at"
    " WHERE cutover_alert_dedup.status <> excluded.status"
    " OR cutover_alert_dedup.starts_at <> excluded.starts_at"
    " OR cutover_alert_dedup.seen_at <= $5 RETURNING fingerprint"
)
_DEDUP_VALUES_SQL = (
    "INSERT INTO cutover_alert_dedup (fingerprint, status, starts_at, seen_at) VALUES {rows}"
    " ON CONFLICT (fingerprint) DO UPDATE SET"
    " status = excluded.status, starts_at = excluded.starts_at, seen_at = excluded.seen_at"
    " WHERE cutover_alert_dedup.status <> excluded.status"
    " OR cutover_alert_dedup.starts_at <> excluded.starts_at"
    " OR cutover_alert_dedup.seen_at <= $2 RETURNING fingerprint"
)
_SQLITE_DEDUP_CHUNK = 1000  # rows per statement: 3 parameters each, under SQLite's 32,766
# A fingerprint whose record a later alert of the same batch changed again.
_DEDUP_SET_SQL = (
    "UPDATE cutover_alert_dedup SET status = $2, starts_at = $3, seen_at = $4"
    " WHERE fingerprint = $1"
)
_INSERT_UNNEST_SQL = (
    "INSERT INTO cutover_alerts (fingerprint, alertname, status, received_at, source, mode,"
    " state, alert, decision, release_at, updated_at)"
    " SELECT f, n, s, r, src, m, st, a, d, rel, r FROM UNNEST($1::text[], $2::text[],"
    " $3::text[], $4::float8[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],"
    " $10::float8[]) WITH ORDINALITY AS u(f, n, s, r, src, m, st, a, d, rel, o) ORDER BY o"
)
_INSERT_SQL = (
    "INSERT INTO cutover_alerts (fingerprint, alertname, status, received_at, source, mode,"
    " state, alert, decision, release_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $4)"
)
_CANCEL_DELAYED_SQL = (
    "UPDATE cutover_alerts SET state = 'cancelled', updated_at = $2"
    " WHERE fingerprint = $1 AND state = 'delayed'"
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one alert: its state, and the targets it is published to (if any)."""

    alert: Alert  # with the classification it is published with
    state: str  # queued | filtered | delayed | classifying | suppressed
    targets: tuple[str, ...] = ()
    rule: str | None = None
    release_at: float | None = None
    # Classified inline: the `cutover_alert_classifications_total` source, and the classifier
    # stat it counts as ("rules", "cache_hits" or None). Counted only for an alert that is new.
    inline_source: str | None = None
    inline_stat: str | None = None

    def decision(self) -> str:
        return orjson.dumps(
            {"targets": list(self.targets), "rule": self.rule, "release_at": self.release_at}
        ).decode()


_ALERT_FIELDS = [f.name for f in dataclasses.fields(Alert) if f.init]
# Every field but the classification, read at once: Alert(*those, classification) is a copy
# in half the time of dataclasses.replace (1.5 µs against 3.0), which walks the fields by name.
_alert_rest = operator.attrgetter(*_ALERT_FIELDS[:-1])
_FAST_COPY = _ALERT_FIELDS[-1] == "classification" and len(_ALERT_FIELDS) == len(
    dataclasses.fields(Alert)
)


def _with_classification(alert: Alert, classification: Classification | None) -> Alert:
    """`alert` with `classification`: the same object when it already has it (no copy)."""
    if alert.classification is classification:
        return alert
    if _FAST_COPY:
        return Alert(*_alert_rest(alert), classification)
    return dataclasses.replace(alert, classification=classification)


@dataclass(eq=False, slots=True)
class AlertsMetrics(MetricSet):
    """The alert intake's metrics: webhooks, alerts and what became of them, classifications,
    the LLM's latency and breaker, the enrichment mode, claims of alerts to classify."""

    registry: CollectorRegistry
    events: PromCounter = counter(
        "cutover_enrichment_events_total",
        "What the alert intake counted, by event: received, accepted, each result,"
        " truncated_alerts, invalid_payloads, store_unavailable (webhooks answered 503:"
        " the store was down), store_unavailable_background (background work that found"
        " the store down) (what /enrichment/stats shows, summed over workers).",
        ["event"],
    )
    accepted_by_mode: PromCounter = counter(
        "cutover_enrichment_accepted_total",
        "Alerts accepted, by the enrichment mode in force when they came in.",
        ["mode"],
    )
    webhooks: PromCounter = counter(
        "cutover_alert_webhooks_total",
        "Webhook deliveries answered by the gateway, by path and status code.",
        ["path", "status"],
    )
    alerts: PromCounter = counter(
        "cutover_alerts_total",
        "Alerts taken in, by what became of them (queued, duplicate, filtered, delayed,"
        " classifying, suppressed, released, cancelled).",
        ["result"],
    )
    truncated: PromCounter = counter(
        "cutover_alerts_truncated_total",
        "Alerts Alertmanager left out of its webhooks (truncatedAlerts).",
    )
    classified: PromCounter = counter(
        "cutover_alert_classifications_total",
        "Classifications made, by source (rules, llm) and LLM outcome.",
        ["source", "outcome"],
    )
    llm_latency: Histogram = histogram(
        "cutover_llm_latency_seconds",
        "Time spent asking the LLM for one classification (all attempts).",
        buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    )
    breaker: Gauge = gauge(
        "cutover_llm_breaker_open",
        "1 while the LLM circuit breaker is open (calls go to the rules).",
        mode="livemax",
    )
    mode: Gauge = gauge(
        "cutover_enrichment_mode",
        "Enrichment mode in force: 0 transparent, 1 enriched, 2 transparent_with_recommendations.",
        mode="livemax",
    )
    claim_seconds: Histogram = histogram(
        "cutover_alerts_claim_seconds",
        "Time one claim of alerts to classify took (timed-out claims included).",
    )
    claim_timeouts: PromCounter = counter(
        "cutover_alerts_claim_timeouts_total",
        "Claims of alerts to classify abandoned at alerts.claim_timeout.",
    )
    batch_alerts: Histogram = histogram(
        "cutover_alert_intake_batch_alerts",
        "Alerts per group-commit batch of the intake (one transaction each).",
        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
    )
    commit_seconds: Histogram = histogram(
        "cutover_alert_intake_commit_seconds",
        "Seconds one group-commit batch of the intake took to commit (or fail).",
    )


@dataclass(frozen=True, slots=True)
class Webhook:
    """One webhook's alerts, parsed and planned, waiting for its batch's commit."""

    alerts: Sequence[Alert]
    starts_given: Sequence[bool]
    plans: Sequence[Plan | None]
    mode: str
    now: float
    intake: IntakePath


# What the commit made of a webhook: one result per alert, and the inline plans it used.
Accepted = tuple[list[dict[str, object]], list[Plan]]


NOT_STORED = "the alerts could not be stored durably; nothing was accepted, retry"


class AlertsFeature(Feature):
    name = "alerts"

    @classmethod
    def wanted(cls, config: CutoverConfig) -> bool:
        return config.alerts is not None

    @classmethod
    def create(cls, gw: Host) -> AlertsFeature | None:
        cfg = gw.config.alerts
        return cls(gw, cfg) if cfg is not None else None

    def __init__(self, gw: Host, cfg: AlertsConfig) -> None:
        super().__init__(gw)
        self.cfg = cfg
        self.clock = gw.clock
        self.redis: Any = None
        if gw.config.redis:
            import redis.asyncio as aioredis

            self.redis = aioredis.Redis.from_url(
                gw.config.redis, socket_timeout=1.0, socket_connect_timeout=1.0
            )
        self._workers = max(1, gw.config.workers)  # they share the LLM budget without Redis
        self.classifier = Classifier(
            cfg.classification,
            gw.clock,
            redis=self.redis,
            audit=self._audit,
            workers=self._workers,
        )
        self.mode: str = cfg.enrichment_mode
        self.mode_source = "default"
        self.counts: Counter[str] = Counter()
        self.by_mode: Counter[str] = Counter()
        self._db: Database | None = None
        self._outbox: Outbox | None = None
        self._setup_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[Supervised] = []
        self._last_cleanup = -CLEANUP_EVERY
        self._rand = random.Random()  # request ids (seeded from the OS, in each worker)
        self._store_warned_at = -60.0
        # Group commit: webhooks that arrive while a batch commits join the next one.
        self.batcher: GroupCommit[Webhook, Accepted] = GroupCommit(
            self._commit_batch,
            max_batch=cfg.batch_max,
            max_queue=cfg.queue_max,
            expected=(StoreUnavailable,),
        )
        self._batcher_task: Supervised | None = None
        self._bind_metrics()

    # -- metrics -------------------------------------------------------------------------

    def _bind_metrics(self) -> None:
        self.metrics = AlertsMetrics(self.gw.metrics.registry)
        self.metrics.mode.set(ENRICHMENT_MODES.index(self.mode))  # type: ignore[arg-type]
        self.claims = ClaimMeter(
            "alerts: claiming alerts to classify",
            "alerts waiting",
            self.clock,
            self.metrics.claim_seconds,
            self.metrics.claim_timeouts,
            self._waiting,
            log,
        )

    def _tally(self, event: str, n: int = 1) -> None:
        """An intake event, counted here and in `cutover_enrichment_events_total` (summed over
        every worker by /enrichment/stats)."""
        self.counts[event] += n
        self.metrics.events.labels(event).inc(n)

    def in_flight(self) -> dict[str, int]:
        """Alerts queued for the group commit's next batch, and in the batch committing."""
        batcher = self.batcher
        return {"batcher.queued": batcher.queued, "batcher.committing": batcher.committing}

    def _count(self, result: str, n: int = 1) -> None:
        self._tally(result, n)
        self.metrics.alerts.labels(result).inc(n)

    # -- lifecycle -------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        for intake in self.cfg.paths:
            router.add_route("*", intake.path, self._intake_handler(intake))
        router.add_route("*", "/enrichment/mode", self.enrichment_mode)
        router.add_route("*", "/enrichment/stats", self._get_only(self.enrichment_stats))
        router.add_route("*", "/classification/classify", self.classify)
        router.add_route("*", "/classification/stats", self._get_only(self.classification_stats))
        router.add_route("*", "/classification/models", self._get_only(self.classification_models))

    async def start(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self._store()  # a store that is down now is retried on first use
        self._batcher_task = self.gw.tasks.start("alerts-intake-batcher", self.batcher.run)
        self._tasks.append(self.gw.tasks.start("alerts-worker", self._work_loop))
        if self.redis is not None:
            await self._refresh_mode()
            self._tasks.append(self.gw.tasks.start("alerts-mode", self._mode_loop))

    async def stop(self) -> None:
        # The pending batch is flushed first: what was queued is committed (or refused with
        # its batch) before the store closes; nothing new is taken meanwhile.
        self.batcher.close()
        batcher, self._batcher_task = self._batcher_task, None
        if batcher is not None:
            await batcher.stop(grace=max(10.0, 2 * self.cfg.commit_timeout))
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            await task.stop()
        await self.classifier.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def reload(self, config: CutoverConfig) -> None:
        cfg = config.alerts
        if cfg is None:
            return  # the intake keeps its config until a restart (proxy.restart says so)
        if cfg.classification != self.cfg.classification:
            old = self.classifier
            self.classifier = Classifier(
                cfg.classification,
                self.clock,
                redis=self.redis,
                audit=self._audit,
                workers=self._workers,
            )
            await old.close()
        if cfg.enrichment_mode != self.cfg.enrichment_mode and self.mode_source == "default":
            self._set_mode(cfg.enrichment_mode, "default")
        self.cfg = cfg

    async def _store(self) -> tuple[Database, Outbox]:
        """The store with this feature's tables (created once); raises StoreUnavailable."""
        if self._db is not None and self._outbox is not None:
            return self._db, self._outbox
        async with self._setup_lock:
            if self._db is None or self._outbox is None:
                from cutover.publishing.outbox import Outbox

                db = await self.gw.database()
                outbox = Outbox(db, self.clock)
                await outbox.setup()
                await db.migrate("alerts-intake-1", _MIGRATION)  # type: ignore[arg-type]
                await db.migrate("alerts-intake-2", _MIGRATION_2)  # type: ignore[arg-type]
                self._db, self._outbox = db, outbox
        return self._db, self._outbox

    async def dashboard(self) -> dict[str, Any] | None:
        """The newest alerts: name, status, labels, the classification they were published
        with, their state (queued, filtered, …) and the targets they went to."""
        try:
            db, _ = await bounded(self._store(), STORE_TIMEOUT)
            rows = await bounded(
                db.fetch(
                    "SELECT id, fingerprint, alertname, status, received_at, state, alert,"
                    " decision FROM cutover_alerts ORDER BY id DESC LIMIT $1",
                    DASHBOARD_ALERTS,
                ),
                STORE_TIMEOUT,
            )
        except (StoreUnavailable, TimeoutError):
            return {"mode": self.mode, "alerts": None, "store": "unavailable"}
        alerts = []
        for row in rows:
            stored = orjson.loads(row["alert"]) if row["alert"] else {}
            decision = orjson.loads(row["decision"]) if row["decision"] else {}
            alerts.append(
                {
                    "id": row["id"],
                    "fingerprint": row["fingerprint"],
                    "alertname": row["alertname"],
                    "status": row["status"],
                    "received_at": row["received_at"],
                    "state": row["state"],
                    "labels": stored.get("labels") or {},
                    "classification": stored.get("classification"),
                    "targets": decision.get("targets") or [],
                    "rule": decision.get("rule"),
                }
            )
        return {"mode": self.mode, "alerts": alerts, "store": "ok"}

    def _store_down(self, exc: StoreUnavailable, what: str, background: bool = False) -> None:
        """`store_unavailable` counts webhooks answered 503 (what Alertmanager saw) only;
        background work that found the store down is counted apart."""
        self._tally("store_unavailable_background" if background else "store_unavailable")
        now = self.clock.monotonic()
        if now - self._store_warned_at >= 60.0:
            self._store_warned_at = now
            log.warning("%s: store unavailable (%s)", what, exc)

    # -- auth, body ------------------------------------------------------------------------

    def _authorize(self, request: web.BaseRequest) -> None:
        """Returns when the webhook's credentials (if any are configured) came; else 401."""
        auth = self.cfg.auth
        if auth is None:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        given = given.strip()
        if auth.bearer_token is not None:
            # The header's bytes as sent (those that are not UTF-8 came as surrogate escapes).
            sent = given.encode("utf-8", "surrogateescape")
            if scheme.lower() == "bearer" and hmac.compare_digest(sent, auth.bearer_token.encode()):
                return
            challenge = 'Bearer realm="cutover-webhook"'
        else:
            if scheme.lower() == "basic":
                try:
                    user, _, password = (
                        base64.b64decode(given, validate=True).decode().partition(":")
                    )
                except ValueError:  # not base64 (or not ASCII), or not UTF-8 once decoded
                    user, password = "", ""
                ok_user = hmac.compare_digest(user.encode(), (auth.username or "").encode())
                ok_pass = hmac.compare_digest(password.encode(), (auth.password or "").encode())
                if ok_user and ok_pass:
                    return
            challenge = 'Basic realm="cutover-webhook"'
        raise Unauthorized(
            "this webhook needs the configured credentials (Authorization header)", challenge
        )

    def _request_id(self, request: web.BaseRequest) -> str:
        """The client's request id, or one made up; an error raised later carries it."""
        rid = request.get(REQUEST_ID)
        if rid is None:
            rid = request.headers.get(self.gw.config.headers.request_id)
            if not rid:  # 32 hex digits as uuid4().hex, without its urandom call and object
                rid = "%032x" % self._rand.getrandbits(128)  # noqa: UP031 - the fastest spelling
            request[REQUEST_ID] = rid
        return rid

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The body, gzip undone, within `alerts.max_body` (413 past it, which closes)."""
        cap = self.cfg.max_body
        if request.content_length is not None and request.content_length > cap:
            raise BodyTooLargeError(cap)
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip"):
            raise UnsupportedEncoding("Content-Encoding must be identity or gzip")
        if encoding != "gzip" and request.content_length is not None:
            # Within the cap (checked above), and the parser stops at its length: read at once
            # (the usual webhook, one chunk) rather than copied chunk by chunk into a buffer.
            return await request.content.read()
        buf = bytearray()
        async for chunk in request.content.iter_chunked(_CHUNK):
            buf += chunk
            if len(buf) > cap:
                raise BodyTooLargeError(cap)
        if encoding != "gzip":
            return bytes(buf)
        inflater = zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(bytes(buf), cap + 1)
        except zlib.error:
            raise BadRequest(
                "the gzip body could not be decompressed", code="invalid_body"
            ) from None
        if len(out) > cap or inflater.unconsumed_tail:
            raise BodyTooLargeError(cap)
        return out

    def _get_only(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if request.method not in ("GET", "HEAD"):
                raise self._not_allowed(request, "GET")
            return await handler(request)

        return wrapped

    def _not_allowed(self, request: web.BaseRequest, allow: str) -> MethodNotAllowed:
        self._request_id(request)  # the answer carries it
        return MethodNotAllowed(allow)

    # -- intake ------------------------------------------------------------------------------

    def _intake_handler(self, intake: IntakePath) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                resp = await self._intake(request, intake)
            except CutoverError as exc:  # rendered here, so that its status is counted too
                resp = render(exc, self._request_id(request))
            self.metrics.webhooks.labels(intake.path, str(resp.status)).inc()
            return resp

        return handler

    async def _intake(self, request: web.BaseRequest, intake: IntakePath) -> web.Response:
        self._request_id(request)  # made up when absent: an error raised below carries it
        if request.method != "POST":
            raise self._not_allowed(request, "POST")
        self._authorize(request)
        body = await self._read_body(request)
        started = self.clock.monotonic()
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._tally("invalid_payloads")
            problem = {"path": "$", "expected": f"a JSON document ({exc.msg})"}
            raise BadRequest(
                "the body is not JSON", code="invalid_json", problems=[problem]
            ) from None
        now = self.clock.now()
        payload = parse_payload(document, now=now, formats=intake.formats, mapping=intake.mapping)
        if not payload.ok:
            self._tally("invalid_payloads")
            problems = [p.as_dict() for p in payload.problems]
            raise BadRequest(
                f"{len(problems)} problem(s) in the payload; nothing was accepted",
                code="invalid_payload",
                problems=problems,
            )
        if payload.truncated_alerts > 0:
            self._tally("truncated_alerts", payload.truncated_alerts)
            self.metrics.truncated.inc(payload.truncated_alerts)
            log.warning(
                "webhook %s: Alertmanager truncated %d alert(s) from group %s (raise max_alerts"
                " on the receiver to get them)",
                intake.path,
                payload.truncated_alerts,
                payload.group_key or "-",
            )
        mode = self.mode
        plans = [self._inline_plan(alert, mode, now) for alert in payload.alerts]
        hook = Webhook(payload.alerts, payload.starts_given, plans, mode, now, intake)
        try:
            await self._store()  # the tables (once); a store that is down is not queued for
        except StoreUnavailable as exc:
            self._store_down(exc, f"webhook {intake.path}")
            raise Unavailable(NOT_STORED, retry_after=1) from exc
        try:
            future = self.batcher.submit(hook, max(1, len(payload.alerts)))
            results, _ = await self.batcher.wait(future)
        except StoreUnavailable as exc:  # the batch failed (counted by `_commit_batch`)
            raise Unavailable(NOT_STORED, retry_after=1) from exc
        except QueueFull as exc:
            self._tally("overloaded")
            raise Unavailable(
                "too many alerts are waiting to be stored; nothing was accepted, retry",
                code="intake_overloaded",
                retry_after=1,
            ) from exc
        except Exception as exc:
            # A bug in the batch's commit: it rolled back, and the batcher's task logs it,
            # counts it and starts again; the webhook is retried like any refusal.
            raise Unavailable(
                "the alerts could not be stored; nothing was accepted, retry",
                code="intake_failed",
                retry_after=1,
            ) from exc
        accepted = sum(1 for r in results if r["result"] != "duplicate")
        # The bytes orjson makes, as they are (json_response would decode them to encode again).
        return web.Response(
            body=orjson.dumps(
                {
                    "status": "accepted",
                    "format": payload.format,
                    "mode": mode,
                    "received": len(results),
                    "accepted": accepted,
                    "duplicates": len(results) - accepted,
                    "alerts": results,
                    "processing_time_ms": round((self.clock.monotonic() - started) * 1000, 3),
                }
            ),
            content_type="application/json",
            charset="utf-8",
        )

    async def _commit_batch(self, hooks: list[Webhook]) -> list[Accepted]:
        """One transaction for a batch of webhooks (the group commit's `commit`); counts what
        was accepted once it is committed. A store that refuses fails the whole batch, and
        nothing of it is written."""
        started = self.clock.monotonic()
        self.metrics.batch_alerts.observe(sum(max(1, len(h.alerts)) for h in hooks))
        try:
            db, outbox = await self._store()
            # SQLite: unbounded, as before group commit (lock waits stop at its 5 s busy
            # timeout). A bound there means a progress handler that calls into Python every
            # 1,000 steps from SQLite's thread, waiting for the GIL each time: it stretched
            # a batch's commit by up to hundreds of milliseconds under load.
            bound = self.cfg.commit_timeout if db.dialect == "postgresql" else None
            async with db.transaction(timeout=bound) as tx:
                if self._has_delays():
                    # A resolve cancels a delayed alert stored earlier, maybe in this same
                    # batch: alert by alert, in order (still one transaction).
                    done: list[Accepted] = []
                    for h in hooks:
                        inline: list[Plan] = []
                        results = await self._accept(
                            tx, outbox, h.alerts, h.starts_given, h.plans, h.mode, h.now,
                            h.intake, inline,
                        )  # fmt: skip
                        done.append((results, inline))
                else:
                    done = await self._accept_batch(tx, outbox, hooks)
        except StoreUnavailable as exc:
            for h in hooks:
                self._store_down(exc, f"webhook {h.intake.path}")
            raise
        finally:
            self.metrics.commit_seconds.observe(self.clock.monotonic() - started)
        self._counted(hooks, done)
        return done

    def _counted(self, hooks: list[Webhook], done: list[Accepted]) -> None:
        """A committed batch's counts, summed first: a metric child is looked up once per
        batch and label, not once per alert."""
        results: Counter[str] = Counter()
        accepted_by_mode: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        stats: Counter[str] = Counter()
        received = 0
        for h, (entries, inline) in zip(hooks, done, strict=True):
            for entry in entries:
                results[entry["result"]] += 1  # type: ignore[index]
            for plan in inline:  # as `_count_inline`, summed
                if plan.inline_source is not None:
                    sources[plan.inline_source] += 1
                if plan.inline_stat is not None:
                    stats[plan.inline_stat] += 1
            received += len(entries)
            accepted_by_mode[h.mode] += len(entries) - sum(
                1 for e in entries if e["result"] == "duplicate"
            )
        for result, n in results.items():
            self._count(result, n)
        for source, n in sources.items():
            self.metrics.classified.labels(source, "inline").inc(n)
        for stat, n in stats.items():
            self.classifier.stats["total_requests"] += n
            self.classifier.stats[stat] += n
        accepted = sum(accepted_by_mode.values())
        self._tally("received", received)
        self._tally("accepted", accepted)
        for mode, n in accepted_by_mode.items():
            self.by_mode[mode] += n
            self.metrics.accepted_by_mode.labels(mode).inc(n)
        if results["classifying"]:
            self._wake.set()

    async def _accept_batch(self, tx: Tx, outbox: Outbox, hooks: list[Webhook]) -> list[Accepted]:
        """`_accept` for many webhooks at once, with the same answers as one by one in
        arrival order: dedup in one statement, the alerts in one, their jobs in one."""
        forward = self.cfg.forward_to_route
        llm = self.classifier.llm is not None
        flat = [
            (n, alert, given, plan)
            for n, h in enumerate(hooks)
            for alert, given, plan in zip(h.alerts, h.starts_given, h.plans, strict=True)
        ]
        done: list[Accepted] = [([], []) for _ in hooks]
        entries: list[dict[str, object]] = []
        for n, alert, _, _ in flat:
            entry: dict[str, object] = {
                "fingerprint": alert.fingerprint,
                "alertname": alert.name,
                "status": alert.status,
            }
            done[n][0].append(entry)
            entries.append(entry)
        new = await self._dedup_batch(tx, hooks, [(a, g) for _, a, g, _ in flat])
        waiting: set[str] = set()
        if llm:
            asking = sorted(
                {
                    a.fingerprint
                    for (_, a, _, p), fresh in zip(flat, new, strict=True)
                    if fresh and p
                }
            )
            waiting = await self._classifying(tx, asking) if asking else set()
        rows: list[tuple[Any, ...]] = []
        jobs: list[tuple[Alert, Sequence[str], float]] = []
        for (n, alert, _, plan), fresh, entry in zip(flat, new, entries, strict=True):
            if not fresh:
                entry["result"] = "duplicate"
                continue
            hook = hooks[n]
            if plan is not None and llm and alert.fingerprint in waiting:
                plan = None  # publishing keeps each fingerprint's order: wait behind it
            if plan is not None:
                done[n][1].append(plan)
            state = plan.state if plan is not None else "classifying"
            if state == "classifying":
                waiting.add(alert.fingerprint)
            stored = plan.alert if plan is not None else alert
            rows.append(
                (
                    alert.fingerprint,
                    alert.name,
                    alert.status,
                    hook.now,
                    hook.intake.path,
                    hook.mode,
                    state,
                    orjson.dumps(alert_to_stored(stored)).decode(),
                    plan.decision() if plan is not None else None,
                    plan.release_at if plan is not None else None,
                )
            )
            if forward is not None:
                jobs.append((alert, [f"backend:{forward}"], hook.now))
            if plan is not None and plan.state == "queued" and plan.targets:
                jobs.append((plan.alert, plan.targets, hook.now))
            entry["result"] = state
            if plan is not None:
                entry["targets"] = list(plan.targets)
                entry["rule"] = plan.rule
                c = plan.alert.classification
                entry["classification"] = c.as_dict() if c is not None else None
                if plan.release_at is not None:
                    entry["release_at"] = plan.release_at
        if rows:
            if tx.dialect == "postgresql":
                columns = [list(col) for col in zip(*rows, strict=True)]
                await tx.execute(_INSERT_UNNEST_SQL, *columns)
            else:
                await tx.executemany(_INSERT_SQL, rows)
        if jobs:
            await outbox.enqueue_many(tx, jobs)
        return done

    async def _dedup_batch(
        self, tx: Tx, hooks: list[Webhook], alerts: list[tuple[Alert, bool]]
    ) -> list[bool]:
        """Which alerts of the batch are new, as one by one in order would decide. The batch
        shares one time (its latest webhook's), so a second alert like the first in the same
        batch is a repeat whatever the store held. The first alert of each fingerprint asks the
        store (one upsert); a later one is new when it differs from the one before it."""
        window = self.cfg.dedup_window
        if window <= 0:
            return [True] * len(alerts)
        now = max(h.now for h in hooks)
        new: list[bool] = []
        first: dict[str, tuple[str, str]] = {}  # fingerprint -> (status, startsAt) of its first
        last: dict[str, tuple[str, str]] = {}
        again: set[str] = set()  # fingerprints a later alert of the batch changed again
        for alert, given in alerts:
            fp = alert.fingerprint
            key = (alert.status, alert.starts_at if given else "")
            previous = last.get(fp)
            if previous is None:
                first[fp] = key
                new.append(True)  # decided by the store below
            elif previous == key:
                new.append(False)
            else:
                new.append(True)
                again.add(fp)
            last[fp] = key
        fresh = await self._dedup_upsert(tx, first, now, now - window)
        seen: set[str] = set()
        for i, (alert, _) in enumerate(alerts):
            fp = alert.fingerprint
            if fp not in seen:
                seen.add(fp)
                new[i] = fp in fresh
        if again:
            await tx.executemany(_DEDUP_SET_SQL, [(fp, *last[fp], now) for fp in sorted(again)])
        return new

    @staticmethod
    async def _dedup_upsert(
        tx: Tx, first: dict[str, tuple[str, str]], now: float, repeat_before: float
    ) -> set[str]:
        """The dedup rule for one alert per fingerprint; the fingerprints that are new."""
        fps = sorted(first)
        if tx.dialect == "postgresql":
            rows = await tx.fetch(
                _DEDUP_UNNEST_SQL,
                fps,
                [first[fp][0] for fp in fps],
                [first[fp][1] for fp in fps],
                now,
                repeat_before,
            )
            return {r["fingerprint"] for r in rows}
        fresh: set[str] = set()
        for at in range(0, len(fps), _SQLITE_DEDUP_CHUNK):
            chunk = fps[at : at + _SQLITE_DEDUP_CHUNK]
            values = ", ".join(
                f"(${3 + 3 * i}, ${4 + 3 * i}, ${5 + 3 * i}, $1)" for i in range(len(chunk))
            )
            args: list[object] = [now, repeat_before]
            for fp in chunk:
                args += [fp, *first[fp]]
            rows = await tx.fetch(_DEDUP_VALUES_SQL.format(rows=values), *args)
            fresh.update(r["fingerprint"] for r in rows)
        return fresh

    @staticmethod
    async def _classifying(tx: Tx, fingerprints: list[str]) -> set[str]:
        """Those of `fingerprints` with an alert still waiting to be classified."""
        if tx.dialect == "postgresql":
            rows = await tx.fetch(
                "SELECT DISTINCT fingerprint FROM cutover_alerts WHERE state = 'classifying'"
                " AND fingerprint = ANY($1::text[])",
                fingerprints,
            )
            return {r["fingerprint"] for r in rows}
        found: set[str] = set()
        for at in range(0, len(fingerprints), _SQLITE_DEDUP_CHUNK):
            chunk = fingerprints[at : at + _SQLITE_DEDUP_CHUNK]
            marks = ", ".join(f"${i + 1}" for i in range(len(chunk)))
            rows = await tx.fetch(
                "SELECT DISTINCT fingerprint FROM cutover_alerts WHERE state = 'classifying'"
                f" AND fingerprint IN ({marks})",
                *chunk,
            )
            found.update(r["fingerprint"] for r in rows)
        return found

    def _needs_llm(self, mode: str) -> bool:
        return self.classifier.llm is not None and mode != "transparent"

    def _inline_plan(self, alert: Alert, mode: str, now: float) -> Plan | None:
        """The plan when it can be made now; None when the LLM has to be asked first."""
        if mode == "transparent":
            return self._plan(alert, mode, None, now)
        quick = self.classifier_quick(alert, mode)
        if quick is _ASK:
            return None
        stat = None
        if quick is not None:
            stat = "rules" if self.classifier.llm is None else "cache_hits"
        return self._plan(
            alert,
            mode,
            quick,  # type: ignore[arg-type]
            now,
            inline_source=quick.source if quick else "none",  # type: ignore[attr-defined]
            inline_stat=stat,
        )

    def classifier_quick(self, alert: Alert, mode: str) -> Classification | object | None:
        """Rules, or a cached LLM answer, or `_ASK` (no I/O; counted by `_count_inline` once
        the alert is known not to be a duplicate)."""
        c = self.classifier
        if c.llm is None:
            return c.by_rules(alert) if mode == "enriched" else None
        hit = c.cached(alert)
        return _ASK if hit is None else hit

    def _count_inline(self, plan: Plan) -> None:
        """An inline classification that was used: a classification request (and a rules
        answer or a cache hit). A duplicate delivery is neither."""
        if plan.inline_source is not None:
            self.metrics.classified.labels(plan.inline_source, "inline").inc()
        if plan.inline_stat is not None:
            self.classifier.stats["total_requests"] += 1
            self.classifier.stats[plan.inline_stat] += 1

    def _plan(
        self,
        alert: Alert,
        mode: str,
        classification: Classification | None,
        now: float,
        *,
        inline_source: str | None = None,
        inline_stat: str | None = None,
    ) -> Plan:
        """The plan for `alert` (the inline counts go in here, not by a second copy of it)."""
        routing = self.cfg.routing
        if mode == "transparent_with_recommendations":
            attached = classification if classification and classification.source == "llm" else None
            a = _with_classification(alert, attached)
            return Plan(
                a,
                "queued",
                all_targets(routing),
                inline_source=inline_source,
                inline_stat=inline_stat,
            )
        a = _with_classification(alert, classification if mode == "enriched" else None)
        facts = alert_facts(a)  # once, for the filters and the routes
        decision = self.cfg.filters.decide(a, now, facts)
        if decision.action == "deny":
            state, targets = "filtered", ()
        else:
            targets = route_alert(a, routing, facts)
            state = "delayed" if decision.action == "delay" else "queued"
        return Plan(
            a,
            state,
            targets,
            decision.rule,
            decision.release_at if state == "delayed" else None,
            inline_source,
            inline_stat,
        )

    def _has_delays(self) -> bool:
        return any(r.action == "delay" for r in self.cfg.filters.rules)

    async def _accept(
        self,
        tx: Tx,
        outbox: Outbox,
        alerts: Sequence[Alert],
        starts_given: Sequence[bool],
        plans: Sequence[Plan | None],
        mode: str,
        now: float,
        intake: IntakePath,
        inline: list[Plan],
    ) -> list[dict[str, object]]:
        """Store each alert that is not a repeat; `inline` gets the inline plans used."""
        window = self.cfg.dedup_window
        forward = self.cfg.forward_to_route
        llm = self.classifier.llm is not None
        delays = self._has_delays()
        results: list[dict[str, object]] = []
        for alert, given, plan in zip(alerts, starts_given, plans, strict=True):
            entry: dict[str, object] = {
                "fingerprint": alert.fingerprint,
                "alertname": alert.name,
                "status": alert.status,
            }
            results.append(entry)
            if window > 0:
                new = await tx.execute(
                    _DEDUP_SQL,
                    alert.fingerprint,
                    alert.status,
                    alert.starts_at if given else "",
                    now,
                    now - window,
                )
                if not new:
                    entry["result"] = "duplicate"
                    continue
            if plan is not None and llm:
                # Publishing keeps each fingerprint's order: wait behind an earlier alert of the
                # same fingerprint that is still being classified.
                earlier = await tx.fetchval(
                    "SELECT id FROM cutover_alerts WHERE fingerprint = $1"
                    " AND state = 'classifying' LIMIT 1",
                    alert.fingerprint,
                )
                if earlier is not None:
                    plan = None
            if plan is not None:
                inline.append(plan)
            if plan is not None and delays:
                plan = await self._cancel_delayed(tx, plan, now)
            state = plan.state if plan is not None else "classifying"
            stored = plan.alert if plan is not None else alert
            await tx.execute(
                _INSERT_SQL,
                alert.fingerprint,
                alert.name,
                alert.status,
                now,
                intake.path,
                mode,
                state,
                orjson.dumps(alert_to_stored(stored)).decode(),
                plan.decision() if plan is not None else None,
                plan.release_at if plan is not None else None,
            )
            if forward is not None:
                await outbox.enqueue(tx, alert, [f"backend:{forward}"], now=now)
            if plan is not None and plan.state == "queued" and plan.targets:
                await outbox.enqueue(tx, plan.alert, plan.targets, now=now)
            entry["result"] = state
            if plan is not None:
                entry["targets"] = list(plan.targets)
                entry["rule"] = plan.rule
                c = plan.alert.classification
                entry["classification"] = c.as_dict() if c is not None else None
                if plan.release_at is not None:
                    entry["release_at"] = format_rfc3339(plan.release_at)
        return results

    async def _cancel_delayed(self, tx: Tx, plan: Plan, now: float) -> Plan:
        """A resolve cancels its firing alert still held by a delay rule; then neither is
        published (the resolve is `suppressed`)."""
        if plan.alert.status != "resolved":
            return plan
        cancelled = await tx.execute(_CANCEL_DELAYED_SQL, plan.alert.fingerprint, now)
        if not cancelled:
            return plan
        self._count("cancelled", cancelled)
        if plan.state == "queued":
            return Plan(plan.alert, "suppressed", (), plan.rule)
        return plan

    # -- background work ----------------------------------------------------------------

    async def _work_loop(self) -> None:
        """Classify, release, clean up; an unexpected failure restarts the loop (core.tasks)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval)
            self._wake.clear()
            try:
                await self.run_once()
            except StoreUnavailable as exc:
                self._store_down(exc, "alert worker", background=True)

    async def run_once(self) -> dict[str, int]:
        """Classify what waits for the LLM, release delayed alerts that are due, clean up."""
        done = {"classified": 0, "released": 0}
        db, outbox = await self._store()
        while True:
            n = await self._classify_pending(db, outbox)
            done["classified"] += n
            if n < CLAIM_BATCH:
                break
        done["released"] = await self._release_due(db, outbox)
        if self.clock.monotonic() - self._last_cleanup >= CLEANUP_EVERY:
            self._last_cleanup = self.clock.monotonic()
            await self._cleanup(db)
        self.metrics.breaker.set(
            1
            if self.classifier.breaker
            and self.classifier.breaker.state(self.clock.monotonic()) == "open"
            else 0
        )
        return done

    def _lease(self) -> float:
        llm = self.classifier.llm
        if llm is None:
            return 60.0
        return 30.0 + 2 * llm.timeout * (llm.retries + 1)

    async def claim_classifying(self, db: Database) -> list[dict[str, Any]]:
        """Lease up to `CLAIM_BATCH` alerts waiting for classification (the oldest first, one
        per fingerprint): a claim transaction as the outbox's (planned for the rows there are
        now), bounded by `alerts.claim_timeout` (`StoreTimeout` past it, nothing leased),
        timed and counted (`cutover_alerts_claim_seconds`, `..._claim_timeouts_total`)."""
        return await self.claims.measure(self._claim(db), self.cfg.claim_timeout)

    async def _claim(self, db: Database) -> list[dict[str, Any]]:
        now = self.clock.now()
        lock = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""
        async with db.transaction(timeout=self.cfg.claim_timeout, claim=True) as tx:
            await tx.execute(_EXPIRED_SQL.format(lock=lock), now)
            return await tx.fetch(_CLAIM_SQL.format(lock=lock), now + self._lease(), CLAIM_BATCH)

    async def _waiting(self) -> int:
        """Alerts waiting for classification (for the slow-claim log), counted within the
        claim bound."""
        db, _ = await self._store()
        async with db.transaction(timeout=self.cfg.claim_timeout, read_only=True) as tx:
            n = await tx.fetchval("SELECT COUNT(*) FROM cutover_alerts WHERE state = 'classifying'")
        return int(n)

    async def _classify_pending(self, db: Database, outbox: Outbox) -> int:
        rows = await self.claim_classifying(db)
        if rows:
            # Every row's classification finishes before a failure of one goes up to the
            # worker: none is left running on its own while the worker restarts.
            done = await asyncio.gather(
                *(self._classify_row(db, outbox, row) for row in rows), return_exceptions=True
            )
            for outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome
        return len(rows)

    async def _classify_row(self, db: Database, outbox: Outbox, row: dict[str, Any]) -> None:
        alert = alert_from_stored(orjson.loads(row["alert"]))
        mode = row["mode"]
        classification: Classification | None = None
        if self._needs_llm(mode):
            result = await self.classifier.classify(alert)
            classification = result.classification
            outcome = result.llm_outcome or ("cache" if result.cached else "none")
            self.metrics.classified.labels(classification.source, outcome).inc()
            if result.llm_outcome is not None:
                self.metrics.llm_latency.observe(result.processing_time)
        elif mode == "enriched":
            classification = self.classifier.by_rules(alert)
        now = self.clock.now()
        plan = self._plan(alert, mode, classification, now)
        async with db.transaction() as tx:
            if self._has_delays():
                plan = await self._cancel_delayed(tx, plan, now)
            changed = await tx.execute(
                "UPDATE cutover_alerts SET state = $2, alert = $3, decision = $4,"
                " release_at = $5, lease_until = NULL, updated_at = $6"
                " WHERE id = $1 AND state = 'classifying'",
                row["id"],
                plan.state,
                orjson.dumps(alert_to_stored(plan.alert)).decode(),
                plan.decision(),
                plan.release_at,
                now,
            )
            if changed and plan.state == "queued" and plan.targets:
                await outbox.enqueue(tx, plan.alert, plan.targets, now=now)
        if changed:
            self._count(plan.state)

    async def _release_due(self, db: Database, outbox: Outbox) -> int:
        now = self.clock.now()
        rows = await db.fetch(
            "SELECT id, alert, decision FROM cutover_alerts WHERE state = 'delayed'"
            " AND release_at <= $1 ORDER BY id LIMIT $2",
            now,
            RELEASE_BATCH,
        )
        released = 0
        if not rows:
            return 0
        async with db.transaction() as tx:
            for row in rows:
                changed = await tx.execute(
                    "UPDATE cutover_alerts SET state = 'released', updated_at = $2"
                    " WHERE id = $1 AND state = 'delayed'",
                    row["id"],
                    now,
                )
                if not changed:
                    continue  # resolved meanwhile (cancelled), or another worker took it
                targets = orjson.loads(row["decision"] or "{}").get("targets") or []
                if targets:
                    alert = alert_from_stored(orjson.loads(row["alert"]))
                    await outbox.enqueue(tx, alert, targets, now=now)
                released += 1
        if released:
            self._count("released", released)
        return released

    async def _cleanup(self, db: Database) -> None:
        now = self.clock.now()
        cutoff = now - self.cfg.retention
        await db.execute(
            "DELETE FROM cutover_alerts WHERE received_at < $1"
            " AND state NOT IN ('classifying', 'delayed')",
            cutoff,
        )
        await db.execute("DELETE FROM cutover_llm_audit WHERE at < $1", cutoff)
        await db.execute(
            "DELETE FROM cutover_alert_dedup WHERE seen_at <= $1",
            now - max(self.cfg.dedup_window, 1.0),
        )

    async def _audit(self, record: AuditRecord) -> None:
        self.counts["llm_decisions"] += 1
        db, _ = await self._store()
        await db.execute(
            "INSERT INTO cutover_llm_audit (at, fingerprint, status, model, latency_ms,"
            " prompt_digest, outcome, attempts, result, error)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            record.at,
            record.fingerprint,
            record.status,
            record.model,
            round(record.latency * 1000, 3),
            record.prompt_digest,
            record.outcome,
            record.attempts,
            orjson.dumps(record.result).decode() if record.result is not None else None,
            record.error,
        )

    # -- enrichment mode -------------------------------------------------------------------

    def _set_mode(self, mode: str, source: str) -> None:
        if mode != self.mode:
            log.info("enrichment mode: %s -> %s (%s)", self.mode, mode, source)
            self.counts["mode_switches"] += 1
        self.mode = mode
        self.mode_source = source
        self.metrics.mode.set(ENRICHMENT_MODES.index(mode))  # type: ignore[arg-type]

    async def _refresh_mode(self) -> bool:
        """Read the shared mode from Redis; False when Redis could not be read."""
        try:
            raw = await self.redis.get(ENRICHMENT_KEY)
        except Exception as exc:
            self.counts["redis_errors"] += 1
            log.debug("enrichment mode: Redis unavailable (%s)", type(exc).__name__)
            return False
        if raw is None:
            if self.mode_source == "redis":  # the shared key went away (Py's 1 h TTL)
                self._set_mode(self.cfg.enrichment_mode, "default")
            return True
        mode = _mode_value(raw)
        if mode is not None:
            self._set_mode(mode, "redis")
        return True

    async def _mode_loop(self) -> None:
        while True:
            await asyncio.sleep(MODE_REFRESH)
            await self._refresh_mode()

    async def enrichment_mode(self, request: web.Request) -> web.StreamResponse:
        self._request_id(request)  # made up when absent: an error raised below carries it
        if request.method in ("GET", "HEAD"):
            if self.redis is not None:
                await self._refresh_mode()
            return web.json_response({"mode": self.mode, "source": self.mode_source})
        if request.method != "POST":
            raise self._not_allowed(request, "GET, POST")
        self.gw.require_admin(request)
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:  # (a body over the limit is json_errors' 413)
            raise BadRequest(
                'the body must be JSON: {"mode": "..."}', code="invalid_json"
            ) from None
        mode = data.get("mode") if isinstance(data, dict) else None
        if mode not in ENRICHMENT_MODES:
            raise BadRequest(
                f"invalid enrichment mode; allowed: {', '.join(ENRICHMENT_MODES)}",
                code="invalid_mode",
                allowed=list(ENRICHMENT_MODES),
            )
        source = "memory"
        if self.redis is not None:
            try:
                await self.redis.set(ENRICHMENT_KEY, orjson.dumps({"mode": mode}))
            except Exception as exc:
                log.warning("enrichment mode: Redis write failed (%s)", type(exc).__name__)
                raise Unavailable(
                    "the mode could not be shared through Redis; it was not changed",
                    code="redis_unavailable",
                ) from exc
            source = "redis"
        self._set_mode(mode, source)
        return web.json_response({"mode": mode, "source": source})

    async def enrichment_stats(self, request: web.Request) -> web.StreamResponse:
        registry = self.gw.metrics.registry
        c: Counter[str] = Counter()  # every worker's intake events (as /metrics sums them)
        for labels, value in counter_samples("cutover_enrichment_events", registry):
            c[labels["event"]] += int(value)
        by_mode: Counter[str] = Counter()
        for labels, value in counter_samples("cutover_enrichment_accepted", registry):
            by_mode[labels["mode"]] += int(value)
        return web.json_response(
            {
                "mode": self.mode,
                "source": self.mode_source,
                "alerts": {
                    key: c[key]
                    for key in (
                        "received",
                        "accepted",
                        "duplicate",
                        "queued",
                        "classifying",
                        "filtered",
                        "delayed",
                        "released",
                        "cancelled",
                        "suppressed",
                    )
                },
                "accepted_by_mode": {m: by_mode[m] for m in ENRICHMENT_MODES},
                "truncated_alerts": c["truncated_alerts"],
                "invalid_payloads": c["invalid_payloads"],
                "store_unavailable": c["store_unavailable"],
                "store_unavailable_background": c["store_unavailable_background"],
                "mode_switches": self.counts["mode_switches"],
                "scope": "every worker process; mode_switches: this worker process",
            }
        )

    # -- classification API ----------------------------------------------------------------

    async def classify(self, request: web.Request) -> web.StreamResponse:
        self._request_id(request)  # made up when absent: an error raised below carries it
        if request.method != "POST":
            raise self._not_allowed(request, "POST")
        self.gw.require_admin(request)
        body = await self._read_body(request)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("the body is not JSON", code="invalid_json") from None
        force = False
        path = "$"
        if isinstance(data, dict) and "alert" in data:
            force = data.get("force", False)
            if not isinstance(force, bool):
                problem = {"path": "$.force", "expected": "true or false"}
                raise BadRequest("bad force", code="invalid_payload", problems=[problem])
            data, path = data["alert"], "$.alert"
        alert, problems = parse_single_alert(data, now=self.clock.now(), path=path)
        if alert is None:
            raise BadRequest(
                f"{len(problems)} problem(s) in the alert",
                code="invalid_payload",
                problems=[p.as_dict() for p in problems],
            )
        result = await self.classifier.classify(alert, force=force)
        outcome = result.llm_outcome or ("cache" if result.cached else "none")
        self.metrics.classified.labels(result.classification.source, outcome).inc()
        return web.json_response(
            {
                "result": result.classification.as_dict(),
                "cached": result.cached,
                "model": result.classification.model,
                "processing_time": round(result.processing_time, 6),
                "fingerprint": alert.fingerprint,
                "llm_outcome": result.llm_outcome,
            }
        )

    async def classification_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.classifier.snapshot())

    async def classification_models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(await self.classifier.models())


_ASK = object()  # "ask the LLM in the background"


def _mode_value(raw: bytes | str) -> str | None:
    """`{"mode": "..."}` (both originals write this) or a bare mode name."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = text.strip()
    if isinstance(data, dict):
        data = data.get("mode")
    return data if data in ENRICHMENT_MODES else None
