"""cutover.run: the worker count a supervisor runs reaches its workers' config."""

from __future__ import annotations

import pytest

from cutover.proxy.config import parse_config
from cutover.run import _with_worker_count


def _config(workers: int = 1):  # type: ignore[no-untyped-def]
    data = {
        "listen": "127.0.0.1:0",
        "workers": workers,
        "backends": {"go": {"url": "http://127.0.0.1:9"}},
        "routes": [{"name": "all", "split": {"go": 100}}],
    }
    return parse_config(data, "t.yaml", env={})


def test_the_command_line_count_wins_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUTOVER_WORKERS", raising=False)
    assert _with_worker_count(_config(1), 3).workers == 3
    assert _with_worker_count(_config(2)).workers == 2  # no count given: the file's


def test_a_supervisors_workers_learn_the_count_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUTOVER_WORKERS", "4")
    assert _with_worker_count(_config(1)).workers == 4  # also on reload
    monkeypatch.setenv("CUTOVER_WORKERS", "x")
    assert _with_worker_count(_config(1)).workers == 1
