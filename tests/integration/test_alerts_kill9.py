"""`kill -9` in the middle of a storm of webhooks, at the group commit's rate: every alert that
was answered 200 is in the store with its outbox job after the kill, once each; an alert whose
answer never came may or may not be (Alertmanager re-sends it; a re-send of a stored one is a
duplicate). Real gateway processes, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from cutover.core.db import open_database
from tests.integration.alerts_helpers import am_alert, envelope

CLIENTS = 32
MIN_ANSWERED = 300  # 200s before the kill: many batches of many webhooks


def config(storage: str) -> dict[str, Any]:
    return {
        "admin": "off",
        "access_log": {"enabled": False},
        "storage": storage,
        "backends": {"history": {"url": "http://127.0.0.1:9", "health": None}},
        "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"history": 100}}],
        "alerts": {"forward_to_route": "default"},
    }


async def test_kill_9_mid_burst_loses_no_accepted_alert(storage, gateway_process) -> None:
    gp = await gateway_process(config(storage)).ready()
    url = gp.url + "/webhook/proxy"
    answered: list[str] = []
    sent = iter(range(10**6))
    killed = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not killed.is_set():
            name = f"Kill{next(sent)}"
            try:
                async with session.post(url, json=envelope(am_alert(name))) as resp:
                    if resp.status == 200:
                        await resp.read()
                        answered.append(name)
            except (aiohttp.ClientError, OSError):
                return  # the gateway is gone

    async def killer() -> None:
        end = time.monotonic() + 60
        while len(answered) < MIN_ANSWERED and time.monotonic() < end:
            await asyncio.sleep(0.005)
        gp.proc.kill()  # SIGKILL while webhooks are queued and a batch is committing
        killed.set()
        gp.proc.wait()

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CLIENTS), timeout=timeout
    ) as session:
        await asyncio.gather(killer(), *(client(session) for _ in range(CLIENTS)))
    assert len(answered) >= MIN_ANSWERED

    db = await open_database(storage)
    try:
        rows = await db.fetch("SELECT alertname FROM cutover_alerts")
        stored = [r["alertname"] for r in rows]
        job_names = {
            r["fingerprint"] for r in await db.fetch("SELECT fingerprint FROM publishing_jobs")
        }
        fingerprints = {
            r["alertname"]: r["fingerprint"]
            for r in await db.fetch("SELECT alertname, fingerprint FROM cutover_alerts")
        }
    finally:
        await db.close()
    assert len(stored) == len(set(stored))  # once each
    missing = set(answered) - set(stored)
    assert not missing, f"{len(missing)} alerts answered 200 but not stored"
    assert all(fingerprints[name] in job_names for name in answered)  # with their jobs
