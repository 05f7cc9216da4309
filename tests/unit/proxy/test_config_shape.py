"""Config files of any shape get messages naming the key path, never a traceback: values of the
wrong type where a set or dict lookup expects a string, nesting deep enough to exhaust the stack,
aliases that contain themselves or expand to billions of values, and parser bugs."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from cutover.core import configkit as kit
from cutover.core.configkit import MAX_DEPTH, ConfigErrors
from cutover.proxy import config
from cutover.proxy.config import load_config, parse_config

MINIMAL: dict[str, Any] = {
    "backends": {"go": "http://go:8080"},
    "routes": [{"name": "default", "split": {"go": 100}}],
}
HEAD = 'backends: {go: "http://go:8080"}\nroutes: [{name: d, split: {go: 100}}]\n'


def _errors(data: object) -> list[kit.ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(data, "test.yaml", env={})
    return info.value.errors


def _file_errors(tmp_path: Path, text: str) -> list[kit.ConfigError]:
    path = tmp_path / "cutover.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    return info.value.errors


@pytest.mark.parametrize("bad", [["a"], {"a": 1}, 7])
def test_access_log_path_that_is_not_a_string(bad: object) -> None:
    # was: TypeError: unhashable type: 'list' (the value was looked up in a set first)
    (err,) = _errors({**MINIMAL, "access_log": {"path": bad}})
    assert err.path == "access_log.path"
    assert "a file path, or stdout" in err.expected


def test_yaml_nested_past_the_bound_is_refused_with_its_line(tmp_path: Path) -> None:
    # was: RecursionError from PyYAML's composer
    deep = "{a: " * 600 + "1" + "}" * 600
    (err,) = _file_errors(tmp_path, HEAD + f"headers: {deep}\n")
    assert err.path.startswith("line 3, column ")
    assert f"at most {MAX_DEPTH} levels of nesting" in err.expected


def test_yaml_lists_nested_past_the_bound_are_refused(tmp_path: Path) -> None:
    (err,) = _file_errors(tmp_path, "a: " + "[" * 600 + "]" * 600 + "\n")
    assert err.path.startswith("line 1, column ")
    assert "levels of nesting" in err.expected


def test_yaml_nesting_within_the_bound_is_checked_as_usual(tmp_path: Path) -> None:
    inner = "{a: " * (MAX_DEPTH - 3) + "1" + "}" * (MAX_DEPTH - 3)
    (err,) = _file_errors(tmp_path, HEAD + f"headers: {inner}\n")
    assert err.path == "headers.a"  # an unknown key, reported as such


def test_yaml_alias_that_contains_itself(tmp_path: Path) -> None:
    # was: RecursionError while interpolating the self-referential mapping
    (err,) = _file_errors(tmp_path, HEAD + "headers: &h {x: *h}\n")
    assert err.path.startswith("line 3")
    assert "no alias that contains itself" in err.expected


def test_yaml_aliases_that_expand_past_the_bound_are_refused_at_once(tmp_path: Path) -> None:
    # Seven levels of nine aliases stand for 9**7 strings (a few more levels, for billions:
    # expanding them would never end); the file is refused before anything is expanded.
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 7):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    (err,) = _file_errors(tmp_path, HEAD + "\n".join(lines) + "\n")
    assert err.path.startswith("line ")
    assert "values once aliases are expanded" in err.expected


def test_yaml_aliases_in_ordinary_use_still_work(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, HEAD + "limits: &l {max_body: 1MiB}\n"))
    assert config.limits.max_body == 1024 * 1024


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ok.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_data_nested_past_the_bound_is_refused_with_its_path() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = {"a": deep}
    errors = _errors({**MINIMAL, "headers": deep})
    assert [(e.path, e.expected) for e in errors] == [
        ("headers" + ".a" * (MAX_DEPTH - 1), f"at most {MAX_DEPTH} levels of nesting"),
        ("headers.a", "a known key (one of: request_id, backend, override, trusted_proxies)"),
    ]


def test_data_that_contains_itself_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["x"] = loop
    errors = _errors({**MINIMAL, "headers": loop})
    assert errors[0].path == "headers" + ".x" * (MAX_DEPTH - 1)
    assert "levels of nesting" in errors[0].expected


def test_a_parser_that_fails_unforeseen_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one parser costs a message at its key, and every other key is still checked."""

    def broken(ctx: kit.Ctx, value: object, path: str) -> str:
        raise KeyError("bug")

    monkeypatch.setattr(config, "_log_path", broken)
    errors = _errors({**MINIMAL, "access_log": {"path": "/x"}, "workers": 0})
    assert [e.path for e in errors] == ["workers", "access_log.path"]
    assert "the check itself failed" in errors[1].expected
    assert "KeyError" in errors[1].expected
