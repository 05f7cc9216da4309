"""Canary events and the shared-state table in both stores: real SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg

from proxy.clock import FakeClock
from proxy.db import Database
from proxy.events import Event, EventLog
from proxy.shared import StoreShared
from routing.canary import initial_control
from tests.integration.canary_helpers import (
    FlakyBackend,
    admin,
    canary_config,
    start,
    started,
    weights,
)

PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def test_events_are_stored_and_listed(db: Database) -> None:
    log = EventLog(db)
    for i, kind in enumerate(("weights", "promote", "rollback")):
        assert await log.record(
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
    rows = await log.list()
    assert [r["kind"] for r in rows] == ["rollback", "promote", "weights"]
    first = rows[-1]
    assert first["actor"] == "operator:alice" and first["at"] == 1000.0
    assert first["weights_after"] == {"go": 50, "python": 50}
    assert first["figures"] == {"z": 3.5, "judged": {"candidate_errors": 10}}
    assert [r["kind"] for r in await log.list(route="default")] == ["promote", "weights"]
    assert [r["kind"] for r in await log.list(after=first["id"], limit=1)] == ["promote"]
    assert await EventLog(db).list(limit=1) == rows[:1]  # a second log sees the same table


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


async def test_any_reason_is_stored_and_any_filter_answered(db: Database) -> None:
    # A reason comes from an admin request (body, query or X-Cutover-Reason header, where bytes
    # that are not UTF-8 arrive as surrogate escapes). PostgreSQL refused NUL, neither store
    # encodes a surrogate: the event stayed first in the backlog and no later one was stored.
    log = EventLog(db)
    for reason in ("nul \x00 inside", "bytes \udcff\udcfe", "plain"):
        assert await log.record(Event(at=1.0, route="default", kind="pause", actor="operator",
                                      reason=reason))  # fmt: skip
    assert log.waiting == 0
    rows = await log.list()
    assert [r["reason"] for r in rows] == ["plain", "bytes \\xff\\xfe", "nul \\x00 inside"]
    assert await log.list(route="de\x00fault") == []
    assert len(await log.list(after=-(2**70))) == 3
    assert await log.list(after=2**70) == []
