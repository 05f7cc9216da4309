"""`cutover render nginx`: accepted by `nginx -t`, and a live nginx splits and falls back as
cutover does (the same users on the same side). Needs the nginx binary (.ci/run installs it)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from cutover.app import start_gateway
from cutover.cli import main as cli_main
from cutover.nginx.render import render
from cutover.proxy.config import load_config, parse_config
from cutover.routing.murmur import bucket_of
from cutover.routing.split import SplitTable
from tests.conftest import EchoBackend, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _config(go: EchoBackend, py: EchoBackend, port: int, **route: Any) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "admin": "off",
        "access_log": {"enabled": False},
        "backends": {
            "python": {"url": py.url, "health": None},
            "go": {"url": go.url + "/v2", "health": None},
        },
        "routes": [
            {
                "name": "default",
                "match": {"path_prefix": "/"},
                "split": {"python": 70, "go": 30},
                "sticky": {"header": "X-Request-User"},
                "fallback": ["python"],
                **route,
            }
        ],
        "canary": {"baseline": "python", "candidate": "go"},
    }


def _nginx_cmd(prefix: Path, conf: Path, *extra: str) -> list[str]:
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    return [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
            "-g", directives, *extra]  # fmt: skip


@contextlib.asynccontextmanager
async def running_nginx(tmp_path: Path, text: str, port: int) -> AsyncIterator[str]:
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    check = subprocess.run(_nginx_cmd(tmp_path, conf, "-t"), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(_nginx_cmd(tmp_path, conf), stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)  # graceful stop of master and workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


async def _who(
    s: aiohttp.ClientSession, url: str, user: str, method: str = "GET"
) -> tuple[str, str]:
    async with s.request(method, url + "/x?q=1", headers={"X-Request-User": user}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        return body["backend"], body["path"]


def test_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    go, py = EchoBackend("go"), EchoBackend("python")
    go.port, py.port = 8001, 8002
    config = parse_config(_config(go, py, 8080), str(tmp_path / "cutover.yaml"))
    rendered = render(config)
    conf = tmp_path / "nginx.conf"
    conf.write_text(rendered.text)
    check = subprocess.run(_nginx_cmd(tmp_path, conf, "-t"), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    # the candidate is listed first with its percentage, as cutover lays out its buckets
    assert '30% "http://cutover_default_go/v2";' in rendered.text
    assert '* "http://cutover_default_python";' in rendered.text
    assert "keepalive 64;" in rendered.text
    assert "proxy_next_upstream error timeout http_502 http_503 http_504;" in rendered.text
    # client side (http block) and every upstream: far above nginx's default of 1,000
    assert rendered.text.count("keepalive_requests 10000;") == 1 + 2
    assert "proxy_buffer_size 64k;" in rendered.text
    assert "client_body_buffer_size 64k;" in rendered.text


async def test_live_nginx_forwards_headers_and_keeps_busy_connections_open(
    tmp_path: Path,
) -> None:
    """X-Forwarded-* and X-Request-ID as cutover sends them; 1,100 requests on one client
    connection ride one upstream connection (nginx's default would close both at 1,000)."""
    peers: list[int] = []
    seen: list[dict[str, str]] = []

    async def origin(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        seen.append(dict(request.headers))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", origin)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin_port = runner.addresses[0][1]
    port = free_port()
    data = {
        "listen": f"127.0.0.1:{port}",
        "access_log": {"enabled": False},
        "backends": {"origin": {"url": f"http://127.0.0.1:{origin_port}", "health": None}},
        "routes": [{"name": "default", "split": {"origin": 100}}],
    }
    text = render(parse_config(data, "c.yaml"), worker_processes="1").text

    def client() -> list[tuple[int, bool, str | None]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out = []
        try:
            for i in range(1100):
                headers = {"X-Request-ID": "given-id"} if i == 1 else {}
                if i == 2:  # a proxy in front already said these
                    headers = {
                        "X-Forwarded-For": "10.0.0.1",
                        "X-Forwarded-Proto": "https",
                        "X-Forwarded-Host": "public.example",
                    }
                conn.request("GET", f"/x?i={i}", headers=headers)
                resp = conn.getresponse()
                resp.read()
                out.append((resp.status, resp.will_close, resp.getheader("X-Request-ID")))
        finally:
            conn.close()
        return out

    try:
        async with running_nginx(tmp_path, text, port):
            answers = await asyncio.to_thread(client)
    finally:
        await runner.cleanup()
    assert [status for status, _, _ in answers] == [200] * 1100
    assert not any(will_close for _, will_close, _ in answers)
    assert len(peers) == 1100
    assert len(set(peers)) == 1  # one upstream connection carried them all
    first = seen[0]
    assert first["X-Forwarded-For"] == "127.0.0.1"
    assert first["X-Forwarded-Proto"] == "http"
    assert first["X-Forwarded-Host"] == f"127.0.0.1:{port}"  # the Host header, port and all
    assert seen[1]["X-Request-ID"] == "given-id" == answers[1][2]
    behind = seen[2]
    assert behind["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert (behind["X-Forwarded-Proto"], behind["X-Forwarded-Host"]) == ("https", "public.example")
    ids = [h["X-Request-ID"] for i, h in enumerate(seen) if i != 1]
    assert ids == [rid for i, (_, _, rid) in enumerate(answers) if i != 1]
    assert len(set(ids)) == len(ids) and all(ids)


async def test_live_nginx_splits_and_falls_back_like_cutover(tmp_path: Path) -> None:
    go, py = EchoBackend("go"), EchoBackend("python")
    await go.start()
    await py.start()
    nginx_port = free_port()
    data = _config(go, py, nginx_port)
    config = parse_config(data, str(tmp_path / "cutover.yaml"))
    state = f"sqlite://{tmp_path}/state.db"
    gw = await start_gateway(
        parse_config({**data, "listen": "127.0.0.1:0", "storage": state}, "test.yaml")
    )
    table = SplitTable(config.routes[0].split, first="go")
    users = [f"user-{i}" for i in range(300)]
    try:
        async with (
            running_nginx(tmp_path, render(config).text, nginx_port) as url,
            aiohttp.ClientSession() as s,
        ):
            behind_nginx = [await _who(s, url, u) for u in users]
            behind_cutover = [await _who(s, gw.url, u) for u in users]
            expected = [table.owner(bucket_of(u)) for u in users]
            assert [b for b, _ in behind_nginx] == expected
            assert [b for b, _ in behind_cutover] == expected
            share = expected.count("go") / len(expected)
            assert 0.2 < share < 0.4
            # base paths and query strings as cutover forwards them
            paths = {b: p for b, p in behind_nginx}
            assert paths == {"go": "/v2/x?q=1", "python": "/x?q=1"}

            go_users = [u for u, b in zip(users, expected, strict=True) if b == "go"][:5]
            await go.stop()  # the candidate is gone: its users fall back to python
            for u in go_users:
                assert (await _who(s, url, u))[0] == "python"
                assert (await _who(s, gw.url, u))[0] == "python"
                # never reached: any method may go on, POST too (as in cutover)
                assert (await _who(s, url, u, "POST"))[0] == "python"
    finally:
        await gw.close()
        await py.stop()
        await go.stop()


async def test_live_nginx_sets_the_sticky_cookie(tmp_path: Path) -> None:
    go, py = EchoBackend("go"), EchoBackend("python")
    await go.start()
    await py.start()
    port = free_port()
    config = parse_config(_config(go, py, port, sticky="cookie"), "cutover.yaml")
    table = SplitTable(config.routes[0].split, first="go")
    try:
        async with (
            running_nginx(tmp_path, render(config).text, port) as url,
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s,
        ):
            async with s.get(url + "/") as r:
                cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
            assert "Max-Age=2592000" in cookie
            value = cookie.split(";")[0].split("=", 1)[1]
            for _ in range(3):
                async with s.get(url + "/", headers={"Cookie": f"cutover_id={value}"}) as r:
                    assert "Set-Cookie" not in r.headers
                    assert (await r.json())["backend"] == table.owner(bucket_of(value))
    finally:
        await py.stop()
        await go.stop()


def test_cli_render_nginx(tmp_path: Path) -> None:
    data = {
        "listen": "127.0.0.1:8080",
        "backends": {"python": {"url": "http://127.0.0.1:8001"}, "go": {"url": "http://127.0.0.1:8002"}},
        "routes": [
            {"name": "api", "match": {"path_prefix": "/api", "methods": ["POST"]},
             "split": {"go": 100}},
            {"name": "default", "split": {"python": 90, "go": 10}},
        ],
    }  # fmt: skip
    path = tmp_path / "cutover.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "nginx.conf"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli_main(["render", "nginx", "-c", str(path), "-o", str(out)]) == 0
    assert "route api: method/header matches cannot be a location" in err.getvalue()
    text = out.read_text()
    assert '90% "http://cutover_default_python";' in text  # no canary: the first one written
    assert load_config(path).routes[1].name == "default"
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(["render", "nginx", "-c", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("sticky", [None, "client_ip"])
def test_other_sticky_keys_render(tmp_path: Path, sticky: str | None) -> None:
    go, py = EchoBackend("go"), EchoBackend("python")
    go.port, py.port = 8001, 8002
    text = render(parse_config(_config(go, py, 8080, sticky=sticky), "c.yaml")).text
    key = "$request_id" if sticky is None else "$remote_addr"
    assert f"split_clients {key} $cutover_default_target" in text
