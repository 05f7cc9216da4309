"""One truth for all workers and replicas: the store (no Redis), Redis, restarts, outages.

"Workers" are two gateways sharing one SQLite file; "replicas" are two gateways with their own
stores sharing a Redis (127.0.0.1:6379, a unique key prefix per test, cleaned up after).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from cutover.core.clock import FakeClock
from tests.conftest import free_port, wait_for
from tests.integration.canary_helpers import (
    FlakyBackend,
    admin,
    canary_config,
    feature,
    start,
    started,
    traffic,
    weights,
)

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # API times: RFC 3339 in UTC

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"cutover:test-{uuid.uuid4().hex[:10]}:"
    yield p
    r = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in r.scan_iter(match=p + "*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


async def _timed_change(gw_from, gw_to, body: dict[str, int]) -> float:
    started_at = time.monotonic()
    status, _ = await admin(gw_from, "PUT", "/admin/routes/default/weights", body)
    assert status == 200
    await wait_for(lambda: weights(gw_to) == body, deadline=10.0, interval=0.01)
    return time.monotonic() - started_at


async def test_workers_sharing_the_store_agree(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(go, py, tmp_path)
        clock = FakeClock()
        a, b = await start(data, clock), await start(data, clock)
        try:
            elapsed = await _timed_change(a, b, {"go": 1, "python": 99})
            print(f"store: change seen by the other worker after {elapsed * 1000:.0f} ms")
            status, _ = await admin(b, "POST", "/admin/rollback")
            assert status == 200
            await wait_for(lambda: weights(a) == {"go": 0, "python": 100})
            assert set(await traffic(a, 20, users=True)) == {"python"}
            # both workers see one history
            _, body = await admin(a, "GET", "/admin/events")
            assert [e["kind"] for e in body["events"]] == ["rollback", "weights"]
        finally:
            await a.close()
            await b.close()


async def test_replicas_share_through_redis(tmp_path: Path, prefix: str) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        canary = {"redis_prefix": prefix}
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a = await start(canary_config(go, py, a_dir, canary=canary, redis=REDIS))
        b = await start(canary_config(go, py, b_dir, canary=canary, redis=REDIS))
        try:
            await wait_for(lambda: feature(a).shared.connected and feature(b).shared.connected)
            elapsed = await _timed_change(a, b, {"go": 5, "python": 95})
            print(f"redis: change seen by the other replica after {elapsed * 1000:.0f} ms")
            status, _ = await admin(b, "POST", "/admin/rollback")
            assert status == 200
            await wait_for(lambda: weights(a) == {"go": 0, "python": 100})
            r = aioredis.Redis.from_url(REDIS)
            try:
                keys = sorted([k.decode() async for k in r.scan_iter(match=prefix + "*")])
            finally:
                await r.aclose()
            assert f"{prefix}route:default" in keys and all(k.startswith("cutover:") for k in keys)
        finally:
            await a.close()
            await b.close()


async def test_restart_keeps_the_rollback(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(go, py, tmp_path, canary={"steps": [50, 100]})
        gw = await start(data)
        status, _ = await admin(gw, "POST", "/admin/rollback", {"reason": "bad build"})
        assert status == 200
        await gw.close()
        gw = await start(data)
        try:
            assert weights(gw) == {"go": 0, "python": 100}  # before the first request
            assert set(await traffic(gw, 30, users=True)) == {"python"}
            _, body = await admin(gw, "GET", "/admin/routes")
            assert body["routes"][0]["latched"] is True
            assert body["routes"][0]["phase"] == "rolled_back"
        finally:
            await gw.close()


async def test_restart_keeps_the_rollback_in_redis(tmp_path: Path, prefix: str) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        canary = {"redis_prefix": prefix}
        gw = await start(canary_config(go, py, tmp_path / "a", canary=canary, redis=REDIS))
        await admin(gw, "POST", "/admin/rollback")
        await gw.close()
        # another replica, its own empty store: the rollback comes from Redis
        gw = await start(canary_config(go, py, tmp_path / "b", canary=canary, redis=REDIS))
        try:
            assert weights(gw) == {"go": 0, "python": 100}
        finally:
            await gw.close()


async def test_redis_down_at_start_fails_static_on_the_last_known_state(
    tmp_path: Path, prefix: str
) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        canary = {"redis_prefix": prefix}
        gw = await start(canary_config(go, py, tmp_path, canary=canary, redis=REDIS))
        await admin(gw, "PUT", "/admin/routes/default/weights", {"go": 1, "python": 99})
        await gw.close()
        dead = f"redis://127.0.0.1:{free_port()}/0"
        gw = await start(canary_config(go, py, tmp_path, canary=canary, redis=dead))
        try:
            assert weights(gw) == {"go": 1, "python": 99}  # the durable copy
            assert set(await traffic(gw, 10, force="python")) == {"python"}  # still serving
            async with aiohttp.ClientSession() as s, s.get(gw.url + "/readyz") as r:
                assert r.status == 200
                shared = (await r.json())["canary"]["shared_state"]
            assert shared["backend"] == "redis" and shared["connected"] is False
            assert re.fullmatch(RFC3339, shared["since"]), shared["since"]
            assert "Error" in shared["last_error"]
            metrics = gw.metrics.exposition()[0].decode()
            assert 'cutover_shared_state_up{backend="redis"} 0.0' in metrics
            status, body = await admin(gw, "PUT", "/admin/routes/default/weights", {"go": 100})
            assert status == 503 and body["error"]["code"] == "shared_state_unavailable"
        finally:
            await gw.close()


class Relay:
    """A TCP relay to Redis that a test can cut and restore."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()
        await self.server.wait_closed()


async def test_redis_lost_and_back(tmp_path: Path, prefix: str) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    relay = Relay(free_port())
    await relay.start()
    async with started(go, py):
        url = f"redis://127.0.0.1:{relay.port}/0"
        gw = await start(
            canary_config(go, py, tmp_path, canary={"redis_prefix": prefix}, redis=url)
        )
        shared = feature(gw).shared
        assert shared is not None
        try:
            await wait_for(lambda: shared.connected)
            status, _ = await admin(
                gw, "PUT", "/admin/routes/default/weights", {"go": 2, "python": 98}
            )
            assert status == 200
            await relay.cut()
            await wait_for(lambda: not shared.connected, deadline=15)
            assert weights(gw) == {"go": 2, "python": 98}  # fail static
            assert set(await traffic(gw, 10, force="python")) == {"python"}
            status, _ = await admin(gw, "POST", "/admin/rollback")
            assert status == 503
            await relay.start()
            await wait_for(lambda: shared.connected, deadline=15)
            status, _ = await admin(gw, "POST", "/admin/rollback")
            assert status == 200 and weights(gw) == {"go": 0, "python": 100}
        finally:
            await gw.close()
            await relay.cut()


async def test_redis_restarted_empty_decides_from_the_durable_copy(
    tmp_path: Path, prefix: str
) -> None:
    """Redis restarted without persistence: until the resync, a command must not start from the
    config's split (here a promotion from 0 % would have moved go from 25 % down to 10 %)."""
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(
            go, py, tmp_path, canary={"redis_prefix": prefix, "steps": [10, 25, 50, 100]},
            redis=REDIS,
        )  # fmt: skip
        gw = await start(data)
        try:
            await wait_for(lambda: feature(gw).shared.connected)
            body = {"go": 25, "python": 75}
            status, _ = await admin(gw, "PUT", "/admin/routes/default/weights", body)
            assert status == 200
            r = aioredis.Redis.from_url(REDIS)
            try:  # what a restart without persistence leaves: nothing under the prefix
                keys = [k async for k in r.scan_iter(match=prefix + "*")]
                await r.delete(*keys)
                status, answer = await admin(gw, "POST", "/admin/promote")
                assert status == 200, answer
                assert weights(gw) == {"go": 50, "python": 50}
                stored = await r.get(f"{prefix}route:default")
            finally:
                await r.aclose()
            assert stored is not None and b'["go",50]' in stored.replace(b" ", b"")
        finally:
            await gw.close()


async def test_local_rollback_while_the_shared_state_is_down(tmp_path: Path, prefix: str) -> None:
    go, py = FlakyBackend("go", every=10), FlakyBackend("python")
    relay = Relay(free_port())
    await relay.start()
    async with started(go, py):
        url = f"redis://127.0.0.1:{relay.port}/0"
        canary = {"redis_prefix": prefix, "min_requests": 50, "confidence": 0.999}  # 10/100, 0/100
        data = canary_config(go, py, tmp_path, canary=canary)
        gw = await start({**data, "redis": url}, FakeClock())
        f = feature(gw)
        try:
            await wait_for(lambda: f.shared.connected)
            await relay.cut()
            await wait_for(lambda: not f.shared.connected, deadline=15)
            await traffic(gw, 100, force="go")
            await traffic(gw, 100, force="python")
            await f.tick()
            assert weights(gw) == {"go": 0, "python": 100}  # decided here, at once
            assert "default" in f.pending
            await relay.start()
            await wait_for(lambda: not f.pending, deadline=15)
            stored = await f.shared.get("default")
            assert stored is not None and stored.latched and stored.weight_of("go") == 0
            _, body = await admin(gw, "GET", "/admin/events")
            assert body["events"][0]["kind"] == "rollback"
            assert "while the shared state was down" in body["events"][0]["reason"]
        finally:
            await gw.close()
            await relay.cut()


async def test_config_split_change_wins_and_says_so(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(go, py, tmp_path)
        gw = await start(data)
        await admin(gw, "PUT", "/admin/routes/default/weights", {"go": 1, "python": 99})
        await gw.close()
        data["routes"][0]["split"] = {"go": 20, "python": 80}
        gw = await start(data)
        try:
            assert weights(gw) == {"go": 20, "python": 80}
            _, body = await admin(gw, "GET", "/admin/events")
            event = body["events"][0]
            assert event["kind"] == "config" and event["actor"] == "config"
            assert event["weights_before"] == {"go": 1, "python": 99}
            assert event["weights_after"] == {"go": 20, "python": 80}
            assert "runtime weights go 1/python 99 (operator) dropped" in event["reason"]
        finally:
            await gw.close()


async def test_two_worker_processes_agree(backends, gateway_process, tmp_path: Path) -> None:
    go, py = await backends("go"), await backends("python")
    admin_port = free_port()
    data = canary_config(go, py, tmp_path, canary=False)  # type: ignore[arg-type]
    data["admin"] = {"listen": f"127.0.0.1:{admin_port}", "token": "t0ken-for-tests"}
    gp = await gateway_process(data, workers=2).ready()
    headers = {"Authorization": "Bearer t0ken-for-tests"}
    url = f"http://127.0.0.1:{admin_port}/admin/routes/default/weights"

    async def admin_up() -> None:
        for _ in range(100):
            with contextlib.suppress(aiohttp.ClientError):
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(url[: url.index("/admin")] + "/admin", headers=headers) as r,
                ):
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError(gp.output())

    await admin_up()
    async with (
        aiohttp.ClientSession() as s,
        s.put(url, json={"go": 0, "python": 100}, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()

    async def all_python() -> bool:
        seen = set()
        for _ in range(30):  # a new connection each time: the kernel spreads them over workers
            async with aiohttp.ClientSession() as s, s.get(gp.url + "/") as r:
                seen.add(r.headers["X-Cutover-Backend"])
        return seen == {"python"}

    for _ in range(50):
        if await all_python():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("workers disagree:\n" + gp.output())
