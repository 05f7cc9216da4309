"""The sample backends keep the real Py/Go differences; `cutover demo` runs and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest
import uvloop
from aiohttp import web

from cutover.examples.backends import DELAY_HEADER, go_app, hold, legacy_app, share_history
from cutover.examples.samples import alertmanager_payload, flat_alert

ROOT = Path(__file__).resolve().parents[2]

HISTORY_ITEM_PY = {
    "fingerprint",
    "alertname",
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
}
HISTORY_ITEM_GO = {
    "id",
    "alertname",
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "createdAt",
}


def rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
async def legacy(aiohttp_client):  # type: ignore[no-untyped-def]
    return await aiohttp_client(legacy_app())


@pytest.fixture
async def go(aiohttp_client):  # type: ignore[no-untyped-def]
    return await aiohttp_client(go_app(sse_interval=0.05))


# -- legacy (Python / FastAPI shape) -------------------------------------------------------------


async def test_legacy_health_endpoints(legacy) -> None:
    resp = await legacy.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "healthy"
    assert isinstance(body["timestamp"], float)

    resp = await legacy.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ready"
    assert body["dependencies"]["database"] is True and isinstance(body["uptime"], float)

    resp = await legacy.get("/health")
    assert resp.status == 200 and (await resp.json())["status"] == "healthy"

    resp = await legacy.get("/__backend")
    assert await resp.json() == {"backend": "legacy", "fail": None}


async def test_legacy_webhook_takes_the_alertmanager_envelope(legacy) -> None:
    resp = await legacy.post("/webhook/", json=alertmanager_payload())
    assert resp.status == 200
    body = await resp.json()
    assert body["message"] == "Webhook processed successfully (legacy mode)"
    assert body["processed_alerts"] == 2
    assert body["mode"] == "legacy"
    assert isinstance(body["processing_time_ms"], int)


async def test_legacy_webhook_without_slash_redirects(legacy) -> None:
    resp = await legacy.post("/webhook", json=alertmanager_payload(), allow_redirects=False)
    assert resp.status == 307
    assert resp.headers["Location"].endswith("/webhook/")


@pytest.mark.parametrize(
    ("body", "error_type", "loc"),
    [
        (b'{"receiver": "x"}', "missing", ["body", "alerts"]),
        (b'{"alerts": "nope"}', "list_type", ["body", "alerts"]),
        (b'{"alerts": [1]}', "dict_type", ["body", "alerts", 0]),
        (b'{"alerts": [', "json_invalid", None),
        (b"[]", "model_attributes_type", ["body"]),
    ],
)
async def test_legacy_webhook_validation_is_fastapi_422(
    legacy, body: bytes, error_type: str, loc: list[object] | None
) -> None:
    resp = await legacy.post("/webhook/", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 422
    assert resp.content_type == "application/json"
    detail = (await resp.json())["detail"]
    assert isinstance(detail, list) and detail
    assert {"loc", "msg", "type"} <= detail[0].keys()
    assert detail[0]["type"] == error_type
    if loc is not None:
        assert detail[0]["loc"] == loc


async def test_legacy_history_reflects_posted_alerts(legacy) -> None:
    resp = await legacy.get("/history")
    assert await resp.json() == {"alerts": [], "total": 0}

    payload = alertmanager_payload()
    payload["alerts"][1]["startsAt"] = "2026-11-21T22:00:00Z"  # the newer one comes first
    payload["alerts"].append({"status": "bogus", "labels": {"alertname": "Broken"}})
    resp = await legacy.post("/webhook/", json=payload)
    assert (await resp.json())["processed_alerts"] == 3  # counted even when one fails to store
    await legacy.post("/webhook/", json=payload)  # a re-delivery is not stored twice

    body = await (await legacy.get("/history")).json()
    assert body["total"] == 2
    first, second = body["alerts"]
    assert set(first) == HISTORY_ITEM_PY
    assert first["fingerprint"] == "d27718e7a37dc0a9"
    assert second["fingerprint"] == "1481b3e4e23664d0"
    assert first["alertname"] == "ProxyUpstreamDown" and first["status"] == "firing"
    assert first["labels"]["instance"] == "127.0.0.1:8081"
    assert first["startsAt"] == "2026-11-21T22:00:00+00:00"  # Python isoformat, not "Z"
    assert first["generatorURL"].startswith("http://127.0.0.1:19090/")

    body = await (await legacy.get("/history", params={"limit": "1"})).json()
    assert body["total"] == 1 and len(body["alerts"]) == 1
    body = await (await legacy.get("/history", params={"fingerprint": "1481b3e4e23664d0"})).json()
    assert [a["fingerprint"] for a in body["alerts"]] == ["1481b3e4e23664d0"]
    body = await (await legacy.get("/history", params={"status": "resolved"})).json()
    assert body == {"alerts": [], "total": 0}

    resp = await legacy.get("/history", params={"limit": "many"})
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["loc"] == ["query", "limit"]


async def test_legacy_alert_without_fingerprint_is_unknown_n(legacy) -> None:
    payload = {"alerts": [{"labels": {"alertname": "A"}}, {"labels": {"alertname": "B"}}]}
    await legacy.post("/webhook/", json=payload)
    body = await (await legacy.get("/history", params={"alertname": "B"})).json()
    assert body["alerts"][0]["fingerprint"] == "unknown-1"


async def test_legacy_report(legacy) -> None:
    await legacy.post("/webhook/", json=alertmanager_payload(datetime.now().astimezone()))
    body = await (await legacy.get("/legacy/report")).json()
    assert body["period_days"] == 7 and body["group_by"] == "alertname"
    assert body["data"] == {"ProxyUpstreamDown": {"count": 2, "firing": 2, "resolved": 0}}
    assert body["total_alerts"] == 2


async def test_legacy_enrichment_mode(legacy) -> None:
    assert await (await legacy.get("/enrichment/mode")).json() == {
        "mode": "enriched",
        "source": "default",
    }
    resp = await legacy.post("/enrichment/mode", json={"mode": "transparent"})
    assert await resp.json() == {"mode": "transparent", "source": "memory"}
    assert (await (await legacy.get("/enrichment/mode")).json())["mode"] == "transparent"

    resp = await legacy.post("/enrichment/mode", json={"mode": "loud"})
    assert resp.status == 422
    detail = (await resp.json())["detail"]
    assert detail[0]["loc"] == ["body", "mode"] and detail[0]["input"] == "loud"
    assert (await (await legacy.get("/enrichment/mode")).json())["mode"] == "transparent"


async def test_legacy_errors_are_json_detail(legacy) -> None:
    resp = await legacy.get("/nowhere")
    assert resp.status == 404
    assert await resp.json() == {"detail": "Not Found"}
    resp = await legacy.get("/webhook/")
    assert resp.status == 405
    assert await resp.json() == {"detail": "Method Not Allowed"}
    resp = await legacy.get("/api/v2/events/stream")
    assert resp.status == 404


# -- go (Go net/http shape) ---------------------------------------------------------------------


async def test_go_health_and_missing_endpoints(go) -> None:
    resp = await go.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["service"] == "alert-history" and body["version"] == "1.0.0"
    assert body["timestamp"].endswith("Z")
    rfc3339(body["timestamp"])

    for path in ("/health", "/readyz", "/webhook/", "/legacy/report"):
        resp = await go.get(path)
        assert resp.status == 404, path
        assert resp.content_type == "text/plain"
        assert await resp.text() == "404 page not found\n"

    assert await (await go.get("/__backend")).json() == {"backend": "go", "fail": None}


async def test_go_every_response_carries_enrichment_headers(go) -> None:
    for method, path in (("GET", "/healthz"), ("GET", "/nowhere"), ("POST", "/webhook")):
        resp = await go.request(method, path, data=b"{")
        assert resp.headers["X-Enrichment-Mode"] == "enriched", path
        assert resp.headers["X-Enrichment-Source"] == "default", path


async def test_go_webhook_takes_one_flat_alert(go) -> None:
    alert = flat_alert(alertmanager_payload()["alerts"][0])
    resp = await go.post("/webhook", json=alert)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "success"
    assert body["message"] == "Webhook processed successfully"
    assert body["alert_id"] == "1481b3e4e23664d0"
    rfc3339(body["timestamp"])
    assert body["processing_time"][-2:] in ("ns", "µs", "ms") or body["processing_time"][-1] == "s"

    resp = await go.post(
        "/webhook", json={"alertname": "NoPrint", "startsAt": "2026-11-21T22:00:00Z"}
    )
    assert (await resp.json())["alert_id"] == "NoPrint_1795298400"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (orjson.dumps(alertmanager_payload()), "Missing required field: alertname"),
        (b'{"labels": {"alertname": "X"}}', "Missing required field: alertname"),
        (b'{"alertname": ', "Invalid JSON payload"),
        (b'{"alertname": 5}', "Invalid JSON payload"),
        (b'["alertname"]', "Invalid JSON payload"),
    ],
)
async def test_go_webhook_errors_are_plain_text(go, body: bytes, message: str) -> None:
    resp = await go.post("/webhook", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert resp.content_type == "text/plain"
    assert (await resp.text()).strip() == message


async def test_go_webhook_other_methods_and_trailing_slash(go) -> None:
    resp = await go.get("/webhook")
    assert resp.status == 405
    assert (await resp.text()).strip() == "Method not allowed"
    resp = await go.post("/webhook/", json={"alertname": "A"})
    assert resp.status == 404


async def test_go_history_reflects_posted_alerts(go) -> None:
    body = await (await go.get("/history")).json()
    assert body["alerts"] == [] and body["total"] == 0
    assert body["page"] == 1 and body["page_size"] == 50
    rfc3339(body["timestamp"])

    for alert in alertmanager_payload()["alerts"]:
        await go.post("/webhook", json=flat_alert(alert))
    await go.post("/webhook", json={"alertname": "Gone", "status": "resolved"})

    body = await (await go.get("/history")).json()
    assert body["total"] == 3
    assert [a["id"] for a in body["alerts"]][1:] == ["d27718e7a37dc0a9", "1481b3e4e23664d0"]
    item = body["alerts"][1]
    assert set(item) == HISTORY_ITEM_GO
    assert item["alertname"] == "ProxyUpstreamDown" and item["status"] == "firing"
    assert item["startsAt"] == "2026-11-21T21:38:32Z"  # Go RFC 3339
    assert item["endsAt"] is None
    rfc3339(item["createdAt"])

    body = await (await go.get("/history", params={"page": "2", "page_size": "2"})).json()
    assert body["page"] == 2 and body["page_size"] == 2 and body["total"] == 3
    assert [a["id"] for a in body["alerts"]] == ["1481b3e4e23664d0"]
    body = await (await go.get("/history", params={"status": "resolved"})).json()
    assert [a["alertname"] for a in body["alerts"]] == ["Gone"]
    body = await (await go.get("/history", params={"limit": "1"})).json()  # ignored, as in Go
    assert body["total"] == 3 and len(body["alerts"]) == 3

    resp = await go.post("/history")
    assert resp.status == 405


async def test_go_api_v2_alerts(go) -> None:
    for alert in alertmanager_payload()["alerts"]:
        await go.post("/webhook", json=flat_alert(alert))
    resp = await go.get("/api/v2/alerts", params={"limit": "1"})
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "success"
    data = body["data"]
    assert data["total"] == 2 and data["page"] == 1 and data["limit"] == 1
    (alert,) = data["alerts"]
    assert set(alert) == {
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "status",
        "receivers",
        "fingerprint",
    }
    assert alert["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
    assert alert["receivers"] == []
    assert alert["labels"]["alertname"] == "ProxyUpstreamDown"

    resp = await go.get("/api/v2/alerts", params={"page": "zero"})
    assert resp.status == 400
    assert (await resp.json())["status"] == "error"


async def test_go_enrichment_mode(go) -> None:
    resp = await go.get("/enrichment/mode")
    assert await resp.json() == {"mode": "enriched", "source": "default"}

    resp = await go.post("/enrichment/mode", json={"mode": "loud"})
    assert resp.status == 400
    assert await resp.json() == {"error": "invalid enrichment mode: loud"}
    resp = await go.post(
        "/enrichment/mode", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert await resp.json() == {"error": "Invalid JSON"}

    resp = await go.post("/enrichment/mode", json={"mode": "transparent_with_recommendations"})
    assert await resp.json() == {"mode": "transparent_with_recommendations", "source": "memory"}
    assert resp.headers["X-Enrichment-Mode"] == "enriched"  # read before the handler, as in Go
    resp = await go.get("/healthz")
    assert resp.headers["X-Enrichment-Mode"] == "transparent_with_recommendations"
    assert resp.headers["X-Enrichment-Source"] == "memory"

    resp = await go.delete("/enrichment/mode")
    assert resp.status == 405


async def test_go_sse_stream_sends_events(go) -> None:
    resp = await go.get("/api/v2/events/stream")
    assert resp.status == 200
    assert resp.content_type == "text/event-stream"
    assert resp.headers["X-Enrichment-Mode"] == "enriched"
    events = []
    async with asyncio.timeout(5):
        while len(events) < 2:
            line = await resp.content.readline()
            if line.startswith(b"data: "):
                events.append(orjson.loads(line[len(b"data: ") :]))
    assert [e["counter"] for e in events] == [0, 1]
    assert events[0]["type"] == "connected" and events[1]["type"] == "tick"
    resp.close()


async def test_go_sse_first_event_is_immediate(aiohttp_client) -> None:
    client = await aiohttp_client(go_app())  # the real one-second interval
    started = time.monotonic()
    resp = await client.get("/api/v2/events/stream")
    async with asyncio.timeout(5):
        line = await resp.content.readline()
    assert line.startswith(b"data: ")
    assert time.monotonic() - started < 0.9
    resp.close()


async def test_go_sse_stream_ends_on_shutdown() -> None:
    app = go_app()
    runner = web.AppRunner(app, shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        resp = await session.get(f"http://127.0.0.1:{port}/api/v2/events/stream")
        await resp.content.readline()
        started = time.monotonic()
        await runner.cleanup()
        assert time.monotonic() - started < 5  # not the 30 s shutdown timeout
        resp.close()


async def test_go_websocket_echo(go) -> None:
    async with go.ws_connect("/ws/dashboard") as ws:
        await ws.send_str("hello")
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT
        assert msg.data == "echo: hello"
    resp = await go.get("/ws/dashboard")  # not an upgrade
    assert resp.status == 400


async def test_delay_header(legacy, go) -> None:
    for client in (legacy, go):
        started = time.monotonic()
        resp = await client.get("/__backend", headers={DELAY_HEADER: "300"})
        assert resp.status == 200
        assert time.monotonic() - started >= 0.29
        started = time.monotonic()
        await client.get("/__backend", headers={DELAY_HEADER: "soon"})  # ignored
        assert time.monotonic() - started < 0.29


# -- the failure switch, the dashboard overview, a pair sharing its history --------------------


async def test_failure_switch_fails_the_share_asked_in_each_shape(legacy, go) -> None:
    for client, shape in ((legacy, "json"), (go, "text")):
        resp = await client.put("/__backend/fail", json={"status": 503, "percent": 50})
        assert resp.status == 200
        assert (await resp.json())["fail"] == {"status": 503, "percent": 50}
        statuses = [(await client.get("/history")).status for _ in range(10)]
        assert statuses.count(503) == 5 and statuses.count(200) == 5  # evenly spread
        assert statuses[:2] in ([503, 200], [200, 503])
        resp = await client.put("/__backend/fail", json={"status": 500})  # percent: all
        assert resp.status == 200
        failed = await client.post("/webhook/", json={"alerts": []})
        assert failed.status == 500
        if shape == "json":
            assert await failed.json() == {"detail": "Internal Server Error"}
        else:
            assert await failed.text() == "Internal Server Error\n"
        # health checks keep passing: the canary, not the health check, must catch this
        assert (await client.get("/healthz")).status == 200
        assert (await (await client.get("/__backend")).json())["fail"] == {
            "status": 500,
            "percent": 100,
        }
        resp = await client.delete("/__backend/fail")
        assert (await resp.json())["fail"] is None
        assert (await client.get("/history")).status == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": 200}, "status"),
        ({"status": "500"}, "status"),
        ({"percent": 0}, "percent"),
        ({"percent": 101}, "percent"),
        ({"percent": True}, "percent"),
        ([], "JSON object"),
    ],
)
async def test_failure_switch_refuses_bad_settings(legacy, body: object, field: str) -> None:
    resp = await legacy.put("/__backend/fail", json=body)
    assert resp.status == 400 and field in (await resp.json())["error"]
    assert (await (await legacy.get("/__backend")).json())["fail"] is None
    assert (await legacy.put("/__backend/fail", data=b"{not json")).status == 400


async def test_dashboard_overview_counts_each_alert_once_by_its_latest_state(legacy, go) -> None:
    payload = alertmanager_payload(datetime.now(UTC))
    assert (await legacy.post("/webhook/", json=payload)).status == 200
    for alert in payload["alerts"]:
        assert (await go.post("/webhook", json=flat_alert(alert))).status == 200
    resolved = dict(payload["alerts"][0], status="resolved")
    firing_again = payload["alerts"][1]  # a re-delivery after a resolve of the other alert
    for alert in (resolved, dict(payload["alerts"][1], status="resolved"), firing_again):
        assert (await legacy.post("/webhook/", json={"alerts": [alert]})).status == 200
        assert (await go.post("/webhook", json=flat_alert(alert))).status == 200
    views = [await (await c.get("/api/dashboard/overview")).json() for c in (legacy, go)]
    for view in views:
        assert view["total_alerts"] == 2 and view["alerts_last_24h"] == 2
        assert view["active_alerts"] == 1 and view["resolved_alerts"] == 1
        datetime.fromisoformat(view.pop("last_updated"))
    assert views[0] == views[1]  # the same keys and figures on both sides


async def test_a_pair_shares_one_history(aiohttp_client) -> None:
    legacy_app_, go_app_ = legacy_app(), go_app()
    share_history(legacy_app_, go_app_)
    legacy, go = await aiohttp_client(legacy_app_), await aiohttp_client(go_app_)
    payload = alertmanager_payload(datetime.now(UTC))
    assert (await legacy.post("/webhook/", json=payload)).status == 200
    assert (await legacy.post("/webhook/", json=payload)).status == 200  # a re-delivery
    flat = dict(flat_alert(payload["alerts"][0]), fingerprint="0123456789abcdef")
    assert (await go.post("/webhook", json=flat)).status == 200
    py_items = (await (await legacy.get("/history")).json())["alerts"]
    go_items = (await (await go.get("/history")).json())["alerts"]
    assert sorted(a["fingerprint"] for a in py_items) == sorted(a["id"] for a in go_items)
    assert len(py_items) == 3
    views = [await (await c.get("/api/dashboard/overview")).json() for c in (legacy, go)]
    assert views[0]["total_alerts"] == views[1]["total_alerts"] == 3


def test_pair_runner_serves_both_shapes_and_stops_on_sigterm() -> None:
    legacy_port, go_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutover.examples.backends", "pair",
         "--legacy-port", str(legacy_port), "--go-port", str(go_port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[2] == "one shared history; Ctrl-C to stop\n", lines
        for port, name in ((legacy_port, "legacy"), (go_port, "go")):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/__backend", timeout=5) as r:
                assert orjson.loads(r.read())["backend"] == name
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# -- cutover demo -------------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(stream, lines: queue.Queue[str]) -> None:  # type: ignore[no-untyped-def]
    for raw in iter(stream.readline, ""):
        lines.put(raw)
    stream.close()


def test_demo_runs_and_stops_cleanly() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutover", "demo", "--port", str(port), "--traffic"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="default"),
    )
    out: queue.Queue[str] = queue.Queue()
    err: queue.Queue[str] = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True),
    ]
    for t in pumps:
        t.start()
    stdout: list[str] = []

    def drain() -> str:
        while not out.empty():
            stdout.append(out.get_nowait())
        return "".join(stdout)

    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"demo exited early:\n{drain()}{''.join(err.queue)}"
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the demo gateway never answered /healthz"
            time.sleep(0.2)

        with urllib.request.urlopen(url + "/history?limit=3", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["X-Cutover-Backend"] in ("go", "python")
            body = orjson.loads(resp.read())
        assert "alerts" in body and "total" in body

        deadline = time.monotonic() + 15
        while "traffic: go " not in drain():
            assert time.monotonic() < deadline, f"no traffic summary:\n{drain()}"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        for t in pumps:
            t.join(5)
    output = drain() + "".join(err.queue)
    assert code == 0, output
    assert "Traceback" not in output, output
    assert "Unclosed" not in output, output
    assert url in output and "curl" in output


def test_a_slower_twin_holds_at_least_its_delay() -> None:
    """On uvloop (as `python -m cutover.examples.backends` runs) a 3 ms timer may fire after
    2.x ms; `hold` never returns early, so a delayed twin's latencies are at least the delay."""

    async def shortest() -> float:
        least = 1.0
        for _ in range(200):
            started = time.perf_counter()
            await hold(0.003)
            least = min(least, time.perf_counter() - started)
        return least

    assert uvloop.run(shortest()) >= 0.003
