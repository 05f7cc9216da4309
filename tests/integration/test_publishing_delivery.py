"""Durable delivery: retries, Retry-After, breaker, DLQ and replay, order, shared outbox."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import asyncpg
import pytest

from cutover.core.clock import FakeClock
from cutover.publishing.outbox import Outbox
from tests.conftest import wait_for
from tests.integration.publishing_fakes import FakePagerDuty, FakeWebhook
from tests.integration.publishing_helpers import config, engine, enqueue, make_alert, pending

PG = "postgresql://postgres@127.0.0.1:5432/test"
FAST = {"backoff": {"base": "20ms", "cap": "100ms"}, "poll_interval": "50ms"}


def pd_target(pd: FakePagerDuty, **extra):
    return {"name": "pd", "type": "pagerduty", "url": pd.url + "/v2/enqueue",
            "routing_key": pd.routing_key, **extra}  # fmt: skip


async def test_target_down_then_up_gets_each_alert_exactly_once(tmp_path, services, gateways):
    pd = await services(FakePagerDuty)
    hook = await services(FakeWebhook)
    pd.down = hook.down = True
    targets = [
        pd_target(pd, rate_limit="off"),
        {"name": "wh", "type": "webhook", "url": hook.url + "/hook"},
    ]
    delivery = {**FAST, "max_attempts": 1000, "breaker": {"failures": 5, "open_for": "100ms"}}
    data = config(tmp_path, {"targets": targets, "delivery": delivery})
    gw = await gateways(data)
    for i in range(5):
        await enqueue(gw, make_alert(f"fp-down-{i}"), ["pd", "wh"])
    await wait_for(lambda: len(pd.requests) >= 10 and len(hook.requests) >= 10)
    pd.down = hook.down = False
    await wait_for(lambda: len(pd.accepted) == 5 and len(hook.accepted) == 5)
    assert sorted(pd.triggers.values()) == [1] * 5
    assert sorted(hook.keys.values()) == [1] * 5
    await wait_for_empty(gw)
    assert pd.problems == [] and hook.problems == []


async def wait_for_empty(gw) -> None:
    for _ in range(200):
        if not any(c.get("pending") for c in (await pending(gw)).values()):
            return
        await _sleep(0.05)
    raise AssertionError(f"jobs still pending: {await pending(gw)}")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_429_retry_after_is_honoured(tmp_path, services, gateways):
    clock = FakeClock()
    pd = await services(FakePagerDuty)
    pd.script = [(429, "120")]
    gw = await gateways(config(tmp_path, {"targets": [pd_target(pd)]}), clock)
    [job_id] = await enqueue(gw, make_alert("fp-429"), ["pd"])
    await wait_for(lambda: len(pd.requests) == 1)
    outbox = Outbox(await gw.database(), clock)

    async def job():
        return await outbox.get(job_id)

    for _ in range(100):
        j = await job()
        if j is not None and j.last_error:
            break
        await _sleep(0.05)
    assert j.attempts == 0  # a 429 is flow control, not a failed attempt
    assert j.next_at == pytest.approx(clock.now() + 120, abs=0.01)
    eng = engine(gw)
    clock.advance(119)
    assert await eng._tick() == 0  # not yet
    assert len(pd.requests) == 1
    clock.advance(2)
    eng.wake()
    await wait_for(lambda: len(pd.accepted) == 1)
    assert pd.problems == []


async def test_4xx_is_dead_lettered_with_the_reason_and_can_be_replayed(
    tmp_path, services, gateways
):
    hook = await services(FakeWebhook)
    hook.script = [400]
    target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook"}
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": FAST}))
    await enqueue(gw, make_alert("fp-400"), ["wh"])
    async with aiohttp.ClientSession() as http:
        dead = []
        for _ in range(100):
            async with http.get(gw.url + "/publishing/dlq") as resp:
                dead = (await resp.json())["dead_letters"]
            if dead:
                break
            await _sleep(0.05)
        assert len(dead) == 1 and len(hook.requests) == 1  # not retried
        assert dead[0]["fingerprint"] == "fp-400" and "HTTP 400" in dead[0]["last_error"]
        async with http.post(gw.url + f"/publishing/dlq/{dead[0]['id']}/replay") as resp:
            assert resp.status == 200
        async with http.post(gw.url + "/publishing/dlq/999999/replay") as resp:
            assert resp.status == 404
        async with http.post(gw.url + "/publishing/dlq/abc/replay") as resp:
            assert resp.status == 400 and "id" in (await resp.json())["error"]["message"]
    await wait_for(lambda: len(hook.accepted) == 1)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/publishing/stats") as resp:
        stats = {t["name"]: t for t in (await resp.json())["targets"]}
    assert stats["wh"]["dead_lettered"] == 1 and stats["wh"]["sent"] == 1


async def test_max_attempts_then_dead_letter_with_last_error(tmp_path, services, gateways):
    hook = await services(FakeWebhook)
    hook.down = True
    target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook"}
    delivery = {**FAST, "max_attempts": 3}
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": delivery}))
    await enqueue(gw, make_alert("fp-max"), ["wh"])
    outbox = Outbox(await gw.database(), gw.clock)
    dead = []
    for _ in range(200):
        dead = await outbox.dead_letters()
        if dead:
            break
        await _sleep(0.05)
    assert len(dead) == 1 and dead[0].attempts == 3
    assert dead[0].last_error.startswith("gave up after 3 attempts: HTTP 503")
    assert len(hook.requests) == 3


async def test_max_age_dead_letters(tmp_path, services, gateways):
    clock = FakeClock()
    hook = await services(FakeWebhook)
    hook.down = True
    target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook"}
    delivery = {"max_age": "1h", "max_attempts": 1000}
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": delivery}), clock)
    await enqueue(gw, make_alert("fp-age"), ["wh"])
    await wait_for(lambda: len(hook.requests) == 1)
    clock.advance(7200)
    engine(gw).wake()
    outbox = Outbox(await gw.database(), clock)
    for _ in range(100):
        if await outbox.dead_letters():
            break
        await _sleep(0.05)
    [dead] = await outbox.dead_letters()
    assert "gave up after 2 attempts" in dead.last_error


async def test_circuit_breaker_opens_then_a_probe_closes_it(tmp_path, services, gateways):
    clock = FakeClock()
    hook = await services(FakeWebhook)
    hook.down = True
    target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook"}
    delivery = {"breaker": {"failures": 3, "open_for": "30s"}, "max_attempts": 100,
                "backoff": {"base": "1s", "cap": "1s"}}  # fmt: skip
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": delivery}), clock)
    eng = engine(gw)
    await enqueue(gw, make_alert("fp-cb"), ["wh"])
    for _ in range(300):
        if len(hook.requests) >= 3:
            break
        clock.advance(1.5)
        eng.wake()
        await _sleep(0.02)
    assert len(hook.requests) == 3
    assert eng.breaker_state("wh") == "open"
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/publishing/targets") as resp:
        [info] = await resp.json()
    assert info["breaker"] == "open" and info["health"] == "unhealthy"
    clock.advance(5)
    assert await eng._tick() == 0  # open: the due job is not even claimed
    assert len(hook.requests) == 3
    hook.down = False
    clock.advance(30)
    eng.wake()
    await wait_for(lambda: len(hook.accepted) == 1)
    await wait_for(lambda: eng.breaker_state("wh") == "closed")


async def test_a_resolve_never_overtakes_its_trigger(tmp_path, services, gateways):
    pd = await services(FakePagerDuty)
    pd.script = [503, 503]
    gw = await gateways(config(tmp_path, {"targets": [pd_target(pd)], "delivery": FAST}))
    await enqueue(gw, make_alert("fp-order"), ["pd"])
    await enqueue(gw, make_alert("fp-order", "resolved"), ["pd"])
    await wait_for(lambda: len(pd.accepted) == 2)
    assert [e["event_action"] for e in pd.accepted] == ["trigger", "resolve"]
    assert pd.open == {}


async def test_unknown_target_is_held_not_lost(tmp_path, services, gateways):
    clock = FakeClock()
    hook = await services(FakeWebhook)
    target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook", "enabled": False}
    gw = await gateways(config(tmp_path, {"targets": [target]}), clock)
    ids = await enqueue(gw, make_alert("fp-held"), ["wh", "ghost"])
    outbox = Outbox(await gw.database(), clock)
    for _ in range(100):
        jobs = [await outbox.get(i) for i in ids]
        if all(j is not None and j.last_error for j in jobs):
            break
        await _sleep(0.05)
    assert [j.last_error for j in jobs] == [
        "target wh is disabled",
        "target ghost is not configured",
    ]
    assert all(j.state == "pending" and j.attempts == 0 for j in jobs)
    assert hook.requests == []


async def test_two_gateways_share_one_postgres_outbox(tmp_path, services, gateways):
    schema = f"pub_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        hook = await services(FakeWebhook)
        target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook"}
        data = config(tmp_path, {"targets": [target], "delivery": FAST})
        data["storage"] = f"{PG}?search_path={schema}"
        first = await gateways(data)
        second = await gateways(data)
        for i in range(40):
            await enqueue(first if i % 2 else second, make_alert(f"fp-pg-{i}"), ["wh"])
        await wait_for(lambda: len(hook.accepted) == 40)
        assert sorted(hook.keys.values()) == [1] * 40
        # A delivery is counted once its answer is read, just after the receiver has it.
        await wait_for(
            lambda: sum(engine(gw).gates["wh"].stats.sent for gw in (first, second)) == 40
        )
        await wait_for_empty(first)
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def test_a_claim_waits_for_free_slots_only_briefly(tmp_path, services, gateways):
    """With 7 of 8 slots held by deliveries that do not finish, the engine may wait a little
    for more slots before claiming (a claim per freed slot is the cost it avoids), but never
    for those deliveries: a job for another target is still delivered meanwhile."""
    slow = await services(FakeWebhook)
    fast = await services(FakeWebhook)
    slow.hold = asyncio.Event()
    targets = [
        {"name": "slow", "type": "webhook", "url": slow.url + "/hook", "rate_limit": "off"},
        {"name": "fast", "type": "webhook", "url": fast.url + "/hook", "rate_limit": "off"},
    ]
    delivery = {**FAST, "workers": 8, "concurrency": 8}
    gw = await gateways(config(tmp_path, {"targets": targets, "delivery": delivery}))
    for i in range(7):
        await enqueue(gw, make_alert(f"fp-held-{i}"), ["slow"])
    await wait_for(lambda: len(slow.requests) == 7)
    eng = engine(gw)
    assert eng.running == 7  # one slot free: fewer than a quarter of the 8
    await enqueue(gw, make_alert("fp-through"), ["fast"])
    await wait_for(lambda: len(fast.accepted) == 1)
    assert len(slow.accepted) == 0 and eng.running == 7
    slow.hold.set()
    await wait_for(lambda: len(slow.accepted) == 7)
    assert slow.problems == [] and fast.problems == []
