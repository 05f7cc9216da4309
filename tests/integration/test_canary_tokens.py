"""Named admin tokens on a real gateway: a change is made by the token's owner, never its secret."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from cutover.app import start_gateway
from cutover.cli import main as cli_main
from cutover.core.clock import FakeClock
from cutover.proxy.config import load_config
from cutover.proxy.server import Gateway
from tests.integration.alerts_helpers import AlertsGateway
from tests.integration.canary_helpers import (
    FlakyBackend,
    admin,
    canary_config,
    feature,
    start,
    started,
    weights,
)

ALICE = "alice-7f3c9a1e5b2d4c6f"
BOT = "deploy-bot-0a9b8c7d6e5f4a3b"
SECRETS = (ALICE, BOT)


def named(data: dict[str, Any], **tokens: str) -> dict[str, Any]:
    data["admin"] = {
        "listen": "127.0.0.1:0",
        "tokens": tokens or {"alice": ALICE, "deploy-bot": BOT},
    }
    return data


async def call(
    gw: Gateway, method: str, path: str, token: str | None, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], str]:
    hdrs = dict(headers)
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, gw.admin_url + path, json=body, headers=hdrs) as r,
    ):
        return r.status, dict(r.headers), await r.text()


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def test_two_named_tokens_each_name_their_owner_in_the_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = named(canary_config(go, py, tmp_path, canary={"steps": [10, 50, 100]}))
        gw = await start(data, FakeClock())
        try:
            # alice sets weights; a self-declared name does not change who she is.
            status, _, text = await call(
                gw,
                "PUT",
                "/admin/routes/default/weights?reason=warm+up",
                ALICE,
                {"go": 10, "python": 90},
                **{"X-Cutover-Actor": "mallory"},
            )
            assert status == 200, text
            assert weights(gw) == {"go": 10, "python": 90}
            # deploy-bot promotes, then rolls back.
            status, _, text = await call(gw, "POST", "/admin/promote", BOT, {})
            assert status == 200, text
            status, _, text = await call(gw, "POST", "/admin/rollback", BOT, {"reason": "pager"})
            assert status == 200, text
            assert weights(gw) == {"go": 0, "python": 100}

            status, _, text = await call(gw, "GET", "/admin/events?limit=10", ALICE)
            assert status == 200
            assert_no_secret(text)
            events = yaml.safe_load(text)["events"]
            assert [(e["kind"], e["actor"]) for e in events] == [
                ("rollback", "operator:deploy-bot"),
                ("promote", "operator:deploy-bot"),
                ("weights", "operator:alice"),
            ]
            assert "mallory" not in text

            for token, name in ((ALICE, "alice"), (BOT, "deploy-bot")):
                status, _, text = await call(gw, "GET", "/admin/whoami", token)
                assert status == 200
                assert yaml.safe_load(text) == {"token": name, "actor": f"operator:{name}"}
                assert_no_secret(text)

            status, _, text = await call(gw, "GET", "/admin/routes", BOT)
            assert status == 200 and '"changed_by":"operator:deploy-bot"' in text
            for path in ("/admin/routes", "/admin/canary", "/admin/config", "/admin"):
                status, _, text = await call(gw, "GET", path, ALICE)
                assert status == 200, path
                assert_no_secret(text)
            _, body = await admin(gw, "GET", "/admin/config", None, ALICE)
            assert body["admin"]["tokens"] == "<redacted>"
        finally:
            await gw.close()
    assert_no_secret(caplog.text)


async def test_a_wrong_token_gets_a_json_401_that_shows_no_token(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        gw = await start(named(canary_config(go, py, tmp_path)), FakeClock())
        try:
            wrong = (None, "wrong", ALICE[:-1], ALICE + "x", f"{ALICE} {BOT}", BOT.upper())
            for token in wrong:
                for method, path in (("POST", "/admin/rollback"), ("GET", "/admin/events")):
                    status, headers, text = await call(gw, method, path, token, {})
                    assert status == 401, (token, path)
                    assert headers["Content-Type"].startswith("application/json")
                    assert headers["WWW-Authenticate"] == 'Bearer realm="cutover-admin"'
                    assert yaml.safe_load(text)["error"]["code"] == "unauthorized"
                    assert_no_secret(text)
            status, _, _ = await call(gw, "POST", "/admin/rollback", f"Basic {ALICE}", {})
            assert status == 401
            assert weights(gw) == {"go": 50, "python": 50}  # nothing changed
            _, body = await admin(gw, "GET", "/admin/events", None, ALICE)
            assert body["events"] == []
        finally:
            await gw.close()


async def test_reload_rotates_tokens_but_never_turns_auth_off(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = named(canary_config(go, py, tmp_path), alice=ALICE)
        path = tmp_path / "cutover.yaml"
        path.write_text(yaml.safe_dump(data))
        gw = await start_gateway(load_config(path), clock=FakeClock())
        feature(gw).ticking = False
        try:
            assert (await call(gw, "GET", "/admin/whoami", BOT))[0] == 401
            data["admin"]["tokens"] = {"deploy-bot": BOT}
            path.write_text(yaml.safe_dump(data))
            status, _, text = await call(gw, "POST", "/admin/reload", ALICE, {})
            assert status == 200, text
            assert (await call(gw, "GET", "/admin/whoami", ALICE))[0] == 401  # rotated out
            status, _, text = await call(gw, "GET", "/admin/whoami", BOT)
            assert status == 200 and '"operator:deploy-bot"' in text
            # A config without any token (loopback): the bound listener keeps asking for the
            # tokens it started with.
            data["admin"] = {"listen": "127.0.0.1:0"}
            path.write_text(yaml.safe_dump(data))
            assert (await call(gw, "POST", "/admin/reload", BOT, {}))[0] == 200
            assert (await call(gw, "GET", "/admin/routes", None))[0] == 401
            assert (await call(gw, "GET", "/admin/routes", ALICE))[0] == 200
            # A bad token in the file: the reload is refused and the error shows no token.
            data["admin"] = {"listen": "127.0.0.1:0", "tokens": {"x": "short", "y": BOT[:-1]}}
            data["admin"]["tokens"]["z"] = BOT[:-1]
            path.write_text(yaml.safe_dump(data))
            status, _, text = await call(gw, "POST", "/admin/reload", ALICE, {})
            assert status == 400 and "admin.tokens.x" in text and "admin.tokens.z" in text
            assert "short" not in text.replace("shorter", "") and BOT[:-1] not in text
        finally:
            await gw.close()


async def test_main_listener_endpoints_take_named_tokens(tmp_path: Path) -> None:
    ag = AlertsGateway(tmp_path)
    try:
        gw = await ag.start({}, admin={"listen": "127.0.0.1:0", "tokens": {"alice": ALICE}})
        async with aiohttp.ClientSession() as http:
            for token in (None, "wrong", BOT):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with http.post(
                    gw.url + "/enrichment/mode", json={"mode": "transparent"}, headers=headers
                ) as resp:
                    assert resp.status == 401
                    assert_no_secret(await resp.text())
            async with http.post(
                gw.url + "/enrichment/mode",
                json={"mode": "transparent"},
                headers={"Authorization": f"Bearer {ALICE}"},
            ) as resp:
                assert resp.status == 200
            alert = {"labels": {"alertname": "X"}}
            async with http.post(
                gw.url + "/classification/classify",
                json=alert,
                headers={"Authorization": f"Bearer {ALICE}"},
            ) as resp:
                assert resp.status == 200
    finally:
        await ag.close()


def _ctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def test_cutover_ctl_with_a_named_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        gw = await start(named(canary_config(go, py, tmp_path)), FakeClock())
        url = gw.admin_url
        assert url is not None
        try:
            monkeypatch.setenv("CUTOVER_ADMIN_TOKEN", BOT)

            def ctl(*args: str) -> tuple[int, str, str]:
                return _ctl("ctl", "--admin", url, *args)

            code, out, _ = await asyncio.to_thread(ctl, "whoami")
            assert code == 0 and out.strip() == "operator:deploy-bot (token 'deploy-bot')"
            code, out, _ = await asyncio.to_thread(ctl, "rollback", "--reason", "pager")
            assert code == 0 and "go=0 python=100" in out
            code, out, _ = await asyncio.to_thread(ctl, "events", "--limit", "1")
            assert code == 0 and "rollback by operator:deploy-bot: pager" in out
            code, out, _ = await asyncio.to_thread(ctl, "--token", ALICE, "whoami")
            assert code == 0 and out.startswith("operator:alice ")
            code, out, err = await asyncio.to_thread(ctl, "--token", "nope", "status")
            assert code == 1 and "HTTP 401" in err
            assert_no_secret(out + err)
        finally:
            await gw.close()
