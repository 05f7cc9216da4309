"""Admin API routes of canary control (the admin listener; its middleware checks the token).

    GET  /admin/routes                      weights in force, their source, health, live counts
    PUT  /admin/routes/{route}/weights      {"go": 99, "python": 1}
    POST /admin/rollback | promote | pause | resume   {"route": ..., "reason": ...} (optional)
    GET  /admin/canary                      windows, percentiles, verdict and what it judged
    GET  /admin/events?route=&limit=&after= audit log, newest first

Every refusal is a small JSON error naming the field (`{"error": {"code", "message", "field"}}`).
Changes are recorded as made by `actor_of(request)`: `operator:<name of the admin token used>`
(see proxy.admin).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
from aiohttp import web

from cutover.canary.shared import Conflict, SharedUnavailable
from cutover.core import errors
from cutover.core.db import StoreUnavailable
from cutover.proxy.admin import actor_of
from cutover.routing.canary import Command, CommandOutcome, Split

if TYPE_CHECKING:
    from cutover.canary.feature import CanaryFeature
    from cutover.core.config_model import Route

log = logging.getLogger("cutover.canary")

_MAX_REASON = 500


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        content_type="application/json",
    )


_BY_STATUS: dict[int, type[errors.Refusal]] = {
    400: errors.BadRequest,
    404: errors.NotFound,
    409: errors.Conflict,
}


def _bad(field: str, message: str, status: int = 400, code: str = "invalid_request") -> NoReturn:
    """Refuse the request, naming the field (`{"error": {"code", "message", "field"}}`)."""
    raise _BY_STATUS[status](message, field=field, code=code)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def seconds_of(value: object) -> float | None:
    """`30s`, `2m`, `500ms`, `1h` or a number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    m = _DURATION.fullmatch(value.strip().lower())
    return None if m is None else float(m.group(1)) * _UNITS[m.group(2)]


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object body (empty body: {}); a 400 otherwise."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        _bad("body", "the body must be JSON", code="invalid_json")
    if not isinstance(data, dict):
        _bad("body", "the body must be a JSON object")
    return data


def _reason(request: web.Request, body: dict[str, Any]) -> str:
    reason = body.get("reason", request.query.get("reason", ""))
    if not isinstance(reason, str):
        _bad("reason", "reason must be a string")
    return " ".join(reason.split())[:_MAX_REASON]


def validate_weights(route: Route, data: Any) -> Split:
    """`{"go": 99, "python": 1}` → the split in the route's written order; a 400 otherwise."""
    if not isinstance(data, dict) or not data:
        _bad("weights", 'a JSON object of backend to integer weight, e.g. {"go": 99, "python": 1}')
    names = [b for b, _ in route.split] + [b for b in route.fallback if b not in dict(route.split)]
    for name, weight in data.items():
        if name not in names:
            _bad(
                f"weights.{name}",
                f"{name!r} is not a backend of route {route.name!r} (one of: {', '.join(names)})",
            )
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
            _bad(f"weights.{name}", f"the weight of {name!r} must be an integer from 0 to 100")
    total = sum(data.values())
    if total != 100:
        _bad("weights", f"weights must sum to exactly 100, got {total}")
    return tuple((n, data.get(n, 0)) for n in names if n in data or n in dict(route.split))


def _outcome_view(feature: CanaryFeature, route: str, out: CommandOutcome) -> dict[str, Any]:
    control = feature.known(route)
    view: dict[str, Any] = {
        "route": route,
        "ok": out.error is None,
        "weights": dict(control.weights),
        "phase": control.phase,
        "latched": control.latched,
    }
    if out.error is not None:
        view["error"] = out.error
    else:
        view["changed"] = out.control is not None
        view["reason"] = out.reason
    return view


async def _run(feature: CanaryFeature, route: str, cmd: Command) -> CommandOutcome:
    try:
        return await feature.execute(route, cmd)
    except SharedUnavailable as exc:
        raise errors.Unavailable(
            "the shared state is unavailable; the last known weights stay in force, retry later",
            code="shared_state_unavailable",
            retry_after=1,
        ) from exc
    except Conflict as exc:
        raise errors.Conflict("the route changed concurrently; retry") from exc


def add_routes(router: web.UrlDispatcher, feature: CanaryFeature) -> None:
    gw = feature.gw

    async def routes(request: web.Request) -> web.Response:
        shared = feature.shared.status() if feature.shared is not None else None
        return _json(
            {
                "routes": [feature.route_view(r) for r in gw.config.routes],
                "shared_state": shared,
            }
        )

    async def put_weights(request: web.Request) -> web.Response:
        name = request.match_info["route"]
        route = gw.state.routes_by_name.get(name)
        if route is None:
            _bad("route", f"no route named {name!r}", 404, "unknown_route")
        body = await _body(request)
        split = validate_weights(route, body)
        reason = request.headers.get("X-Cutover-Reason") or request.query.get("reason", "")
        cmd = Command(
            "set_weights",
            actor_of(request),
            gw.clock.now(),
            reason=" ".join(reason.split())[:_MAX_REASON],
            weights=split,
        )
        out = await _run(feature, name, cmd)
        if out.error is not None:
            raise errors.Conflict(out.error, code="refused", field="route")
        return _json(_outcome_view(feature, name, out))

    def command(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await _body(request)
            reason = _reason(request, body)
            unknown = sorted(set(body) - {"route", "reason", "mode", "over"})
            if unknown:
                _bad(unknown[0], "unknown key (known: route, reason, mode, over)")
            route = body.get("route")
            if route is not None and (
                not isinstance(route, str) or route not in gw.state.routes_by_name
            ):
                _bad("route", f"no route named {route!r}", 404, "unknown_route")
            if route is not None and feature.route_canary(route) is None:
                _bad(
                    "route",
                    f"route {route!r} has no canary (no canary block applies)",
                    409,
                    "no_canary",
                )
            targets = [route] if route is not None else list(feature.canary_routes)
            if not targets:
                _bad("route", "no route has a canary", 409, "no_canary")
            mode = body.get("mode")
            over = body.get("over")
            if kind == "rollback":
                if mode is not None and mode not in ("instant", "ramp"):
                    _bad("mode", "mode must be 'instant' or 'ramp'")
                if over is not None:
                    seconds = seconds_of(over)
                    if seconds is None or seconds <= 0 or seconds > 86400:
                        _bad("over", "over must be a duration such as 30s (at most 1d)")
                    over = seconds
                    mode = mode or "ramp"
            elif mode is not None or over is not None:
                _bad(
                    "mode" if mode is not None else "over",
                    f"only rollback takes {'mode' if mode is not None else 'over'}",
                )
            results = []
            for name in targets:
                cmd = Command(
                    kind, actor_of(request), gw.clock.now(), reason=reason, mode=mode, over=over
                )  # type: ignore[arg-type]
                out = await _run(feature, name, cmd)
                results.append(_outcome_view(feature, name, out))
            if route is not None and not results[0]["ok"]:
                raise errors.Conflict(results[0]["error"], code="refused", field="route")
            status = 200 if any(r["ok"] for r in results) else 409
            return _json({"results": results}, status)

        return handler

    async def canary(request: web.Request) -> web.Response:
        route = request.query.get("route")
        if route is not None and feature.route_canary(route) is None:
            _bad("route", f"no canary route named {route!r}", 404, "unknown_route")
        names = [route] if route else list(feature.canary_routes)
        cfg = feature.cfg
        return _json(
            {
                "baseline": cfg.baseline if cfg else None,
                "candidate": cfg.candidate if cfg else None,
                "routes": [feature.canary_view(n) for n in names],
            }
        )

    async def events(request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "100"))
            if not 1 <= limit <= 1000:
                raise ValueError
        except ValueError:
            _bad("limit", "limit must be an integer from 1 to 1000")
        after: int | None = None
        if "after" in q:
            try:
                after = int(q["after"])
            except ValueError:
                _bad("after", "after must be an event id (integer)")
        events = feature.event_log()
        try:
            rows = await events.list(q.get("route"), limit, after)
        except (StoreUnavailable, TimeoutError) as exc:
            raise errors.Unavailable(
                "the event store is unavailable", retry_after=1, waiting=events.waiting
            ) from exc
        return _json({"events": rows, "waiting": events.waiting})

    router.add_get("/admin/routes", routes)
    router.add_put("/admin/routes/{route}/weights", put_weights)
    for kind in ("rollback", "promote", "pause", "resume"):
        router.add_post(f"/admin/{kind}", command(kind))
    router.add_get("/admin/canary", canary)
    router.add_get("/admin/events", events)
