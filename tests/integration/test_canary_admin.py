"""The admin API of canary control: token, validation, commands, config, reload, `cutover ctl`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import aiohttp
import pytest
import yaml

from cutover.app import start_gateway
from cutover.cli import main as cli_main
from cutover.core.clock import FakeClock
from cutover.proxy.config import load_config
from tests.integration.canary_helpers import (
    TOKEN,
    FlakyBackend,
    admin,
    canary_config,
    feature,
    start,
    started,
    traffic,
    weights,
)

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # API times: RFC 3339 in UTC

ENDPOINTS = [
    ("GET", "/admin/routes"),
    ("PUT", "/admin/routes/default/weights"),
    ("POST", "/admin/rollback"),
    ("POST", "/admin/promote"),
    ("POST", "/admin/pause"),
    ("POST", "/admin/resume"),
    ("GET", "/admin/canary"),
    ("GET", "/admin/events"),
    ("POST", "/admin/reload"),
    ("GET", "/admin/config"),
]


async def test_every_admin_endpoint_needs_the_token(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path))
        try:
            for method, path in ENDPOINTS:
                for token in (None, "wrong"):
                    status, body = await admin(gw, method, path, {"go": 0, "python": 100}, token)
                    assert status == 401, (method, path, token)
                    assert body["error"]["code"] == "unauthorized"
                    assert TOKEN not in str(body)
            assert weights(gw) == {"go": 50, "python": 50}  # nothing changed
            status, _ = await admin(gw, "GET", "/admin/routes")
            assert status == 200
        finally:
            await gw.close()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"go": 99, "python": 2}, "weights", "sum to exactly 100, got 101"),
        ({"go": 99, "pyhton": 1}, "weights.pyhton", "not a backend of route 'default'"),
        ({"go": 99.5, "python": 0.5}, "weights.go", "integer from 0 to 100"),
        ({"go": True, "python": 99}, "weights.go", "integer from 0 to 100"),
        ({"go": "99", "python": 1}, "weights.go", "integer from 0 to 100"),
        ({"go": 101, "python": -1}, "weights.go", "integer from 0 to 100"),
        ({}, "weights", "JSON object of backend"),
        ([99, 1], "body", "JSON object"),
    ],
)
async def test_weights_are_validated(tmp_path: Path, body: object, field: str, words: str) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path))
        try:
            status, answer = await admin(gw, "PUT", "/admin/routes/default/weights", body)
            assert status == 400
            assert answer["error"]["field"] == field
            assert words in answer["error"]["message"]
            assert weights(gw) == {"go": 50, "python": 50}
        finally:
            await gw.close()


async def test_bad_json_unknown_route_and_bad_options(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path))
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.put(
                    gw.admin_url + "/admin/routes/default/weights",
                    data=b"{go: 1",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as r,
            ):
                assert r.status == 400
                assert (await r.json())["error"]["code"] == "invalid_json"
            status, body = await admin(gw, "PUT", "/admin/routes/nope/weights", {"go": 100})
            assert (status, body["error"]["field"]) == (404, "route")
            status, body = await admin(gw, "POST", "/admin/rollback", {"route": "nope"})
            assert (status, body["error"]["field"]) == (404, "route")
            status, body = await admin(gw, "POST", "/admin/rollback", {"mode": "slow"})
            assert (status, body["error"]["field"]) == (400, "mode")
            status, body = await admin(gw, "POST", "/admin/rollback", {"over": "soon"})
            assert (status, body["error"]["field"]) == (400, "over")
            status, body = await admin(gw, "POST", "/admin/promote", {"routes": "x"})
            assert (status, body["error"]["field"]) == (400, "routes")
            status, body = await admin(gw, "GET", "/admin/events?limit=0")
            assert (status, body["error"]["field"]) == (400, "limit")
        finally:
            await gw.close()


async def test_weights_commands_and_events(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(go, py, tmp_path, canary={"steps": [10, 50, 100]})
        gw = await start(data, FakeClock())
        try:
            async with (
                aiohttp.ClientSession() as s,
                s.put(
                    gw.admin_url + "/admin/routes/default/weights?reason=warm+up",
                    json={"go": 0, "python": 100},
                    headers={"Authorization": f"Bearer {TOKEN}", "X-Cutover-Actor": "alice"},
                ) as r,
            ):
                assert r.status == 200
                body = await r.json()
            assert body["weights"] == {"go": 0, "python": 100}
            assert weights(gw) == {"go": 0, "python": 100}
            assert set(await traffic(gw, 30)) == {"python"}

            status, body = await admin(gw, "POST", "/admin/promote")
            assert status == 200 and body["results"][0]["weights"] == {"go": 10, "python": 90}
            status, body = await admin(gw, "POST", "/admin/pause", {"reason": "weekend"})
            assert body["results"][0]["phase"] == "holding"
            status, body = await admin(gw, "POST", "/admin/pause")
            assert status == 409 and body["results"][0]["error"] == "already paused"
            status, body = await admin(gw, "POST", "/admin/resume", {"route": "default"})
            assert status == 200 and body["results"][0]["phase"] == "stepping"
            status, body = await admin(gw, "POST", "/admin/rollback", {"route": "default"})
            assert status == 200 and weights(gw) == {"go": 0, "python": 100}
            status, body = await admin(gw, "POST", "/admin/rollback")
            assert status == 409 and "already rolled back" in body["results"][0]["error"]

            status, body = await admin(gw, "GET", "/admin/routes")
            route = body["routes"][0]
            assert route["source"] == "operator" and route["latched"] is True
            assert route["config_split"] == {"go": 50, "python": 50}
            assert route["first"] == "go"
            assert route["backends"]["python"]["healthy"] is True
            assert re.fullmatch(RFC3339, route["since"]), route["since"]  # as every API time

            status, body = await admin(gw, "GET", "/admin/events?limit=10")
            events = body["events"]
            assert all(re.fullmatch(RFC3339, e["at"]) for e in events), events
            assert [e["kind"] for e in events] == [
                "rollback",
                "resume",
                "pause",
                "promote",
                "weights",
            ]
            first = events[-1]
            # The shared token names nobody: the header is kept, marked as self-declared.
            assert first["actor"] == "operator:admin (self-declared: alice)"
            assert first["reason"] == "warm up"
            assert first["weights_before"] == {"go": 50, "python": 50}
            assert events[2]["reason"] == "weekend"
            status, body = await admin(gw, "GET", f"/admin/events?after={first['id']}&limit=2")
            assert [e["kind"] for e in body["events"]] == ["promote", "pause"]
        finally:
            await gw.close()


async def test_routes_without_canary_take_runtime_weights(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path, canary=False))  # type: ignore[arg-type]
        try:
            status, body = await admin(gw, "POST", "/admin/rollback")
            assert status == 409 and body["error"]["code"] == "no_canary"
            status, _ = await admin(gw, "PUT", "/admin/routes/default/weights", {"python": 100})
            assert status == 200
            assert weights(gw) == {"go": 0, "python": 100}
            assert gw.state.tables["default"].first == "go"  # the config's first backend
        finally:
            await gw.close()


async def test_config_is_redacted_and_reload_rereads_the_file(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(go, py, tmp_path)
        data["redis"] = "redis://user:hunter2@127.0.0.1:1/0"
        data["canary"]["redis_prefix"] = "cutover:test-redact:"
        path = tmp_path / "cutover.yaml"
        path.write_text(yaml.safe_dump(data))
        gw = await start_gateway(load_config(path))
        feature(gw).ticking = False
        try:
            status, body = await admin(gw, "GET", "/admin/config")
            assert status == 200
            text = str(body)
            assert TOKEN not in text and "hunter2" not in text
            assert body["admin"]["token"] == "<redacted>"
            assert body["redis"] == "redis://user:<redacted>@127.0.0.1:1/0"
            assert body["routes"][0]["split"] == [["go", 50], ["python", 50]]

            data["routes"][0]["split"] = {"go": 20, "python": 80}
            path.write_text(yaml.safe_dump(data))
            status, body = await admin(gw, "POST", "/admin/reload")
            assert status == 200 and body["reloaded"] is True
            assert weights(gw) == {"go": 20, "python": 80}
            assert gw.state.tables["default"].first == "go"  # the candidate, after a reload too

            path.write_text("routes: [oops\n")
            status, body = await admin(gw, "POST", "/admin/reload")
            assert status == 400 and body["error"]["code"] == "invalid_config"
            assert body["error"]["problems"]
            assert weights(gw) == {"go": 20, "python": 80}
        finally:
            await gw.close()


def _ctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def test_cutover_ctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path, canary={"steps": [10, 50, 100]}))
        url = gw.admin_url
        assert url is not None
        try:
            monkeypatch.setenv("CUTOVER_ADMIN_TOKEN", TOKEN)

            def ctl(*args: str) -> tuple[int, str, str]:
                return _ctl("ctl", "--admin", url, *args)

            code, out, _ = await asyncio.to_thread(ctl, "weights", "default", "go=10", "python=90")
            assert code == 0 and "go=10 python=90" in out
            assert weights(gw) == {"go": 10, "python": 90}
            code, _, err = await asyncio.to_thread(ctl, "weights", "default", "go=10", "python=1")
            assert code == 1 and "HTTP 400 (weights)" in err and "sum to exactly 100" in err
            code, out, _ = await asyncio.to_thread(ctl, "promote")
            assert code == 0 and "go=50 python=50" in out
            code, out, _ = await asyncio.to_thread(ctl, "rollback", "default", "--reason", "pager")
            assert code == 0 and "go=0 python=100" in out and "rolled_back" in out
            code, out, _ = await asyncio.to_thread(ctl, "status")
            assert code == 0 and "default: go=0 python=100 (operator) rolled_back LATCHED" in out
            assert "verdict: insufficient_data" in out
            code, out, _ = await asyncio.to_thread(ctl, "events", "--limit", "3")
            assert code == 0 and "rollback by operator:" in out and "pager" in out
            monkeypatch.delenv("CUTOVER_ADMIN_TOKEN")
            code, _, err = await asyncio.to_thread(ctl, "status")
            assert code == 1 and "HTTP 401" in err
        finally:
            await gw.close()


async def test_reload_says_what_waits_for_a_restart(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(go, py, tmp_path)
        path = tmp_path / "cutover.yaml"
        path.write_text(yaml.safe_dump(data))
        gw = await start_gateway(load_config(path))
        feature(gw).ticking = False
        try:
            changed = dict(data, alerts={"paths": ["/webhook/proxy"]})
            changed["access_log"] = {"enabled": True, "path": str(tmp_path / "new-access.log")}
            changed["routes"][0]["split"] = {"go": 20, "python": 80}
            path.write_text(yaml.safe_dump(changed))
            status, body = await admin(gw, "POST", "/admin/reload")
            assert status == 200 and body["reloaded"] is True
            assert weights(gw) == {"go": 20, "python": 80}  # the rest of the change applies
            waiting = [line.split(":")[0] for line in body["restart_required"]]
            assert waiting == ["access_log", "alerts", "publishing"]
            async with aiohttp.ClientSession() as s, s.get(gw.url + "/readyz") as r:
                ready = await r.json()
            assert [line.split(":")[0] for line in ready["restart_required"]] == waiting
            intake = gw.url + "/webhook/proxy"
            async with aiohttp.ClientSession() as s, s.post(intake, json={"alerts": []}) as r:
                # not started by the reload: the request is proxied like any other
                assert r.headers.get("X-Cutover-Backend") in {"go", "python"}

            data["routes"][0]["split"] = {"go": 30, "python": 70}
            path.write_text(yaml.safe_dump(data))  # back to what it started with
            status, body = await admin(gw, "POST", "/admin/reload")
            assert status == 200 and body["restart_required"] == []
            async with aiohttp.ClientSession() as s, s.get(gw.url + "/readyz") as r:
                assert "restart_required" not in await r.json()
        finally:
            await gw.close()
