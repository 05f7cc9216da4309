"""The one config loader: YAML file -> validated, frozen `CutoverConfig`.

`load_config` reads a file; `parse_config` validates already-loaded data (no file reading).
Every problem found is collected in one pass and raised together as `ConfigErrors`; each
`ConfigError` names the file, the key path (`routes[0].split.go`) and what was expected.
See docs/config.md for every key.
"""

from __future__ import annotations

import difflib
import importlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import yaml

from proxy.config_model import (
    DEFAULT_TOKEN_NAME,
    IDEMPOTENT_METHODS,
    AccessLogConfig,
    AdminConfig,
    Backend,
    Capture,
    CutoverConfig,
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
from proxy.http1 import config_path

__all__ = ["ConfigError", "ConfigErrors", "format_errors", "load_config", "parse_config"]

T = TypeVar("T")

DEFAULT_LISTEN = ("0.0.0.0", 8080)
DEFAULT_STICKY_COOKIE = "cutover_id"
# Feature sections: each is parsed by a function in the feature's own module,
# `parse(ctx: Ctx, value: object, path: str) -> object`, using the parsing kit below
# (`Ctx`, `section`, `field`, `duration`, ...). A section whose module is not present in
# this build is refused, so nobody believes it is active.
SECTION_PARSERS: dict[str, str] = {
    "canary": "proxy.canary_config:parse_canary",
    "compat": "compat.config:parse_compat",
    "alerts": "proxy.alerts_config:parse_alerts",
    "publishing": "publishing.config:parse_publishing",
    "parity": "parity.config:parse_parity",
}
UNSUPPORTED_SECTIONS = tuple(SECTION_PARSERS)


# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem: where it is (file, key path) and what was expected there."""

    file: str
    path: str  # "routes[0].split.go"; "" for the whole file; "line 3, column 5" for YAML syntax
    expected: str
    got: object = None  # None: nothing worth showing

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        tail = "" if self.got is None else f", got {self.got!r}"
        expected = " ".join(self.expected.split())
        return f"{where}: expected {expected}{tail}"


class ConfigErrors(Exception):
    """Every problem of one config file."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors: list[ConfigError] = list(errors)
        super().__init__(format_errors(self))


def format_errors(errs: ConfigErrors) -> str:
    """One line per problem, for the CLI."""
    return "\n".join(str(e) for e in errs.errors)


@dataclass(frozen=True, slots=True)
class _Shown:
    """A `got` printed as is (no quotes): `null`, `a mapping`, `<redacted>`."""

    text: str

    def __repr__(self) -> str:
        return self.text


_REDACTED = _Shown("<redacted>")
_NOTHING = object()  # "no `got` to show", distinct from a YAML null
_SECRET_WORDS = frozenset({"token", "password", "passwd", "secret"})


def _is_secret(path: str) -> bool:
    """Whether the last key of `path` names a secret (token, password, secret, *_key)."""
    last = path.rsplit(".", 1)[-1].lower()
    words = [w for w in re.split(r"[^a-z0-9]+", last) if w]
    return bool(words) and (words[-1] == "key" or any(w in _SECRET_WORDS for w in words))


def _redact_url(text: str) -> str:
    """`scheme://user:pass@host` -> `scheme://user:<redacted>@host`."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:<redacted>@", text)


def _shown(value: object) -> object:
    """How a bad value appears in a message: scalars as written, containers by kind."""
    if value is None:
        return _Shown("null")
    if isinstance(value, Mapping):
        return _Shown("a mapping" if value else "{}")
    if isinstance(value, list):
        return _Shown("a list" if value else "[]")
    if isinstance(value, str):
        return _redact_url(str(value))
    return value


class _Invalid(Exception):
    """Raised by a parser after it has recorded its error; the caller falls back to a default."""


class _Env(str):
    """A string that came out of `${...}` interpolation: may stand for an int, bool or number."""


class _Bad:
    """Marks a value whose interpolation failed (already reported)."""


_BAD = _Bad()


class _Ctx:
    """Collects errors while one config is parsed."""

    def __init__(self, source: str, base_dir: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.errors: list[ConfigError] = []
        self.backend_names: tuple[str, ...] = ()
        self.route_names: dict[str, int] = {}
        self.routes: tuple[Route, ...] = ()  # the valid routes, once `routes` is parsed

    def add(self, path: str, expected: str, got: object = _NOTHING) -> None:
        """Record one problem; values of secret keys are redacted."""
        if got is _NOTHING:
            shown: object = None
        elif _is_secret(path):
            shown = _REDACTED
        else:
            shown = _shown(got)
        self.errors.append(ConfigError(self.source, path, expected, shown))

    def fail(self, path: str, expected: str, got: object = _NOTHING) -> NoReturn:
        """Record one problem and abandon the value being parsed."""
        self.add(path, expected, got)
        raise _Invalid

    def failed(self, *paths: str) -> bool:
        """Whether any error was recorded at or below one of `paths`."""
        return any(
            e.path == p or e.path.startswith((p + ".", p + "[")) for e in self.errors for p in paths
        )


# ---------------------------------------------------------------------------------------------
# Paths, sections and fields

Parser = Callable[[_Ctx, object, str], T]
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: object) -> str:
    """`a.b` + `c` -> `a.b.c`; keys with other characters are quoted: `a['x.y']`."""
    text = str(key)
    if not _PLAIN_KEY.fullmatch(text):
        return f"{path}[{text!r}]"
    return f"{path}.{text}" if path else text


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _section(ctx: _Ctx, value: object, path: str, keys: Sequence[str]) -> dict[str, object]:
    """A mapping with only `keys`; null counts as empty. Unknown keys are reported and dropped."""
    if value is _BAD:
        raise _Invalid
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.fail(path or "<top level>", f"a mapping with keys {', '.join(keys)}", value)
    known: dict[str, object] = {}
    for key, item in value.items():
        kpath = _join(path, key)
        if not isinstance(key, str):
            ctx.add(kpath, "a string key (quote keys such as on/off/yes/no/1)", key)
        elif key in keys:
            known[key] = item
        else:
            hint = _did_you_mean(key, keys) or f" (one of: {', '.join(keys)})"
            ctx.add(kpath, f"a known key{hint}")
    return known


def _run(ctx: _Ctx, parse: Parser[T], value: object, path: str) -> T:
    if value is _BAD:
        raise _Invalid
    return parse(ctx, value, path)


def _field(
    ctx: _Ctx, m: Mapping[str, object], key: str, path: str, parse: Parser[T], default: T
) -> T:
    """Parse `m[key]` when present; on a missing key or an error, `default`."""
    if key not in m:
        return default
    try:
        return _run(ctx, parse, m[key], _join(path, key))
    except _Invalid:
        return default


def _require(ctx: _Ctx, m: Mapping[str, object], key: str, path: str, expected: str) -> bool:
    """Report a missing required key; True when present."""
    if key in m:
        return True
    ctx.add(_join(path, key), f"{expected} (this key is required)")
    return False


def _items(ctx: _Ctx, items: Sequence[object], path: str, parse: Parser[T]) -> list[T]:
    """Parse every item (reporting each bad one), then fail if any was bad."""
    out: list[T] = []
    bad = False
    for i, item in enumerate(items):
        try:
            out.append(_run(ctx, parse, item, f"{path}[{i}]"))
        except _Invalid:
            bad = True
    if bad:
        raise _Invalid
    return out


def _is_off(value: object) -> bool:
    """null, false, or the strings off/false/no/none."""
    if value is None or value is False:
        return True
    return isinstance(value, str) and value.strip().lower() in {"off", "false", "no", "none"}


# ---------------------------------------------------------------------------------------------
# Scalars

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)")
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?")
_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def _str(ctx: _Ctx, value: object, path: str, expected: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value:
        ctx.fail(path, expected, value)
    return str(value)


def _bool(ctx: _Ctx, value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, _Env) and value.lower() in {"true", "false", "yes", "no", "on", "off"}:
        return value.lower() in {"true", "yes", "on"}
    ctx.fail(path, "true or false", value)


def _int_of(value: object) -> int | None:
    """An int from YAML (never a bool) or from an interpolated string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, _Env) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _int(lo: int, hi: int | None = None) -> Parser[int]:
    """An integer in [lo, hi]."""
    expected = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"

    def parse(ctx: _Ctx, value: object, path: str) -> int:
        n = _int_of(value)
        if n is None or n < lo or (hi is not None and n > hi):
            ctx.fail(path, expected, value)
        return n

    return parse


def _float_of(value: object) -> float | None:
    """A number from YAML (never a bool) or from an interpolated string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (
        isinstance(value, _Env) and _NUMBER.fullmatch(value.strip())
    ):
        return float(value)
    return None


def _number(lo: float, hi: float, *, lo_open: bool = False) -> Parser[float]:
    """A number in [lo, hi] (or (lo, hi] with `lo_open`)."""
    expected = f"a number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}"

    def parse(ctx: _Ctx, value: object, path: str) -> float:
        x = _float_of(value)
        if x is None or not math.isfinite(x) or x > hi or x < lo or (lo_open and x == lo):
            ctx.fail(path, expected, value)
        return x

    return parse


def _seconds_of(value: object) -> float | None:
    """`250ms`, `5s`, `2m`, `1h`, `30d`, `1h30m`, or a bare number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if _NUMBER.fullmatch(text):
        return float(text)
    if _DURATION.fullmatch(text):
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return None


def _duration(*, zero: bool = False) -> Parser[float]:
    """A duration in seconds, > 0 (or >= 0 with `zero`)."""
    bound = ">= 0" if zero else "> 0"
    expected = f"a duration {bound} (e.g. 250ms, 5s, 2m, 1h, 30d; a bare number is seconds)"

    def parse(ctx: _Ctx, value: object, path: str) -> float:
        s = _seconds_of(value)
        if s is None or s < 0 or (s == 0 and not zero):
            ctx.fail(path, expected, value)
        return s

    return parse


def _bytes_of(value: object) -> int | None:
    """`512`, `8KiB`, `10MiB`, `1GiB`, `10MB` (decimal), `8k`/`10m`/`1g` (binary)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    m = _SIZE.fullmatch(value.strip().lower())
    if m is None:
        return None
    number, prefix, binary, b = m.groups()
    if binary and not prefix:
        return None
    base = 1024 if binary or not b else 1000
    return int(float(number) * base ** _SIZE_POWERS[prefix])


def _size(*, zero: bool = False) -> Parser[int]:
    """A size in bytes, > 0 (or >= 0 with `zero`)."""
    bound = ">= 0" if zero else "> 0"
    expected = f"a size {bound} (e.g. 512, 8KiB, 10MiB, 1GiB, 10MB)"

    def parse(ctx: _Ctx, value: object, path: str) -> int:
        n = _bytes_of(value)
        if n is None or n < 0 or (n == 0 and not zero):
            ctx.fail(path, expected, value)
        return n

    return parse


def _fmt_seconds(s: float) -> str:
    return f"{s * 1000:g}ms" if s < 1 else f"{s:g}s"


def _valid_host(host: str) -> bool:
    """A DNS name or an IP address (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", host):
        return False  # looks like IPv4 but is not one
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def _address(ctx: _Ctx, value: object, path: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; port 0 picks a free port."""
    expected = "host:port such as 0.0.0.0:8080 or [::1]:8080"
    if not isinstance(value, str):
        ctx.fail(path, expected, value)
    m = re.fullmatch(r"\[([^\]]*)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if m is None:
        ctx.fail(path, expected, value)
    v6, v6_port, host, port_text = m.groups()
    if v6 is not None:
        host, port_text = v6, v6_port
        if ":" not in v6 or not _valid_host(v6):
            ctx.fail(path, "an IPv6 address inside [...]", value)
    elif not _valid_host(host):
        ctx.fail(path, expected, value)
    port = int(port_text)
    if port > 65535:
        ctx.fail(path, "a port from 0 to 65535", value)
    return host, port


def _optional_address(ctx: _Ctx, value: object, path: str) -> tuple[str, int] | None:
    return None if _is_off(value) else _address(ctx, value, path)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _header_name(ctx: _Ctx, value: object, path: str) -> str:
    expected = "a header name (letters, digits and !#$%&'*+-.^_`|~)"
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        ctx.fail(path, expected, value)
    return str(value)


def _optional_header_name(ctx: _Ctx, value: object, path: str) -> str | None:
    return None if _is_off(value) else _header_name(ctx, value, path)


def _method(ctx: _Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        ctx.fail(path, "an HTTP method such as GET", value)
    return value.upper()


def _methods(*, empty: bool) -> Parser[frozenset[str]]:
    """A list of HTTP methods, upper-cased."""

    def parse(ctx: _Ctx, value: object, path: str) -> frozenset[str]:
        if not isinstance(value, list) or (not value and not empty):
            ctx.fail(path, "a list of HTTP methods such as [GET, HEAD]", value)
        return frozenset(_items(ctx, value, path, _method))

    return parse


def _status(ctx: _Ctx, value: object, path: str) -> int:
    return _int(100, 599)(ctx, value, path)


def _statuses(ctx: _Ctx, value: object, path: str) -> frozenset[int]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of HTTP status codes (100-599)", value)
    return frozenset(_items(ctx, value, path, _status))


def _url_path(ctx: _Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or _CONTROL.search(value):
        ctx.fail(path, "a path starting with '/'", value)
    return str(value)


def _route_path(ctx: _Ctx, value: object, path: str) -> str:
    """A route's `path` or `path_prefix`, in the form the request's normalized path is compared
    with (`proxy.http1.config_path`: `/caf%C3%A9` for `/café`, `/api/a` for `/api/%61`)."""
    return config_path(_url_path(ctx, value, path))


def _regex(ctx: _Ctx, value: object, path: str) -> re.Pattern[str]:
    text = _str(ctx, value, path, "a regular expression string")
    try:
        return re.compile(text)
    except re.error as exc:
        ctx.fail(path, f"a valid regular expression ({exc})", value)


def _file(ctx: _Ctx, value: object, path: str) -> str:
    """An existing file; relative paths are taken from the config file's folder."""
    text = _str(ctx, value, path, "a file path")
    resolved = os.path.abspath(os.path.join(ctx.base_dir, os.path.expanduser(text)))
    if not os.path.isfile(resolved):
        ctx.fail(path, "an existing file", resolved)
    return resolved


def _secret_token(ctx: _Ctx, value: object, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or _CONTROL.search(value):
        ctx.fail(path, "a non-empty string without spaces (or null for no token)", value)
    return str(value)


def _name(what: str) -> Parser[str]:
    def parse(ctx: _Ctx, value: object, path: str) -> str:
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            ctx.fail(path, f"a {what} name made of letters, digits, '_', '.', '-'", value)
        return str(value)

    return parse


def _known_backend(ctx: _Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or value not in ctx.backend_names:
        hint = _did_you_mean(value, ctx.backend_names) if isinstance(value, str) else ""
        ctx.fail(path, f"a backend defined under backends{hint}", value)
    return str(value)


def _url(scheme_list: Sequence[str], what: str) -> Parser[str]:
    """A URL string with one of the given schemes (e.g. `redis://`)."""

    expected = f"{what} URL starting with {' or '.join(scheme_list)}"

    def parse(ctx: _Ctx, value: object, path: str) -> str:
        if not isinstance(value, str) or _CONTROL.search(value):
            ctx.fail(path, expected, value)
        if not value.startswith(tuple(scheme_list)):
            ctx.fail(path, expected, value)
        return str(value)

    return parse


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
    *UNSUPPORTED_SECTIONS,
)


def _admin(ctx: _Ctx, value: object, path: str) -> AdminConfig:
    if _is_off(value):
        return AdminConfig(listen=None)
    if value is True:
        return AdminConfig()
    m = _section(ctx, value, path, ("listen", "token", "tokens"))
    listen = _field(ctx, m, "listen", path, _optional_address, AdminConfig().listen)
    token = _field(ctx, m, "token", path, _secret_token, None)
    tokens = _field(ctx, m, "tokens", path, _named_tokens, {})
    tpath, npath = _join(path, "token"), _join(path, "tokens")
    if token is not None:
        if DEFAULT_TOKEN_NAME in tokens:
            ctx.add(
                _join(npath, DEFAULT_TOKEN_NAME),
                f"a name other than {DEFAULT_TOKEN_NAME!r}: it is the name of {tpath}",
            )
        for name, secret in tokens.items():
            if secret == token:
                ctx.add(
                    _join(npath, name),
                    f"a token different from {tpath}'s: two names sharing one token could not "
                    "be told apart in the audit log",
                )
    unset = token is None and not tokens and not ctx.failed(tpath, npath)
    if listen and unset and not _is_loopback(listen[0]):
        ctx.add(
            tpath,
            f"a token (or named tokens under {npath}): without one the admin API may only "
            f"listen on loopback, not {listen[0]}",
        )
    return AdminConfig(listen=listen, token=token, tokens=MappingProxyType(tokens))


MIN_NAMED_TOKEN = 16  # characters


def _named_tokens(ctx: _Ctx, value: object, path: str) -> dict[str, str]:
    """`admin.tokens: {alice: "${ALICE_TOKEN}", ...}`: name -> token. Problems never show a
    token: only its name (the path) and what was expected."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        kind = _shown(value) if isinstance(value, list | Mapping) else _NOTHING
        ctx.fail(path, 'a mapping of token name to token, e.g. {alice: "${ALICE_TOKEN}"}', kind)
    out: dict[str, str] = {}
    owner: dict[str, str] = {}  # token -> the first name that has it
    bad = False
    for name, token in value.items():
        kpath = _join(path, name)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            ctx.add(kpath, "a token name made of letters, digits, '_', '.', '-'")
            bad = True
            continue
        if token is _BAD:  # its ${...} failed; already reported
            bad = True
            continue
        if token is None or token == "":
            ctx.add(kpath, f"a token of at least {MIN_NAMED_TOKEN} characters (it is empty)")
        elif not isinstance(token, str):
            ctx.add(kpath, f"a token string of at least {MIN_NAMED_TOKEN} characters (quote it)")
        elif _CONTROL.search(token):
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
        raise _Invalid
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


def _limits(ctx: _Ctx, value: object, path: str) -> Limits:
    m = _section(ctx, value, path, _LIMIT_KEYS)
    d = Limits()
    return Limits(
        max_body=_field(ctx, m, "max_body", path, _size(), d.max_body),
        max_header_size=_field(ctx, m, "max_header_size", path, _size(), d.max_header_size),
        max_headers=_field(ctx, m, "max_headers", path, _int(1), d.max_headers),
        header_timeout=_field(ctx, m, "header_timeout", path, _duration(), d.header_timeout),
        keepalive_timeout=_field(
            ctx, m, "keepalive_timeout", path, _duration(zero=True), d.keepalive_timeout
        ),
        max_concurrency=_field(ctx, m, "max_concurrency", path, _int(1), d.max_concurrency),
        retry_after=_field(ctx, m, "retry_after", path, _whole_seconds, d.retry_after),
        drain_timeout=_field(ctx, m, "drain_timeout", path, _duration(zero=True), d.drain_timeout),
    )


def _whole_seconds(ctx: _Ctx, value: object, path: str) -> int:
    """A duration >= 0 rounded up to whole seconds (for Retry-After)."""
    return math.ceil(_duration(zero=True)(ctx, value, path))


def _access_log(ctx: _Ctx, value: object, path: str) -> AccessLogConfig:
    if value is True:
        return AccessLogConfig()
    if _is_off(value):
        return AccessLogConfig(enabled=False)
    if isinstance(value, str):
        return AccessLogConfig(path=_log_path(ctx, value, path))
    m = _section(ctx, value, path, ("enabled", "path"))
    return AccessLogConfig(
        enabled=_field(ctx, m, "enabled", path, _bool, True),
        path=_field(ctx, m, "path", path, _log_path, None),
    )


def _log_path(ctx: _Ctx, value: object, path: str) -> str | None:
    """A file path; null, `-` or `stdout` mean standard output."""
    if value is None or value in {"-", "stdout"}:
        return None
    return _str(ctx, value, path, "a file path, or stdout")


def _headers(ctx: _Ctx, value: object, path: str) -> HeadersConfig:
    m = _section(ctx, value, path, ("request_id", "backend", "override", "trusted_proxies"))
    d = HeadersConfig()
    return HeadersConfig(
        request_id=_field(ctx, m, "request_id", path, _header_name, d.request_id),
        backend=_field(ctx, m, "backend", path, _optional_header_name, d.backend),
        override=_field(ctx, m, "override", path, _optional_header_name, d.override),
        trusted_proxies=_field(ctx, m, "trusted_proxies", path, _networks, ()),
    )


def _network(ctx: _Ctx, value: object, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cast(str, value), strict=False)
    except (ValueError, TypeError):
        ctx.fail(path, "an IP address or CIDR network such as 10.0.0.0/8", value)


def _networks(
    ctx: _Ctx, value: object, path: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.fail(path, "a list of IP addresses or CIDR networks", value)
    return tuple(_items(ctx, value, path, _network))


# --- backends

_BACKEND_KEYS = ("url", "host_header", "health", "outlier", "tls", "pool")


class _Url(NamedTuple):
    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    base_path: str


def _backend_url(ctx: _Ctx, value: object, path: str) -> _Url:
    expected = "an http:// or https:// URL such as http://host:8080"
    text = _str(ctx, value, path, expected)
    if _CONTROL.search(text):
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
    if not parts.hostname or not _valid_host(parts.hostname):
        ctx.fail(path, f"{expected} (with a valid host)", text)
    if parts.query or parts.fragment or "?" in text or "#" in text:
        ctx.fail(path, "a URL without ?query or #fragment", text)
    if port == 0:
        ctx.fail(path, "a URL with a port from 1 to 65535", text)
    port = port or (443 if scheme == "https" else 80)
    literal_scheme = cast(Literal["http", "https"], scheme)
    return _Url(text.rstrip("/"), literal_scheme, parts.hostname, port, parts.path.rstrip("/"))


def _host_header(ctx: _Ctx, value: object, path: str) -> str:
    """`backend`, `pass`, or a literal host[:port]."""
    expected = "backend, pass, or a host[:port] to send as Host"
    text = _str(ctx, value, path, expected)
    if text in ("backend", "pass"):
        return text
    m = re.fullmatch(r"\[([^\]]+)\](?::\d{1,5})?|([^:\[\]]+)(?::\d{1,5})?", text)
    host = m and (m.group(1) or m.group(2))
    if not host or not _valid_host(host):
        ctx.fail(path, expected, value)
    return text


def _status_range(ctx: _Ctx, value: object, path: str) -> tuple[int, int]:
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


def _health(ctx: _Ctx, value: object, path: str) -> HealthCheck | None:
    if _is_off(value):
        return None
    if value is True:
        return HealthCheck()
    keys = ("path", "interval", "timeout", "healthy_threshold", "unhealthy_threshold")
    m = _section(ctx, value, path, (*keys, "expected_status"))
    d = HealthCheck()
    health = HealthCheck(
        path=_field(ctx, m, "path", path, _url_path, d.path),
        interval=_field(ctx, m, "interval", path, _duration(), d.interval),
        timeout=_field(ctx, m, "timeout", path, _duration(), d.timeout),
        healthy_threshold=_field(ctx, m, "healthy_threshold", path, _int(1), d.healthy_threshold),
        unhealthy_threshold=_field(
            ctx, m, "unhealthy_threshold", path, _int(1), d.unhealthy_threshold
        ),
        expected_statuses=_field(
            ctx, m, "expected_status", path, _status_range, d.expected_statuses
        ),
    )
    ipath, tpath = _join(path, "interval"), _join(path, "timeout")
    if health.timeout >= health.interval and not ctx.failed(ipath, tpath):
        got = m.get("timeout", _Shown(f"the default {_fmt_seconds(d.timeout)}"))
        ctx.add(tpath, f"a timeout shorter than interval ({_fmt_seconds(health.interval)})", got)
    return health


def _outlier(ctx: _Ctx, value: object, path: str) -> OutlierDetection:
    keys = (
        "consecutive_failures",
        "base_ejection",
        "max_ejection",
        "max_ejection_percent",
        "decay_interval",
    )
    m = _section(ctx, value, path, keys)
    d = OutlierDetection()
    out = OutlierDetection(
        consecutive_failures=_field(
            ctx, m, "consecutive_failures", path, _int(1), d.consecutive_failures
        ),
        base_ejection=_field(ctx, m, "base_ejection", path, _duration(), d.base_ejection),
        max_ejection=_field(ctx, m, "max_ejection", path, _duration(), d.max_ejection),
        max_ejection_percent=_field(
            ctx, m, "max_ejection_percent", path, _int(0, 100), d.max_ejection_percent
        ),
        decay_interval=_field(ctx, m, "decay_interval", path, _duration(), d.decay_interval),
    )
    bpath, mpath = _join(path, "base_ejection"), _join(path, "max_ejection")
    if out.max_ejection < out.base_ejection and not ctx.failed(bpath, mpath):
        expected = f"a duration >= base_ejection ({_fmt_seconds(out.base_ejection)})"
        ctx.add(mpath, expected, m.get("max_ejection", _Shown("the default 300s")))
    return out


def _tls(ctx: _Ctx, value: object, path: str) -> TLSConfig | None:
    if _is_off(value):
        return None
    if value is True:
        return TLSConfig()
    keys = ("ca_file", "cert_file", "key_file", "server_name", "verify")
    m = _section(ctx, value, path, keys)
    for have, need in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if have in m and need not in m:
            ctx.add(_join(path, need), f"a {need} together with {have}")
    return TLSConfig(
        ca_file=_field(ctx, m, "ca_file", path, _file, None),
        cert_file=_field(ctx, m, "cert_file", path, _file, None),
        key_file=_field(ctx, m, "key_file", path, _file, None),
        server_name=_field(ctx, m, "server_name", path, _server_name, None),
        verify=_field(ctx, m, "verify", path, _bool, True),
    )


def _server_name(ctx: _Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not _valid_host(value):
        ctx.fail(path, "a host name", value)
    return str(value)


def _pool(ctx: _Ctx, value: object, path: str) -> PoolConfig:
    m = _section(ctx, value, path, ("max_connections", "keepalive_timeout"))
    d = PoolConfig()
    return PoolConfig(
        max_connections=_field(ctx, m, "max_connections", path, _int(1), d.max_connections),
        keepalive_timeout=_field(
            ctx, m, "keepalive_timeout", path, _duration(), d.keepalive_timeout
        ),
    )


def _backend(ctx: _Ctx, name: str, value: object, path: str) -> Backend:
    """One backend; a bare string is its URL."""
    if isinstance(value, str):
        value = {"url": value}
    m = _section(ctx, value, path, _BACKEND_KEYS)
    _require(ctx, m, "url", path, "an http:// or https:// URL")
    url = _field(ctx, m, "url", path, _backend_url, None)
    tls_value = m.get("tls")
    if url is not None and url.scheme == "http" and "tls" in m and not _is_off(tls_value):
        ctx.add(_join(path, "tls"), "no tls settings for an http:// URL (use https://)")
    d = Backend(name, "", "http", "", 0, "")
    health = _field(ctx, m, "health", path, _health, d.health)
    outlier = _field(ctx, m, "outlier", path, _outlier, d.outlier)
    tls = _field(ctx, m, "tls", path, _tls, None)
    pool = _field(ctx, m, "pool", path, _pool, d.pool)
    host_header = _field(ctx, m, "host_header", path, _host_header, d.host_header)
    if url is None:
        raise _Invalid
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


def _backends(ctx: _Ctx, value: object, path: str) -> dict[str, Backend]:
    if not isinstance(value, Mapping) or not value:
        ctx.fail(path, "a mapping of backend name to backend (at least one)", value)
    ctx.backend_names = tuple(str(k) for k in value)
    out: dict[str, Backend] = {}
    for key, spec in value.items():
        bpath = _join(path, key)
        try:
            name = _name("backend")(ctx, key, bpath)
            out[name] = _run(ctx, lambda c, v, p, n=name: _backend(c, n, v, p), spec, bpath)
        except _Invalid:
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


def _header_match(ctx: _Ctx, name: str, value: object, path: str) -> HeaderMatch:
    """`name: "exact"` or `name: {value | regex, present}`."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return HeaderMatch(name=name, value=str(value))
    if not isinstance(value, Mapping):
        ctx.fail(path, "a header value string, or a mapping {value | regex, present}", value)
    m = _section(ctx, value, path, ("value", "regex", "present"))
    if "value" in m and "regex" in m:
        ctx.add(_join(path, "regex"), "at most one of value and regex")
    exact = _field(ctx, m, "value", path, _header_value, None)
    regex = _field(ctx, m, "regex", path, _regex, None)
    present = _field(ctx, m, "present", path, _bool, True)
    if not present and (exact is not None or regex is not None):
        ctx.add(_join(path, "present"), "present: true when value or regex is given", False)
    return HeaderMatch(name=name, value=exact, regex=regex, present=present)


def _header_value(ctx: _Ctx, value: object, path: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _str(ctx, value, path, "a header value string")


def _header_matches(ctx: _Ctx, value: object, path: str) -> tuple[HeaderMatch, ...]:
    if not isinstance(value, Mapping):
        ctx.fail(path, "a mapping of header name to condition", value)
    out: list[HeaderMatch] = []
    seen: set[str] = set()
    bad = False
    for key, spec in value.items():
        hpath = _join(path, key)
        try:
            name = _header_name(ctx, key, hpath).lower()
            if name in seen:
                ctx.fail(hpath, "each header once (names are case-insensitive)", key)
            seen.add(name)
            out.append(_run(ctx, lambda c, v, p, n=name: _header_match(c, n, v, p), spec, hpath))
        except _Invalid:
            bad = True
    if bad:
        raise _Invalid
    return tuple(out)


def _match(ctx: _Ctx, value: object, path: str) -> Match:
    kinds = ("path_prefix", "path", "path_regex")
    m = _section(ctx, value, path, (*kinds, "methods", "headers"))
    given = [k for k in kinds if k in m]
    for extra in given[1:]:
        ctx.add(_join(path, extra), f"at most one of {', '.join(kinds)} (already has {given[0]})")
    return Match(
        path_prefix=_field(ctx, m, "path_prefix", path, _route_path, None if given else "/"),
        path=_field(ctx, m, "path", path, _route_path, None),
        path_regex=_field(ctx, m, "path_regex", path, _regex, None),
        methods=_field(ctx, m, "methods", path, _methods(empty=False), None),
        headers=_field(ctx, m, "headers", path, _header_matches, ()),
    )


def _split(ctx: _Ctx, value: object, path: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, Mapping) or not value:
        ctx.fail(path, "a mapping of backend name to weight, e.g. {go: 90, python: 10}", value)
    out: list[tuple[str, int]] = []
    bad = False
    for key, weight in value.items():
        wpath = _join(path, key)
        try:
            name = _known_backend(ctx, key, wpath)
            out.append((name, _run(ctx, _int(0, 100), weight, wpath)))
        except _Invalid:
            bad = True
    if bad:
        raise _Invalid
    total = sum(w for _, w in out)
    if total != 100:
        parts = " + ".join(str(w) for _, w in out)
        ctx.fail(path, "weights that sum to exactly 100", _Shown(f"{parts} = {total}"))
    return tuple(out)


def _sticky(ctx: _Ctx, value: object, path: str) -> Sticky | None:
    """none, cookie, client_ip, or {header: N}, {cookie: N, ttl, secure}, {client_ip: true}."""
    expected = "none, cookie, client_ip, {header: NAME}, {cookie: NAME} or {client_ip: true}"
    if _is_off(value):
        return None
    if isinstance(value, str):
        if value == "cookie":
            return Sticky(kind="cookie", name=DEFAULT_STICKY_COOKIE)
        if value == "client_ip":
            return Sticky(kind="client_ip")
        ctx.fail(path, expected, value)
    m = _section(ctx, value, path, ("header", "cookie", "client_ip", "ttl", "secure"))
    kinds = [k for k in ("header", "cookie", "client_ip") if k in m]
    if len(kinds) != 1:
        ctx.fail(path, "exactly one of the keys header, cookie, client_ip", _Shown(str(kinds)))
    kind = kinds[0]
    if kind != "cookie":
        for extra in ("ttl", "secure"):
            if extra in m:
                ctx.add(_join(path, extra), f"{extra} only with a sticky cookie")
    if kind == "header":
        header = _run(ctx, _header_name, m["header"], _join(path, kind))
        return Sticky(kind="header", name=header.lower())
    if kind == "client_ip":
        if m["client_ip"] is not True:
            ctx.fail(_join(path, kind), "true", m["client_ip"])
        return Sticky(kind="client_ip")
    d = Sticky(kind="cookie")
    return Sticky(
        kind="cookie",
        name=_run(ctx, _cookie_name, m["cookie"], _join(path, kind)),
        cookie_ttl=_field(ctx, m, "ttl", path, _duration(), d.cookie_ttl),
        cookie_secure=_field(ctx, m, "secure", path, _bool, d.cookie_secure),
    )


def _cookie_name(ctx: _Ctx, value: object, path: str) -> str:
    if value is True:
        return DEFAULT_STICKY_COOKIE
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        ctx.fail(path, "a cookie name (letters, digits and !#$%&'*+-.^_`|~)", value)
    return str(value)


def _fallback(ctx: _Ctx, value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        ctx.fail(path, "a list of backend names", value)
    names = _items(ctx, value, path, _known_backend)
    for i, name in enumerate(names):
        if name in names[:i]:
            ctx.add(f"{path}[{i}]", "each backend once", name)
    return tuple(names)


def _retry_parser(d: Retry) -> Parser[Retry]:
    """The `retry` block; `d` holds the defaults (attempts depends on the fallback list)."""

    def parse(ctx: _Ctx, value: object, path: str) -> Retry:
        return _retry(ctx, value, path, d)

    return parse


def _retry(ctx: _Ctx, value: object, path: str, d: Retry) -> Retry:
    m = _section(ctx, value, path, ("attempts", "methods", "on_status", "buffer", "budget"))
    percent, floor = _field(ctx, m, "budget", path, _budget, (d.budget_percent, d.budget_min))
    return Retry(
        attempts=_field(ctx, m, "attempts", path, _int(0), d.attempts),
        methods=_field(ctx, m, "methods", path, _methods(empty=True), d.methods),
        on_status=_field(ctx, m, "on_status", path, _statuses, d.on_status),
        buffer=_field(ctx, m, "buffer", path, _size(zero=True), d.buffer),
        budget_percent=percent,
        budget_min=floor,
    )


def _budget(ctx: _Ctx, value: object, path: str) -> tuple[float, int]:
    m = _section(ctx, value, path, ("percent", "min"))
    d = Retry()
    return (
        _field(ctx, m, "percent", path, _number(0, 100), d.budget_percent),
        _field(ctx, m, "min", path, _int(0), d.budget_min),
    )


def _mirror(ctx: _Ctx, value: object, path: str) -> Mirror | None:
    if _is_off(value):
        return None
    m = _section(ctx, value, path, ("to", "percent", "methods"))
    ok = _require(ctx, m, "to", path, "a backend name")
    ok = _require(ctx, m, "percent", path, "a percentage > 0 and <= 100") and ok
    to = _field(ctx, m, "to", path, _known_backend, None)
    percent = _field(ctx, m, "percent", path, _number(0, 100, lo_open=True), None)
    methods = _field(ctx, m, "methods", path, _methods(empty=False), IDEMPOTENT_METHODS)
    if not ok or to is None or percent is None:
        raise _Invalid
    return Mirror(to=to, percent=percent, methods=methods)


def _capture(ctx: _Ctx, value: object, path: str) -> Capture | None:
    """A route's `capture:`, parsed by the parity package that reads the files it writes."""
    if _is_off(value):
        return None
    from parity.config import parse_capture

    return parse_capture(ctx, value, path)


def _optional(parse: Parser[T]) -> Parser[T | None]:
    def wrapped(ctx: _Ctx, value: object, path: str) -> T | None:
        return None if value is None else parse(ctx, value, path)

    return wrapped


def _timeouts(ctx: _Ctx, m: Mapping[str, object], path: str) -> Timeouts:
    d = Timeouts()
    t = Timeouts(
        connect=_field(ctx, m, "connect_timeout", path, _duration(), d.connect),
        total=_field(ctx, m, "timeout", path, _duration(), d.total),
        per_try=_field(ctx, m, "per_try_timeout", path, _optional(_duration()), d.per_try),
    )
    tpath, ppath = _join(path, "timeout"), _join(path, "per_try_timeout")
    if t.per_try is not None and t.per_try > t.total and not ctx.failed(tpath, ppath):
        expected = f"a duration <= timeout ({_fmt_seconds(t.total)})"
        ctx.add(ppath, expected, m["per_try_timeout"])
    return t


def _route(ctx: _Ctx, value: object, path: str, index: int) -> Route:
    m = _section(ctx, value, path, _ROUTE_KEYS)
    ok = _require(ctx, m, "name", path, "a route name")
    ok = _require(ctx, m, "split", path, "a split such as {go: 90, python: 10}") and ok
    name = _field(ctx, m, "name", path, _name("route"), None)
    if name is not None:
        if name in ctx.route_names:
            first = ctx.route_names[name]
            ctx.add(_join(path, "name"), f"a unique route name (routes[{first}] has it)", name)
        else:
            ctx.route_names[name] = index
    match = _field(ctx, m, "match", path, _match, Match(path_prefix="/"))
    split = _field(ctx, m, "split", path, _split, None)
    fallback = _field(ctx, m, "fallback", path, _fallback, ())
    retry_default = Retry(attempts=max(1, len(fallback)))
    route = Route(
        name=name or "",
        match=match,
        split=split or (),
        sticky=_field(ctx, m, "sticky", path, _sticky, None),
        fallback=fallback,
        timeouts=_timeouts(ctx, m, path),
        retry=_field(ctx, m, "retry", path, _retry_parser(retry_default), retry_default),
        mirror=_field(ctx, m, "mirror", path, _mirror, None),
        max_body=_field(ctx, m, "max_body", path, _optional(_size()), None),
        capture=_field(ctx, m, "capture", path, _capture, None),
    )
    if not ok or name is None or split is None:
        raise _Invalid
    return route


def _routes(ctx: _Ctx, value: object, path: str) -> tuple[Route, ...]:
    if not isinstance(value, list) or not value:
        ctx.fail(path, "a non-empty list of routes", value)
    out: list[Route] = []
    for i, item in enumerate(value):
        try:
            out.append(_run(ctx, lambda c, v, p, i=i: _route(c, v, p, i), item, f"{path}[{i}]"))
        except _Invalid:
            continue
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# ${ENV} interpolation

_REF = re.compile(r"\$(\$)?\{([^}]*)(\})?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(ctx: _Ctx, data: object, path: str, env: Mapping[str, str]) -> object:
    """Replace `${NAME}` / `${NAME:-default}` in every string scalar; `$${` is a literal `${`."""
    if isinstance(data, str):
        return _interpolate_str(ctx, data, path, env)
    if isinstance(data, Mapping):
        return {k: _interpolate_item(ctx, k, v, path, env) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(ctx, v, f"{path}[{i}]", env) for i, v in enumerate(data)]
    return data


def _interpolate_item(
    ctx: _Ctx, key: object, value: object, path: str, env: Mapping[str, str]
) -> object:
    """Interpolate one mapping value (feature sections included: their secrets come from env)."""
    return _interpolate(ctx, value, _join(path, key), env)


def _interpolate_str(ctx: _Ctx, text: str, path: str, env: Mapping[str, str]) -> object:
    """The interpolated string (`_Env`); None when it comes out empty; `_BAD` on an error."""
    if "${" not in text:
        return text
    problems: list[str] = []

    def substitute(m: re.Match[str]) -> str:
        escaped, body, closed = m.groups()
        if escaped:
            return m.group(0)[1:]
        name, sep, default = body.partition(":-")
        if closed is None or not _ENV_NAME.fullmatch(name):
            problems.append("a reference such as ${NAME} or ${NAME:-default}")
            return ""
        found = env.get(name)
        if found is None or (sep and found == ""):
            if not sep:
                problems.append(f"environment variable {name} to be set (or ${{{name}:-default}})")
            return default
        return found

    result = _REF.sub(substitute, text)
    if problems:
        ctx.add(path, "; ".join(problems), text)
        return _BAD
    return _Env(result) if result else None


# ---------------------------------------------------------------------------------------------
# Entry points


def _parse(ctx: _Ctx, data: object, env: Mapping[str, str]) -> CutoverConfig:
    if data is None:
        ctx.fail("", "a mapping of settings (the file is empty)")
    data = _interpolate(ctx, data, "", env)
    m = _section(ctx, data, "", _TOP_KEYS)
    ok = _require(ctx, m, "backends", "", "a mapping of backend name to backend")
    ok = _require(ctx, m, "routes", "", "a non-empty list of routes") and ok
    listen = _field(ctx, m, "listen", "", _address, DEFAULT_LISTEN)
    workers = _field(ctx, m, "workers", "", _int(1), 1)
    fast_path = _field(ctx, m, "fast_path", "", _bool, True)
    admin = _field(ctx, m, "admin", "", _admin, AdminConfig())
    limits = _field(ctx, m, "limits", "", _limits, Limits())
    access_log = _field(ctx, m, "access_log", "", _access_log, AccessLogConfig())
    headers = _field(ctx, m, "headers", "", _headers, HeadersConfig())
    backends = _field(ctx, m, "backends", "", _backends, {})
    routes = _field(ctx, m, "routes", "", _routes, ())
    ctx.routes = tuple(routes)
    storage = _field(ctx, m, "storage", "", _optional(_STORAGE), None)
    redis = _field(ctx, m, "redis", "", _optional(_REDIS), None)
    sections = {key: _feature_section(ctx, key, m[key]) for key in SECTION_PARSERS if key in m}
    if not ok or ctx.errors:
        raise _Invalid
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
        sections=MappingProxyType(sections),
    )


def _feature_section(ctx: _Ctx, key: str, value: object) -> object:
    """Parse a feature's section with the parser its module provides (after backends/routes)."""
    module_name, _, func = SECTION_PARSERS[key].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        ctx.add(key, f"no {key!r} section: it is not supported by this version of cutover")
        return None
    try:
        return _run(ctx, getattr(module, func), value, key)
    except _Invalid:
        return None


_STORAGE = _url(("sqlite://", "postgresql://", "postgres://"), "a storage")
_REDIS = _url(("redis://", "rediss://"), "a Redis")


def _check(ctx: _Ctx, data: object, env: Mapping[str, str] | None) -> CutoverConfig:
    """Run the parse; raise `ConfigErrors` with everything found."""
    try:
        config = _parse(ctx, data, os.environ if env is None else env)
    except _Invalid:
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
    ctx = _Ctx(source, os.path.dirname(source))
    return _check(ctx, data, env)


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also records duplicate mapping keys (PyYAML keeps the last)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml_error(source: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error as one line with its line number."""
    if isinstance(exc, yaml.reader.ReaderError):
        where = f"line {text.count(chr(10), 0, exc.position) + 1}"
        return ConfigError(source, where, f"valid YAML ({exc.reason}: #x{exc.character:04x})")
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return ConfigError(source, "", f"valid YAML ({problem})")
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else ""
    if "${" in line and ("{" in line.replace("${", "") or "[" in line):
        problem += "; quote values that use ${...} inside {...} or [...]"
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return ConfigError(source, where, f"valid YAML ({problem})")


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
        loader = _Loader(text)
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigErrors([_yaml_error(source, text, exc)]) from None
    ctx = _Ctx(source, os.path.dirname(os.path.abspath(source)))
    for key, line in loader.duplicates:
        ctx.add(f"line {line}", f"each key once in a mapping ({key!r} is repeated)")
    return _check(ctx, data, None)


# ---------------------------------------------------------------------------------------------
# The parsing kit for feature sections (see SECTION_PARSERS). Parsers take (ctx, value, path),
# record problems with `ctx.add(path, expected, got)` or `ctx.fail(...)` (which abandons the
# value), and return plain frozen dataclasses. `ctx.backend_names` lists the known backends,
# `ctx.route_names` the routes, `ctx.routes` the routes that parsed, `ctx.base_dir` the config
# file's folder.
Ctx = _Ctx
Invalid = _Invalid
section = _section
field = _field
require = _require
items = _items
optional = _optional
is_off = _is_off
string = _str
boolean = _bool
integer = _int
number = _number
duration = _duration
size = _size
known_backend = _known_backend
header_name = _header_name
methods = _methods
statuses = _statuses
regex = _regex
url = _url
file = _file
secret = _secret_token
join = _join
interpolate = _interpolate
