"""A proxied request carrying one of the gateway's own admin tokens loses that `Authorization`
header before it goes upstream, with a log line that names the token but never shows it
(DESIGN.md, Decisions). Every way a request reaches a backend, on both listener paths: plain
(no body and a streamed body), WebSocket, compat fan-out and parity mirror copies."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web

from cutover.proxy.config import load_config
from tests.conftest import gateway_config, wait_for

pytestmark = pytest.mark.usefixtures("serving_path")

SHARED = "shared-admin-token-0000"
ALICE = "alice-admin-token-11111"
OTHER = "a-backend-own-token-2222"


class Recorder:
    """A backend that records the Authorization header of every request it gets, WebSocket
    handshakes and fan-out parts included."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        self.seen.append((request.path, request.headers.get("Authorization")))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                await ws.send_str(f"echo: {msg.data}")
        return ws

    async def any(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append((request.path, request.headers.get("Authorization")))
        if request.path == "/one":
            return web.json_response({"ok": True})
        return web.json_response({"backend": self.name})

    async def start(self) -> Recorder:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/ws", self.ws)
        app.router.add_route("*", "/{tail:.*}", self.any)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def recorders() -> AsyncIterator[tuple[Recorder, Recorder]]:
    go, shadow = await Recorder("go").start(), await Recorder("shadow").start()
    yield go, shadow
    await go.stop()
    await shadow.stop()


def _config(go: Recorder, shadow: Recorder, tmp_path: Path, **route: Any) -> dict[str, Any]:
    data = gateway_config(
        {"go": go.url, "shadow": shadow.url},
        route=route,
        admin={"listen": "127.0.0.1:0", "token": SHARED, "tokens": {"alice": ALICE}},
        storage=f"sqlite:///{tmp_path / 'state.db'}",
    )
    for b in data["backends"].values():
        b["health"] = "off"
    return data


async def _get(url: str, authorization: str | None, method: str = "GET", body: Any = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, headers=headers, data=body) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


def _dropped_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "removed an Authorization" in r.getMessage()]


def _no_token_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    for token in (SHARED, ALICE):
        assert token not in caplog.text


async def test_admin_tokens_never_reach_the_backend(
    recorders, gateway, tmp_path: Path, caplog
) -> None:
    go, shadow = recorders
    gw = await gateway(_config(go, shadow, tmp_path))
    caplog.set_level(logging.WARNING, logger="cutover.admin")
    sent = [
        f"Bearer {SHARED}",
        f"Bearer {ALICE}",
        f"bearer   {ALICE} ",  # as the admin API would accept it
        f"Bearer {OTHER}",  # somebody else's token: the backend's business
        "Basic dXNlcjpwYXNz",
    ]
    for value in sent:
        await _get(gw.url + "/x", value)
    big = io.BytesIO(b"x" * (3 * 1024 * 1024))  # streamed, not buffered: the other attempt path
    await _get(gw.url + "/upload", f"Bearer {SHARED}", "POST", big)
    assert go.seen == [
        ("/x", None),
        ("/x", None),
        ("/x", None),
        ("/x", f"Bearer {OTHER}"),
        ("/x", "Basic dXNlcjpwYXNz"),
        ("/upload", None),
    ]
    lines = _dropped_lines(caplog)
    assert len(lines) == 4  # one per request that carried one
    assert ["'admin'" in lines[0], "'alice'" in lines[1], "'alice'" in lines[2]] == [True] * 3
    _no_token_in_the_log(caplog)


async def test_websocket_handshake_loses_the_admin_token(
    recorders, gateway, tmp_path: Path, caplog
) -> None:
    go, shadow = recorders
    gw = await gateway(_config(go, shadow, tmp_path))
    for value, expected in ((f"Bearer {SHARED}", None), (f"Bearer {OTHER}", f"Bearer {OTHER}")):
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(gw.url + "/ws", headers={"Authorization": value}) as ws,
        ):
            await ws.send_str("hi")
            assert (await ws.receive_str(timeout=5)) == "echo: hi"
        assert go.seen[-1] == ("/ws", expected)
    assert len(_dropped_lines(caplog)) == 1
    _no_token_in_the_log(caplog)


async def test_compat_fan_out_parts_lose_the_admin_token(
    recorders, gateway, tmp_path: Path, caplog
) -> None:
    go, shadow = recorders
    data = _config(go, shadow, tmp_path)
    data["compat"] = {
        "backends": {"new": "go", "legacy": "shadow"},
        "rules": [
            {
                "name": "ingest",
                "match": {"method": "POST", "path": "/ingest"},
                "fan_out": {"applies_to": "new", "items": "alerts", "path": "/one"},
            }
        ],
    }
    gw = await gateway(data)
    body = orjson.dumps({"alerts": [{"id": 1}, {"id": 2}]})
    await _get(gw.url + "/ingest", f"Bearer {ALICE}", "POST", body)
    assert go.seen == [("/one", None), ("/one", None)]
    assert len(_dropped_lines(caplog)) == 1
    _no_token_in_the_log(caplog)


async def test_mirror_copies_lose_the_admin_token(
    recorders, gateway, tmp_path: Path, caplog
) -> None:
    go, shadow = recorders
    gw = await gateway(_config(go, shadow, tmp_path, mirror={"to": "shadow", "percent": 100}))
    await _get(gw.url + "/m", f"Bearer {SHARED}")
    await wait_for(lambda: len(shadow.seen) == 1)
    assert shadow.seen == [("/m", None)]
    assert go.seen and {auth for _, auth in go.seen} == {None}
    _no_token_in_the_log(caplog)


async def test_a_reload_changes_which_tokens_are_removed(
    recorders, gateway, tmp_path: Path
) -> None:
    go, shadow = recorders
    data = _config(go, shadow, tmp_path)
    gw = await gateway(data)
    rotated = "rotated-admin-token-3333"
    data["admin"] = {"listen": "127.0.0.1:0", "token": rotated}
    data["fast_path"] = gw.config.fast_path
    path = tmp_path / "cutover.yaml"
    path.write_text(yaml.safe_dump(data))
    await gw.reload(load_config(str(path)))
    await _get(gw.url + "/x", f"Bearer {rotated}")
    await _get(gw.url + "/x", f"Bearer {SHARED}")  # no longer a gateway token: passes on
    assert go.seen == [("/x", None), ("/x", f"Bearer {SHARED}")]
