"""Publishing targets: what one is, how it is validated, how it is shown without its secrets.

A `TargetSpec` comes from the config (`source: static`) or from a Kubernetes secret
(`source: kubernetes`); both are validated by the same rules (`check_target`). A secret that
cannot become a target is kept as an `InvalidTarget` so the API can show why. The
`TargetRegistry` holds the current set; static targets win a name clash.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

TargetType = Literal["pagerduty", "slack", "rootly", "webhook"]
TARGET_TYPES: tuple[str, ...] = ("pagerduty", "slack", "rootly", "webhook")
# Which formats each type may use (spec digest §3.6); the first is the default.
FORMATS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "pagerduty": ("pagerduty",),
    "slack": ("slack",),
    "rootly": ("rootly",),
    "webhook": ("alertmanager", "webhook"),
}
FORMATS: tuple[str, ...] = ("alertmanager", "webhook", "pagerduty", "slack", "rootly")
DEFAULT_URLS: dict[str, str] = {
    "pagerduty": "https://events.pagerduty.com/v2/enqueue",
    "rootly": "https://api.rootly.com",
}
SLACK_API_URL = "https://slack.com/api"
DEFAULT_TIMEOUT = 10.0
MAX_NAME = 63
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_HEADER = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `rate` tokens per second, up to `burst` at once."""

    rate: float
    burst: int

    def describe(self) -> str:
        per_min = self.rate * 60
        if self.rate != 1 and abs(per_min - round(per_min)) < 1e-9:
            return f"{round(per_min)}/min (burst {self.burst})"
        return f"{self.rate:g}/s (burst {self.burst})"


# The per-type defaults of the originals (spec digest §6.2).
DEFAULT_RATE_LIMITS: dict[str, RateLimit | None] = {
    "pagerduty": RateLimit(2.0, 10),  # 120/min
    "slack": RateLimit(1.0, 1),  # 1/s
    "rootly": RateLimit(1.0, 10),  # 60/min
    "webhook": None,
}


@dataclass(frozen=True, slots=True)
class TargetSpec:
    name: str
    type: str  # TargetType
    url: str
    format: str
    enabled: bool = True
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (may hold credentials)
    routing_key: str | None = None  # PagerDuty
    token: str | None = None  # Rootly API token
    bot_token: str | None = None  # Slack: with `channel`, post through the Web API
    channel: str | None = None
    api_url: str = SLACK_API_URL  # Slack Web API base
    resolve: str = "update"  # Slack: "update" the first message or reply in "thread"
    kind: str = "alert"  # Rootly: "alert" or "incident"
    rate_limit: RateLimit | None = None
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int | None = None  # None: delivery.concurrency
    source: str = "static"  # "static" | "kubernetes"
    origin: str = ""  # "config" or "<namespace>/<secret>"

    def secrets(self) -> tuple[str, ...]:
        """Every credential this target carries (for redaction)."""
        found = [s for s in (self.routing_key, self.token, self.bot_token) if s]
        found.extend(v for _, v in self.headers if v)
        for header_value in list(found):
            _, _, rest = header_value.partition(" ")
            if rest:
                found.append(rest)  # the bare token of "Bearer <token>"
        parts = urlsplit(self.url)
        if parts.password:
            found.append(parts.password)
        if self.type == "slack" and "/services/" in parts.path:
            found.append(parts.path.split("/services/", 1)[1])
        for _, _, value in (p.partition("=") for p in parts.query.split("&") if p):
            if value:
                found.append(value)
        return tuple(s for s in found if len(s) >= 4)

    def public(self) -> dict[str, object]:
        """The target as the API shows it: no credential."""
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "url": redact_url(self.url, self.type),
            "enabled": self.enabled,
            "source": self.source,
            "origin": self.origin,
            "rate_limit": self.rate_limit.describe() if self.rate_limit else None,
            "timeout": self.timeout,
            "headers": sorted(name for name, _ in self.headers),
        }


@dataclass(frozen=True, slots=True)
class InvalidTarget:
    """A secret that could not become a target: shown in the API, never delivered to."""

    name: str
    origin: str  # "<namespace>/<secret>"
    field: str  # the data key at fault ("" for the whole secret)
    reason: str
    source: str = "kubernetes"

    def public(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": None,
            "format": None,
            "url": None,
            "enabled": False,
            "source": self.source,
            "origin": self.origin,
            "invalid_reason": f"{self.field}: {self.reason}" if self.field else self.reason,
        }


def redact_url(url: str, target_type: str = "webhook") -> str:
    """The URL without credentials: no userinfo, query values hidden, Slack hook path hidden."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "<invalid URL>"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    path = parts.path
    if "/services/" in path:
        path = path.split("/services/", 1)[0] + "/services/***"
    query = "&".join(p.partition("=")[0] + "=***" for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, path, query, ""))


class Redactor:
    """Replaces every known credential in a text (error messages, answers of targets)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return re.sub(r"(://[^/@\s]*):[^/@\s]*@", r"\1:***@", text)


# -- validation shared by the config and the secrets -----------------------------------------


class TargetError(ValueError):
    """A target field is wrong: `field` names it, the message says what was expected."""

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: {expected}")
        self.field = field
        self.expected = expected


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise TargetError(field, f"a name of 1-{MAX_NAME} letters, digits, '-', '_', '.'")
    return name


def check_url(url: object, field: str = "url") -> str:
    if not isinstance(url, str) or _CONTROL.search(url) or " " in url:
        raise TargetError(field, "an http:// or https:// URL")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise TargetError(field, "an http:// or https:// URL with a valid host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(field, "an http:// or https:// URL")
    return url.rstrip("/") if parts.path.endswith("/") and parts.path != "/" else url


def check_header(name: object, value: object, field: str) -> tuple[str, str]:
    if not isinstance(name, str) or not _HEADER.fullmatch(name):
        raise TargetError(field, "a header name (letters, digits and !#$%&'*+-.^_`|~)")
    if not isinstance(value, str) or not value or _CONTROL.search(value):
        raise TargetError(field, "a non-empty header value without control characters")
    return name, value


def default_format(target_type: str) -> str:
    return FORMATS_BY_TYPE[target_type][0]


def check_type_format(target_type: object, fmt: object | None) -> tuple[str, str]:
    if not isinstance(target_type, str) or target_type not in FORMATS_BY_TYPE:
        raise TargetError("type", f"one of {', '.join(TARGET_TYPES)}")
    ttype = str(target_type)
    if fmt is None or fmt == "":
        return ttype, default_format(ttype)
    if fmt not in FORMATS_BY_TYPE[ttype]:
        allowed = " or ".join(FORMATS_BY_TYPE[ttype])
        raise TargetError("format", f"{allowed} for a {ttype} target")
    return ttype, str(fmt)


def complete(spec: TargetSpec) -> TargetSpec:
    """Check what a target of its type needs (PagerDuty's routing key, Slack's URL or bot)."""
    if spec.type == "pagerduty" and not spec.routing_key:
        raise TargetError("routing_key", "the PagerDuty integration's routing key")
    if spec.type == "slack" and spec.bot_token and not spec.channel:
        raise TargetError("channel", "a channel id for the Slack bot token")
    parts = urlsplit(spec.url)
    if (parts.username or parts.password) and any(
        name.lower() == "authorization" for name, _ in spec.headers
    ):
        raise TargetError("headers", "no Authorization header when the URL carries user:password")
    if spec.resolve not in ("update", "thread"):
        raise TargetError("resolve", "update or thread")
    if spec.kind not in ("alert", "incident"):
        raise TargetError("kind", "alert or incident")
    return spec


# -- the current set ---------------------------------------------------------------------------


@dataclass(slots=True)
class TargetRegistry:
    """Static targets plus the ones discovery found; listeners hear of every change."""

    static: dict[str, TargetSpec] = field(default_factory=dict)
    discovered: dict[str, TargetSpec] = field(default_factory=dict)
    invalid: list[InvalidTarget] = field(default_factory=list)
    listeners: list[Callable[[], None]] = field(default_factory=list)

    def set_static(self, targets: Iterable[TargetSpec]) -> None:
        self.static = {t.name: t for t in targets}
        self._changed()

    def set_discovered(
        self, targets: Iterable[TargetSpec], invalid: Iterable[InvalidTarget]
    ) -> None:
        found: dict[str, TargetSpec] = {}
        bad = list(invalid)
        for target in targets:
            if target.name in self.static:
                bad.append(
                    InvalidTarget(target.name, target.origin, "name", "a static target has it")
                )
            elif target.name in found:
                bad.append(
                    InvalidTarget(
                        target.name,
                        target.origin,
                        "name",
                        f"already used by {found[target.name].origin}",
                    )
                )
            else:
                found[target.name] = target
        self.discovered = found
        self.invalid = bad
        self._changed()

    def _changed(self) -> None:
        for callback in list(self.listeners):
            callback()

    def get(self, name: str) -> TargetSpec | None:
        return self.static.get(name) or self.discovered.get(name)

    def all(self) -> list[TargetSpec]:
        return [*self.static.values(), *self.discovered.values()]

    def enabled(self) -> list[TargetSpec]:
        return [t for t in self.all() if t.enabled]

    def secrets(self) -> list[str]:
        return [s for t in self.all() for s in t.secrets()]
