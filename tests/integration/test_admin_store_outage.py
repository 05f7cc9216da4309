"""Admin writes while PostgreSQL does not answer (DESIGN.md, State; issue 13, item 8).

The weights live in Redis; the store only keeps the audit events and a copy of the weights.
A store that hangs must not hold the admin answer: the change is in force at once, its event
waits in memory and is written once the store answers again. Without Redis the store *is* the
shared state: then a write answers 503 promptly instead of hanging.

"Hangs" is a real PostgreSQL behind a relay that stops passing bytes (`TcpRelay.pause`): from
the start (a listener that accepts and never answers) or in the middle of a run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from cutover.canary.feature import CanaryFeature
from cutover.proxy.server import Gateway
from tests.conftest import wait_for
from tests.integration.alerts_helpers import PG_URL, TcpRelay
from tests.integration.canary_helpers import (
    FlakyBackend,
    admin,
    canary_config,
    feature,
    start,
    started,
    weights,
)
from tests.quiescence import expect_held

REDIS = "redis://127.0.0.1:6379/0"
# Today's store timeouts are 5 s a call (two calls on the path: 10 s), or none at all for a
# query on an open connection. An answer must come well before that; this is a deadline for a
# hang, not a measurement.
PROMPT = 5.0


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"cutover:test-{uuid.uuid4().hex[:10]}:"
    yield p
    r = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in r.scan_iter(match=p + "*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = f"o_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_URL)
    await conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()


@pytest.fixture
async def relay() -> AsyncIterator[TcpRelay]:
    r = await TcpRelay().start()
    yield r
    await r.stop()


async def _promptly(gw: Gateway, method: str, path: str, body: object = None):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(PROMPT):
        return await admin(gw, method, path, body)


async def _stored_events(schema: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(PG_URL)
    try:
        rows = await conn.fetch(
            f'SELECT kind, actor FROM "{schema}".cutover_canary_events ORDER BY id'
        )
    finally:
        await conn.close()
    return [(r["kind"], r["actor"]) for r in rows]


async def test_weights_and_mode_answer_while_postgres_never_answers(
    tmp_path: Path, prefix: str, relay: TcpRelay
) -> None:
    relay.pause()  # accepts connections, never answers one
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(
            go,
            py,
            tmp_path,
            canary={"redis_prefix": prefix},
            redis=REDIS,
            db=f"postgresql://postgres@127.0.0.1:{relay.port}/test",
        )
        gw = await start(data)
        f: CanaryFeature = feature(gw)
        try:
            await wait_for(lambda: f.shared.connected)
            status, body = await _promptly(
                gw, "PUT", "/admin/routes/default/weights", {"go": 20, "python": 80}
            )
            assert status == 200, body
            assert weights(gw) == {"go": 20, "python": 80}  # in force here, at once
            for command in ("pause", "resume", "rollback"):
                status, body = await _promptly(gw, "POST", f"/admin/{command}", {"reason": "t"})
                assert status == 200, body
            assert weights(gw) == {"go": 0, "python": 100}
            stored = await f.shared.get("default")  # and in the shared state (Redis)
            assert stored is not None and stored.weight_of("go") == 0 and stored.latched
            # Nothing was lost: the four events wait for the store, and say so.
            async with asyncio.timeout(PROMPT * 2):
                status, body = await admin(gw, "GET", "/admin/events")
            assert status == 503 and body["error"]["code"] == "store_unavailable"
            assert body["error"]["waiting"] == 4
            _, ready = gw.readiness()
            assert ready["canary"]["events"]["waiting"] == 4
            await wait_for(lambda: gw.readiness()[1]["canary"]["events"]["retrying"])
            expect_held(
                gw,
                {"canary.events.waiting": 4},
                "the store never answers: the events wait; the close logs them in full",
                once_closed={},
            )
        finally:
            await gw.close()


async def test_events_written_during_a_hang_reach_postgres_once_it_answers(
    tmp_path: Path, prefix: str, relay: TcpRelay, schema: str
) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        url = f"postgresql://postgres@127.0.0.1:{relay.port}/test?search_path={schema}"
        data = canary_config(go, py, tmp_path, canary={"redis_prefix": prefix}, redis=REDIS, db=url)
        gw = await start(data)
        f = feature(gw)
        try:
            await wait_for(lambda: f.shared.connected)
            status, _ = await _promptly(
                gw, "PUT", "/admin/routes/default/weights", {"go": 10, "python": 90}
            )
            assert status == 200
            _, body = await admin(gw, "GET", "/admin/events")  # the store works: stored
            assert [e["kind"] for e in body["events"]] == ["weights"]

            relay.pause()  # PostgreSQL stops answering, on open connections and new ones
            status, body = await _promptly(
                gw, "PUT", "/admin/routes/default/weights", {"go": 30, "python": 70}
            )
            assert status == 200, body
            assert weights(gw) == {"go": 30, "python": 70}
            status, body = await _promptly(gw, "POST", "/admin/rollback", {"reason": "hung"})
            assert status == 200, body
            assert weights(gw) == {"go": 0, "python": 100}
            assert f.event_log().waiting >= 1

            relay.resume()
            await wait_for(lambda: f.event_log().waiting == 0, deadline=60)
            assert await _stored_events(schema) == [
                ("weights", "operator:admin"),
                ("weights", "operator:admin"),
                ("rollback", "operator:admin"),
            ]
            assert f.event_log().dropped == 0
        finally:
            relay.resume()
            await gw.close()


async def test_without_redis_a_hung_store_answers_503_promptly(
    tmp_path: Path, relay: TcpRelay, schema: str
) -> None:
    """Without Redis the store is the shared state: a write cannot be made, and says so fast;
    the weights in force stay the last known ones."""
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        url = f"postgresql://postgres@127.0.0.1:{relay.port}/test?search_path={schema}"
        gw = await start(canary_config(go, py, tmp_path, db=url))
        f = feature(gw)
        try:
            status, _ = await _promptly(
                gw, "PUT", "/admin/routes/default/weights", {"go": 10, "python": 90}
            )
            assert status == 200 and f.shared.connected
            relay.pause()
            status, body = await _promptly(
                gw, "PUT", "/admin/routes/default/weights", {"go": 40, "python": 60}
            )
            assert status == 503 and body["error"]["code"] == "shared_state_unavailable"
            assert weights(gw) == {"go": 10, "python": 90}
            assert not f.shared.connected
            relay.resume()
            await wait_for(lambda: f.shared.connected, deadline=30)
            status, _ = await _promptly(
                gw, "PUT", "/admin/routes/default/weights", {"go": 40, "python": 60}
            )
            assert status == 200 and weights(gw) == {"go": 40, "python": 60}
        finally:
            relay.resume()
            await gw.close()
