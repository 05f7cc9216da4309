"""The outbox on both stores: claim with a lease, order per fingerprint, DLQ, refs."""

from __future__ import annotations

import asyncio

from proxy.clock import FakeClock
from publishing.outbox import Outbox, alert_from_json, alert_to_json
from tests.integration.publishing_helpers import make_alert

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
