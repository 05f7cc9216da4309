"""The publishing feature: the delivery engine, target discovery and the `/publishing/*` API.

    GET  /publishing/targets              every target (static, kubernetes, invalid ones too)
    POST /publishing/targets/refresh      list the Kubernetes secrets again now
    GET  /publishing/mode                 normal | metrics-only
    GET  /publishing/stats                per target: sent, failed, retried, dead-lettered, latency
    POST /publishing/test/{target}        send a synthetic alert, report the target's answer
    GET  /publishing/dlq                  dead-lettered jobs with their last error
    POST /publishing/dlq/{id}/replay      put one back in line

The POST endpoints need the admin token when one is configured. No answer carries a
credential: URLs are shown redacted and errors pass through the target's redactor.

The feature is on whenever the config has a `publishing` or an `alerts` section (intake
enqueues `backend:<route>` jobs that this engine delivers). Intake reads `target_names()` and
`mode()` to know where alerts may go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from cutover.alerts.model import Alert
from cutover.core.db import StoreUnavailable
from cutover.core.errors import BadRequest, NotFound, Unavailable
from cutover.core.storable import MAX_KEY, identity_problem
from cutover.core.tasks import Supervised, stop_in_order
from cutover.proxy.host import Feature
from cutover.publishing.config import DEFAULT, PublishingConfig
from cutover.publishing.delivery import (
    OUTCOMES,
    DeliveryEngine,
    PublishingMetrics,
    delivery_counts,
)
from cutover.publishing.delivery import iso_time as _iso
from cutover.publishing.outbox import Outbox
from cutover.publishing.targets import TargetRegistry, TargetSpec

if TYPE_CHECKING:
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.host import Host
    from cutover.publishing.discovery import Discovery

log = logging.getLogger("cutover.publishing")
MAX_TEST_TIMEOUT = 60.0
STORE_DOWN = "the durable store is down"
SCRAPE_TIMEOUT = 2.0  # the outbox count a scrape waits for, at most
# A scrape reuses an outbox count this young (seconds on the gateway's clock), and scrapes that
# arrive together share one count: several scrapers of a large outbox cost one query.
SCRAPE_MAX_AGE = 1.0
MAX_JOB_ID = 2**63 - 1  # job ids are 64-bit integers in both stores
DASHBOARD_DLQ = 20  # the newest dead letters the dashboard lists


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _settings(config: CutoverConfig) -> PublishingConfig:
    return config.publishing or DEFAULT


class PublishingFeature(Feature):
    name = "publishing"

    @classmethod
    def wanted(cls, config: CutoverConfig) -> bool:
        return config.publishing is not None or config.alerts is not None

    def __init__(self, gw: Host) -> None:
        super().__init__(gw)
        self.settings = _settings(gw.config)
        self.registry = TargetRegistry()
        self.registry.set_static(self.settings.targets)
        self.outbox: Outbox | None = None
        self.engine: DeliveryEngine | None = None
        self.discovery: Discovery | None = None
        self._starter: Supervised | None = None
        self._ready = asyncio.Event()
        self._depth_targets: set[str] = set()
        self.metrics = PublishingMetrics(gw.metrics.registry)

    # -- what intake asks --------------------------------------------------------------------

    def target_names(self) -> list[str]:
        """Targets that alerts may be published to now (empty in metrics-only mode)."""
        if self.mode() == "metrics-only":
            return []
        return [t.name for t in self.registry.enabled()]

    def mode(self) -> str:
        if self.settings.mode == "metrics-only" or not self.registry.enabled():
            return "metrics-only"
        return "normal"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # Until done: a failure nobody foresaw is logged and the start tried again.
        self._starter = self.gw.tasks.start("publishing-start", self._start, until_done=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._ready.wait()), 10.0)

    async def _start(self) -> None:
        """Open the store (retrying while it is down), then run the engine and discovery.
        Each part starts once, so that a retry after a failure picks up where it stopped."""
        if self.engine is None:
            delay = 0.5
            while True:
                try:
                    db = await self.gw.database()
                    outbox = Outbox(db, self.gw.clock)
                    await outbox.setup()
                    break
                except StoreUnavailable as exc:
                    log.warning("publishing: store unavailable (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(30.0, delay * 2)
            self.outbox = outbox
            self.engine = DeliveryEngine(
                self.gw, outbox, self.registry, self.settings, metrics=self.metrics
            )
        await self.engine.start()
        if self.discovery is None:
            await self._start_discovery()
        self._ready.set()
        log.info(
            "publishing: %d static targets, kubernetes discovery %s, mode %s",
            len(self.settings.targets),
            "on" if self.settings.kubernetes else "off",
            self.mode(),
        )

    async def _start_discovery(self) -> None:
        if self.settings.kubernetes is None:
            self.registry.set_discovered((), ())
            return
        # Imported when configured: the Kubernetes client takes most of a second to import.
        from cutover.publishing.discovery import Discovery

        self.discovery = Discovery(
            self.settings.kubernetes, self.registry, self.gw.clock, tasks=self.gw.tasks
        )
        await self.discovery.start()
        await self.discovery.wait_ready(5.0)

    def in_flight(self) -> dict[str, int]:
        engine = self.engine
        if engine is None:
            return {}
        counts = {f"delivering[{n}]": g.in_flight for n, g in engine.gates.items()}
        counts["delivery.tasks"] = engine.running
        return counts

    async def stop(self) -> None:
        """Discovery, then the engine (which flushes delivered jobs before the gateway closes
        the store): each step runs whatever happened to the one before."""
        await stop_in_order(
            (
                ("publishing start", self._stop_starter),
                ("kubernetes discovery", self._stop_discovery),
                ("delivery engine", self._stop_engine),
            ),
            log,
        )

    async def _stop_starter(self) -> None:
        if self._starter is not None:
            await self._starter.stop()

    async def _stop_discovery(self) -> None:
        if self.discovery is not None:
            await self.discovery.stop()

    async def _stop_engine(self) -> None:
        if self.engine is not None:
            await self.engine.stop()

    async def reload(self, config: CutoverConfig) -> None:
        old = self.settings
        self.settings = _settings(config)
        self.registry.set_static(self.settings.targets)
        if self.engine is not None:
            self.engine.set_config(self.settings)
        if self._ready.is_set() and old.kubernetes != self.settings.kubernetes:
            if self.discovery is not None:
                await self.discovery.stop()
                self.discovery = None
            await self._start_discovery()

    async def before_scrape(self) -> None:
        """Outbox depth and dead letters for /metrics, read from the store when scraped, so
        that an alert on a growing or stalled outbox needs no background task. Scrapes share
        a count in flight and reuse one younger than `SCRAPE_MAX_AGE`: the gauges, store_up
        included, are then that count's. A store that refuses or does not answer within
        `SCRAPE_TIMEOUT` sets store_up to 0 and leaves the depth gauges at their last value."""
        outbox = self.outbox
        if outbox is None:  # the store has not answered since start
            self.metrics.store_up.set(0)
            return
        try:
            counts = await outbox.recent_counts(max_age=SCRAPE_MAX_AGE, timeout=SCRAPE_TIMEOUT)
        except (StoreUnavailable, TimeoutError):
            self.metrics.store_up.set(0)
            return
        except Exception as exc:  # the store answered with an error (a table missing, …)
            self.metrics.store_up.set(0)
            log.warning("publishing: the store did not answer the outbox count (%r)", exc)
            return
        self.metrics.store_up.set(1)
        names = {*counts, *self._depth_targets, *(t.name for t in self.registry.all())}
        for name in names:
            self.metrics.pending.labels(name).set(counts.get(name, {}).get("pending", 0))
            self.metrics.dead.labels(name).set(counts.get(name, {}).get("dead", 0))
        self._depth_targets = names

    def readiness(self) -> dict[str, object] | None:
        status = self.discovery.status if self.discovery else None
        return {
            "delivery": self.engine.state.value if self.engine else "starting",
            "mode": self.mode(),
            "targets": len(self.registry.enabled()),
            "kubernetes": None
            if status is None
            else {"available": status.available, "last_error": status.last_error},
            # A stall is shown, not made unreadiness: every replica shares the outbox, and
            # taking them all out of the Service would stop intake as well.
            "outbox": self.engine.outbox_detail() if self.engine else None,
        }

    # -- routes ------------------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/publishing/targets", self.targets)
        router.add_post("/publishing/targets/refresh", self.refresh)
        router.add_get("/publishing/mode", self.mode_endpoint)
        router.add_get("/publishing/stats", self.stats)
        router.add_post("/publishing/test/{target}", self.test)
        router.add_get("/publishing/dlq", self.dlq)
        router.add_post("/publishing/dlq/{id}/replay", self.replay)

    def add_admin_routes(self, router: web.UrlDispatcher) -> None:
        """The DLQ replay on the admin listener too, for the dashboard (same handler, same
        token check, same answer)."""
        router.add_post("/admin/publishing/dlq/{id}/replay", self.replay)

    async def dashboard(self) -> dict[str, Any] | None:
        """Per target health, breaker, rate, pending and dead letters, and the newest dead
        letters (GET /publishing/targets, /publishing/stats, /publishing/dlq)."""
        targets = [self._target_info(t) for t in self.registry.all()]
        targets += [
            {**bad.public(), "health": "invalid", "breaker": None} for bad in self.registry.invalid
        ]
        panel: dict[str, Any] = {"mode": self.mode(), "targets": targets}
        if self.engine is None or self.outbox is None:
            panel["store"] = "starting"
            return panel
        panel["stats"] = await self.stats_report(self.engine, self.outbox)
        try:
            jobs = await self.outbox.dead_letters(limit=DASHBOARD_DLQ, target=None)
            panel["dead_letters"] = [j.summary() for j in jobs]
            panel["store"] = "ok"
        except StoreUnavailable:
            panel["dead_letters"], panel["store"] = None, "unavailable"
        return panel

    def _require_ready(self) -> tuple[DeliveryEngine, Outbox]:
        """The engine and the outbox, or `Unavailable` (503) while the store was never reached."""
        if self.engine is None or self.outbox is None:
            raise Unavailable(
                "publishing is starting: the durable store is not reachable yet", retry_after=1
            )
        return self.engine, self.outbox

    def _target_info(self, spec: TargetSpec) -> dict[str, object]:
        info = spec.public()
        gate = self.engine.gate_of(spec.name) if self.engine else None
        stats = gate.stats if gate else None
        rate = stats.success_rate() if stats else None
        total = (stats.sent + stats.failed) if stats else 0
        info.update(
            {
                "health": stats.health() if stats else "unknown",
                "success_rate": round(rate, 3) if rate is not None else None,
                "last_success": _iso(stats.last_success) if stats else None,
                "breaker": self.engine.breaker_state(spec.name) if self.engine else "closed",
                "invalid_reason": None,
                # the original service's field names
                "health_status": stats.health() if stats else "unknown",
                "last_successful_publish": _iso(stats.last_success) if stats else None,
                "total_publishes": total,
                "successful_publishes": stats.sent if stats else 0,
                "failed_publishes": stats.failed if stats else 0,
                "priority": None,
            }
        )
        return info

    async def targets(self, request: web.Request) -> web.Response:
        out = [self._target_info(t) for t in self.registry.all()]
        for bad in self.registry.invalid:
            info = bad.public()
            info.update({"health": "invalid", "health_status": "invalid", "breaker": None})
            out.append(info)
        return _json(out)

    async def refresh(self, request: web.Request) -> web.Response:
        self.gw.require_admin(request)
        now = _iso(self.gw.clock.now())
        if self.discovery is None:
            return _json(
                {
                    "message": "kubernetes discovery is not configured (publishing.kubernetes)",
                    "targets_discovered": 0,
                    "invalid_targets": 0,
                    "refresh_timestamp": now,
                    "success": False,
                }
            )
        ok, found = await self.discovery.refresh()
        invalid = sum(1 for t in self.registry.invalid if t.source == "kubernetes")
        message = f"{found} targets discovered, {invalid} invalid"
        if not ok:
            message += f"; {self.discovery.status.last_error}"
        return _json(
            {
                "message": message,
                "targets_discovered": found,
                "invalid_targets": invalid,
                "refresh_timestamp": now,
                "success": ok,
            }
        )

    async def mode_endpoint(self, request: web.Request) -> web.Response:
        mode = self.mode()
        enabled = self.registry.enabled()
        status = self.discovery.status if self.discovery else None
        if mode == "normal":
            description = f"alerts are published to {len(enabled)} enabled targets"
        elif self.settings.mode == "metrics-only":
            description = "metrics-only by configuration: alerts are recorded, nothing is sent"
        else:
            description = "no target is enabled: alerts are recorded, nothing is sent"
        return _json(
            {
                "mode": mode,
                "legacy_mode": "intelligent" if mode == "normal" else "metrics_only",
                "configured_mode": self.settings.mode,
                "targets_available": bool(enabled),
                "targets_count": len(enabled),
                "last_discovery_refresh": _iso(status.last_refresh) if status else None,
                "kubernetes_available": bool(status and status.available),
                "description": description,
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        engine, outbox = self._require_ready()
        return _json(await self.stats_report(engine, outbox))

    async def stats_report(self, engine: DeliveryEngine, outbox: Outbox) -> dict[str, object]:
        """Per target: sent, failed, health, breaker, pending, dead letters (GET stats)."""
        try:
            # Read now, not the scrapes' shared count: an operator reads this right after a
            # replay or a test send, and asks rarely (scrapers ask on every interval).
            queued = await outbox.counts()
        except StoreUnavailable:
            queued = {}
        delivered = delivery_counts(engine.metrics)  # every worker's, unlike the gates
        per_target: list[dict[str, object]] = []
        names = [t.name for t in self.registry.all()]
        names += sorted(n for n in engine.gates if n not in names)
        names += sorted(n for n in {*queued, *delivered} if n not in names)
        sent = failed = 0
        for name in names:
            gate = engine.gate_of(name)
            entry: dict[str, object] = {"name": name}
            if gate is not None:
                entry.update(gate.stats.as_dict())
                entry["health"] = gate.stats.health()
                entry["breaker"] = gate.breaker.state(self.gw.clock.monotonic())
            outcomes = delivered.get(name, dict.fromkeys(OUTCOMES, 0))
            entry.update(outcomes)
            sent += outcomes["sent"]
            failed += outcomes["failed"]
            counts = queued.get(name, {})
            entry["pending"] = counts.get("pending", 0)
            entry["dead_letters"] = counts.get("dead", 0)
            per_target.append(entry)
        total = sent + failed
        return {
            "mode": self.mode(),
            "total_targets": len(self.registry.all()),
            "active_targets": len(self.registry.enabled()),
            "total_publishes": total,
            "successful_publishes": sent,
            "failed_publishes": failed,
            "success_rate": round(sent / total, 3) if total else None,
            "pending_jobs": sum(c.get("pending", 0) for c in queued.values()),
            "dead_letters": sum(c.get("dead", 0) for c in queued.values()),
            "targets": per_target,
            "scope": (
                "counts: every worker process; success_rate, latency, last_*, health, "
                "breaker: this worker process; pending and dead_letters: the shared store"
            ),
            "last_updated": _iso(self.gw.clock.now()),
        }

    async def test(self, request: web.Request) -> web.Response:
        self.gw.require_admin(request)
        engine, _ = self._require_ready()
        name = request.match_info["target"]
        spec = self.registry.get(name)
        if spec is None:
            raise NotFound(f"Target '{name}' not found")
        options: dict[str, Any] = {}
        raw = await request.read()
        if raw.strip():
            try:
                options = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BadRequest("body: expected a JSON object") from None
            if not isinstance(options, dict):
                raise BadRequest("body: expected a JSON object")
        timeout = options.get("timeout_seconds", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise BadRequest("timeout_seconds: expected a number above 0")
        try:
            alert = self._test_alert(name, options.get("test_alert"))
        except ValueError as exc:
            raise BadRequest(f"test_alert{exc}") from None
        spec = _with_timeout(spec, min(float(timeout), MAX_TEST_TIMEOUT))
        started = time.perf_counter()
        outcome = await engine.send(spec, alert)
        elapsed = (time.perf_counter() - started) * 1000
        error = None if outcome.ok else engine._describe(outcome)
        return _json(
            {
                "target_name": name,
                "success": outcome.ok,
                "status_code": outcome.status,
                "response_time_ms": round(elapsed, 2),
                "error_message": error,
                "test_timestamp": _iso(self.gw.clock.now()),
                "fingerprint": alert.fingerprint,
            }
        )

    def _test_alert(self, name: str, given: object) -> Alert:
        """The default synthetic alert, or the caller's (an Alertmanager alert object)."""
        now = self.gw.clock.now()
        labels = {"alertname": "TestAlert", "severity": "info", "source": "alert-history-test"}
        annotations = {"summary": f"Test alert from cutover to {name}"}
        status = "firing"
        fingerprint = f"test-{name}-{int(now)}"
        if given is not None:
            if not isinstance(given, dict):
                raise ValueError(": expected an object (an Alertmanager alert) or null")
            for key in ("labels", "annotations"):
                value = given.get(key, {})
                if not isinstance(value, dict) or not all(
                    isinstance(v, str) for v in value.values()
                ):
                    raise ValueError(f".{key}: expected an object of strings")
            labels = {**labels, **given.get("labels", {})}
            annotations = {**annotations, **given.get("annotations", {})}
            status = given.get("status", "firing")
            if status not in ("firing", "resolved"):
                raise ValueError(".status: expected firing or resolved")
            given_fp = given.get("fingerprint")
            if given_fp is not None and not isinstance(given_fp, str):
                raise ValueError(".fingerprint: expected a string")
            problem = identity_problem(given_fp or "", limit=MAX_KEY)
            if problem is not None:  # targets keep references by fingerprint in the store
                raise ValueError(f".fingerprint: expected {problem}")
            fingerprint = given_fp or fingerprint
        return Alert(
            fingerprint=fingerprint,
            status=status,
            labels=MappingProxyType(labels),
            annotations=MappingProxyType(annotations),
            starts_at=_iso(now) or "",
        )

    async def dlq(self, request: web.Request) -> web.Response:
        _, outbox = self._require_ready()
        try:
            limit = int(request.query.get("limit", "100"))
            if not 1 <= limit <= 1000:
                raise ValueError
        except ValueError:
            raise BadRequest("limit: expected 1 to 1000") from None
        target = request.query.get("target")
        problem = identity_problem(target) if target is not None else None
        if problem is not None:
            raise BadRequest(f"target: expected {problem}")
        try:
            jobs = await outbox.dead_letters(limit=limit, target=target)
        except StoreUnavailable as exc:
            raise Unavailable(STORE_DOWN) from exc
        return _json({"count": len(jobs), "dead_letters": [j.summary() for j in jobs]})

    async def replay(self, request: web.Request) -> web.Response:
        self.gw.require_admin(request)
        _, outbox = self._require_ready()
        try:
            job_id = int(request.match_info["id"])
            if not 1 <= job_id <= MAX_JOB_ID:
                raise ValueError
        except ValueError:
            raise BadRequest("id: expected a job id (integer)") from None
        try:
            ok = await outbox.replay(job_id)
        except StoreUnavailable as exc:
            raise Unavailable(STORE_DOWN) from exc
        if not ok:
            raise NotFound(f"no dead-lettered job {job_id}")
        return _json({"replayed": job_id, "state": "pending"})


def _with_timeout(spec: TargetSpec, timeout: float) -> TargetSpec:
    from dataclasses import replace

    return replace(spec, timeout=timeout)
