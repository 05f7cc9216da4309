"""The `publishing:` section: static targets, Kubernetes discovery, delivery policy.

    publishing:
      mode: normal                  # or metrics-only (legacy: intelligent, metrics_only)
      targets:
        - {name: pd, type: pagerduty, routing_key: ${PD_KEY}}
        - {name: ops, type: slack, url: ${SLACK_WEBHOOK}}
      kubernetes: {namespaces: [monitoring], resync: 5m}
      delivery: {workers: 16, concurrency: 4, max_attempts: 10, max_age: 24h}
      history: {path: /webhook/, backends: {go: {path: /webhook, shape: flat}}}

See docs/publishing.md for every key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cutover.core import configkit as kit
from cutover.core.configkit import (
    Ctx,
    Invalid,
    boolean,
    duration,
    integer,
    is_off,
    join,
    section,
    string,
)
from cutover.core.configkit import field as get
from cutover.publishing.outbox import COMPLETE_BATCH, COMPLETE_INTERVAL
from cutover.publishing.targets import (
    DEFAULT_RATE_LIMITS,
    DEFAULT_TIMEOUT,
    DEFAULT_URLS,
    SLACK_API_URL,
    TARGET_TYPES,
    RateLimit,
    TargetError,
    TargetSpec,
    check_header,
    check_name,
    check_type_format,
    check_url,
    complete,
)

# DESIGN.md, Facts: the three selectors in use and the three secret layouts (spec digest §5).
DEFAULT_SELECTORS: tuple[str, ...] = (
    "alert-history.io/publish-target=true",
    "publishing-target=true",
    "alert-history.io/target=true",
)
LAYOUTS: tuple[str, ...] = ("kebab-case", "snake_case", "config")
DEFAULT_NAMESPACES: tuple[str, ...] = ("default",)
MODES = {
    "normal": "normal",
    "intelligent": "normal",
    "metrics-only": "metrics-only",
    "metrics_only": "metrics-only",
}
SHAPES = ("envelope", "flat")
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(ms|s|sec|second|m|min|minute|h|hour)\s*")
_RATE_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}
_SELECTOR = re.compile(r"[A-Za-z0-9./_-]+(==?|!=)[A-Za-z0-9._-]*")


def normalize_mode(value: object) -> str | None:
    """`normal` / `metrics-only` from any accepted spelling; None when unknown."""
    if not isinstance(value, str):
        return None
    return MODES.get(value.strip().lower())


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    namespaces: tuple[str, ...] = DEFAULT_NAMESPACES
    selectors: tuple[str, ...] = DEFAULT_SELECTORS
    layouts: tuple[str, ...] = LAYOUTS
    resync: float = 300.0
    kubeconfig: str | None = None  # None: in-cluster when in a pod, else ~/.kube/config
    context: str | None = None
    in_cluster: bool | None = None  # None: decide from the environment


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    workers: int = 16  # deliveries in flight per process
    concurrency: int = 4  # per target, per process
    max_attempts: int = 10
    max_age: float = 24 * 3600.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    lease: float = 60.0
    poll_interval: float = 1.0
    breaker_failures: int = 5  # consecutive failures that open a target's breaker
    breaker_open: float = 30.0  # before one probe is let through
    # Delivered jobs leave the outbox in batches: this many, or once the oldest waited this long.
    complete_batch: int = COMPLETE_BATCH
    complete_interval: float = COMPLETE_INTERVAL
    claim_timeout: float = 5.0  # one claim of due jobs, past which it is abandoned and retried
    stall_after: float = 60.0  # no delivery progress this long while jobs wait: a stall


@dataclass(frozen=True, slots=True)
class HistoryBackend:
    path: str
    shape: str  # "envelope" (Alertmanager v4) | "flat" (one alert per POST, the Go shape)


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """How `backend:<route>` jobs reach the history backends."""

    path: str = "/webhook/"
    shape: str = "envelope"
    backends: MappingProxyType[str, HistoryBackend] = field(
        default_factory=lambda: MappingProxyType({})
    )


@dataclass(frozen=True, slots=True)
class PublishingConfig:
    mode: str = "normal"
    targets: tuple[TargetSpec, ...] = ()
    kubernetes: KubernetesConfig | None = None
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    history: HistoryConfig = field(default_factory=HistoryConfig)


DEFAULT = PublishingConfig()

# -- parsers -------------------------------------------------------------------------------------

_TOP = ("mode", "targets", "kubernetes", "delivery", "history")
_TARGET_KEYS = (
    "name",
    "type",
    "url",
    "format",
    "enabled",
    "headers",
    "routing_key",
    "token",
    "bot_token",
    "channel",
    "api_url",
    "resolve",
    "kind",
    "rate_limit",
    "timeout",
    "concurrency",
)


def parse_rate_limit(value: object, target_type: str) -> RateLimit | None:
    """`120/min`, `1/s`, `{rate: 60/min, burst: 10}`; off/null: no limit. ValueError if bad."""
    if is_off(value):
        return None
    burst: object = None
    if isinstance(value, Mapping):
        unknown = set(value) - {"rate", "burst"}
        if unknown:
            raise ValueError(f"only the keys rate and burst (not {sorted(map(str, unknown))[0]})")
        burst = value.get("burst")
        value = value.get("rate")
    m = _RATE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError("a rate such as 120/min or 1/s, or {rate: 60/min, burst: 10}, or off")
    per = _RATE_UNITS[m.group(2)]
    rate = float(m.group(1)) / per
    if rate <= 0:
        raise ValueError("a rate above zero")
    default = DEFAULT_RATE_LIMITS.get(target_type)
    if burst is None:
        n = default.burst if default else max(1, int(rate))
    elif isinstance(burst, int) and not isinstance(burst, bool) and burst >= 1:
        n = burst
    else:
        raise ValueError("burst: an integer >= 1")
    return RateLimit(rate, n)


def _headers(ctx: Ctx, value: object, path: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        ctx.fail(path, "a mapping of header name to value")
    out: list[tuple[str, str]] = []
    bad = False
    for name, item in value.items():
        if item is kit.BAD:
            bad = True
            continue
        try:
            out.append(check_header(name, str(item) if item is not None else None, "header"))
        except TargetError as exc:
            ctx.add(join(path, str(name)), exc.expected)  # the value is never shown
            bad = True
    if bad:
        raise Invalid
    return tuple(out)


def _target(ctx: Ctx, value: object, path: str) -> TargetSpec:
    m = section(ctx, value, path, _TARGET_KEYS)
    if any(v is kit.BAD for v in m.values()):
        raise Invalid  # a ${...} that could not be resolved (already reported)
    if "name" not in m or "type" not in m:
        for key in ("name", "type"):
            if key not in m:
                ctx.add(join(path, key), "a value (this key is required)")
        raise Invalid
    try:
        name = check_name(m["name"])  # type: ignore[arg-type]
    except TargetError as exc:
        ctx.fail(join(path, "name"), exc.expected, m["name"])
    if name.startswith("backend"):
        ctx.fail(join(path, "name"), "a name not starting with 'backend' (reserved)", name)
    try:
        ttype, fmt = check_type_format(m["type"], m.get("format"))
    except TargetError as exc:
        ctx.fail(join(path, exc.field), exc.expected, m.get(exc.field))
    url = m.get("url", DEFAULT_URLS.get(ttype))
    if url is None:
        ctx.fail(join(path, "url"), f"the {ttype} URL (this key is required)")
    try:
        url = check_url(url)
    except TargetError as exc:
        ctx.fail(join(path, "url"), exc.expected)  # a URL may hold a credential: not shown
    api_url = SLACK_API_URL
    if "api_url" in m:
        try:
            api_url = check_url(m["api_url"], "api_url")
        except TargetError as exc:
            ctx.fail(join(path, "api_url"), exc.expected)
    secrets: dict[str, str | None] = {}
    for key in ("routing_key", "token", "bot_token", "channel"):
        raw = m.get(key)
        if raw is not None and (not isinstance(raw, str) or not raw.strip()):
            ctx.fail(join(path, key), "a non-empty string (use ${ENV_VAR} for secrets)")
        secrets[key] = raw.strip() if isinstance(raw, str) else None
    try:
        rate = (
            parse_rate_limit(m["rate_limit"], ttype)
            if "rate_limit" in m
            else DEFAULT_RATE_LIMITS[ttype]
        )
    except ValueError as exc:
        ctx.fail(join(path, "rate_limit"), str(exc), m["rate_limit"])
    spec = TargetSpec(
        name=name,
        type=ttype,
        url=url,
        format=fmt,
        enabled=get(ctx, m, "enabled", path, boolean, True),
        headers=get(ctx, m, "headers", path, _headers, ()),
        routing_key=secrets["routing_key"],
        token=secrets["token"],
        bot_token=secrets["bot_token"],
        channel=secrets["channel"],
        api_url=api_url,
        resolve=get(ctx, m, "resolve", path, string, "update"),
        kind=get(ctx, m, "kind", path, string, "alert"),
        rate_limit=rate,
        timeout=get(ctx, m, "timeout", path, duration(), DEFAULT_TIMEOUT),
        concurrency=get(ctx, m, "concurrency", path, integer(1, 1000), None),
        source="static",
        origin="config",
    )
    try:
        return complete(spec)
    except TargetError as exc:
        ctx.fail(join(path, exc.field), exc.expected)


def _targets(ctx: Ctx, value: object, path: str) -> tuple[TargetSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.fail(path, "a list of targets ({name, type, url, ...})", value)
    out: list[TargetSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        try:
            target = _target(ctx, item, f"{path}[{i}]")
        except Invalid:
            continue
        if target.name in seen:
            ctx.add(f"{path}[{i}].name", "a name used by one target only", target.name)
            continue
        seen.add(target.name)
        out.append(target)
    return tuple(out)


def _str_list(
    what: str, allowed: tuple[str, ...] | None = None, pattern: re.Pattern[str] | None = None
) -> kit.Parser[tuple[str, ...]]:
    def parse(ctx: Ctx, value: object, path: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            ctx.fail(path, f"a non-empty list of {what}", value)
        out: list[str] = []
        for i, item in enumerate(value):
            ok = isinstance(item, str) and item.strip()
            if ok and allowed is not None:
                ok = item in allowed
            if ok and pattern is not None:
                ok = all(pattern.fullmatch(part.strip()) for part in item.split(","))
            if not ok:
                hint = f" (one of: {', '.join(allowed)})" if allowed else ""
                ctx.add(f"{path}[{i}]", f"{what[:-1]}{hint}", item)
                continue
            out.append(str(item).strip())
        if len(out) != len(value):
            raise Invalid
        return tuple(dict.fromkeys(out))

    return parse


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _kubernetes(ctx: Ctx, value: object, path: str) -> KubernetesConfig | None:
    if is_off(value):
        return None
    if value is True:
        return KubernetesConfig()
    keys = ("enabled", "namespaces", "selectors", "layouts", "resync", "kubeconfig", "context")
    m = section(ctx, value, path, (*keys, "in_cluster"))
    if not get(ctx, m, "enabled", path, boolean, True):
        return None
    d = KubernetesConfig()
    kubeconfig = m.get("kubeconfig")
    if kubeconfig is not None:
        kubeconfig = get(ctx, m, "kubeconfig", path, kit.file, None)
    return KubernetesConfig(
        namespaces=get(
            ctx, m, "namespaces", path, _str_list("namespaces", pattern=_NAMESPACE), d.namespaces
        ),
        selectors=get(
            ctx, m, "selectors", path, _str_list("selectors", pattern=_SELECTOR), d.selectors
        ),
        layouts=get(ctx, m, "layouts", path, _str_list("layouts", allowed=LAYOUTS), d.layouts),
        resync=get(ctx, m, "resync", path, duration(), d.resync),
        kubeconfig=kubeconfig,
        context=get(ctx, m, "context", path, string, None),
        in_cluster=get(ctx, m, "in_cluster", path, boolean, None),
    )


def _delivery(ctx: Ctx, value: object, path: str) -> DeliveryPolicy:
    keys = (
        "workers",
        "concurrency",
        "max_attempts",
        "max_age",
        "backoff",
        "lease",
        "poll_interval",
        "breaker",
        "completions",
        "claim_timeout",
        "stall_after",
    )
    m = section(ctx, value, path, keys)
    d = DeliveryPolicy()
    base, cap = d.backoff_base, d.backoff_cap
    if "backoff" in m:
        b = section(ctx, m["backoff"], join(path, "backoff"), ("base", "cap"))
        base = get(ctx, b, "base", join(path, "backoff"), duration(), base)
        cap = get(ctx, b, "cap", join(path, "backoff"), duration(), cap)
        if cap < base:
            where = join(join(path, "backoff"), "cap")
            ctx.add(where, f"a duration >= backoff.base ({base:g}s)", cap)
    failures, open_for = d.breaker_failures, d.breaker_open
    if "breaker" in m:
        bp = join(path, "breaker")
        b = section(ctx, m["breaker"], bp, ("failures", "open_for"))
        failures = get(ctx, b, "failures", bp, integer(1, 1000), failures)
        open_for = get(ctx, b, "open_for", bp, duration(), open_for)
    lease = get(ctx, m, "lease", path, duration(), d.lease)
    # a delivered job keeps its lease while it waits for its batch: far below the lease
    batch, interval = d.complete_batch, min(d.complete_interval, lease / 100)
    if "completions" in m:
        cp = join(path, "completions")
        c = section(ctx, m["completions"], cp, ("batch", "interval"))
        batch = get(ctx, c, "batch", cp, integer(1, 10_000), batch)
        if "interval" in c:
            interval = get(ctx, c, "interval", cp, duration(zero=True), interval)
            if interval > lease / 100:
                where = join(cp, "interval")
                ctx.add(where, f"a duration of at most lease / 100 ({lease / 100:g}s)", interval)
    policy = DeliveryPolicy(
        workers=get(ctx, m, "workers", path, integer(1, 10_000), d.workers),
        concurrency=get(ctx, m, "concurrency", path, integer(1, 1000), d.concurrency),
        max_attempts=get(ctx, m, "max_attempts", path, integer(1, 1000), d.max_attempts),
        max_age=get(ctx, m, "max_age", path, duration(), d.max_age),
        backoff_base=base,
        backoff_cap=cap,
        lease=lease,
        poll_interval=get(ctx, m, "poll_interval", path, duration(), d.poll_interval),
        breaker_failures=failures,
        breaker_open=open_for,
        complete_batch=batch,
        complete_interval=interval,
        claim_timeout=get(ctx, m, "claim_timeout", path, duration(), d.claim_timeout),
        stall_after=get(ctx, m, "stall_after", path, duration(), d.stall_after),
    )
    return policy


def _history_backend(ctx: Ctx, value: object, path: str, d: HistoryConfig) -> HistoryBackend:
    m = section(ctx, value, path, ("path", "shape"))
    return HistoryBackend(
        path=get(ctx, m, "path", path, kit.url_path, d.path),
        shape=get(ctx, m, "shape", path, _shape, d.shape),
    )


def _shape(ctx: Ctx, value: object, path: str) -> str:
    if value not in SHAPES:
        ctx.fail(path, f"one of {', '.join(SHAPES)}", value)
    return str(value)


def _history(ctx: Ctx, value: object, path: str) -> HistoryConfig:
    m = section(ctx, value, path, ("path", "shape", "backends"))
    d = HistoryConfig(
        path=get(ctx, m, "path", path, kit.url_path, "/webhook/"),
        shape=get(ctx, m, "shape", path, _shape, "envelope"),
    )
    backends: dict[str, HistoryBackend] = {}
    raw = m.get("backends")
    if raw is not None:
        bpath = join(path, "backends")
        if not isinstance(raw, Mapping):
            ctx.fail(bpath, "a mapping of backend name to {path, shape}", raw)
        for name, item in raw.items():
            ipath = join(bpath, str(name))
            try:
                kit.known_backend(ctx, name, ipath)
                backends[str(name)] = _history_backend(ctx, item, ipath, d)
            except Invalid:
                continue
    return HistoryConfig(d.path, d.shape, MappingProxyType(backends))


def _mode(ctx: Ctx, value: object, path: str) -> str:
    mode = normalize_mode(value)
    if mode is None:
        ctx.fail(path, "normal or metrics-only (legacy: intelligent, metrics_only)", value)
    return mode


def parse_publishing(ctx: Ctx, value: object, path: str) -> PublishingConfig:
    """The `publishing:` section."""
    m = section(ctx, value, path, _TOP)
    cfg = PublishingConfig(
        mode=get(ctx, m, "mode", path, _mode, "normal"),
        targets=get(ctx, m, "targets", path, _targets, ()),
        kubernetes=get(ctx, m, "kubernetes", path, _kubernetes, None),
        delivery=get(ctx, m, "delivery", path, _delivery, DeliveryPolicy()),
        history=get(ctx, m, "history", path, _history, HistoryConfig()),
    )
    slowest = max((t.timeout for t in cfg.targets), default=0.0)
    if slowest >= cfg.delivery.lease:
        where = join(join(path, "delivery"), "lease")
        ctx.add(where, f"a lease longer than the slowest target timeout ({slowest:g}s)")
    return cfg


__all__ = [
    "DEFAULT_SELECTORS",
    "LAYOUTS",
    "TARGET_TYPES",
    "DeliveryPolicy",
    "HistoryConfig",
    "KubernetesConfig",
    "PublishingConfig",
    "normalize_mode",
    "parse_publishing",
    "parse_rate_limit",
]
