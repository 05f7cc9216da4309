"""Canary events and the shared-state table in both stores: real SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg

from cutover.canary.events import Event, EventLog
from cutover.canary.shared import StoreShared
from cutover.core.clock import FakeClock
from cutover.core.db import Database, StoreUnavailable
from cutover.routing.canary import initial_control
from tests.conftest import wait_for
from tests.integration.canary_helpers import (
    FlakyBackend,
    admin,
    canary_config,
    start,
    started,
    weights,
)

PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _opener(db: Database):  # type: ignore[no-untyped-def]
    async def open_db() -> Database:
        return db

    return open_db


async def test_events_are_stored_and_listed(db: Database) -> None:
    log = EventLog(_opener(db))
    for i, kind in enumerate(("weights", "promote", "rollback")):
        log.record(
            Event(
                at=1000.0 + i,
                route="default" if i < 2 else "webhooks",
                kind=kind,
                actor="operator:alice" if i == 0 else "controller",
                reason=f"reason {i}",
                weights_before={"go": 10, "python": 90},
                weights_after={"go": 50, "python": 50},
                figures={"z": 3.5, "judged": {"candidate_errors": 10}},
            )
        )
    assert await log.flush(10.0) and log.written == 3 and log.waiting == 0
    rows = await log.list()
    assert [r["kind"] for r in rows] == ["rollback", "promote", "weights"]
    first = rows[-1]
    assert first["actor"] == "operator:alice"
    assert first["at"] == "1970-01-01T00:16:40.000Z"  # RFC 3339 UTC, as every API time
    assert first["weights_after"] == {"go": 50, "python": 50}
    assert first["figures"] == {"z": 3.5, "judged": {"candidate_errors": 10}}
    assert [r["kind"] for r in await log.list(route="default")] == ["promote", "weights"]
    assert [r["kind"] for r in await log.list(after=first["id"], limit=1)] == ["promote"]
    assert await EventLog(_opener(db)).list(limit=1) == rows[:1]  # one table for all
    await log.close(1.0)


async def test_the_listing_is_in_the_order_of_the_changes_not_of_their_storing(
    db: Database,
) -> None:
    """Replicas store their events in the background: a change made on one replica can be
    stored after a later change made on another (seen: a weight change through one replica,
    then a rollback through another, listed in the wrong order). The listing follows the
    changes' times; `after` stays a feed in store order."""
    early, late = EventLog(_opener(db)), EventLog(_opener(db))  # two replicas
    late.record(Event(at=1002.0, route="default", kind="rollback", actor="operator:b", reason=""))
    assert await late.flush(10.0)
    early.record(Event(at=1001.0, route="default", kind="weights", actor="operator:a", reason=""))
    assert await early.flush(10.0)
    rows = await early.list(route="default")
    assert [r["kind"] for r in rows] == ["rollback", "weights"]
    feed = await early.list(route="default", after=0)
    assert [r["kind"] for r in feed] == ["rollback", "weights"]  # as stored
    assert feed[0]["id"] < feed[1]["id"]
    await early.close(1.0)
    await late.close(1.0)


async def test_shared_rows_compare_and_set_windows_and_lease(db: Database) -> None:
    clock = FakeClock()

    async def opened() -> Database:
        return db

    a, b = StoreShared(opened, clock), StoreShared(opened, clock)
    control = initial_control("default", (("go", 10), ("python", 90)), None, 0.0)
    assert await a.put(replace(control, version=1), 0)
    assert not await b.put(replace(control, version=1), 0)  # lost the race: nothing written
    assert await b.put(replace(control, version=2, weights=(("go", 0), ("python", 100))), 1)
    assert not await a.put(replace(control, version=2), 1)
    stored = await a.get("default")
    assert stored is not None and stored.version == 2 and stored.weight_of("go") == 0
    assert list(await b.load_all()) == ["default"]
    assert a.connected

    await a.publish_window("default", "w1", clock.now(), {"n": 1})
    await b.publish_window("default", "w2", clock.now() - 10, {"n": 2})
    await a.publish_window("default", "w1", clock.now(), {"n": 3})  # replaces w1's
    assert await a.windows("default", clock.now() - 3) == [{"n": 3}]

    assert await a.lease("ctl", "A", 3.0)
    assert not await b.lease("ctl", "B", 3.0)
    assert await a.lease("ctl", "A", 3.0)  # renewed
    clock.advance(4)
    assert await b.lease("ctl", "B", 3.0)  # A let it expire
    assert not await a.lease("ctl", "A", 3.0)

    seen: list = []
    c = StoreShared(opened, clock)  # a worker that has not seen version 2 yet
    await c.start(seen.append, _nothing)
    try:
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert [x.version for x in seen] == [2]
        assert c.connected
    finally:
        await c.close()


async def _nothing() -> None:
    return None


async def test_gateway_events_in_postgresql(tmp_path: Path) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_URL)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    go, py = FlakyBackend("go"), FlakyBackend("python")
    try:
        async with started(go, py):
            url = f"{PG_URL}?search_path={schema}"
            gw = await start(canary_config(go, py, tmp_path, db=url))
            try:
                status, _ = await admin(gw, "POST", "/admin/rollback", {"reason": "pg"})
                assert status == 200
                _, body = await admin(gw, "GET", "/admin/events")
                assert body["events"][0]["kind"] == "rollback"
            finally:
                await gw.close()
            gw = await start(canary_config(go, py, tmp_path, db=url))
            try:
                assert weights(gw) == {"go": 0, "python": 100}  # restart: from PostgreSQL
            finally:
                await gw.close()
        rows = await conn.fetch(f'SELECT kind, actor, reason FROM "{schema}".cutover_canary_events')
        # The shared admin.token goes by the name `admin`.
        assert [(r["kind"], r["actor"]) for r in rows] == [("rollback", "operator:admin")]
        assert "pg" in rows[0]["reason"]
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".cutover_runtime') == 1
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


def _event(reason: str, route: str = "default") -> Event:
    return Event(at=1.0, route=route, kind="weights", actor="operator", reason=reason)


async def test_events_wait_while_the_store_is_down_and_are_written_in_order(
    db: Database, monkeypatch
) -> None:
    monkeypatch.setattr("cutover.canary.events.RETRY_BASE", 0.01)
    down = {"left": 3}

    async def flaky_open() -> Database:
        if down["left"]:
            down["left"] -= 1
            raise StoreUnavailable("postgresql: ConnectionRefusedError")
        return db

    log = EventLog(flaky_open)
    for i in range(5):
        log.record(_event(f"r{i}"))  # returns at once: nothing is awaited
    assert log.waiting == 5
    assert await log.flush(10.0)
    rows = await log.list(limit=10)
    assert [r["reason"] for r in rows] == ["r4", "r3", "r2", "r1", "r0"]
    assert log.status() == {
        "waiting": 0, "written": 5, "dropped": 0, "retrying": False, "last_error": None,
    }  # fmt: skip
    await log.close(1.0)


async def test_a_nul_in_the_reason_is_stored_escaped(db: Database) -> None:
    log = EventLog(_opener(db))
    log.record(_event("bad\x00build"))
    assert await log.flush(10.0)
    assert [r["reason"] for r in await log.list()] == ["bad\\x00build"]
    assert log.dropped == 0
    await log.close(1.0)


async def _unavailable() -> Database:
    raise StoreUnavailable("postgresql: TimeoutError")


async def test_backlog_overflow_and_shutdown_log_each_event_they_drop(monkeypatch, caplog) -> None:
    monkeypatch.setattr("cutover.canary.events.BACKLOG", 3)
    monkeypatch.setattr("cutover.canary.events.RETRY_BASE", 0.01)
    log = EventLog(_unavailable)
    for i in range(5):
        log.record(_event(f"reason-{i}"))
    assert log.waiting == 3 and log.dropped == 2
    await wait_for(lambda: log.status()["retrying"])
    assert log.status()["last_error"] == "StoreUnavailable: postgresql: TimeoutError"
    assert "canary events wait in memory" in caplog.text
    await log.close(0.1)
    assert log.waiting == 0 and log.dropped == 5
    lines = [r.getMessage() for r in caplog.records if "canary event not stored" in r.getMessage()]
    assert len(lines) == 5
    assert all(f"reason='reason-{i}'" in lines[i] for i in range(5))  # each event, in full
    assert sum("still waiting at shutdown" in line for line in lines) == 3


async def test_an_event_the_store_refuses_is_logged_and_does_not_block_the_rest(
    db: Database, caplog, monkeypatch
) -> None:
    monkeypatch.setattr("cutover.canary.events.RETRY_BASE", 0.01)
    log = EventLog(_opener(db))
    log.record(_event("first"))
    assert await log.flush(10.0)
    if db.dialect == "postgresql":
        await db.execute(
            "ALTER TABLE cutover_canary_events ADD CONSTRAINT short CHECK (length(reason) < 10)"
        )
    else:
        await db.execute(
            "CREATE TRIGGER short BEFORE INSERT ON cutover_canary_events "
            "WHEN length(NEW.reason) >= 10 BEGIN SELECT RAISE(ABORT, 'too long'); END"
        )
    log.record(_event("far too long a reason"))
    log.record(_event("last"))
    assert await log.flush(10.0)
    assert [r["reason"] for r in await log.list()] == ["last", "first"]
    assert log.dropped == 1 and "refused by the store" in caplog.text
    await log.close(1.0)


async def test_any_reason_is_stored_and_any_filter_answered(db: Database) -> None:
    # A reason comes from an admin request (body, query or X-Cutover-Reason header, where bytes
    # that are not UTF-8 arrive as surrogate escapes). PostgreSQL refused NUL, neither store
    # encodes a surrogate: the event stayed first in the backlog and no later one was stored.
    log = EventLog(_opener(db))
    for reason in ("nul \x00 inside", "bytes \udcff\udcfe", "plain"):
        log.record(Event(at=1.0, route="default", kind="pause", actor="operator", reason=reason))
    assert await log.flush(10.0)
    assert log.waiting == 0 and log.dropped == 0
    rows = await log.list()
    assert [r["reason"] for r in rows] == ["plain", "bytes \\xff\\xfe", "nul \\x00 inside"]
    assert await log.list(route="de\x00fault") == []
    assert len(await log.list(after=-(2**70))) == 3
    assert await log.list(after=2**70) == []
    await log.close(1.0)
