"""Rate limits, 429 holds and breakers shared through a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from cutover.core.clock import Clock
from cutover.publishing.shared_flow import SharedFlow
from cutover.publishing.targets import RateLimit
from tests.conftest import free_port, wait_for
from tests.integration.publishing_fakes import FakePagerDuty
from tests.integration.publishing_helpers import config, engine, enqueue, make_alert, start

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix():
    value = f"cutover:test:{uuid.uuid4().hex[:8]}:"
    yield value
    client = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in client.scan_iter(match=value + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_token_bucket_and_hold_are_shared(prefix):
    one, two = SharedFlow(REDIS, Clock(), prefix), SharedFlow(REDIS, Clock(), prefix)
    try:
        slow = RateLimit(1 / 3600, 3)  # one token an hour: the burst is all there is
        assert [await one.take("t", slow) for _ in range(2)] == [0.0, 0.0]
        assert await two.take("t", slow) == 0.0
        assert await two.take("t", slow) > 3000  # the other instance used the burst up
        assert await one.take("t", slow) > 3000
        assert await one.take("other", slow) == 0.0  # per target
        await one.hold("h", 120)
        await two.hold("h", 5)  # never shortens a hold
        assert 100 < await two.take("h", None) <= 120
        assert await one.take("free", None) == 0.0  # unlimited and not held
    finally:
        await one.close()
        await two.close()


async def test_redis_down_means_per_process_limits():
    flow = SharedFlow(f"redis://127.0.0.1:{free_port()}/0", Clock())
    try:
        assert await flow.take("t", RateLimit(1.0, 1)) is None
        assert flow.available is False
        assert await flow.take("t", RateLimit(1.0, 1)) is None  # not retried at once
    finally:
        await flow.close()


async def test_a_429_on_one_gateway_holds_the_target_on_another(tmp_path, monkeypatch):
    name = f"pd{uuid.uuid4().hex[:8]}"
    pd = await FakePagerDuty().start()
    pd.script = [(429, "120")]
    target = {"name": name, "type": "pagerduty", "url": pd.url + "/v2/enqueue",
              "routing_key": pd.routing_key}  # fmt: skip
    gateways = []
    client = aioredis.Redis.from_url(REDIS)
    try:
        for side in ("a", "b"):
            (tmp_path / side).mkdir()
            data = config(tmp_path / side, {"targets": [target]}, redis=REDIS)
            gateways.append(await start(data))
        first, second = gateways
        await enqueue(first, make_alert("fp-r1"), [name])
        await wait_for(lambda: len(pd.requests) == 1)
        hold_key = f"cutover:publishing:hold:{name}"
        for _ in range(100):
            if await client.pttl(hold_key) > 0:
                break
            await _sleep(0.05)
        assert 100_000 < await client.pttl(hold_key) <= 120_000
        await enqueue(second, make_alert("fp-r2"), [name])
        eng = engine(second)
        for _ in range(20):
            await eng._tick()
            await _sleep(0.01)
        assert len(pd.requests) == 1  # the second gateway held back too
        assert eng.gates[name].held_until > 0
    finally:
        for gw in gateways:
            await gw.close()
        await client.delete(f"cutover:publishing:hold:{name}", f"cutover:publishing:rate:{name}")
        await client.aclose()
        await pd.stop()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
