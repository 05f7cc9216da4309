"""The one config loader: YAML file -> validated, frozen `CutoverConfig`.

`CutoverConfig` is composed here, one floor above core: its gateway keys are core's model
(`core.config_model`), its feature sections the types of each feature's own config module,
parsed by the parser beside the feature. Those modules stand on core and on their feature's pure
part only, so the loader can name them without an import circle (and core stays unaware of
them).

`load_config` reads a file; `parse_config` validates already-loaded data (no file reading).
Every problem found is collected in one pass and raised together as `ConfigErrors`; each
`ConfigError` names the file, the key path (`routes[0].split.go`) and what was expected.
See docs/config.md for every key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple, cast
from urllib.parse import urlsplit

import yaml

from cutover.alerts.config import AlertsConfig, parse_alerts
from cutover.canary.config import parse_canary
from cutover.compat.config import CompatConfig, parse_compat
from cutover.core import configkit as kit
from cutover.core.config_model import (
    DEFAULT_TOKEN_NAME,
    IDEMPOTENT_METHODS,
    AccessLogConfig,
    AdminConfig,
    Backend,
    Capture,
    HeaderMatch,
    HeadersConfig,
    HealthCheck,
    Limits,
    Match,
    Mirror,
    OutlierDetection,
    PoolConfig,
    Retry,
    Route,
    Sticky,
    Timeouts,
    TLSConfig,
)
from cutover.core.configkit import ConfigError, ConfigErrors
from cutover.core.http1 import config_path
from cutover.parity.config import ParityConfig, parse_capture, parse_parity
from cutover.publishing.config import PublishingConfig, parse_publishing
from cutover.routing.canary import CanaryConfig

__all__ = ["load_config", "parse_config"]

DEFAULT_LISTEN = ("0.0.0.0", 8080)
DEFAULT_STICKY_COOKIE = "cutover_id"


@dataclass(frozen=True, slots=True)
class CutoverConfig:
    source: str  # the file it came from, for messages
    listen: tuple[str, int]
    backends: MappingProxyType[str, Backend]
    routes: tuple[Route, ...]
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: Limits = field(default_factory=Limits)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    headers: HeadersConfig = field(default_factory=HeadersConfig)
    workers: int = 1
    # Plain proxied requests take the lean httptools path (proxy.fastpath); false: all aiohttp.
    fast_path: bool = True
    storage: str | None = None  # sqlite:///… or postgresql://…; None: .cutover/state.db
    redis: str | None = None
    # Feature sections, each parsed by the parser beside its feature; None: absent.
    canary: CanaryConfig | None = None
    compat: CompatConfig | None = None
    alerts: AlertsConfig | None = None
    publishing: PublishingConfig | None = None
    parity: ParityConfig | None = None

    def summary(self) -> str:
        """One line for `cutover check-config`."""
        routes = ", ".join(
            f"{r.name} ({'/'.join(f'{b} {w}' for b, w in r.split)})" for r in self.routes
        )
        line = (
            f"{self.source}: ok — listen {self.listen[0]}:{self.listen[1]}, "
            f"{len(self.backends)} backends, {len(self.routes)} routes: {routes}"
        )
        sections = self.section_summaries()
        return f"{line}; {'; '.join(sections)}" if sections else line

    def section_summaries(self) -> list[str]:
        """What each feature section present says, so the operator sees it was validated."""
        out: list[str] = []
        if self.canary is not None:
            c = self.canary
            steps = f", steps {'/'.join(map(str, c.steps))}" if c.steps else ""
            out.append(f"canary {c.candidate} against {c.baseline}{steps}")
        if self.compat is not None:
            c = self.compat
            profile = f" (profile {c.profile})" if c.profile else ""
            out.append(f"compat {len(c.rules)} rules{profile}")
        if self.alerts is not None:
            a = self.alerts
            paths = ", ".join(p.path for p in a.paths)
            out.append(
                f"alerts on {paths}, classification {a.classification.engine}, "
                f"enrichment {a.enrichment_mode}"
            )
        if self.publishing is not None:
            p = self.publishing
            kube = ", kubernetes discovery" if p.kubernetes is not None else ""
            out.append(f"publishing {len(p.targets)} targets{kube}, mode {p.mode}")
        if self.parity is not None:
            mirrored = sum(1 for r in self.routes if r.mirror is not None)
            out.append(f"parity {len(self.parity.endpoints)} endpoints, {mirrored} mirrored routes")
        return out


def _route_path(ctx: kit.Ctx, value: object, path: str) -> str:
    """A route's `path` or `path_prefix`, in the form the request's normalized path is compared
    with (`config_path`: `/caf%C3%A9` for `/café`, `/api/a` for `/api/%61`)."""
    return config_path(kit.url_path(ctx, value, path))


# ---------------------------------------------------------------------------------------------
# Sections

_TOP_KEYS = (
    "listen",
    "workers",
    "fast_path",
    "admin",
    "limits",
    "access_log",
    "headers",
    "backends",
    "routes",
    "storage",
    "redis",
    "canary",
    "compat",
    "alerts",
    "publishing",
    "parity",
)


def _admin(ctx: kit.Ctx, value: object, path: str) -> AdminConfig:
    if kit.is_off(value):
        return AdminConfig(listen=None)
    if value is True:
        return AdminConfig()
    m = kit.section(ctx, value, path, ("listen", "token", "tokens"))
    listen = kit.field(ctx, m, "listen", path, kit.optional_address, AdminConfig().listen)
    token = kit.field(ctx, m, "token", path, kit.secret, None)
    tokens = kit.field(ctx, m, "tokens", path, _named_tokens, {})
    tpath, npath = kit.join(path, "token"), kit.join(path, "tokens")
    if token is not None:
        if DEFAULT_TOKEN_NAME in tokens:
            ctx.add(
                kit.join(npath, DEFAULT_TOKEN_NAME),
                f"a name other than {DEFAULT_TOKEN_NAME!r}: it is the name of {tpath}",
            )
        for name, secret in tokens.items():
            if secret == token:
                ctx.add(
                    kit.join(npath, name),
                    f"a token different from {tpath}'s: two names sharing one token could not "
                    "be told apart in the audit log",
                )
    unset = token is None and not tokens and not ctx.failed(tpath, npath)
    if listen and unset and not kit.is_loopback(listen[0]):
        ctx.add(
            tpath,
            f"a token (or named tokens under {npath}): without one the admin API may only "
            f"listen on loopback, not {listen[0]}",
        )
    return AdminConfig(listen=listen, token=token, tokens=MappingProxyType(tokens))


MIN_NAMED_TOKEN = 16  # characters


def _named_tokens(ctx: kit.Ctx, value: object, path: str) -> dict[str, str]:
    """`admin.tokens: {alice: "${ALICE_TOKEN}", ...}`: name -> token. Problems never show a
    token: only its name (the path) and what was expected."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        kind = kit.shown(value) if isinstance(value, list | Mapping) else kit.NOTHING
        ctx.fail(path, 'a mapping of token name to token, e.g. {alice: "${ALICE_TOKEN}"}', kind)
    out: dict[str, str] = {}
    owner: dict[str, str] = {}  # token -> the first name that has it
    bad = False
    for name, token in value.items():
        kpath = kit.join(path, name)
        if not isinstance(name, str) or not kit.NAME_RE.fullmatch(name):
            ctx.add(kpath, "a token name made of letters, digits, '_', '.', '-'")
            bad = True
            continue
        if token is kit.BAD:  # its ${...} failed; already reported
            bad = True
            continue
        if token is None or token == "":
            ctx.add(kpath, f"a token of at least {MIN_NAMED_TOKEN} characters (it is empty)")
        elif not isinstance(token, str):
            ctx.add(kpath, f"a token string of at least {MIN_NAMED_TOKEN} characters (quote it)")
        elif kit.CONTROL.search(token):
            ctx.add(kpath, "a token without spaces or control characters")
        elif len(token) < MIN_NAMED_TOKEN:
            ctx.add(kpath, f"a token of at least {MIN_NAMED_TOKEN} characters (it is shorter)")
        elif token in owner:
            ctx.add(
                kpath,
                f"a token different from {owner[token]}'s: two names sharing one token could "
                "not be told apart in the audit log",
            )
        else:
            owner[token] = name
            out[name] = str(token)
            continue
        bad = True
    if bad:
        raise kit.Invalid
    return out


_LIMIT_KEYS = (
    "max_body",
    "max_header_size",
    "max_headers",
    "header_timeout",
    "keepalive_timeout",
    "max_concurrency",
    "retry_after",
    "drain_timeout",
)


def _limits(ctx: kit.Ctx, value: object, path: str) -> Limits:
    m = kit.section(ctx, value, path, _LIMIT_KEYS)
    d = Limits()
    return Limits(
        max_body=kit.field(ctx, m, "max_body", path, kit.size(), d.max_body),
        max_header_size=kit.field(ctx, m, "max_header_size", path, kit.size(), d.max_header_size),
        max_headers=kit.field(ctx, m, "max_headers", path, kit.integer(1), d.max_headers),
        header_timeout=kit.field(ctx, m, "header_timeout", path, kit.duration(), d.header_timeout),
        keepalive_timeout=kit.field(
            ctx, m, "keepalive_timeout", path, kit.duration(zero=True), d.keepalive_timeout
        ),
        max_concurrency=kit.field(
            ctx, m, "max_concurrency", path, kit.integer(1), d.max_concurrency
        ),
        retry_after=kit.field(ctx, m, "retry_after", path, _whole_seconds, d.retry_after),
        drain_timeout=kit.field(
            ctx, m, "drain_timeout", path, kit.duration(zero=True), d.drain_timeout
        ),
    )


def _whole_seconds(ctx: kit.Ctx, value: object, path: str) -> int:
    """A duration >= 0 rounded up to whole seconds (for Retry-After)."""
    return math.ceil(kit.duration(zero=True)(ctx, value, path))


def _access_log(ctx: kit.Ctx, value: object, path: str) -> AccessLogConfig:
    if value is True:
        return AccessLogConfig()
    if kit.is_off(value):
        return AccessLogConfig(enabled=False)
    if isinstance(value, str):
        return AccessLogConfig(path=_log_path(ctx, value, path))
    m = kit.section(ctx, value, path, ("enabled", "path"))
    return AccessLogConfig(
        enabled=kit.field(ctx, m, "enabled", path, kit.boolean, True),
        path=kit.field(ctx, m, "path", path, _log_path, None),
    )


def _log_path(ctx: kit.Ctx, value: object, path: str) -> str | None:
    """A file path; null, `-` or `stdout` mean standard output."""
    if value is None or (isinstance(value, str) and value in {"-", "stdout"}):
        return None
    return kit.string(ctx, value, path, "a file path, or stdout")


def _headers(ctx: kit.Ctx, value: object, path: str) -> HeadersConfig:
    m = kit.section(ctx, value, path, ("request_id", "backend", "override", "trusted_proxies"))
    d = HeadersConfig()
    return HeadersConfig(
        request_id=kit.field(ctx, m, "request_id", path, kit.header_name, d.request_id),
        backend=kit.field(ctx, m, "backend", path, kit.optional_header_name, d.backend),
        override=kit.field(ctx, m, "override", path, kit.optional_header_name, d.override),
        trusted_proxies=kit.field(ctx, m, "trusted_proxies", path, _networks, ()),
    )


def _network(
    ctx: kit.Ctx, value: object, path: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cast(str, value), strict=False)
    except (ValueError, TypeError):
        ctx.fail(path, "an IP address or CIDR network such as 10.0.0.0/8", value)


def _networks(
    ctx: kit.Ctx, value: object, path: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.fail(path, "a list of IP addresses or CIDR networks", value)
    return tuple(kit.items(ctx, value, path, _network))


# --- backends

_BACKEND_KEYS = ("url", "host_header", "health", "outlier", "tls", "pool")


class _Url(NamedTuple):
    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    base_path: str


def _backend_url(ctx: kit.Ctx, value: object, path: str) -> _Url:
    expected = "an http:// or https:// URL such as http://host:8080"
    text = kit.string(ctx, value, path, expected)
    if kit.CONTROL.search(text):
        ctx.fail(path, f"{expected}, without spaces", text)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        ctx.fail(path, f"{expected} ({exc})", text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        ctx.fail(path, "a URL with scheme http or https", text)
    if parts.username is not None or parts.password is not None:
        ctx.fail(path, "a URL without user:password@ (credentials do not belong here)", text)
    if not parts.hostname or not kit.valid_host(parts.hostname):
        ctx.fail(path, f"{expected} (with a valid host)", text)
    if parts.query or parts.fragment or "?" in text or "#" in text:
        ctx.fail(path, "a URL without ?query or #fragment", text)
    if port == 0:
        ctx.fail(path, "a URL with a port from 1 to 65535", text)
    port = port or (443 if scheme == "https" else 80)
    literal_scheme = cast(Literal["http", "https"], scheme)
    return _Url(text.rstrip("/"), literal_scheme, parts.hostname, port, parts.path.rstrip("/"))


def _host_header(ctx: kit.Ctx, value: object, path: str) -> str:
    """`backend`, `pass`, or a literal host[:port]."""
    expected = "backend, pass, or a host[:port] to send as Host"
    text = kit.string(ctx, value, path, expected)
    if text in ("backend", "pass"):
        return text
    m = re.fullmatch(r"\[([^\]]+)\](?::\d{1,5})?|([^:\[\]]+)(?::\d{1,5})?", text)
    host = m and (m.group(1) or m.group(2))
    if not host or not kit.valid_host(host):
        ctx.fail(path, expected, value)
    return text


def _status_range(ctx: kit.Ctx, value: object, path: str) -> tuple[int, int]:
    expected = 'a status or an inclusive range of statuses, such as "200" or "200-399"'
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    m = re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?", text) if isinstance(text, str) else None
    if m is None:
        ctx.fail(path, expected, value)
    lo = int(m.group(1))
    hi = int(m.group(2) or lo)
    if not 100 <= lo <= hi <= 599:
        ctx.fail(path, f"{expected}, within 100-599 and low <= high", value)
    return lo, hi


def _health(ctx: kit.Ctx, value: object, path: str) -> HealthCheck | None:
    if kit.is_off(value):
        return None
    if value is True:
        return HealthCheck()
    keys = ("path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold")
    m = kit.section(ctx, value, path, (*keys, "expected_status"))
    d = HealthCheck()
    health = HealthCheck(
        path=kit.field(ctx, m, "path", path, kit.url_path, d.path),
        interval=kit.field(ctx, m, "interval", path, kit.duration(), d.interval),
        timeout=kit.field(ctx, m, "timeout", path, kit.duration(), d.timeout),
        healthy_threshold=kit.field(
            ctx, m, "healthy_threshold", path, kit.integer(1), d.healthy_threshold
        ),
        unhealthy_threshold=kit.field(
            ctx, m, "unhealthy_threshold", path, kit.integer(1), d.unhealthy_threshold
        ),
        expected_statuses=kit.field(
            ctx, m, "expected_status", path, _status_range, d.expected_statuses
        ),
    )
    ipath, tpath = kit.join(path, "interval"), kit.join(path, "timeout")
    if health.timeout >= health.interval and not ctx.failed(ipath, tpath):
        got = m.get("timeout", kit.Shown(f"the default {kit.fmt_seconds(d.timeout)}"))
        ctx.add(tpath, f"a timeout shorter than interval ({kit.fmt_seconds(health.interval)})", got)
    return health


def _outlier(ctx: kit.Ctx, value: object, path: str) -> OutlierDetection:
    keys = (
        "consecutive_failures",
        "base_ejection",
        "max_ejection",
        "max_ejection_percent",
        "decay_interval",
    )
    m = kit.section(ctx, value, path, keys)
    d = OutlierDetection()
    out = OutlierDetection(
        consecutive_failures=kit.field(
            ctx, m, "consecutive_failures", path, kit.integer(1), d.consecutive_failures
        ),
        base_ejection=kit.field(ctx, m, "base_ejection", path, kit.duration(), d.base_ejection),
        max_ejection=kit.field(ctx, m, "max_ejection", path, kit.duration(), d.max_ejection),
        max_ejection_percent=kit.field(
            ctx, m, "max_ejection_percent", path, kit.integer(0, 100), d.max_ejection_percent
        ),
        decay_interval=kit.field(ctx, m, "decay_interval", path, kit.duration(), d.decay_interval),
    )
    bpath, mpath = kit.join(path, "base_ejection"), kit.join(path, "max_ejection")
    if out.max_ejection < out.base_ejection and not ctx.failed(bpath, mpath):
        expected = f"a duration >= base_ejection ({kit.fmt_seconds(out.base_ejection)})"
        ctx.add(mpath, expected, m.get("max_ejection", kit.Shown("the default 300s")))
    return out


def _tls(ctx: kit.Ctx, value: object, path: str) -> TLSConfig | None:
    if kit.is_off(value):
        return None
    if value is True:
        return TLSConfig()
    keys = ("ca_file", "cert_file", "key_file", "server_name", "verify")
    m = kit.section(ctx, value, path, keys)
    for have, need in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if have in m and need not in m:
            ctx.add(kit.join(path, need), f"a {need} together with {have}")
    return TLSConfig(
        ca_file=kit.field(ctx, m, "ca_file", path, kit.file, None),
        cert_file=kit.field(ctx, m, "cert_file", path, kit.file, None),
        key_file=kit.field(ctx, m, "key_file", path, kit.file, None),
        server_name=kit.field(ctx, m, "server_name", path, _server_name, None),
        verify=kit.field(ctx, m, "verify", path, kit.boolean, True),
    )


def _server_name(ctx: kit.Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not kit.valid_host(value):
        ctx.fail(path, "a host name", value)
    return str(value)


def _pool(ctx: kit.Ctx, value: object, path: str) -> PoolConfig:
    m = kit.section(ctx, value, path, ("max_connections", "keepalive_timeout"))
    d = PoolConfig()
    return PoolConfig(
        max_connections=kit.field(
            ctx, m, "max_connections", path, kit.integer(1), d.max_connections
        ),
        keepalive_timeout=kit.field(
            ctx, m, "keepalive_timeout", path, kit.duration(), d.keepalive_timeout
        ),
    )


def _backend(ctx: kit.Ctx, name: str, value: object, path: str) -> Backend:
    """One backend; a bare string is its URL."""
    if isinstance(value, str):
        value = {"url": value}
    m = kit.section(ctx, value, path, _BACKEND_KEYS)
    kit.require(ctx, m, "url", path, "an http:// or https:// URL")
    url = kit.field(ctx, m, "url", path, _backend_url, None)
    tls_value = m.get("tls")
    if url is not None and url.scheme == "http" and "tls" in m and not kit.is_off(tls_value):
        ctx.add(kit.join(path, "tls"), "no tls settings for an http:// URL (use https://)")
    d = Backend(name, "", "http", "", 0, "")
    health = kit.field(ctx, m, "health", path, _health, d.health)
    outlier = kit.field(ctx, m, "outlier", path, _outlier, d.outlier)
    tls = kit.field(ctx, m, "tls", path, _tls, None)
    pool = kit.field(ctx, m, "pool", path, _pool, d.pool)
    host_header = kit.field(ctx, m, "host_header", path, _host_header, d.host_header)
    if url is None:
        raise kit.Invalid
    return Backend(
        name=name,
        url=url.url,
        scheme=url.scheme,
        host=url.host,
        port=url.port,
        base_path=url.base_path,
        host_header=host_header,
        health=health,
        outlier=outlier,
        tls=tls,
        pool=pool,
    )


def _backends(ctx: kit.Ctx, value: object, path: str) -> dict[str, Backend]:
    if not isinstance(value, Mapping) or not value:
        ctx.fail(path, "a mapping of backend name to backend (at least one)", value)
    ctx.backend_names = tuple(str(k) for k in value)
    out: dict[str, Backend] = {}
    for key, spec in value.items():
        bpath = kit.join(path, key)
        try:
            name = kit.name("backend")(ctx, key, bpath)
            out[name] = kit.run(ctx, lambda c, v, p, n=name: _backend(c, n, v, p), spec, bpath)
        except kit.Invalid:
            continue
    return out


# --- routes

_ROUTE_KEYS = (
    "name",
    "match",
    "split",
    "sticky",
    "fallback",
    "timeout",
    "connect_timeout",
    "per_try_timeout",
    "retry",
    "mirror",
    "max_body",
    "capture",
)


def _header_match(ctx: kit.Ctx, name: str, value: object, path: str) -> HeaderMatch:
    """`name: "exact"` or `name: {value | regex, present}`."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return HeaderMatch(name=name, value=str(value))
    if not isinstance(value, Mapping):
        ctx.fail(path, "a header value string, or a mapping {value | regex, present}", value)
    m = kit.section(ctx, value, path, ("value", "regex", "present"))
    if "value" in m and "regex" in m:
        ctx.add(kit.join(path, "regex"), "at most one of value and regex")
    exact = kit.field(ctx, m, "value", path, _header_value, None)
    regex = kit.field(ctx, m, "regex", path, kit.regex, None)
    present = kit.field(ctx, m, "present", path, kit.boolean, True)
    if not present and (exact is not None or regex is not None):
        ctx.add(kit.join(path, "present"), "present: true when value or regex is given", False)
    return HeaderMatch(name=name, value=exact, regex=regex, present=present)


def _header_value(ctx: kit.Ctx, value: object, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return kit.string(ctx, value, path, "a header value string")


def _header_matches(ctx: kit.Ctx, value: object, path: str) -> tuple[HeaderMatch, ...]:
    if not isinstance(value, Mapping):
        ctx.fail(path, "a mapping of header name to condition", value)
    out: list[HeaderMatch] = []
    seen: set[str] = set()
    bad = False
    for key, spec in value.items():
        hpath = kit.join(path, key)
        try:
            name = kit.header_name(ctx, key, hpath).lower()
            if name in seen:
                ctx.fail(hpath, "each header once (names are case-insensitive)", key)
            seen.add(name)
            out.append(kit.run(ctx, lambda c, v, p, n=name: _header_match(c, n, v, p), spec, hpath))
        except kit.Invalid:
            bad = True
    if bad:
        raise kit.Invalid
    return tuple(out)


def _match(ctx: kit.Ctx, value: object, path: str) -> Match:
    kinds = ("path_prefix", "path", "path_regex")
    m = kit.section(ctx, value, path, (*kinds, "methods", "headers"))
    given = [k for k in kinds if k in m]
    for extra in given[1:]:
        ctx.add(
            kit.join(path, extra), f"at most one of {', '.join(kinds)} (already has {given[0]})"
        )
    return Match(
        path_prefix=kit.field(ctx, m, "path_prefix", path, _route_path, None if given else "/"),
        path=kit.field(ctx, m, "path", path, _route_path, None),
        path_regex=kit.field(ctx, m, "path_regex", path, kit.regex, None),
        methods=kit.field(ctx, m, "methods", path, kit.methods(empty=False), None),
        headers=kit.field(ctx, m, "headers", path, _header_matches, ()),
    )


def _split(ctx: kit.Ctx, value: object, path: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping) or not value:
        ctx.fail(path, "a mapping of backend name to weight, e.g. {go: 90, python: 10}", value)
    out: list[tuple[str, int]] = []
    bad = False
    for key, weight in value.items():
        wpath = kit.join(path, key)
        try:
            name = kit.known_backend(ctx, key, wpath)
            out.append((name, kit.run(ctx, kit.integer(0, 100), weight, wpath)))
        except kit.Invalid:
            bad = True
    if bad:
        raise kit.Invalid
    total = sum(w for _, w in out)
    if total != 100:
        parts = " + ".join(str(w) for _, w in out)
        ctx.fail(path, "weights that sum to exactly 100", kit.Shown(f"{parts} = {total}"))
    return tuple(out)


def _sticky(ctx: kit.Ctx, value: object, path: str) -> Sticky | None:
    """none, cookie, client_ip, or {header: N}, {cookie: N, ttl, secure}, {client_ip: true}."""
    expected = "none, cookie, client_ip, {header: NAME}, {cookie: NAME} or {client_ip: true}"
    if kit.is_off(value):
        return None
    if isinstance(value, str):
        if value == "cookie":
            return Sticky(kind="cookie", name=DEFAULT_STICKY_COOKIE)
        if value == "client_ip":
            return Sticky(kind="client_ip")
        ctx.fail(path, expected, value)
    m = kit.section(ctx, value, path, ("header", "cookie", "client_ip", "ttl", "secure"))
    kinds = [k for k in ("header", "cookie", "client_ip") if k in m]
    if len(kinds) != 1:
        ctx.fail(path, "exactly one of the keys header, cookie, client_ip", kit.Shown(str(kinds)))
    kind = kinds[0]
    if kind != "cookie":
        for extra in ("ttl", "secure"):
            if extra in m:
                ctx.add(kit.join(path, extra), f"{extra} only with a sticky cookie")
    if kind == "header":
        header = kit.run(ctx, kit.header_name, m["header"], kit.join(path, kind))
        return Sticky(kind="header", name=header.lower())
    if kind == "client_ip":
        if m["client_ip"] is not True:
            ctx.fail(kit.join(path, kind), "true", m["client_ip"])
        return Sticky(kind="client_ip")
    d = Sticky(kind="cookie")
    return Sticky(
        kind="cookie",
        name=kit.run(ctx, _cookie_name, m["cookie"], kit.join(path, kind)),
        cookie_ttl=kit.field(ctx, m, "ttl", path, kit.duration(), d.cookie_ttl),
        cookie_secure=kit.field(ctx, m, "secure", path, kit.boolean, d.cookie_secure),
    )


def _cookie_name(ctx: kit.Ctx, value: object, path: str) -> str:
    if value is True:
        return DEFAULT_STICKY_COOKIE
    if not isinstance(value, str) or not kit.TOKEN.fullmatch(value):
        ctx.fail(path, "a cookie name (letters, digits and !#$%&'*+-.^_`|~)", value)
    return str(value)


def _fallback(ctx: kit.Ctx, value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.fail(path, "a list of backend names", value)
    names = kit.items(ctx, value, path, kit.known_backend)
    for i, name in enumerate(names):
        if name in names[:i]:
            ctx.add(f"{path}[{i}]", "each backend once", name)
    return tuple(names)


def _retry_parser(d: Retry) -> kit.Parser[Retry]:
    """The `retry` block; `d` holds the defaults (attempts depends on the fallback list)."""

    def parse(ctx: kit.Ctx, value: object, path: str) -> Retry:
        return _retry(ctx, value, path, d)

    return parse


def _retry(ctx: kit.Ctx, value: object, path: str, d: Retry) -> Retry:
    m = kit.section(ctx, value, path, ("attempts", "methods", "on_status", "buffer", "budget"))
    percent, floor = kit.field(ctx, m, "budget", path, _budget, (d.budget_percent, d.budget_min))
    return Retry(
        attempts=kit.field(ctx, m, "attempts", path, kit.integer(0), d.attempts),
        methods=kit.field(ctx, m, "methods", path, kit.methods(empty=True), d.methods),
        on_status=kit.field(ctx, m, "on_status", path, kit.statuses, d.on_status),
        buffer=kit.field(ctx, m, "buffer", path, kit.size(zero=True), d.buffer),
        budget_percent=percent,
        budget_min=floor,
    )


def _budget(ctx: kit.Ctx, value: object, path: str) -> tuple[float, int]:
    m = kit.section(ctx, value, path, ("percent", "min"))
    d = Retry()
    return (
        kit.field(ctx, m, "percent", path, kit.number(0, 100), d.budget_percent),
        kit.field(ctx, m, "min", path, kit.integer(0), d.budget_min),
    )


def _mirror(ctx: kit.Ctx, value: object, path: str) -> Mirror | None:
    if kit.is_off(value):
        return None
    m = kit.section(ctx, value, path, ("to", "percent", "methods"))
    ok = kit.require(ctx, m, "to", path, "a backend name")
    ok = kit.require(ctx, m, "percent", path, "a percentage > 0 and <= 100") and ok
    to = kit.field(ctx, m, "to", path, kit.known_backend, None)
    percent = kit.field(ctx, m, "percent", path, kit.number(0, 100, lo_open=True), None)
    methods = kit.field(ctx, m, "methods", path, kit.methods(empty=False), IDEMPOTENT_METHODS)
    if not ok or to is None or percent is None:
        raise kit.Invalid
    return Mirror(to=to, percent=percent, methods=methods)


def _capture(ctx: kit.Ctx, value: object, path: str) -> Capture | None:
    """A route's `capture:`, parsed by the parity package that reads the files it writes."""
    if kit.is_off(value):
        return None
    return parse_capture(ctx, value, path)


def _timeouts(ctx: kit.Ctx, m: Mapping[str, object], path: str) -> Timeouts:
    d = Timeouts()
    t = Timeouts(
        connect=kit.field(ctx, m, "connect_timeout", path, kit.duration(), d.connect),
        total=kit.field(ctx, m, "timeout", path, kit.duration(), d.total),
        per_try=kit.field(ctx, m, "per_try_timeout", path, kit.optional(kit.duration()), d.per_try),
    )
    tpath, ppath = kit.join(path, "timeout"), kit.join(path, "per_try_timeout")
    if t.per_try is not None and t.per_try > t.total and not ctx.failed(tpath, ppath):
        expected = f"a duration <= timeout ({kit.fmt_seconds(t.total)})"
        ctx.add(ppath, expected, m["per_try_timeout"])
    return t


def _route(ctx: kit.Ctx, value: object, path: str, index: int) -> Route:
    m = kit.section(ctx, value, path, _ROUTE_KEYS)
    ok = kit.require(ctx, m, "name", path, "a route name")
    ok = kit.require(ctx, m, "split", path, "a split such as {go: 90, python: 10}") and ok
    name = kit.field(ctx, m, "name", path, kit.name("route"), None)
    if name is not None:
        if name in ctx.route_names:
            first = ctx.route_names[name]
            ctx.add(kit.join(path, "name"), f"a unique route name (routes[{first}] has it)", name)
        else:
            ctx.route_names[name] = index
    match = kit.field(ctx, m, "match", path, _match, Match(path_prefix="/"))
    split = kit.field(ctx, m, "split", path, _split, None)
    fallback = kit.field(ctx, m, "fallback", path, _fallback, ())
    retry_default = Retry(attempts=max(1, len(fallback)))
    route = Route(
        name=name or "",
        match=match,
        split=split or (),
        sticky=kit.field(ctx, m, "sticky", path, _sticky, None),
        fallback=fallback,
        timeouts=_timeouts(ctx, m, path),
        retry=kit.field(ctx, m, "retry", path, _retry_parser(retry_default), retry_default),
        mirror=kit.field(ctx, m, "mirror", path, _mirror, None),
        max_body=kit.field(ctx, m, "max_body", path, kit.optional(kit.size()), None),
        capture=kit.field(ctx, m, "capture", path, _capture, None),
    )
    if not ok or name is None or split is None:
        raise kit.Invalid
    return route


def _routes(ctx: kit.Ctx, value: object, path: str) -> tuple[Route, ...]:
    if not isinstance(value, list) or not value:
        ctx.fail(path, "a non-empty list of routes", value)
    out: list[Route] = []
    for i, item in enumerate(value):
        try:
            out.append(kit.run(ctx, lambda c, v, p, i=i: _route(c, v, p, i), item, f"{path}[{i}]"))
        except kit.Invalid:
            continue
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Entry points


def _parse(ctx: kit.Ctx, data: object, env: Mapping[str, str]) -> CutoverConfig:
    if data is None:
        ctx.fail("", "a mapping of settings (the file is empty)")
    data = kit.interpolate(ctx, data, "", env)
    m = kit.section(ctx, data, "", _TOP_KEYS)
    ok = kit.require(ctx, m, "backends", "", "a mapping of backend name to backend")
    ok = kit.require(ctx, m, "routes", "", "a non-empty list of routes") and ok
    listen = kit.field(ctx, m, "listen", "", kit.address, DEFAULT_LISTEN)
    workers = kit.field(ctx, m, "workers", "", kit.integer(1), 1)
    fast_path = kit.field(ctx, m, "fast_path", "", kit.boolean, True)
    admin = kit.field(ctx, m, "admin", "", _admin, AdminConfig())
    limits = kit.field(ctx, m, "limits", "", _limits, Limits())
    access_log = kit.field(ctx, m, "access_log", "", _access_log, AccessLogConfig())
    headers = kit.field(ctx, m, "headers", "", _headers, HeadersConfig())
    backends = kit.field(ctx, m, "backends", "", _backends, {})
    routes = kit.field(ctx, m, "routes", "", _routes, ())
    ctx.routes = tuple(routes)
    storage = kit.field(ctx, m, "storage", "", kit.optional(_STORAGE), None)
    redis = kit.field(ctx, m, "redis", "", kit.optional(_REDIS), None)
    canary = kit.field(ctx, m, "canary", "", parse_canary, None)
    compat = kit.field(ctx, m, "compat", "", parse_compat, None)
    alerts = kit.field(ctx, m, "alerts", "", parse_alerts, None)
    publishing = kit.field(ctx, m, "publishing", "", parse_publishing, None)
    parity = kit.field(ctx, m, "parity", "", parse_parity, None)
    if not ok or ctx.errors:
        raise kit.Invalid
    return CutoverConfig(
        source=ctx.source,
        listen=listen,
        backends=MappingProxyType(backends),
        routes=routes,
        admin=admin,
        limits=limits,
        access_log=access_log,
        headers=headers,
        workers=workers,
        fast_path=fast_path,
        storage=storage,
        redis=redis,
        canary=canary,
        compat=compat,
        alerts=alerts,
        publishing=publishing,
        parity=parity,
    )


_STORAGE = kit.url(("sqlite://", "postgresql://", "postgres://"), "a storage")
_REDIS = kit.url(("redis://", "rediss://"), "a Redis")


def _check(ctx: kit.Ctx, data: object, env: Mapping[str, str] | None) -> CutoverConfig:
    """Run the parse; raise `ConfigErrors` with everything found (and nothing else)."""
    try:
        config = _parse(ctx, data, os.environ if env is None else env)
    except kit.Invalid:
        config = None
    except Exception as exc:  # outside any key's parser (see `kit.run`); a bug, still reported
        ctx.add("", f"a config cutover can check ({kit.UNFORESEEN}: {type(exc).__name__})")
        config = None
    if ctx.errors or config is None:
        raise ConfigErrors(ctx.errors)
    return config


def parse_config(
    data: object, source: str, *, env: Mapping[str, str] | None = None
) -> CutoverConfig:
    """Validate loaded YAML data; `env` (default `os.environ`) feeds `${...}`.

    Relative TLS file paths are taken from the folder of `source`.
    """
    ctx = kit.Ctx(source, os.path.dirname(source))
    return _check(ctx, data, env)


def load_config(path: str | os.PathLike[str]) -> CutoverConfig:
    """Read, interpolate and validate one YAML config file; raise `ConfigErrors` on any problem."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigErrors([ConfigError(source, "", f"a readable UTF-8 file ({reason})")]) from None
    try:
        loader = kit.Loader(text)
        try:
            data = loader.load()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigErrors([kit.yaml_error(source, text, exc)]) from None
    ctx = kit.Ctx(source, os.path.dirname(os.path.abspath(source)))
    for key, line in loader.duplicates:
        ctx.add(f"line {line}", f"each key once in a mapping ({key!r} is repeated)")
    return _check(ctx, data, None)
