"""Two small sample backends shaped like the two Alert History implementations.

They are not the real services: they keep alerts in memory and skip classification and publishing.
They do reproduce the *differences* a gateway in front of both has to bridge (spec digest §2.8), so
compat rules, routing and the demo can be exercised end to end.

``legacy_app()``, the Python/FastAPI shape:

- ``GET /healthz`` → ``{status:"healthy", timestamp:<unix float>}``; ``/readyz``; ``/health``.
- ``POST /webhook/`` takes an Alertmanager v4 envelope ``{alerts:[...]}``; ``/webhook`` answers 307.
- ``GET /history?alertname&status&fingerprint&limit`` → ``{alerts, total}``; ``GET /legacy/report``.
- errors are JSON ``{"detail": ...}``, validation errors 422 (``/enrichment/mode`` included).

``go_app()``, the Go net/http shape:

- every response carries ``X-Enrichment-Mode`` and ``X-Enrichment-Source``.
- ``GET /healthz`` → ``{status:"ok", service, version, timestamp:RFC3339}``; no ``/health``
  and no ``/readyz``.
- ``POST /webhook`` takes ONE flat alert ``{alertname, ...}`` (an envelope gets 400); ``/webhook/``
  is 404.
- ``GET /history?page&page_size&status&alertname`` → ``{alerts, total, page, page_size, timestamp}``
  and ``GET /api/v2/alerts?filter&status&page&limit`` (Alertmanager-like, ``filter`` matchers such
  as ``alertname="X"``), both from the alerts received.
- ``/enrichment/mode`` errors are 400 ``{"error": ...}``; other errors text/plain (``http.Error``).
- ``GET /api/v2/events/stream`` (Server-Sent Events) and ``GET /ws/dashboard`` (WebSocket echo).

Both serve ``GET /api/dashboard/overview`` with the keys both implementations share (spec digest
§1.8, §2.2), counted from their history.

Both honour ``X-Backend-Delay-Ms`` (wait that long before answering, for timeout tests); the
standalone runner's ``--delay-ms N`` holds every answer N ms (a slower twin, for ``cutover bench
compare``). Both answer ``GET /__backend`` with ``{"backend": "legacy"|"go", "fail": ...}``.

**The failure switch**, for rollback drills: ``PUT /__backend/fail`` with ``{"status": 500,
"percent": 100}`` makes that share of the following requests fail with that status (every n-th,
evenly spread, in the backend's own error shape); ``DELETE /__backend/fail`` ends it. Health checks
(``/healthz``, ``/readyz``) and ``/__backend`` keep answering: a backend that passes its health
checks while failing requests is the case a canary analysis exists for.

Run one standalone, or both as a pair that shares its history (as the real services share one
database: an alert either one accepts is in both histories)::

    python -m cutover.examples.backends legacy --port 8001
    python -m cutover.examples.backends go --port 8002
    python -m cutover.examples.backends pair --legacy-port 8001 --go-port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

__all__ = ["close_streams", "go_app", "legacy_app", "main", "share_history"]

DELAY_HEADER = "X-Backend-Delay-Ms"
MAX_DELAY_MS = 120_000  # a typo in a test must not park a handler for hours
MAX_BODY = 16 * 1024 * 1024  # above Go's 10 MiB webhook cap, so that cap is what answers
GO_WEBHOOK_MAX_BODY = 10 * 1024 * 1024

ENRICHMENT_MODES = ("transparent", "enriched", "transparent_with_recommendations")
DEFAULT_ENRICHMENT_MODE = "enriched"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------------------------------
# shared helpers


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _reason(status: int) -> str:
    """The standard reason phrase, as both frameworks put it in their error bodies."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _go_text_error(
    message: str, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    """What Go's ``http.Error`` writes: text/plain, nosniff, the message plus a newline."""
    hdrs = {"X-Content-Type-Options": "nosniff", **(headers or {})}
    return web.Response(
        text=message + "\n", status=status, headers=hdrs, content_type="text/plain", charset="utf-8"
    )


def _parse_time(value: Any) -> datetime | None:
    """RFC 3339 / ISO 8601 to an aware datetime; None when absent or unparseable.

    Go timestamps may carry nanoseconds; ``datetime`` keeps microseconds, so extra digits are cut.
    """
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}" if digits else head + rest
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _rfc3339(dt: datetime, *, nano: bool = False) -> str:
    """Go's ``time.RFC3339`` (``nano=False``) or ``RFC3339Nano`` (trailing zeros dropped), in UTC.

    Hand-formatted because ``strftime`` does not zero-pad year 1, Alertmanager's "no end" value.
    """
    dt = dt.astimezone(UTC)
    out = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    if nano and dt.microsecond:
        out += f".{dt.microsecond:06d}".rstrip("0")
    return out + "Z"


def _go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it (``850ns``, ``12.5µs``, ``1.2ms``)."""
    ns = round(seconds * 1e9)
    if ns < 1_000:
        return f"{ns}ns"
    for unit, size in (("µs", 1_000), ("ms", 1_000_000)):
        if ns < size * 1_000:
            return f"{ns / size:.6f}".rstrip("0").rstrip(".") + unit
    return f"{ns / 1e9:.9f}".rstrip("0").rstrip(".") + "s"


@web.middleware
async def _delay_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``X-Backend-Delay-Ms: N`` holds the answer N milliseconds (invalid values are ignored),
    on top of the app's fixed ``BASE_DELAY_MS`` (0 unless ``--delay-ms`` was given)."""
    delay_ms = request.app.get(BASE_DELAY_MS, 0.0)
    raw = request.headers.get(DELAY_HEADER)
    if raw:
        with contextlib.suppress(ValueError):
            delay_ms += max(float(raw), 0.0)
    if delay_ms > 0:
        await hold(min(delay_ms, MAX_DELAY_MS) / 1000)
    return await handler(request)


async def hold(seconds: float) -> None:
    """Wait at least `seconds`: uvloop's timers run on a millisecond clock and may fire up to a
    millisecond early, and a slower twin that answers in 59.9 ms when asked for 60 is not one."""
    until = time.perf_counter() + seconds
    await asyncio.sleep(seconds)
    while (left := until - time.perf_counter()) > 0:
        await asyncio.sleep(max(left, 0.001))


@dataclass(slots=True)
class _Failure:
    """The failure switch: `percent` of the requests after it was set answer `status`."""

    status: int = 0  # 0: off
    percent: int = 0
    seen: int = 0  # requests counted since the switch was set

    def set(self, status: int, percent: int) -> None:
        self.status, self.percent, self.seen = status, percent, 0

    def hit(self) -> bool:
        """Every request that brings the failed share up to `percent`, evenly spread."""
        if not self.status:
            return False
        self.seen += 1
        return self.seen * self.percent // 100 > (self.seen - 1) * self.percent // 100

    def to_json(self) -> dict[str, int] | None:
        return {"status": self.status, "percent": self.percent} if self.status else None


SPARED = ("/healthz", "/readyz", "/__backend")  # health checks and the switch itself


@web.middleware
async def _failure_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    failure = request.app[FAILURE]
    if request.path.startswith(SPARED) or not failure.hit():
        return await handler(request)
    await request.read()  # a real service reads the body before it fails
    return request.app[ERROR_RESPONSE](failure.status)


async def _set_failure(request: web.Request) -> web.Response:
    """``PUT /__backend/fail {"status": 500, "percent": 100}``; 400 naming the bad field."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _json({"error": "expected a JSON object {status, percent}"}, status=400)
    status, percent = body.get("status", 500), body.get("percent", 100)
    if type(status) is not int or not 400 <= status <= 599:
        return _json({"error": "status: expected an integer from 400 to 599"}, status=400)
    if type(percent) is not int or not 1 <= percent <= 100:
        return _json({"error": "percent: expected an integer from 1 to 100"}, status=400)
    request.app[FAILURE].set(status, percent)
    return await _whoami(request)


async def _clear_failure(request: web.Request) -> web.Response:
    request.app[FAILURE].set(0, 0)
    return await _whoami(request)


@dataclass(slots=True)
class _EnrichmentState:
    mode: str = DEFAULT_ENRICHMENT_MODE
    source: str = "default"


@dataclass(slots=True)
class _Streams:
    """Long-lived responses, closed on shutdown so a runner cleanup never waits for them."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    websockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)


async def close_streams(app: web.Application) -> None:
    """End the SSE streams and WebSockets of a sample backend (also run on its shutdown).

    Call it before closing a gateway in front of the backend, so the gateway's drain does not
    wait for streams that would otherwise never end.
    """
    streams = app[STREAMS]
    streams.stopping.set()
    for ws in list(streams.websockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


async def _whoami(request: web.Request) -> web.Response:
    return _json({"backend": request.app[BACKEND_NAME], "fail": request.app[FAILURE].to_json()})


def _overview(latest: Iterable[tuple[str, datetime]]) -> dict[str, Any]:
    """``GET /api/dashboard/overview`` from (status, startsAt) of each alert's latest state.

    The keys both implementations share (spec digest §1.8); the samples classify and publish
    nothing, so those figures are zero."""
    now = datetime.now(UTC)
    states = list(latest)
    return {
        "total_alerts": len(states),
        "active_alerts": sum(1 for status, _ in states if status == "firing"),
        "resolved_alerts": sum(1 for status, _ in states if status == "resolved"),
        "alerts_last_24h": sum(1 for _, starts in states if now - starts < timedelta(days=1)),
        "classification_enabled": False,
        "classified_alerts": 0,
        "classification_cache_hit_rate": 0.0,
        "publishing_targets": 0,
        "publishing_mode": "metrics-only",
        "successful_publishes": 0,
        "failed_publishes": 0,
        "system_healthy": True,
        "redis_connected": False,
        "llm_service_available": False,
        "last_updated": now.isoformat(),
    }


BACKEND_NAME = web.AppKey("backend_name", str)
STARTED = web.AppKey("started", float)
ENRICHMENT = web.AppKey("enrichment", _EnrichmentState)
STREAMS = web.AppKey("streams", _Streams)
BASE_DELAY_MS = web.AppKey("base_delay_ms", float)
FAILURE = web.AppKey("failure", _Failure)
ERROR_RESPONSE = web.AppKey("error_response", Callable[[int], web.Response])
PEER = web.AppKey("peer", web.Application)  # the other backend of a pair: one shared history


def _base_app(
    name: str, middlewares: Iterable[Any], error: Callable[[int], web.Response]
) -> web.Application:
    app = web.Application(
        middlewares=[_delay_middleware, *middlewares, _failure_middleware],
        client_max_size=MAX_BODY,
    )
    app[BACKEND_NAME] = name
    app[STARTED] = time.monotonic()
    app[ENRICHMENT] = _EnrichmentState()
    app[STREAMS] = _Streams()
    app[FAILURE] = _Failure()
    app[ERROR_RESPONSE] = error
    app.on_shutdown.append(close_streams)
    app.router.add_get("/__backend", _whoami)
    app.router.add_put("/__backend/fail", _set_failure)
    app.router.add_delete("/__backend/fail", _clear_failure)
    return app


# --------------------------------------------------------------------------------------------------
# legacy (Python / FastAPI shape)


@dataclass(slots=True)
class _LegacyAlert:
    fingerprint: str
    alertname: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at.isoformat(),  # Python style: "+00:00", not "Z"
            "endsAt": self.ends_at.isoformat() if self.ends_at else None,
            "generatorURL": self.generator_url,
        }


LEGACY_STORE = web.AppKey("legacy_store", list[_LegacyAlert])
# fingerprint -> (status, startsAt) of the alert last received, for the dashboard overview
LEGACY_LATEST = web.AppKey("legacy_latest", dict[str, tuple[str, datetime]])


def _pydantic_error(type_: str, loc: list[Any], msg: str, input_: Any = None) -> dict[str, Any]:
    return {"type": type_, "loc": loc, "msg": msg, "input": input_}


def _unprocessable(*errors: dict[str, Any]) -> web.Response:
    return _json({"detail": list(errors)}, status=422)


async def _read_json_body(request: web.Request) -> tuple[Any, web.Response | None]:
    """FastAPI's body decoding: (value, None), or (None, the 422 it would answer)."""
    raw = await request.read()
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, _unprocessable(
            {
                **_pydantic_error("json_invalid", ["body", exc.pos], "JSON decode error", {}),
                "ctx": {"error": exc.msg},
            }
        )


@web.middleware
async def _legacy_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Starlette's error bodies: ``{"detail": <reason phrase>}``."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return _json({"detail": exc.reason}, status=exc.status, headers=headers)


async def _legacy_healthz(request: web.Request) -> web.Response:
    return _json({"status": "healthy", "timestamp": time.time()})


async def _legacy_readyz(request: web.Request) -> web.Response:
    return _json(
        {
            "status": "ready",
            "uptime": time.monotonic() - request.app[STARTED],
            "dependencies": {
                "database": True,
                "redis": True,
                "llm": False,
                "target_discovery": False,
            },
            "timestamp": time.time(),
        }
    )


async def _legacy_webhook_redirect(request: web.Request) -> web.Response:
    """Starlette ``redirect_slashes``: 307 to the slash variant, absolute URL built from Host."""
    location = request.url.with_path("/webhook/").with_query(request.query_string or None)
    return web.Response(status=307, headers={"Location": str(location)})


def _legacy_time(value: Any) -> datetime | None:
    """``fromisoformat(value.replace("Z", "+00:00"))``; a bad value raises and fails its alert."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _legacy_convert(index: int, item: dict[str, Any]) -> _LegacyAlert:
    """One alert of the envelope; raises ValueError the way the legacy converter fails per alert."""
    labels = item.get("labels") or {}
    if not isinstance(labels, dict):
        raise ValueError("labels must be an object")
    status = item.get("status", "firing")
    if status not in ("firing", "resolved"):
        raise ValueError(f"invalid status: {status!r}")
    starts_at = _legacy_time(item.get("startsAt")) or datetime.now(UTC)
    ends_at = _legacy_time(item.get("endsAt"))
    return _LegacyAlert(
        # not computed on this path: a missing fingerprint becomes "unknown-<n>" (spec §1.3)
        fingerprint=str(item.get("fingerprint") or f"unknown-{index}"),
        alertname=str(labels.get("alertname", "unknown")),
        status=status,
        labels={str(k): str(v) for k, v in labels.items()},
        annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=item.get("generatorURL"),
    )


async def _legacy_webhook(request: web.Request) -> web.Response:
    started = time.perf_counter()
    body, error = await _read_json_body(request)
    if error is not None:
        return error
    if not isinstance(body, dict):
        return _unprocessable(
            _pydantic_error(
                "model_attributes_type",
                ["body"],
                "Input should be a valid dictionary or object to extract fields from",
                body,
            )
        )
    alerts = body.get("alerts")
    if "alerts" not in body:
        missing = _pydantic_error("missing", ["body", "alerts"], "Field required", body)
        return _unprocessable(missing)
    if not isinstance(alerts, list):
        return _unprocessable(
            _pydantic_error("list_type", ["body", "alerts"], "Input should be a valid list", alerts)
        )
    bad = [
        _pydantic_error("dict_type", ["body", "alerts", i], "Input should be a valid dictionary", a)
        for i, a in enumerate(alerts)
        if not isinstance(a, dict)
    ]
    if bad:
        return _unprocessable(*bad)

    for index, item in enumerate(alerts):
        try:
            alert = _legacy_convert(index, item)
        except (ValueError, TypeError, AttributeError):
            continue  # the real service logs and carries on; processed_alerts still counts it
        _keep_legacy(request.app, alert)
        if PEER in request.app:
            _keep_go(request.app[PEER], _as_go(alert))
    return _json(
        {
            "message": "Webhook processed successfully (legacy mode)",
            "processed_alerts": len(alerts),
            "mode": "legacy",
            "processing_time_ms": int((time.perf_counter() - started) * 1000),
        }
    )


async def _legacy_webhook_health(request: web.Request) -> web.Response:
    return _json(
        {
            "status": "healthy",
            "endpoints": ["/webhook/", "/webhook/proxy", "/webhook/health"],
            "timestamp": time.time(),
        }
    )


def _query_int(request: web.Request, name: str, default: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return _unprocessable(
            _pydantic_error(
                "int_parsing",
                ["query", name],
                "Input should be a valid integer, unable to parse string as an integer",
                raw,
            )
        )


async def _legacy_history(request: web.Request) -> web.Response:
    limit = _query_int(request, "limit", 100)
    if isinstance(limit, web.Response):
        return limit
    q = request.query
    selected = []
    # newest first; among equal startsAt the most recently received first
    newest = sorted(reversed(request.app[LEGACY_STORE]), key=lambda a: a.starts_at, reverse=True)
    for alert in newest:
        starts = alert.starts_at.isoformat()
        if (
            ("alertname" in q and alert.alertname != q["alertname"])
            or ("status" in q and alert.status != q["status"])
            or ("fingerprint" in q and alert.fingerprint != q["fingerprint"])
            or ("start_time" in q and starts < q["start_time"])  # compared as text, as the adapter
            or ("end_time" in q and starts > q["end_time"])
        ):
            continue
        selected.append(alert.to_json())
    selected = selected[: max(limit, 0)]
    return _json({"alerts": selected, "total": len(selected)})  # total = returned count, no paging


async def _legacy_report(request: web.Request) -> web.Response:
    days = _query_int(request, "days", 7)
    if isinstance(days, web.Response):
        return days
    group_by = request.query.get("group_by", "alertname")
    since = datetime.now(UTC) - timedelta(days=days)
    data: dict[str, dict[str, int]] = {}
    total = 0
    for alert in request.app[LEGACY_STORE]:
        if alert.starts_at < since:
            continue
        if group_by == "alertname":
            key = alert.alertname
        elif group_by == "status":
            key = alert.status
        elif group_by == "namespace":
            key = alert.labels.get("namespace", "unknown")
        else:
            key = "all"
        bucket = data.setdefault(key, {"count": 0, "firing": 0, "resolved": 0})
        bucket["count"] += 1
        bucket[alert.status] += 1
        total += 1
    return _json({"period_days": days, "group_by": group_by, "data": data, "total_alerts": total})


async def _legacy_get_mode(request: web.Request) -> web.Response:
    state = request.app[ENRICHMENT]
    return _json({"mode": state.mode, "source": state.source})


async def _legacy_set_mode(request: web.Request) -> web.Response:
    body, error = await _read_json_body(request)
    if error is not None:
        return error
    if not isinstance(body, dict) or "mode" not in body:
        return _unprocessable(_pydantic_error("missing", ["body", "mode"], "Field required", body))
    mode = body["mode"]
    if mode not in ENRICHMENT_MODES:
        expected = "'transparent', 'enriched' or 'transparent_with_recommendations'"
        return _unprocessable(
            {
                **_pydantic_error("enum", ["body", "mode"], f"Input should be {expected}", mode),
                "ctx": {"expected": expected},
            }
        )
    state = request.app[ENRICHMENT]
    state.mode, state.source = mode, "memory"  # no Redis here
    return _json({"mode": state.mode, "source": state.source})


def legacy_app() -> web.Application:
    """The legacy Python service's shape (FastAPI app plus its not-mounted legacy adapter)."""
    app = _base_app(
        "legacy", [_legacy_errors], lambda status: _json({"detail": _reason(status)}, status)
    )
    app[LEGACY_STORE] = []
    app[LEGACY_LATEST] = {}
    r = app.router
    r.add_get("/healthz", _legacy_healthz)
    r.add_get("/readyz", _legacy_readyz)
    r.add_get("/health", _legacy_healthz)  # the adapter's alias, same body
    r.add_post("/webhook/", _legacy_webhook)
    r.add_route("*", "/webhook", _legacy_webhook_redirect)
    r.add_get("/webhook/health", _legacy_webhook_health)
    r.add_get("/history", _legacy_history)
    r.add_get("/legacy/report", _legacy_report)
    r.add_get("/enrichment/mode", _legacy_get_mode)
    r.add_post("/enrichment/mode", _legacy_set_mode)
    r.add_get("/api/dashboard/overview", _legacy_overview)
    return app


# --------------------------------------------------------------------------------------------------
# go (Go net/http shape)


@dataclass(slots=True)
class _GoAlert:
    fingerprint: str
    alertname: str
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str
    created_at: datetime


GO_STORE = web.AppKey("go_store", dict[str, _GoAlert])  # by fingerprint, insertion = arrival order
SSE_INTERVAL = web.AppKey("sse_interval", float)
ENRICHMENT_SEEN = web.RequestKey("enrichment_seen", tuple[str, str])  # (mode, source) at arrival

# field -> accepted JSON types; anything else fails Go's json.Decode ("Invalid JSON payload")
_GO_ALERT_FIELDS: dict[str, tuple[type, ...]] = {
    "alertname": (str,),
    "status": (str,),
    "labels": (dict,),
    "annotations": (dict,),
    "startsAt": (str,),
    "endsAt": (str,),
    "generatorURL": (str,),
    "fingerprint": (str,),
}


def _go_decode_alert(raw: bytes) -> dict[str, Any] | None:
    """Decode like ``json.NewDecoder(r.Body).Decode(&req)``: None on any decode or type error."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    for name, types in _GO_ALERT_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, types):
            return None
        if isinstance(value, dict) and not all(isinstance(v, str) for v in value.values()):
            return None
    return body


@web.middleware
async def _go_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ServeMux's own answers: 404 "404 page not found", 405 "Method Not Allowed" with Allow."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            return _go_text_error("404 page not found", 404)
        if exc.status == 405:
            allow = exc.headers.get("Allow", "")
            return _go_text_error("Method Not Allowed", 405, {"Allow": allow} if allow else None)
        if exc.status >= 400:
            return _go_text_error(exc.reason, exc.status)
        raise


@web.middleware
async def _go_enrichment_capture(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Go's middleware reads the mode *before* the handler: a POST answers with the old one."""
    state = request.app[ENRICHMENT]
    request[ENRICHMENT_SEEN] = (state.mode, state.source)
    return await handler(request)


async def _go_enrichment_headers(request: web.Request, response: web.StreamResponse) -> None:
    state = request.app[ENRICHMENT]
    mode, source = request.get(ENRICHMENT_SEEN, (state.mode, state.source))
    response.headers["X-Enrichment-Mode"] = mode
    response.headers["X-Enrichment-Source"] = source


async def _go_healthz(request: web.Request) -> web.Response:
    return _json(
        {
            "status": "ok",
            "service": "alert-history",
            "version": "1.0.0",
            "timestamp": _rfc3339(datetime.now(UTC)),
        }
    )


async def _go_webhook(request: web.Request) -> web.Response:
    started = time.perf_counter()
    if request.method != "POST":
        return _go_text_error("Method not allowed", 405)
    if (request.content_length or 0) > GO_WEBHOOK_MAX_BODY:
        return _go_text_error("Request body too large", 413)
    body = _go_decode_alert(await request.read())
    if body is None:
        return _go_text_error("Invalid JSON payload", 400)
    alertname = body.get("alertname") or ""
    if not alertname:
        return _go_text_error("Missing required field: alertname", 400)
    now = datetime.now(UTC)
    starts_at = _parse_time(body.get("startsAt")) or now  # a bad startsAt silently becomes now
    fingerprint = body.get("fingerprint") or f"{alertname}_{int(starts_at.timestamp())}"
    alert = _GoAlert(
        fingerprint=fingerprint,
        alertname=alertname,
        status=body.get("status") or "firing",
        labels=dict(body.get("labels") or {}),
        annotations=dict(body.get("annotations") or {}),
        starts_at=starts_at,
        ends_at=_parse_time(body.get("endsAt")),
        generator_url=body.get("generatorURL") or "",
        created_at=now,
    )
    _keep_go(request.app, alert)
    if PEER in request.app:
        _keep_legacy(request.app[PEER], _as_legacy(alert))
    return _json(
        {
            "status": "success",
            "message": "Webhook processed successfully",
            "alert_id": fingerprint,
            "timestamp": _rfc3339(now),
            "processing_time": _go_duration(time.perf_counter() - started),
        }
    )


def _go_atoi(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=|!=)\s*"((?:[^"\\]|\\.)*)"\s*')


def _go_matchers(request: web.Request) -> list[tuple[str, str, str]] | None:
    """`filter` matchers of ``GET /api/v2/alerts`` (``alertname="X"``, ``{a="x",b!="y"}``);
    None when one cannot be parsed."""
    out = []
    for raw in request.query.getall("filter", ()):
        body = raw.strip().removeprefix("{").removesuffix("}")
        for part in filter(None, (p.strip() for p in body.split(","))):
            m = _MATCHER.fullmatch(part)
            if m is None:
                return None
            out.append((m.group(1), m.group(2), m.group(3)))
    return out


def _go_filtered(
    request: web.Request, matchers: Iterable[tuple[str, str, str]] = ()
) -> list[_GoAlert]:
    status = request.query.get("status", "")
    alertname = request.query.get("alertname", "")
    wanted = tuple(matchers)

    def labels_ok(a: _GoAlert) -> bool:
        labels = {"alertname": a.alertname, **a.labels}
        return all((labels.get(k, "") == v) == (op == "=") for k, op, v in wanted)

    return [
        a
        for a in reversed(request.app[GO_STORE].values())  # newest first
        if (not status or a.status == status)
        and (not alertname or a.alertname == alertname)
        and labels_ok(a)
    ]


async def _go_history(request: web.Request) -> web.Response:
    if request.method not in ("GET", "HEAD"):
        return _go_text_error("Method not allowed", 405)
    page = max(_go_atoi(request.query.get("page"), 1), 1)
    page_size = _go_atoi(request.query.get("page_size"), 50)
    page_size = 50 if page_size < 1 else min(page_size, 1000)
    alerts = _go_filtered(request)
    window = alerts[(page - 1) * page_size : page * page_size]
    return _json(
        {
            "alerts": [
                {
                    "id": a.fingerprint,
                    "alertname": a.alertname,
                    "status": a.status,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": _rfc3339(a.starts_at, nano=True),
                    "endsAt": _rfc3339(a.ends_at, nano=True) if a.ends_at else None,
                    "createdAt": _rfc3339(a.created_at, nano=True),
                }
                for a in window
            ],
            "total": len(alerts),
            "page": page,
            "page_size": page_size,
            "timestamp": _rfc3339(datetime.now(UTC)),
        }
    )


async def _go_api_v2_alerts(request: web.Request) -> web.Response:
    status = request.query.get("status", "")
    if status not in ("", "firing", "resolved"):
        return _json({"status": "error", "error": f"invalid status: {status}"}, status=400)
    try:
        page = int(request.query.get("page", "1"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return _json({"status": "error", "error": "invalid pagination parameters"}, status=400)
    if page < 1 or not 1 <= limit <= 1000:
        return _json({"status": "error", "error": "invalid pagination parameters"}, status=400)
    matchers = _go_matchers(request)
    if matchers is None:
        return _json({"status": "error", "error": "invalid filter"}, status=400)
    alerts = _go_filtered(request, matchers)
    window = alerts[(page - 1) * limit : page * limit]
    return _json(
        {
            "status": "success",
            "data": {
                "alerts": [
                    {
                        "labels": {"alertname": a.alertname, **a.labels},
                        "annotations": a.annotations,
                        "startsAt": _rfc3339(a.starts_at, nano=True),
                        "endsAt": _rfc3339(a.ends_at, nano=True) if a.ends_at else None,
                        "generatorURL": a.generator_url,
                        "status": {
                            "state": "active" if a.status == "firing" else a.status,
                            "silencedBy": [],
                            "inhibitedBy": [],
                        },
                        "receivers": [],
                        "fingerprint": a.fingerprint,
                    }
                    for a in window
                ],
                "total": len(alerts),
                "page": page,
                "limit": limit,
            },
        }
    )


async def _go_enrichment_mode(request: web.Request) -> web.Response:
    state = request.app[ENRICHMENT]
    if request.method in ("GET", "HEAD"):
        return _json({"mode": state.mode, "source": state.source})
    if request.method != "POST":
        return _go_text_error("Method not allowed", 405)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json({"error": "Invalid JSON"}, status=400)
    if not isinstance(body, dict) or not isinstance(body.get("mode", ""), str | None):
        return _json({"error": "Invalid JSON"}, status=400)  # what json.Decode into the struct says
    mode = body.get("mode") or ""
    if mode not in ENRICHMENT_MODES:
        return _json({"error": f"invalid enrichment mode: {mode}"}, status=400)
    state.mode, state.source = mode, "memory"  # no Redis here
    return _json({"mode": state.mode, "source": state.source})


async def _go_events_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one event at once, then one per interval, until the client leaves."""
    streams = request.app[STREAMS]
    interval = request.app[SSE_INTERVAL]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    counter = 0
    try:
        while not streams.stopping.is_set():
            event = {
                "type": "connected" if counter == 0 else "tick",
                "counter": counter,
                "timestamp": _rfc3339(datetime.now(UTC), nano=True),
            }
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
            counter += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(streams.stopping.wait(), interval)
            transport = request.transport
            if transport is None or transport.is_closing():
                break
    except ConnectionResetError:  # the client went away mid-write
        return response
    return response


async def _go_ws_dashboard(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        return _go_text_error("Bad Request", 400)
    await ws.prepare(request)
    streams = request.app[STREAMS]
    streams.websockets.add(ws)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str("echo: " + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    finally:
        streams.websockets.discard(ws)
    return ws


# --------------------------------------------------------------------------------------------------
# history: each side's own store rules; a pair shares what either one accepts


def _keep_legacy(app: web.Application, alert: _LegacyAlert) -> None:
    latest = app[LEGACY_LATEST]
    latest.pop(alert.fingerprint, None)  # the last one received, re-deliveries included
    latest[alert.fingerprint] = (alert.status, alert.starts_at)
    store = app[LEGACY_STORE]
    key = (alert.fingerprint, alert.status, alert.starts_at)
    if not any((a.fingerprint, a.status, a.starts_at) == key for a in store):
        store.append(alert)  # Alertmanager re-delivers: keep the store idempotent


def _keep_go(app: web.Application, alert: _GoAlert) -> None:
    store = app[GO_STORE]
    previous = store.pop(alert.fingerprint, None)  # dedup by fingerprint; re-inserted as newest
    if previous is not None:
        alert.created_at = previous.created_at
    store[alert.fingerprint] = alert


def _as_go(a: _LegacyAlert) -> _GoAlert:
    return _GoAlert(
        fingerprint=a.fingerprint,
        alertname=a.alertname,
        status=a.status,
        labels=dict(a.labels),
        annotations=dict(a.annotations),
        starts_at=a.starts_at,
        ends_at=a.ends_at,
        generator_url=a.generator_url or "",
        created_at=datetime.now(UTC),
    )


def _as_legacy(a: _GoAlert) -> _LegacyAlert:
    return _LegacyAlert(
        fingerprint=a.fingerprint,
        alertname=a.alertname,
        status=a.status,
        labels=dict(a.labels),
        annotations=dict(a.annotations),
        starts_at=a.starts_at,
        ends_at=a.ends_at,
        generator_url=a.generator_url or None,
    )


def share_history(legacy: web.Application, go: web.Application) -> None:
    """Make two sample apps one deployment: an alert either accepts lands in both histories,
    as the real services share one database. Call before the apps start."""
    legacy[PEER], go[PEER] = go, legacy


async def _legacy_overview(request: web.Request) -> web.Response:
    return _json(_overview(request.app[LEGACY_LATEST].values()))


async def _go_overview(request: web.Request) -> web.Response:
    return _json(_overview((a.status, a.starts_at) for a in request.app[GO_STORE].values()))


def go_app(*, sse_interval: float = 1.0) -> web.Application:
    """The Go service's shape as wired at HEAD, with real (in-memory) history, not mock rows."""
    app = _base_app(
        "go", [_go_errors, _go_enrichment_capture], lambda st: _go_text_error(_reason(st), st)
    )
    app[GO_STORE] = {}
    app[SSE_INTERVAL] = sse_interval
    app.on_response_prepare.append(_go_enrichment_headers)
    r = app.router
    r.add_route("*", "/healthz", _go_healthz)
    r.add_route("*", "/webhook", _go_webhook)
    r.add_route("*", "/history", _go_history)
    r.add_get("/api/v2/alerts", _go_api_v2_alerts)
    r.add_route("*", "/enrichment/mode", _go_enrichment_mode)
    r.add_get("/api/v2/events/stream", _go_events_stream)
    r.add_get("/ws/dashboard", _go_ws_dashboard)
    r.add_get("/api/dashboard/overview", _go_overview)
    return app


# --------------------------------------------------------------------------------------------------
# standalone runner

FACTORIES: dict[str, Callable[[], web.Application]] = {"legacy": legacy_app, "go": go_app}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cutover.examples.backends", description="Run sample Alert History backends."
    )
    parser.add_argument(
        "kind",
        choices=[*sorted(FACTORIES), "pair"],
        help="which backend shape to serve; pair: both, sharing one history",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--legacy-port", type=int, default=8001, help="pair: the legacy side")
    parser.add_argument("--go-port", type=int, default=8002, help="pair: the go side")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="hold every answer this long (a slower twin)"
    )
    parser.add_argument(
        "--legacy-delay-ms", type=float, default=0.0, help="pair: hold the legacy side's answers"
    )
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the backends don't need it
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    if args.delay_ms < 0 or args.legacy_delay_ms < 0:
        parser.error("delays must not be negative")
    if args.kind == "pair":
        try:
            loop.run_until_complete(_serve_pair(args))
        except KeyboardInterrupt:
            pass
        finally:
            loop.close()
        return 0
    app = FACTORIES[args.kind]()
    app[BASE_DELAY_MS] = args.delay_ms
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        shutdown_timeout=5.0,
        loop=loop,
        print=lambda _msg: print(
            f"{args.kind} backend on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True
        ),
    )
    return 0


async def _serve_pair(args: argparse.Namespace) -> None:
    """Both shapes in one process with one history, until SIGINT or SIGTERM."""
    legacy, go = legacy_app(), go_app()
    legacy[BASE_DELAY_MS] = args.delay_ms + args.legacy_delay_ms
    go[BASE_DELAY_MS] = args.delay_ms
    share_history(legacy, go)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runners = []
    try:
        for kind, app, port in (("legacy", legacy, args.legacy_port), ("go", go, args.go_port)):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, args.host, port).start()
            print(f"{kind} backend on http://{args.host}:{port}", flush=True)
        print("one shared history; Ctrl-C to stop", flush=True)
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
