"""Every `cutover` command prints its help: a help text argparse cannot format is a crash."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from cutover.cli import _parser, main
from cutover.ctl import _ms

ROOT = Path(__file__).resolve().parents[3]
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


def test_the_top_level_help_lists_ctl() -> None:
    assert "ctl                 talk to a running gateway's admin API" in _help([])


def test_ctl_imports_only_what_it_needs() -> None:
    """Operators poll `cutover ctl status`: it must not wait for parity, bench or aiohttp."""
    code = (
        "import sys\n"
        "from cutover.cli import main\n"
        "try:\n    main(['ctl', 'status', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('cutover.parity.runner', 'cutover.bench.compare', 'cutover.compat.cli',"
        " 'aiohttp')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.splitlines()[-1] == "[]"
