"""Canary control: runtime weights, automated rollback and progressive promotion (docs/canary.md).

The feature feeds the analysis windows from every proxied request (a request observer), runs the
controller once a second on `gw.clock`, keeps the weights in force in line with the shared state
(`canary.shared`), and serves the admin API (`canary.admin`).

Who decides: every worker publishes its windows to the shared state; the one worker holding the
controller lease judges the merged windows of all workers and replicas and moves the weights. When
the shared state is unavailable each worker judges its own traffic, may roll back on its own (that
rollback is written to the shared state once it is back) and never promotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from cutover.canary.events import Event, EventLog
from cutover.canary.shared import (
    Conflict,
    RedisShared,
    SharedState,
    SharedUnavailable,
    StoreShared,
)
from cutover.core.clock import format_rfc3339
from cutover.core.db import StoreUnavailable
from cutover.core.tasks import Supervised
from cutover.proxy.host import Feature
from cutover.proxy.metrics import MetricSet, counter, gauge
from cutover.routing.canary import (
    PHASES,
    STATUSES,
    CanaryConfig,
    Command,
    CommandOutcome,
    Control,
    ParityReading,
    RouteCanary,
    Snapshot,
    Verdict,
    apply,
    initial_control,
    judge,
    next_step,
    parity_gate,
    reconcile,
)

if TYPE_CHECKING:
    from aiohttp import web

    from cutover.core.config_model import Route
    from cutover.proxy.config import CutoverConfig
    from cutover.proxy.host import Host, RequestRecord

log = logging.getLogger("cutover.canary")

TICK = 1.0  # seconds between two controller runs
LEASE = "canary-controller"
LEASE_TTL = 3.0  # seconds; renewed every tick
FRESH = 3.0  # a worker's published window counts while it is at most this old
DASHBOARD_EVENTS = 50  # the newest events the dashboard's timeline shows
EVENTS_FLUSH_AT_STOP = 3.0  # seconds to store the audit events still waiting at shutdown
Split = tuple[tuple[str, int], ...]


def _actor_kind(actor: str) -> str:
    """`operator:alice (self-declared: bob)` -> `operator` (a bounded metric label)."""
    for kind in ("operator", "controller", "config"):
        if actor == kind or actor.startswith((kind + ":", kind + " ")):
            return kind
    return "other"


@dataclass(eq=False, slots=True)
class CanaryMetrics(MetricSet):
    """The canary feature's metrics: weights, verdicts, phases, window figures, actions and
    the shared state's reachability."""

    registry: CollectorRegistry
    weight: Gauge = gauge(
        "cutover_canary_weight",
        "Weight in force (percent), by route and backend.",
        ["route", "backend"],
        mode="livemax",
    )
    verdict: Gauge = gauge(
        "cutover_canary_verdict",
        "1 for the current verdict of the route's canary analysis, 0 for the others.",
        ["route", "verdict"],
        mode="livemax",
    )
    phase: Gauge = gauge(
        "cutover_canary_phase",
        "1 for the route's current canary phase, 0 for the others.",
        ["route", "phase"],
        mode="livemax",
    )
    error_rate: Gauge = gauge(
        "cutover_canary_error_rate",
        "Error rate over the analysis window, by route and side (baseline, candidate).",
        ["route", "side"],
        mode="livemax",
    )
    p95: Gauge = gauge(
        "cutover_canary_p95_seconds",
        "95th percentile latency over the analysis window, by route and side.",
        ["route", "side"],
        mode="livemax",
    )
    requests: Gauge = gauge(
        "cutover_canary_window_requests",
        "Requests in the analysis window, by route and side (all workers and replicas).",
        ["route", "side"],
        mode="livemax",
    )
    actions: Counter = counter(
        "cutover_canary_actions_total",
        "Weight and state changes, by route, action and actor.",
        ["route", "action", "actor"],
    )
    shared_up: Gauge = gauge(
        "cutover_shared_state_up",
        "1 when the shared state (Redis, or the store without Redis) is reachable.",
        ["backend"],
        mode="livemin",
    )


class CanaryFeature(Feature):
    name = "canary"

    @classmethod
    def wanted(cls, config: CutoverConfig) -> bool:
        """On when weights can change at run time: an admin API, a canary block or Redis."""
        return config.admin.listen is not None or config.canary is not None or bool(config.redis)

    def __init__(self, gw: Host) -> None:
        super().__init__(gw)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.cfg: CanaryConfig | None = None
        self._config_since: dict[str, float] = {}  # when each route's config split took effect
        self.canary_routes: tuple[str, ...] = ()
        self.windows: dict[str, RouteCanary] = {}
        self.controls: dict[str, Control] = {}  # the shared state as last seen, per route
        self.local: dict[str, Control] = {}  # decided here while the shared state was down
        self.pending: dict[str, Command] = {}  # rollbacks to write once it is back
        self.verdicts: dict[str, Verdict] = {}
        self.holds: dict[str, tuple[str, str]] = {}  # route -> (gate state, reason) holding it
        self.merged: dict[str, tuple[Snapshot, Snapshot]] = {}
        self.leader = False
        self.ticking = True  # tests stop the 1-s loop and call `tick()` themselves
        self.shared: SharedState | None = None
        self.events: EventLog | None = None
        self._prepared = False
        self._task: Supervised | None = None
        self._lock: asyncio.Lock | None = None
        self.metrics = CanaryMetrics(self.gw.metrics.registry)
        self._configure(gw.config)
        gw.add_observer(self.observe)

    # -- configuration -------------------------------------------------------------------

    def _configure(self, config: CutoverConfig) -> None:
        self.cfg = cfg = config.canary
        routes = tuple(r.name for r in config.routes if cfg and cfg.applies_to(r.split))
        if cfg is not None and not routes:
            log.warning(
                "canary: no route's split names both %s and %s; nothing to analyse",
                cfg.baseline,
                cfg.candidate,
            )
        window = cfg.window if cfg else 60
        lane = cfg.criteria.recent if cfg else None
        recent = lane.window if lane is not None else 0
        old = self.windows
        self.windows = {
            name: old[name]
            if name in old
            and old[name].candidate.window == window
            and old[name].candidate.recent == recent
            else RouteCanary(window, recent)
            for name in routes
        }
        self.canary_routes = routes
        now = self.gw.clock.now()
        previous = getattr(self, "_splits", {})
        self._splits = {r.name: r.split for r in config.routes}
        self._config_since = {
            r.name: self._config_since[r.name]
            if previous.get(r.name) == r.split and r.name in self._config_since
            else now
            for r in config.routes
        }
        for name in list(self.verdicts):
            if name not in routes:
                del self.verdicts[name]
        for name in list(self.holds):
            if name not in routes:
                del self.holds[name]

    def route_canary(self, route: str) -> CanaryConfig | None:
        """The canary block when it applies to `route`."""
        return self.cfg if route in self.windows else None

    def _route(self, name: str) -> Route | None:
        return self.gw.state.routes_by_name.get(name)

    # -- metrics -------------------------------------------------------------------------

    def _export(self, route: str) -> None:
        verdict = self.verdicts.get(route)
        if verdict is not None:
            for status in STATUSES:
                self.metrics.verdict.labels(route, status).set(1 if verdict.status == status else 0)
            for side, stats in (("baseline", verdict.baseline), ("candidate", verdict.candidate)):
                self.metrics.requests.labels(route, side).set(stats.requests)
                self.metrics.error_rate.labels(route, side).set(stats.error_rate or 0.0)
                self.metrics.p95.labels(route, side).set(stats.p95 or 0.0)

    def _export_control(self, route: str, weights: Split) -> None:
        for backend, weight in weights:
            self.metrics.weight.labels(route, backend).set(weight)
        if route in self.windows:
            phase = self.known(route).phase
            for p in PHASES:
                self.metrics.phase.labels(route, p).set(1 if p == phase else 0)

    # -- the data plane ------------------------------------------------------------------

    def observe(self, rec: RequestRecord) -> None:
        """Count one finished request for its side (the split's choice, whatever the health).

        An attempt of that side that failed counts as its error even when a fallback served
        the request: fallback never hides a bad canary from the analysis. So does a request the
        split gave that side while it was unavailable (ejected for its failures, or failing its
        health checks) — without it, an ejected candidate would leave its window empty, the
        verdict at `insufficient_data` and the weight where it was.
        """
        windows = self.windows.get(rec.route)
        cfg = self.cfg
        if windows is None or cfg is None or rec.status == 499:
            return
        owner = rec.owner or rec.primary
        if owner == cfg.candidate:
            side = windows.candidate
        elif owner == cfg.baseline:
            side = windows.baseline
        else:
            return
        if owner != rec.primary:  # unavailable: an error, and no latency of its own
            side.record(self.gw.clock.now(), True, None)
            return
        error = rec.status >= 500 or any(b == owner for b, _ in rec.failures)
        side.record(self.gw.clock.now(), error, rec.duration)

    # -- weights in force ----------------------------------------------------------------

    def known(self, route: str) -> Control:
        """The control in force here: local decision, else shared, else the config's."""
        found = self.local.get(route)
        if found is not None:
            return found
        r = self._route(route)
        if r is None:
            return initial_control(route, (), None, self.gw.clock.now())
        return self._base(r, self.controls.get(route))

    def _base(self, route: Route, stored: Control | None) -> Control:
        """What commands start from: the stored control, or the config's when nothing is stored
        or what is stored is another config's split that no runtime weights override."""
        if stored is not None and (stored.config_split == route.split or stored.source != "config"):
            return stored
        since = self._config_since.get(route.name, self.gw.clock.now())
        fresh = initial_control(route.name, route.split, self.route_canary(route.name), since)
        return replace(fresh, version=stored.version if stored is not None else 0)

    def effective(self, route: Route) -> tuple[Split, str]:
        """(weights in force, where they came from) for `route`."""
        control = self.local.get(route.name) or self.controls.get(route.name)
        if control is None or control.config_split != route.split:
            return route.split, "config"
        if any(b not in self.gw.config.backends for b, _ in control.weights):
            return route.split, "config"
        return control.weights, control.source

    def _apply(self, route: Route) -> None:
        """Put the route's weights in force here (called on changes, never per request)."""
        weights, _ = self.effective(route)
        cfg = self.route_canary(route.name)
        first = cfg.candidate if cfg is not None else None
        try:
            self.gw.set_split(route.name, weights, first)
        except ValueError as exc:  # not expected: weights are validated before they are stored
            log.error("route %s: weights %s refused (%s)", route.name, weights, exc)
            weights = route.split
            self.gw.set_split(route.name, weights, first)
        self._export_control(route.name, weights)

    def apply_all(self) -> None:
        for route in self.gw.config.routes:
            self._apply(route)

    def _accept(self, control: Control) -> None:
        """A newer shared document for a route: put it in force."""
        current = self.controls.get(control.route)
        if current is not None and current.version >= control.version:
            return
        self.controls[control.route] = control
        if control.route in self.local and control.route not in self.pending:
            del self.local[control.route]
        route = self._route(control.route)
        if route is not None:
            self._apply(route)

    # -- lifecycle -----------------------------------------------------------------------

    def _build_shared(self) -> SharedState:
        gw = self.gw
        durable = StoreShared(gw.database, gw.clock, tasks=gw.tasks)
        if gw.config.redis:
            prefix = self.cfg.redis_prefix if self.cfg is not None else "cutover:"
            return RedisShared(gw.config.redis, prefix, gw.clock, durable, tasks=gw.tasks)
        return durable

    async def prepare(self) -> None:
        """Load the shared state before the first request: a rollback outlives a restart."""
        if self._prepared:
            return
        self._prepared = True
        self._lock = asyncio.Lock()
        self.shared = self._build_shared()
        try:
            if isinstance(self.shared, RedisShared):
                controls = await self.shared.load_last_known()
            else:
                controls = await self.shared.load_all()
        except SharedUnavailable as exc:
            log.error("shared state unavailable at start (%s): config weights in force", exc)
            controls = {}
        for control in controls.values():
            self.shared.seen(control)
            self.controls[control.route] = control
        self.apply_all()
        self.metrics.shared_up.labels(self.shared.kind).set(1 if self.shared.connected else 0)

    async def start(self) -> None:
        await self.prepare()
        assert self.shared is not None
        await self.shared.start(self._accept, self._reconnected)
        await self._reconcile_all()
        self._task = self.gw.tasks.start("canary-controller", self._loop)

    def in_flight(self) -> dict[str, int]:
        return {"events.waiting": self.events.waiting} if self.events is not None else {}

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await task.stop(timeout=2.0)  # a Redis read may swallow the cancel
        if self.shared is not None:
            await self.shared.close()
        if self.events is not None:
            await self.events.close(EVENTS_FLUSH_AT_STOP)

    async def reload(self, config: CutoverConfig) -> None:
        self._configure(config)
        self.apply_all()  # the reload rebuilt every split table from the config
        await self._reconcile_all()

    def readiness(self) -> dict[str, Any] | None:
        if self.shared is None:
            return None
        status = self.shared.status()
        status["leader"] = self.leader
        status["local_decisions"] = sorted(self.local)
        out: dict[str, Any] = {"shared_state": status}
        if self.events is not None:
            out["events"] = self.events.status()
        return out

    async def _reconnected(self) -> None:
        """The shared state is back: write the rollbacks decided meanwhile."""
        for route, cmd in list(self.pending.items()):
            try:
                out = await self.execute(route, replace(cmd, now=self.gw.clock.now()))
            except (SharedUnavailable, Conflict):
                return
            self.pending.pop(route, None)
            self.local.pop(route, None)
            log.warning("route %s: rollback decided while the shared state was down: %s",
                        route, out.error or "written")  # fmt: skip
            r = self._route(route)
            if r is not None:
                self._apply(r)

    async def _reconcile_all(self) -> None:
        """Where the config's split changed under runtime weights, the config wins again."""
        for route in self.gw.config.routes:
            control = self.controls.get(route.name)
            if control is None or control.config_split == route.split or control.source == "config":
                continue
            with contextlib.suppress(SharedUnavailable, Conflict):
                await self.execute(route.name, None)

    # -- commands ------------------------------------------------------------------------

    async def execute(self, route: str, cmd: Command | None) -> CommandOutcome:
        """Run `cmd` (None: only reconcile with the config) against the shared state, by
        compare-and-set, and record what changed. Raises SharedUnavailable, Conflict."""
        assert self.shared is not None and self._lock is not None
        r = self._route(route)
        if r is None:
            return CommandOutcome(error=f"unknown route {route!r}")
        cfg = self.route_canary(route)
        async with self._lock:
            for _ in range(8):
                now = self.gw.clock.now()
                current = await self.shared.get(route)
                version = current.version if current is not None else 0
                base = self._base(r, current)
                steps: list[tuple[Control, CommandOutcome]] = []
                fixed = reconcile(base, r.split, cfg, now)
                if fixed.control is not None:
                    base = fixed.control
                    steps.append((current or base, fixed))
                out = (
                    apply(base, replace(cmd, now=now), cfg) if cmd is not None else CommandOutcome()
                )
                if out.error is not None and not steps:
                    return out
                if out.control is not None:
                    steps.append((base, out))
                if not steps:
                    return out
                new = replace(steps[-1][1].control, version=version + 1)  # type: ignore[arg-type]
                if await self.shared.put(new, version):
                    self.controls[route] = new
                    self._apply(r)
                    for before, step in steps:
                        self._record(route, before, step)
                    return out
            raise Conflict(route)

    def _record(self, route: str, before: Control, out: CommandOutcome) -> None:
        assert out.control is not None and out.event is not None
        after = out.control
        actor = after.actor
        kind = _actor_kind(actor)
        self.metrics.actions.labels(route, out.event, kind).inc()
        level = logging.WARNING if out.event in ("rollback", "config") else logging.INFO
        log.log(level, "route %s: %s by %s: %s", route, out.event, actor, out.reason)
        self._event(
            Event(
                at=self.gw.clock.now(),
                route=route,
                kind=out.event,
                actor=actor,
                reason=out.reason,
                weights_before=dict(before.weights),
                weights_after=dict(after.weights),
                figures=dict(out.figures),
            )
        )

    def event_log(self) -> EventLog:
        """The audit log (it opens the durable store on its first write or read)."""
        if self.events is None:
            self.events = EventLog(self.gw.database)
        return self.events

    def _event(self, event: Event) -> None:
        self.event_log().record(event)  # stored in the background: never holds the answer

    # -- the controller ------------------------------------------------------------------

    async def _loop(self) -> None:
        """Tick once a second; an unexpected failure restarts the loop (core.tasks)."""
        while True:
            await asyncio.sleep(TICK)
            if self.ticking:
                await self.tick()

    async def tick(self) -> None:
        """One controller run: publish windows, judge, act (leader only, or locally when the
        shared state is down)."""
        shared = self.shared
        if shared is None or not self.windows:
            return  # no canary: nothing to judge, no lease to hold
        now = self.gw.clock.now()
        local_only = False
        snaps = {
            name: (w.baseline.snapshot(now), w.candidate.snapshot(now))
            for name, w in self.windows.items()
        }
        try:
            for name, (b, c) in snaps.items():
                data = {"baseline": b.to_dict(), "candidate": c.to_dict()}
                await shared.publish_window(name, self.worker, now, data)
            self.leader = await shared.lease(LEASE, self.worker, LEASE_TTL)
        except SharedUnavailable:
            local_only, self.leader = True, False
        self.metrics.shared_up.labels(shared.kind).set(0 if local_only else 1)
        for name in self.canary_routes:
            b, c = snaps[name]
            if not local_only:
                try:
                    items = await shared.windows(name, now - FRESH)
                    b = Snapshot.merge(Snapshot.from_dict(i["baseline"]) for i in items)
                    c = Snapshot.merge(Snapshot.from_dict(i["candidate"]) for i in items)
                except SharedUnavailable:
                    local_only = True
            await self._judge(name, b, c, now, local_only)

    async def _judge(self, route: str, b: Snapshot, c: Snapshot, now: float, local: bool) -> None:
        cfg = self.cfg
        assert cfg is not None
        verdict = judge(b, c, cfg.criteria, cfg.window)
        previous = self.verdicts.get(route)
        self.verdicts[route] = verdict
        self.merged[route] = (b, c)
        self._export(route)
        acting = self.leader or local
        if not acting:
            self.holds.pop(route, None)  # the leader knows what holds the route
            return
        changed = previous.status != verdict.status if previous else verdict.status != STATUSES[2]
        if changed:
            log.info("route %s: verdict %s (%s)", route, verdict.status, verdict.reason)
            control = self.known(route)
            self._event(
                Event(
                    at=now,
                    route=route,
                    kind="verdict",
                    actor="controller",
                    reason=f"{verdict.status}: {verdict.reason}",
                    weights_before=dict(control.weights),
                    weights_after=dict(control.weights),
                    figures=verdict.figures(),
                )
            )
        parity = self.parity_reading(route) if self.known(route).phase == "stepping" else None
        cmd = Command("tick", "controller", now, verdict=verdict, candidate_window=c, parity=parity)
        if not local:
            try:
                out = await self.execute(route, cmd)
            except Conflict:
                return
            except SharedUnavailable:
                pass
            else:
                await self._note_hold(route, out, now)
                return
        self._decide_locally(route, cmd)

    def parity_reading(self, route: str) -> ParityReading | None:
        """The route's parity from the mirrored comparisons, when a gate needs it."""
        cfg = self.route_canary(route)
        if cfg is None or cfg.promotion_for(route).min_parity is None:
            return None
        source = self.gw.parity
        if source is None:  # nothing mirrored: no rate, the gate stays closed
            return ParityReading(None)
        return source.parity_reading(route)

    async def _note_hold(self, route: str, out: CommandOutcome, now: float) -> None:
        """A gate holding the promotion is an event once (and again when the reason's kind
        changes: too few comparisons, then a rate under the minimum); not every second."""
        if out.event != "hold":
            self.holds.pop(route, None)
            return
        state = str(out.figures.get("parity_state", out.figures.get("gate", "")))
        previous = self.holds.get(route)
        self.holds[route] = (state, out.reason)
        if previous is not None and previous[0] == state:
            return
        log.info("route %s: %s", route, out.reason)
        control = self.known(route)
        self._event(
            Event(
                at=now,
                route=route,
                kind="hold",
                actor="controller",
                reason=out.reason,
                weights_before=dict(control.weights),
                weights_after=dict(control.weights),
                figures=dict(out.figures),
            )
        )

    def _decide_locally(self, route: str, cmd: Command) -> None:
        """Shared state down: roll back (and ramp down) here at once; never promote."""
        control = self.known(route)
        out = apply(control, cmd, self.route_canary(route))
        if out.control is None or out.event not in ("rollback", "ramp"):
            return
        self.local[route] = out.control
        if out.event == "rollback":
            self.pending[route] = Command(
                "rollback",
                "controller",
                cmd.now,
                reason=f"automatic rollback (decided while the shared state was down): "
                f"{cmd.verdict.reason if cmd.verdict else ''}",
                verdict=cmd.verdict,
            )
            self.metrics.actions.labels(route, "rollback", "controller").inc()
            log.warning("route %s: local rollback, shared state down: %s", route, out.reason)
        r = self._route(route)
        if r is not None:
            self._apply(r)

    # -- views for the admin API ---------------------------------------------------------

    def route_view(self, route: Route) -> dict[str, Any]:
        weights, source = self.effective(route)
        control = self.local.get(route.name) or self.controls.get(route.name)
        cfg = self.route_canary(route.name)
        gw = self.gw
        available = gw.health.available(gw.clock.monotonic())
        names = [b for b, _ in route.split] + [
            b for b in route.fallback if b not in dict(route.split)
        ]
        table = gw.state.tables.get(route.name)
        view: dict[str, Any] = {
            "name": route.name,
            "weights": dict(weights),
            "source": source,
            "config_split": dict(route.split),
            "first": table.first if table is not None else None,
            "backends": {
                n: {"healthy": n in available, "served_by_this_worker": gw.served.get(n, 0)}
                for n in names
            },
            "canary": cfg is not None,
        }
        if control is not None:
            view.update(
                phase=control.phase,
                latched=control.latched,
                ramp=_ramp_view(control.to_dict()["ramp"]),
                since=format_rfc3339(control.since),
                version=control.version,
                changed_by=control.actor,
                reason=control.reason,
                local_only=route.name in self.local,
            )
        elif cfg is not None:
            view.update(phase=self.known(route.name).phase, latched=False, version=0)
        windows = self.windows.get(route.name)
        if windows is not None:
            now = gw.clock.now()
            view["live"] = {
                "window_s": windows.candidate.window,
                "this_worker": {
                    "baseline": windows.baseline.snapshot(now).requests,
                    "candidate": windows.candidate.snapshot(now).requests,
                },
            }
        return view

    def canary_view(self, route: str) -> dict[str, Any]:
        cfg = self.route_canary(route)
        assert cfg is not None
        verdict = self.verdicts.get(route)
        if verdict is None:  # no tick yet: judge this worker's window now
            now = self.gw.clock.now()
            w = self.windows[route]
            verdict = judge(
                w.baseline.snapshot(now), w.candidate.snapshot(now), cfg.criteria, cfg.window
            )
        control = self.known(route)
        weight = control.weight_of(cfg.candidate)
        merged = self.merged.get(route)
        in_step = merged[1].requests_since(control.since) if merged else 0
        return {
            "route": route,
            "baseline": {"backend": cfg.baseline, **verdict.baseline.to_dict()},
            "candidate": {"backend": cfg.candidate, **verdict.candidate.to_dict()},
            "window_s": cfg.window,
            "verdict": verdict.to_dict(),
            "phase": control.phase,
            "latched": control.latched,
            "weight": weight,
            "next_step": next_step(cfg.steps, weight) if cfg.steps else None,
            "step": {
                "since": format_rfc3339(control.since),
                "seconds": round(self.gw.clock.now() - control.since, 3),
                "min_seconds": cfg.step_interval,
                "candidate_requests": in_step,
                "min_requests": cfg.step_min_requests,
            },
            "promotion": self._promotion_view(route),
            "criteria": {
                "max_error_rate": cfg.criteria.max_error_rate,
                "max_p95_ratio": cfg.criteria.max_p95_ratio,
                "min_requests": cfg.criteria.min_requests,
                "confidence": cfg.criteria.confidence,
                "error_margin": cfg.criteria.error_margin,
                "p95_margin_ms": cfg.criteria.p95_margin * 1000,
                "recent": None
                if cfg.criteria.recent is None
                else {
                    "window_s": cfg.criteria.recent.window,
                    "confidence": cfg.criteria.recent.confidence,
                    "min_errors": cfg.criteria.recent.min_errors,
                    "min_requests": cfg.criteria.recent.min_requests,
                },
            },
            "rollback_to": cfg.rollback_to,
            "last_good_step": control.last_good or None,
            "leader": self.leader,
        }

    def _promotion_view(self, route: str) -> dict[str, Any]:
        """The promotion gates beyond time, requests and verdict: the parity gate, live."""
        cfg = self.route_canary(route)
        min_parity = cfg.promotion_for(route).min_parity if cfg is not None else None
        view: dict[str, Any] = {"min_parity": min_parity}
        reading = self.parity_reading(route)
        gate = parity_gate(min_parity, reading)
        if gate is not None:
            view.update(gate.figures)
            view.update(gate=gate.name, open=gate.open, reason=gate.reason)
        held = self.holds.get(route)
        view["held"] = held[1] if held is not None else None
        return view

    async def dashboard(self) -> dict[str, Any] | None:
        """Weights and phase per route, each canary's verdict with the figures it judged, and
        the latest events (what GET /admin/routes, /admin/canary and /admin/events answer)."""
        events: list[dict[str, Any]] | None
        log_ = self.event_log()
        try:
            events = await log_.list(None, DASHBOARD_EVENTS, None)
            store = "ok"
        except (StoreUnavailable, TimeoutError):
            events, store = None, "unavailable"
        cfg = self.cfg
        return {
            "baseline": cfg.baseline if cfg else None,
            "candidate": cfg.candidate if cfg else None,
            "routes": [self.route_view(r) for r in self.gw.config.routes],
            "canary": [self.canary_view(n) for n in self.canary_routes],
            "events": events,
            "events_store": store,
            "events_waiting": log_.waiting,
            "shared_state": self.shared.status() if self.shared is not None else None,
        }

    def add_admin_routes(self, router: web.UrlDispatcher) -> None:
        from cutover.canary.admin import add_routes

        add_routes(router, self)


def _ramp_view(ramp: dict[str, Any] | None) -> dict[str, Any] | None:
    """A ramp as the API shows it: its start time in RFC 3339 like every API time."""
    if ramp is None:
        return None
    return {**ramp, "started_at": format_rfc3339(ramp["started_at"])}
