"""The validated, frozen shape of the gateway's configuration keys.

`proxy.config.load_config` turns a YAML file into a `CutoverConfig` made of these parts (and of
each feature's own section); everything here is already parsed (durations in seconds, sizes in
bytes, regexes compiled, header names lowercased), so the hot path never re-parses anything.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DEFAULT_RETRY_STATUSES = frozenset({502, 503, 504})

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health check of one backend (`backends.<name>.health`)."""

    path: str = "/healthz"
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2  # consecutive successes to become healthy again
    unhealthy_threshold: int = 3  # consecutive failures to become unhealthy
    expected_statuses: tuple[int, int] = (200, 399)  # inclusive range that counts as healthy


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Passive ejection after consecutive failures (`backends.<name>.outlier`), Envoy's defaults."""

    consecutive_failures: int = 5
    base_ejection: float = 30.0  # an ejection lasts multiplier * base, capped at max_ejection
    max_ejection: float = 300.0
    max_ejection_percent: int = 50  # never eject more than this share of a route's backends
    decay_interval: float = 10.0  # each interval available lowers the multiplier by one


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS towards an https:// backend (`backends.<name>.tls`)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # SNI and certificate name; default: the URL's host
    verify: bool = True


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Upstream connection pool (`backends.<name>.pool`)."""

    max_connections: int = 512
    keepalive_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    url: str  # as written, without a trailing slash
    scheme: Literal["http", "https"]
    host: str
    port: int
    base_path: str  # "" or "/prefix" (no trailing slash), prepended to every forwarded path
    # Host header sent upstream: "backend" = the backend's host[:port], "pass" = the client's,
    # any other string = that literal value.
    host_header: str = "backend"
    health: HealthCheck | None = field(default_factory=HealthCheck)  # None: no active checks
    outlier: OutlierDetection = field(default_factory=OutlierDetection)
    tls: TLSConfig | None = None
    pool: PoolConfig = field(default_factory=PoolConfig)

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def upstream_host(self) -> str | None:
        """The Host sent to this backend (`host_header`): its authority, a literal value, or
        None to pass the client's own."""
        mode = self.host_header
        if mode == "pass":
            return None
        return self.authority if mode == "backend" else mode


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lowercased
    value: str | None = None  # exact value
    regex: re.Pattern[str] | None = None
    present: bool = True  # False: the header must be absent


@dataclass(frozen=True, slots=True)
class Match:
    path_prefix: str | None = None
    path: str | None = None  # exact path
    path_regex: re.Pattern[str] | None = None
    methods: frozenset[str] | None = None  # upper-case; None = any
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Sticky:
    kind: Literal["header", "cookie", "client_ip"]
    name: str = ""  # header name (lowercased) or cookie name; "" for client_ip
    cookie_ttl: float = 30 * 24 * 3600.0
    cookie_secure: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """What may be replayed on the next backend of the attempt list (DESIGN.md, Decisions)."""

    attempts: int = 1  # extra attempts after the first one
    methods: frozenset[str] = IDEMPOTENT_METHODS  # replayable after a possibly-delivered failure
    on_status: frozenset[int] = DEFAULT_RETRY_STATUSES
    buffer: int = 1 * MiB  # largest request body kept for a replay
    budget_percent: float = 20.0  # in-flight replays allowed: max(budget_min, percent of in-flight)
    budget_min: int = 3


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 2.0
    total: float = 10.0  # the route's `timeout`: bounds all attempts together
    per_try: float | None = None  # bounds one attempt; None = only `total`


@dataclass(frozen=True, slots=True)
class Mirror:
    """A shadow copy of sampled requests, sent after the client has its answer (parity)."""

    to: str
    percent: float
    methods: frozenset[str] = IDEMPOTENT_METHODS  # others are not mirrored (POST, PATCH, ...)


DEFAULT_CAPTURE_REDACT = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"}
)


@dataclass(frozen=True, slots=True)
class Capture:
    """Sampled live requests written to a JSONL corpus for `cutover parity run`."""

    file: str  # absolute path
    percent: float = 100.0
    redact_headers: frozenset[str] = DEFAULT_CAPTURE_REDACT  # lower-case names
    redact_fields: tuple[str, ...] = ()  # JSON body path patterns (parity.diff syntax)
    max_body: int = 64 * KiB  # larger bodies are not captured


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: Match
    split: tuple[tuple[str, int], ...]  # (backend, weight) in the order written; weights sum to 100
    sticky: Sticky | None = None
    fallback: tuple[str, ...] = ()
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: Retry = field(default_factory=Retry)
    mirror: Mirror | None = None
    max_body: int | None = None  # overrides limits.max_body for this route
    capture: Capture | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_body: int = 10 * MiB  # request body; 413 past it
    max_header_size: int = 8190  # one header line; 431 past it
    max_headers: int = 100  # 431 past it
    header_timeout: float = 10.0  # whole request head must arrive within this
    keepalive_timeout: float = 75.0  # idle client connection
    max_concurrency: int = 4096  # in-flight requests per worker; 503 + Retry-After past it
    retry_after: int = 1  # seconds, in the 503 above
    drain_timeout: float = 25.0  # SIGTERM: wait this long for in-flight requests


DEFAULT_TOKEN_NAME = "admin"  # the name `admin.token` goes by in the audit log


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: tuple[str, int] | None = ("127.0.0.1", 9901)  # None: admin API off
    # `admin.token`: the shared token, named DEFAULT_TOKEN_NAME. Secrets stay out of repr().
    token: str | None = field(default=None, repr=False)
    # `admin.tokens`: name -> token; the name is who the audit log says made a change.
    tokens: MappingProxyType[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )

    def credentials(self) -> tuple[tuple[str, str], ...]:
        """(name, token) of every token that opens the admin API; empty: no token needed."""
        shared = ((DEFAULT_TOKEN_NAME, self.token),) if self.token is not None else ()
        return shared + tuple(sorted(self.tokens.items()))


@dataclass(frozen=True, slots=True)
class AccessLogConfig:
    enabled: bool = True
    path: str | None = None  # None: stdout


@dataclass(frozen=True, slots=True)
class HeadersConfig:
    request_id: str = "X-Request-ID"
    backend: str | None = "X-Cutover-Backend"  # tells which backend served; None = off
    override: str | None = None  # lets testers force a backend; None = off (default)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
