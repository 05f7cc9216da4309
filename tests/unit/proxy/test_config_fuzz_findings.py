"""What the config fuzzer (test_fuzz_config.py) found: each a value of an unexpected type or
shape that made a section's parser raise instead of reporting the key. One minimal case each."""

from __future__ import annotations

from typing import Any

import pytest

from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import load_config, parse_config

BASE: dict[str, Any] = {
    "backends": {"go": "http://go:8080", "python": "http://python:8080"},
    "routes": [{"name": "default", "split": {"go": 100}}],
}


def only(data: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config({**BASE, **data}, "c.yaml", env={})
    (error,) = info.value.errors
    assert "the check itself failed" not in error.expected
    return error.path, error.expected


def target(**fields: object) -> dict[str, Any]:
    return {"publishing": {"targets": [{"name": "t", **fields}]}}


def test_publishing_target_type_that_is_a_list() -> None:
    # was: TypeError: unhashable type: 'list' (looked up in a dict of types)
    path, expected = only(target(type=["rootly"], token="x"))
    assert path == "publishing.targets[0].type"
    assert expected.startswith("one of ")


def test_publishing_rate_limit_with_keys_of_several_types() -> None:
    # was: TypeError: '<' not supported between 'str' and 'int' (sorting the unknown keys)
    path, expected = only(target(type="webhook", url="http://h/x", rate_limit={1: 2, "x": 3}))
    assert path == "publishing.targets[0].rate_limit"
    assert "only the keys rate and burst (not 1)" in expected


def test_a_compat_profile_path_with_nul() -> None:
    # was: ValueError: embedded null byte (from open())
    path, expected = only({"compat": "profile\x00.yaml"})
    assert path == "compat"
    assert expected.startswith("a readable UTF-8 profile file (embedded null byte)")


@pytest.mark.parametrize(
    ("text", "where", "tag"),
    [
        ("!!int x\n", "line 1, column 1", "!!int"),  # was: ValueError from int()
        ("a: !!bool maybe\n", "line 1, column 4", "!!bool"),  # was: KeyError
        ("a: [1, !!timestamp 2025-13-45]\n", "line 1, column 8", "!!timestamp"),
        ("a: !!float abc\n", "line 1, column 4", "!!float"),
    ],
)
def test_a_yaml_value_its_tag_cannot_hold(tmp_path, text: str, where: str, tag: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cutover.yaml"
    path.write_text(text)
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    (error,) = info.value.errors
    assert error.path == where
    assert error.expected.startswith(f"valid YAML (a value that {tag} can hold (")
