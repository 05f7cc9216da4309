"""routing.decision: decide(), sticky_key(), client_ip()."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from cutover.core.config_model import Match, Route, Sticky
from cutover.routing.decision import Decision, client_ip, decide, sticky_key
from cutover.routing.split import SplitTable

ROUTE = Route(
    name="default",
    match=Match(path_prefix="/"),
    split=(("go", 90), ("python", 10)),
    fallback=("python", "legacy"),
)
TABLE = SplitTable(ROUTE.split)
GO_BUCKET = 5000  # owned by go (buckets 0..8999)
PY_BUCKET = 9500  # owned by python
ALL = "go python legacy"


def F(names: str = "") -> frozenset[str]:
    return frozenset(names.split())


@pytest.mark.parametrize(
    ("bucket", "available", "override", "sticky", "expected"),
    [
        # split among healthy backends
        (GO_BUCKET, ALL, None, False, ("go", "go python legacy", "split")),
        (GO_BUCKET, ALL, None, True, ("go", "go python legacy", "sticky")),
        (PY_BUCKET, ALL, None, False, ("python", "python legacy", "split")),
        # fallbacks that are unavailable are left out
        (GO_BUCKET, "go legacy", None, False, ("go", "go legacy", "split")),
        (GO_BUCKET, "go", None, False, ("go", "go", "split")),
        # one split backend down: its users are re-mapped to the other
        (PY_BUCKET, "go legacy", None, True, ("go", "go legacy", "sticky")),
        (GO_BUCKET, "python", None, False, ("python", "python", "split")),
        # no split backend available: fallbacks serve directly
        (GO_BUCKET, "legacy", None, False, ("legacy", "legacy", "failover")),
        # nothing available: the split's choice anyway, then every fallback
        (GO_BUCKET, "", None, False, ("go", "go python legacy", "panic")),
        (PY_BUCKET, "", None, True, ("python", "python legacy", "panic")),
        (GO_BUCKET, "unrelated", None, False, ("go", "go python legacy", "panic")),
        # override: a split or fallback backend, whatever its health
        (GO_BUCKET, ALL, "python", False, ("python", "python legacy", "override")),
        (GO_BUCKET, "go python", "legacy", False, ("legacy", "legacy python", "override")),
        (GO_BUCKET, "", "go", False, ("go", "go", "override")),
        # an override outside the route is ignored
        (GO_BUCKET, "go python", "elsewhere", False, ("go", "go python", "split")),
    ],
)
def test_decide(bucket, available, override, sticky, expected) -> None:
    d = decide(ROUTE, TABLE, bucket, F(available), override, sticky=sticky)
    primary, attempts, reason = expected
    assert (d.primary, d.attempts, d.reason) == (primary, tuple(attempts.split()), reason)
    assert d.route == "default" and d.bucket == bucket
    assert d.attempts[0] == d.primary
    assert len(set(d.attempts)) == len(d.attempts)


def test_failover_keeps_fallback_order() -> None:
    route = Route(
        name="r",
        match=Match(),
        split=(("go", 100),),
        fallback=("a", "b", "c"),
    )
    d = decide(route, SplitTable(route.split), 1, F("c a"))
    assert d == Decision("r", "a", ("a", "c"), "failover", 1, "go")


@pytest.mark.parametrize(
    ("bucket", "available", "override", "owner"),
    [
        (GO_BUCKET, ALL, None, "go"),
        (GO_BUCKET, "python legacy", None, "go"),  # go unavailable: python serves, go's share
        (GO_BUCKET, "legacy", None, "go"),  # failover
        (GO_BUCKET, "", None, "go"),  # panic
        (PY_BUCKET, "go", None, "python"),
        (GO_BUCKET, ALL, "legacy", "legacy"),  # an override charges the forced backend
    ],
)
def test_the_owner_is_the_splits_choice_whatever_the_health(
    bucket: int, available: str, override: str | None, owner: str
) -> None:
    """The canary charges the owner: an ejected candidate keeps its share of the verdict."""
    assert decide(ROUTE, TABLE, bucket, F(available), override).owner == owner


def test_decision_is_frozen() -> None:
    d = decide(ROUTE, TABLE, 1, F("go"))
    with pytest.raises(AttributeError):
        d.primary = "python"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("sticky", "headers", "cookies", "ip", "expected"),
    [
        (Sticky("header", "x-request-user"), {"x-request-user": "alice"}, {}, "1.2.3.4", "alice"),
        (Sticky("header", "x-request-user"), {}, {}, "1.2.3.4", None),
        (Sticky("header", "x-request-user"), {"x-request-user": ""}, {}, "1.2.3.4", None),
        (Sticky("cookie", "cutover_id"), {}, {"cutover_id": "abc"}, "1.2.3.4", "abc"),
        (Sticky("cookie", "cutover_id"), {}, {"other": "abc"}, "1.2.3.4", None),
        (Sticky("cookie", "cutover_id"), {}, {"cutover_id": ""}, "1.2.3.4", None),
        (Sticky("client_ip"), {}, {}, "1.2.3.4", "1.2.3.4"),
        (Sticky("client_ip"), {}, {}, "", None),
    ],
)
def test_sticky_key(sticky, headers, cookies, ip, expected) -> None:
    assert sticky_key(sticky, headers, cookies, ip) == expected


TRUSTED = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        # no trusted proxies configured: always the peer
        ("10.0.0.1", "6.6.6.6", (), "10.0.0.1"),
        # untrusted peer: X-Forwarded-For is ignored (it could be forged)
        ("8.8.8.8", "6.6.6.6", TRUSTED, "8.8.8.8"),
        # trusted peer without X-Forwarded-For
        ("10.0.0.1", None, TRUSTED, "10.0.0.1"),
        ("10.0.0.1", "", TRUSTED, "10.0.0.1"),
        # trusted peer: walk right to left, skipping trusted addresses
        ("10.0.0.1", "1.1.1.1", TRUSTED, "1.1.1.1"),
        ("10.0.0.1", "6.6.6.6, 1.1.1.1, 10.0.0.2", TRUSTED, "1.1.1.1"),
        ("10.0.0.1", "6.6.6.6,1.1.1.1 ,10.0.0.2,10.9.9.9", TRUSTED, "1.1.1.1"),
        # every entry trusted: the leftmost
        ("10.0.0.1", "10.0.0.3, 10.0.0.2", TRUSTED, "10.0.0.3"),
        # malformed entry stops the walk: the last trusted-chain address, or the peer
        ("10.0.0.1", "1.1.1.1, garbage, 10.0.0.2", TRUSTED, "10.0.0.2"),
        ("10.0.0.1", "1.1.1.1, unknown", TRUSTED, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1, ", TRUSTED, "10.0.0.1"),
        # ports and brackets
        ("10.0.0.1", "1.1.1.1:4711", TRUSTED, "1.1.1.1"),
        ("10.0.0.1", "[2001:db8::1]:443", TRUSTED, "2001:db8::1"),
        ("10.0.0.1", "[2001:db8::1]", TRUSTED, "2001:db8::1"),
        ("10.0.0.1", "[2001:db8::1]x", TRUSTED, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1:http", TRUSTED, "10.0.0.1"),
        # IPv6 and IPv4-mapped addresses
        ("fd00::5", "2001:db8::7, fd00::1", TRUSTED, "2001:db8::7"),
        ("::ffff:10.0.0.1", "1.1.1.1", TRUSTED, "1.1.1.1"),
        ("10.0.0.1", "::ffff:10.0.0.9, ::ffff:1.1.1.1", TRUSTED, "1.1.1.1"),
        # a malformed peer is returned as it is
        ("not-an-ip", "1.1.1.1", TRUSTED, "not-an-ip"),
    ],
)
def test_client_ip(peer, xff, trusted, expected) -> None:
    assert client_ip(peer, xff, trusted) == expected
