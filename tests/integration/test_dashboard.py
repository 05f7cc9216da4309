"""The dashboard's server side on a real gateway: the page, its files, the event stream and its
faults (readers going away, not reading, too many), auth, and the cross-site guard."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from cutover.proxy import dashboard as dashboard_module
from cutover.proxy.config import parse_config
from cutover.proxy.dashboard import STATIC_FILES, DashboardFeature, static_file
from cutover.proxy.server import Gateway
from tests.conftest import EchoBackend, wait_for
from tests.integration.canary_helpers import (
    AUTH,
    TOKEN,
    admin,
    canary_config,
    start,
    started,
    traffic,
)
from tests.quiescence import assert_quiescent, expect_held

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice-2b7e151628aed2a6"
STREAM_REQUEST = (
    f"GET /dashboard/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
).encode()


def dash(gw: Gateway) -> DashboardFeature:
    return next(f for f in gw.features if isinstance(f, DashboardFeature))


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, **extra: Any) -> AsyncIterator[Gateway]:
    go, py = EchoBackend("go"), EchoBackend("python")
    admin_section = extra.pop("admin", None)
    async with started(go, py):
        data = canary_config(go, py, tmp_path, split={"go": 10, "python": 90}, **extra)
        if admin_section is not None:
            data["admin"] = admin_section
        gw = await start(data)
        try:
            yield gw
        finally:
            await gw.close()


async def read_events(resp: aiohttp.ClientResponse, n: int, deadline: float = 10.0) -> list[Any]:
    """The next `n` snapshot events of an open stream, decoded."""
    found: list[Any] = []
    event = None

    async def run() -> None:
        nonlocal event
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                found.append(orjson.loads(line[6:]))
                if len(found) >= n:
                    return

    await asyncio.wait_for(run(), deadline)
    return found


# -- the page and its files -------------------------------------------------------------------


async def test_the_page_is_served_without_a_token_but_carries_no_data(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as s:
        async with s.get(gw.admin_url + "/dashboard") as r:
            body = await r.text()
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/html")
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "dashboard.js" in body
        assert "default" not in body  # no route name, no weight: the page holds no data
        for name, kind in STATIC_FILES.items():
            async with s.get(gw.admin_url + f"/dashboard/static/{name}") as r:
                if name == "dashboard.html":
                    assert r.status == 404  # served at /dashboard only
                    continue
                assert r.status == 200, name
                assert r.headers["Content-Type"] == kind
                assert await r.read() == static_file(name)
        async with s.get(gw.admin_url + "/favicon.ico") as r:  # browsers ask every origin
            assert r.status == 200 and r.headers["Content-Type"] == "image/svg+xml"
        async with s.post(gw.admin_url + "/favicon.ico") as r:  # only GET and HEAD are open
            assert r.status == 401


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/nope.js",
        "/dashboard/static/..%2f..%2fpyproject.toml",
        "/dashboard/static/%2e%2e/dashboard.py",
        "/dashboard/static/dashboard.js%00",
    ],
)
async def test_only_the_listed_files_are_served(tmp_path: Path, path: str) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as s:
        async with s.get(gw.admin_url + path) as r:
            assert r.status in (400, 401, 404)
            assert "application/json" in r.headers["Content-Type"]
            text = await r.text()
        assert "[build-system]" not in text and "import" not in text


async def test_nothing_of_the_dashboard_is_served_on_the_main_listener(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as s:
        for path in ("/dashboard", "/dashboard/static/dashboard.js", "/dashboard/events"):
            async with s.get(gw.url + path, headers=AUTH) as r:
                body = await r.read()
                # proxied like any path: the backend's echo, not the gateway's page or stream
                assert r.headers.get("Content-Type", "").startswith("application/json"), path
                assert body != static_file("dashboard.js")
                assert b"<!doctype html>" not in body
                assert orjson.loads(body)["backend"] in ("go", "python")
        assert not dash(gw).streams


def test_the_files_are_package_data_found_through_importlib_resources() -> None:
    from importlib import resources

    base = resources.files("cutover.proxy").joinpath("static")
    for name in STATIC_FILES:
        assert base.joinpath(name).is_file(), name
    assert static_file("dashboard.js").startswith(b"// cutover dashboard")
    with pytest.raises(KeyError):
        static_file("../dashboard.py")


def test_a_built_package_ships_the_files(tmp_path: Path) -> None:
    """What a wheel holds is what `build_py` lays out from pyproject's package data; the files
    are then read from the build through importlib.resources, away from the repository."""
    build = tmp_path / "build"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "egg_info",
            "--egg-base",
            str(tmp_path),
            "build_py",
            "--build-lib",
            str(build),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in STATIC_FILES:
        assert (build / "cutover" / "proxy" / "static" / name).is_file(), name
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from importlib import resources; import cutover.proxy as p; "
        "assert p.__file__.startswith(sys.argv[1]), p.__file__; "
        "print(len(resources.files('cutover.proxy').joinpath('static', 'dashboard.js')"
        ".read_bytes()))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(build)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert int(out.stdout) == len(static_file("dashboard.js"))


# -- the event stream -------------------------------------------------------------------------


async def test_the_stream_pushes_a_snapshot_every_second_with_weights_and_series(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw:
        await traffic(gw, 60)
        async with (
            aiohttp.ClientSession() as s,
            s.get(gw.admin_url + "/dashboard/events", headers=AUTH) as r,
        ):
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/event-stream"
            started_at = time.monotonic()
            snaps = await read_events(r, 3)
            elapsed = time.monotonic() - started_at
        assert elapsed < 2.9 + 3  # the first at once, then about one a second (loaded machine)
        last = snaps[-1]
        assert last["routes"][0]["weights"] == {"go": 10, "python": 90}
        series = last["series"]
        assert series["t"], "closed seconds with traffic"
        assert sum(series["backends"]["python"]["rps"]) + sum(series["backends"]["go"]["rps"]) == 60
        assert series["weights"]["default"]["go"][-1] == 10
        canary = last["panels"]["canary"]
        assert canary["routes"][0]["phase"] == "observing"
        assert canary["canary"][0]["verdict"]["status"]
        assert canary["events"] == []
        await wait_for(lambda: not dash(gw).streams)


@pytest.mark.parametrize("token", [None, "wrong-token", f"{TOKEN}x"])
async def test_the_stream_without_the_token_is_401_json(tmp_path: Path, token: str | None) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for path in ("/dashboard/events", "/dashboard/snapshot"):
            async with s.get(gw.admin_url + path, headers=headers) as r:
                assert r.status == 401
                assert r.headers["Content-Type"].startswith("application/json")
                assert (await r.json())["error"]["code"] == "unauthorized"
        assert not dash(gw).streams


async def test_a_reader_going_away_mid_stream_releases_everything(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        feature = dash(gw)
        for _ in range(3):
            s = aiohttp.ClientSession()
            r = await s.get(gw.admin_url + "/dashboard/events", headers=AUTH)
            await read_events(r, 1)
            assert len(feature.streams) == 1
            r.close()  # the connection goes, mid-stream
            await s.close()
            await wait_for(lambda: not feature.streams)
        # and with a raw socket cut while the gateway writes
        reader, writer = await asyncio.open_connection(*gw.admin_url[7:].rsplit(":", 1))
        writer.write(STREAM_REQUEST)
        await reader.readuntil(b"event: snapshot")
        writer.transport.abort()
        await wait_for(lambda: not feature.streams)
        await traffic(gw, 5)
        await assert_quiescent(gw)


async def test_a_reader_that_does_not_read_is_dropped_and_holds_one_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_module, "WRITE_TIMEOUT", 0.5)
    async with gateway(tmp_path) as gw:
        feature = dash(gw)
        big = b"event: snapshot\nid: 1\ndata: " + b"x" * (4 << 20) + b"\n\n"

        async def refresh(force: bool = False) -> bytes:
            return big

        monkeypatch.setattr(feature, "refresh", refresh)
        host, port = gw.admin_url[7:].rsplit(":", 1)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(STREAM_REQUEST)
        try:
            await wait_for(lambda: len(feature.streams) == 1)
            stream = next(iter(feature.streams))
            for _ in range(3):  # ticks offer more while the first write is stuck
                await feature.tick()
                assert stream.pending is None or stream.pending is big  # one, never a queue
            await wait_for(lambda: not feature.streams, deadline=15.0)
        finally:
            sock.close()


async def test_streams_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_module, "MAX_STREAMS", 2)
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as s:
        opened = [await s.get(gw.admin_url + "/dashboard/events", headers=AUTH) for _ in range(2)]
        try:
            for r in opened:
                assert r.status == 200
            async with s.get(gw.admin_url + "/dashboard/events", headers=AUTH) as r:
                assert r.status == 503
                assert r.headers["Retry-After"]
                assert (await r.json())["error"]["code"] == "too_many_streams"
        finally:
            for r in opened:
                r.close()
        await wait_for(lambda: not dash(gw).streams)


async def test_closing_the_gateway_ends_open_streams_promptly(tmp_path: Path) -> None:
    go, py = EchoBackend("go"), EchoBackend("python")
    async with started(go, py), aiohttp.ClientSession() as s:
        gw = await start(canary_config(go, py, tmp_path))
        r = await s.get(gw.admin_url + "/dashboard/events", headers=AUTH)
        await read_events(r, 1)
        expect_held(gw, {"dashboard.streams": 1}, "a page is open while the gateway closes")
        began = time.monotonic()
        await gw.close()
        assert time.monotonic() - began < 4.5  # under the admin listener's 5 s shutdown wait
        assert not dash(gw).streams
        r.close()


async def test_a_failing_panel_shows_as_an_error_and_the_rest_still_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(tmp_path) as gw:
        canary = next(f for f in gw.features if f.name == "canary")

        async def boom() -> dict[str, Any]:
            raise RuntimeError("broken panel")

        monkeypatch.setattr(canary, "dashboard", boom)
        status, snap = await admin(gw, "GET", "/dashboard/snapshot")
        assert status == 200
        assert snap["panels"]["canary"] == {"error": "RuntimeError"}
        assert "parity" in snap["panels"]
        assert snap["routes"][0]["weights"] == {"go": 10, "python": 90}


# -- actions: the API's own endpoints, the token's name, the cross-site guard -----------------


async def test_an_action_is_recorded_with_the_tokens_name_and_shown(tmp_path: Path) -> None:
    tokens = {"listen": "127.0.0.1:0", "tokens": {"alice": ALICE}}
    async with gateway(tmp_path, admin=tokens) as gw:
        origin = gw.admin_url
        status, body = await admin(
            gw, "PUT", "/admin/routes/default/weights", {"go": 30, "python": 70}, token=ALICE
        )
        assert status == 200, body
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                gw.admin_url + "/admin/rollback",
                json={"route": "default", "reason": "from the page"},
                headers={"Authorization": f"Bearer {ALICE}", "Origin": origin},
            ) as r,
        ):
            assert r.status == 200, await r.text()

        async def shown() -> list[dict[str, Any]]:
            _, snap = await admin(gw, "GET", "/dashboard/snapshot", token=ALICE)
            return snap["panels"]["canary"]["events"]

        for _ in range(100):
            events = await shown()
            if len(events) >= 2:
                break
            await asyncio.sleep(0.1)
        kinds = {e["kind"]: e for e in events}
        assert kinds["rollback"]["actor"] == "operator:alice"
        assert kinds["rollback"]["reason"].startswith("from the page")
        assert kinds["weights"]["actor"] == "operator:alice"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_a_cross_site_browser_request_cannot_act(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as s:
        for method, path, body in (
            ("POST", "/admin/rollback", {"route": "default"}),
            ("PUT", "/admin/routes/default/weights", {"go": 0, "python": 100}),
        ):
            async with s.request(
                method, gw.admin_url + path, json=body, headers={**AUTH, **headers}
            ) as r:
                assert r.status == 403
                err = (await r.json())["error"]
                assert err["code"] == "cross_origin" and err["field"] == "Origin"
        _, routes = await admin(gw, "GET", "/admin/routes")
        assert routes["routes"][0]["weights"] == {"go": 10, "python": 90}  # nothing changed
        # the page's own origin may act
        async with s.post(
            gw.admin_url + "/admin/pause",
            json={"route": "default"},
            headers={**AUTH, "Origin": gw.admin_url, "Sec-Fetch-Site": "same-origin"},
        ) as r:
            assert r.status == 200, await r.text()


async def test_without_a_token_a_browser_must_address_this_host(tmp_path: Path) -> None:
    """DNS rebinding: a page at a name that resolves to 127.0.0.1 is same-origin with the
    tokenless admin API; its requests carry that name in Host and are refused."""
    browser = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    async with (
        gateway(tmp_path, admin={"listen": "127.0.0.1:0"}) as gw,
        aiohttp.ClientSession() as s,
    ):
        rebound = "rebound.example:80"
        for headers in (browser, {"Origin": f"http://{rebound}"}):
            async with s.get(
                gw.admin_url + "/dashboard/snapshot", headers={**headers, "Host": rebound}
            ) as r:
                assert r.status == 403
                assert (await r.json())["error"]["field"] == "Host"
        for host in ("localhost", "127.0.0.1:9", "[::1]:9901"):
            async with s.get(
                gw.admin_url + "/dashboard/snapshot", headers={**browser, "Host": host}
            ) as r:
                assert r.status == 200, host
        # a client that is not a browser (curl, cutover ctl) is not held to it
        async with s.get(gw.admin_url + "/admin/whoami", headers={"Host": rebound}) as r:
            assert r.status == 200


async def test_a_rotated_token_ends_its_open_stream(tmp_path: Path) -> None:
    go, py = EchoBackend("go"), EchoBackend("python")
    async with started(go, py), aiohttp.ClientSession() as s:
        data = canary_config(go, py, tmp_path)
        gw = await start(data)
        try:
            r = await s.get(gw.admin_url + "/dashboard/events", headers=AUTH)
            await read_events(r, 1)
            data["admin"] = {"listen": "127.0.0.1:0", "token": "the-new-token-0123456789"}
            await gw.reload(parse_config(data, "test.yaml"))
            await asyncio.wait_for(r.content.read(), 10.0)  # the stream ends
            r.close()
            await wait_for(lambda: not dash(gw).streams)
            async with s.get(gw.admin_url + "/dashboard/events", headers=AUTH) as again:
                assert again.status == 401
        finally:
            await gw.close()


async def test_ending_streams_lets_readers_reconnect(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as s:
        r = await s.get(gw.admin_url + "/dashboard/events", headers=AUTH)
        await read_events(r, 1)
        dash(gw).end_streams()
        await asyncio.wait_for(r.content.read(), 10.0)
        r.close()
        await wait_for(lambda: not dash(gw).streams)
        async with s.get(gw.admin_url + "/dashboard/events", headers=AUTH) as again:
            assert len(await read_events(again, 1)) == 1


async def test_a_hanging_panel_is_cut_off_and_the_others_still_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cutover.proxy import server

    monkeypatch.setattr(server, "PANEL_TIMEOUT", 0.3)
    async with gateway(tmp_path) as gw:
        parity = next(f for f in gw.features if f.name == "parity")

        async def hang() -> dict[str, Any]:
            await asyncio.sleep(3600)
            return {}

        monkeypatch.setattr(parity, "dashboard", hang)
        began = time.monotonic()
        status, snap = await admin(gw, "GET", "/dashboard/snapshot")
        assert status == 200
        assert time.monotonic() - began < 3.0
        assert snap["panels"]["parity"] == {"error": "no answer within 0.3s"}
        assert snap["panels"]["canary"]["routes"][0]["name"] == "default"


async def test_the_dlq_replay_is_on_the_admin_listener_with_its_checks(tmp_path: Path) -> None:
    async with gateway(tmp_path, alerts={}) as gw, aiohttp.ClientSession() as s:
        url = gw.admin_url + "/admin/publishing/dlq/{}/replay"
        async with s.post(url.format(7)) as r:
            assert r.status == 401
        async with s.post(url.format(7), headers={**AUTH, "Origin": "http://evil.example"}) as r:
            assert r.status == 403
        for _ in range(100):  # publishing opens the store in the background
            async with s.post(url.format("x"), headers=AUTH) as r:
                if r.status != 503:
                    break
            await asyncio.sleep(0.1)
        assert r.status == 400
        async with s.post(url.format(7), headers=AUTH) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
