"""The `alerts:` config section: intake paths, auth, formats, dedup, classification, enrichment
mode, filters and the routing tree. See docs/alerts.md for every key.

    alerts:
      paths: [/webhook/proxy]                 # more allowed; a path may declare its format
      auth: {bearer_token: s3cret}            # or {username: am, password: s3cret}
      max_body: 10MiB
      dedup_window: 5m
      classification: rules                   # or {engine: openai, openai: {...}}
      enrichment: {mode: enriched}
      filters: [{name: drop-noise, action: deny, matchers: ['classification.severity="noise"']}]
      routing: {targets: [slack], routes: [{matchers: ['severity="critical"'], targets: [pager]}]}
      forward_to_route: default               # history backends get every alert through it
      batch_max: 1000                         # group commit: alerts per transaction at most
      queue_max: 5000                         # alerts waiting for a commit at most (then 503)
      commit_timeout: 5s                      # bound of one batch's transaction (PostgreSQL)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from cutover.alerts.classify import (
    DEFAULT_CATEGORY_RULES,
    DEFAULT_SECRET_PATTERNS,
    CategoryRule,
    RulesConfig,
)
from cutover.alerts.dedup import DEFAULT_WINDOW
from cutover.alerts.filters import ACTIONS, FilterRule, FilterSet
from cutover.alerts.matchers import Matcher, is_label_name, parse_matcher
from cutover.alerts.routes import AlertRoute
from cutover.alerts.webhook_formats import FORMATS, FieldMapping, Format, compile_path
from cutover.core.configkit import (
    Ctx,
    Invalid,
    boolean,
    duration,
    integer,
    is_off,
    items,
    join,
    number,
    require,
    secret,
    section,
    size,
    string,
    url,
)
from cutover.core.configkit import field as get

__all__ = [
    "ENRICHMENT_MODES",
    "AlertsConfig",
    "BreakerConfig",
    "ClassificationConfig",
    "IntakePath",
    "OpenAIConfig",
    "WebhookAuth",
    "parse_alerts",
]

EnrichmentMode = Literal["transparent", "enriched", "transparent_with_recommendations"]
ENRICHMENT_MODES: tuple[EnrichmentMode, ...] = (
    "transparent",
    "enriched",
    "transparent_with_recommendations",
)
DEFAULT_PATH = "/webhook/proxy"
DEFAULT_FORMATS: tuple[Format, ...] = ("alertmanager", "prometheus")
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class IntakePath:
    path: str
    formats: tuple[Format, ...] = DEFAULT_FORMATS  # several: detected from the document
    mapping: FieldMapping | None = None  # for `generic`


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    """Bearer token, or basic auth (Alertmanager's `http_config` sends either)."""

    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print the secrets
        kind = "bearer" if self.bearer_token else "basic"
        return f"WebhookAuth({kind})"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failures: int = 5  # consecutive failed calls that open the breaker
    reset: float = 30.0  # seconds open before one probe call is let through


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    base_url: str
    model: str = "gpt-4o-mini"
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # one call
    retries: int = 1  # further attempts after a failed call (429, 5xx, timeout, connection)
    retry_backoff: float = 0.5  # seconds before the first retry, doubling
    breaker: BreakerConfig = BreakerConfig()
    calls_per_minute: int = 60  # shared by every worker (Redis) or split among them; past it, rules
    cache_ttl: float = 3600.0
    min_confidence: float = 0.5  # an answer less sure than this falls back to the rules
    secret_patterns: tuple[re.Pattern[str], ...] = ()
    max_tokens: int = 600
    temperature: float = 0.1


@dataclass(frozen=True, slots=True)
class ClassificationConfig:
    engine: Literal["rules", "openai"] = "rules"
    rules: RulesConfig = field(default_factory=RulesConfig)
    openai: OpenAIConfig | None = None


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    paths: tuple[IntakePath, ...] = (IntakePath(DEFAULT_PATH),)
    auth: WebhookAuth | None = None
    max_body: int = 10 * MiB
    dedup_window: float = DEFAULT_WINDOW
    classification: ClassificationConfig = ClassificationConfig()
    enrichment_mode: EnrichmentMode = "enriched"
    filters: FilterSet = field(default_factory=FilterSet)
    routing: AlertRoute = field(default_factory=lambda: AlertRoute(targets=(), name="routing"))
    forward_to_route: str | None = None
    retention: float = 7 * 86400.0  # processed intake rows and LLM audit rows are kept this long
    poll_interval: float = 1.0  # how often delayed and unclassified alerts are looked at
    claim_timeout: float = 5.0  # bounds one claim of alerts to classify (as delivery's claims)
    # Group commit (alerts/group_commit.py): alerts written per transaction at most, alerts
    # waiting for one at most (past it a webhook gets 503 + Retry-After at once), and the bound
    # of one batch's transaction (past it every webhook of the batch gets 503).
    batch_max: int = 1000
    queue_max: int = 5000
    commit_timeout: float = 5.0


_KEYS = (
    "paths",
    "auth",
    "max_body",
    "dedup_window",
    "classification",
    "enrichment",
    "filters",
    "routing",
    "forward_to_route",
    "retention",
    "poll_interval",
    "claim_timeout",
    "batch_max",
    "queue_max",
    "commit_timeout",
)


def parse_alerts(ctx: Ctx, value: object, path: str) -> AlertsConfig:
    m = section(ctx, value, path, _KEYS)
    d = AlertsConfig()
    forward = get(ctx, m, "forward_to_route", path, _route_name, None)
    return AlertsConfig(
        paths=get(ctx, m, "paths", path, _paths, d.paths),
        auth=get(ctx, m, "auth", path, _auth, None),
        max_body=get(ctx, m, "max_body", path, size(), d.max_body),
        dedup_window=get(ctx, m, "dedup_window", path, duration(zero=True), d.dedup_window),
        classification=get(ctx, m, "classification", path, _classification, d.classification),
        enrichment_mode=get(ctx, m, "enrichment", path, _enrichment, d.enrichment_mode),
        filters=get(ctx, m, "filters", path, _filters, d.filters),
        routing=get(ctx, m, "routing", path, _routing_root, d.routing),
        forward_to_route=forward,
        retention=get(ctx, m, "retention", path, duration(), d.retention),
        poll_interval=get(ctx, m, "poll_interval", path, duration(), d.poll_interval),
        claim_timeout=get(ctx, m, "claim_timeout", path, duration(), d.claim_timeout),
        batch_max=get(ctx, m, "batch_max", path, integer(1, 100_000), d.batch_max),
        queue_max=get(ctx, m, "queue_max", path, integer(1, 10_000_000), d.queue_max),
        commit_timeout=get(ctx, m, "commit_timeout", path, duration(), d.commit_timeout),
    )


# -- intake ---------------------------------------------------------------------------------


def _url_path(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*", value):
        ctx.fail(path, "a URL path starting with '/'", value)
    return value


def _paths(ctx: Ctx, value: object, path: str) -> tuple[IntakePath, ...]:
    if not isinstance(value, list) or not value:
        ctx.fail(path, f"a non-empty list of paths such as [{DEFAULT_PATH}]", value)
    out = items(ctx, value, path, _intake_path)
    seen: set[str] = set()
    for i, p in enumerate(out):
        if p.path in seen:
            ctx.add(f"{path}[{i}]", "each path once", p.path)
        seen.add(p.path)
    return tuple(out)


def _intake_path(ctx: Ctx, value: object, path: str) -> IntakePath:
    if isinstance(value, str):
        return IntakePath(_url_path(ctx, value, path))
    m = section(ctx, value, path, ("path", "format", "formats", "mapping"))
    if not require(ctx, m, "path", path, "a URL path starting with '/'"):
        raise Invalid
    url_path = _url_path(ctx, m["path"], join(path, "path"))
    if "format" in m and "formats" in m:
        ctx.add(join(path, "formats"), "at most one of format and formats")
    formats: tuple[Format, ...] = DEFAULT_FORMATS
    if "format" in m:
        formats = (get(ctx, m, "format", path, _format, "alertmanager"),)
    elif "formats" in m:
        formats = get(ctx, m, "formats", path, _formats, DEFAULT_FORMATS)
    mapping = get(ctx, m, "mapping", path, _mapping, None)
    if "generic" in formats and mapping is None and not ctx.failed(join(path, "mapping")):
        ctx.add(
            join(path, "mapping"), "a field mapping for the generic format (this key is required)"
        )
    if mapping is not None and "generic" not in formats:
        ctx.add(join(path, "mapping"), "a mapping only with format: generic")
    return IntakePath(url_path, formats, mapping)


def _format(ctx: Ctx, value: object, path: str) -> Format:
    if value not in FORMATS:
        ctx.fail(path, f"one of {', '.join(FORMATS)}", value)
    return value  # type: ignore[return-value]


def _formats(ctx: Ctx, value: object, path: str) -> tuple[Format, ...]:
    if not isinstance(value, list) or not value:
        ctx.fail(path, f"a non-empty list of formats ({', '.join(FORMATS)})", value)
    return tuple(dict.fromkeys(items(ctx, value, path, _format)))


def _json_path(ctx: Ctx, value: object, path: str) -> tuple[str | int, ...]:
    compiled = compile_path(value) if isinstance(value, str) else None
    if compiled is None:
        ctx.fail(path, "a field path such as data.alerts or labels.team or items[0].name", value)
    return compiled


def _field_map(
    ctx: Ctx, value: object, path: str, labels: bool
) -> tuple[tuple[str, tuple[str | int, ...]], ...]:
    if not isinstance(value, Mapping):
        ctx.fail(path, "a mapping of name to field path", value)
    out = []
    for key, item in value.items():
        kpath = join(path, key)
        if not isinstance(key, str) or (labels and not is_label_name(key)):
            ctx.add(kpath, "a label name (letters, digits, _)", key)
            continue
        try:
            out.append((key, _json_path(ctx, item, kpath)))
        except Invalid:
            continue
    return tuple(out)


_MAPPING_KEYS = (
    "alerts",
    "labels",
    "annotations",
    "label_fields",
    "annotation_fields",
    "status",
    "firing_values",
    "resolved_values",
    "starts_at",
    "ends_at",
    "fingerprint",
    "generator_url",
)


def _values(ctx: Ctx, value: object, path: str) -> frozenset[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str | int) for v in value):
        ctx.fail(path, "a non-empty list of status values", value)
    return frozenset(str(v).lower() for v in value)


def _mapping(ctx: Ctx, value: object, path: str) -> FieldMapping:
    m = section(ctx, value, path, _MAPPING_KEYS)
    d = FieldMapping()
    jp = _json_path
    mapping = FieldMapping(
        alerts=get(ctx, m, "alerts", path, jp, None),
        labels=get(ctx, m, "labels", path, jp, None),
        annotations=get(ctx, m, "annotations", path, jp, None),
        label_fields=get(
            ctx, m, "label_fields", path, lambda c, v, p: _field_map(c, v, p, True), ()
        ),
        annotation_fields=get(
            ctx, m, "annotation_fields", path, lambda c, v, p: _field_map(c, v, p, False), ()
        ),
        status=get(ctx, m, "status", path, jp, None),
        firing_values=get(ctx, m, "firing_values", path, _values, d.firing_values),
        resolved_values=get(ctx, m, "resolved_values", path, _values, d.resolved_values),
        starts_at=get(ctx, m, "starts_at", path, jp, None),
        ends_at=get(ctx, m, "ends_at", path, jp, None),
        fingerprint=get(ctx, m, "fingerprint", path, jp, None),
        generator_url=get(ctx, m, "generator_url", path, jp, None),
    )
    both = mapping.firing_values & mapping.resolved_values
    if both:
        ctx.add(
            join(path, "resolved_values"),
            "values not also listed as firing",
            ", ".join(sorted(both)),
        )
    if mapping.labels is None and "alertname" not in dict(mapping.label_fields):
        ctx.add(
            join(path, "label_fields"),
            "an alertname field (label_fields: {alertname: <field path>}), or labels: <path>",
        )
    return mapping


def _auth(ctx: Ctx, value: object, path: str) -> WebhookAuth | None:
    if is_off(value):
        return None
    m = section(ctx, value, path, ("bearer_token", "username", "password"))
    token = get(ctx, m, "bearer_token", path, secret, None)
    user = get(ctx, m, "username", path, string, None)
    password = get(ctx, m, "password", path, secret, None)
    if token is not None and (user is not None or password is not None):
        ctx.fail(path, "either bearer_token, or username and password, not both")
    if token is None and (user is None or password is None):
        if ctx.failed(path):
            raise Invalid
        ctx.fail(path, "bearer_token, or username and password")
    return WebhookAuth(bearer_token=token, username=user, password=password)


def _route_name(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or value not in ctx.route_names:
        ctx.fail(path, "the name of a route defined under routes", value)
    return value


# -- classification ---------------------------------------------------------------------------


def _classification(ctx: Ctx, value: object, path: str) -> ClassificationConfig:
    if value in ("rules", None):
        return ClassificationConfig()
    if value == "openai":
        ctx.fail(
            path, "an openai block with at least base_url: {engine: openai, openai: {base_url}}"
        )
    m = section(ctx, value, path, ("engine", "categories", "default_category", "openai"))
    engine = get(ctx, m, "engine", path, _engine, "openai" if "openai" in m else "rules")
    openai = get(ctx, m, "openai", path, _openai, None)
    if engine == "openai" and openai is None and not ctx.failed(join(path, "openai")):
        ctx.add(join(path, "openai"), "an openai block with at least base_url (engine is openai)")
    rules = RulesConfig(
        categories=get(ctx, m, "categories", path, _categories, DEFAULT_CATEGORY_RULES),
        default_category=get(ctx, m, "default_category", path, string, "general"),
    )
    return ClassificationConfig(
        engine=engine, rules=rules, openai=openai if engine == "openai" else None
    )


def _engine(ctx: Ctx, value: object, path: str) -> Literal["rules", "openai"]:
    if value not in ("rules", "openai"):
        ctx.fail(path, "rules or openai", value)
    return value  # type: ignore[return-value]


def _categories(ctx: Ctx, value: object, path: str) -> tuple[CategoryRule, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of {category, alertname, labels} rules", value)
    return tuple(items(ctx, value, path, _category))


def _anchored(ctx: Ctx, value: object, path: str) -> re.Pattern[str]:
    text = string(ctx, value, path, "a regular expression string")
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        ctx.fail(path, f"a valid regular expression ({exc})", value)


def _category(ctx: Ctx, value: object, path: str) -> CategoryRule:
    m = section(ctx, value, path, ("category", "alertname", "labels"))
    ok = require(ctx, m, "category", path, "a category name")
    category = get(ctx, m, "category", path, string, None)
    alertname = get(ctx, m, "alertname", path, _anchored, None)
    labels: list[tuple[str, re.Pattern[str]]] = []
    if "labels" in m:
        lpath = join(path, "labels")
        if not isinstance(m["labels"], Mapping):
            ctx.add(lpath, "a mapping of label name to regular expression", m["labels"])
        else:
            for key, pattern in m["labels"].items():
                kpath = join(lpath, key)
                if not isinstance(key, str) or not is_label_name(key):
                    ctx.add(kpath, "a label name", key)
                    continue
                try:
                    labels.append((key, _anchored(ctx, pattern, kpath)))
                except Invalid:
                    continue
    if alertname is None and not labels and not ctx.failed(path):
        ctx.add(path, "an alertname pattern or labels (a rule with neither matches everything)")
    if not ok or category is None:
        raise Invalid
    return CategoryRule(category, alertname, tuple(labels))


_OPENAI_KEYS = (
    "base_url",
    "model",
    "api_key",
    "timeout",
    "retries",
    "retry_backoff",
    "breaker",
    "calls_per_minute",
    "cache_ttl",
    "min_confidence",
    "secret_patterns",
    "max_tokens",
    "temperature",
)


def _openai(ctx: Ctx, value: object, path: str) -> OpenAIConfig:
    m = section(ctx, value, path, _OPENAI_KEYS)
    if not require(ctx, m, "base_url", path, "the server's URL, such as http://127.0.0.1:8000/v1"):
        raise Invalid
    d = OpenAIConfig(base_url="")
    extra = get(ctx, m, "secret_patterns", path, _patterns, ())
    return OpenAIConfig(
        base_url=get(ctx, m, "base_url", path, url(("http://", "https://"), "an http(s)"), ""),
        model=get(ctx, m, "model", path, string, d.model),
        api_key=get(ctx, m, "api_key", path, secret, None),
        timeout=get(ctx, m, "timeout", path, duration(), d.timeout),
        retries=get(ctx, m, "retries", path, integer(0, 10), d.retries),
        retry_backoff=get(ctx, m, "retry_backoff", path, duration(zero=True), d.retry_backoff),
        breaker=get(ctx, m, "breaker", path, _breaker, d.breaker),
        calls_per_minute=get(ctx, m, "calls_per_minute", path, integer(1), d.calls_per_minute),
        cache_ttl=get(ctx, m, "cache_ttl", path, duration(zero=True), d.cache_ttl),
        min_confidence=get(ctx, m, "min_confidence", path, number(0, 1), d.min_confidence),
        secret_patterns=tuple(re.compile(p) for p in DEFAULT_SECRET_PATTERNS) + extra,
        max_tokens=get(ctx, m, "max_tokens", path, integer(16, 100_000), d.max_tokens),
        temperature=get(ctx, m, "temperature", path, number(0, 2), d.temperature),
    )


def _breaker(ctx: Ctx, value: object, path: str) -> BreakerConfig:
    m = section(ctx, value, path, ("failures", "reset"))
    d = BreakerConfig()
    return BreakerConfig(
        failures=get(ctx, m, "failures", path, integer(1), d.failures),
        reset=get(ctx, m, "reset", path, duration(), d.reset),
    )


def _patterns(ctx: Ctx, value: object, path: str) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of regular expressions", value)

    def one(c: Ctx, v: object, p: str) -> re.Pattern[str]:
        text = string(c, v, p, "a regular expression string")
        try:
            return re.compile(text)
        except re.error as exc:
            c.fail(p, f"a valid regular expression ({exc})", v)

    return tuple(items(ctx, value, path, one))


# -- enrichment, filters, routing ----------------------------------------------------------


def _mode(ctx: Ctx, value: object, path: str) -> EnrichmentMode:
    if value not in ENRICHMENT_MODES:
        ctx.fail(path, f"one of {', '.join(ENRICHMENT_MODES)}", value)
    return value  # type: ignore[return-value]


def _enrichment(ctx: Ctx, value: object, path: str) -> EnrichmentMode:
    if isinstance(value, str):
        return _mode(ctx, value, path)
    m = section(ctx, value, path, ("mode",))
    return get(ctx, m, "mode", path, _mode, "enriched")


def _matchers(ctx: Ctx, value: object, path: str) -> tuple[Matcher, ...]:
    """A list of matcher strings, or a mapping label -> value (equality)."""
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            kpath = join(path, key)
            if not isinstance(key, str) or not isinstance(item, str | int):
                ctx.add(kpath, "label name: value (a string)", item)
                continue
            escaped = str(item).replace("\\", "\\\\").replace('"', '\\"')
            parsed = parse_matcher(f'{key}="{escaped}"')
            if isinstance(parsed, str):
                ctx.add(kpath, parsed, key)
            else:
                out.append(parsed)
        return tuple(out)
    if not isinstance(value, list):
        ctx.fail(path, 'a list of matchers such as [severity="critical", team=~"db|infra"]', value)

    def one(c: Ctx, v: object, p: str) -> Matcher:
        if not isinstance(v, str):
            c.fail(p, 'a matcher string such as severity="critical"', v)
        parsed = parse_matcher(v)
        if isinstance(parsed, str):
            c.fail(p, parsed, v)
        return parsed

    return tuple(items(ctx, value, path, one))


def _filters(ctx: Ctx, value: object, path: str) -> FilterSet:
    if value is None:
        return FilterSet()
    if isinstance(value, Mapping):
        m = section(ctx, value, path, ("default", "rules"))
        default = get(ctx, m, "default", path, _allow_or_deny, "allow")
        rules = get(ctx, m, "rules", path, _filter_rules, ())
        return FilterSet(rules, default)
    return FilterSet(_filter_rules(ctx, value, path))


def _allow_or_deny(ctx: Ctx, value: object, path: str) -> Literal["allow", "deny"]:
    if value not in ("allow", "deny"):
        ctx.fail(path, "allow or deny", value)
    return value  # type: ignore[return-value]


def _filter_rules(ctx: Ctx, value: object, path: str) -> tuple[FilterRule, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of filter rules {name, action, matchers, priority, delay}", value)
    rules = items(ctx, value, path, _filter_rule)
    names: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.name in names:
            ctx.add(join(f"{path}[{i}]", "name"), "a unique rule name", rule.name)
        names.add(rule.name)
    return tuple(rules)


def _filter_rule(ctx: Ctx, value: object, path: str) -> FilterRule:
    m = section(ctx, value, path, ("name", "action", "matchers", "priority", "delay", "enabled"))
    ok = require(ctx, m, "name", path, "a rule name")
    ok = require(ctx, m, "action", path, "allow, deny or delay") and ok
    name = get(ctx, m, "name", path, string, None)
    action = get(ctx, m, "action", path, _action, None)
    delay = get(ctx, m, "delay", path, duration(), None)
    if action == "delay" and delay is None and not ctx.failed(join(path, "delay")):
        ctx.add(join(path, "delay"), "a duration such as 2m (action is delay)")
    if action is not None and action != "delay" and "delay" in m:
        ctx.add(join(path, "delay"), "a delay only with action: delay")
    rule = FilterRule(
        name=name or "",
        action=action or "allow",
        matchers=get(ctx, m, "matchers", path, _matchers, ()),
        priority=get(ctx, m, "priority", path, integer(-1_000_000, 1_000_000), 100),
        delay=delay or 0.0,
        enabled=get(ctx, m, "enabled", path, boolean, True),
    )
    if not ok or name is None or action is None:
        raise Invalid
    return rule


def _action(ctx: Ctx, value: object, path: str) -> Literal["allow", "deny", "delay"]:
    if value not in ACTIONS:
        ctx.fail(path, "allow, deny or delay", value)
    return value  # type: ignore[return-value]


def _targets(ctx: Ctx, value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(t, str) and re.fullmatch(r"[A-Za-z0-9_.:-]+", t) for t in value
    ):
        ctx.fail(path, "a list of target names (letters, digits, _ . : -)", value)
    return tuple(dict.fromkeys(value))


def _routing_root(ctx: Ctx, value: object, path: str) -> AlertRoute:
    m = section(ctx, value, path, ("targets", "routes"))
    return AlertRoute(
        targets=get(ctx, m, "targets", path, _targets, ()),
        routes=get(ctx, m, "routes", path, _child_routes, ()),
        name=path,
    )


def _child_routes(ctx: Ctx, value: object, path: str) -> tuple[AlertRoute, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of routes {matchers, targets, continue, routes}", value)
    return tuple(items(ctx, value, path, _child_route))


def _child_route(ctx: Ctx, value: object, path: str) -> AlertRoute:
    m = section(ctx, value, path, ("matchers", "targets", "continue", "routes"))
    return AlertRoute(
        matchers=get(ctx, m, "matchers", path, _matchers, ()),
        targets=get(ctx, m, "targets", path, _targets, None),
        continue_=get(ctx, m, "continue", path, boolean, False),
        routes=get(ctx, m, "routes", path, _child_routes, ()),
        name=path,
    )
