"""Every error the gateway answers itself is JSON (`core.errors.error_response`'s shape), aiohttp's
own refusals included: an unknown admin path, a method a path does not take, a body over the
limit (413) on the admin API and on the main listener's own endpoints, on both listener paths."""

from __future__ import annotations

import io
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import gateway_config

pytestmark = pytest.mark.usefixtures("serving_path")

TOKEN = "json-errors-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def gw(backends, gateway, tmp_path: Path):  # type: ignore[no-untyped-def]
    go = await backends("go")
    data = gateway_config(
        {"go": go.url},
        admin={"listen": "127.0.0.1:0", "token": TOKEN},
        storage=f"sqlite:///{tmp_path / 'state.db'}",
        limits={"max_body": "64KiB"},
        alerts={},
        publishing={"targets": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/"}]},
    )
    return await gateway(data)


async def _call(method: str, url: str, **kw):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, dict(r.headers), await r.json()


async def test_admin_unknown_path_and_method_are_json(gw) -> None:
    status, _, body = await _call("GET", gw.admin_url + "/admin/nope", headers=AUTH)
    assert status == 404
    assert body["error"] == {
        "code": "not_found", "message": "no endpoint at /admin/nope", "field": "path",
    }  # fmt: skip
    status, headers, body = await _call("DELETE", gw.admin_url + "/admin/routes", headers=AUTH)
    assert status == 405 and headers["Allow"] == "GET,HEAD"
    assert body["error"]["code"] == "method_not_allowed" and body["error"]["field"] == "method"
    assert body["error"]["message"] == "DELETE is not allowed on /admin/routes; use GET,HEAD"
    # without the token, an unknown path says nothing about what exists
    status, _, body = await _call("GET", gw.admin_url + "/admin/nope")
    assert status == 401 and body["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_admin_413_is_json(gw, chunked: bool) -> None:
    big = b"x" * (2 * 1024 * 1024)

    async def stream():  # type: ignore[no-untyped-def]
        yield big

    status, _, body = await _call(
        "PUT",
        gw.admin_url + "/admin/routes/default/weights",
        data=stream() if chunked else io.BytesIO(big),
        headers=AUTH,
    )
    assert status == 413
    assert body["error"] == {
        "code": "body_too_large",
        "message": "the request body exceeds the limit of 1048576 bytes",
        "field": "body",
    }


@pytest.mark.parametrize("path", ["/publishing/test/hook", "/enrichment/mode"])
async def test_main_listener_413_is_json_with_the_request_id(gw, path: str) -> None:
    status, _, body = await _call(
        "POST",
        gw.url + path,
        data=b"{" + b" " * (100 * 1024) + b"}",
        headers={**AUTH, "X-Request-ID": "rid-413"},
    )
    assert status == 413
    assert body["error"]["code"] == "body_too_large" and body["error"]["field"] == "body"
    assert body["error"]["message"] == "the request body exceeds the limit of 65536 bytes"
    assert body["request_id"] == "rid-413"
