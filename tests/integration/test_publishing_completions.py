"""Delivered jobs leave the outbox in batches: one DELETE per batch, leases kept until then,
flushed at shutdown and retried while the store is down. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
import pytest

from cutover.core.clock import FakeClock
from cutover.core.db import StoreUnavailable, open_database
from cutover.publishing.outbox import Outbox
from tests.conftest import wait_for
from tests.integration.alerts_helpers import TcpRelay
from tests.integration.publishing_fakes import FakePagerDuty, FakeWebhook
from tests.integration.publishing_helpers import config, engine, enqueue, make_alert, pending

PG = "postgresql://postgres@127.0.0.1:5432/test"
FAST = {"backoff": {"base": "20ms", "cap": "100ms"}, "poll_interval": "50ms"}


# Engines with this delivery config flush only at shutdown or when asked (within a test's time):
# no batch fills, and the oldest job may wait 36 s (at most lease / 100).
HELD = {**FAST, "lease": "1h", "completions": {"batch": 10_000, "interval": "36s"}}


class CountingDb:
    """Counts the DELETE statements a database runs (a thin wrapper around `execute`)."""

    def __init__(self, db) -> None:
        self.deletes = 0
        inner = db.execute

        async def execute(sql, *args):
            if sql.startswith("DELETE FROM publishing_jobs"):
                self.deletes += 1
            return await inner(sql, *args)

        db.execute = execute


async def rows(db) -> int:
    """Jobs in the table, read straight (no flush first)."""
    return int(await db.fetchval("SELECT COUNT(*) FROM publishing_jobs"))


async def put(outbox: Outbox, fingerprints, target="t1", status="firing") -> list[int]:
    ids = []
    now = outbox.clock.now()
    async with outbox.db.transaction() as tx:
        for fp in fingerprints:
            ids += await outbox.enqueue(tx, make_alert(fp, status), [target], now=now)
    return ids


# -- the outbox alone ----------------------------------------------------------------------------


async def test_one_delete_per_batch_and_reads_flush_first(storage):
    db = await open_database(storage)
    counted = CountingDb(db)
    outbox = Outbox(db, FakeClock())
    try:
        await outbox.setup()
        await put(outbox, [f"fp{i}" for i in range(74)])
        jobs = await outbox.claim("w1", limit=100, lease=60)
        assert len(jobs) == 74
        outbox.start_completions(batch=64, interval=3600)
        for job in jobs[:64]:
            await outbox.complete(job)
        await wait_for(lambda: outbox.completion_stats()["deleted"] == 64)
        assert counted.deletes == 1 and outbox.completion_stats()["statements"] == 1
        for job in jobs[64:]:
            await outbox.complete(job)
        for _ in range(10):  # below the batch size and the interval: they wait
            await asyncio.sleep(0.02)
        assert outbox.completion_stats()["waiting"] == 10 and await rows(db) == 10
        assert await outbox.get(jobs[70].id) is None  # a read of one job flushes first
        assert await outbox.counts() == {}
        assert counted.deletes == 2 and await rows(db) == 0
        await outbox.stop_completions()
    finally:
        await db.close()


async def test_large_flush_is_chunked_on_sqlite_and_one_statement_on_postgres(storage):
    db = await open_database(storage)
    counted = CountingDb(db)
    outbox = Outbox(db, FakeClock())
    try:
        await outbox.setup()
        await put(outbox, [f"fp{i}" for i in range(1200)])
        jobs = await outbox.claim("w1", limit=2000, lease=60)
        assert len(jobs) == 1200
        outbox.start_completions(batch=1_000_000, interval=3600)
        for job in jobs:
            await outbox.complete(job)
        assert await outbox.flush() == 1200
        statements = outbox.completion_stats()["statements"]
        assert statements == (1 if db.dialect == "postgresql" else 3)  # SQLite: 500 per IN
        # the SQLite chunks run on a transaction, not through `Database.execute`
        assert counted.deletes == (1 if db.dialect == "postgresql" else 0)
        assert await rows(db) == 0
        await outbox.stop_completions()
    finally:
        await db.close()


async def test_flush_is_due_by_size_or_by_the_injected_clock(storage):
    db = await open_database(storage)
    clock = FakeClock()
    outbox = Outbox(db, clock)
    try:
        state = outbox._completions()
        state.interval, state.batch = 0.02, 3
        assert state.due_in(clock.monotonic()) == float("inf")
        state.add(1)
        assert state.due_in(clock.monotonic()) == pytest.approx(0.02)
        clock.advance(0.015)
        assert state.due_in(clock.monotonic()) == pytest.approx(0.005)
        state.add(2)  # the oldest one sets the time
        assert state.due_in(clock.monotonic()) == pytest.approx(0.005)
        clock.advance(0.01)
        assert state.due_in(clock.monotonic()) == 0
        state.ids.clear()
        for i in range(3):
            state.add(i)
        assert state.due_in(clock.monotonic()) == 0  # a full batch: at once
        state.ids.clear()
    finally:
        await db.close()


async def test_delivered_unflushed_job_is_not_claimed_again_and_holds_its_resolve(storage):
    clock = FakeClock()
    db1, db2 = await open_database(storage), await open_database(storage)
    first, second = Outbox(db1, clock), Outbox(db2, clock)  # two workers, two connections
    try:
        await first.setup()
        [trigger] = await put(first, ["fp1"])
        [resolve] = await put(first, ["fp1"], status="resolved")
        first.start_completions(batch=1_000_000, interval=3600)
        [job] = await first.claim("w1", limit=10, lease=30)
        assert job.id == trigger
        await first.complete(job)
        assert first.completing(trigger)
        # Delivered, not yet deleted: leased still, and its resolve waits behind it.
        assert await second.claim("w2", limit=10, lease=30) == []
        assert await first.claim("w1", limit=10, lease=30) == []
        await first.retry(job, "must not apply", at=clock.now())  # no retry of a done job
        await first.release([trigger], "w1")
        assert await second.claim("w2", limit=10, lease=30) == []
        # Its lease ran out (as when the worker dies before the flush): delivered again,
        # at least once; this worker itself never takes it again.
        clock.advance(31)
        assert await first.claim("w1", limit=10, lease=30) == []
        clock.advance(31)
        assert [j.id for j in await second.claim("w2", limit=10, lease=30)] == [trigger]
        await first.flush()
        clock.advance(31)
        assert [j.id for j in await second.claim("w2", limit=10, lease=30)] == [resolve]
        await first.stop_completions()
    finally:
        await db1.close()
        await db2.close()


async def test_flush_while_postgres_is_down_keeps_the_ids_and_retries(caplog):
    relay = await TcpRelay().start()
    schema = f"pc_{uuid.uuid4().hex[:10]}"
    url = PG.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
    db = await open_database(url, schema=schema)
    outbox = Outbox(db, FakeClock())
    try:
        await outbox.setup()
        await put(outbox, [f"fp{i}" for i in range(20)])
        jobs = await outbox.claim("w1", limit=100, lease=60)
        outbox.start_completions(batch=1_000_000, interval=0.05)
        await relay.stop()  # down, with the pool's connections cut
        caplog.set_level(logging.INFO, "cutover.publishing")
        for job in jobs:
            await outbox.complete(job)
        with pytest.raises(StoreUnavailable):
            await outbox.counts()  # a read while it is down: no answer, nothing lost
        await asyncio.sleep(0.5)  # the flusher tries (and fails) a few times
        assert outbox.completion_stats()["waiting"] == 20
        assert not outbox._completions().task.done()  # still running
        warned = [r for r in caplog.records if "cannot leave the outbox" in r.getMessage()]
        assert len(warned) == 1  # once per outage
        await relay.start()
        await wait_for(lambda: outbox.completion_stats()["deleted"] == 20, deadline=20)
        assert outbox.completion_stats()["waiting"] == 0
        assert await rows(db) == 0
        assert any("store is back" in r.getMessage() for r in caplog.records)
        await outbox.stop_completions()
    finally:
        await relay.stop()
        await db.close()
        conn = await asyncpg.connect(PG)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


# -- through the delivery engine -----------------------------------------------------------------


def hook_target(hook: FakeWebhook) -> dict:
    return {"name": "wh", "type": "webhook", "url": hook.url + "/hook", "rate_limit": "off"}


async def test_deliveries_empty_the_outbox_in_batches(storage, tmp_path, services, gateways):
    hook = await services(FakeWebhook)
    data = config(tmp_path, {"targets": [hook_target(hook)], "delivery": FAST})
    data["storage"] = storage
    gw = await gateways(data)
    db = await gw.database()
    for i in range(100):
        await enqueue(gw, make_alert(f"fp-batch-{i}"), ["wh"])
    await wait_for(lambda: len(hook.accepted) == 100, deadline=30)
    for _ in range(400):  # the timer flushes without any read asking
        if await rows(db) == 0:
            break
        await asyncio.sleep(0.05)
    assert await rows(db) == 0
    stats = engine(gw).outbox.completion_stats()
    assert stats["deleted"] == 100 and stats["waiting"] == 0
    assert stats["statements"] == stats["flushes"] < 100  # one DELETE per batch
    assert sorted(hook.keys.values()) == [1] * 100


async def test_shutdown_flushes_what_waits(storage, tmp_path, services, gateways):
    hook = await services(FakeWebhook)
    data = config(tmp_path, {"targets": [hook_target(hook)], "delivery": HELD})
    data["storage"] = storage
    gw = await gateways(data)
    eng = engine(gw)
    db = await gw.database()
    for i in range(30):
        await enqueue(gw, make_alert(f"fp-stop-{i}"), ["wh"])
    await wait_for(lambda: eng.outbox.completion_stats()["waiting"] == 30)
    assert await rows(db) == 30 and eng.outbox.completion_stats()["statements"] == 0
    await eng.stop()
    stats = eng.outbox.completion_stats()
    assert stats["statements"] == 1 and stats["deleted"] == 30
    assert await rows(db) == 0
    assert len(hook.accepted) == 30


async def test_second_engine_does_not_redeliver_an_unflushed_job(
    storage, tmp_path, services, gateways
):
    hook = await services(FakeWebhook)
    data = config(tmp_path, {"targets": [hook_target(hook)], "delivery": HELD})
    data["storage"] = storage
    first = await gateways(data)
    [job_id] = await enqueue(first, make_alert("fp-two"), ["wh"])
    await wait_for(lambda: engine(first).outbox.completing(job_id))
    second = await gateways(data)  # polls every 50 ms
    await wait_for(lambda: engine(second).state.value == "running")
    for _ in range(10):
        await asyncio.sleep(0.05)
        engine(second).wake()
    assert len(hook.accepted) == 1
    assert engine(second).gates["wh"].stats.sent == 0
    await engine(first).stop()  # the flush at shutdown: the job is gone
    assert await rows(await second.database()) == 0
    assert len(hook.accepted) == 1


async def test_resolve_waits_for_its_triggers_flush(storage, tmp_path, services, gateways):
    pd = await services(FakePagerDuty)
    target = {"name": "pd", "type": "pagerduty", "url": pd.url + "/v2/enqueue",
              "routing_key": pd.routing_key}  # fmt: skip
    data = config(tmp_path, {"targets": [target], "delivery": HELD})
    data["storage"] = storage
    gw = await gateways(data)
    eng = engine(gw)
    [trigger] = await enqueue(gw, make_alert("fp-order"), ["pd"])
    await enqueue(gw, make_alert("fp-order", "resolved"), ["pd"])
    await wait_for(lambda: eng.outbox.completing(trigger))
    for _ in range(10):
        await asyncio.sleep(0.05)
        eng.wake()
    assert [e["event_action"] for e in pd.accepted] == ["trigger"]  # held behind the flush
    await eng.outbox.flush()  # wakes the engine: the resolve is due now
    await wait_for(lambda: len(pd.accepted) == 2)
    assert [e["event_action"] for e in pd.accepted] == ["trigger", "resolve"]
    await wait_for(lambda: eng.outbox.completion_stats()["waiting"] == 1)
    assert await pending(gw) == {}  # the read flushes first: nothing pending
