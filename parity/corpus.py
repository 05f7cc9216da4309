"""Request corpora for `cutover parity run`: JSONL (also what a route's `capture:` writes) and HAR.

JSONL, one request per line (DESIGN.md, Decisions):

    {"method": "GET", "path": "/history?limit=10"}
    {"method": "POST", "path": "/webhook", "headers": {"Content-Type": "application/json"},
     "body": "{\\"alerts\\": []}"}

`body` is UTF-8 text, `body_b64` base64 for anything else (at most one of them). Capture files
add `ts` (Unix seconds) and `route`, which are accepted and ignored. Blank lines and lines
starting with `#` are skipped. A HAR file (`.har`, or any file holding one JSON object with a
`log`) is read from `log.entries[].request`.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from cutover.core.storable import storable
from cutover.parity.diff import PathPattern, key_path

__all__ = [
    "REDACTED",
    "CorpusError",
    "CorpusRequest",
    "load_corpus",
    "parse_har",
    "parse_jsonl",
    "redact_json",
    "redact_query",
    "to_line",
]

REDACTED = "<redacted>"

_KEYS = frozenset({"method", "path", "headers", "body", "body_b64", "ts", "route"})
# Never replayed from a HAR: framing and connection fields, HTTP/2 pseudo-headers.
_HAR_SKIP = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
     "proxy-connection", "trailer"}
)  # fmt: skip


class CorpusError(ValueError):
    """A corpus that cannot be read; the message names the line (or entry) and the field."""


@dataclass(frozen=True, slots=True)
class CorpusRequest:
    method: str
    path: str  # with the query string
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None


def _token(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in text)


def _request(data: object, where: str) -> CorpusRequest:
    if not isinstance(data, dict):
        raise CorpusError(f"{where}: expected a JSON object with method and path")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise CorpusError(
            f"{where}: unknown field {unknown[0]!r} "
            "(expected method, path, headers, body or body_b64)"
        )
    method = data.get("method")
    if not isinstance(method, str) or not _token(method):
        raise CorpusError(f"{where}: method: expected an HTTP method such as GET, got {method!r}")
    path = data.get("path")
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " \r\n"):
        raise CorpusError(
            f"{where}: path: expected a path with its query starting with '/', got {path!r}"
        )
    headers: list[tuple[str, str]] = []
    raw_headers = data.get("headers", {})
    if raw_headers is None:
        raw_headers = {}
    if not isinstance(raw_headers, dict):
        raise CorpusError(f"{where}: headers: expected an object of name to string value")
    for name, value in raw_headers.items():
        values = value if isinstance(value, list) else [value]
        if not _token(name) or not all(isinstance(v, str) and "\n" not in v for v in values):
            raise CorpusError(f"{where}: headers.{name}: expected a header name and string value")
        headers.extend((name, v) for v in values)
    if "body" in data and "body_b64" in data:
        raise CorpusError(f"{where}: expected at most one of body and body_b64")
    body: bytes | None = None
    if data.get("body") is not None:
        if not isinstance(data["body"], str):
            raise CorpusError(f"{where}: body: expected UTF-8 text (use body_b64 for bytes)")
        body = data["body"].encode()
    elif data.get("body_b64") is not None:
        try:
            body = base64.b64decode(str(data["body_b64"]), validate=True)
        except (binascii.Error, ValueError):
            raise CorpusError(f"{where}: body_b64: expected base64 text") from None
    return CorpusRequest(method.upper(), path, tuple(headers), body)


def parse_jsonl(lines: Iterable[str | bytes], source: str = "corpus") -> list[CorpusRequest]:
    out: list[CorpusRequest] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text[:1] in ("#", b"#"):
            continue
        where = f"{source}:{number}"
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CorpusError(f"{where}: expected one JSON object per line ({exc})") from None
        out.append(_request(data, where))
    return out


def parse_har(data: object, source: str = "corpus.har") -> list[CorpusRequest]:
    """Requests of a HAR 1.2 document (`log.entries[].request`)."""
    log = data.get("log") if isinstance(data, dict) else None
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise CorpusError(f"{source}: expected a HAR document with log.entries")
    out: list[CorpusRequest] = []
    for i, entry in enumerate(entries):
        where = f"{source}: log.entries[{i}].request"
        req = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(req, dict):
            raise CorpusError(f"{where}: expected an object")
        url = req.get("url")
        if not isinstance(url, str) or not url:
            raise CorpusError(f"{where}.url: expected a URL")
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers: dict[str, list[str]] = {}
        for h in req.get("headers") or []:
            name, value = (h.get("name"), h.get("value")) if isinstance(h, dict) else (None, None)
            if not isinstance(name, str) or not isinstance(value, str):
                raise CorpusError(f"{where}.headers: expected {{name, value}} objects")
            if name.startswith(":") or name.lower() in _HAR_SKIP:
                continue
            headers.setdefault(name, []).append(value)
        item: dict[str, object] = {"method": req.get("method"), "path": path, "headers": headers}
        post = req.get("postData")
        if isinstance(post, dict) and post.get("text") is not None:
            if post.get("encoding") == "base64":
                item["body_b64"] = post["text"]
            else:
                item["body"] = post["text"]
            if post.get("mimeType") and not any(n.lower() == "content-type" for n in headers):
                headers["Content-Type"] = [str(post["mimeType"])]
        out.append(_request(item, where))
    return out


def load_corpus(path: str | os.PathLike[str]) -> list[CorpusRequest]:
    """Read a JSONL corpus or a HAR file (chosen by extension, else by content)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CorpusError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if source.lower().endswith(".har") or (raw.lstrip()[:1] == b"{" and b'"log"' in raw[:4096]):
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if source.lower().endswith(".har"):
                raise CorpusError(f"{source}: expected a HAR (JSON) document") from None
        else:
            if isinstance(data, dict) and "log" in data:
                return parse_har(data, source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorpusError(f"{source}: expected UTF-8 JSON lines") from None
    return parse_jsonl(text.splitlines(), source)


def to_line(
    method: str,
    path: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | None,
    **extra: object,
) -> bytes:
    """One JSONL corpus line (with a trailing newline).

    Header bytes that are not UTF-8 (which reach us as surrogate escapes) are written escaped
    (`\\xff`): JSON cannot carry them as they are."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    merged: dict[str, object] = {}
    for raw_name, raw_value in pairs:
        name = storable(str(raw_name))  # multidict's istr is not a plain str
        value = storable(raw_value)
        prior = merged.get(name)
        if prior is None:
            merged[name] = value
        elif isinstance(prior, list):
            prior.append(value)
        else:
            merged[name] = [prior, value]
    item: dict[str, object] = {"method": method, "path": storable(path)}
    if merged:
        item["headers"] = merged
    if body:
        try:
            item["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            item["body_b64"] = base64.b64encode(body).decode()
    item.update(extra)
    return orjson.dumps(item) + b"\n"


def redact_json(value: object, patterns: Iterable[PathPattern], path: str = "$") -> object:
    """`value` with everything under a matching path replaced by "<redacted>"."""
    patterns = tuple(patterns)
    if any(p.matches(path) for p in patterns):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact_json(v, patterns, key_path(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, patterns, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


_SECRET_WORDS = ("token", "password", "passwd", "secret", "signature")


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(w in lowered for w in _SECRET_WORDS) or lowered.endswith("key")


def redact_query(path: str) -> str:
    """`/x?api_key=abc&limit=5` -> `/x?api_key=%3Credacted%3E&limit=5` (names of secrets)."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}=%3Credacted%3E" if eq and _secret_name(name) else item)
    return f"{base}?{'&'.join(parts)}"
