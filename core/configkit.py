"""The config kit: how a config file is checked, whoever's section it is.

Every parser takes `(ctx, value, path)` and returns a plain frozen value. A problem is recorded
with `ctx.add(path, expected, got)` (the file goes on) or `ctx.fail(...)` (the value being
parsed is abandoned: `Invalid` is raised and the caller falls back to a default). Everything
found in one pass is raised together as `ConfigErrors`; each `ConfigError` names the file, the
key path (`routes[0].split.go`) and what was expected, and never shows a secret.

`ctx.backend_names` lists the known backends, `ctx.route_names` the routes, `ctx.routes` the
routes that parsed, `ctx.base_dir` the config file's folder. The gateway's own keys are parsed
by `cutover.proxy.config`; each feature's section by the parser beside the feature.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import yaml

from cutover.core.config_model import Route

T = TypeVar("T")
# Bounds on the shape of a config, far above any real one: a file past them is refused with a
# message instead of exhausting the stack (PyYAML composes recursively) or memory (aliases).
MAX_DEPTH = 64  # levels of nesting
MAX_VALUES = 200_000  # values once YAML aliases are expanded


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
class Shown:
    """A `got` printed as is (no quotes): `null`, `a mapping`, `<redacted>`."""

    text: str

    def __repr__(self) -> str:
        return self.text


REDACTED = Shown("<redacted>")
NOTHING = object()  # "no `got` to show", distinct from a YAML null
_SECRET_WORDS = frozenset({"token", "password", "passwd", "secret"})


def is_secret(path: str) -> bool:
    """Whether the last key of `path` names a secret (token, password, secret, *_key)."""
    last = path.rsplit(".", 1)[-1].lower()
    words = [w for w in re.split(r"[^a-z0-9]+", last) if w]
    return bool(words) and (words[-1] == "key" or any(w in _SECRET_WORDS for w in words))


def redact_url(text: str) -> str:
    """`scheme://user:pass@host` -> `scheme://user:<redacted>@host`."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:<redacted>@", text)


def shown(value: object) -> object:
    """How a bad value appears in a message: scalars as written, containers by kind."""
    if value is None:
        return Shown("null")
    if isinstance(value, Mapping):
        return Shown("a mapping" if value else "{}")
    if isinstance(value, list):
        return Shown("a list" if value else "[]")
    if isinstance(value, str):
        return redact_url(str(value))
    return value


class Invalid(Exception):
    """Raised by a parser after it has recorded its error; the caller falls back to a default."""


# How an error caused by a bug in a parser reads (tests look for it: there must be none).
UNFORESEEN = "the check itself failed; please report this"


class Env(str):
    """A string that came out of `${...}` interpolation: may stand for an int, bool or number."""


class Bad:
    """Marks a value whose interpolation failed (already reported)."""


BAD = Bad()


class Ctx:
    """Collects errors while one config is parsed."""

    def __init__(self, source: str, base_dir: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.errors: list[ConfigError] = []
        self.backend_names: tuple[str, ...] = ()
        self.route_names: dict[str, int] = {}
        self.routes: tuple[Route, ...] = ()  # the valid routes, once `routes` is parsed

    def add(self, path: str, expected: str, got: object = NOTHING) -> None:
        """Record one problem; values of secret keys are redacted."""
        if got is NOTHING:
            show: object = None
        elif is_secret(path):
            show = REDACTED
        else:
            show = shown(got)
        self.errors.append(ConfigError(self.source, path, expected, show))

    def fail(self, path: str, expected: str, got: object = NOTHING) -> NoReturn:
        """Record one problem and abandon the value being parsed."""
        self.add(path, expected, got)
        raise Invalid

    def failed(self, *paths: str) -> bool:
        """Whether any error was recorded at or below one of `paths`."""
        return any(
            e.path == p or e.path.startswith((p + ".", p + "[")) for e in self.errors for p in paths
        )


# ---------------------------------------------------------------------------------------------
# Paths, sections and fields

Parser = Callable[[Ctx, object, str], T]
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def join(path: str, key: object) -> str:
    """`a.b` + `c` -> `a.b.c`; keys with other characters are quoted: `a['x.y']`."""
    text = str(key)
    if not _PLAIN_KEY.fullmatch(text):
        return f"{path}[{text!r}]"
    return f"{path}.{text}" if path else text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def section(ctx: Ctx, value: object, path: str, keys: Sequence[str]) -> dict[str, object]:
    """A mapping with only `keys`; null counts as empty. Unknown keys are reported and dropped."""
    if value is BAD:
        raise Invalid
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        ctx.fail(path or "<top level>", f"a mapping with keys {', '.join(keys)}", value)
    known: dict[str, object] = {}
    for key, item in value.items():
        kpath = join(path, key)
        if not isinstance(key, str):
            ctx.add(kpath, "a string key (quote keys such as on/off/yes/no/1)", key)
        elif key in keys:
            known[key] = item
        else:
            hint = did_you_mean(key, keys) or f" (one of: {', '.join(keys)})"
            ctx.add(kpath, f"a known key{hint}")
    return known


def run(ctx: Ctx, parse: Parser[T], value: object, path: str) -> T:
    """`parse(ctx, value, path)`. A parser that fails in a way it did not foresee is a bug,
    but the operator still gets a message naming the key path rather than a traceback."""
    if value is BAD:
        raise Invalid
    try:
        return parse(ctx, value, path)
    except Invalid:
        raise
    except Exception as exc:
        ctx.add(path, f"a value cutover can check ({UNFORESEEN}: {type(exc).__name__})")
        raise Invalid from None


def field(
    ctx: Ctx, m: Mapping[str, object], key: str, path: str, parse: Parser[T], default: T
) -> T:
    """Parse `m[key]` when present; on a missing key or an error, `default`."""
    if key not in m:
        return default
    try:
        return run(ctx, parse, m[key], join(path, key))
    except Invalid:
        return default


def require(ctx: Ctx, m: Mapping[str, object], key: str, path: str, expected: str) -> bool:
    """Report a missing required key; True when present."""
    if key in m:
        return True
    ctx.add(join(path, key), f"{expected} (this key is required)")
    return False


def items(ctx: Ctx, items: Sequence[object], path: str, parse: Parser[T]) -> list[T]:
    """Parse every item (reporting each bad one), then fail if any was bad."""
    out: list[T] = []
    bad = False
    for i, item in enumerate(items):
        try:
            out.append(run(ctx, parse, item, f"{path}[{i}]"))
        except Invalid:
            bad = True
    if bad:
        raise Invalid
    return out


def is_off(value: object) -> bool:
    """null, false, or the strings off/false/no/none."""
    if value is None or value is False:
        return True
    return isinstance(value, str) and value.strip().lower() in {"off", "false", "no", "none"}


# ---------------------------------------------------------------------------------------------
# Scalars

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)")
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?")
CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def string(ctx: Ctx, value: object, path: str, expected: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value:
        ctx.fail(path, expected, value)
    return str(value)


def boolean(ctx: Ctx, value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, Env) and value.lower() in {"true", "false", "yes", "no", "on", "off"}:
        return value.lower() in {"true", "yes", "on"}
    ctx.fail(path, "true or false", value)


def int_of(value: object) -> int | None:
    """An int from YAML (never a bool) or from an interpolated string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Env) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def integer(lo: int, hi: int | None = None) -> Parser[int]:
    """An integer in [lo, hi]."""
    expected = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"

    def parse(ctx: Ctx, value: object, path: str) -> int:
        n = int_of(value)
        if n is None or n < lo or (hi is not None and n > hi):
            ctx.fail(path, expected, value)
        return n

    return parse


def float_of(value: object) -> float | None:
    """A number from YAML (never a bool) or from an interpolated string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (
        isinstance(value, Env) and NUMBER.fullmatch(value.strip())
    ):
        return float(value)
    return None


def number(lo: float, hi: float, *, lo_open: bool = False) -> Parser[float]:
    """A number in [lo, hi] (or (lo, hi] with `lo_open`)."""
    expected = f"a number {'>' if lo_open else '>='} {lo:g} and <= {hi:g}"

    def parse(ctx: Ctx, value: object, path: str) -> float:
        x = float_of(value)
        if x is None or not math.isfinite(x) or x > hi or x < lo or (lo_open and x == lo):
            ctx.fail(path, expected, value)
        return x

    return parse


def seconds_of(value: object) -> float | None:
    """`250ms`, `5s`, `2m`, `1h`, `30d`, `1h30m`, or a bare number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if NUMBER.fullmatch(text):
        return float(text)
    if _DURATION.fullmatch(text):
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return None


def duration(*, zero: bool = False) -> Parser[float]:
    """A duration in seconds, > 0 (or >= 0 with `zero`)."""
    bound = ">= 0" if zero else "> 0"
    expected = f"a duration {bound} (e.g. 250ms, 5s, 2m, 1h, 30d; a bare number is seconds)"

    def parse(ctx: Ctx, value: object, path: str) -> float:
        s = seconds_of(value)
        if s is None or s < 0 or (s == 0 and not zero):
            ctx.fail(path, expected, value)
        return s

    return parse


def bytes_of(value: object) -> int | None:
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


def size(*, zero: bool = False) -> Parser[int]:
    """A size in bytes, > 0 (or >= 0 with `zero`)."""
    bound = ">= 0" if zero else "> 0"
    expected = f"a size {bound} (e.g. 512, 8KiB, 10MiB, 1GiB, 10MB)"

    def parse(ctx: Ctx, value: object, path: str) -> int:
        n = bytes_of(value)
        if n is None or n < 0 or (n == 0 and not zero):
            ctx.fail(path, expected, value)
        return n

    return parse


def fmt_seconds(s: float) -> str:
    return f"{s * 1000:g}ms" if s < 1 else f"{s:g}s"


def valid_host(host: str) -> bool:
    """A DNS name or an IP address (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", host):
        return False  # looks like IPv4 but is not one
    return len(host) <= 253 and HOSTNAME.fullmatch(host) is not None


def address(ctx: Ctx, value: object, path: str) -> tuple[str, int]:
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
        if ":" not in v6 or not valid_host(v6):
            ctx.fail(path, "an IPv6 address inside [...]", value)
    elif not valid_host(host):
        ctx.fail(path, expected, value)
    port = int(port_text)
    if port > 65535:
        ctx.fail(path, "a port from 0 to 65535", value)
    return host, port


def optional_address(ctx: Ctx, value: object, path: str) -> tuple[str, int] | None:
    return None if is_off(value) else address(ctx, value, path)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def header_name(ctx: Ctx, value: object, path: str) -> str:
    expected = "a header name (letters, digits and !#$%&'*+-.^_`|~)"
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        ctx.fail(path, expected, value)
    return str(value)


def optional_header_name(ctx: Ctx, value: object, path: str) -> str | None:
    return None if is_off(value) else header_name(ctx, value, path)


def method(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        ctx.fail(path, "an HTTP method such as GET", value)
    return value.upper()


def methods(*, empty: bool) -> Parser[frozenset[str]]:
    """A list of HTTP methods, upper-cased."""

    def parse(ctx: Ctx, value: object, path: str) -> frozenset[str]:
        if not isinstance(value, list) or (not value and not empty):
            ctx.fail(path, "a list of HTTP methods such as [GET, HEAD]", value)
        return frozenset(items(ctx, value, path, method))

    return parse


def status(ctx: Ctx, value: object, path: str) -> int:
    return integer(100, 599)(ctx, value, path)


def statuses(ctx: Ctx, value: object, path: str) -> frozenset[int]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of HTTP status codes (100-599)", value)
    return frozenset(items(ctx, value, path, status))


def url_path(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or CONTROL.search(value):
        ctx.fail(path, "a path starting with '/'", value)
    return str(value)


def regex(ctx: Ctx, value: object, path: str) -> re.Pattern[str]:
    text = string(ctx, value, path, "a regular expression string")
    try:
        return re.compile(text)
    except re.error as exc:
        ctx.fail(path, f"a valid regular expression ({exc})", value)


def file(ctx: Ctx, value: object, path: str) -> str:
    """An existing file; relative paths are taken from the config file's folder."""
    text = string(ctx, value, path, "a file path")
    resolved = os.path.abspath(os.path.join(ctx.base_dir, os.path.expanduser(text)))
    if not os.path.isfile(resolved):
        ctx.fail(path, "an existing file", resolved)
    return resolved


def secret(ctx: Ctx, value: object, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or CONTROL.search(value):
        ctx.fail(path, "a non-empty string without spaces (or null for no token)", value)
    return str(value)


def name(what: str) -> Parser[str]:
    def parse(ctx: Ctx, value: object, path: str) -> str:
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            ctx.fail(path, f"a {what} name made of letters, digits, '_', '.', '-'", value)
        return str(value)

    return parse


def known_backend(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or value not in ctx.backend_names:
        hint = did_you_mean(value, ctx.backend_names) if isinstance(value, str) else ""
        ctx.fail(path, f"a backend defined under backends{hint}", value)
    return str(value)


def url(scheme_list: Sequence[str], what: str) -> Parser[str]:
    """A URL string with one of the given schemes (e.g. `redis://`)."""

    expected = f"{what} URL starting with {' or '.join(scheme_list)}"

    def parse(ctx: Ctx, value: object, path: str) -> str:
        if not isinstance(value, str) or CONTROL.search(value):
            ctx.fail(path, expected, value)
        if not value.startswith(tuple(scheme_list)):
            ctx.fail(path, expected, value)
        return str(value)

    return parse


def optional(parse: Parser[T]) -> Parser[T | None]:
    def wrapped(ctx: Ctx, value: object, path: str) -> T | None:
        return None if value is None else parse(ctx, value, path)

    return wrapped


# ---------------------------------------------------------------------------------------------
# ${ENV} interpolation

_REF = re.compile(r"\$(\$)?\{([^}]*)(\})?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(
    ctx: Ctx, data: object, path: str, env: Mapping[str, str], depth: int = 0
) -> object:
    """Replace `${NAME}` / `${NAME:-default}` in every string scalar; `$${` is a literal `${`.

    Data nested deeper than `MAX_DEPTH` (or containing itself) is reported and dropped."""
    if isinstance(data, str):
        return _interpolate_str(ctx, data, path, env)
    if isinstance(data, Mapping | list) and depth >= MAX_DEPTH:
        ctx.add(path or "<top level>", f"at most {MAX_DEPTH} levels of nesting")
        return BAD
    if isinstance(data, Mapping):
        return {k: _interpolate_item(ctx, k, v, path, env, depth) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(ctx, v, f"{path}[{i}]", env, depth + 1) for i, v in enumerate(data)]
    return data


def _interpolate_item(
    ctx: Ctx, key: object, value: object, path: str, env: Mapping[str, str], depth: int
) -> object:
    """Interpolate one mapping value (feature sections included: their secrets come from env)."""
    return interpolate(ctx, value, join(path, key), env, depth + 1)


def _interpolate_str(ctx: Ctx, text: str, path: str, env: Mapping[str, str]) -> object:
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
        return BAD
    return Env(result) if result else None


# ---------------------------------------------------------------------------------------------
# YAML


class Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also records duplicate mapping keys (PyYAML keeps the last), and
    refuses what it could not load safely: nesting deeper than `MAX_DEPTH` (PyYAML composes
    recursively), an alias that contains itself, and aliases that expand to more than
    `MAX_VALUES` values (a few lines of nested aliases can stand for billions)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"at most {MAX_DEPTH} levels of nesting", mark
                )
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        """A value as its tag says; a value the tag cannot take (`!!int x`, a date that does
        not exist) is a YAML error at its node, as PyYAML's own refusals are."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, LookupError) as exc:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            problem = f"a value that {tag} can hold ({type(exc).__name__}: {exc})"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    def load(self) -> object:
        """The document's data, once its shape has been checked (see the class docstring)."""
        node = self.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), 0)
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    self.duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int], depth: int) -> int:
    """How many values `node` stands for once every alias is expanded; raises a YAML error at
    the node where the document gets too deep, too big, or contains itself."""

    def refuse(problem: str) -> NoReturn:
        raise yaml.composer.ComposerError(None, None, problem, node.start_mark)

    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        refuse("no alias that contains itself")
    if depth > MAX_DEPTH:
        refuse(f"at most {MAX_DEPTH} levels of nesting (aliases included)")
    total = 1
    if isinstance(node, yaml.CollectionNode):
        open_.add(key)
        children: list[yaml.Node] = []
        for item in node.value:
            children.extend(item if isinstance(item, tuple) else (item,))
        for child in children:
            total += _expanded_size(child, sizes, open_, depth + 1)
            if total > MAX_VALUES:
                refuse(f"at most {MAX_VALUES:,} values once aliases are expanded")
        open_.discard(key)
    sizes[key] = total
    return total


def yaml_error(source: str, text: str, exc: yaml.YAMLError) -> ConfigError:
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
