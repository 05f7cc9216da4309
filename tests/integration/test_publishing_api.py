"""The publishing API: redaction everywhere, modes, admin token, bad input."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest
from aiohttp import web

from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import parse_config
from tests.conftest import wait_for
from tests.integration.publishing_fakes import FakeService, FakeWebhook
from tests.integration.publishing_helpers import config, enqueue, feature, make_alert, start

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # API times: RFC 3339 in UTC

SECRETS = {
    "pd": "PDSECRETROUTINGKEY42",
    "slack": "SLACKSECRETPATH77",
    "bearer": "WEBHOOKSECRETTOKEN",
    "password": "URLPASSWORD99",
    "query": "QUERYSECRET55",
    "rootly": "ROOTLYSECRETTOKEN",
}


class EchoingTarget(FakeService):
    """Answers 400 quoting what it received: credentials and all (a careless real API)."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        raw = (await request.read()).decode()
        self.requests.append({"path": request.path_qs, "raw": raw,
                              "auth": request.headers.get("Authorization", "")})  # fmt: skip
        text = f"rejected auth={request.headers.get('Authorization', '')} url={request.path_qs}"
        return web.Response(status=400, text=f"{text} body={raw[:150]}")


@pytest.fixture
async def echo():
    svc = await EchoingTarget().start()
    yield svc
    await svc.stop()


async def test_no_credential_in_any_response_or_log_line(tmp_path, echo, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="cutover")
    monkeypatch.setenv("PD_KEY", SECRETS["pd"])
    base = f"http://127.0.0.1:{echo.port}"
    targets = [
        {"name": "pd", "type": "pagerduty", "url": base + "/v2/enqueue",
         "routing_key": "${PD_KEY}"},
        {"name": "slack", "type": "slack", "url": f"{base}/services/T/B/{SECRETS['slack']}"},
        {"name": "wh", "type": "webhook",
         "url": f"http://user:{SECRETS['password']}@127.0.0.1:{echo.port}/hook"
                f"?token={SECRETS['query']}"},
        {"name": "wh2", "type": "webhook", "url": base + "/hook2",
         "headers": {"Authorization": f"Bearer {SECRETS['bearer']}"}},
        {"name": "rootly", "type": "rootly", "url": base, "token": SECRETS["rootly"]},
    ]  # fmt: skip
    gw = await start(config(tmp_path, {"targets": targets}))
    try:
        await enqueue(gw, make_alert("fp-redact"), ["pd", "slack", "wh", "wh2", "rootly"])
        bodies: list[str] = []
        async with aiohttp.ClientSession() as http:
            dlq: dict = {}
            for _ in range(200):
                async with http.get(gw.url + "/publishing/dlq") as resp:
                    dlq = await resp.json()
                if dlq["count"] == 5:
                    break
                await _sleep(0.05)
            assert dlq["count"] == 5
            dead = dlq["dead_letters"][0]  # API times are RFC 3339 UTC strings
            for key in ("created_at", "next_at", "dead_at"):
                assert re.fullmatch(RFC3339, dead[key]), (key, dead[key])
            for path in ("/publishing/targets", "/publishing/stats", "/publishing/mode",
                         "/publishing/dlq"):  # fmt: skip
                async with http.get(gw.url + path) as resp:
                    bodies.append(await resp.text())
            for name in ("pd", "slack", "wh", "wh2", "rootly"):
                async with http.post(gw.url + f"/publishing/test/{name}") as resp:
                    bodies.append(await resp.text())
                    assert (await resp.json())["success"] is False
        # the target really did quote the credentials back
        quoted = " ".join(r["raw"] + r["auth"] + r["path"] for r in echo.requests)
        for key in ("pd", "slack", "bearer", "query", "rootly"):
            assert SECRETS[key] in quoted
        assert "rejected auth=" in bodies[-1]  # the answer is shown, redacted
        everything = "\n".join(bodies) + caplog.text
        for secret in SECRETS.values():
            assert secret not in everything, secret
        targets_shown = {t["name"]: t for t in __import__("orjson").loads(bodies[0])}
        assert targets_shown["wh"]["url"] == f"http://***@127.0.0.1:{echo.port}/hook?token=***"
        assert targets_shown["wh2"]["headers"] == ["Authorization"]
    finally:
        await gw.close()


def test_config_errors_never_show_a_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("PD_KEY", SECRETS["pd"])
    data = config(
        tmp_path,
        {
            "targets": [
                {"name": "pd", "type": "pagerduty", "routing_key": 42},
                {"name": "wh", "type": "webhook",
                 "url": f"ftp://u:{SECRETS['password']}@h/{SECRETS['query']}",
                 "headers": {"Authorization": f"Bearer {SECRETS['bearer']}\n"}},
                {"name": "s", "type": "slack", "url": "http://h/x", "bot_token": "${NOPE_UNSET}"},
            ]
        },
    )  # fmt: skip
    with pytest.raises(ConfigErrors) as info:
        parse_config(data, "c.yaml")
    text = "\n".join(str(e) for e in info.value.errors)
    assert "publishing.targets[0].routing_key" in text
    assert "publishing.targets[1].url: expected an http:// or https:// URL" in text
    assert "publishing.targets[2].bot_token" in text and "NOPE_UNSET" in text
    for secret in SECRETS.values():
        assert secret not in text


@pytest.mark.parametrize(
    ("given", "expected"),
    [("intelligent", "normal"), ("metrics_only", "metrics-only"), ("metrics-only", "metrics-only")],
)
async def test_mode_spellings_and_metrics_only_sends_nothing(tmp_path, given, expected):
    hook = await FakeWebhook().start()
    target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook"}
    gw = await start(config(tmp_path, {"mode": given, "targets": [target]}))
    try:
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/publishing/mode") as r:
            body = await r.json()
        assert body["mode"] == expected
        assert body["legacy_mode"] == ("intelligent" if expected == "normal" else "metrics_only")
        pub = feature(gw)
        assert pub.target_names() == ([] if expected == "metrics-only" else ["wh"])
        if expected == "metrics-only":
            await enqueue(gw, make_alert("fp-mo"), ["wh", "backend:default"])
            eng = pub.engine
            await wait_for(lambda: eng.gates["wh"].stats.skipped == 1)
            assert hook.requests == []
    finally:
        await gw.close()
        await hook.stop()


async def test_metrics_only_when_no_target_is_enabled(tmp_path):
    target = {"name": "wh", "type": "webhook", "url": "http://127.0.0.1:9/hook", "enabled": False}
    gw = await start(config(tmp_path, {"targets": [target]}))
    try:
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/publishing/mode") as r:
            body = await r.json()
        assert body["mode"] == "metrics-only" and body["targets_count"] == 0
        assert "no target is enabled" in body["description"]
    finally:
        await gw.close()


async def test_mutating_endpoints_need_the_admin_token(tmp_path):
    target = {"name": "wh", "type": "webhook", "url": "http://127.0.0.1:9/hook"}
    data = config(tmp_path, {"targets": [target]}, admin={"listen": "off", "token": "tok"})
    gw = await start(data)
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/publishing/test/wh", "/publishing/targets/refresh",
                         "/publishing/dlq/1/replay"):  # fmt: skip
                async with http.post(gw.url + path) as resp:
                    assert resp.status == 401, path
            auth = {"Authorization": "Bearer tok"}
            async with http.post(gw.url + "/publishing/test/wh", headers=auth, data=b"[1]") as r:
                assert r.status == 400
                assert "body: expected a JSON object" in (await r.json())["error"]["message"]
            bad = b'{"timeout_seconds": 0}'
            async with http.post(gw.url + "/publishing/test/wh", headers=auth, data=bad) as r:
                assert r.status == 400
                assert "timeout_seconds" in (await r.json())["error"]["message"]
            bad = b'{"test_alert": {"labels": {"a": 1}}}'
            async with http.post(gw.url + "/publishing/test/wh", headers=auth, data=bad) as r:
                assert r.status == 400
                assert "test_alert.labels" in (await r.json())["error"]["message"]
            body = b'{"timeout_seconds": 1}'
            async with http.post(gw.url + "/publishing/test/wh", headers=auth, data=body) as r:
                answer = await r.json()
            assert r.status == 200 and answer["success"] is False
            assert answer["status_code"] is None and "connect" in answer["error_message"]
            async with http.get(gw.url + "/publishing/dlq?limit=0") as r:
                assert r.status == 400 and "limit" in (await r.json())["error"]["message"]
            # without discovery the answer still has every documented field
            async with http.post(gw.url + "/publishing/targets/refresh", headers=auth) as r:
                answer = await r.json()
            assert r.status == 200
            assert set(answer) == {"message", "targets_discovered", "invalid_targets",
                                   "refresh_timestamp", "success"}  # fmt: skip
            assert (answer["invalid_targets"], answer["success"]) == (0, False)
    finally:
        await gw.close()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
