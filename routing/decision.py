"""Which backend serves a request, and what comes after it (DESIGN.md, Routing semantics).

`decide` returns the ordered attempt list; the caller runs it, replaying a failed attempt on the
next one only as `routing.replay.may_replay`, `Route.retry.attempts` and the retry budget allow.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from cutover.core.config_model import Route, Sticky
from cutover.routing.match import HeaderLookup
from cutover.routing.split import SplitTable

__all__ = ["Decision", "Reason", "client_ip", "decide", "is_loopback", "sticky_key"]

Reason = Literal["split", "sticky", "override", "failover", "panic"]
_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Decision:
    route: str
    primary: str
    attempts: tuple[str, ...]  # primary first, then fallbacks
    reason: str  # "split" | "sticky" | "override" | "failover" | "panic"
    bucket: int
    # The split's own choice for the bucket whatever the health (an override: that backend):
    # the side the canary charges. It differs from `primary` while that side is unavailable,
    # so a candidate ejected for its failures keeps being judged on the traffic it lost.
    owner: str | None = None


def decide(
    route: Route,
    table: SplitTable,
    bucket: int,
    available: frozenset[str],
    override: str | None = None,
    *,
    sticky: bool = False,
) -> Decision:
    """Choose the primary backend and the attempt list for one request.

    - `override` naming a backend of the route's split or fallback makes it the primary whatever
      its health ("override"); any other override is ignored.
    - Otherwise the split picks among `available` backends ("sticky" when `sticky`, else "split").
    - When no weighted split backend is available, the available `fallback` backends serve in
      order ("failover": not a retry, it draws nothing from the budget).
    - When none of those is available either, the split's own choice is tried anyway ("panic").

    After the primary, `attempts` lists the route's fallbacks other than the primary: only the
    available ones, in written order; in panic mode all of them, in written order.
    """
    fallback = route.fallback
    if override is not None and (override in table.names or override in fallback):
        rest = [b for b in fallback if b != override and b in available]
        return Decision(route.name, override, (override, *rest), "override", bucket, override)
    owner = table.owner(bucket)
    primary = table.pick(bucket, available)
    if primary is not None:
        rest = [b for b in fallback if b != primary and b in available]
        reason = "sticky" if sticky else "split"
        return Decision(route.name, primary, (primary, *rest), reason, bucket, owner)
    up = [b for b in fallback if b in available]
    if up:
        return Decision(route.name, up[0], tuple(up), "failover", bucket, owner)
    rest = [b for b in fallback if b != owner]
    return Decision(route.name, owner, (owner, *rest), "panic", bucket, owner)


def sticky_key(
    sticky: Sticky, headers: HeaderLookup, cookies: Mapping[str, str], client_ip: str
) -> str | None:
    """The request's sticky key for `sticky`, or `None` when it has none (empty counts as none).

    `headers.get` receives the lowercased header name from the config; `cookies` maps cookie
    names to values; `client_ip` is the result of `client_ip()`.
    """
    kind = sticky.kind
    if kind == "header":
        value = headers.get(sticky.name)
    elif kind == "cookie":
        value = cookies.get(sticky.name)
    else:
        value = client_ip
    return value or None


def client_ip(peer: str, x_forwarded_for: str | None, trusted: tuple[_IPNetwork, ...]) -> str:
    """The client's address: `peer`, unless `peer` is a trusted proxy.

    Then X-Forwarded-For is walked right to left, skipping trusted addresses; the first untrusted
    one is the client. A malformed entry stops the walk and the last address of the trusted chain
    (or `peer`) is returned; when every entry is trusted, the leftmost one is. Entries may carry
    a port (`1.2.3.4:80`, `[::1]:80`); IPv4-mapped IPv6 addresses count as IPv4.
    """
    if not trusted or not x_forwarded_for:
        return peer
    addr = _parse(peer)
    if addr is None or not _is_trusted(addr, trusted):
        return peer
    last = peer
    for entry in reversed(x_forwarded_for.split(",")):
        addr = _parse(entry)
        if addr is None:
            return last
        last = str(addr)
        if not _is_trusted(addr, trusted):
            return last
    return last


def is_loopback(text: str) -> bool:
    """Whether `text` is a loopback address (`127.0.0.0/8`, `::1`, `::ffff:127.x`; a port or
    brackets are allowed); anything unparsable is not."""
    addr = _parse(text)
    return addr is not None and addr.is_loopback


def _is_trusted(addr: _IPAddress, trusted: tuple[_IPNetwork, ...]) -> bool:
    return any(addr in net for net in trusted)


def _parse(text: str) -> _IPAddress | None:
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _is_port_suffix(text[end + 1 :])):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4:port
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _is_port_suffix(text: str) -> bool:
    return text.startswith(":") and text[1:].isdigit()
