"""Structural comparison of two HTTP responses. Pure: no I/O, no clock, no randomness.

Every difference names the place it was found by a *path*:

- `status` — the status codes differ (0 stands for "no answer": connection error, timeout);
- `header.<name>` — a configured header (names lower-case) differs, is missing or extra;
- `$...` — inside JSON bodies: `$.alerts[0].labels.alertname`, `$['odd key']`, and, for
  arrays matched by a configured key, `$.alerts[fingerprint="ab12"]`;
- `body` / `body:<line>` — non-JSON bodies are compared line by line (`body:12` is line 12
  of the left side); `body` alone when one side is JSON and the other is not.

Its *field* is the path with array positions generalised (`$.alerts[*].labels.alertname`):
fields are what differences are counted by. `left` is the primary, `right` the candidate (or
the secondary, for noise).

Path patterns (ignore rules, tolerances, array keys, unordered arrays) use the same syntax plus
`[*]` (any position), `.*` (any key) and `..` (any depth): `$..request_id`, `$.alerts[*].id`,
`header.date`, `body`. A pattern also covers everything below what it names.
"""

from __future__ import annotations

import difflib
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from cutover.core.http1 import Refused, config_path, normalize_escapes, normalize_path

__all__ = [
    "DEFAULT_RULES",
    "DiffRules",
    "Difference",
    "Kind",
    "PathPattern",
    "Reply",
    "Tolerance",
    "compare",
    "compile_pattern",
    "endpoint_of",
    "field_of",
    "make_reply",
    "preview",
]

Kind = Literal["status", "missing", "extra", "type", "value", "text"]

MAX_DIFFERENCES = 200  # per comparison; a wholly different body is not worth more
MAX_LINE_PAIRS = 4_000_000  # text bodies larger than this (lines x lines) are not aligned


# ---------------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True, slots=True)
class Reply:
    """One response as compared: status (0 = none), lower-case headers, decoded body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None  # why there is no answer ("connect", "timeout", ...)


MAX_DECODED = 16 * 2**20  # a decoded body compared by default, at most (16 MiB)


def make_reply(
    status: int,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    error: str | None = None,
    max_decoded: int = MAX_DECODED,
) -> Reply:
    """A `Reply` from raw parts: header names lower-cased (repeats joined with ", "), and a
    body sent with `Content-Encoding: gzip` or `deflate` decoded (left as is if it does not
    decode). Decoding stops at `max_decoded` bytes — a few KiB of gzip can claim gigabytes —
    and such a reply keeps what fits, with the error `body_too_large`."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    encoding = merged.get("content-encoding", "").strip().lower()
    if body and encoding in ("gzip", "x-gzip", "deflate"):
        for wbits in (47 if encoding != "deflate" else 15, -15):  # then raw deflate, as some send
            decoded = _inflate(body, wbits, max_decoded)
            if decoded is not None:
                body, whole = decoded
                if not whole and error is None:
                    error = "body_too_large"
                break
    return Reply(status=status, headers=merged, body=body, error=error)


def _inflate(body: bytes, wbits: int, limit: int) -> tuple[bytes, bool] | None:
    """`body` inflated up to `limit` bytes and whether that was all of it; None if it is not
    in that format. One byte more than the limit is asked for, so output that stops short of
    it is all there is (nothing is flushed unbounded)."""
    try:
        out = zlib.decompressobj(wbits).decompress(body, limit + 1)
    except zlib.error:
        return None
    return out[:limit], len(out) <= limit


# ---------------------------------------------------------------------------------------------
# Paths and patterns

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_KEY_RE = r"(?:\.[A-Za-z_][A-Za-z0-9_-]*|\['(?:[^'\\]|\\.)*'\])"
_POS_RE = r"\[(?!')(?:[^\]\"]|\"(?:[^\"\\]|\\.)*\")*\]"
_ANY_SEGMENT = f"(?:{_KEY_RE}|{_POS_RE})"
_POSITION = re.compile(_POS_RE)
_PATTERN_TOKEN = re.compile(
    r"\.\.|\.\*|\.([A-Za-z_][A-Za-z0-9_-]*)|\[\*\]|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]"
)


def key_path(parent: str, key: str) -> str:
    if _PLAIN.fullmatch(key):
        return f"{parent}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{parent}['{escaped}']"


def field_of(path: str) -> str:
    """`$.alerts[3].id` -> `$.alerts[*].id`; non-body paths are their own field."""
    if not path.startswith("$"):
        return path
    return _POSITION.sub("[*]", path)


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A compiled path pattern; `matches(path)` holds for the path and everything below it."""

    text: str
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def compile_pattern(text: str) -> PathPattern:
    """Compile `$.a[*].b`, `$..id`, `header.date`, `header.*`, `status`, `body`.

    Raises ValueError naming what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a path such as $.items[*].id, header.date, status or body")
    text = text.strip()
    if text == "status":
        return PathPattern(text, re.compile(r"status$"))
    if text in ("body", "body:*"):
        return PathPattern(text, re.compile(r"body(?::\d+)?$"))
    if m := re.fullmatch(r"body:(\d+)", text):
        return PathPattern(text, re.compile(rf"body:{m.group(1)}$"))
    if text.lower().startswith("header."):
        name = text[7:].lower()
        if name == "*":
            return PathPattern(text, re.compile(r"header\.[^.]+$"))
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9a-z]+", name):
            raise ValueError(f"a header name after 'header.' (got {text!r})")
        return PathPattern(text, re.compile(rf"header\.{re.escape(name)}$"))
    if not text.startswith("$"):
        raise ValueError(
            f"a path starting with '$' (JSON body), or status, body, header.NAME (got {text!r})"
        )
    source = text
    text = re.sub(r"\.\.(?=[A-Za-z_*])", "...", text)  # `$..id` reads as `$..` + `.id`
    parts = ["\\$"]
    pos = 1
    descend = False
    while pos < len(text):
        m = _PATTERN_TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"a valid path: cannot read {text[pos:]!r} in {source!r}")
        token = m.group(0)
        pos = m.end()
        if token == "..":
            if descend:
                raise ValueError(f"a valid path: '...' in {source!r}")
            descend = True
            continue
        if token == ".*":
            segment = _KEY_RE
        elif m.group(1) is not None:
            segment = re.escape("." + m.group(1))
        elif token == "[*]":
            segment = _POS_RE
        elif m.group(2) is not None:
            segment = re.escape(f"[{int(m.group(2))}]")
        else:
            segment = re.escape(key_path("", _unescape(m.group(3))))
        if descend:
            parts.append(f"{_ANY_SEGMENT}*")
            descend = False
        parts.append(segment)
    if descend:
        raise ValueError(f"a valid path: {source!r} ends with '..'")
    return PathPattern(source, re.compile("".join(parts) + r"(?=$|[.\[])"))


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Values under `pattern` are equal when they differ by at most `numeric` (absolute) or,
    for timestamps (RFC 3339 strings or Unix seconds), by at most `timestamp` seconds."""

    pattern: PathPattern
    numeric: float | None = None
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class DiffRules:
    ignore: tuple[PathPattern, ...] = ()
    tolerances: tuple[Tolerance, ...] = ()
    array_keys: tuple[tuple[PathPattern, str], ...] = ()  # arrays matched by an item key
    unordered: tuple[PathPattern, ...] = ()  # arrays compared as multisets
    headers: tuple[str, ...] = ("content-type",)  # lower-case names compared

    def ignored(self, path: str) -> bool:
        return any(p.matches(path) for p in self.ignore)

    def tolerance(self, path: str) -> Tolerance | None:
        for t in self.tolerances:
            if t.pattern.matches(path):
                return t
        return None

    def array_key(self, path: str) -> str | None:
        for pattern, key in self.array_keys:
            if _exact(pattern, path):
                return key
        return None

    def is_unordered(self, path: str) -> bool:
        return any(_exact(p, path) for p in self.unordered)


def _exact(pattern: PathPattern, path: str) -> bool:
    """The pattern names `path` itself (not something above it)."""
    m = pattern.regex.match(path)
    return m is not None and m.end() == len(path)


DEFAULT_RULES = DiffRules()


# ---------------------------------------------------------------------------------------------
# Differences


@dataclass(frozen=True, slots=True)
class Difference:
    path: str
    kind: Kind
    left: Any = None  # the primary's value (None when missing)
    right: Any = None  # the candidate's (or secondary's) value (None when missing)

    @property
    def field(self) -> str:
        return field_of(self.path)


def preview(value: Any, limit: int = 200) -> str:
    """A value as short JSON text, for reports."""
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare(left: Reply, right: Reply, rules: DiffRules = DEFAULT_RULES) -> list[Difference]:
    """Every difference between two replies under `rules` (at most MAX_DIFFERENCES)."""
    out: list[Difference] = []
    if left.status != right.status and not rules.ignored("status"):
        out.append(Difference("status", "status", left.status, right.status))
    if left.status == 0 or right.status == 0:
        return out  # nothing else to compare without an answer on both sides
    for name in rules.headers:
        path = f"header.{name}"
        lv, rv = left.headers.get(name), right.headers.get(name)
        if lv != rv and not rules.ignored(path):
            kind: Kind = "missing" if rv is None else "extra" if lv is None else "value"
            out.append(Difference(path, kind, lv, rv))
    if left.body == right.body or rules.ignored("body"):
        return out
    lj, rj = _json_of(left), _json_of(right)
    if lj is not _NOT_JSON and rj is not _NOT_JSON:
        found = len(out)
        try:
            _walk(lj, rj, "$", rules, out)
        except (RecursionError, orjson.JSONEncodeError):  # nested deeper than a walk goes
            del out[found:]
            _lines(left.body, right.body, rules, out)  # (compared as text instead)
    elif lj is _NOT_JSON and rj is _NOT_JSON:
        _lines(left.body, right.body, rules, out)
    else:
        out.append(
            Difference(
                "body",
                "type",
                "json" if lj is not _NOT_JSON else _text_preview(left.body),
                "json" if rj is not _NOT_JSON else _text_preview(right.body),
            )
        )
    return out[:MAX_DIFFERENCES]


_NOT_JSON = object()


def _json_of(reply: Reply) -> Any:
    body = reply.body.strip()
    ctype = reply.headers.get("content-type", "").lower()
    if not body or ("json" not in ctype and body[:1] not in (b"{", b"[")):
        return _NOT_JSON
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _walk(left: Any, right: Any, path: str, rules: DiffRules, out: list[Difference]) -> None:
    if len(out) >= MAX_DIFFERENCES or rules.ignored(path):
        return
    lt, rt = _type(left), _type(right)
    if lt != rt:
        out.append(Difference(path, "type", left, right))
        return
    if (lt == "object" or lt == "array") and _same_json(left, right):
        return  # (most of two answers alike: no walk through what holds no difference)
    if lt == "object":
        for key, lv in left.items():
            child = key_path(path, key)
            if key in right:
                _walk(lv, right[key], child, rules, out)
            elif not rules.ignored(child):
                out.append(Difference(child, "missing", lv, None))
        for key, rv in right.items():
            if key not in left:
                child = key_path(path, key)
                if not rules.ignored(child):
                    out.append(Difference(child, "extra", None, rv))
        return
    if lt == "array":
        key = rules.array_key(path)
        if key is not None and _by_key(left, right, key, path, rules, out):
            return
        if rules.is_unordered(path):
            _unordered(left, right, path, rules, out)
        else:
            _by_index(left, right, path, rules, out)
        return
    if left == right or _tolerated(left, right, lt, rules.tolerance(path)):
        return
    out.append(Difference(path, "value", left, right))


def _same_json(left: Any, right: Any) -> bool:
    """Whether two objects or arrays are the same JSON: equal (in C, stopping at the first
    difference), and written alike, which tells `true` from `1` and `1.0` (Python's `==`
    does not) — then no rule finds a difference in them."""
    if left != right:
        return False
    try:
        return _canonical(left) == _canonical(right)
    except orjson.JSONEncodeError:  # (nothing orjson parsed; the walk decides)
        return False


def _by_index(
    left: list[Any], right: list[Any], path: str, rules: DiffRules, out: list[Difference]
) -> None:
    for i, (lv, rv) in enumerate(zip(left, right, strict=False)):
        _walk(lv, rv, f"{path}[{i}]", rules, out)
    for i in range(len(right), len(left)):
        child = f"{path}[{i}]"
        if not rules.ignored(child):
            out.append(Difference(child, "missing", left[i], None))
    for i in range(len(left), len(right)):
        child = f"{path}[{i}]"
        if not rules.ignored(child):
            out.append(Difference(child, "extra", None, right[i]))


def _keyed(items: list[Any], key: str) -> dict[tuple[str, Any], Any] | None:
    """Items by the JSON type and value of their `key` (Python's `True == 1` must not pair a
    `true` with a `1`); None when an item lacks it or two share it."""
    out: dict[tuple[str, Any], Any] = {}
    for item in items:
        if not isinstance(item, dict) or key not in item:
            return None
        value = item[key]
        typed = (_type(value), value)
        if isinstance(value, dict | list) or typed in out:
            return None
        out[typed] = item
    return out


def _key_text(value: Any) -> str:
    """An item's key as its path shows it, the same whichever side wrote it (`1.0` and `-0.0`
    name the items `1` and `0` pair with)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    return orjson.dumps(value).decode()


def _by_key(
    left: list[Any], right: list[Any], key: str, path: str, rules: DiffRules, out: list[Difference]
) -> bool:
    """Match items by `key`; False (nothing done) when the key is absent or not unique."""
    lk, rk = _keyed(left, key), _keyed(right, key)
    if lk is None or rk is None:
        return False
    for typed, item in lk.items():
        child = f"{path}[{key}={_key_text(typed[1])}]"
        if typed in rk:
            _walk(item, rk[typed], child, rules, out)
        elif not rules.ignored(child):
            out.append(Difference(child, "missing", item, None))
    for typed, item in rk.items():
        if typed not in lk:
            child = f"{path}[{key}={_key_text(typed[1])}]"
            if not rules.ignored(child):
                out.append(Difference(child, "extra", None, item))
    return True


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _unordered(
    left: list[Any], right: list[Any], path: str, rules: DiffRules, out: list[Difference]
) -> None:
    """Multiset comparison: equal items pair off; the rest pair by position, then missing/extra."""
    pool = Counter(_canonical(v) for v in right)
    rest_left: list[tuple[int, Any]] = []
    for i, item in enumerate(left):
        c = _canonical(item)
        if pool[c] > 0:
            pool[c] -= 1
        else:
            rest_left.append((i, item))
    rest_right: list[tuple[int, Any]] = []
    for j, item in enumerate(right):
        c = _canonical(item)
        if pool[c] > 0:
            pool[c] -= 1
            rest_right.append((j, item))
    for (i, lv), (_, rv) in zip(rest_left, rest_right, strict=False):
        _walk(lv, rv, f"{path}[{i}]", rules, out)
    for i, lv in rest_left[len(rest_right) :]:
        if not rules.ignored(f"{path}[{i}]"):
            out.append(Difference(f"{path}[{i}]", "missing", lv, None))
    for j, rv in rest_right[len(rest_left) :]:
        if not rules.ignored(f"{path}[{j}]"):
            out.append(Difference(f"{path}[{j}]", "extra", None, rv))


def _tolerated(left: Any, right: Any, kind: str, tol: Tolerance | None) -> bool:
    if tol is None:
        return False
    if tol.numeric is not None and kind == "number":
        return bool(abs(left - right) <= tol.numeric)
    if tol.timestamp is not None:
        lt, rt = _timestamp(left), _timestamp(right)
        return lt is not None and rt is not None and abs(lt - rt) <= tol.timestamp
    return False


def _timestamp(value: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 / ISO 8601 string or a Unix time (s or ms)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        x = float(value)
        if not math.isfinite(x):
            return None
        return x / 1000.0 if abs(x) > 1e11 else x
    if not isinstance(value, str) or len(value) < 10:
        return None
    text = value.strip()
    # Go's RFC3339Nano has up to 9 fractional digits; datetime keeps 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _text_preview(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return text if len(body) <= limit else text + "…"


def _lines(left: bytes, right: bytes, rules: DiffRules, out: list[Difference]) -> None:
    """Line diff: one difference per changed line of the left side (or inserted line)."""
    try:
        lt, rt = left.decode("utf-8").splitlines(), right.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        if not rules.ignored("body"):
            out.append(Difference("body", "value", f"<{len(left)} bytes>", f"<{len(right)} bytes>"))
        return
    if len(lt) * len(rt) > MAX_LINE_PAIRS:  # too large to align: compare line by line
        opcodes = [
            ("equal" if lt[i : i + 1] == rt[i : i + 1] else "replace", i, min(i + 1, len(lt)),
             i, min(i + 1, len(rt)))
            for i in range(max(len(lt), len(rt)))
        ]  # fmt: skip
    else:
        matcher = difflib.SequenceMatcher(None, lt, rt, autojunk=False)
        opcodes = matcher.get_opcodes()
    for op, i1, i2, j1, j2 in opcodes:
        if op == "equal":
            continue
        span = max(i2 - i1, j2 - j1)
        for k in range(span):
            line = i1 + k + 1 if i1 + k < i2 else i2 + 1
            path = f"body:{line}"
            if rules.ignored(path) or len(out) >= MAX_DIFFERENCES:
                continue
            lv = lt[i1 + k] if i1 + k < i2 else None
            rv = rt[j1 + k] if j1 + k < j2 else None
            kind: Kind = "missing" if rv is None else "extra" if lv is None else "text"
            out.append(Difference(path, kind, lv, rv))


# ---------------------------------------------------------------------------------------------
# Endpoint templates

_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_INT = re.compile(r"-?\d+")
_HEX = re.compile(r"[0-9a-fA-F]{8,}")


def _is_id(segment: str) -> bool:
    if _INT.fullmatch(segment) or _UUID.fullmatch(segment):
        return True
    if _HEX.fullmatch(segment):
        # A fingerprint, not a word: it has a digit, or it is too long to be a word.
        return any(c.isdigit() for c in segment) or len(segment) >= 16
    return False


def _template_regex(template: str) -> re.Pattern[str]:
    parts = []
    for segment in config_path(template, keep="{}").split("/"):
        if re.fullmatch(r"\{[^/{}]+\}", segment):
            parts.append("[^/]+")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts))


def _normalized(path: str) -> str:
    """`path` as the gateway's matchers read it; its escapes alone where its dot-segments
    cannot be resolved (a corpus may hold paths the gateway refuses)."""
    if not path.startswith("/"):
        return normalize_escapes(path)
    try:
        return normalize_path(path)
    except Refused:
        return normalize_escapes(path)


def endpoint_of(method: str, path: str, templates: tuple[str, ...] = ()) -> str:
    """`GET /alerts/17?x=1` -> `GET /alerts/{id}`.

    A configured template (`/silences/{name}/expire`) wins when it matches; otherwise numeric
    ids, UUIDs and hex fingerprints become `{id}`. The path is read normalized, as the
    gateway's matchers read it (`core.http1`): `/%61lerts/1` is `GET /alerts/{id}` too.
    """
    bare = _normalized(path.split("?", 1)[0].split("#", 1)[0] or "/")
    for template in templates:
        if _template_regex(template).fullmatch(bare):
            return f"{method.upper()} {template}"
    segments = ["{id}" if _is_id(s) else s for s in bare.split("/")]
    return f"{method.upper()} {'/'.join(segments)}"
