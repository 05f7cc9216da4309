"""Publishing and intake in real gateway processes: `kill -9` with jobs pending, then a restart
delivers every alert; with several workers, /publishing/stats and /enrichment/stats count every
worker's work."""

from __future__ import annotations

from typing import Any

import aiohttp

from cutover.core.clock import Clock
from cutover.core.db import Database, open_database
from cutover.publishing.outbox import Outbox
from tests.conftest import wait_for
from tests.integration.alerts_helpers import am_alert, envelope
from tests.integration.publishing_fakes import FakeWebhook
from tests.integration.publishing_helpers import make_alert

PG = "postgresql://postgres@127.0.0.1:5432/test"
N = 20


def webhook_target(hook: FakeWebhook, **extra: Any) -> dict[str, Any]:
    return {"name": "wh", "type": "webhook", "url": hook.url + "/hook", **extra}


def process_config(
    storage: str, targets: list[dict[str, Any]], delivery: dict[str, Any]
) -> dict[str, Any]:
    """A gateway whose one route goes nowhere: it publishes to `targets`."""
    return {
        "admin": "off",
        "access_log": {"enabled": False},
        "storage": storage,
        "backends": {"history": {"url": "http://127.0.0.1:9", "health": None}},
        "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"history": 100}}],
        "publishing": {
            "targets": targets,
            "delivery": delivery,
        },
    }


async def enqueue_jobs(db: Database, prefix: str) -> Outbox:
    """N jobs for target `wh`, alerts `<prefix>-0` .. `<prefix>-<N-1>`, each in its own commit."""
    outbox = Outbox(db, Clock())
    await outbox.setup()
    for i in range(N):
        async with db.transaction() as tx:
            await outbox.enqueue(tx, make_alert(f"{prefix}-{i}"), ["wh"], now=Clock().now())
    return outbox


async def test_kill_9_with_jobs_pending_then_restart_delivers_everything(storage, gateway_process):
    hook = await FakeWebhook().start()
    hook.down = True  # every delivery fails until the restart
    try:
        delivery = {
            "lease": "1s",
            "poll_interval": "100ms",
            "max_attempts": 1000,
            "backoff": {"base": "50ms", "cap": "200ms"},
            "breaker": {"failures": 1000},
        }
        config = process_config(storage, [webhook_target(hook, timeout="500ms")], delivery)
        first = await gateway_process(config).ready()
        db = await open_database(storage)
        try:
            outbox = await enqueue_jobs(db, "fp-kill")
            seen = lambda: {r["body"]["alerts"][0]["fingerprint"] for r in hook.requests}  # noqa: E731
            await wait_for(lambda: len(seen()) == N, deadline=30)  # every job was tried
            first.proc.kill()  # SIGKILL: no drain, leases left behind
            first.proc.wait()
            counts = await outbox.counts()
            assert counts["wh"]["pending"] == N
            hook.down = False
            second = await gateway_process(config).ready()
            await wait_for(lambda: len(hook.accepted) >= N, deadline=30)
            delivered = {b["alerts"][0]["fingerprint"] for b in hook.accepted}
            assert delivered == {f"fp-kill-{i}" for i in range(N)}
            for _ in range(100):
                if not (await outbox.counts()).get("wh", {}).get("pending"):
                    break
                await _sleep(0.1)
            assert (await outbox.counts()).get("wh", {}).get("pending", 0) == 0
            assert second.proc.poll() is None
        finally:
            await db.close()
    finally:
        await hook.stop()


async def test_stats_count_the_deliveries_of_every_worker(storage, gateway_process):
    hook = await FakeWebhook().start()
    try:
        config = process_config(storage, [webhook_target(hook)], {"poll_interval": "50ms"})
        gp = await gateway_process(config, workers=2).ready()
        db = await open_database(storage)
        try:
            await enqueue_jobs(db, "fp-stats")
        finally:
            await db.close()
        await wait_for(lambda: len(hook.accepted) >= N, deadline=30)

        answers = [await fresh_get(gp.url + "/publishing/stats") for _ in range(12)]
        for answer in answers:
            assert answer["successful_publishes"] == N, answer
            (wh,) = [t for t in answer["targets"] if t["name"] == "wh"]
            assert wh["sent"] == N and wh["failed"] == 0
            assert answer["scope"].startswith("counts: every worker process")
    finally:
        await hook.stop()


async def fresh_get(url: str) -> dict:
    """GET on a new connection each time (the kernel spreads them over the workers); a worker
    still starting answers 503 with Retry-After."""
    for _ in range(200):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        async with session as s, s.get(url) as resp:
            if resp.status != 503:
                assert resp.status == 200, await resp.text()
                return await resp.json()
        await _sleep(0.1)
    raise AssertionError(f"{url} kept answering 503")


async def test_enrichment_stats_count_the_webhooks_of_every_worker(tmp_path, gateway_process):
    config = process_config(f"sqlite:///{tmp_path}/state.db", [], {})
    config["alerts"] = {"paths": ["/webhook/proxy"]}
    gp = await gateway_process(config, workers=2).ready()
    for i in range(N):  # each on a new connection: both workers take some
        body = envelope(am_alert(f"Stats{i}"))
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        for _ in range(100):
            async with session.post(gp.url + "/webhook/proxy", json=body) as resp:
                if resp.status != 503:  # a worker still opening its store
                    assert resp.status == 200, await resp.text()
                    break
            await _sleep(0.1)
        await session.close()
    answers = [await fresh_get(gp.url + "/enrichment/stats") for _ in range(12)]
    for answer in answers:
        assert answer["alerts"]["received"] == N, answer
        assert answer["alerts"]["accepted"] == N
        assert sum(answer["accepted_by_mode"].values()) == N
        assert answer["scope"].startswith("every worker process")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
