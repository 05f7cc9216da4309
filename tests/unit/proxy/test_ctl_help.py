"""Every `cutover` command prints its help: a help text argparse cannot format is a crash."""

from __future__ import annotations

import contextlib
import io

import pytest

from proxy.cli import _parser, main
from proxy.ctl import _ms

CTL_COMMANDS = ["status", "weights", "rollback", "promote", "pause", "resume", "events", "whoami"]


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def test_ctl_help_names_every_command() -> None:
    text = _help(["ctl"])
    assert "baseline takes 100% (all canary routes, or ROUTE)" in text
    for command in CTL_COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", CTL_COMMANDS)
def test_every_ctl_command_has_help(command: str) -> None:
    assert f"cutover ctl {command}" in _help(["ctl", command])


def test_every_top_level_command_has_help() -> None:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        if name != "bench":  # `bench overhead --help` is bench.overhead's own parser
            assert "usage: cutover" in _help([name])


def test_latencies_read_na_before_the_window_has_any() -> None:
    assert _ms(None) == "n/a"
    assert _ms(12.5) == "12.5 ms"
