"""`canary.promotion` and `canary.routes.<name>.promotion`: the parity gate's configuration."""

from __future__ import annotations

from typing import Any

import pytest

from cutover.core.configkit import ConfigError, ConfigErrors, format_errors
from cutover.proxy.config import parse_config
from cutover.routing.canary import CanaryConfig, PromotionGate

MIRRORED = {"name": "api", "split": {"go": 10, "python": 90}, "mirror": {"to": "go", "percent": 5}}
PLAIN = {"name": "hooks", "match": {"path_prefix": "/hooks"}, "split": {"go": 10, "python": 90}}
OTHER = {"name": "legacy", "match": {"path_prefix": "/old"}, "split": {"python": 100}}


def _data(canary: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "backends": {"go": "http://go:8080", "python": "http://python:8080"},
        "routes": routes or [MIRRORED],
        "canary": {"baseline": "python", "candidate": "go", **canary},
    }


def _canary(canary: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> CanaryConfig:
    section = parse_config(_data(canary, routes), "t.yaml", env={}).canary
    assert isinstance(section, CanaryConfig)
    return section


def _errors(
    canary: dict[str, Any], routes: list[dict[str, Any]] | None = None
) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(_data(canary, routes), "t.yaml", env={})
    return info.value.errors


def test_no_promotion_key_means_no_gate() -> None:
    cfg = _canary({})
    assert cfg.promotion == PromotionGate() and cfg.promotion_for("api").min_parity is None


@pytest.mark.parametrize(("value", "expected"), [(0.99, 0.99), (0, 0.0), (1, 1.0), ("off", None)])
def test_min_parity_from_0_to_1(value: object, expected: float | None) -> None:
    cfg = _canary({"promotion": {"min_parity": value}})
    assert cfg.promotion_for("api").min_parity == expected


@pytest.mark.parametrize("value", [1.5, -0.1, "high", True])
def test_min_parity_outside_0_to_1_is_refused(value: object) -> None:
    (err,) = _errors({"promotion": {"min_parity": value}})
    assert err.path == "canary.promotion.min_parity"
    assert "a number >= 0 and <= 1" in err.expected


def test_unknown_promotion_keys_are_refused() -> None:
    (err,) = _errors({"promotion": {"min_parrity": 0.9}})
    assert err.path == "canary.promotion.min_parrity" and "min_parity" in err.expected


def test_a_gate_on_a_route_without_mirror_is_an_error() -> None:
    errors = _errors({"promotion": {"min_parity": 0.99}}, [MIRRORED, PLAIN])
    assert [e.path for e in errors] == ["canary.promotion.min_parity"], format_errors(
        ConfigErrors(errors)
    )
    assert "route 'hooks' has none" in errors[0].expected
    assert "canary.routes.hooks.promotion.min_parity: off" in errors[0].expected


def test_a_route_can_turn_the_gate_off_or_set_its_own() -> None:
    routes = [MIRRORED, PLAIN, OTHER]
    cfg = _canary(
        {
            "promotion": {"min_parity": 0.99},
            "routes": {"hooks": {"promotion": {"min_parity": "off"}}},
        },
        routes,
    )
    assert cfg.promotion_for("api").min_parity == 0.99
    assert cfg.promotion_for("hooks").min_parity is None
    cfg = _canary({"routes": {"api": {"promotion": {"min_parity": 0.999}}}}, routes)
    assert cfg.promotion_for("api").min_parity == 0.999
    assert cfg.promotion_for("hooks").min_parity is None  # a route without mirror, no gate: fine


def test_a_route_gate_without_mirror_names_the_route_key() -> None:
    (err,) = _errors({"routes": {"hooks": {"promotion": {"min_parity": 0.9}}}}, [MIRRORED, PLAIN])
    assert err.path == "canary.routes.hooks.promotion.min_parity"
    assert "has none" in err.expected and "remove it" in err.expected


def test_route_settings_must_name_a_canary_route() -> None:
    errors = _errors(
        {"routes": {"nope": {"promotion": {"min_parity": 0.9}}, "legacy": {}}}, [MIRRORED, OTHER]
    )
    assert {e.path: e.expected for e in errors} == {
        "canary.routes.nope": "the name of a route defined under routes",
        "canary.routes.legacy": "a route whose split names both python and go "
        "(the canary does not apply here)",
    }
    (err,) = _errors({"routes": {"api": {"steps": [10]}}})
    assert err.path == "canary.routes.api.steps"
    (err,) = _errors({"routes": {"api": {"promotion": {"min_parity": 2}}}})
    assert err.path == "canary.routes.api.promotion.min_parity"
