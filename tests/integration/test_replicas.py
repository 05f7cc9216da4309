"""Replicas as the Helm chart runs them: three `cutover serve` processes, each on its own port
(as pods have their own addresses), sharing one PostgreSQL schema and one Redis key prefix.

What one replica is told, all obey; what the canary judge decides, it decides once; what any
replica accepts is delivered, also when one of them is `kill -9`'d in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from tests.conftest import GatewayProcess, free_port, wait_for
from tests.integration.alerts_helpers import PG_URL, REDIS_URL, envelope
from tests.integration.canary_helpers import FlakyBackend, started
from tests.integration.publishing_fakes import FakePagerDuty

TOKEN = "replica-admin-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTING_KEY = "R0UTINGKEY0123456789"
REPLICAS = 3


class Replica(GatewayProcess):
    """One `cutover serve` with its own listen and admin ports and its own folder."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        folder.mkdir()
        self.admin_port = free_port()
        config = dict(config, admin={"listen": f"127.0.0.1:{self.admin_port}", "token": TOKEN})
        super().__init__(config, folder)
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"

    async def ready(self) -> Replica:
        await super().ready()

        def admin_listens() -> bool:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.admin_port), timeout=0.5),
            ):
                return True
            return False

        await wait_for(admin_listens, deadline=30)
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, claimed jobs keep their leases, nothing is flushed."""
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
async def shared() -> AsyncIterator[tuple[str, str]]:
    """(storage URL on a fresh PostgreSQL schema, Redis key prefix); both removed afterwards."""
    schema = f"r_{uuid.uuid4().hex[:12]}"
    prefix = f"cutover:replicas-{uuid.uuid4().hex[:10]}:"
    conn = await asyncpg.connect(PG_URL)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?search_path={schema}", prefix
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
        r = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


@contextlib.asynccontextmanager
async def replicas(config: dict[str, Any], tmp_path: Path) -> AsyncIterator[list[Replica]]:
    """Start REPLICAS processes on one config; stop whatever still runs afterwards."""
    procs: list[Replica] = []
    try:
        for i in range(REPLICAS):
            procs.append(Replica(config, tmp_path / f"replica-{i}"))
        for p in procs:
            await p.ready()
        yield procs
    finally:
        for p in procs:
            p.stop()


def base_config(storage: str, prefix: str, go: str, python: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "access_log": False,
        "storage": storage,
        "redis": REDIS_URL,
        "headers": {"override": "X-Cutover-Force"},
        "backends": {
            "go": {"url": go, "health": None},
            "python": {"url": python, "health": None},
        },
        "routes": [
            {"name": "default", "split": {"go": 50, "python": 50}, "fallback": ["python"]},
        ],
        "canary": {
            "baseline": "python",
            "candidate": "go",
            "redis_prefix": prefix,
            "window": "10s",
            "min_requests": 30,
            "p95_margin": "5s",  # latency on a shared test machine is noise: errors decide
        },
    }
    data.update(extra)
    return data


async def admin(
    session: aiohttp.ClientSession, replica: Replica, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, replica.admin_url + path, json=body, headers=AUTH) as r:
        raw = await r.read()
        return r.status, orjson.loads(raw) if raw else None


async def route_weights(session: aiohttp.ClientSession, replica: Replica) -> dict[str, int]:
    status, body = await admin(session, replica, "GET", "/admin/routes")
    assert status == 200, body
    (route,) = [r for r in body["routes"] if r["name"] == "default"]
    return route["weights"]


async def wait_async(predicate: Any, deadline: float = 15.0) -> None:
    """Poll an async predicate until it holds; fail after a generous deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


async def test_a_weight_change_and_a_rollback_through_one_replica_reach_all(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    storage, prefix = shared
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        config = base_config(storage, prefix, go.url, py.url)
        async with replicas(config, tmp_path) as procs, aiohttp.ClientSession() as s:
            for body, via in (
                ({"go": 90, "python": 10}, procs[0]),
                ({"go": 1, "python": 99}, procs[2]),
            ):
                changed_at = time.monotonic()
                status, answer = await admin(s, via, "PUT", "/admin/routes/default/weights", body)
                assert status == 200, answer
                want = {"go": body["go"], "python": 100 - body["go"]}

                async def everywhere(want: dict[str, int] = want) -> bool:
                    seen = await asyncio.gather(*(route_weights(s, p) for p in procs))
                    return all(w == want for w in seen)

                await wait_async(everywhere)
                print(f"weights {want}: all replicas after {time.monotonic() - changed_at:.3f}s")

            status, answer = await admin(s, procs[1], "POST", "/admin/rollback", {})
            assert status == 200, answer

            async def rolled_back() -> bool:
                seen = await asyncio.gather(*(route_weights(s, p) for p in procs))
                return all(w == {"go": 0, "python": 100} for w in seen)

            await wait_async(rolled_back)
            # ... and the traffic of every replica obeys it
            for p in procs:
                for i in range(10):
                    hdr = {"X-Request-User": f"user-{i}"}
                    async with s.get(p.url + "/x", headers=hdr) as r:
                        assert r.status == 200
                        assert r.headers["X-Cutover-Backend"] == "python"
            _, events = await admin(s, procs[0], "GET", "/admin/events?route=default")
            kinds = [e["kind"] for e in events["events"]]
            assert kinds == ["rollback", "weights", "weights"], kinds


async def test_the_canary_judge_rolls_back_once_for_all_replicas(
    shared: tuple[str, str], tmp_path: Path
) -> None:
    storage, prefix = shared
    # every candidate answer is a 503, which the fallback then serves: the client never sees
    # the candidate fail, the analysis does
    go, py = FlakyBackend("go", every=1, status=503), FlakyBackend("python")
    async with started(go, py):
        config = base_config(storage, prefix, go.url, py.url)
        # passive ejection would take the failing candidate out of the split before the
        # window holds min_requests of it: this test is about the judge
        config["backends"]["go"]["outlier"] = {"consecutive_failures": 1_000_000}
        # every candidate answer is replayed: with four loaders one replica may hold four
        # replays at once, past the budget's default floor of three (a 502, by design)
        config["routes"][0]["retry"] = {"budget": {"min": 8}}
        async with replicas(config, tmp_path) as procs, aiohttp.ClientSession() as s:
            turn = itertools.cycle(procs)
            stop = asyncio.Event()

            async def load() -> None:
                """Round-robin traffic (new users each time) until told to stop."""
                for i in itertools.count():
                    if stop.is_set() or i >= 20_000:
                        return
                    p = next(turn)
                    async with s.get(p.url + "/x", headers={"X-Request-User": f"u{i}"}) as r:
                        await r.read()
                        assert r.status == 200  # the fallback serves what the candidate fails

            loaders = [asyncio.create_task(load()) for _ in range(4)]
            try:

                async def rolled_back() -> bool:
                    seen = await asyncio.gather(*(route_weights(s, p) for p in procs))
                    return all(w == {"go": 0, "python": 100} for w in seen)

                await wait_async(rolled_back, deadline=60)
                await asyncio.sleep(3.0)  # every replica judges a few more times
            finally:
                stop.set()
                await asyncio.gather(*loaders)
            rollbacks, unhealthy = [], []
            for p in procs:
                _, events = await admin(s, p, "GET", "/admin/events?route=default&limit=100")
                rollbacks.append([e for e in events["events"] if e["kind"] == "rollback"])
                unhealthy.append(
                    [
                        e
                        for e in events["events"]
                        if e["kind"] == "verdict" and e["reason"].startswith("unhealthy")
                    ]
                )
            assert all(len(r) == 1 for r in rollbacks), rollbacks  # one log, one rollback
            assert rollbacks[0][0]["actor"] == "controller"
            assert all(len(v) == 1 for v in unhealthy), unhealthy  # judged once, not thrice
            counted = 0.0
            for p in procs:
                async with s.get(p.url + "/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("cutover_canary_actions_total{") and (
                            'action="rollback"' in line
                        ):
                            counted += float(line.rsplit(" ", 1)[1])
            assert counted == 1.0


def alert(i: int) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "ReplicaTest", "instance": f"host-{i}", "severity": "critical"},
        "annotations": {"summary": f"alert {i}"},
        "startsAt": "2026-11-21T21:38:32Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": f"{i:016x}",
    }


async def post_round_robin(
    s: aiohttp.ClientSession, procs: list[Replica], n: int, on_half: Any = None
) -> int:
    """POST one webhook per alert, replica after replica, 8 at a time; a refused or cut request
    goes to the next replica (as a Service sends Alertmanager's retry to another pod).
    `on_half()` runs once half of the alerts were accepted. Returns the retries made."""
    retries = accepted = 0
    sem = asyncio.Semaphore(8)
    halfway: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        nonlocal retries, accepted
        for attempt in range(2 * REPLICAS * 10):
            p = procs[(i + attempt) % len(procs)]
            try:
                async with sem, s.post(p.url + "/webhook/proxy", json=envelope(alert(i))) as r:
                    await r.read()
                    if r.status == 200:
                        accepted += 1
                        if accepted == n // 2 and on_half is not None:
                            halfway.append(asyncio.create_task(on_half()))
                        return
            except aiohttp.ClientError:
                pass
            retries += 1
            await asyncio.sleep(0.05)
        raise AssertionError(f"alert {i} was never accepted")

    await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.gather(*halfway)
    return retries


@pytest.mark.parametrize("kill", [False, True], ids=["all-up", "kill-9-halfway"])
async def test_alerts_posted_round_robin_reach_the_receiver_once_each(
    shared: tuple[str, str], tmp_path: Path, kill: bool
) -> None:
    storage, prefix = shared
    n = 1000
    pd = await FakePagerDuty(ROUTING_KEY).start()
    go, py = FlakyBackend("go"), FlakyBackend("python")
    try:
        async with started(go, py):
            config = base_config(
                storage,
                prefix,
                go.url,
                py.url,
                alerts={"routing": {"targets": ["pd"]}},
                publishing={
                    "targets": [
                        {
                            "name": "pd",
                            "type": "pagerduty",
                            "url": pd.url + "/v2/enqueue",
                            "routing_key": ROUTING_KEY,
                            "rate_limit": "off",
                            "timeout": "2s",
                        }
                    ],
                    "delivery": {"lease": "3s", "poll_interval": "200ms"},
                },
            )
            per_process = 4  # publishing.delivery.concurrency: deliveries in flight per target
            async with replicas(config, tmp_path) as procs, aiohttp.ClientSession() as s:

                async def kill_one() -> None:
                    """Hold the receiver's answers so that every replica has deliveries in
                    flight, kill -9 one replica, then let the receiver answer: what the dead
                    one had claimed is delivered again by the others once its lease expires."""
                    pd.hold = asyncio.Event()
                    await wait_for(
                        lambda: len(pd.requests) - len(pd.accepted) >= per_process * REPLICAS
                    )
                    procs[1].kill()
                    pd.hold.set()
                    pd.hold = None

                # the kill lands while webhooks to that replica are in flight too
                retries = await post_round_robin(s, procs, n, kill_one if kill else None)
                want = {f"{i:016x}" for i in range(n)}
                await wait_for(lambda: set(pd.triggers) >= want, deadline=90)
                assert pd.problems == []
                assert set(pd.triggers) == want  # nothing else arrived
                assert set(pd.resolves) == set()
                alive = [p for p in procs if p.proc.poll() is None]

                async def drained() -> bool:
                    async with s.get(alive[0].url + "/publishing/stats") as r:
                        stats = await r.json()
                    return stats["pending_jobs"] == 0

                await wait_async(drained, deadline=30)
                async with s.get(alive[0].url + "/publishing/stats") as r:
                    stats = await r.json()
                assert stats["dead_letters"] == 0, stats
                assert set(pd.triggers) == want
                repeats = sum(pd.triggers.values()) - n
                print(f"kill={kill}: {n} alerts, {retries} webhook retries, {repeats} repeats")
                if kill:  # what the dead replica had claimed was delivered again, once
                    assert repeats >= 1
                    assert max(pd.triggers.values()) == 2
                else:
                    assert repeats == 0
    finally:
        await pd.stop()
