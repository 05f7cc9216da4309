"""`cutover ctl` pointed at something that is not the admin API says so, without a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from cutover.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def _ctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def test_a_listener_that_answers_text_is_refused_with_a_message() -> None:
    async def text(request: web.Request) -> web.Response:
        return web.Response(text="GET /admin/routes HTTP/1.1")  # an echo server, say

    app = web.Application()
    app.router.add_get("/{tail:.*}", text)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        url = f"http://127.0.0.1:{port}"
        code, out, err = await asyncio.to_thread(_ctl, "ctl", "--admin", url, "status")
        assert code == 1 and out == ""
        assert err == f"cutover ctl: {url}/admin/routes did not answer JSON: is it the admin API?\n"
    finally:
        await runner.cleanup()


async def test_a_reader_that_stops_early_is_not_an_error() -> None:
    """`cutover ctl events | head -1` under `set -o pipefail`: exit 0, nothing on stderr."""
    events = [
        {"id": i, "at": "2023-11-14T22:13:20.000Z", "route": "default", "kind": "verdict",
         "actor": "controller", "reason": "healthy " * 20}
        for i in range(20000)
    ]  # fmt: skip

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"events": events})

    app = web.Application()
    app.router.add_get("/admin/events", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        command = (
            f"{sys.executable} -m cutover ctl --admin http://127.0.0.1:{port} "
            "events --limit 20000 | head -1"
        )
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-o", "pipefail", "-c", command],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert (done.returncode, done.stderr) == (0, "")
        assert "#0 default verdict by controller" in done.stdout
    finally:
        await runner.cleanup()


def test_event_times_are_read_as_rfc3339_and_as_older_unix_seconds() -> None:
    from cutover.ctl import _seconds

    assert _seconds("2023-11-14T22:13:20.000Z") == 1.7e9
    assert _seconds("2023-11-14T22:13:20Z") == 1.7e9
    assert _seconds(1.7e9) == 1.7e9  # a gateway from before the convention
