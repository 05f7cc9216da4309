"""Header rewriting between client and backend (RFC 9110 §7.6.1). Pure functions."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy, istr

# Hop-by-hop fields never cross the gateway, in either direction. `Expect` is answered
# by the gateway itself (100-continue), so it is not passed on either; `Host` and the
# framing fields are set for the upstream message by the client library.
HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)
# The one upstream/downstream header policy: both listener paths drop these (the fast path as
# bytes, `proxy.fastpath`), then add X-Forwarded-* and the request id as below.
NOT_FORWARDED_UP = HOP_BY_HOP | {"host", "expect", "content-length"}
NOT_FORWARDED_DOWN = HOP_BY_HOP | {"content-length"}

X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_HOST = istr("X-Forwarded-Host")


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Field names listed in `Connection`, which are hop-by-hop for this message only."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _filtered(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], drop: frozenset[str]
) -> CIMultiDict[str]:
    if extra := connection_tokens(headers):
        drop = drop | extra
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


def upstream_headers(
    headers: CIMultiDictProxy[str],
    *,
    peer: str,
    scheme: str,
    host: str | None,
    host_header: str | None,
    request_id_name: str,
    request_id: str,
    content_length: int | None,
) -> CIMultiDict[str]:
    """Headers for the request sent to a backend.

    `host_header` is the Host to send (None: the client's). `content_length` is set when the
    body's size is known and it is streamed; a buffered body gets its length from the client
    library.
    """
    out = _filtered(headers, NOT_FORWARDED_UP)
    prior = out.popall(X_FORWARDED_FOR, None)
    out[X_FORWARDED_FOR] = f"{', '.join(prior)}, {peer}" if prior else peer
    out.setdefault(X_FORWARDED_PROTO, scheme)
    if host:
        out.setdefault(X_FORWARDED_HOST, host)
    out[request_id_name] = request_id
    if host_header is not None:
        out["Host"] = host_header
    elif host:
        out["Host"] = host
    if content_length is not None:
        out["Content-Length"] = str(content_length)
    return out


def downstream_headers(
    headers: CIMultiDictProxy[str], extra: Iterable[tuple[str, str]] = ()
) -> CIMultiDict[str]:
    """Headers for the response sent to the client (Content-Length is set by the caller)."""
    out = _filtered(headers, NOT_FORWARDED_DOWN)
    for name, value in extra:
        out[name] = value
    return out


def sticky_cookie(name: str, value: str, ttl: float, secure: bool) -> str:
    """The Set-Cookie value of a new sticky key (DESIGN.md: HttpOnly, SameSite=Lax, Path=/)."""
    parts = [f"{name}={value}", "Path=/", f"Max-Age={int(ttl)}", "HttpOnly", "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
