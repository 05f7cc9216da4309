"""Bad config files as an operator meets them: `check-config` exits 2 with one line per problem
naming the key path, and a reload (SIGHUP) logs the problems and keeps the running config —
never a traceback, whatever the file holds."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import gateway_config, wait_for
from tests.integration.test_cli import cutover

HEAD = 'backends: {go: "http://go:8080"}\nroutes: [{name: d, split: {go: 100}}]\n'
# name -> (file text, a fragment of the one line expected for it)
BAD_FILES = {
    "unhashable": (HEAD + "access_log: {path: [a]}\n", "access_log.path: expected a file path"),
    "deep": (HEAD + "headers: " + "{a: " * 500 + "1" + "}" * 500 + "\n", "levels of nesting"),
    "deep-list": ("a: " + "[" * 500 + "]" * 500 + "\n", "levels of nesting"),
    "self-alias": (HEAD + "headers: &h {x: *h}\n", "no alias that contains itself"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_check_config_gives_exit_2_and_one_line(tmp_path: Path, name: str) -> None:
    text, fragment = BAD_FILES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    result = cutover("check-config", str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{path}: ") and fragment in lines[0], lines


async def test_sighup_with_bad_files_logs_and_keeps_the_running_config(
    backends, gateway_process
) -> None:
    go, py = await backends("go"), await backends("python")
    config = gateway_config({"go": go.url, "python": py.url})
    gp = await gateway_process(config).ready()

    async def served_by() -> str:
        async with aiohttp.ClientSession() as s, s.get(gp.url + "/") as r:
            assert r.status == 200
            return r.headers["X-Cutover-Backend"]

    for name, (text, fragment) in BAD_FILES.items():
        gp.config_path.write_text(text)
        before = gp.output().count("reload refused")
        gp.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda b=before: gp.output().count("reload refused") > b)
        assert fragment in gp.output(), (name, gp.output())
        assert await served_by() == "go"
    config["routes"][0]["split"] = {"go": 0, "python": 100}
    gp.write_config(config)
    gp.proc.send_signal(signal.SIGHUP)  # the reload task is still there to take a good file
    for _ in range(100):
        if await served_by() == "python":
            break
        await asyncio.sleep(0.05)
    assert await served_by() == "python"
    code = gp.stop()
    output = gp.log_path.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output
    assert "never retrieved" not in output
