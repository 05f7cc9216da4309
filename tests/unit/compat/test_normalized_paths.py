"""Compat rules match the normalized path, as routes do (core.http1.normalize_path). Pure."""

from __future__ import annotations

from typing import Any

import pytest

from cutover.compat.config import CompatConfig
from cutover.compat.rules import RuleSet
from cutover.core.http1 import normalize_path
from cutover.proxy.config import parse_config

RULES = [
    {"name": "alerts", "match": {"method": "GET", "path": "/api/v1/alerts"},
     "rewrite": {"applies_to": "new", "path": "/api/v2/alerts"}},
    {"name": "item", "match": {"path": "/api/v1/alerts/{id}"},
     "rewrite": {"applies_to": "new", "path": "/api/v2/alerts/{id}"}},
    {"name": "written-encoded", "match": {"path": "/api/v1/%73ilences"}, "gone": {}},
    {"name": "unicode", "match": {"path": "/caf\u00e9/{rest*}"}, "gone": {}},
]  # fmt: skip


def ruleset() -> RuleSet:
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "backends": {"go": {"url": "http://127.0.0.1:1"}, "py": {"url": "http://127.0.0.1:2"}},
        "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"go": 100}}],
        "compat": {"backends": {"new": "go", "legacy": "py"}, "rules": RULES},
    }
    section = parse_config(data, "cutover.yaml").compat
    assert isinstance(section, CompatConfig)
    return RuleSet(tuple(section.rules))


def hit(path: str, method: str = "GET") -> tuple[str, dict[str, str]] | None:
    found = ruleset().match(method, normalize_path(path), dict, {})
    return None if found is None else (found.rule.name, dict(found.params))


@pytest.mark.parametrize(
    "path",
    ["/api/v1/alerts", "/api/v1/%61lerts", "/api/v1/%61%6c%65%72%74%73", "/api/x/../v1/alerts",
     "/%61pi/v1/./alerts"],
)  # fmt: skip
def test_every_spelling_of_a_path_hits_its_rule(path: str) -> None:
    assert hit(path) == ("alerts", {})


def test_an_encoded_slash_is_not_a_slash() -> None:
    assert hit("/api/v1%2Falerts") is None
    assert hit("/api%2fv1/alerts") is None


def test_parameters_carry_the_normalized_encoding() -> None:
    # unreserved escapes decoded, the others kept (uppercase hex): still a valid path segment
    assert hit("/api/v1/alerts/%41b%2fc%20d") == ("item", {"id": "Ab%2Fc%20d"})


def test_templates_are_compared_in_the_normalized_form() -> None:
    assert hit("/api/v1/silences") == ("written-encoded", {})
    assert hit("/api/v1/%73ilences") == ("written-encoded", {})
    assert hit("/caf%C3%A9/x") == ("unicode", {"rest": "x"})
    assert hit("/caf%c3%a9/x") == ("unicode", {"rest": "x"})
