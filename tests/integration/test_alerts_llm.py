"""LLM classification through the real openai SDK against a small OpenAI-compatible server on
127.0.0.1: good answers, timeouts, 5xx and the breaker, malformed output, the cache (memory and
Redis), secrets, the audit trail, and the webhook never waiting for the LLM."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from cutover.alerts.webhook_formats import alertmanager_fingerprint
from cutover.core.clock import FakeClock
from tests.conftest import wait_for
from tests.integration.alerts_helpers import (
    AlertsGateway,
    FakeLLM,
    am_alert,
    envelope,
    feature,
    intake_rows,
    jobs,
    llm_section,
)

REDIS_TEST_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture
async def ag(tmp_path: Path) -> AsyncIterator[AlertsGateway]:
    helper = AlertsGateway(tmp_path)
    yield helper
    await helper.close()


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    server = await FakeLLM().start()
    yield server
    server.release.set()
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def unique(name: str = "PostgresReplicationBroken") -> dict:
    """An alert no other test (or earlier run sharing Redis) has classified."""
    return {"labels": {"alertname": name, "run": uuid.uuid4().hex, "severity": "warning"}}


async def classify(http, gw, alert, force=None) -> dict:
    body = alert if force is None else {"alert": alert, "force": force}
    async with http.post(gw.url + "/classification/classify", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def audit(gw) -> list[dict]:
    db = await gw.database()
    return await db.fetch("SELECT * FROM cutover_llm_audit ORDER BY id")


async def test_good_answer_then_cache_then_force(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm)})
    alert = unique()
    data = await classify(http, gw, alert)
    assert data["result"]["severity"] == "critical"
    assert data["result"]["category"] == "database"
    assert data["result"]["source"] == "llm" and data["model"] == "small-model"
    assert data["result"]["recommendations"] == ["Check the replica", "Page the DBA"]
    assert data["cached"] is False and data["llm_outcome"] == "ok"
    sent = llm.requests[0]
    assert sent["model"] == "small-model"
    assert sent["response_format"]["type"] == "json_schema"
    schema = sent["response_format"]["json_schema"]
    assert schema["strict"] is True
    assert schema["schema"]["properties"]["severity"]["enum"] == [
        "critical", "warning", "info", "noise"
    ]  # fmt: skip
    assert set(schema["schema"]["required"]) == {
        "severity", "category", "confidence", "reasoning", "recommendations"
    }  # fmt: skip
    assert llm.headers[0]["Authorization"] == "Bearer sk-test-key-000000000000"

    again = await classify(http, gw, alert)  # a cached fingerprint makes no call
    assert again["cached"] is True and again["result"] == data["result"]
    assert llm.calls == 1
    forced = await classify(http, gw, alert, force=True)
    assert forced["cached"] is False and llm.calls == 2

    rows = await audit(gw)
    assert len(rows) == 2
    assert rows[0]["model"] == "small-model" and rows[0]["outcome"] == "ok"
    assert len(rows[0]["prompt_digest"]) == 64 and rows[0]["latency_ms"] >= 0
    assert orjson.loads(rows[0]["result"])["category"] == "database"

    async with http.get(gw.url + "/classification/stats") as resp:
        stats = await resp.json()
    assert stats["total_requests"] == 3 and stats["cache_hits"] == 1
    assert stats["cache_hit_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert stats["llm_requests"] == 2 and stats["fallback_used"] == 0
    assert stats["llm_latency_ms"]["p50"] is not None and stats["llm_latency_ms"]["p95"] is not None
    assert stats["breaker"]["state"] == "closed"
    async with http.get(gw.url + "/classification/models") as resp:
        models = await resp.json()
    assert models["default"] == "small-model" and models["server_models"] == ["small-model"]


async def test_secret_values_never_reach_the_llm(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm)})
    alert = unique()
    alert["labels"]["dsn"] = "postgres://app:hunter2@db:5432/app"
    alert["annotations"] = {"description": "rotate sk-abcdefghijklmnopqrstuvwxyz0123"}
    await classify(http, gw, alert)
    text = orjson.dumps(llm.requests[0]["messages"]).decode()
    assert "hunter2" not in text and "sk-abcdefghijklmnop" not in text
    assert "<redacted>" in text and alert["labels"]["run"] in text


async def test_slow_answer_times_out_to_rules(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm, timeout="300ms")})
    llm.mode = "slow"
    data = await classify(http, gw, unique())
    assert data["llm_outcome"] == "timeout"
    assert data["result"]["source"] == "rules" and data["result"]["severity"] == "warning"
    assert "timeout" in data["result"]["reasoning"]
    assert (await audit(gw))[0]["outcome"] == "timeout"


async def test_server_errors_open_the_breaker_then_it_recovers(ag, llm, http) -> None:
    clock = FakeClock()
    gw = await ag.start({"classification": llm_section(llm)}, clock=clock)
    llm.mode = "error"
    for _ in range(2):
        data = await classify(http, gw, unique())
        assert data["llm_outcome"] == "error" and data["result"]["source"] == "rules"
    assert llm.calls == 2
    data = await classify(http, gw, unique())  # breaker open: no call at all
    assert data["llm_outcome"] == "breaker_open" and llm.calls == 2
    async with http.get(gw.url + "/classification/stats") as resp:
        stats = await resp.json()
    assert stats["breaker"]["state"] == "open" and stats["fallbacks"]["breaker_open"] == 1
    await feature(gw).run_once()
    assert gw.metrics.registry.get_sample_value("cutover_llm_breaker_open") == 1

    clock.advance(31)  # past the reset: one probe goes through
    llm.mode = "good"
    data = await classify(http, gw, unique())
    assert data["llm_outcome"] == "ok" and llm.calls == 3
    async with http.get(gw.url + "/classification/stats") as resp:
        assert (await resp.json())["breaker"]["state"] == "closed"

    llm.mode = "error"  # a failed probe opens it again at once
    for _ in range(2):
        await classify(http, gw, unique())
    clock.advance(31)
    await classify(http, gw, unique())  # the probe fails
    calls = llm.calls
    assert (await classify(http, gw, unique()))["llm_outcome"] == "breaker_open"
    assert llm.calls == calls


async def test_bounded_retries(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm, retries=2, breaker={"failures": 10})})
    llm.mode = "error"
    data = await classify(http, gw, unique())
    assert data["llm_outcome"] == "error" and llm.calls == 3  # one call and two retries
    assert (await audit(gw))[0]["attempts"] == 3


async def test_malformed_output_falls_back_and_is_not_cached(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm)})
    llm.mode = "malformed"
    alert = unique()
    data = await classify(http, gw, alert)
    assert data["llm_outcome"] == "malformed" and data["result"]["source"] == "rules"
    llm.mode = "good"
    data = await classify(http, gw, alert)
    assert data["llm_outcome"] == "ok" and llm.calls == 2


async def test_low_confidence_falls_back(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm, min_confidence=0.8)})
    llm.answer = dict(llm.answer, confidence=0.3)
    data = await classify(http, gw, unique())
    assert data["llm_outcome"] == "low_confidence" and data["result"]["source"] == "rules"
    row = (await audit(gw))[0]
    assert row["outcome"] == "low_confidence" and orjson.loads(row["result"])["confidence"] == 0.3


async def test_calls_per_minute_budget(ag, llm, http) -> None:
    clock = FakeClock()
    gw = await ag.start({"classification": llm_section(llm, calls_per_minute=1)}, clock=clock)
    assert (await classify(http, gw, unique()))["llm_outcome"] == "ok"
    assert (await classify(http, gw, unique()))["llm_outcome"] == "over_budget"
    assert llm.calls == 1
    clock.advance(61)
    assert (await classify(http, gw, unique()))["llm_outcome"] == "ok"


async def test_webhook_never_waits_for_the_llm(ag, llm, http) -> None:
    routing = {"targets": ["slack"], "routes": [
        {"matchers": ['classification.category="database"'], "targets": ["dba"]}]}  # fmt: skip
    gw = await ag.start(
        {"classification": llm_section(llm), "routing": routing, "forward_to_route": "default"}
    )
    llm.mode = "hold"
    run = uuid.uuid4().hex
    firing = am_alert("ReplicationBroken", run=run)
    async with http.post(gw.url + "/webhook/proxy", json=envelope(firing)) as resp:
        data = await resp.json()
    # Answered while the LLM has not answered yet: stored, history copy queued.
    assert resp.status == 200 and data["alerts"][0]["result"] == "classifying"
    fp = data["alerts"][0]["fingerprint"]
    assert await jobs(gw) == [("backend:default", fp, "firing")]
    # Its resolve queues behind it, so that targets never see resolve before firing.
    resolved = am_alert("ReplicationBroken", status="resolved", run=run)
    async with http.post(gw.url + "/webhook/proxy", json=envelope(resolved)) as resp:
        assert (await resp.json())["alerts"][0]["result"] == "classifying"
    await wait_for(lambda: llm.calls >= 1)
    llm.release.set()
    llm.mode = "good"

    async def settled() -> bool:
        return all(r["state"] == "queued" for r in await intake_rows(gw))

    for _ in range(200):
        if await settled():
            break
        await feature(gw).run_once()
    assert await settled()
    published = [(t, s) for t, f, s in await jobs(gw) if f == fp and not t.startswith("backend:")]
    assert published == [("dba", "firing"), ("dba", "resolved")]
    stored = orjson.loads((await intake_rows(gw))[0]["alert"])
    assert stored["classification"]["source"] == "llm"
    assert stored["classification"]["cached"] is False  # asked for this alert

    # A cached fingerprint and status makes no call: classified inline.
    calls = llm.calls
    again = am_alert("ReplicationBroken", run=run, starts_at="2026-11-22T00:00:00Z")
    async with http.post(gw.url + "/webhook/proxy", json=envelope(again)) as resp:
        item = (await resp.json())["alerts"][0]
    assert item["result"] == "queued" and item["classification"]["source"] == "llm"
    assert llm.calls == calls
    # ... and the messages will say so (rules vs LLM vs cache)
    cached = [orjson.loads(r["alert"])["classification"]["cached"] for r in await intake_rows(gw)]
    assert cached.count(True) == 1  # the one classified inline


async def test_transparent_with_recommendations_attaches_llm_only(ag, llm, http) -> None:
    gw = await ag.start(
        {
            "classification": llm_section(llm),
            "enrichment": "transparent_with_recommendations",
            "routing": {"targets": ["a"], "routes": [{"matchers": ['x="1"'], "targets": ["b"]}]},
        }
    )
    async with http.post(gw.url + "/webhook/proxy", json=envelope(am_alert("Y", run="t"))) as resp:
        assert (await resp.json())["alerts"][0]["result"] == "classifying"
    for _ in range(200):
        rows = await intake_rows(gw)
        if rows[0]["state"] == "queued":
            break
        await feature(gw).run_once()
    stored = orjson.loads(rows[0]["alert"])
    assert stored["classification"]["recommendations"] == ["Check the replica", "Page the DBA"]
    assert sorted(t for t, _, _ in await jobs(gw)) == ["a", "b"]


async def test_redis_shares_cache_and_mode(ag, llm, http) -> None:
    r = aioredis.Redis.from_url(REDIS_TEST_URL)
    try:
        await r.ping()
    except Exception as exc:  # pragma: no cover - Redis is required here and in CI
        pytest.fail(f"Redis at {REDIS_TEST_URL} is required: {exc}")
    alert = unique()
    fp = alertmanager_fingerprint(alert["labels"])
    try:
        section = {"classification": llm_section(llm)}
        gw1 = await ag.start(section, redis=REDIS_TEST_URL)
        gw2 = await ag.start(section, redis=REDIS_TEST_URL)
        first = await classify(http, gw1, alert)
        assert first["fingerprint"] == fp
        assert await r.exists(f"cutover:classification:{fp}:firing")
        assert not await r.exists(f"classification:{fp}")  # the originals' key is never written
        ttl = await r.ttl(f"cutover:classification:{fp}:firing")
        assert 3500 < ttl <= 3600
        second = await classify(http, gw2, alert)  # another replica: from Redis, no call
        assert second["cached"] is True and llm.calls == 1
        async with http.get(gw1.url + "/classification/stats") as resp:
            assert (await resp.json())["budget"]["shared"] is True  # cutover:llm:budget

        async with http.post(gw1.url + "/enrichment/mode", json={"mode": "transparent"}) as resp:
            assert await resp.json() == {"mode": "transparent", "source": "redis"}
        assert orjson.loads(await r.get("enrichment:mode")) == {"mode": "transparent"}
        assert await r.ttl("enrichment:mode") == -1  # no expiry
        async with http.get(gw2.url + "/enrichment/mode") as resp:
            assert await resp.json() == {"mode": "transparent", "source": "redis"}
        await r.set("enrichment:mode", '{"mode": "transparent_with_recommendations"}')
        async with http.get(gw2.url + "/enrichment/mode") as resp:
            assert (await resp.json())["mode"] == "transparent_with_recommendations"
        await wait_for(lambda: feature(gw1).mode == "transparent_with_recommendations")
    finally:
        await r.delete("enrichment:mode", f"cutover:classification:{fp}:firing")
        await r.aclose()


async def test_redis_down_fails_static(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm)}, redis="redis://127.0.0.1:1/0")
    alert = unique()
    assert (await classify(http, gw, alert))["llm_outcome"] == "ok"
    assert (await classify(http, gw, alert))["cached"] is True  # memory still works
    async with http.get(gw.url + "/classification/stats") as resp:
        budget = (await resp.json())["budget"]
    assert budget["shared"] is False and budget["per_process_limit"] == 100  # 1 worker
    async with http.get(gw.url + "/enrichment/mode") as resp:
        assert (await resp.json())["mode"] == "enriched"
    async with http.post(gw.url + "/enrichment/mode", json={"mode": "transparent"}) as resp:
        assert resp.status == 503
    async with http.get(gw.url + "/enrichment/mode") as resp:
        assert (await resp.json())["mode"] == "enriched"  # unchanged, not half-applied


async def test_breaker_open_and_over_budget_are_audited_and_say_why(ag, llm, http) -> None:
    clock = FakeClock()
    section = llm_section(llm, calls_per_minute=3, breaker={"failures": 2, "reset": "30s"})
    gw = await ag.start({"classification": section}, clock=clock)
    llm.mode = "error"
    for _ in range(2):
        await classify(http, gw, unique())  # two failed calls open the breaker
    skipped = unique()
    data = await classify(http, gw, skipped)
    assert data["llm_outcome"] == "breaker_open" and llm.calls == 2
    reasoning = data["result"]["reasoning"]
    assert "rules (LLM breaker_open: the circuit breaker is open (for 30s after failures))" in (
        reasoning
    )
    rows = await audit(gw)
    assert [r["outcome"] for r in rows] == ["error", "error", "breaker_open"]
    row = rows[-1]
    assert row["fingerprint"] == data["fingerprint"] and row["status"] == "firing"
    assert row["attempts"] == 0 and row["prompt_digest"] == "" and row["latency_ms"] == 0
    assert row["model"] == "small-model" and row["result"] is None
    assert row["error"] == "the circuit breaker is open (for 30s after failures)"

    clock.advance(31)  # the probe succeeds; then the third call of the minute is the last
    llm.mode = "good"
    assert (await classify(http, gw, unique()))["llm_outcome"] == "ok"
    data = await classify(http, gw, unique())
    assert data["llm_outcome"] == "over_budget" and llm.calls == 3
    assert (
        "rules (LLM over_budget: over the budget of 3 calls a minute)"
        in (data["result"]["reasoning"])
    )
    rows = await audit(gw)
    assert [r["outcome"] for r in rows][-2:] == ["ok", "over_budget"]
    assert rows[-1]["attempts"] == 0 and rows[-1]["error"] == "over the budget of 3 calls a minute"


async def test_an_exact_duplicate_webhook_is_not_a_classification_request(ag, llm, http) -> None:
    gw = await ag.start({"classification": llm_section(llm)})
    alert = unique()
    await classify(http, gw, alert)  # cached now: the webhook is classified inline

    async def stats() -> dict:
        async with http.get(gw.url + "/classification/stats") as resp:
            return await resp.json()

    before = await stats()
    payload = envelope({**am_alert("X"), "labels": alert["labels"]})
    for result in ("queued", "duplicate"):
        async with http.post(gw.url + "/webhook/proxy", json=payload) as resp:
            assert (await resp.json())["alerts"][0]["result"] == result
    after = await stats()
    assert after["total_requests"] - before["total_requests"] == 1  # the first only
    assert after["cache_hits"] - before["cache_hits"] == 1
    inline = gw.metrics.registry.get_sample_value(
        "cutover_alert_classifications_total", {"source": "llm", "outcome": "inline"}
    )
    assert inline == 1


async def test_an_exact_duplicate_webhook_is_not_a_rules_classification(ag, http) -> None:
    gw = await ag.start({})
    payload = envelope(am_alert("Y", run=uuid.uuid4().hex))
    for result in ("queued", "duplicate", "duplicate"):
        async with http.post(gw.url + "/webhook/proxy", json=payload) as resp:
            assert (await resp.json())["alerts"][0]["result"] == result
    async with http.get(gw.url + "/classification/stats") as resp:
        stats = await resp.json()
    assert stats["total_requests"] == 1 and stats["rules_only"] == 1
