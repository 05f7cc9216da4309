"""Durability: 2xx only once stored, 503 while the store is down (Alertmanager retries 5xx), and
nothing lost or doubled once it is back. Real PostgreSQL (cut off through a TCP relay) and SQLite
(locked by another writer)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson

import cutover.core.db
from cutover.core.db import open_database
from tests.integration.alerts_helpers import (
    PG_URL,
    TcpRelay,
    am_alert,
    envelope,
    feature,
    intake_rows,
    jobs,
)


async def post(http, gw, body) -> tuple[int, dict, dict]:
    async with http.post(gw.url + "/webhook/proxy", data=orjson.dumps(body)) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_postgres_outage_gives_503_and_loses_nothing(ag, http) -> None:
    relay = await TcpRelay().start()
    try:
        url = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
        assert url != PG_URL
        alerts = {"forward_to_route": "default", "routing": {"targets": ["slack"]}}
        gw = await ag.start(alerts, store="postgresql", storage_url=url)
        await relay.stop()  # down before the first alert: even the tables are not there yet
        a = envelope(am_alert("A"))
        status, data, headers = await post(http, gw, a)
        assert status == 503 and data["error"]["code"] == "store_unavailable"
        assert headers.get("Retry-After") == "1"
        assert "postgres" not in orjson.dumps(data).decode()  # no internals in the answer

        await relay.start()  # back: Alertmanager's retry goes through
        assert (await post(http, gw, a))[0] == 200
        b = envelope(am_alert("B"), am_alert("C"))
        assert (await post(http, gw, b))[0] == 200

        await relay.stop()  # down again, with the pool's connections cut mid-life
        d = envelope(am_alert("D"), am_alert("A", status="resolved"))
        for _ in range(2):
            assert (await post(http, gw, d))[0] == 503
        await relay.start()
        assert (await post(http, gw, d))[0] == 200
        assert (await post(http, gw, d))[1]["accepted"] == 0  # a late duplicate delivery

        rows = await intake_rows(gw)
        assert [(r["alertname"], r["status"]) for r in rows] == [
            ("A", "firing"), ("B", "firing"), ("C", "firing"), ("D", "firing"),
            ("A", "resolved"),
        ]  # fmt: skip
        assert len(await jobs(gw)) == 10  # history copy + slack, once per accepted alert
        assert feature(gw).counts["store_unavailable"] == 3

        # Deliveries milliseconds apart on PostgreSQL: one wins, the others are duplicates.
        e = envelope(am_alert("E"), am_alert("F"))
        results = await asyncio.gather(*(post(http, gw, e) for _ in range(5)))
        assert [r[0] for r in results] == [200] * 5
        assert sorted(r[1]["accepted"] for r in results) == [0, 0, 0, 0, 2]
        assert [r["alertname"] for r in await intake_rows(gw)][-2:] == ["E", "F"]
    finally:
        await relay.stop()


async def test_sqlite_locked_gives_503_then_recovers(ag, http, tmp_path: Path, monkeypatch) -> None:
    # A lock wait ends at the busy timeout: 0.5 s here instead of the 5 s default.
    monkeypatch.setattr(cutover.core.db, "_SQLITE_BUSY_MS", 500)
    path = tmp_path / "locked.db"
    gw = await ag.start({"forward_to_route": "default"}, storage=f"sqlite:///{path}")
    a = envelope(am_alert("A"))
    assert (await post(http, gw, a))[0] == 200
    # Another writer takes the file, then holds the lock while B is posted. The gateway may be
    # in a short write of its own just then: retry without blocking its event loop.
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        for _ in range(200):
            try:
                other.execute("BEGIN EXCLUSIVE")
                break
            except sqlite3.OperationalError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("could not take the SQLite write lock")
        try:
            status, data, _ = await post(http, gw, envelope(am_alert("B")))
            assert status == 503 and data["error"]["code"] == "store_unavailable"
        finally:
            other.execute("ROLLBACK")
    finally:
        other.close()
    assert (await post(http, gw, envelope(am_alert("B"))))[0] == 200
    assert [r["alertname"] for r in await intake_rows(gw)] == ["A", "B"]
    assert len(await jobs(gw)) == 2


async def test_same_answers_on_both_stores(ag, http) -> None:
    """The dedup upsert and the claims are the same SQL on SQLite and PostgreSQL."""
    results = {}
    for store in ("sqlite", "postgresql"):
        gw = await ag.start({"routing": {"targets": ["t"]}}, store=store)
        seq = [
            envelope(am_alert("A"), am_alert("A")),
            envelope(am_alert("A", status="resolved")),
            envelope(am_alert("A")),
            envelope(am_alert("A")),
        ]
        results[store] = [
            [x["result"] for x in (await post(http, gw, body))[1]["alerts"]] for body in seq
        ]
    assert results["sqlite"] == results["postgresql"] == [
        ["queued", "duplicate"], ["queued"], ["queued"], ["duplicate"]
    ]  # fmt: skip


async def test_store_module_reaches_postgres() -> None:
    """PostgreSQL is required here and in CI: fail loudly, never skip."""
    db = await open_database(PG_URL)
    try:
        assert await db.fetchval("SELECT 1") == 1
    finally:
        await db.close()


async def test_webhooks_refused_and_background_failures_are_counted_apart(ag, http) -> None:
    """`store_unavailable` is what Alertmanager saw (503s); the worker's failures are apart."""
    from tests.conftest import wait_for

    relay = await TcpRelay().start()
    try:
        url = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
        alerts = {"routing": {"targets": ["slack"]}, "poll_interval": "50ms"}
        gw = await ag.start(alerts, store="postgresql", storage_url=url)
        await relay.stop()
        counts = feature(gw).counts
        await wait_for(lambda: counts["store_unavailable_background"] >= 2, deadline=30)
        assert counts["store_unavailable"] == 0  # no webhook came in, none was refused
        assert (await post(http, gw, envelope(am_alert("A"))))[0] == 503
        assert counts["store_unavailable"] == 1
        async with http.get(gw.url + "/enrichment/stats") as resp:
            stats = await resp.json()
        assert stats["store_unavailable"] == 1
        assert stats["store_unavailable_background"] >= 2
        async with http.get(gw.url + "/metrics") as resp:
            text = await resp.text()
        assert 'cutover_enrichment_events_total{event="store_unavailable"} 1.0' in text
        assert 'cutover_enrichment_events_total{event="store_unavailable_background"}' in text
    finally:
        await relay.stop()
