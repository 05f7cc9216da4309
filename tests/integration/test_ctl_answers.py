"""`cutover ctl` pointed at something that is not the admin API says so, without a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import io

from aiohttp import web

from proxy.cli import main as cli_main


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
