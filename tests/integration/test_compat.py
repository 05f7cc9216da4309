"""Compat rules on real sockets: each rule kind, encodings, errors, fallback, usage, headers."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web

from cutover.app import start_gateway
from cutover.compat.feature import BROTLI_AVAILABLE
from cutover.core.db import StoreUnavailable
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.conftest import ROOT, EchoBackend, gateway_config, wait_for

MIGRATION = "https://example.test/MIGRATION.md"


class NewBackend:
    """The "new" implementation: other paths and shapes than the legacy one."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/v2/items/{id}", self.item)
        r.add_get("/v2/text", _fixed(_text("hello, not JSON")))
        r.add_get("/v2/malformed", _fixed(_raw(b'{"data": [1, 2', "application/json")))
        r.add_get("/v2/error", _fixed(_json({"status": "error", "error": "bad page"}, 400)))
        r.add_get("/v2/huge", _fixed(_json({"data": "x" * 200_000})))
        r.add_post("/v2/echo", self.echo)
        r.add_post("/v2/one", self.one)
        return app

    async def item(self, request: web.Request) -> web.Response:
        self.received.append({"path": request.path_qs})
        doc = {
            "data": {"id": request.match_info["id"], "severity": 2,
                     "created": "2025-04-01T00:00:00Z"},
            "query": dict(request.query),
        }  # fmt: skip
        body = orjson.dumps(doc)
        if "gz" in request.query:
            return _raw(gzip.compress(body), "application/json", {"Content-Encoding": "gzip"})
        if "deflate" in request.query:
            return _raw(zlib.compress(body), "application/json", {"Content-Encoding": "deflate"})
        if "br" in request.query:
            return _raw(b"\x8b\x00\x80opaque", "application/json", {"Content-Encoding": "br"})
        return _raw(body, "application/json", {"ETag": '"v1"'})

    async def echo(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.received.append({"path": request.path_qs, "body": raw})
        return _json({"received": orjson.loads(raw), "path": request.path_qs})

    async def one(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.received.append({"path": request.path_qs, "body": body})
        if "alertname" not in body:
            return _text("Missing required field: alertname", 400)
        if body["alertname"] == "Boom":
            return _text("Failed to process alert", 500)
        return _json({"status": "success", "alert_id": body.get("fingerprint", "")})

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def _fixed(resp: web.Response) -> Callable[[web.Request], Awaitable[web.Response]]:
    body, status, headers = resp.body, resp.status, dict(resp.headers)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, headers=headers)

    return handler


def _raw(body: bytes, ctype: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": ctype, **(headers or {})})


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def _text(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/plain")


RULES: list[dict[str, Any]] = [
    {
        "name": "item",
        "match": {"method": "GET", "path": "/alerts/{id}"},
        "rewrite": {
            "applies_to": "new",
            "path": "/v2/items/{id}",
            "query": [{"pagination": {}}, {"rename": {"q": "filter"}}],
            "response": {
                "body": [
                    {"move": {"query": "data.query"}},
                    {"unwrap": "data"},
                    {"convert": {"severity": "severity_name", "created": "epoch"}},
                    {"rename": {"id": "alert_id"}},
                ]
            },
        },
    },
    {"name": "text", "match": {"path": "/text"},
     "rewrite": {"applies_to": "new", "path": "/v2/text", "response": {"body": [{"set": {"x": 1}}],
                                                                       "status": {200: 203}}}},
    {"name": "malformed", "match": {"path": "/malformed"},
     "rewrite": {"applies_to": "new", "path": "/v2/malformed",
                 "response": {"body": [{"unwrap": "data"}]}}},
    {"name": "error", "match": {"path": "/error"},
     "rewrite": {"applies_to": "new", "path": "/v2/error",
                 "response": {"status": {400: 422},
                              "error_body": [{"rename": {"error": "detail"}},
                                             {"keep": ["detail"]}]}}},
    {"name": "huge", "match": {"path": "/huge"},
     "rewrite": {"applies_to": "new", "path": "/v2/huge", "response": {"body": [{"drop": "x"}]}}},
    {"name": "create", "match": {"method": "POST", "path": "/create"},
     "rewrite": {"applies_to": "new", "path": "/v2/echo",
                 "body": [{"rename": {"sev": "severity"}},
                          {"convert": {"severity": "severity_number"}}, {"wrap": "alert"}]}},
    {"name": "ingest", "match": {"method": "POST", "path": "/ingest"},
     "fan_out": {"applies_to": "new", "items": "alerts", "path": "/v2/one",
                 "item": [{"copy": {"labels.alertname": "alertname"}}],
                 "response": {"accepted": "{count}", "answers": "{results}"}}},
    {"name": "pinned", "match": {"path": "/pinned"}, "keep_on_legacy": True},
    {"name": "removed", "match": {"path": "/old/{rest*}"},
     "gone": {"message": "removed", "replacement": "GET /alerts/{id}", "guide": MIGRATION}},
    {"name": "v1-only", "match": {"path": "/versioned", "headers": {"X-Api-Version": "1"}},
     "gone": {"replacement": "X-Api-Version: 2"}},
    {"name": "health", "match": {"path": "/health"}, "health": True},
    {"name": "quiet", "match": {"path": "/quiet"}, "deprecated": False,
     "rewrite": {"applies_to": "new", "path": "/v2/items/q"}},
]  # fmt: skip


def compat_config(new: str, legacy: str, tmp_path: Path, **compat: Any) -> dict[str, Any]:
    data = gateway_config(
        {"new": new, "legacy": legacy},
        route={"fallback": ["legacy"]},
        admin={"listen": "127.0.0.1:0"},
        storage=f"sqlite:///{tmp_path}/state.db",
    )
    data["compat"] = {
        "backends": {"new": "new", "legacy": "legacy"},
        "caller": {"header": "X-API-Key"},
        "max_body": "64KiB",
        "deprecation": {"since": "2025-02-01", "sunset": "2025-04-01", "link": MIGRATION},
        "rules": RULES,
        **compat,
    }
    return data


@pytest.fixture
async def new_backend() -> AsyncIterator[NewBackend]:
    b = NewBackend()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def setup(
    new_backend: NewBackend,
    backends: Callable[[str], Awaitable[EchoBackend]],
    gateway: Callable[[dict[str, Any]], Awaitable[Gateway]],
    tmp_path: Path,
) -> AsyncIterator[tuple[Gateway, NewBackend, EchoBackend, aiohttp.ClientSession]]:
    legacy = await backends("legacy")
    gw = await gateway(compat_config(new_backend.url, legacy.url, tmp_path))
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield gw, new_backend, legacy, s


def deprecation_of(headers: Any) -> tuple[int, datetime, list[str]]:
    """Deprecation (RFC 9745 @epoch), Sunset (RFC 8594 HTTP-date), Link targets, parsed back."""
    dep = headers["Deprecation"]
    assert re.fullmatch(r"@\d+", dep), dep
    sunset = parsedate_to_datetime(headers["Sunset"])
    links = headers.getall("Link", [])
    return int(dep[1:]), sunset, links


async def test_rewrite_path_params_query_and_response(setup: Any) -> None:
    gw, new, _, s = setup
    async with s.get(gw.url + "/alerts/a%2Fb?offset=40&limit=20&q=x") as r:
        assert r.status == 200
        assert r.headers["X-Cutover-Backend"] == "new"
        assert await r.json() == {
            "alert_id": "a/b",
            "severity": "warning",
            "created": 1743465600,
            "query": {"filter": "x", "page": "3", "page_size": "20"},
        }
        since, sunset, links = deprecation_of(r.headers)
        assert "ETag" not in r.headers  # the representation changed
    assert new.received[-1]["path"] == "/v2/items/a%2Fb?filter=x&page=3&page_size=20"
    assert since == int(datetime(2025, 2, 1, tzinfo=UTC).timestamp())
    assert sunset == datetime(2025, 4, 1, tzinfo=UTC)
    assert links == [f'<{MIGRATION}>; rel="deprecation"; type="text/html"']


@pytest.mark.parametrize("encoding", ["gz", "deflate"])
async def test_compressed_answers_are_decoded_and_headers_fixed(setup: Any, encoding: str) -> None:
    gw, _, _, s = setup
    async with s.get(gw.url + f"/alerts/7?{encoding}=1") as r:
        raw = await r.read()
        assert r.status == 200
        assert "Content-Encoding" not in r.headers
        assert int(r.headers["Content-Length"]) == len(raw)
    assert orjson.loads(raw)["severity"] == "warning"


async def test_br_answers(setup: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw, _, _, s = setup
    caplog.set_level(logging.INFO, "cutover.compat")
    async with s.get(gw.url + "/alerts/7?br=1") as r:
        raw = await r.read()
        status, encoding = r.status, r.headers.get("Content-Encoding")
    if BROTLI_AVAILABLE:  # a decoder is installed: the bytes above are not valid Brotli
        assert status == 502
        assert orjson.loads(raw)["error"]["code"] == "bad_upstream_encoding"
    else:  # no decoder: passed untouched, and the log says why
        assert (status, encoding, raw) == (200, "br", b"\x8b\x00\x80opaque")
        assert "no Brotli decoder installed" in caplog.text


async def test_non_json_passes_untouched_with_a_log_line(
    setup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gw, _, _, s = setup
    caplog.set_level(logging.INFO, "cutover.compat")
    async with s.get(gw.url + "/text") as r:
        assert r.status == 203  # the status map still applies
        assert await r.text() == "hello, not JSON"
        assert r.headers["Content-Type"].startswith("text/plain")
    assert "compat rule text: non-JSON answer (text/plain" in caplog.text


async def test_malformed_json_from_a_backend_is_a_clear_502(setup: Any) -> None:
    gw, _, _, s = setup
    async with s.get(gw.url + "/malformed") as r:
        assert r.status == 502
        error = (await r.json())["error"]
        assert "Deprecation" in r.headers
    assert error["code"] == "bad_upstream_json"
    assert "backend new answered malformed JSON" in error["message"]
    assert "compat rule malformed" in error["message"]
    async with s.get(gw.url + "/alerts/1") as r:  # the gateway carries on
        assert r.status == 200


async def test_status_map_and_error_body(setup: Any) -> None:
    gw, _, _, s = setup
    async with s.get(gw.url + "/error") as r:
        assert (r.status, await r.json()) == (422, {"detail": "bad page"})


async def test_bodies_are_bounded(setup: Any) -> None:
    gw, new, _, s = setup
    async with s.get(gw.url + "/huge") as r:
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "response_too_large"
    async with s.post(gw.url + "/create", data=b"x" * (65 * 1024)) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "body_too_large"
        assert "Deprecation" in r.headers
    assert not any(x["path"] == "/v2/echo" for x in new.received)


async def test_request_body_transform(setup: Any) -> None:
    gw, _, _, s = setup
    async with s.post(gw.url + "/create", json={"name": "a", "sev": "critical"}) as r:
        assert r.status == 200
        assert (await r.json())["received"] == {"alert": {"name": "a", "severity": 1}}
    async with s.post(gw.url + "/create", data=b"{not json") as r:
        assert r.status == 400
        assert (await r.json())["error"]["message"].startswith("request body: expected JSON")


async def test_fan_out_one_request_per_item_answers_combined(setup: Any) -> None:
    gw, new, _, s = setup
    envelope = {
        "version": "4",
        "alerts": [{"labels": {"alertname": f"A{i}"}, "fingerprint": f"fp{i}"} for i in range(3)],
    }
    async with s.post(gw.url + "/ingest", json=envelope) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        assert "Deprecation" in r.headers
    assert body == {
        "accepted": 3,
        "answers": [{"status": "success", "alert_id": f"fp{i}"} for i in range(3)],
    }
    sent = [x["body"] for x in new.received if x["path"] == "/v2/one"]
    assert sent == [
        {"labels": {"alertname": f"A{i}"}, "fingerprint": f"fp{i}", "alertname": f"A{i}"}
        for i in range(3)
    ]


async def test_fan_out_failures(setup: Any) -> None:
    gw, _, _, s = setup
    envelope = {"alerts": [{"labels": {"alertname": "ok"}}, {"labels": {"alertname": "Boom"}}]}
    async with s.post(gw.url + "/ingest", json=envelope) as r:
        assert r.status == 502  # a part failed on the server side: the sender retries
        error = (await r.json())["error"]
    assert error["code"] == "fan_out_failed"
    assert error["failures"] == [
        {"index": 1, "status": 500, "answer": "Failed to process alert", "attempts": 1}
    ]
    async with s.post(gw.url + "/ingest", json={"alerts": [{"labels": {}}]}) as r:
        assert r.status == 400  # the backend refused a part: not worth a retry
    async with s.post(gw.url + "/ingest", json={"alerts": {"a": 1}}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["message"] == (
            "request body: expected a JSON array at 'alerts'"
        )


async def test_keep_on_legacy_whatever_the_split(setup: Any) -> None:
    gw, _, _, s = setup
    async with s.get(gw.url + "/pinned?x=1") as r:
        assert r.status == 200
        assert r.headers["X-Cutover-Backend"] == "legacy"
        assert (await r.json())["path"] == "/pinned?x=1"


async def test_gone_names_the_replacement_and_the_guide(setup: Any) -> None:
    gw, new, legacy, s = setup
    before = legacy.hits, len(new.received)
    async with s.get(gw.url + "/old/report/x") as r:
        assert r.status == 410
        body = await r.json()
        _, _, links = deprecation_of(r.headers)
    assert body["error"]["code"] == "gone"
    assert body["error"]["replacement"] == "GET /alerts/{id}"
    assert body["error"]["migration_guide"] == MIGRATION
    assert links == [f'<{MIGRATION}>; rel="deprecation"; type="text/html"']
    assert (legacy.hits, len(new.received)) == before  # no backend asked
    async with s.get(gw.url + "/versioned", headers={"X-Api-Version": "1"}) as r:
        assert r.status == 410
    async with s.get(gw.url + "/versioned", headers={"X-Api-Version": "2"}) as r:
        assert (r.status, r.headers["X-Cutover-Backend"]) == (404, "new")  # proxied as is
        assert "Deprecation" not in r.headers


async def test_health_answered_by_the_gateway(setup: Any) -> None:
    gw, _, _, s = setup
    async with s.get(gw.url + "/health") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "healthy" and isinstance(body["timestamp"], float)
    gw.draining = True
    async with s.get(gw.url + "/health") as r:
        assert (r.status, await r.json()) == (503, {"detail": "Service unhealthy"})
    gw.draining = False


async def test_not_deprecated_rule_has_no_headers(setup: Any) -> None:
    gw, _, _, s = setup
    async with s.get(gw.url + "/quiet") as r:
        assert r.status == 200
        assert "Deprecation" not in r.headers and "Sunset" not in r.headers


async def test_routes_without_rules_are_untouched(setup: Any) -> None:
    gw, _, _, s = setup
    async with s.get(gw.url + "/plain?offset=1") as r:
        assert r.status == 404  # the new backend has no such path, and nothing rewrote it
        assert "Deprecation" not in r.headers


async def test_fallback_still_applies_with_the_legacy_request(
    new_backend: NewBackend, backends: Any, gateway: Any, tmp_path: Path
) -> None:
    legacy = await backends("legacy")
    gw = await gateway(compat_config(new_backend.url, legacy.url, tmp_path))
    await new_backend.stop()  # refused connections: nothing was delivered
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/alerts/7?offset=40&limit=20") as r:
            assert r.status == 200
            assert r.headers["X-Cutover-Backend"] == "legacy"
            assert (await r.json())["path"] == "/alerts/7?offset=40&limit=20"  # as it came
            assert "Deprecation" in r.headers
        async with s.post(gw.url + "/ingest", json={"alerts": [{"labels": {}}]}) as r:
            assert r.status == 200
            assert r.headers["X-Cutover-Backend"] == "legacy"
            assert (await r.json())["path"] == "/ingest"


async def usage(gw: Gateway, query: str = "") -> dict[str, Any]:
    url = gw.admin_url + "/admin/compat/usage" + query
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        return await r.json()


async def test_usage_per_caller_survives_a_restart(
    new_backend: NewBackend, backends: Any, tmp_path: Path
) -> None:
    legacy = await backends("legacy")
    data = compat_config(new_backend.url, legacy.url, tmp_path)

    async def run(calls: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
        gw = await start_gateway(parse_config(data, str(tmp_path / "cutover.yaml")))
        try:
            async with aiohttp.ClientSession() as s:
                for path, headers in calls:
                    async with s.get(gw.url + path, headers=headers) as r:
                        await r.read()
                async with s.get(gw.url + "/metrics") as r:
                    metrics = await r.text()
            return {
                "usage": await usage(gw),
                "one": await usage(gw, "?rule=removed"),
                "metrics": metrics,
            }
        finally:
            await gw.close()

    key = {"X-API-Key": "secret-key-1"}
    anon = {"User-Agent": "legacy-cron/1.0"}
    first = await run([("/alerts/1", key), ("/alerts/2", key), ("/old/x", anon)])
    line = next(x for x in first["metrics"].splitlines() if x.startswith("cutover_legacy_"))
    assert line == 'cutover_legacy_requests_total{rule="item"} 2.0'
    second = await run([("/alerts/3", key), ("/plain", key)])  # /plain matches no rule
    callers = {(c["rule"], c["kind"]): c for c in second["usage"]["callers"]}
    item = callers[("item", "key")]
    assert item["count"] == 3
    assert item["caller"].startswith("key:") and "secret-key-1" not in str(second)
    assert item["first_seen"] <= item["last_seen"]
    assert item["sunset"] == "2025-04-01T00:00:00Z"
    removed = callers[("removed", "client")]
    assert (removed["count"], removed["user_agent"], removed["client_ip"]) == (
        1, "legacy-cron/1.0", "127.0.0.1"
    )  # fmt: skip
    assert {r["rule"]: r["calls"] for r in second["usage"]["rules"]}["item"] == 3
    # ?rule= lists that rule only (not the others with calls: 0)
    assert [(r["rule"], r["calls"]) for r in second["one"]["rules"]] == [("removed", 1)]
    assert {c["rule"] for c in second["one"]["callers"]} == {"removed"}

    # the CLI reads the same store
    config_file = tmp_path / "cutover.yaml"
    config_file.write_text(yaml.safe_dump(data))
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cutover", "compat", "report", "-c", str(config_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["RULE", "SUNSET", "DAYS", "CALLS"]
    assert any(x.split()[0] == "item" and x.split()[3] == "3" for x in lines[1:])
    assert any("legacy-cron/1.0 @ 127.0.0.1" in x for x in lines)
    cmd = ["compat", "report", "-c", str(config_file), "--rule", "item", "--json"]
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "cutover", *cmd],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    one = orjson.loads(out.stdout)
    assert [(r["rule"], r["calls"]) for r in one["rules"]] == [("item", 3)]


async def test_usage_is_written_in_the_background(
    new_backend: NewBackend, backends: Any, gateway: Any, tmp_path: Path
) -> None:
    from cutover.compat.store import read_usage

    legacy = await backends("legacy")
    gw = await gateway(
        compat_config(new_backend.url, legacy.url, tmp_path, usage={"flush_interval": "100ms"})
    )
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/alerts/1") as r:
        assert r.status == 200
    db = await gw.database()
    rows: list[dict[str, Any]] = []

    async def stored() -> bool:
        try:
            rows[:] = await read_usage(db)
        except StoreUnavailable:  # no table before the first write
            return False
        return bool(rows)

    for _ in range(200):
        if await stored():
            break
        await asyncio.sleep(0.05)
    assert [(r["rule"], r["count"]) for r in rows] == [("item", 1)]
    await wait_for(lambda: len(gw.compat.usage) == 0 if gw.compat else False)
