"""The alert intake's classify queue under a backlog: a claim costs the same at any backlog on
both stores, also when its plan was first made on an empty table (the shape that froze the
publishing outbox, docs/publishing.md "Claims at any backlog"), and a claim is bounded and
counted. Real PostgreSQL (fresh schema, autovacuum off, never ANALYZEd) and SQLite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cutover.alerts.intake import _MIGRATION, CLAIM_BATCH, AlertsFeature
from cutover.core.db import Database, StoreTimeout
from tests.integration.alerts_helpers import AlertsGateway, feature
from tests.integration.store_helpers import write_lock

FLAT = 10  # claim time at 20,000 alerts waiting vs at 100: a generous factor, not a time
BACKLOG = 20_000

_INSERT = (
    "INSERT INTO cutover_alerts (fingerprint, alertname, status, received_at, source, mode,"
    " state, alert, updated_at) VALUES ($1, 'Disk', 'firing', 1, '/webhook/proxy', 'enriched',"
    " 'classifying', $2, 1)"
)
_ALERT = (
    '{"fingerprint": "%s", "status": "firing", "labels": {"alertname": "Disk"},'
    ' "annotations": {}, "starts_at": "2026-01-01T00:00:00Z"}'
)


async def _fill(db: Database, first: int, last: int) -> None:
    """Alerts `first`..`last - 1` waiting for classification; every fingerprint twice (its
    second alert waits behind the first), the second copies after all the first ones."""
    half = BACKLOG // 2
    rows = [(f"{i % half:016x}", _ALERT % f"{i % half:016x}") for i in range(first, last)]
    await db.executemany(_INSERT, rows)
    if db.dialect == "sqlite":
        # Every transaction reads the write-ahead log's index, whose size is the writes since
        # the last checkpoint: the store's cost, not the claim's. Checkpoint, as SQLite soon does.
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def _timed_claim(alerts: AlertsFeature, db: Database) -> float:
    """Seconds one claim took; it leased a full batch, given back afterwards (the backlog
    stays)."""
    started = time.perf_counter()
    rows = await alerts.claim_classifying(db)
    elapsed = time.perf_counter() - started
    assert len(rows) == CLAIM_BATCH
    assert len({_fingerprint(r) for r in rows}) == CLAIM_BATCH  # one per fingerprint
    await db.execute(
        "UPDATE cutover_alerts SET lease_until = NULL"
        " WHERE state = 'classifying' AND lease_until IS NOT NULL"
    )
    return elapsed


def _fingerprint(row: dict[str, Any]) -> str:
    text = row["alert"]
    return text.split('"fingerprint": "', 1)[1].split('"', 1)[0]


async def _started(tmp_path: Path, storage: str, **alerts: Any) -> tuple[AlertsGateway, Any]:
    helper = AlertsGateway(tmp_path)
    gw = await helper.start({"poll_interval": "1h", **alerts}, storage=storage)
    return helper, gw


async def test_a_claim_first_planned_on_an_empty_table_stays_flat(
    storage: str, tmp_path: Path
) -> None:
    """The old claim (`NOT EXISTS` an earlier alert of the fingerprint, `ORDER BY id`) read
    every alert waiting and sorted them; with a generic plan made on the empty table
    PostgreSQL walked every row for every row (89 ms at 1,000, minutes at 20,000). A claim
    made after the worker polled the empty queue must cost at 20,000 what it costs at 100."""
    helper, gw = await _started(tmp_path, storage)
    try:
        alerts = feature(gw)
        db, _ = await alerts._store()
        if db.dialect == "postgresql":  # as on a server where autovacuum is off or behind
            await db.execute("ALTER TABLE cutover_alerts SET (autovacuum_enabled = false)")
        for _ in range(8):  # an idle worker polls: plans are made on the empty table
            assert await alerts.claim_classifying(db) == []
        await _fill(db, 0, 100)
        # The fastest of several: a systematic cost stays, a passing hiccup does not.
        small = min([await _timed_claim(alerts, db) for _ in range(5)])
        await _fill(db, 100, BACKLOG)
        # A generous deadline, so that the old claim fails in time rather than after minutes.
        first = await asyncio.wait_for(_timed_claim(alerts, db), 120)
        large = min([first] + [await _timed_claim(alerts, db) for _ in range(4)])
        assert large <= FLAT * small, (large, small)
    finally:
        await helper.close()


async def test_a_claim_is_bounded_and_counted(storage: str, tmp_path: Path) -> None:
    helper, gw = await _started(tmp_path, storage, claim_timeout="200ms")
    try:
        alerts = feature(gw)
        db, _ = await alerts._store()
        await _fill(db, 0, 3)
        registry = gw.metrics.registry
        async with write_lock(storage, "cutover_alerts"):  # writers wait for another one
            with pytest.raises(StoreTimeout):
                await asyncio.wait_for(alerts.claim_classifying(db), 30)
            assert registry.get_sample_value("cutover_alerts_claim_timeouts_total") == 1
            assert registry.get_sample_value("cutover_alerts_claim_seconds_count") == 1
            assert alerts.claims.timed_out == 1
        done = await alerts.run_once()  # nothing was leased: all three are classified now
        assert done["classified"] == 3
        assert registry.get_sample_value("cutover_alerts_claim_seconds_count") >= 2
        left = await db.fetchval("SELECT COUNT(*) FROM cutover_alerts WHERE state = 'classifying'")
        assert left == 0
    finally:
        await helper.close()


async def test_a_queue_made_by_the_previous_version_is_migrated(
    storage: str, tmp_path: Path
) -> None:
    """Tables and alerts as the previous version left them (migration 1 only, a lease that ran
    out, a second alert of a fingerprint behind its first) work once the indexes are added."""
    from cutover.core.db import open_database

    made = await open_database(storage)
    try:
        await made.migrate("alerts-intake-1", _MIGRATION)  # type: ignore[arg-type]
        await _fill(made, 0, 2)  # fingerprints 0 and 1
        await _fill(made, BACKLOG // 2, BACKLOG // 2 + 1)  # fingerprint 0 again, behind
        await made.execute("UPDATE cutover_alerts SET lease_until = 5 WHERE id = 1")  # ran out
    finally:
        await made.close()
    helper, gw = await _started(tmp_path, storage)
    try:
        alerts = feature(gw)
        db, _ = await alerts._store()
        rows = await alerts.claim_classifying(db)
        assert sorted(r["id"] for r in rows) == [1, 2]  # the heads; the third waits behind 1
        assert await alerts.claim_classifying(db) == []  # leased, and the third still waits
        await db.execute("UPDATE cutover_alerts SET state = 'queued' WHERE id = 1")
        assert [r["id"] for r in await alerts.claim_classifying(db)] == [3]
    finally:
        await helper.close()
