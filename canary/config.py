"""Parse the `canary:` section into `routing.canary.CanaryConfig` (docs/canary.md)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace

from cutover.core.configkit import (
    Ctx,
    Invalid,
    boolean,
    duration,
    field,
    float_of,
    integer,
    is_off,
    join,
    known_backend,
    number,
    require,
    seconds_of,
    section,
    string,
)
from cutover.routing.canary import (
    CanaryConfig,
    Criteria,
    PromotionGate,
    RecentLane,
    RollbackPolicy,
)

__all__ = ["CanaryConfig", "parse_canary"]

_KEYS = (
    "baseline",
    "candidate",
    "max_error_rate",
    "max_p95_ratio",
    "window",
    "min_requests",
    "confidence",
    "error_margin",
    "p95_margin",
    "steps",
    "step_interval",
    "step_min_requests",
    "auto_promote",
    "auto_rollback",
    "rollback",
    "rollback_to",
    "recent",
    "redis_prefix",
    "promotion",
    "routes",
)


def _window(ctx: Ctx, value: object, path: str) -> int:
    seconds = duration()(ctx, value, path)
    if seconds != int(seconds) or not 5 <= seconds <= 3600:
        ctx.fail(path, "a whole number of seconds from 5s to 1h", value)
    return int(seconds)


def _confidence(ctx: Ctx, value: object, path: str) -> float:
    """One-sided confidence: significant when Fisher's p <= 1 - confidence."""
    x = float_of(value)
    if x is None or not 0.5 < x <= 1.0 - 1e-12:
        ctx.fail(path, "a number > 0.5 and < 1 (e.g. 0.999999: p <= 1e-6)", value)
    return x


def _recent(ctx: Ctx, value: object, path: str) -> RecentLane | None:
    """`recent: {window: 6s, confidence: 0.999998, min_errors: 3, min_requests: 100}`; `off`:
    the whole window only."""
    if is_off(value):
        return None
    m = section(ctx, value, path, ("window", "confidence", "min_errors", "min_requests"))
    d = RecentLane()
    window = field(ctx, m, "window", path, _recent_window, d.window)
    return RecentLane(
        window=window,
        confidence=field(ctx, m, "confidence", path, _confidence, d.confidence),
        min_errors=field(ctx, m, "min_errors", path, integer(1), d.min_errors),
        min_requests=field(ctx, m, "min_requests", path, integer(1), d.min_requests),
    )


def _recent_window(ctx: Ctx, value: object, path: str) -> int:
    seconds = seconds_of(value)
    if seconds is None or seconds != int(seconds) or not 1 <= seconds <= 600:
        ctx.fail(path, "whole seconds from 1s to 10m, shorter than canary.window", value)
    return int(seconds)


def _rollback_to(ctx: Ctx, value: object, path: str) -> str:
    text = string(ctx, value, path)
    if text not in ("zero", "last_good_step"):
        ctx.fail(path, "zero or last_good_step", value)
    return text


def _steps(ctx: Ctx, value: object, path: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of increasing candidate weights, e.g. [10, 50, 90, 99, 100]", value)
    out: list[int] = []
    bad = False
    for i, item in enumerate(value):
        try:
            out.append(integer(1, 100)(ctx, item, f"{path}[{i}]"))
        except Invalid:
            bad = True
    if bad:
        raise Invalid
    if any(b <= a for a, b in itertools.pairwise(out)):
        ctx.fail(path, "strictly increasing weights", value)
    return tuple(out)


def _rollback(ctx: Ctx, value: object, path: str) -> RollbackPolicy:
    m = section(ctx, value, path, ("mode", "over"))
    mode = field(ctx, m, "mode", path, string, "instant")
    if mode not in ("instant", "ramp"):
        ctx.add(join(path, "mode"), "instant or ramp", mode)
        mode = "instant"
    over = field(ctx, m, "over", path, duration(), 30.0)
    return RollbackPolicy(mode=mode, over=over)  # type: ignore[arg-type]


def _prefix(ctx: Ctx, value: object, path: str) -> str:
    text = string(ctx, value, path)
    if not text.startswith("cutover:") or any(c.isspace() for c in text):
        ctx.fail(path, "a Redis key prefix starting with 'cutover:' (no spaces)", value)
    return text if text.endswith(":") else text + ":"


def _min_parity(ctx: Ctx, value: object, path: str) -> float | None:
    if is_off(value):
        return None
    return number(0, 1)(ctx, value, path)


def _promotion(ctx: Ctx, value: object, path: str) -> PromotionGate:
    """`promotion: {min_parity: 0.99}`; `off` or null: no extra gate."""
    if is_off(value):
        return PromotionGate()
    m = section(ctx, value, path, ("min_parity",))
    return PromotionGate(min_parity=field(ctx, m, "min_parity", path, _min_parity, None))


def _route_settings(ctx: Ctx, value: object, path: str) -> dict[str, PromotionGate]:
    """`routes: {<route name>: {promotion: {...}}}`: settings of one canary route."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.fail(path, "a mapping of route name to {promotion: {min_parity: ...}}", value)
    out: dict[str, PromotionGate] = {}
    for name, item in value.items():
        rpath = join(path, name)
        if not isinstance(name, str) or name not in ctx.route_names:
            ctx.add(rpath, "the name of a route defined under routes")
            continue
        try:
            m = section(ctx, item, rpath, ("promotion",))
        except Invalid:
            continue
        out[name] = field(ctx, m, "promotion", rpath, _promotion, PromotionGate())
    return out  # problems are recorded; the valid entries are still checked (_check_gates)


def _check_gates(ctx: Ctx, cfg: CanaryConfig, path: str) -> None:
    """A parity gate needs the route's mirror (without one it could never open) and a route
    the block applies to."""
    routes = {r.name: r for r in ctx.routes}
    both = f"a route whose split names both {cfg.baseline} and {cfg.candidate}"
    for name in cfg.route_promotion:
        route = routes.get(name)
        if route is not None and not cfg.applies_to(route.split):
            ctx.add(join(join(path, "routes"), name), f"{both} (the canary does not apply here)")
    for route in ctx.routes:
        gate = cfg.promotion_for(route.name)
        if gate.min_parity is None or route.mirror is not None or not cfg.applies_to(route.split):
            continue
        own = route.name in cfg.route_promotion
        route_key = join(join(join(path, "routes"), route.name), "promotion")
        where = join(route_key if own else join(path, "promotion"), "min_parity")
        off = "remove it" if own else f"set {join(route_key, 'min_parity')}: off"
        ctx.add(
            where,
            f"routes with a mirror: route {route.name!r} has none, so its parity gate could "
            f"never open (add mirror: {{to: {cfg.candidate}}} to the route, or {off})",
        )


def parse_canary(ctx: Ctx, value: object, path: str) -> CanaryConfig:
    """`canary: {baseline, candidate, max_error_rate, ...}`; every key but the two names is
    optional."""
    m = section(ctx, value, path, _KEYS)
    ok = require(ctx, m, "baseline", path, "the backend that serves today (e.g. python)")
    ok = require(ctx, m, "candidate", path, "the backend being rolled out (e.g. go)") and ok
    baseline = field(ctx, m, "baseline", path, known_backend, "")
    candidate = field(ctx, m, "candidate", path, known_backend, "")
    if baseline and baseline == candidate:
        ctx.add(join(path, "candidate"), "a backend other than the baseline", candidate)
    defaults = Criteria()
    min_requests = field(ctx, m, "min_requests", path, integer(1), defaults.min_requests)
    criteria = Criteria(
        max_error_rate=field(ctx, m, "max_error_rate", path, number(0, 1), defaults.max_error_rate),
        max_p95_ratio=field(ctx, m, "max_p95_ratio", path, number(1, 1000), defaults.max_p95_ratio),
        min_requests=min_requests,
        confidence=field(ctx, m, "confidence", path, _confidence, defaults.confidence),
        error_margin=field(ctx, m, "error_margin", path, number(0, 1), defaults.error_margin),
        p95_margin=field(ctx, m, "p95_margin", path, duration(zero=True), defaults.p95_margin),
        recent=field(ctx, m, "recent", path, _recent, defaults.recent),
    )
    steps = field(ctx, m, "steps", path, _steps, ())
    window = field(ctx, m, "window", path, _window, 60)
    step_interval = field(ctx, m, "step_interval", path, duration(zero=True), 60.0)
    step_min_requests = field(ctx, m, "step_min_requests", path, integer(0), min_requests)
    auto_promote = field(ctx, m, "auto_promote", path, boolean, True)
    auto_rollback = field(ctx, m, "auto_rollback", path, boolean, True)
    rollback = field(ctx, m, "rollback", path, _rollback, RollbackPolicy())
    rollback_to = field(ctx, m, "rollback_to", path, _rollback_to, "zero")
    lane = criteria.recent
    if lane is not None and lane.window >= window:
        recent = m.get("recent")
        if isinstance(recent, Mapping) and "window" in recent:
            ctx.add(
                join(join(path, "recent"), "window"),
                f"a window shorter than canary.window ({window}s)",
                f"{lane.window}s",
            )
        else:  # a window this short is as fast as the recent lane: judge it alone
            criteria = replace(criteria, recent=None)
    redis_prefix = field(ctx, m, "redis_prefix", path, _prefix, "cutover:")
    promotion = field(ctx, m, "promotion", path, _promotion, PromotionGate())
    route_promotion = field(ctx, m, "routes", path, _route_settings, {})
    if not ok or ctx.failed(join(path, "baseline"), join(path, "candidate")):
        raise Invalid
    cfg = CanaryConfig(
        baseline=baseline,
        candidate=candidate,
        criteria=criteria,
        window=window,
        steps=steps,
        step_interval=step_interval,
        step_min_requests=step_min_requests,
        auto_promote=auto_promote,
        auto_rollback=auto_rollback,
        rollback=rollback,
        rollback_to=rollback_to,  # type: ignore[arg-type]
        redis_prefix=redis_prefix,
        promotion=promotion,
        route_promotion=route_promotion,
    )
    _check_gates(ctx, cfg, path)
    return cfg
