"""The outbox under a backlog (issue 13 item 2): claims cost the same at any backlog on both
stores, a slow claim is bounded, counted and logged, and a stall shows in /readyz and a gauge.

The backlog test puts 100,000 pending jobs in the outbox in one transaction (fresh tables, no
ANALYZE), drains the first few thousand, skips most of the middle (deleted in bulk) and drains
the rest, comparing the claims made at the full backlog with those made near the end. Set
CUTOVER_BACKLOG_FULL=1 to drain every job instead (about a minute per store), and
CUTOVER_BACKLOG_JOBS to change the size.

What a claim costs is counted, not timed (`ClaimWork`: rows and index entries read on
PostgreSQL, virtual machine steps on SQLite): a count does not move with the load on the
machine, and a claim that reads the backlog instead of the few jobs it takes multiplies it by
the backlog. Timings are what `cutover.bench.outbox_backlog` reports.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
import uuid
from typing import Any

import aiohttp

from cutover.bench.outbox_backlog import ClaimLog, fill, job_rows
from cutover.core.clock import Clock, FakeClock
from cutover.core.db import Database, open_database
from cutover.publishing.delivery import EngineState, iso_time
from cutover.publishing.outbox import _MIGRATION_1, DEAD_LETTERS_OF_TARGET_SQL, Job, Outbox
from tests.conftest import wait_for
from tests.integration.publishing_fakes import FakeWebhook
from tests.integration.publishing_helpers import config, engine
from tests.integration.store_helpers import ClaimWork, write_lock

PG = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
JOBS = int(os.environ.get("CUTOVER_BACKLOG_JOBS", "100000"))
FULL = os.environ.get("CUTOVER_BACKLOG_FULL") == "1"
# What a claim reads, at one backlog vs another, either way. A claim reads a few rows per job
# it takes whatever the backlog (7 to 15 on PostgreSQL, 2 to 4 units on SQLite, from 1 job to
# 32), so a sound claim stays within a factor of about 2; one that reads the backlog is
# 25 times over at 10,000 jobs and 250 times at 100,000.
FLAT = 10


async def _claim_work(db: Database, work: ClaimWork) -> int:
    """What one claim of 32 jobs read (`ClaimWork`); the jobs are given back (the backlog
    stays)."""
    outbox = Outbox(db, Clock())
    jobs = await outbox.claim("measured", limit=32, lease=60)
    assert len(jobs) == 32
    await outbox.release([j.id for j in jobs], "measured")
    return work.claims[-1]


async def test_a_claim_first_planned_on_an_empty_table_stays_flat_up_to_100k_jobs() -> None:
    """PostgreSQL gives a prepared statement a generic plan after five executions. Made while
    the outbox was empty, the old claim's plan walked every pending job for every pending job:
    the first claim after a burst of 10,000 jobs took 12-29 s (150 s at 30,000), and claims
    planned afresh sorted every due job (230 ms at 100,000). Claims on a connection that
    polled the empty outbox must cost at 10,000 and 100,000 jobs what they cost at 100 (a
    generic plan of the lease sweep alone would cost 40-80 ms at 100,000)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{PG}?search_path={schema}"
    made = await open_database(PG, schema=schema)  # tables made by an earlier start
    await Outbox(made, Clock()).setup()
    await made.close()
    primed = await open_database(url)  # a gateway that polled the empty outbox
    work = ClaimWork(primed, "publishing_jobs")
    rows = list(job_rows(max(JOBS // 2, 5_050), ["pd", "backend:default"], time.time()))
    try:
        for _ in range(8):
            assert await Outbox(primed, Clock()).claim("idle", limit=32, lease=60) == []
        await fill(url, rows[:100])
        small = [await _claim_work(primed, work) for _ in range(5)]
        await fill(url, rows[100:10_000])
        # The first claim after the burst stalled delivery (a generous deadline, so that the
        # old code fails in time rather than after minutes).
        first = await asyncio.wait_for(_claim_work(primed, work), 120)
        assert first <= FLAT * min(small), (first, small)
        await fill(url, rows[10_000:])
        large = [await _claim_work(primed, work) for _ in range(5)]
        assert max(large) <= FLAT * min(small), (large, small)
    finally:
        await primed.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await primed.close()


async def test_a_backlog_drains_and_the_claim_stays_flat(
    storage: str, tmp_path, services, gateways
) -> None:
    hook = await services(FakeWebhook)
    targets = [
        {"name": n, "type": "webhook", "url": hook.url + "/hook", "rate_limit": "off"}
        for n in ("a", "b")
    ]
    delivery = {"workers": 32, "concurrency": 16, "poll_interval": "100ms"}
    made = await open_database(storage)  # the tables exist before the gateway starts
    await Outbox(made, Clock()).setup()
    await made.close()
    gw = await gateways(
        config(tmp_path, {"targets": targets, "delivery": delivery}, storage=storage)
    )
    eng = engine(gw)
    claims = ClaimLog()
    claims.wrap(eng.outbox)
    work = ClaimWork(eng.outbox.db, "publishing_jobs")  # what each of the engine's claims read
    await wait_for(lambda: len(claims.samples) >= 6)  # the idle engine polled the empty outbox
    read: list[tuple[int, int, int]] = []  # (backlog left before, work, jobs) per claim
    _count_claims(eng.outbox, claims, work, read)
    rows = list(job_rows(JOBS // 2, ["a", "b"], time.time()))
    await fill(storage, rows)  # one transaction, behind the engine's back
    claims.total = total = len(rows)
    await wait_for(lambda: len(hook.accepted) >= 3_000, deadline=300)
    if not FULL:  # skip the middle: keep the last 2,000 jobs
        db = await gw.database()
        deleted = await db.execute(
            "DELETE FROM publishing_jobs WHERE lease_owner IS NULL AND id <= $1",
            int(await db.fetchval("SELECT max(id) FROM publishing_jobs")) - 2_000,
        )
        claims.total -= deleted
        total -= deleted
    await wait_for(lambda: len(hook.accepted) >= total, deadline=1_800 if FULL else 300)
    assert len(hook.accepted) == total and hook.problems == []
    # The receiver has the last deliveries before the engine has their answers and records
    # them: wait for those (up to 32 in flight), then nothing may be pending or dead.
    left = await eng.outbox.counts()
    end = time.monotonic() + 60
    while left and time.monotonic() < end:
        await asyncio.sleep(0.05)
        left = await eng.outbox.counts()
    assert left == {}  # nothing pending, nothing dead
    # What a claim read per job it took, at the full backlog and near the end (claims that
    # took jobs: a claim takes as many as the engine has room for, 1 to 32).
    early = [w / n for left, w, n in read if n and left >= int(len(rows) * 0.95)]
    late = [w / n for left, w, n in read if n and 1 <= left <= 2_000]
    assert len(early) >= 20 and len(late) >= 20, (len(early), len(late))
    early_p50, late_p50 = statistics.median(early), statistics.median(late)
    assert early_p50 <= FLAT * late_p50 and late_p50 <= FLAT * early_p50, (early_p50, late_p50)


def _count_claims(
    outbox: Outbox, claims: ClaimLog, work: ClaimWork, read: list[tuple[int, int, int]]
) -> None:
    """Append (backlog left before, work, jobs taken) to `read` for every claim `outbox`
    makes from now on (the engine makes one at a time; one that failed read nothing here)."""
    claim = outbox.claim

    async def counted(*args: Any, **kwargs: Any) -> list[Job]:
        left, done = max(0, claims.total - claims.claimed), len(work.claims)
        jobs = await claim(*args, **kwargs)
        if len(work.claims) > done:
            read.append((left, work.claims[-1], len(jobs)))
        return jobs

    outbox.claim = counted  # type: ignore[method-assign]


def _sample(gw, name: str) -> float:
    value = gw.metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


async def _readyz(gw) -> dict:
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as resp:
        return (await resp.json())["publishing"]["outbox"]


async def test_a_slow_claim_is_bounded_counted_and_logged_and_a_stall_shows(
    storage: str, tmp_path, services, gateways, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="cutover.publishing")
    hook = await services(FakeWebhook)
    clock = FakeClock(wall=time.time())  # jobs written with the wall time are due
    delivery = {"claim_timeout": "200ms", "stall_after": "60s", "poll_interval": "1h"}
    target = {"name": "hook", "type": "webhook", "url": hook.url + "/hook"}
    data = config(tmp_path, {"targets": [target], "delivery": delivery}, storage=storage)
    gw = await gateways(data, clock)
    eng = engine(gw)
    await wait_for(lambda: eng.last_claim is not None)  # the idle engine looked once
    detail = await _readyz(gw)
    assert detail["stalled"] is False and detail["claim_timeouts"] == 0
    assert detail["stall_after"] == 60 and _sample(gw, "cutover_outbox_stalled") == 0
    # Due in 30 s on the gateway's clock, so that no claim takes them before the lock is held;
    # the clock moves only once a claim has timed out under the lock (none can succeed then).
    await fill(storage, list(job_rows(10, ["hook"], clock.now() + 30)))
    stalled_since = iso_time(clock.now())  # the last claim found nothing: progress until now
    async with write_lock(storage, "publishing_jobs"):
        eng.wake()
        await wait_for(lambda: eng.claim_timeouts >= 1)
        assert _sample(gw, "cutover_outbox_claim_timeouts_total") >= 1
        assert _sample(gw, "cutover_outbox_claim_seconds_count") >= 2
        await wait_for(lambda: "timed out" in caplog.text)
        timed_out = next(r for r in caplog.records if "timed out" in r.getMessage())
        assert timed_out.levelno == logging.WARNING
        assert "10 jobs pending" in timed_out.getMessage()
        assert "delivery.claim_timeout 0.2s" in timed_out.getMessage()
        assert (await _readyz(gw))["stalled"] is False  # not yet stall_after without progress
        clock.advance(61)  # the jobs are due, and no progress for 61 s
        detail = await _readyz(gw)  # read when asked, whatever the loop is doing
        assert detail["stalled"] is True and detail["since"] == stalled_since
        await wait_for(lambda: _sample(gw, "cutover_outbox_stalled") == 1)
        stall = [r for r in caplog.records if "is stalled" in r.getMessage()]
        assert len(stall) == 1 and stall[0].levelno == logging.WARNING
        assert "10 jobs pending" in stall[0].getMessage()
        assert (await _readyz(gw))["pending"] == 10
        assert eng.state is EngineState.RUNNING and len(hook.requests) == 0
    await wait_for(lambda: len(hook.accepted) == 10, deadline=30)  # after its backoff
    await wait_for(lambda: _sample(gw, "cutover_outbox_stalled") == 0)
    ended = [r for r in caplog.records if "delivers again" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO
    detail = await _readyz(gw)
    assert detail["stalled"] is False and detail["since"] is None and detail["pending"] is None
    assert hook.problems == []
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as resp:
        assert resp.status == 200  # a stall is detail, never unreadiness


async def test_an_outbox_made_by_the_previous_version_is_migrated(db: Database) -> None:
    """Tables and jobs as the previous version left them (migration 1 only, a lease that ran
    out, a resolve behind its trigger, a dead letter) work after `setup` adds the indexes."""
    clock = FakeClock(wall=time.time())
    await db.migrate("publishing-outbox-1", _MIGRATION_1)  # type: ignore[arg-type]
    insert = (
        "INSERT INTO publishing_jobs (target, fingerprint, alert_status, alert, state,"
        " attempts, created_at, next_at, lease_owner, lease_until)"
        " VALUES ($1, $2, $3, '{}', $4, 0, $5, $5, $6, $7) RETURNING id"
    )
    now = clock.now()
    trigger = await db.fetchval(insert, "t", "fp", "firing", "pending", now, "gone", now - 1)
    resolve = await db.fetchval(insert, "t", "fp", "resolved", "pending", now, None, None)
    await db.fetchval(insert, "t", "fp-dead", "firing", "dead", now, None, None)
    outbox = Outbox(db, clock)
    await outbox.setup()
    await outbox.setup()  # once
    if db.dialect == "sqlite":
        rows = await db.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'publishing_jobs'"
        )
    else:
        rows = await db.fetch(
            "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'publishing_jobs'"
            " AND schemaname = current_schema()"
        )
    names = {r["name"] for r in rows}
    assert {"publishing_jobs_ready", "publishing_jobs_head", "publishing_jobs_leased"} <= names
    assert "publishing_jobs_dead" in names
    assert not {"publishing_jobs_order", "publishing_jobs_due"} & names
    [job] = await outbox.claim("w", limit=10, lease=30)  # the lease that ran out is taken back
    assert job.id == trigger
    assert await outbox.claim("w", limit=10, lease=30) == []  # the resolve waits
    await outbox.complete(job)
    assert [j.id for j in await outbox.claim("w", limit=10, lease=30)] == [resolve]
    assert [j.fingerprint for j in await outbox.dead_letters()] == ["fp-dead"]


async def test_an_idle_outbox_is_never_taken_for_a_stalled_one(tmp_path, services, gateways):
    """An idle engine polls hourly here, yet looks at least every stall_after / 2: its empty
    claims are progress, so /readyz does not report a stall of an outbox with nothing to do."""
    hook = await services(FakeWebhook)
    clock = FakeClock(wall=time.time())
    delivery = {"stall_after": "200ms", "poll_interval": "1h"}
    target = {"name": "hook", "type": "webhook", "url": hook.url + "/hook"}
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": delivery}), clock)
    # It keeps looking, hourly poll or not (at start it looks a handful of times at most).
    await wait_for(lambda: _sample(gw, "cutover_outbox_claim_seconds_count") >= 20)
    claims = _sample(gw, "cutover_outbox_claim_seconds_count")
    clock.advance(0.5)  # overdue for a moment: nothing looked since
    assert (await _readyz(gw))["stalled"] is True
    await wait_for(lambda: _sample(gw, "cutover_outbox_claim_seconds_count") > claims)
    assert (await _readyz(gw))["stalled"] is False
    assert _sample(gw, "cutover_outbox_stalled") == 0


async def test_dead_letters_of_one_target_use_their_own_index(storage: str) -> None:
    """`GET /publishing/dlq?target=X` reads X's dead letters from an index of their own: with
    20,000 dead letters of another target it walked every one of them (the index was on id)."""
    db = await open_database(storage)
    try:
        outbox = Outbox(db, Clock())
        await outbox.setup()
        now = time.time()
        rows = [(*row[:4], "dead", 5, now, now) for row in job_rows(20_000, ["noisy"], now)] + [
            (*row[:4], "dead", 5, now, now) for row in job_rows(3, ["quiet"], now)
        ]
        await fill(storage, rows)
        if db.dialect == "postgresql":
            await db.execute("ANALYZE publishing_jobs")
            plan = await db.fetchval(
                "EXPLAIN (FORMAT JSON) "
                + DEAD_LETTERS_OF_TARGET_SQL.replace("$1", "100").replace("$2", "'quiet'")
            )
        else:
            found = await db.fetch(
                "EXPLAIN QUERY PLAN "
                + DEAD_LETTERS_OF_TARGET_SQL.replace("$1", "100").replace("$2", "'quiet'")
            )
            plan = " ".join(str(r) for r in found)
        assert "publishing_jobs_dead_target" in str(plan), plan
        assert len(await outbox.dead_letters(target="quiet")) == 3
        assert len(await outbox.dead_letters(limit=10)) == 10
    finally:
        await db.close()
