"""cutover.run._reload: whatever goes wrong while loading the file is logged and the running
config kept; the reload task never dies with an exception nobody retrieves."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cutover import run


class _Gateway:
    def __init__(self) -> None:
        self.reloaded: list[object] = []

    async def reload(self, config: object) -> None:
        self.reloaded.append(config)


@pytest.mark.parametrize("exc", [RecursionError("deep"), TypeError("unhashable"), MemoryError()])
async def test_an_unforeseen_failure_to_load_is_logged_and_nothing_applied(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, exc: BaseException
) -> None:
    def load_config(path: str) -> object:
        raise exc

    monkeypatch.setattr(run, "load_config", load_config)
    gw = _Gateway()
    with caplog.at_level(logging.ERROR, logger="cutover"):
        await run._reload(gw, "/etc/cutover.yaml")  # returns: nothing escapes the task
    assert gw.reloaded == []
    (record,) = caplog.records
    assert "reload refused, keeping the running config" in record.getMessage()
    assert "/etc/cutover.yaml" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is exc


async def test_a_bad_file_is_refused_with_its_key_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cutover.yaml"
    path.write_text(
        'backends: {go: "http://go:8080"}\nroutes: [{name: d, split: {go: 100}}]\n'
        "access_log: {path: [a]}\n"
    )
    gw = _Gateway()
    with caplog.at_level(logging.ERROR, logger="cutover"):
        await run._reload(gw, str(path))
    assert gw.reloaded == []
    assert f"{path}: access_log.path: expected a file path" in caplog.text
