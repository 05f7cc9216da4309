"""What both listener paths do around the attempt loop: a request's facts become a decision,
and a finished request is booked. One module, so that the aiohttp path (`proxy.server`) and
the fast path (`proxy.fastpath`) cannot drift apart.

    decision = decide_request(gw, route, state, outcome, headers, cookies, peer, memo)
    ... the attempt loop ...
    book_request(gw, count, route_name, primary, outcome, status, ...)   # metrics, observers, log
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from cutover.proxy.headers import sticky_cookie
from cutover.proxy.host import RequestRecord
from cutover.routing.decision import Decision, client_ip, decide, sticky_key
from cutover.routing.murmur import bucket_of

if TYPE_CHECKING:
    from cutover.core.config_model import Route
    from cutover.proxy.attempts import ProxyOutcome
    from cutover.proxy.server import Gateway, RuntimeState

__all__ = ["Headers", "book_request", "decide_request"]

log = logging.getLogger("cutover")

MEMO_SIZE = 16384  # decisions kept: buckets x health states, rebuilt when full


class Headers(Protocol):
    """The request's headers, as both listeners can show them (case-insensitive `get`)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def __contains__(self, key: object) -> bool: ...


def decide_request(
    gw: Gateway,
    route: Route,
    state: RuntimeState,
    outcome: ProxyOutcome,
    headers: Headers,
    cookies: Callable[[Any], Mapping[str, str]],
    peer: str,
    memo: dict[tuple[Any, ...], Decision],
) -> Decision:
    """The routing decision for one request: sticky key (a new cookie is set on `outcome`;
    `cookies(headers)` parses them, read only for a cookie-sticky route),
    bucket, override header, health — then `routing.decide`, memoized per (route, table,
    bucket, health, override) since those are all it reads."""
    config = gw.config
    sticky = route.sticky
    key: str | None = None
    if sticky is not None:
        ip = (
            client_ip(peer, headers.get("X-Forwarded-For"), config.headers.trusted_proxies)
            if sticky.kind == "client_ip"
            else peer
        )
        key = sticky_key(sticky, headers, cookies(headers) if sticky.kind == "cookie" else {}, ip)
        if key is None and sticky.kind == "cookie":
            key = "%032x" % random.getrandbits(128)  # noqa: UP031
            outcome.set_cookie = sticky_cookie(
                sticky.name, key, sticky.cookie_ttl, sticky.cookie_secure
            )
    bucket = bucket_of(key) if key is not None else int(random.random() * 10_000)
    override = headers.get(config.headers.override) if config.headers.override else None
    available = gw.health.available(gw.clock.monotonic())
    table = state.tables[route.name]
    args = (route.name, table, bucket, available, override, key is not None)
    decision = memo.get(args)
    if decision is None:
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        decision = memo[args] = decide(
            route, table, bucket, available, override=override, sticky=key is not None
        )
    return decision


def book_request(
    gw: Gateway,
    count: Callable[[str, str, int, float], None],
    route_name: str,
    primary: str | None,
    outcome: ProxyOutcome,
    status: int,
    elapsed: float,
    method: str,
    path: str,
    request_id: str,
    sent: int,
    client: str | None,
    owner: str | None = None,
) -> None:
    """Book a finished request (`route_name` "-" when none matched; `elapsed` in seconds;
    `sent`: bytes to the client): `count(route, backend, status, elapsed)` (each listener
    reaches the same metrics its own way), served counts, observers (isolated: one that fails
    is logged) and the access log."""
    backend = outcome.backend or "-"
    count(route_name, backend, status, elapsed)
    if outcome.backend:
        gw.served[outcome.backend] += 1
    if gw.observers and route_name != "-":
        record = RequestRecord(
            route=route_name,
            primary=primary,
            backend=outcome.backend,
            status=status,
            duration=elapsed,
            failures=tuple(outcome.failures),
            method=method,
            path=path,
            owner=owner,
        )
        for observe in gw.observers:
            try:
                observe(record)
            except Exception:
                log.exception("request observer failed")
    access_log = gw.access_log
    if access_log is not None:
        access_log.write(
            {
                "ts": gw.clock.now(),
                "request_id": request_id,
                "method": method,
                "path": path,
                "route": route_name,
                "backend": backend,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "bytes_sent": sent,
                "fallback_from": outcome.fallback_from,
                "client": client,
            }
        )
