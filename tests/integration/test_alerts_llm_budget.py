"""What classifiers (workers, replicas) share through a real Redis: the LLM calls-per-minute
budget (one token bucket; each worker's share while Redis is unreachable) and the circuit
breaker (one that opens stops the others calling a server that is down)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import MappingProxyType

import pytest
import redis.asyncio as aioredis

from cutover.alerts.config import BreakerConfig, ClassificationConfig, OpenAIConfig
from cutover.alerts.llm import Classifier
from cutover.alerts.model import Alert
from cutover.core.clock import FakeClock
from tests.conftest import free_port
from tests.integration.alerts_helpers import FakeLLM

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    server = await FakeLLM().start()
    yield server
    server.release.set()
    await server.stop()


@pytest.fixture
async def key() -> AsyncIterator[str]:
    value = f"cutover:test:{uuid.uuid4().hex[:8]}:llm:budget"
    yield value
    client = aioredis.Redis.from_url(REDIS)
    await client.delete(value)
    await client.aclose()


def config(llm: FakeLLM, calls_per_minute: int, failures: int = 10) -> ClassificationConfig:
    return ClassificationConfig(
        engine="openai",
        openai=OpenAIConfig(
            base_url=llm.url,
            model="small-model",
            api_key="sk-test-key-000000000000",
            retries=0,
            retry_backoff=0,
            breaker=BreakerConfig(failures=failures, reset=30.0),
            calls_per_minute=calls_per_minute,
            cache_ttl=0,  # every alert asks: nothing answers from a cache
        ),
    )


def alert() -> Alert:
    labels = {"alertname": "PostgresReplicationBroken", "severity": "warning"}
    return Alert(uuid.uuid4().hex[:16], "firing", MappingProxyType(labels))


def redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


async def test_two_classifiers_share_one_redis_budget(llm, key) -> None:
    # Two replicas (one worker each): on their own they would make 2 calls each.
    clients = [redis_client(REDIS) for _ in range(2)]
    workers = [Classifier(config(llm, 2), FakeClock(), redis=c, budget_key=key) for c in clients]
    try:
        results = [await workers[i % 2].classify(alert()) for i in range(6)]
        outcomes = [r.llm_outcome for r in results]
        # 2 a minute: a token every 30 s, so none comes back while these 6 are asked.
        assert llm.calls == 2
        assert outcomes.count("ok") == 2 and outcomes.count("over_budget") == 4
        assert all(
            r.classification.source == "rules" for r in results if r.llm_outcome == "over_budget"
        )
        for w in workers:
            budget = w.snapshot()["budget"]
            assert budget["shared"] is True and budget["calls_per_minute"] == 2
        assert sum(w.snapshot()["budget"]["used"] for w in workers) == 2
        assert 0 < await clients[0].pttl(key) <= 61_000  # gone a minute after the last call
    finally:
        for w in workers:
            await w.close()
        for c in clients:
            await c.aclose()


async def test_redis_unreachable_each_worker_keeps_to_its_share(llm) -> None:
    clock = FakeClock()
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    clients = [redis_client(url) for _ in range(2)]
    workers = [Classifier(config(llm, 4), clock, redis=c, workers=2) for c in clients]
    try:
        outcomes = [(await workers[i % 2].classify(alert())).llm_outcome for i in range(6)]
        assert llm.calls == 4  # 4 a minute split between 2 workers: 2 each
        assert outcomes == ["ok", "ok", "ok", "ok", "over_budget", "over_budget"]
        for w in workers:
            budget = w.snapshot()["budget"]
            assert budget["shared"] is False and budget["per_process_limit"] == 2
            assert budget["used"] == 2
        clock.advance(61)  # a minute on: each has its share again (Redis still down)
        assert (await workers[0].classify(alert())).llm_outcome == "ok"
        assert llm.calls == 5
        assert workers[0].snapshot()["budget"]["shared"] is False
    finally:
        for w in workers:
            await w.close()
        for c in clients:
            await c.aclose()


async def test_without_redis_the_budget_is_split_among_the_hosts_workers(llm) -> None:
    clock = FakeClock()
    one = Classifier(config(llm, 3), clock, workers=2)  # 3 // 2: one call a minute each
    try:
        outcomes = [(await one.classify(alert())).llm_outcome for _ in range(2)]
        assert outcomes == ["ok", "over_budget"] and llm.calls == 1
        budget = one.snapshot()["budget"]
        assert budget == {
            "calls_per_minute": 3,
            "used": 1,
            "shared": False,
            "per_process_limit": 1,
        }
    finally:
        await one.close()


async def test_a_breaker_that_opens_stops_every_classifier(llm, key) -> None:
    llm.mode = "error"
    breaker_key = key.replace(":budget", ":breaker")
    clock = FakeClock()
    clients = [redis_client(REDIS) for _ in range(2)]
    workers = [
        Classifier(
            config(llm, 600, failures=3), clock, redis=c, budget_key=key, breaker_key=breaker_key
        )
        for c in clients
    ]
    try:
        first = [(await workers[0].classify(alert())).llm_outcome for _ in range(4)]
        assert first == ["error", "error", "error", "breaker_open"]
        assert llm.calls == 3
        assert 0 < await clients[0].pttl(breaker_key) <= 30_000  # expires with the reset
        # the other worker never saw a failure, yet it does not call the server either
        second = [(await workers[1].classify(alert())).llm_outcome for _ in range(5)]
        assert second == ["breaker_open"] * 5
        assert llm.calls == 3
        assert workers[1].snapshot()["breaker"]["state"] == "closed"  # its own never opened
        assert workers[1].snapshot()["breaker"]["open_elsewhere_skips"] == 5

        # after the reset the first worker's probe gets through and clears it for everyone
        llm.mode = "good"
        clock.advance(31)
        assert (await workers[0].classify(alert())).llm_outcome == "ok"
        assert await clients[0].exists(breaker_key) == 0
        assert (await workers[1].classify(alert())).llm_outcome == "ok"
        assert llm.calls == 5
    finally:
        for w in workers:
            await w.close()
        await clients[0].delete(breaker_key)
        for c in clients:
            await c.aclose()
