"""The pytest plugin in a pytester run: the seeds' parity test, done structurally."""

from __future__ import annotations

import asyncio
import importlib.metadata
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.parity_samples import Sample

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

TESTS = """
def test_history_has_every_alert(parity):
    parity.get("/history?limit=3")

def test_alert_once_the_renames_are_ignored(parity):
    result = parity.get("/alerts/7", ignore=["$.alertname", "$.alert_name", "$.count"])
    assert result.json("primary")["id"] == 7

def test_version_text(parity):
    parity.get("/version")

def test_compare_without_asserting(parity):
    result = parity.compare("GET", "/alerts/1", samples=3)
    assert {d.field for d in result.reported} == {"$.alertname", "$.alert_name", "$.count"}
    assert {"$.generated_at", "$.request_id", "$.tags[*]"} <= result.noise
"""


@pytest.fixture
def sample_urls() -> Iterator[tuple[str, str]]:
    """The two sample implementations, served from a thread (the pytester run blocks)."""
    loop = asyncio.new_event_loop()
    primary, candidate = Sample(False), Sample(True)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    for s in (primary, candidate):
        asyncio.run_coroutine_threadsafe(s.start(), loop).result(30)
    try:
        yield primary.url, candidate.url
    finally:
        for s in (primary, candidate):
            asyncio.run_coroutine_threadsafe(s.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


# Plugins the inner runs do not need (blocking one that is not installed is harmless).
UNRELATED = ("hypothesispytest", "benchmark", "anyio", "aiohttp", "asyncio", "cacheprovider")


def plugin_args() -> list[str]:
    """Load the plugin by name unless the installed entry point already does."""
    args = [a for name in UNRELATED for a in ("-p", f"no:{name}")]
    for ep in importlib.metadata.entry_points(group="pytest11"):
        if ep.value == "cutover.parity.pytest_plugin":
            return args
    return [*args, "-p", "cutover.parity.pytest_plugin"]


def test_entry_point_is_declared() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["entry-points"]["pytest11"] == {
        "cutover-parity": "cutover.parity.pytest_plugin"
    }


def test_plugin_reports_planted_differences_and_passes_noise(
    pytester: pytest.Pytester, sample_urls: tuple[str, str]
) -> None:
    primary, candidate = sample_urls
    pytester.makepyfile(test_parity=TESTS)
    result = pytester.runpytest(
        *plugin_args(), "--parity-primary", primary, "--parity-candidate", candidate, "-q"
    )
    result.assert_outcomes(passed=2, failed=2)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*parity: GET /history?limit=3: the candidate differs from the primary",
            "*$.alerts[[]2]*missing*primary: {*Alert3*}*candidate: null*",
            "*parity: GET /version: the candidate differs from the primary",
            '*body:2*text*primary: "version: 1.0"*candidate: "version: 2.0"*',
        ]
    )
    for noise in ("$.generated_at ", "$.request_id ", "$.tags[", "body:3"):
        assert noise not in text
    assert "noisy field(s) ignored" in text


def test_plugin_reads_a_parity_config(
    pytester: pytest.Pytester, sample_urls: tuple[str, str]
) -> None:
    primary, candidate = sample_urls
    pytester.makepyfile(test_cfg="def test_alert(parity):\n    parity.get('/alerts/3')\n")
    rules = pytester.path / "parity.yaml"
    rules.write_text("parity:\n  ignore: [$.alertname, $.alert_name, $.count]\n")
    result = pytester.runpytest(
        *plugin_args(), "--parity-primary", primary, "--parity-candidate", candidate,
        "--parity-config", str(rules),
    )  # fmt: skip
    result.assert_outcomes(passed=1)


def test_plugin_skips_without_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_parity=TESTS)
    result = pytester.runpytest(*plugin_args(), "-rs")
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["*parity: give --parity-primary URL and --parity-candidate URL*"])
