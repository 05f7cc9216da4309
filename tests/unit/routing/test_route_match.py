"""routing.match: first match in config order, every condition of a route ANDed."""

from __future__ import annotations

import re

import pytest

from cutover.core.config_model import HeaderMatch, Match, Route
from cutover.routing.match import Router


def route(name: str, **match) -> Route:
    return Route(name=name, match=Match(**match), split=(("go", 100),))


CURL = re.compile(r"curl/")
ROUTES = [
    route("health", path="/healthz"),
    route("api-write", path_prefix="/api", methods=frozenset({"POST", "PUT"})),
    route("beta", path_prefix="/api", headers=(HeaderMatch("x-beta", value="1"),)),
    route("ua", path_prefix="/api", headers=(HeaderMatch("user-agent", regex=CURL),)),
    route("traced", path_prefix="/api", headers=(HeaderMatch("x-trace"),)),
    route("untraced-api", path_prefix="/api", headers=(HeaderMatch("x-debug", present=False),)),
    route("alerts", path_regex=re.compile(r"/alerts/\d+")),
    route("default", path_prefix="/"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("GET", "/healthz", {}, "health"),
        ("GET", "/healthz/deep", {}, "default"),  # exact, not prefix
        ("POST", "/api/items", {}, "api-write"),
        ("PUT", "/apix", {}, "api-write"),  # plain string prefix, like nginx
        ("post", "/api/items", {}, "untraced-api"),  # methods are case-sensitive
        ("GET", "/api/items", {"x-beta": "1"}, "beta"),
        ("GET", "/api/items", {"x-beta": "2"}, "untraced-api"),  # exact value
        ("GET", "/api/items", {"user-agent": "curl/8.5"}, "ua"),
        ("GET", "/api/items", {"user-agent": "my curl/8.5"}, "untraced-api"),  # regex anchored
        ("GET", "/api/items", {"x-trace": ""}, "traced"),  # present, any value
        ("GET", "/api/items", {"x-debug": "1"}, "default"),  # must be absent
        ("GET", "/alerts/42", {}, "alerts"),
        ("GET", "/alerts/42/x", {}, "alerts"),  # regex anchored at the start only
        ("GET", "/v1/alerts/42", {}, "default"),
        ("GET", "/alerts/abc", {}, "default"),
        ("DELETE", "/", {}, "default"),
        ("POST", "/api", {"x-beta": "1"}, "api-write"),  # first match in config order wins
    ],
)
def test_router(method, path, headers, expected) -> None:
    got = Router(ROUTES).match(method, path, headers)
    assert got is not None and got.name == expected


def test_no_match() -> None:
    r = Router([route("a", path_prefix="/a"), route("b", path="/b")])
    assert r.match("GET", "/c", {}) is None
    assert Router([]).match("GET", "/", {}) is None


def test_empty_match_matches_everything() -> None:
    r = Router([route("all")])
    assert r.match("PATCH", "/anything", {}).name == "all"


def test_all_conditions_anded() -> None:
    r = Router(
        [
            route(
                "strict",
                path_prefix="/api",
                path_regex=re.compile(r"/api/v\d"),
                methods=frozenset({"GET"}),
                headers=(HeaderMatch("x-a", value="1"), HeaderMatch("x-b", present=False)),
            )
        ]
    )
    assert r.match("GET", "/api/v2", {"x-a": "1"}) is not None
    assert r.match("GET", "/api/x", {"x-a": "1"}) is None
    assert r.match("HEAD", "/api/v2", {"x-a": "1"}) is None
    assert r.match("GET", "/api/v2", {}) is None
    assert r.match("GET", "/api/v2", {"x-a": "1", "x-b": "y"}) is None


def test_case_insensitive_header_mapping() -> None:
    class CI(dict):
        def get(self, key, default=None):
            for k, v in self.items():
                if k.lower() == key.lower():
                    return v
            return default

    r = Router([route("beta", headers=(HeaderMatch("x-beta", value="on"),))])
    assert r.match("GET", "/", CI({"X-Beta": "on"})).name == "beta"
