"""The `cutover` command line as an operator uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def cutover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cutover", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_accepts_the_demo_config() -> None:
    result = cutover("check-config", "examples/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("examples/demo.yaml: ok")
    assert "go 90/python 10" in result.stdout
    assert "compat 5 rules (profile builtin:alert-history)" in result.stdout


def test_check_config_warns_of_mutating_endpoints_without_a_token(tmp_path: Path) -> None:
    text = (
        "listen: 0.0.0.0:8080\n"
        "backends: {go: http://go:8080}\n"
        "routes: [{name: default, split: {go: 100}}]\n"
        "alerts: {}\n"
    )
    path = tmp_path / "open.yaml"
    path.write_text(text)
    result = cutover("check-config", str(path))
    assert result.returncode == 0, result.stderr  # a warning, not an error
    assert result.stdout.startswith(f"{path}: ok")
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{path}: warning: admin.token: not set")
    assert "/enrichment/mode" in line and "only clients on this host" in line
    path.write_text(text + "admin: {token: s3cret-admin-token}\n")
    result = cutover("check-config", str(path))
    assert result.returncode == 0 and result.stderr == ""


def test_check_config_lists_every_problem_with_its_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "listen: 0.0.0.0:8080\n"
        "admin: off\n"
        "backends:\n"
        "  go: {url: ftp://go:21}\n"
        "  python: {url: http://python:8080, health: {intervall: 5s}}\n"
        "routes:\n"
        "  - name: default\n"
        "    split: {go: 90, python: 5}\n"
        "    fallback: [ruby]\n"
        "    timeout: soon\n"
    )
    result = cutover("check-config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 5, result.stderr
    assert all(line.startswith(str(bad)) for line in lines), lines
    text = result.stderr
    for fragment in (
        "backends.go.url",
        "backends.python.health.intervall",
        "did you mean 'interval'",
        "routes[0].split",
        "100",
        "routes[0].fallback[0]",
        "routes[0].timeout",
    ):
        assert fragment in text, (fragment, text)


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: []\n")
    result = cutover("serve", "-c", str(bad))
    assert result.returncode == 2
    assert "routes" in result.stderr and "Traceback" not in result.stderr


def test_bench_overhead_is_reachable_from_the_cli() -> None:
    result = cutover("bench", "overhead", "--help")
    assert result.returncode == 0, result.stderr
    assert "--workers" in result.stdout and "--rounds" in result.stdout
