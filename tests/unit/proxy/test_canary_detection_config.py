"""`canary.recent`, `canary.confidence` and `canary.rollback_to`: the detection's configuration."""

from __future__ import annotations

from typing import Any

import pytest

from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import parse_config
from cutover.routing.canary import CanaryConfig, RecentLane


def _data(canary: dict[str, Any]) -> dict[str, Any]:
    return {
        "backends": {"go": "http://go:8080", "python": "http://python:8080"},
        "routes": [{"name": "api", "split": {"go": 10, "python": 90}}],
        "canary": {"baseline": "python", "candidate": "go", **canary},
    }


def _canary(canary: dict[str, Any]) -> CanaryConfig:
    section = parse_config(_data(canary), "t.yaml", env={}).canary
    assert isinstance(section, CanaryConfig)
    return section


def _errors(canary: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(_data(canary), "t.yaml", env={})
    return [(e.path, e.expected) for e in info.value.errors]


def test_defaults() -> None:
    cfg = _canary({})
    assert cfg.rollback_to == "zero"
    assert cfg.criteria.confidence == 0.999999 and cfg.criteria.alpha == 1e-6
    assert cfg.criteria.recent == RecentLane(6, 0.999998, 3, 100)


def test_every_key() -> None:
    cfg = _canary(
        {
            "rollback_to": "last_good_step",
            "confidence": 0.9999,
            "window": "2m",
            "recent": {"window": "10s", "confidence": 0.99999, "min_errors": 5,
                       "min_requests": 50},
        }
    )  # fmt: skip
    assert cfg.rollback_to == "last_good_step" and cfg.window == 120
    assert cfg.criteria.recent == RecentLane(10, 0.99999, 5, 50)
    assert cfg.criteria.alpha == pytest.approx(1e-4)


def test_a_window_as_short_as_the_recent_lane_is_judged_alone() -> None:
    assert _canary({"window": "6s"}).criteria.recent is None
    assert _canary({"window": "5s", "recent": {"min_errors": 4}}).criteria.recent is None
    assert _canary({"window": "7s"}).criteria.recent == RecentLane()


@pytest.mark.parametrize("off", ["off", False, None])
def test_the_recent_lane_can_be_turned_off(off: object) -> None:
    assert _canary({"recent": off}).criteria.recent is None


@pytest.mark.parametrize(
    ("canary", "path", "expected"),
    [
        ({"rollback_to": "last"}, "canary.rollback_to", "zero or last_good_step"),
        ({"rollback_to": 0}, "canary.rollback_to", "a non-empty string"),
        ({"confidence": 1}, "canary.confidence", "a number > 0.5 and < 1"),
        ({"confidence": 0.5}, "canary.confidence", "a number > 0.5"),
        ({"recent": {"window": "60s"}}, "canary.recent.window", "shorter than canary.window"),
        ({"recent": {"window": "2.5s"}}, "canary.recent.window", "whole seconds"),
        ({"recent": {"window": "0s"}}, "canary.recent.window", "whole seconds"),
        ({"recent": {"min_errors": 0}}, "canary.recent.min_errors", "an integer >= 1"),
        ({"recent": {"min_requests": "many"}}, "canary.recent.min_requests", "an integer"),
        ({"recent": {"confidence": 2}}, "canary.recent.confidence", "< 1"),
        ({"recent": {"windw": "5s"}}, "canary.recent.windw", "a known key"),
        ({"recent": "fast"}, "canary.recent", "a mapping"),
    ],
)
def test_bad_values_name_the_key(canary: dict[str, Any], path: str, expected: str) -> None:
    errors = _errors(canary)
    assert [p for p, _ in errors] == [path], errors
    assert expected in errors[0][1]
