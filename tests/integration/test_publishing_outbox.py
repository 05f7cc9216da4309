"""The outbox on both stores: claim with a lease, order per fingerprint, DLQ, refs."""

from __future__ import annotations

import asyncio
import dataclasses
from types import MappingProxyType

import orjson
import pytest

from cutover.core.clock import FakeClock
from cutover.core.db import StoreUnavailable
from cutover.publishing.outbox import Outbox, alert_from_json, alert_to_json
from tests.integration.publishing_helpers import CountQueries, make_alert

PG = "postgresql://postgres@127.0.0.1:5432/test"


async def put(outbox: Outbox, alert, targets):
    async with outbox.db.transaction() as tx:
        return await outbox.enqueue(tx, alert, targets, now=outbox.clock.now())


async def test_claim_lease_order_and_expiry(db):
    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    await outbox.setup()  # migrations run once
    a, b, c = await put(outbox, make_alert("fp1"), ["t1", "t2", "backend:default"])
    [d] = await put(outbox, make_alert("fp1", "resolved"), ["t1"])
    jobs = await outbox.claim("w1", limit=10, lease=30)
    assert [j.id for j in jobs] == [a, b, c]  # d waits for a (same target and fingerprint)
    assert jobs[2].backend_route == "default"
    assert await outbox.claim("w2", limit=10, lease=30) == []  # all leased or blocked
    clock.advance(31)  # w1 died: its leases run out
    again = await outbox.claim("w2", limit=10, lease=30, exclude=["t2"])
    assert [j.id for j in again] == [a, c]
    await outbox.complete(again[0])
    [resolve] = await outbox.claim("w2", limit=10, lease=30, exclude=["t2"])
    assert resolve.id == d and resolve.alert.status == "resolved"
    await outbox.release([d], "w2")
    assert [j.id for j in await outbox.claim("w3", limit=5, lease=30)] == [b, d]


async def test_retry_dead_letter_replay_and_refs(db):
    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    [job_id] = await put(outbox, make_alert("fp2"), ["t1"])
    [job] = await outbox.claim("w", limit=5, lease=30)
    await outbox.retry(job, "HTTP 503", at=clock.now() + 10)
    assert await outbox.claim("w", limit=5, lease=30) == []
    clock.advance(10)
    [job] = await outbox.claim("w", limit=5, lease=30)
    assert job.attempts == 1 and job.last_error == "HTTP 503"
    await outbox.dead_letter(job, "HTTP 400 (not retried)")
    [dead] = await outbox.dead_letters()
    assert dead.state == "dead" and dead.attempts == 2 and dead.dead_at == clock.now()
    assert (await outbox.counts()) == {"t1": {"dead": 1}}
    assert await outbox.replay(job_id) and not await outbox.replay(job_id)
    [back] = await outbox.claim("w", limit=5, lease=30)
    assert back.attempts == 0 and back.state == "pending"
    await outbox.put_ref("t1", "fp2", "inc-1")
    await outbox.put_ref("t1", "fp2", "inc-2")
    assert await outbox.get_ref("t1", "fp2") == "inc-2"
    await outbox.drop_ref("t1", "fp2")
    assert await outbox.get_ref("t1", "fp2") is None


async def test_concurrent_claimers_never_share_a_job(db):
    outbox = Outbox(db, FakeClock())
    await outbox.setup()
    for i in range(30):
        await put(outbox, make_alert(f"fp-c{i}"), ["t"])
    results = await asyncio.gather(*(outbox.claim(f"w{i}", limit=4, lease=30) for i in range(10)))
    ids = [j.id for jobs in results for j in jobs]
    assert len(ids) == len(set(ids)) == 30


async def test_enqueue_notifies_and_a_monotonic_now_is_not_trusted(db):
    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    woken = []
    other = Outbox(db, clock)  # intake and the engine may hold different Outboxes
    other.on_enqueue(lambda: woken.append(1))
    async with db.transaction() as tx:
        [job_id] = await outbox.enqueue(tx, make_alert("fp3"), ["t"], now=clock.monotonic())
    assert woken == [1]
    job = await outbox.get(job_id)
    assert job.created_at == clock.now()


def test_alert_json_round_trip():
    alert = make_alert("fp-json")
    assert alert_from_json(alert_to_json(alert)) == alert
    plain = make_alert("fp-plain", classified=False)
    assert alert_from_json(alert_to_json(plain)) == plain
    assert alert.classification is not None
    hit = dataclasses.replace(
        alert, classification=dataclasses.replace(alert.classification, cached=True)
    )
    assert alert_from_json(alert_to_json(hit)).classification.cached is True
    grouped = dataclasses.replace(alert, group_labels=MappingProxyType({"alertname": "A"}))
    assert alert_from_json(alert_to_json(grouped)) == grouped
    old = orjson.loads(alert_to_json(grouped))
    del old["group_labels"]  # a job written before group labels were kept
    assert dict(alert_from_json(orjson.dumps(old)).group_labels) == {}


async def test_a_retried_job_holds_back_the_jobs_behind_it(db):
    """A resolve waits for its trigger; while the trigger waits for its retry, the resolve is
    not due either, so claims never read it in the meantime."""
    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    [trigger] = await put(outbox, make_alert("fp-r"), ["t"])
    [resolve] = await put(outbox, make_alert("fp-r", "resolved"), ["t"])
    [other] = await put(outbox, make_alert("fp-other"), ["t"])
    [job, unrelated] = await outbox.claim("w", limit=10, lease=30)
    assert (job.id, unrelated.id) == (trigger, other)
    await outbox.release([other], "w")
    await outbox.retry(job, "HTTP 503", at=clock.now() + 100)
    held = await outbox.get(resolve)
    assert held is not None and held.next_at == clock.now() + 100
    assert (await outbox.get(other)).next_at == clock.now()  # another alert: untouched
    await outbox.complete(await outbox.get(other))
    clock.advance(50)
    assert await outbox.claim("w", limit=10, lease=30) == []
    clock.advance(50)
    [again] = await outbox.claim("w", limit=10, lease=30)  # the trigger first, alone
    assert again.id == trigger and again.attempts == 1
    await outbox.complete(again)
    assert [j.id for j in await outbox.claim("w", limit=10, lease=30)] == [resolve]


async def test_claims_take_no_more_per_target_than_asked_oldest_due_first(db):
    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    names = [f"t{i:02d}" for i in range(30)]
    for i in range(3):
        for name in names:
            await put(outbox, make_alert(f"fp-{name}-{i}"), [name])
        clock.advance(1)
    caps = {"t00": 2, "t01": 0}  # t01 is full; targets not listed take up to the limit
    jobs = await outbox.claim("w", limit=1000, lease=30, exclude=["t02"], caps=caps)
    per: dict[str, int] = {}
    for job in jobs:
        per[job.target] = per.get(job.target, 0) + 1
    assert per.pop("t00") == 2 and "t01" not in per and "t02" not in per
    assert per == dict.fromkeys(names[3:], 3)
    # Limited overall: the longest due go first, whatever their target.
    [first] = await outbox.claim("w", limit=1, lease=30)
    assert first.target == "t01" and first.next_at == min(
        j.next_at for j in await _pending(outbox, "t01")
    )
    assert len(await outbox.claim("w", limit=1000, lease=30)) == 1 + 2 + 3  # t00, t01, t02


async def _pending(outbox: Outbox, target: str):
    rows = await outbox.db.fetch(
        "SELECT id FROM publishing_jobs WHERE target = $1 AND state = 'pending'", target
    )
    return [await outbox.get(r["id"]) for r in rows]


async def test_a_claim_with_a_time_bound_leases_nothing_when_it_runs_out(db, tmp_path):
    """A claim that cannot finish within its bound raises StoreTimeout and leases nothing."""
    from cutover.core.db import StoreTimeout
    from tests.integration.store_helpers import write_lock

    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    await put(outbox, make_alert("fp-bound"), ["t"])
    if db.dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = f"{PG}?search_path={await db.fetchval('SELECT current_schema()')}"
    async with write_lock(url, "publishing_jobs"):
        with pytest.raises(StoreTimeout):
            await outbox.claim("w", limit=10, lease=30, timeout=0.2)
        assert await outbox.backlog(timeout=5.0) == 1  # counted beside the writer
    [job] = await outbox.claim("w2", limit=10, lease=30, timeout=5.0)
    assert job.fingerprint == "fp-bound"


async def test_recent_counts_share_one_query_and_reuse_it_until_max_age(db):
    """Callers that arrive while a count runs wait for that one; a count younger than
    `max_age` (on the injected clock) is reused; `counts` always reads the store."""
    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    await put(outbox, make_alert("fp1"), ["t1", "t2"])
    queries = CountQueries(db)
    queries.hold()
    callers = [
        asyncio.create_task(outbox.recent_counts(max_age=1.0, timeout=60)) for _ in range(10)
    ]
    await asyncio.wait_for(queries.entered.wait(), 30)  # every caller has asked by now
    queries.release()
    first = {"t1": {"pending": 1}, "t2": {"pending": 1}}
    assert await asyncio.gather(*callers) == [first] * 10
    assert queries.seen == 1
    await put(outbox, make_alert("fp2"), ["t1"])
    clock.advance(0.5)
    assert await outbox.recent_counts(max_age=1.0, timeout=60) == first  # reused
    assert queries.seen == 1
    second = {"t1": {"pending": 2}, "t2": {"pending": 1}}
    assert await outbox.counts() == second  # exact: read now
    assert queries.seen == 2
    clock.advance(0.5)  # the reused count is max_age old
    assert await outbox.recent_counts(max_age=1.0, timeout=60) == second
    assert queries.seen == 3


async def test_recent_counts_that_fail_or_hang_are_not_reused(db):
    clock = FakeClock()
    outbox = Outbox(db, clock)
    await outbox.setup()
    await put(outbox, make_alert("fp1"), ["t1"])
    queries = CountQueries(db)
    queries.hold()  # the store does not answer
    waiting = [
        asyncio.create_task(outbox.recent_counts(max_age=1.0, timeout=0.2)) for _ in range(3)
    ]
    for outcome in await asyncio.gather(*waiting, return_exceptions=True):
        assert isinstance(outcome, TimeoutError)
    assert queries.seen == 1  # one query for all three, given up at its bound
    queries.release()
    assert await outbox.recent_counts(max_age=1.0, timeout=60) == {"t1": {"pending": 1}}
    assert queries.seen == 2
    fetch = db.fetch

    async def refused(sql, *args):
        if CountQueries.SQL in sql:
            raise StoreUnavailable("injected")
        return await fetch(sql, *args)

    db.fetch = refused
    clock.advance(1.0)
    with pytest.raises(StoreUnavailable):
        await outbox.recent_counts(max_age=1.0, timeout=60)
    db.fetch = fetch
    await put(outbox, make_alert("fp2"), ["t1"])
    assert await outbox.recent_counts(max_age=1.0, timeout=60) == {"t1": {"pending": 2}}
    assert queries.seen == 3
