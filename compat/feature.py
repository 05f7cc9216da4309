"""The compat feature: legacy endpoints kept working on the new backend, announced and counted.

The rules (`compat/`, compiled at load) decide; this module does the I/O:

- `match` runs before routing for every request while rules are configured: one dict lookup
  and a few prefix tests. A hit is counted (metric + in-memory usage buffer, no I/O).
- `answer` serves `gone` and `health` rules without a backend.
- `forward` runs the route's decision (split, fallback) with a per-backend plan: the rewritten
  path/query/body for that backend's role, and the response transform. Answers without a
  transform stream as usual; answers with one are buffered (bounded), decoded (gzip, deflate,
  and br when a Brotli decoder is installed), transformed and re-sent without Content-Encoding.
  `keep_on_legacy` pins the legacy backend; `fan_out` splits the body into several requests.
- Usage counts go to the durable store in batches from a background task, never on a request.
- `GET /admin/compat/usage` (admin listener) lists the rules and their callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter
from yarl import URL

from cutover.compat.config import CompatConfig
from cutover.compat.fanout import fan_out_items, items_path
from cutover.compat.jsonops import TransformError, apply, format_rfc3339
from cutover.compat.report import usage_report
from cutover.compat.rules import Hit, Rewrite, Rule, RuleSet, render_template
from cutover.compat.store import ensure_schema, read_usage, write_usage
from cutover.compat.usage import UsageBuffer, UsageDelta, caller_of
from cutover.core.backoff import backoff
from cutover.core.bounded import STORE_TIMEOUT, bounded
from cutover.core.db import Database, StoreUnavailable
from cutover.core.errors import (
    BodyTooLargeError,
    CutoverError,
    NotFound,
    UpstreamError,
    error_response,
    from_error,
)
from cutover.core.tasks import Supervised
from cutover.proxy.attempts import Attempts
from cutover.proxy.config import CutoverConfig
from cutover.proxy.forwarder import forward
from cutover.proxy.headers import downstream_headers, upstream_headers
from cutover.proxy.host import Feature
from cutover.proxy.metrics import MetricSet, counter
from cutover.proxy.pipeline import WholeAnswer, run_attempts, upstream_errors
from cutover.routing.budget import RetryBudget
from cutover.routing.decision import Decision, client_ip
from cutover.routing.replay import Failure

if TYPE_CHECKING:
    from cutover.core.config_model import Route
    from cutover.proxy.attempts import ProxyOutcome
    from cutover.proxy.host import Host
    from cutover.proxy.upstreams import Upstream

log = logging.getLogger("cutover.compat")

try:  # Brotli is optional: without a decoder, br answers pass untouched (and say so in the log)
    import brotli as _brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import brotlicffi as _brotli  # type: ignore[import-not-found,no-redef]
    except ImportError:
        _brotli = None

BROTLI_AVAILABLE = _brotli is not None
_JSON_TYPES = ("application/json", "+json")
# Headers that describe the bytes as the backend sent them; wrong once the body is rewritten.
_REPRESENTATION = ("content-encoding", "content-length", "etag", "content-md5", "digest")
_LOG_EVERY = 60.0  # seconds between two identical "passed untouched" log lines
# Backoff between two attempts of one fan-out part: full jitter, uniform(0, min(cap, base * 2**n))
# before retry n+1 (the delivery engine's policy, `core.backoff`, at request scale).
FAN_OUT_BACKOFF_BASE = 0.05
FAN_OUT_BACKOFF_CAP = 1.0


class CompatError(CutoverError):
    """A compat rule could not be applied; the reply names what went wrong."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_hint = status
        self.code = code
        self.message = message


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.endswith(_JSON_TYPES) or media == "application/json"


def _decode(body: bytes, encoding: str, limit: int) -> bytes | None:
    """Undo Content-Encoding (bounded by `limit`); None when no decoder is available."""
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip", "deflate"):
            body = _inflate(body, coding, limit)
        elif coding == "br":
            if _brotli is None:
                return None
            try:
                body = _brotli.decompress(body)
            except Exception as exc:  # the decoder's own error type
                raise CompatError(502, "bad_upstream_encoding", "invalid br body") from exc
            if len(body) > limit:
                raise _too_large(limit)
        else:
            return None
    return body


def _inflate(body: bytes, coding: str, limit: int) -> bytes:
    attempts = [31] if coding != "deflate" else [15, -15]  # deflate: zlib, or raw as some send
    for wbits in attempts:
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, limit + 1)
            if len(out) > limit or d.unconsumed_tail:
                raise _too_large(limit)
            out += d.flush()
        except zlib.error:
            continue
        if not d.eof:
            raise CompatError(502, "bad_upstream_encoding", f"truncated {coding} body")
        if len(out) > limit:
            raise _too_large(limit)
        return out
    raise CompatError(502, "bad_upstream_encoding", f"invalid {coding} body")


def _too_large(limit: int) -> CompatError:
    return CompatError(
        502,
        "response_too_large",
        f"the backend's answer exceeds the compat transform limit of {limit} bytes",
    )


async def _read_bounded(content: aiohttp.StreamReader, limit: int, idle: float) -> bytes | None:
    """The whole body, or None when it is longer than `limit`."""
    parts: list[bytes] = []
    size = 0
    while True:
        async with asyncio.timeout(idle):
            chunk = await content.readany()
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)


class _Plan:
    """One request's per-backend changes, for `proxy.forwarder.forward` (an `AttemptPlan`)."""

    __slots__ = (
        "_bodies",
        "_targets",
        "body",
        "feature",
        "headers",
        "hit",
        "idle",
        "request",
        "request_id",
    )

    def __init__(
        self,
        feature: CompatFeature,
        request: web.BaseRequest,
        hit: Hit,
        request_id: str,
        idle: float,
    ) -> None:
        self.feature = feature
        self.idle = idle
        self.request = request
        self.hit = hit
        self.request_id = request_id
        self.headers = hit.rule.headers
        self.body: bytes | None = None
        self._bodies: dict[str, bytes] = {}
        self._targets: dict[str | None, tuple[str, bytes | None] | None] = {}

    def _rewrite(self, backend: str) -> Rewrite | None:
        return self.hit.rule.rewrite_for(self.feature.role_of(backend))

    async def prepare(self, body: bytes | None) -> None:
        """Read the body when a rewrite transforms it, and transform it once per role."""
        with_body = [rw for rw in self.hit.rule.rewrites if rw.body]
        if body is None and with_body and self.request.body_exists:
            body = await self.feature.read_body(self.request)
        self.body = body
        for rw in with_body:
            if body is None:
                continue
            doc = _parse_request_json(body)
            try:
                self._bodies[rw.applies_to] = _dump(apply(rw.body, doc))
            except TransformError as exc:
                raise CompatError(400, "bad_request_body", f"request body: {exc}") from None

    def target(self, backend: str) -> tuple[str, bytes | None] | None:
        role = self.feature.role_of(backend)
        if role in self._targets:
            return self._targets[role]
        rw = self.hit.rule.rewrite_for(role)
        result: tuple[str, bytes | None] | None = None
        if rw is not None and (rw.changes_request or rw.body):
            path = (
                rw.target(
                    _sent_path(self.request), self.request.rel_url.raw_query_string, self.hit.params
                )
                if rw.changes_request
                else self.request.raw_path
            )
            result = (path, self._bodies.get(rw.applies_to))
        self._targets[role] = result
        return result

    def wants_response(self, backend: str) -> bool:
        rw = self._rewrite(backend)
        return rw is not None and rw.response is not None

    async def respond(
        self, request: web.BaseRequest, resp: aiohttp.ClientResponse, outcome: ProxyOutcome
    ) -> web.StreamResponse:
        rw = self._rewrite(outcome.backend or "")
        assert rw is not None and rw.response is not None
        try:
            return await self.feature.transform_response(
                request, resp, rw, self.hit.rule, outcome, self.request_id, self.idle
            )
        finally:
            resp.release()


def _sent_path(request: web.BaseRequest) -> str:
    """The path as the client sent it (still percent-encoded): what goes upstream when a rule
    rewrites only the query, or fans out without a path of its own. Rules *match* the
    normalized path (`rel_url.raw_path`, core.http1)."""
    return request.raw_path.partition("?")[0]


def _dump(doc: Any) -> bytes:
    """`doc` as JSON; orjson writes at most 254 levels, so a deeper (hostile) document fails
    like a wrong shape rather than as an unexpected error."""
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError as exc:
        raise TransformError("write", f"the document cannot be written as JSON ({exc})") from None


def _parse_request_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CompatError(
            400, "bad_request_body", f"request body: expected JSON ({exc.msg} at {exc.pos})"
        ) from None


@dataclass(eq=False, slots=True)
class CompatMetrics(MetricSet):
    """The compat feature's metrics; each rule's child is bound when the rules are loaded."""

    registry: CollectorRegistry
    requests: Counter = counter(
        "cutover_legacy_requests_total",
        "Requests that matched a compat rule (legacy endpoints), by rule.",
        ["rule"],
    )


class CompatFeature(Feature):
    """Compat rules in front of the routes; on whenever the config has a `compat` section."""

    name = "compat"

    def __init__(self, gw: Host) -> None:
        super().__init__(gw)
        self.metrics = CompatMetrics(gw.metrics.registry)
        self.settings: CompatConfig | None = None
        self.ruleset = RuleSet(())
        self._children: dict[str, Any] = {}
        self.usage = UsageBuffer()
        self._flusher: Supervised | None = None
        self._flush_lock = asyncio.Lock()
        self._writing: list[UsageDelta] = []  # deltas a flush is writing now
        self._schema_ready: object | None = None
        self._logged: dict[tuple[str, str, str], float] = {}
        self._started = False
        # The fan-out's backoff between retries of a part; tests replace them.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.rng = random.Random()
        self._configure(gw.config)

    # -- lifecycle -----------------------------------------------------------------------

    def _configure(self, config: CutoverConfig) -> None:
        settings = config.compat
        if settings is None:
            self.settings = None
            self.ruleset = RuleSet(())
            self.gw.set_compat(None)
            return
        self.settings = settings
        self.ruleset = RuleSet(settings.rules)
        self.usage.max_keys = settings.max_callers
        self._children = {r.name: self.metrics.requests.labels(r.name) for r in settings.rules}
        self.gw.set_compat(self)

    async def start(self) -> None:
        self._started = True
        self._start_flusher()
        if self.settings is not None:
            log.info(
                "compat: %d rules%s; br decoding %s",
                len(self.settings.rules),
                f" from {self.settings.profile}" if self.settings.profile else "",
                "on" if BROTLI_AVAILABLE else "off (no Brotli decoder installed)",
            )

    def _start_flusher(self) -> None:
        if self.settings is not None and self._flusher is None and self._started:
            self._flusher = self.gw.tasks.start("compat-usage-flush", self._flush_loop)

    async def stop(self) -> None:
        if self._flusher is not None:
            await self._flusher.stop()
            self._flusher = None
        if not await self.flush():
            log.warning("compat: %d usage counts could not be stored at exit", len(self.usage))

    async def reload(self, config: CutoverConfig) -> None:
        self._configure(config)
        self._start_flusher()

    # -- usage ---------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            settings = self.settings
            await asyncio.sleep(settings.flush_interval if settings else 5.0)
            await self.flush()

    async def flush(self) -> bool:
        """Write the buffered counts to the store; False (and kept for later) when it is down."""
        async with self._flush_lock:
            deltas = self.usage.drain()
            if not deltas:
                return True
            self._writing = deltas  # still pending, for a report made meanwhile
            try:
                await write_usage(await self._store(), deltas)
            except (StoreUnavailable, OSError, ValueError) as exc:
                self.usage.restore(deltas)
                log.warning("compat: usage counts not stored yet (%s); will retry", exc)
                return False
            finally:
                self._writing = []
            return True

    async def _read(self, rule: str | None) -> list[dict[str, Any]]:
        return await read_usage(await self._store(), rule)

    async def _store(self) -> Database:
        """The gateway's store with the usage table in place (raises StoreUnavailable)."""
        db = await self.gw.database()
        if self._schema_ready is not db:
            await ensure_schema(db)
            self._schema_ready = db
        return db

    def _count(self, request: web.BaseRequest, rule: Rule) -> None:
        child = self._children.get(rule.name)
        if child is not None:
            child.inc()
        settings = self.settings
        config = self.gw.config
        key = (
            request.headers.get(settings.caller_header)
            if settings and settings.caller_header
            else None
        )
        peer = request.remote or ""
        ip = client_ip(peer, request.headers.get("X-Forwarded-For"), config.headers.trusted_proxies)
        caller = caller_of(key, request.headers.get("User-Agent"), ip)
        self.usage.record(rule.name, caller, self.gw.clock.now())

    # -- the hot path --------------------------------------------------------------------

    def match(self, request: web.BaseRequest) -> Hit | None:
        """The rule for this request (counted), or None: none of compat's business. Rules match
        the normalized path (`rel_url.raw_path`, core.http1), as routes do."""
        hit = self.ruleset.match(
            request.method, request.rel_url.raw_path, lambda: request.query, request.headers
        )
        if hit is not None:
            try:
                self._count(request, hit.rule)
            except Exception:  # accounting never breaks a request
                log.exception("compat: usage accounting failed")
        return hit

    def role_of(self, backend: str) -> str | None:
        settings = self.settings
        return settings.backend_role(backend) if settings is not None else None

    def _headers(self, rule: Rule, response: web.StreamResponse) -> web.StreamResponse:
        for name, value in rule.headers:
            response.headers.add(name, value)
        return response

    async def answer(self, request: web.BaseRequest, hit: Hit, request_id: str) -> web.Response:
        """A rule the gateway answers itself (`gone`, `health`)."""
        rule = hit.rule
        if rule.gone is not None:
            gone = rule.gone
            extra: dict[str, object] = {}
            if gone.replacement:
                extra["replacement"] = gone.replacement
            if gone.guide:
                extra["migration_guide"] = gone.guide
            resp = error_response(gone.status, "gone", gone.message, request_id, **extra)
            return self._headers(rule, resp)  # type: ignore[return-value]
        assert rule.health is not None
        ready, _ = self.gw.readiness()
        now = self.gw.clock.now()
        values = {"now": now, "now_rfc3339": format_rfc3339(now)}
        health = rule.health
        body = render_template(health.ready_body if ready else health.unready_body, values)
        resp = web.Response(
            status=200 if ready else health.unready_status,
            body=b"" if request.method == "HEAD" else orjson.dumps(body),
            content_type="application/json",
        )
        resp.headers[self.gw.config.headers.request_id] = request_id
        return self._headers(rule, resp)  # type: ignore[return-value]

    async def forward(
        self,
        request: web.BaseRequest,
        hit: Hit,
        decision: Decision,
        request_id: str,
        outcome: ProxyOutcome,
    ) -> web.StreamResponse:
        """Proxy a request that matched a rule, through the route's decision."""
        rule = hit.rule
        try:
            if rule.keep_on_legacy and self.settings is not None:
                legacy = self.settings.roles["legacy"]
                decision = Decision(decision.route, legacy, (legacy,), "compat", decision.bucket)
            return await self._dispatch(request, hit, decision, request_id, outcome, None)
        except BodyTooLargeError as exc:
            self.gw.metrics.rejected.labels("body_too_large").inc()
            resp = from_error(exc, request_id)
            resp.force_close()
            return self._headers(rule, resp)
        except CutoverError as exc:
            resp = from_error(exc, request_id)
            backend_header = self.gw.config.headers.backend
            if backend_header and outcome.backend:
                resp.headers[backend_header] = outcome.backend
            return self._headers(rule, resp)

    async def _dispatch(
        self,
        request: web.BaseRequest,
        hit: Hit,
        decision: Decision,
        request_id: str,
        outcome: ProxyOutcome,
        body: bytes | None,
    ) -> web.StreamResponse:
        if hit.rule.fans_out_for(self.role_of(decision.primary)):
            return await self._fan_out(request, hit, decision, request_id, outcome, body)
        route = self.gw.state.routes_by_name[decision.route]
        plan = _Plan(self, request, hit, request_id, route.timeouts.total)
        await plan.prepare(body)
        return await forward(request, self.gw, decision, request_id, outcome, plan)

    async def read_body(self, request: web.BaseRequest) -> bytes:
        """The request body, whole; 413 past `compat.max_body`, 415 when it is encoded."""
        assert self.settings is not None
        limit = self.settings.max_body
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise CompatError(
                415, "unsupported_encoding", "a compat rule rewrites this body: send it unencoded"
            )
        length = request.content_length
        if length is not None and length > limit:
            raise BodyTooLargeError(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            parts.append(chunk)
        return b"".join(parts)

    # -- responses -----------------------------------------------------------------------

    def _log_untouched(self, rule: Rule, backend: str, why: str) -> None:
        key = (rule.name, backend, why)
        now = self.gw.clock.monotonic()
        last = self._logged.get(key)
        if last is None or now - last >= _LOG_EVERY:
            if len(self._logged) > 1024:
                self._logged.clear()
            self._logged[key] = now
            log.info("compat rule %s: %s from %s passed untouched", rule.name, why, backend)

    async def transform_response(
        self,
        request: web.BaseRequest,
        resp: aiohttp.ClientResponse,
        rewrite: Rewrite,
        rule: Rule,
        outcome: ProxyOutcome,
        request_id: str,
        idle: float,
    ) -> web.StreamResponse:
        """Map the status and transform a JSON body (or give one to an empty or non-JSON
        answer, where a `fill` says so); anything else streams untouched."""
        assert rewrite.response is not None and self.settings is not None
        transform = rewrite.response
        backend = outcome.backend or ""
        status = transform.status(resp.status)
        content_type = resp.headers.get("Content-Type", "")
        encoding = resp.headers.get("Content-Encoding", "")
        # 204 and 304 have no body to read: only a fill, under a status mapped to one that
        # can carry a body, gives them one
        no_body = resp.status in (204, 304) and (
            status in (204, 304) or transform.fill_for(resp.status, empty=True) is None
        )
        bodyless = request.method == "HEAD" or no_body or resp.status < 200
        if bodyless or not transform.reads(resp.status):
            return await self._stream(request, resp, status, rule, outcome, request_id, idle)
        is_json = _is_json(content_type)
        fill_empty = transform.fill_for(resp.status, empty=True)
        fill_other = None if is_json else transform.fill_for(resp.status, empty=False)
        if not is_json and fill_empty is None and fill_other is None:
            self._log_untouched(rule, backend, f"non-JSON answer ({content_type or 'no type'})")
            return await self._stream(request, resp, status, rule, outcome, request_id, idle)
        if encoding and not _decodable(encoding):
            why = f"answer encoded as {encoding}"
            if "br" in encoding.lower() and not BROTLI_AVAILABLE:
                why += " (no Brotli decoder installed)"
            self._log_untouched(rule, backend, why)
            return await self._stream(request, resp, status, rule, outcome, request_id, idle)
        limit = self.settings.max_body
        length = resp.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        try:
            raw = await _read_bounded(resp.content, limit, idle)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise CompatError(
                502, "upstream_unavailable", f"the answer from {backend} broke off"
            ) from exc
        if raw is None:
            raise _too_large(limit)
        decoded = _decode(raw, encoding, limit) if encoding else raw
        assert decoded is not None  # _decodable said so
        values = {"status": resp.status}
        if fill_empty is not None and not decoded.strip():
            doc = render_template(fill_empty.body, {**values, "text": ""})
        elif not is_json:
            if fill_other is None:  # read for a fill of empty answers, and it was not empty
                self._log_untouched(rule, backend, f"non-JSON answer ({content_type or 'no type'})")
                headers = self._response_headers(resp, outcome, request_id)
                return self._headers(rule, web.Response(status=status, body=raw, headers=headers))
            text = decoded.decode("utf-8", errors="replace")
            doc = render_template(fill_other.body, {**values, "text": text})
        elif not transform.ops_for(resp.status):  # read for a fill, and it had a body
            headers = self._response_headers(resp, outcome, request_id)
            return self._headers(rule, web.Response(status=status, body=raw, headers=headers))
        else:
            try:
                doc = orjson.loads(decoded)
            except orjson.JSONDecodeError as exc:
                raise CompatError(
                    502,
                    "bad_upstream_json",
                    f"backend {backend} answered malformed JSON ({exc.msg} at char {exc.pos}) "
                    f"to compat rule {rule.name}",
                ) from None
        try:
            body = _dump(transform.transform(resp.status, doc))
        except TransformError as exc:
            raise CompatError(
                502,
                "compat_transform_failed",
                f"compat rule {rule.name} could not transform the answer from {backend}: {exc}",
            ) from None
        headers = self._response_headers(resp, outcome, request_id, drop=_REPRESENTATION)
        if not is_json:
            headers["Content-Type"] = "application/json"
        out = web.Response(status=status, body=body, headers=headers)
        return self._headers(rule, out)

    def _response_headers(
        self,
        resp: aiohttp.ClientResponse,
        outcome: ProxyOutcome,
        request_id: str,
        drop: tuple[str, ...] = (),
    ) -> CIMultiDict[str]:
        config = self.gw.config
        extra = [(config.headers.request_id, request_id)]
        if config.headers.backend:
            extra.append((config.headers.backend, outcome.backend or ""))
        headers = downstream_headers(resp.headers, extra)
        for name in drop:
            headers.popall(name, None)
        if outcome.set_cookie is not None:
            headers.add("Set-Cookie", outcome.set_cookie)
        return headers

    async def _stream(
        self,
        request: web.BaseRequest,
        resp: aiohttp.ClientResponse,
        status: int,
        rule: Rule,
        outcome: ProxyOutcome,
        request_id: str,
        idle: float,
    ) -> web.StreamResponse:
        """Stream the answer as it came, under a (possibly mapped) status."""
        headers = self._response_headers(resp, outcome, request_id)
        for name, value in rule.headers:
            headers.add(name, value)
        reason = resp.reason if status == resp.status else None
        out = web.StreamResponse(status=status, reason=reason, headers=headers)
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit():
            out.content_length = int(length)
        try:
            await out.prepare(request)
            if request.method != "HEAD" and resp.status not in (204, 304):
                while True:
                    async with asyncio.timeout(idle):
                        chunk = await resp.content.readany()
                    if not chunk:
                        break
                    await out.write(chunk)
            await out.write_eof()
        except (TimeoutError, aiohttp.ClientError, OSError):
            resp.close()
            if request.transport is not None:
                request.transport.close()
        return out

    # -- fan-out -------------------------------------------------------------------------

    async def _fan_out(
        self,
        request: web.BaseRequest,
        hit: Hit,
        decision: Decision,
        request_id: str,
        outcome: ProxyOutcome,
        body: bytes | None,
    ) -> web.StreamResponse:
        """One request per item of the body's array, to the decision's primary; answers combined.

        Up to `fan_out.concurrency` parts are in flight at once; answers are combined in item
        order. A part that fails is retried on the same backend as the route's `retry` block
        allows (`_part`). When the very first part cannot even connect, nothing was delivered:
        the whole request goes on to the decision's next backend (its own rewrite, if any,
        applies there) — so, when there is one, the first part goes alone before the others.
        """
        rule = hit.rule
        fo = rule.fan_out
        assert fo is not None
        gw = self.gw
        loop = asyncio.get_running_loop()
        started = loop.time()
        raw = body if body is not None else await self.read_body(request)
        doc = _parse_request_json(raw)
        where = items_path(fo)
        try:
            items = fan_out_items(fo, doc)
        except RecursionError:  # copy.deepcopy of a hostile, deeply nested item
            raise CompatError(
                400, "bad_request_body", f"request body {where}[]: too deep"
            ) from None
        except TransformError as exc:
            raise CompatError(400, "bad_request_body", f"request body {where}[]: {exc}") from None
        if items is None:
            raise CompatError(
                400, "bad_request_body", f"request body: expected a JSON array at {where!r}"
            )
        try:
            parts = [_dump(item) for item in items]
        except TransformError as exc:  # deeper than JSON is written
            raise CompatError(400, "bad_request_body", f"request body {where}[]: {exc}") from None
        backend = decision.primary
        route = gw.state.routes_by_name[decision.route]
        upstream = gw.state.upstreams[backend]
        url_text = request.rel_url
        path = fo.path.render(hit.params) if fo.path is not None else _sent_path(request)
        if url_text.raw_query_string:
            path += "?" + url_text.raw_query_string
        b = upstream.backend
        host_header = b.upstream_host
        headers = upstream_headers(
            request.headers,
            peer=request.remote or "",
            scheme=request.scheme,
            host=request.headers.get("Host"),
            host_header=host_header,
            request_id_name=gw.config.headers.request_id,
            request_id=request_id,
            content_length=None,
        )
        headers["Content-Type"] = "application/json"
        headers.popall("Content-Encoding", None)
        job = _FanOutJob(
            backend=backend,
            route=route,
            budget=gw.state.budgets[route.name],
            upstream=upstream,
            url=upstream.url(path),
            method=fo.method,
            headers=headers,
            key=request.headers.get("Idempotency-Key"),
            parts=parts,
            deadline=started + route.timeouts.total,
            limit=self.settings.max_body if self.settings else 1 << 20,
            outcome=outcome,
            client_timeout=gw.state.client_timeouts[route.name],
        )
        outcome.backend = backend
        count = len(parts)
        done: list[_Part | None] = [None] * count
        first = 0
        if count and len(decision.attempts) > 1:
            # Alone, so that nothing else was delivered should it be unable to connect.
            walk = self._walk(job)
            part = await self._part(job, 0, fall_back=True, attempts=walk)
            if part is None:
                # The whole request goes on to the next backend: a fallback after a connect
                # failure, booked and budgeted as every fallback is (`proxy.attempts`).
                rest = decision.attempts[1:]
                if not walk.may_try(1, rest[0]):
                    raise UpstreamError(backend, "connect")
                try:
                    nxt = Decision(decision.route, rest[0], rest, decision.reason, decision.bucket)
                    return await self._dispatch(request, hit, nxt, request_id, outcome, raw)
                finally:
                    walk.release()
            done[0] = part
            first = 1
        await self._run_parts(job, done, range(first, count), fo.concurrency)

        results: list[Any] = []
        failures: list[dict[str, Any]] = []
        worst_4xx: int | None = None
        server_side = False
        for index, part in enumerate(done):
            assert part is not None
            if part.error is not None:
                server_side = True
                failures.append({"index": index, "error": part.error, "attempts": part.attempts})
                continue
            results.append(part.value)
            if part.status >= 300:
                failures.append(
                    {
                        "index": index,
                        "status": part.status,
                        "answer": part.value,
                        "attempts": part.attempts,
                    }
                )
                if part.status >= 500:
                    server_side = True
                elif worst_4xx is None:
                    worst_4xx = part.status
        if failures:
            status = 502 if server_side or worst_4xx is None else worst_4xx
            resp_out = error_response(
                status,
                "fan_out_failed",
                f"{len(failures)} of {count} requests to {backend} failed",
                request_id,
                failures=failures,
            )
        else:
            values = {
                "count": count,
                "succeeded": count,
                "failed": 0,
                "elapsed_ms": int((loop.time() - started) * 1000),
                "results": results,
                "backend": backend,
            }
            template = fo.body if fo.body is not None else {"count": "{count}"}
            resp_out = web.Response(
                status=fo.status,
                body=orjson.dumps(render_template(template, values)),
                content_type="application/json",
            )
            resp_out.headers[gw.config.headers.request_id] = request_id
        if gw.config.headers.backend:
            resp_out.headers[gw.config.headers.backend] = backend
        return self._headers(rule, resp_out)

    async def _run_parts(
        self, job: _FanOutJob, done: list[_Part | None], indexes: range, concurrency: int
    ) -> None:
        """Send the parts at `indexes`, at most `concurrency` at once; `done[i]` gets each."""
        pending = iter(indexes)

        async def worker() -> None:
            for index in pending:  # shared: each index is taken by one worker
                done[index] = await self._part(job, index, fall_back=False)

        workers = min(concurrency, len(indexes))
        if workers <= 1:
            await worker()
            return
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None

    def _walk(self, job: _FanOutJob) -> Attempts:
        """The attempt state of one part (its retries on the fan-out's backend)."""
        return Attempts(
            self.gw, job.route, job.budget, job.outcome, job.method, job.key is not None, True
        )

    async def _part(
        self, job: _FanOutJob, index: int, fall_back: bool, attempts: Attempts | None = None
    ) -> _Part | None:
        """Send part `index` through the attempt loop (`proxy.pipeline.run_attempts`), retrying
        it on the same backend as the route's `retry` block allows.

        A failure that never reached the backend (connect) may always be retried; one that may
        have reached it (timeout, reset, a status in `retry.on_status`) only when the replay
        rules allow it (the fan-out method in `retry.methods`, or an `Idempotency-Key`). At
        most `retry.attempts` retries, each after a backoff with full jitter, each drawing on
        the route's retry budget, all before the route's deadline. With `fall_back`, a first
        attempt that cannot connect returns None: the caller sends the whole request to the
        next backend instead, through `attempts` (its fallback is booked there).
        """
        backend = job.backend
        retry = job.route.retry
        headers = job.headers
        if job.key is not None:
            headers = headers.copy()
            headers["Idempotency-Key"] = _part_key(job.key, index)
        attempts = attempts or self._walk(job)
        transport = _PartTransport(job, headers, job.parts[index])

        def delay(attempt: int) -> float | None:
            if fall_back and attempt == 1 and attempts.failure is Failure.CONNECT:
                return None  # the whole request goes on to the next backend instead
            return backoff(attempt - 1, FAN_OUT_BACKOFF_BASE, FAN_OUT_BACKOFF_CAP, self.rng)

        try:
            _, answer = await run_attempts(
                attempts,
                (backend,) * (1 + retry.attempts),
                job.deadline,
                transport,
                backoff=delay,
                sleep=self.sleep,
            )
        except UpstreamError as exc:
            if fall_back and transport.sent == 1 and exc.failure == "connect":
                return None
            last = transport.last
            if exc.failure == "status" and last is not None:  # no retry left: the answer stands
                return _Part(last.value, last.status, None, transport.sent)
            return _Part(None, 0, exc.failure, transport.sent)
        return _Part(answer.value, answer.status, None, transport.sent)

    # -- admin ---------------------------------------------------------------------------

    def add_admin_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/admin/compat/usage", self._usage_endpoint)

    async def _usage_endpoint(self, request: web.Request) -> web.Response:
        if self.settings is None:
            raise NotFound("no compat section in the config", code="compat_off")
        report = await self.usage_report(request.query.get("rule") or None)
        return web.Response(
            status=200 if report["stored"] else 503,
            body=orjson.dumps(report),
            content_type="application/json",
        )

    async def dashboard(self) -> dict[str, Any] | None:
        """Usage by rule and caller with the days to sunset (GET /admin/compat/usage)."""
        if self.settings is None:
            return None
        return await self.usage_report(None)

    async def usage_report(self, rule: str | None) -> dict[str, Any]:
        """Usage by rule and caller: the store's, or what waits in memory while it is down
        (`stored` false)."""
        settings = self.settings
        # Both waits are bounded: a hanging store answers 503 with the counts not yet stored.
        # The flush goes on in the background (cancelling it could lose counts it drained).
        try:
            stored = await asyncio.wait_for(asyncio.shield(self.flush()), STORE_TIMEOUT)
        except TimeoutError:
            stored = False
        try:
            rows = await bounded(self._read(rule), STORE_TIMEOUT) if stored else []
        except (StoreUnavailable, OSError, TimeoutError) as exc:
            log.warning("compat: usage not readable: %s", exc)
            stored = False
            rows = []
        if not stored:
            pending = [
                {
                    "rule": d.rule,
                    "caller": d.caller.id,
                    "kind": d.caller.kind,
                    "user_agent": d.caller.user_agent,
                    "client_ip": d.caller.client_ip,
                    "count": d.count,
                    "first_seen": d.first_seen,
                    "last_seen": d.last_seen,
                }
                for d in self.usage.pending(also=self._writing)
                if rule is None or d.rule == rule
            ]
            rows = pending
        rules = settings.rules if settings is not None else ()
        report = usage_report(rows, rules, self.gw.clock.now(), only=rule)
        report["stored"] = stored
        report["overflowed"] = self.usage.overflowed
        return report


@dataclass(slots=True)
class _FanOutJob:
    """What every part of one fan-out shares."""

    backend: str
    route: Route
    budget: RetryBudget
    upstream: Upstream
    url: URL
    method: str
    headers: CIMultiDict[str]
    key: str | None  # the client's Idempotency-Key
    parts: list[bytes]
    deadline: float  # loop time: the route's `timeout` from the start of the request
    limit: int  # largest answer read per part
    outcome: ProxyOutcome
    client_timeout: aiohttp.ClientTimeout  # the route's, built at load


@dataclass(slots=True)
class _Part:
    """How one part ended: an answer (`status`, `value`), or a transport `error`."""

    value: Any
    status: int
    error: str | None
    attempts: int


class _PartTransport:
    """The aiohttp client as the attempt loop's transport for one fan-out part: the part is
    posted and its answer read whole within the attempt's time."""

    __slots__ = ("headers", "job", "last", "payload", "sent")

    def __init__(self, job: _FanOutJob, headers: CIMultiDict[str], payload: bytes) -> None:
        self.job = job
        self.headers = headers
        self.payload = payload
        self.sent = 0  # attempts made
        self.last: WholeAnswer | None = None  # the last answer (a retry status may stand)

    async def send(self, backend: str, per_try: float) -> WholeAnswer:
        job = self.job
        upstream = job.upstream
        self.sent += 1
        with upstream_errors(backend):
            async with asyncio.timeout(per_try):
                async with upstream.session.request(
                    job.method,
                    job.url,
                    headers=self.headers,
                    data=self.payload,
                    allow_redirects=False,
                    timeout=job.client_timeout,
                    server_hostname=upstream.server_hostname,
                ) as resp:
                    answer = await _read_bounded(resp.content, job.limit, job.route.timeouts.total)
                    part_type = resp.headers.get("Content-Type", "")
                    status = resp.status
        self.last = WholeAnswer(status, _part_value(answer, part_type))
        return self.last


def _part_value(answer: bytes | None, content_type: str) -> Any:
    """A part's answer as the combined answer shows it: parsed JSON, else trimmed text."""
    if answer is None:
        return None
    if _is_json(content_type):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(answer)
        return None
    return answer.decode("utf-8", "replace").strip()[:500]


def _part_key(key: str, index: int) -> str:
    """The Idempotency-Key of part `index`: one key per part (each is its own request),
    the same for the same part when the sender retries the whole batch under its key."""
    key = key.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':  # a structured-field string
        return f'{key[:-1]}-{index}"'
    return f"{key}-{index}"


def _decodable(encoding: str) -> bool:
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    allowed = {"gzip", "x-gzip", "deflate", "identity"} | ({"br"} if BROTLI_AVAILABLE else set())
    return all(c in allowed for c in codings)
