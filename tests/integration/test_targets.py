"""Request targets other than plain origin-form (`core.http1`): absolute-form is served as the
origin-form request it names, dot-segments route where the backend resolves them, and nothing a
client sends changes which backend, or which part of it, a request reaches."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from tests.conftest import gateway_config
from tests.integration.wire_helpers import exchange

# Every test runs on both listener paths: proxy.fastpath and aiohttp alone.
pytestmark = pytest.mark.usefixtures("serving_path")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def two_routes(go: str, py: str, prefix: str) -> dict[str, object]:
    """`prefix` routes to py, everything else to go."""
    data = gateway_config({"go": go, "py": py})
    data["routes"] = [
        {"name": "special", "match": {"path_prefix": prefix}, "split": {"py": 100}},
        {"name": "default", "match": {"path_prefix": "/"}, "split": {"go": 100}},
    ]
    return data


async def test_a_client_using_the_gateway_as_its_proxy_is_served(backends, gateway, caplog) -> None:
    # an HTTP client configured with the gateway as its proxy sends absolute-form targets
    caplog.set_level(logging.ERROR)
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession() as s:
        async with s.get("http://example.test/api/x?q=1", proxy=gw.url) as r:
            assert r.status == 200
            body = await r.json()
        async with s.post("http://example.test/up", data=b"x" * 70000, proxy=gw.url) as r:
            assert r.status == 200
            assert (await r.json())["body_bytes"] == 70000
        async with s.get("http://example.test/healthz", proxy=gw.url) as r:
            assert (r.status, await r.json()) == (200, {"status": "ok"})  # the gateway's own
    assert body["path"] == "/api/x?q=1"
    assert [r["target"] for r in go.received] == ["/api/x?q=1", "/up"]
    headers = go.received[0]["headers"]
    assert headers["Host"] == f"127.0.0.1:{go.port}"  # host_header: backend (the default)
    assert headers["X-Forwarded-Host"] == "example.test"  # the authority, not a Host header
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_absolute_form_never_leaves_the_backend_base_path(backends, gateway) -> None:
    go = await backends("go")
    config = gateway_config({"go": go.url + "/base"})
    config["backends"]["go"]["health"] = "off"  # only the requests below reach it
    gw = await gateway(config)
    for target in (b"http://evil.test/x", b"http://evil.test//other.test/x?u=http://a/"):
        raw = b"GET " + target + b" HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"
        answer = await exchange(port_of(gw.url), raw)
        assert answer.statuses == [200], answer.data[:300]
    assert [r["target"] for r in go.received] == ["/base/x", "/base//other.test/x?u=http://a/"]


async def test_absolute_form_is_routed_on_its_path(backends, gateway) -> None:
    go, py = await backends("go"), await backends("py")
    gw = await gateway(two_routes(go.url, py.url, "/api/"))
    async with aiohttp.ClientSession() as s:
        for url, backend in (("http://h.test/api/x", "py"), ("http://h.test/x", "go")):
            async with s.get(url, proxy=gw.url) as r:
                assert r.status == 200
                assert (await r.json())["backend"] == backend


async def test_websocket_through_an_absolute_form_target(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect("http://example.test/ws", proxy=gw.url) as ws,
    ):
        await ws.send_str("hi")
        assert (await ws.receive_str()) == "go: hi"


@pytest.mark.parametrize(
    ("target", "backend"),
    [
        (b"/public/../admin/x", "py"),
        (b"/public/%2E%2e/admin/x", "py"),
        (b"/public/./../admin/x?next=/../y", "py"),
        (b"/admin/../public/x", "go"),
        (b"/admin/./x", "py"),
        (b"http://h.test/public/../admin/x", "py"),
    ],
)
async def test_dot_segments_route_where_the_backend_resolves_them(
    target: bytes, backend: str, backends, gateway
) -> None:
    go, py = await backends("go"), await backends("py")
    gw = await gateway(two_routes(go.url, py.url, "/admin/"))
    raw = b"GET " + target + b" HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n"
    answer = await exchange(port_of(gw.url), raw)
    assert answer.statuses == [200], answer.data[:300]
    served = go if backend == "go" else py
    assert served.hits == 1 and go.hits + py.hits == 1
    sent = target.removeprefix(b"http://h.test").decode()
    assert served.received[0]["target"] == sent  # forwarded as sent: resolving is the backend's
