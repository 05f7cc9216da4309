"""What the gateway accepts of an HTTP/1.x request's line and framing (RFC 9112). Pure.

Both listener paths judge a request with these functions, so that they answer alike:

- origin-form (`/path?query`) is served; `#` is refused (a target carries no fragment);
- absolute-form (`http://host/path?query`, RFC 9112 §3.2.2: a server MUST accept it) is served as
  the origin-form request it names: the path and query are forwarded, and its authority replaces
  the Host header, which a server must then ignore (it must still be one valid Host);
- asterisk-form (`OPTIONS *`) is refused with 400 and CONNECT with 405: the gateway serves
  resources; it is not a forward proxy or a tunnel;
- every matcher (routes, compat rules, the gateway's own endpoints and the guards on them, mirror
  and capture through their routes, parity's endpoint names) reads one *normalized* path
  (`normalize_path`), the path an RFC 3986 backend serves: percent-escapes of unreserved
  characters decoded (`%61` is `a`, §6.2.2.2) and the others' hex digits uppercased (§6.2.2.1),
  then dot-segments (`.`, `..`, also written `%2e`) resolved (§5.2.4). An encoded slash stays
  `%2F`, distinct from `/`: whether it splits a segment is the backend's choice. The target is
  forwarded as sent (or as a compat rule rewrote it); normalizing is the backend's. Dot-segments
  that climb above the root are refused with 400, as nginx refuses them, so a backend's base path
  can never be escaped; so are dot-segments in a path with an encoded slash;
- HTTP/1.0 and 1.1 are served; HTTP/2.0 (and any other version a parser lets through) gets 505,
  and a request line without a version (HTTP/0.9) 400, at once;
- `Transfer-Encoding` must be exactly `chunked` (one field line): any other coding would reach
  the backend undone, so it is refused with 400 (DESIGN.md: malformed framing is never forwarded).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from urllib.parse import quote, unquote

# RFC 9110 §7.2 / RFC 3986 §3.2.2 authority: reg-name, IPv4 or [IPv6], optional port 0-65535.
_PORT = r"(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::" + _PORT + r")?\Z")
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
_SCHEMES = frozenset(("http", "https"))
# What CONNECT's 405 names as allowed: every method the gateway forwards.
ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")  # RFC 3986 §2.3
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# What a path written in config may hold literally (RFC 3986 pchar and "/", and "%" for escapes)
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


class Refused(Exception):
    """A request the gateway answers itself with `status` (JSON error `code`, `message`)."""

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


@dataclass(frozen=True, slots=True)
class Target:
    """An origin-form request target, parsed.

    `path` and `query` are as the client sent them (still percent-encoded; `query` is None
    without a `?`); `normalized` is `normalize_path(path)` (what every matcher reads);
    `authority` is the absolute-form's `host[:port]`, else None.
    """

    path: str
    query: str | None
    normalized: str
    authority: str | None = None

    @property
    def origin(self) -> str:
        """The target in origin-form, as forwarded."""
        return self.path if self.query is None else f"{self.path}?{self.query}"


def valid_host(value: str) -> bool:
    """A Host value (or an absolute-form authority) the gateway accepts."""
    return HOST_RE.match(value) is not None


def is_plain_path(raw: str) -> bool:
    """True when no dot-segment can hide in the raw path `raw` (literal, `%2e`, or behind an
    encoded slash): it routes as it reads. The fast path serves only such paths itself."""
    if "/." in raw:
        return False
    if "%" not in raw:
        return True
    low = raw.lower()
    return "%2e" not in low and not ("%2f" in low and "." in low)


def parse_target(method: str, raw: str) -> Target:
    """The request target `raw` of a `method` request, or `Refused` (400, or 405 for CONNECT)."""
    if method == "CONNECT":
        raise Refused(
            405,
            "method_not_allowed",
            "CONNECT is not served: the gateway is a reverse proxy, not a tunnel",
            (("Allow", ALLOWED_METHODS),),
        )
    if "#" in raw:
        raise Refused(400, "bad_target", "a request target carries no fragment (#)")
    authority: str | None = None
    if raw.startswith("/"):
        rest = raw
    elif raw == "*":
        raise Refused(
            400, "bad_target", "asterisk-form (OPTIONS *) is not served; ask about a path"
        )
    else:
        m = _ABSOLUTE.fullmatch(raw)
        if m is None or m.group(1).lower() not in _SCHEMES:
            raise Refused(
                400, "bad_target", "expected a request target such as /path or http://host/path"
            )
        authority, rest = m.group(2), m.group(3)
        if "@" in authority:
            raise Refused(400, "bad_target", "user information in the request target")
        if not authority or not valid_host(authority):
            raise Refused(400, "bad_target", "invalid authority in the request target")
        if not rest.startswith("/"):
            rest = "/" + rest  # an empty path is "/" (RFC 9112 §3.2.1)
    path, sep, query = rest.partition("?")
    return Target(path, query if sep else None, normalize_path(path), authority)


def normalize_escapes(path: str) -> str:
    """`path` with each percent-escape in one spelling (RFC 3986 §6.2.2.1-2): an unreserved
    character's decoded (`%61` is `a`, `%7E` is `~`), any other's hex digits uppercased (`%2f`
    is `%2F`, which stays an encoded slash). Two spellings of one resource then read alike, to
    every matcher, as they do to the backend."""
    if "%" not in path:
        return path
    return _ESCAPE.sub(_one_escape, path)


def _one_escape(m: re.Match[str]) -> str:
    char = chr(int(m.group(1), 16))
    return char if char in _UNRESERVED else "%" + m.group(1).upper()


def normalize_path(path: str) -> str:
    """The raw path `path` as every matcher reads it: escapes normalized (`normalize_escapes`),
    then dot-segments resolved (`resolve_dots`: `Refused` when they climb above the root or
    sit beside an encoded slash)."""
    return resolve_dots(normalize_escapes(path))


def config_path(text: str, keep: str = "") -> str:
    """A path written in config (a route's `path_prefix`, a compat template), in the form the
    normalized request path is compared with: what a path cannot hold literally (a space,
    non-ASCII; characters in `keep` excepted, such as a template's braces) percent-encoded as
    UTF-8, then escapes normalized. Dot-segments are left as written (a config value is not a
    request)."""
    return normalize_escapes(quote(text, safe=_PATH_SAFE + keep))


def resolve_dots(path: str) -> str:
    """The raw path `path` with its dot-segments resolved (RFC 3986 §5.2.4; `%2e` is a dot);
    `Refused` when they climb above the root, or when the path also has an encoded slash
    (`%2F`): whether that splits a segment is the backend's choice, so the path is ambiguous."""
    if is_plain_path(path):
        return path
    if "%2f" in path.lower() and any(s in (".", "..") for s in unquote(path).split("/")):
        raise Refused(400, "bad_target", "dot-segments beside an encoded slash (%2F) in the path")
    segments = path.split("/")[1:]
    out: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        dots = segment.lower().replace("%2e", ".")
        if dots == ".":
            if i == last:
                out.append("")
        elif dots == "..":
            if not out:
                raise Refused(400, "bad_target", "the path climbs above the root with '..'")
            out.pop()
            if i == last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def version_refusal(version: str) -> Refused | None:
    """None for HTTP/1.0 and 1.1 (`version` as "1.1"); else why the request is refused."""
    if version in ("1.1", "1.0"):
        return None
    if version == "0.9":
        return Refused(400, "bad_request", "request line without an HTTP version (HTTP/0.9)")
    return Refused(
        505, "http_version_not_supported", f"HTTP/{version} is not supported; use HTTP/1.1"
    )


def transfer_coding_refusal(values: list[str]) -> Refused | None:
    """None when the request's `Transfer-Encoding` field lines (`values`) are absent or one
    `chunked`; else why the request is refused."""
    if not values or (len(values) == 1 and values[0].strip().lower() == "chunked"):
        return None
    return Refused(400, "bad_request", "Transfer-Encoding other than chunked is not accepted")


def versionless_line(start: bytes) -> bool | None:
    """Whether the first request line in `start` (a connection's first bytes) ended without an
    HTTP version, as an HTTP/0.9 request does; None while the line has not ended.

    Parsers wait for the headers such a line never gets (until the header timeout); judged
    here, it is answered at once.
    """
    data = start.lstrip(b"\r\n")
    end = data.find(b"\n")
    if end < 0:
        return None
    line = data[:end].rstrip(b"\r")
    return not line.rpartition(b" ")[2].startswith(b"HTTP/")
