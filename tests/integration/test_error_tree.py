"""One middleware renders the error tree on the main and the admin apps: a raised error is
its class's JSON answer (status, body, headers); an unexpected exception is a JSON 500 with
no traceback or secret in it, logged once; once a response has started nothing is rendered."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web

from cutover.core.errors import render
from cutover.proxy.config import parse_config
from cutover.proxy.host import Feature
from cutover.proxy.server import Gateway
from tests.conftest import gateway_config
from tests.unit.core.test_errors import CASES

pytestmark = pytest.mark.usefixtures("serving_path")

TOKEN = "error-tree-token"
SECRET = "hunter2-secret-in-the-exception"


class Raising(Feature):
    """Endpoints that raise: /raise/<n> the n-th case, /boom an unexpected exception,
    /late an exception once the response has started."""

    name = "raising"

    def _routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        async def raising(request: web.Request) -> web.StreamResponse:
            raise CASES[int(request.match_info["n"])][0]

        async def boom(request: web.Request) -> web.StreamResponse:
            raise RuntimeError(f"connection to postgresql://app:{SECRET}@db failed")

        async def late(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b"partial")
            raise RuntimeError(SECRET)

        router.add_get(prefix + "/raise/{n}", raising)
        router.add_get(prefix + "/boom", boom)
        router.add_get(prefix + "/late", late)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        self._routes(router, "")

    def add_admin_routes(self, router: web.UrlDispatcher) -> None:
        self._routes(router, "/admin")


@pytest.fixture
async def gw(backends, request) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    go = await backends("go")
    data = gateway_config({"go": go.url}, admin={"listen": "127.0.0.1:0", "token": TOKEN})
    data["fast_path"] = request.getfixturevalue("serving_path") == "fast"
    gateway = Gateway(parse_config(data, "test.yaml"), None, (Raising,))
    await gateway.start()
    yield gateway
    await gateway.close()


def _bases(gw: Gateway) -> list[tuple[str, dict[str, str]]]:
    return [
        (gw.url, {"X-Request-Id": "rid-7"}),
        (gw.admin_url + "/admin", {"Authorization": f"Bearer {TOKEN}"}),
    ]


async def test_every_class_is_rendered_alike_on_main_and_admin(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        for base, headers in _bases(gw):
            rid = headers.get("X-Request-Id")
            for n, (exc, status, error, wanted) in enumerate(CASES):
                async with s.get(f"{base}/raise/{n}", headers=headers) as r:
                    assert r.status == status, (base, n)
                    assert r.content_type == "application/json"
                    body = await r.json()
                    expected = render(exc, rid)
                    assert body["error"] == error, (base, n)
                    assert await r.read() == expected.body
                    for name, value in wanted.items():
                        assert r.headers[name] == value


async def test_an_unexpected_exception_is_a_json_500_logged_once(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as s:
        for base, headers in _bases(gw):
            caplog.clear()
            async with s.get(f"{base}/boom", headers=headers) as r:
                assert r.status == 500
                text = await r.text()
            assert r.content_type == "application/json"
            assert SECRET not in text and "Traceback" not in text and "RuntimeError" not in text
            error = orjson.loads(text)["error"]
            assert error == {"code": "internal_error", "message": "internal error"}
            logged = [rec for rec in caplog.records if rec.exc_info is not None]
            assert len(logged) == 1, [rec.getMessage() for rec in caplog.records]
            assert logged[0].exc_info[0] is RuntimeError  # type: ignore[index]


async def test_an_exception_after_the_response_started_cuts_it(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        for base, headers in _bases(gw):
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(f"{base}/late", headers=headers) as r:
                    assert r.status == 200
                    await r.read()
            async with s.get(f"{base}/raise/0", headers=headers) as r:  # still serving
                assert r.status == 500


async def test_own_endpoints_refuse_other_methods_instead_of_proxying_them(
    backends, serving_path: str
) -> None:  # type: ignore[no-untyped-def]
    """POST /healthz is cutover's path with a wrong method: a JSON 405, never the backend's."""
    go = await backends("go")
    data = gateway_config({"go": go.url}, fast_path=serving_path == "fast")
    gateway = Gateway(parse_config(data, "test.yaml"))
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as s:
            for path in ("/healthz", "/readyz", "/metrics"):
                for method in ("POST", "PUT", "DELETE"):
                    async with s.request(method, gateway.url + path, data=b"{}") as r:
                        assert r.status == 405, (method, path)
                        assert r.headers["Allow"] == "GET, HEAD"
                        error = (await r.json())["error"]
                        assert error["code"] == "method_not_allowed"
                        assert error["field"] == "method" and "GET" in error["message"]
                async with s.head(gateway.url + path) as r:
                    assert r.status == 200, path
        assert go.hits == 0
    finally:
        await gateway.close()
