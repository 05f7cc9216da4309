"""POST /webhook/proxy end to end over real sockets: validation, auth, limits, formats, dedup,
filters (delay included), the routing tree, the history copy, and the enrichment mode API."""

from __future__ import annotations

import asyncio
import base64
import gzip
from datetime import datetime

import orjson

from cutover.alerts.webhook_formats import alertmanager_fingerprint
from cutover.core.clock import FakeClock
from tests.conftest import wait_for
from tests.integration.alerts_helpers import (
    am_alert,
    envelope,
    feature,
    intake_rows,
    jobs,
)


def fp(name: str = "DiskFull", **labels: str) -> str:
    return alertmanager_fingerprint({"alertname": name, **labels})


async def post(http, gw, body, path="/webhook/proxy", **kw):
    async with http.post(gw.url + path, data=orjson.dumps(body), **kw) as resp:
        return resp.status, await resp.json(), resp.headers


# -- validation, auth, limits ---------------------------------------------------------------


async def test_every_problem_listed_and_nothing_stored(ag, http) -> None:
    gw = await ag.start({"forward_to_route": "default"})
    body = envelope(
        am_alert(),
        {"labels": {"severity": "critical"}, "status": "open"},
        {"labels": {"alertname": "X", "n": 3}, "startsAt": "noon"},
        truncated=-1,
    )
    status, data, _ = await post(http, gw, body)
    assert status == 400
    assert data["error"]["code"] == "invalid_payload"
    assert [p["path"] for p in data["error"]["problems"]] == [
        "$.truncatedAlerts",
        "$.alerts[1].labels.alertname",
        "$.alerts[1].status",
        "$.alerts[2].labels.n",
        "$.alerts[2].startsAt",
    ]
    assert all(p["expected"] for p in data["error"]["problems"])
    assert await intake_rows(gw) == [] and await jobs(gw) == []  # not even the valid one

    async with http.post(gw.url + "/webhook/proxy", data=b"{not json") as resp:
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["code"] == "invalid_json" and err["problems"][0]["path"] == "$"
    status, data, _ = await post(http, gw, {"receiver": "x"})
    assert status == 400 and data["error"]["problems"][0]["path"] == "$.alerts"
    assert feature(gw).counts["invalid_payloads"] == 3


async def test_method_body_limit_and_encoding(ag, http) -> None:
    gw = await ag.start({"max_body": "2KiB"})
    async with http.get(gw.url + "/webhook/proxy") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
    big = envelope(*[am_alert(f"A{i}") for i in range(30)])
    status, data, _ = await post(http, gw, big)
    assert status == 413 and data["error"]["code"] == "body_too_large"

    async def chunks():
        yield orjson.dumps(big)

    async with http.post(gw.url + "/webhook/proxy", data=chunks()) as resp:  # no Content-Length
        assert resp.status == 413
    small = orjson.dumps(envelope(am_alert()))
    async with http.post(
        gw.url + "/webhook/proxy", data=gzip.compress(small), headers={"Content-Encoding": "gzip"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["accepted"] == 1
    bomb = gzip.compress(b'{"alerts": [' + b" " * 100_000 + b"]}")
    async with http.post(
        gw.url + "/webhook/proxy", data=bomb, headers={"Content-Encoding": "gzip"}
    ) as resp:
        assert resp.status == 413
    async with http.post(
        gw.url + "/webhook/proxy", data=small, headers={"Content-Encoding": "br"}
    ) as resp:
        assert resp.status == 415


async def test_body_cut_short_stores_nothing(ag, http) -> None:
    # A client that declares its length and goes away mid-body: nothing accepted, nothing stuck
    # (the quiescence check), and the next webhook is taken as usual.
    gw = await ag.start({})
    body = orjson.dumps(envelope(am_alert("CutShort")))
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /webhook/proxy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2]
    )  # fmt: skip
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    status, data, _ = await post(http, gw, envelope(am_alert("AfterCut")))
    assert status == 200 and data["accepted"] == 1
    assert feature(gw).counts["received"] == 1
    assert [r["alertname"] for r in await intake_rows(gw)] == ["AfterCut"]


async def test_bearer_auth(ag, http) -> None:
    gw = await ag.start({"auth": {"bearer_token": "s3cret-token"}})
    body = envelope(am_alert())
    status, data, headers = await post(http, gw, body)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert "s3cret" not in orjson.dumps(data).decode()
    status, _, _ = await post(http, gw, body, headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, _, _ = await post(http, gw, body, headers={"Authorization": "Bearer s3cret-token"})
    assert status == 200


async def test_basic_auth(ag, http) -> None:
    gw = await ag.start({"auth": {"username": "am", "password": "pw:with:colons"}})
    body = envelope(am_alert())
    status, _, headers = await post(http, gw, body)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    bad = base64.b64encode(b"am:nope").decode()
    assert (await post(http, gw, body, headers={"Authorization": f"Basic {bad}"}))[0] == 401
    assert (await post(http, gw, body, headers={"Authorization": "Basic !!!"}))[0] == 401
    good = base64.b64encode(b"am:pw:with:colons").decode()
    assert (await post(http, gw, body, headers={"Authorization": f"Basic {good}"}))[0] == 200


# -- formats ---------------------------------------------------------------------------------


async def test_formats_and_extra_paths(ag, http) -> None:
    mapping = {
        "alerts": "events",
        "label_fields": {"alertname": "check", "host": "source.host"},
        "annotation_fields": {"summary": "text"},
        "status": "state",
        "starts_at": "ts",
    }
    gw = await ag.start(
        {
            "paths": [
                "/webhook/proxy",
                {"path": "/hooks/generic", "format": "generic", "mapping": mapping},
            ],
            "routing": {"targets": ["t1"]},
        }
    )
    # Prometheus posts arrays; the fingerprint is the one Alertmanager would compute.
    prom = [{"labels": {"alertname": "Up", "job": "node"}, "startsAt": "2023-11-14T00:00:00Z"}]
    status, data, _ = await post(http, gw, prom)
    assert status == 200 and data["format"] == "prometheus"
    assert data["alerts"][0]["fingerprint"] == alertmanager_fingerprint(prom[0]["labels"])
    generic = {"events": [{"check": "Ping", "source": {"host": "h1"}, "text": "lost",
                           "state": "ok", "ts": 1_700_000_000}]}  # fmt: skip
    status, data, _ = await post(http, gw, generic, path="/hooks/generic")
    assert status == 200 and data["format"] == "generic"
    assert data["alerts"][0]["status"] == "resolved"
    rows = await intake_rows(gw)
    stored = orjson.loads(rows[-1]["alert"])
    assert stored["labels"] == {"alertname": "Ping", "host": "h1"}
    assert stored["annotations"] == {"summary": "lost"}
    status, data, _ = await post(http, gw, {"check": "x"}, path="/hooks/generic")
    assert status == 400 and data["error"]["problems"][0]["path"] == "$.events"
    # Alertmanager's own fingerprint is kept as sent.
    status, data, _ = await post(http, gw, envelope(dict(am_alert(), fingerprint="abc123")))
    assert data["alerts"][0]["fingerprint"] == "abc123"


async def test_truncated_alerts_logged_and_counted(ag, http, caplog) -> None:
    gw = await ag.start({})
    status, _, _ = await post(http, gw, envelope(am_alert(), truncated=7))
    assert status == 200
    assert gw.metrics.registry.get_sample_value("cutover_alerts_truncated_total") == 7
    assert feature(gw).counts["truncated_alerts"] == 7
    assert any("truncated 7 alert" in r.getMessage() for r in caplog.records)


# -- durability: the history copy and the routing tree ---------------------------------------


async def test_history_copy_and_routing_tree(ag, http) -> None:
    routing = {
        "targets": ["slack-general"],
        "routes": [
            {"matchers": ['severity="critical"'], "targets": ["pagerduty"], "continue": True,
             "routes": [{"matchers": {"team": "db"}, "targets": ["pagerduty-db"]}]},
            {"matchers": ['classification.category="database"'], "targets": ["slack-db"]},
        ],
    }  # fmt: skip
    gw = await ag.start({"forward_to_route": "default", "routing": routing})
    body = envelope(
        am_alert("Quiet", severity="info"),
        am_alert("NodeDown", severity="critical", team="db"),
        am_alert("PostgresReplicationLag", severity="critical"),
    )
    status, data, _ = await post(http, gw, body)
    assert status == 200 and data["accepted"] == 3
    assert [a["targets"] for a in data["alerts"]] == [
        ["slack-general"],
        ["pagerduty-db"],
        ["pagerduty", "slack-db"],  # critical (continue) + category database from the rules
    ]
    f_quiet, f_node, f_pg = (a["fingerprint"] for a in data["alerts"])
    assert await jobs(gw) == [
        ("backend:default", f_quiet, "firing"),
        ("slack-general", f_quiet, "firing"),
        ("backend:default", f_node, "firing"),
        ("pagerduty-db", f_node, "firing"),
        ("backend:default", f_pg, "firing"),
        ("pagerduty", f_pg, "firing"),
        ("slack-db", f_pg, "firing"),
    ]
    rows = await intake_rows(gw)
    assert [r["state"] for r in rows] == ["queued"] * 3
    assert orjson.loads(rows[2]["alert"])["classification"]["category"] == "database"


# -- dedup -------------------------------------------------------------------------------------


async def test_dedup_concurrent_deliveries_and_refire(ag, http) -> None:
    clock = FakeClock()
    gw = await ag.start({"forward_to_route": "default", "dedup_window": "5m"}, clock=clock)
    body = envelope(am_alert("A"), am_alert("B"))
    results = await asyncio.gather(*(post(http, gw, body) for _ in range(4)))
    assert [r[0] for r in results] == [200] * 4
    assert sorted(r[1]["accepted"] for r in results) == [0, 0, 0, 2]
    assert len(await intake_rows(gw)) == 2
    # The same alert twice in one payload counts once.
    _, data, _ = await post(http, gw, envelope(am_alert("C"), am_alert("C")))
    assert [a["result"] for a in data["alerts"]] == ["queued", "duplicate"]
    resolved = am_alert("A", status="resolved")
    assert (await post(http, gw, envelope(resolved)))[1]["accepted"] == 1
    assert (await post(http, gw, envelope(resolved)))[1]["accepted"] == 0
    # A re-fire after the resolve is new, even with the same startsAt.
    assert (await post(http, gw, envelope(am_alert("A"))))[1]["accepted"] == 1
    assert (await post(http, gw, envelope(am_alert("B"))))[1]["accepted"] == 0
    clock.advance(301)  # past the window: Alertmanager's repeat is processed again
    assert (await post(http, gw, envelope(am_alert("B"))))[1]["accepted"] == 1
    statuses = [(t, s) for t, f, s in await jobs(gw) if f == fp("A")]
    assert statuses == [("backend:default", "firing"), ("backend:default", "resolved"),
                        ("backend:default", "firing")]  # fmt: skip


async def test_dedup_off(ag, http) -> None:
    gw = await ag.start({"dedup_window": 0})
    body = envelope(am_alert("A"))
    assert (await post(http, gw, body))[1]["accepted"] == 1
    assert (await post(http, gw, body))[1]["accepted"] == 1


# -- filters -----------------------------------------------------------------------------------


FILTERS = [
    {"name": "allow-critical", "action": "allow", "priority": 1,
     "matchers": ['severity="critical"']},
    {"name": "no-noise", "action": "deny", "priority": 10,
     "matchers": ['classification.severity="noise"']},
    {"name": "no-test-ns", "action": "deny", "priority": 20, "matchers": ['namespace=~"test-.*"']},
    {"name": "hold-warnings", "action": "delay", "delay": "2m", "priority": 30,
     "matchers": ['severity="warning"']},
]  # fmt: skip


async def test_filters_allow_deny(ag, http) -> None:
    gw = await ag.start(
        {"filters": FILTERS, "routing": {"targets": ["slack"]}, "forward_to_route": "default"}
    )
    body = envelope(
        am_alert("A", severity="critical", namespace="test-1"),
        am_alert("B", severity="trace"),  # the rules call this noise
        am_alert("C", namespace="test-2"),
        am_alert("D", severity="info"),
    )
    _, data, _ = await post(http, gw, body)
    assert [(a["result"], a["rule"]) for a in data["alerts"]] == [
        ("queued", "allow-critical"),
        ("filtered", "no-noise"),
        ("filtered", "no-test-ns"),
        ("queued", None),
    ]
    targets = [(t, f) for t, f, _ in await jobs(gw) if not t.startswith("backend:")]
    assert targets == [("slack", fp("A", severity="critical", namespace="test-1")),
                       ("slack", fp("D", severity="info"))]  # fmt: skip
    # Filtered alerts still reach the history backends.
    assert sum(1 for t, _, _ in await jobs(gw) if t == "backend:default") == 4


async def test_delay_releases_unless_resolved(ag, http) -> None:
    clock = FakeClock()
    gw = await ag.start(
        {"filters": FILTERS, "routing": {"targets": ["slack"]}, "poll_interval": "1h"},
        clock=clock,
    )
    f = feature(gw)
    keep = am_alert("Keep", severity="warning")
    blip = am_alert("Blip", severity="warning")
    _, data, _ = await post(http, gw, envelope(keep, blip))
    assert [a["result"] for a in data["alerts"]] == ["delayed", "delayed"]
    release = datetime.fromisoformat(data["alerts"][0]["release_at"])  # RFC 3339, as every time
    assert data["alerts"][0]["release_at"].endswith("Z") and release.timestamp() > clock.now()
    assert await jobs(gw) == []
    clock.advance(60)
    assert (await f.run_once())["released"] == 0
    # Blip resolves while held: neither its firing nor its resolve is published.
    _, data, _ = await post(
        http, gw, envelope(am_alert("Blip", status="resolved", severity="warning"))
    )
    assert data["alerts"][0]["result"] == "suppressed"
    clock.advance(61)
    assert (await f.run_once())["released"] == 1
    assert await jobs(gw) == [("slack", fp("Keep", severity="warning"), "firing")]
    states = {r["alertname"]: r["state"] for r in await intake_rows(gw) if r["status"] == "firing"}
    assert states == {"Keep": "released", "Blip": "cancelled"}
    # Keep's resolve after release goes out at once (a resolve is never delayed).
    _, data, _ = await post(
        http, gw, envelope(am_alert("Keep", status="resolved", severity="warning"))
    )
    assert data["alerts"][0]["result"] == "queued"
    assert (await jobs(gw))[-1] == ("slack", fp("Keep", severity="warning"), "resolved")
    assert f.counts["released"] == 1 and f.counts["cancelled"] == 1


# -- enrichment modes --------------------------------------------------------------------------


async def test_modes_via_the_api(ag, http) -> None:
    routes = [{"matchers": ['severity="critical"'], "targets": ["pd"]}]
    gw = await ag.start({"filters": FILTERS, "routing": {"targets": ["slack"], "routes": routes}})
    async with http.get(gw.url + "/enrichment/mode") as resp:
        assert await resp.json() == {"mode": "enriched", "source": "default"}
    async with http.post(gw.url + "/enrichment/mode", json={"mode": "loud"}) as resp:
        assert resp.status == 400
        err = (await resp.json())["error"]
        assert err["allowed"] == ["transparent", "enriched", "transparent_with_recommendations"]
    async with http.post(gw.url + "/enrichment/mode", data=b"[") as resp:
        assert resp.status == 400
    async with http.put(gw.url + "/enrichment/mode", json={"mode": "enriched"}) as resp:
        assert resp.status == 405

    noisy = am_alert("N", severity="trace")
    _, data, _ = await post(http, gw, envelope(noisy))
    assert data["alerts"][0]["result"] == "filtered"  # enriched: classified as noise, denied

    async with http.post(gw.url + "/enrichment/mode", json={"mode": "transparent"}) as resp:
        assert await resp.json() == {"mode": "transparent", "source": "memory"}
    _, data, _ = await post(http, gw, envelope(am_alert("N2", severity="trace")))
    assert data["mode"] == "transparent"
    assert data["alerts"][0]["result"] == "queued"  # no classification, so no noise rule
    assert data["alerts"][0]["classification"] is None

    async with http.post(
        gw.url + "/enrichment/mode", json={"mode": "transparent_with_recommendations"}
    ) as resp:
        assert resp.status == 200
    _, data, _ = await post(http, gw, envelope(am_alert("T", namespace="test-9")))
    assert data["alerts"][0]["result"] == "queued"  # no filtering at all
    assert data["alerts"][0]["targets"] == ["slack", "pd"]  # every target of the tree
    async with http.get(gw.url + "/enrichment/stats") as resp:
        stats = await resp.json()
    assert stats["mode"] == "transparent_with_recommendations"
    assert stats["accepted_by_mode"] == {
        "transparent": 1, "enriched": 1, "transparent_with_recommendations": 1
    }  # fmt: skip
    assert stats["alerts"]["filtered"] == 1
    assert gw.metrics.registry.get_sample_value("cutover_enrichment_mode") == 2


async def test_mutating_endpoints_need_the_admin_token(ag, http) -> None:
    gw = await ag.start({}, admin={"listen": "127.0.0.1:0", "token": "adm1n"})
    async with http.post(gw.url + "/enrichment/mode", json={"mode": "transparent"}) as resp:
        assert resp.status == 401
    alert = {"labels": {"alertname": "X"}}
    async with http.post(gw.url + "/classification/classify", json=alert) as resp:
        assert resp.status == 401
    auth = {"Authorization": "Bearer adm1n"}
    async with http.post(
        gw.url + "/enrichment/mode", json={"mode": "transparent"}, headers=auth
    ) as resp:
        assert resp.status == 200
    async with http.post(gw.url + "/classification/classify", json=alert, headers=auth) as resp:
        assert resp.status == 200
    async with http.get(gw.url + "/enrichment/mode") as resp:  # reading needs no token
        assert (await resp.json())["mode"] == "transparent"


async def test_classify_api_with_rules(ag, http) -> None:
    gw = await ag.start({})
    body = {"alert": {"labels": {"alertname": "NodeDown", "severity": "critical"}}, "force": True}
    async with http.post(gw.url + "/classification/classify", json=body) as resp:
        data = await resp.json()
    assert resp.status == 200
    assert data["result"]["severity"] == "critical"
    assert data["result"]["category"] == "infrastructure"
    assert data["result"]["source"] == "rules"
    assert data["cached"] is False and data["model"] is None
    assert data["processing_time"] >= 0
    async with http.post(
        gw.url + "/classification/classify", json={"alert": {"labels": {}}, "force": "yes"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["problems"][0]["path"] == "$.force"
    async with http.post(
        gw.url + "/classification/classify", json={"alert": {"labels": {}}}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["problems"][0]["path"] == "$.alert.labels.alertname"
    async with http.post(
        gw.url + "/classification/classify", json={"labels": {"alertname": 7}}
    ) as resp:
        assert resp.status == 400
        problems = (await resp.json())["error"]["problems"]
        assert [p["path"] for p in problems] == ["$.labels.alertname"]  # one value, one problem
    async with http.get(gw.url + "/classification/models") as resp:
        assert (await resp.json())["engine"] == "rules"
    async with http.get(gw.url + "/classification/stats") as resp:
        assert (await resp.json())["total_requests"] == 1


async def test_history_backend_receives_every_alert(ag, http, backends) -> None:
    """The history copy is delivered from the outbox through the route (the delivery engine
    runs whenever alerts are configured), filtered alerts included."""
    history = await backends("history")
    gw = await ag.start(
        {"forward_to_route": "default", "filters": [
            {"name": "drop", "action": "deny", "matchers": ['alertname="Dropped"']}]},
        backend_url=history.url,
    )  # fmt: skip
    status, data, _ = await post(http, gw, envelope(am_alert("Kept"), am_alert("Dropped")))
    assert status == 200 and [a["result"] for a in data["alerts"]] == ["queued", "filtered"]
    await wait_for(lambda: sum(1 for r in history.received if r["method"] == "POST") >= 2, 20)

    async def drained() -> bool:
        return await jobs(gw) == []

    end = asyncio.get_running_loop().time() + 20
    while not await drained() and asyncio.get_running_loop().time() < end:
        await asyncio.sleep(0.05)
    assert await drained()  # delivered jobs leave the outbox
