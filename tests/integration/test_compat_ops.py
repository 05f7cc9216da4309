"""Compat operations a real legacy/new pair needs, through the gateway: a body for an empty or
non-JSON answer, error bodies per status, conditions and timestamps, hostile answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import gateway_config


def v2_app() -> web.Application:
    """A new implementation that answers 200 with no body where the legacy one said success."""

    async def ack(request: web.Request) -> web.Response:
        if request.query.get("with"):
            return web.Response(body=b'{"ok": 1}', content_type="application/json")
        return web.Response(status=200)  # no body, no Content-Type

    async def delete(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def error(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        if request.query.get("plain"):
            return web.Response(status=status, text="upstream says no", content_type="text/plain")
        doc = {"error": f"failed with {status}", "code": status, "trace": "x"}
        return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")

    async def listing(request: web.Request) -> web.Response:
        doc = {"items": [], "created": "2025-04-01T12:00:00.123456789+02:00", "kind": "list"}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def deep(request: web.Request) -> web.Response:
        depth = int(request.query.get("depth", "300"))
        return web.Response(body=b"[" * depth + b"]" * depth, content_type="application/json")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/echo", echo)
    app.router.add_post("/v2/ack", ack)
    app.router.add_delete("/v2/things/{id}", delete)
    app.router.add_get("/v2/errors/{status}", error)
    app.router.add_get("/v2/list", listing)
    app.router.add_get("/v2/deep", deep)
    return app


RULES: list[dict[str, Any]] = [
    {"name": "ack", "match": {"method": "POST", "path": "/ack"},
     "rewrite": {"applies_to": "new", "path": "/v2/ack",
                 "response": {"fill": [{"body": {"status": "success"}}]}}},
    {"name": "delete", "match": {"method": "DELETE", "path": "/things/{id}"},
     "rewrite": {"applies_to": "new", "path": "/v2/things/{id}",
                 "response": {"status": {204: 200},
                              "fill": [{"status": 204, "body": {"status": "success"}}]}}},
    {"name": "errors", "match": {"method": "GET", "path": "/errors/{status}"},
     "rewrite": {"applies_to": "new", "path": "/v2/errors/{status}",
                 "response": {
                     "status": {400: 422},
                     "fill": [{"status": "5xx", "when": "not_json",
                               "body": {"status": "error", "message": "{text}",
                                        "code": "{status}"}}],
                     "error_body": {
                         404: [{"set": {".": {"detail": "Not Found"}}}],
                         "4xx": [{"rename": {"error": "detail"}}, {"keep": ["detail"]}],
                         "default": [{"when": {"present": "error"},
                                      "then": [{"rename": {"error": "message"}},
                                               {"set": {"status": "error"}},
                                               {"keep": ["status", "message"]}]}],
                     }}}},
    {"name": "list", "match": {"method": "GET", "path": "/list"},
     "rewrite": {"applies_to": "new", "path": "/v2/list",
                 "response": {"body": [
                     {"empty_to_null": "items"},
                     {"time": {"created": {"digits": 3}}},
                     {"when": {"equals": {"kind": "list"}, "status": "2xx"},
                      "then": [{"to_array": "kind"}]},
                 ]}}},
    {"name": "create", "match": {"method": "POST", "path": "/create"},
     "rewrite": {"applies_to": "new", "path": "/v2/echo", "body": [{"to_array": "x"}]}},
    {"name": "batch", "match": {"method": "POST", "path": "/batch"},
     "fan_out": {"items": "alerts", "path": "/v2/echo", "item": [{"to_array": "x"}]}},
    {"name": "deep", "match": {"method": "GET", "path": "/deep"},
     "rewrite": {"applies_to": "new", "path": "/v2/deep",
                 "response": {"body": [{"to_array": "x"}]}}},
]  # fmt: skip


@pytest.fixture
async def gw_url(gateway: Any, tmp_path: Path) -> AsyncIterator[str]:
    runner = web.AppRunner(v2_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    new = f"http://127.0.0.1:{runner.addresses[0][1]}"
    data = gateway_config({"new": new}, storage=f"sqlite:///{tmp_path}/state.db")
    data["compat"] = {"backends": {"new": "new"}, "rules": RULES, "max_body": "64KiB"}
    gw = await gateway(data)
    try:
        yield gw.url
    finally:
        await gw.close()
        await runner.cleanup()


async def fetch(method: str, url: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url) as r:
        raw = await r.read()
        return r.status, r.headers.get("Content-Type", ""), orjson.loads(raw) if raw else None


async def test_an_empty_answer_gets_the_legacy_body(gw_url: str) -> None:
    status, ctype, body = await fetch("POST", gw_url + "/ack")
    assert (status, body) == (200, {"status": "success"})
    assert ctype.startswith("application/json")
    # an answer that has a body keeps it, byte for byte
    async with aiohttp.ClientSession() as s, s.post(gw_url + "/ack?with=body") as r:
        assert (r.status, await r.read()) == (200, b'{"ok": 1}')
        assert r.headers["Content-Type"].startswith("application/json")
    # 204 has no body: mapped to 200, it gets one
    status, ctype, body = await fetch("DELETE", gw_url + "/things/7")
    assert (status, body) == (200, {"status": "success"})
    assert ctype.startswith("application/json")


async def test_error_bodies_per_status_and_class(gw_url: str) -> None:
    assert await fetch("GET", gw_url + "/errors/404") == (
        404, "application/json", {"detail": "Not Found"}
    )  # fmt: skip
    status, _, body = await fetch("GET", gw_url + "/errors/400")
    assert (status, body) == (422, {"detail": "failed with 400"})  # 4xx, status mapped
    status, _, body = await fetch("GET", gw_url + "/errors/503")
    assert (status, body) == (503, {"status": "error", "message": "failed with 503"})
    # a 5xx that is not JSON gets a body, then the 5xx operations (nothing to rename there)
    status, ctype, body = await fetch("GET", gw_url + "/errors/502?plain=1")
    assert (status, body) == (502, {"status": "error", "message": "upstream says no", "code": 502})
    assert ctype.startswith("application/json")
    # a 4xx that is not JSON has no fill: it passes untouched
    async with aiohttp.ClientSession() as s, s.get(gw_url + "/errors/418?plain=1") as r:
        assert (r.status, await r.text()) == (418, "upstream says no")


async def test_conditions_empty_arrays_and_times(gw_url: str) -> None:
    status, _, body = await fetch("GET", gw_url + "/list")
    assert status == 200
    assert body == {"items": None, "created": "2025-04-01T10:00:00.123Z", "kind": ["list"]}


async def test_a_hostile_answer_is_a_502_never_a_500(gw_url: str) -> None:
    for depth in (300, 1000):  # deeper than orjson writes; near what it reads
        async with aiohttp.ClientSession() as s, s.get(f"{gw_url}/deep?depth={depth}") as r:
            assert r.status == 502, depth
            assert (await r.json())["error"]["code"] == "compat_transform_failed"
    async with aiohttp.ClientSession() as s, s.get(f"{gw_url}/deep?depth=2000") as r:
        assert r.status == 502  # orjson refuses to read it: malformed for the gateway
        assert (await r.json())["error"]["code"] == "bad_upstream_json"


async def test_a_hostile_request_body_is_a_400_never_a_500(gw_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for depth in (300, 1000):
            deep = b"[" * depth + b"]" * depth
            body = b'{"x": ' + deep + b"}"
            async with s.post(gw_url + "/create", data=body) as r:
                assert r.status == 400, depth
                assert (await r.json())["error"]["code"] == "bad_request_body"
            async with s.post(gw_url + "/batch", data=b'{"alerts": [' + body + b"]}") as r:
                assert r.status == 400, depth
                assert (await r.json())["error"]["code"] == "bad_request_body"
        async with s.post(gw_url + "/create", data=b'{"x": 1}') as r:  # and it still works
            assert (r.status, await r.json()) == (200, {"x": [1]})
