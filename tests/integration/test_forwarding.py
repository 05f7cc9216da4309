"""The data plane over real sockets: split, stickiness, fallback, headers, streaming, errors."""

from __future__ import annotations

import asyncio
import collections
import gzip
import json
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from tests.conftest import gateway_config, wait_for

# Every test runs on both listener paths: proxy.fastpath and aiohttp alone.
pytestmark = pytest.mark.usefixtures("serving_path")


async def get_json(session: aiohttp.ClientSession, url: str, **kw):  # type: ignore[no-untyped-def]
    async with session.get(url, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def test_weighted_split_within_tolerance(backends, gateway) -> None:
    go, py = await backends("go"), await backends("python")
    gw = await gateway(
        gateway_config({"go": go.url, "python": py.url}, route={"split": {"go": 90, "python": 10}})
    )
    counts: collections.Counter[str] = collections.Counter()
    async with aiohttp.ClientSession() as s:
        for _ in range(3000):
            async with s.get(gw.url + "/x") as resp:
                assert resp.status == 200
                counts[resp.headers["X-Cutover-Backend"]] += 1
    share = counts["go"] / 3000
    assert 0.87 <= share <= 0.93, counts
    assert gw.served["go"] == counts["go"]


async def test_sticky_header_keeps_each_user_on_one_side(backends, gateway) -> None:
    go, py = await backends("go"), await backends("python")
    gw = await gateway(
        gateway_config(
            {"go": go.url, "python": py.url},
            route={"split": {"go": 50, "python": 50}, "sticky": {"header": "X-Request-User"}},
        )
    )
    seen: dict[str, set[str]] = collections.defaultdict(set)
    async with aiohttp.ClientSession() as s:
        for _round in range(3):
            for user in range(60):
                async with s.get(gw.url + "/", headers={"X-Request-User": f"u{user}"}) as r:
                    seen[f"u{user}"].add(r.headers["X-Cutover-Backend"])
    assert all(len(sides) == 1 for sides in seen.values())
    sides = collections.Counter(next(iter(v)) for v in seen.values())
    assert sides["go"] > 10 and sides["python"] > 10, sides


async def test_sticky_cookie_is_set_once_and_honoured(backends, gateway) -> None:
    go, py = await backends("go"), await backends("python")
    gw = await gateway(
        gateway_config(
            {"go": go.url, "python": py.url},
            route={"split": {"go": 50, "python": 50}, "sticky": "cookie"},
        )
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        async with s.get(gw.url + "/") as r:
            cookie = r.headers["Set-Cookie"]
            first = r.headers["X-Cutover-Backend"]
        assert cookie.startswith("cutover_id=")
        for attr in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=2592000"):
            assert attr in cookie
        value = cookie.split(";")[0]
        for _ in range(20):
            async with s.get(gw.url + "/", headers={"Cookie": value}) as r:
                assert "Set-Cookie" not in r.headers
                assert r.headers["X-Cutover-Backend"] == first


async def test_override_header_forces_a_backend(backends, gateway) -> None:
    go, py = await backends("go"), await backends("python")
    gw = await gateway(
        gateway_config(
            {"go": go.url, "python": py.url},
            headers={"override": "X-Cutover-Force"},
        )
    )
    async with aiohttp.ClientSession() as s:
        _, h, _ = await get_json(s, gw.url + "/", headers={"X-Cutover-Force": "python"})
        assert h["X-Cutover-Backend"] == "python"
        _, h, _ = await get_json(s, gw.url + "/")
        assert h["X-Cutover-Backend"] == "go"


async def test_killed_backend_costs_no_failed_get(backends, gateway) -> None:
    go, py = await backends("go"), await backends("python")
    gw = await gateway(
        gateway_config(
            {"go": go.url, "python": py.url},
            route={"split": {"go": 50, "python": 50}, "fallback": ["python", "go"]},
        )
    )
    statuses: collections.Counter[int] = collections.Counter()

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in range(400):
            async with session.get(gw.url + "/item?delay=0.002") as r:
                statuses[r.status] += 1

    async with aiohttp.ClientSession() as s:
        # Three concurrent clients: the default retry budget always allows three replays
        # in flight, so every request the dead backend fails gets its replay.
        clients = [asyncio.create_task(client(s)) for _ in range(3)]
        await wait_for(lambda: go.hits > 50)
        await go.stop()  # killed mid-test, connections in flight
        await asyncio.gather(*clients)
    assert statuses == {200: 1200}, statuses
    assert "go" not in gw.health.available(gw.clock.monotonic())
    assert gw.served["python"] > gw.served["go"]


async def test_post_without_idempotency_key_is_not_replayed(backends, gateway) -> None:
    go, py = await backends("go"), await backends("python")
    go.fail_status = 503
    gw = await gateway(
        gateway_config({"go": go.url, "python": py.url}, route={"fallback": ["python"]})
    )
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/alerts", data=b"{}") as r:
            assert r.status == 503  # the backend's own answer, passed through
            assert r.headers["X-Cutover-Backend"] == "go"
        assert py.hits == 0
        async with s.post(gw.url + "/alerts", data=b"{}", headers={"Idempotency-Key": "k1"}) as r:
            assert r.status == 200
            assert r.headers["X-Cutover-Backend"] == "python"
        async with s.get(gw.url + "/alerts") as r:
            assert r.status == 200
            assert r.headers["X-Cutover-Backend"] == "python"
    assert py.hits == 2


async def test_connect_failure_moves_even_a_post(backends, gateway) -> None:
    py = await backends("python")
    gw = await gateway(
        gateway_config(
            {"go": "http://127.0.0.1:1", "python": py.url}, route={"fallback": ["python"]}
        )
    )
    async with aiohttp.ClientSession() as s, s.post(gw.url + "/alerts", data=b'{"a": 1}') as r:
        assert r.status == 200
        body = await r.json()
    assert body["backend"] == "python" and body["body_bytes"] == 8


async def test_errors_are_json_with_request_id(backends, gateway) -> None:
    slow = await backends("slow")
    gw = await gateway(
        gateway_config(
            {"slow": slow.url, "dead": "http://127.0.0.1:1"},
            route={"timeout": "300ms", "name": "default"},
        )
    )
    headers = {"X-Request-ID": "abc"}
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/x?delay=1", headers=headers) as r:
        assert r.status == 504
        body = await r.json()
        assert body == {
            "error": {"code": "upstream_timeout", "message": "upstream timed out"},
            "request_id": "abc",
        }
    gw2 = await gateway(gateway_config({"dead": "http://127.0.0.1:1"}))
    async with aiohttp.ClientSession() as s, s.get(gw2.url + "/x") as r:
        assert r.status == 502
        body = await r.json()
        assert body["error"]["code"] == "upstream_unavailable"
        assert len(body["request_id"]) == 32
        assert "127.0.0.1" not in json.dumps(body)


async def test_hop_by_hop_headers_removed_both_ways(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    headers = {
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "private",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9v",
        "Upgrade-Insecure-Requests": "1",
        "X-Forwarded-For": "203.0.113.9",
        "X-Request-ID": "rid-1",
    }
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/h", headers=headers) as r:
        body = await r.json()
        for name in ("Keep-Alive", "X-Backend-Private"):
            assert name not in r.headers
        assert r.headers["X-Backend"] == "go"
        assert r.headers["X-Request-ID"] == "rid-1"
    seen = {k.lower(): v for k, v in body["headers"].items()}
    for name in ("x-hop", "keep-alive", "te", "proxy-authorization"):
        assert name not in seen, name
    assert seen["upgrade-insecure-requests"] == "1"  # not hop-by-hop, only similar
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"].startswith("127.0.0.1:")
    assert seen["x-request-id"] == "rid-1"
    assert seen["host"] == f"127.0.0.1:{go.port}"


async def test_request_id_generated_when_absent(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/") as r:
        body = await r.json()
    rid = r.headers["X-Request-ID"]
    assert len(rid) == 32 and body["headers"]["X-Request-ID"] == rid


async def test_gzip_passes_untouched(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(go.url + "/gzip") as r:
            direct = await r.read()
        async with s.get(gw.url + "/gzip", headers={"Accept-Encoding": "gzip"}) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            through = await r.read()
    assert through == direct
    assert gzip.decompress(through).startswith(b'{"hello"')
    # a gzip request body is passed on as sent, not inflated by the gateway
    payload = gzip.compress(b"x" * 10_000)
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + "/up", data=payload, headers={"Content-Encoding": "gzip"}) as r,
    ):
        assert (await r.json())["body_bytes"] == len(payload)


async def test_body_limit_413(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, limits={"max_body": "1KiB"}))
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/up", data=b"x" * 2048) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "body_too_large"

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(4):
                yield b"y" * 600

        async with s.post(gw.url + "/up", data=chunks()) as r:
            assert r.status == 413
    assert go.hits == 0 or go.received[-1]["method"] == "POST"


async def test_large_header_431(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/", headers={"X-Big": "a" * 20_000}) as r:
            assert r.status == 431
            assert (await r.json())["error"]["code"] == "header_too_large"
        hdrs = {f"X-H{i}": "1" for i in range(150)}
        async with s.get(gw.url + "/", headers=hdrs) as r:
            assert r.status == 431
    assert go.hits == 0


async def test_websocket_passes_through(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession() as s, s.ws_connect(gw.url + "/ws") as ws:
        await ws.send_str("hello")
        assert (await ws.receive_str(timeout=5)) == "go: hello"
        await ws.send_bytes(b"abc")
        assert (await ws.receive_bytes(timeout=5)) == b"cba"


async def test_sse_streams_without_buffering(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/sse") as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        start = loop.time()
        first = await r.content.readuntil(b"\n\n")
        first_at = loop.time() - start
        rest = await r.read()
        total = loop.time() - start
    assert first == b"data: 0\n\n"
    assert rest == b"data: 1\n\ndata: 2\n\n"
    assert first_at < total  # the first event arrived before the stream ended


async def test_concurrency_cap_answers_503_with_retry_after(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, limits={"max_concurrency": 2}))
    async with aiohttp.ClientSession() as s:

        async def call() -> tuple[int, str | None]:
            async with s.get(gw.url + "/?delay=0.5") as r:
                return r.status, r.headers.get("Retry-After")

        results = await asyncio.gather(*(call() for _ in range(4)))
    assert sorted(results, key=lambda x: x[0]) == [
        (200, None), (200, None), (503, "1"), (503, "1"),
    ]  # fmt: skip


async def test_unhealthy_backend_share_goes_to_healthy_one(backends, gateway) -> None:
    go, py = await backends("go"), await backends("python")
    gw = await gateway(
        gateway_config({"go": go.url, "python": py.url}, route={"split": {"go": 50, "python": 50}})
    )
    async with aiohttp.ClientSession() as s:
        status, _, ready = await get_json(s, gw.url + "/readyz")
        assert status == 200 and ready["routes"]["default"]["ok"]
        await go.stop()
        await wait_for(lambda: "go" not in gw.health.available(gw.clock.monotonic()))
        for _ in range(50):
            async with s.get(gw.url + "/") as r:
                assert r.headers["X-Cutover-Backend"] == "python"
        await py.stop()
        await wait_for(lambda: not gw.health.available(gw.clock.monotonic()))
        status, _, ready = await get_json(s, gw.url + "/readyz")
        assert status == 503 and ready["routes"]["default"]["ok"] is False
        async with s.get(gw.url + "/metrics") as r:
            text = await r.text()
    assert 'cutover_backend_healthy{backend="go"} 0.0' in text
    assert 'cutover_requests_total{backend="python",route="default",status="200"} 50.0' in text


async def test_no_route_is_404_json(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, route={"match": {"path_prefix": "/api"}}))
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/other") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "no_route"


async def test_https_backend_with_ca_bundle(tmp_path: Path, gateway) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("backend.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"tls": True, "host": request.headers["Host"]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        gw = await gateway(
            {
                "listen": "127.0.0.1:0",
                "admin": "off",
                "access_log": False,
                "backends": {
                    "go": {
                        "url": f"https://127.0.0.1:{port}",
                        "health": "off",
                        "tls": {"ca_file": str(ca_file), "server_name": "backend.test"},
                    }
                },
                "routes": [{"name": "all", "split": {"go": 100}}],
            }
        )
        async with aiohttp.ClientSession() as s, s.get(gw.url + "/x") as r:
            assert r.status == 200
            assert (await r.json())["tls"] is True
    finally:
        await runner.cleanup()


async def test_access_log_line(tmp_path: Path, backends, gateway) -> None:
    go = await backends("go")
    log_file = tmp_path / "access.log"
    gw = await gateway(
        gateway_config({"go": go.url}, access_log={"enabled": True, "path": str(log_file)})
    )
    async with aiohttp.ClientSession() as s:
        await s.get(
            gw.url + "/log-me?q=1",
            headers={"Authorization": "Bearer secret-token", "Cookie": "session=s3cret"},
        )
    gw.access_log.flush()
    line = json.loads(log_file.read_text().splitlines()[-1])
    assert line["path"] == "/log-me" and line["status"] == 200 and line["backend"] == "go"
    assert line["route"] == "default" and len(line["request_id"]) == 32
    assert "secret-token" not in log_file.read_text() and "s3cret" not in log_file.read_text()


@pytest.mark.parametrize("size", [64 * 1024, 5 * 1024 * 1024])
async def test_large_response_streams(backends, gateway, size: int) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession() as s, s.get(gw.url + f"/big/{size}") as r:
        assert r.headers["Content-Length"] == str(size)
        assert len(await r.read()) == size


async def test_websocket_refused_by_backend_keeps_its_status(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(gw.url + "/no-such-socket?status=404")
        assert info.value.status == 404
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(gw.url + "/plain-200")  # answered without an upgrade
        assert info.value.status == 502


async def test_failed_bind_leaves_nothing_open(backends, gateway) -> None:
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    # a gateway binds its address alone (proxy.listen): a socket holding the port makes the
    # bind fail, and nothing may be left open (ResourceWarning is an error in this test suite)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        config = gateway_config({"go": go.url}, listen=f"127.0.0.1:{holder.getsockname()[1]}")
        with pytest.raises(OSError):
            await gateway(config)
    assert gw.url
