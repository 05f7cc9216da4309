"""A backend killed and started again under steady load (issue 13): fallback hides the kill.

An open-model load (requests leave on a fixed schedule, whatever the answers) of GETs goes
through a 50/50 sticky split whose backends fall back on each other, with active health
checks on. One backend, a process of its own, is killed mid-run (SIGKILL: its listening socket
and connections closed by the kernel) and comes back on the same port a few seconds later.
Fewer than 0.1 % of the GETs sent may fail, and the backend serves its share again within one
health interval plus its ejection time. Both listener paths.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import gateway_config
from tests.integration.fault_helpers import KillableBackend
from tests.quiescence import assert_quiescent

pytestmark = pytest.mark.usefixtures("serving_path")

RATE = 300.0  # requests per second, due on a fixed schedule
DURATION = 10.0  # seconds of load
KILL_AT = 2.5  # seconds into the run
RESTART_AT = 5.3  # (off the health checks' 0.5 s rhythm)
USERS = 1000  # sticky keys
HEALTH_INTERVAL = 0.5  # seconds; one good check brings a backend back
EJECTION = 1.0  # seconds, every ejection (base = max: the same whatever the multiplier)
SLACK = 2.0  # seconds a loaded machine may add to the health loop's timing
MAX_LATE = 0.01  # seconds a request may leave after it was due, else it is skipped
BACKEND_DELAY = 0.005  # seconds each answer takes: the kill finds requests in flight


@dataclasses.dataclass
class Sent:
    at: float  # when it left, seconds into the run
    status: int = 0  # 0: no answer (transport error or client timeout)
    backend: str = ""


@pytest.fixture
async def pair() -> AsyncIterator[tuple[KillableBackend, KillableBackend]]:
    a, b = KillableBackend("a", BACKEND_DELAY), KillableBackend("b", BACKEND_DELAY)
    await a.start()
    await b.start()
    yield a, b
    a.kill()
    b.kill()


async def steady_load(url: str, schedule: list[float]) -> tuple[list[Sent], int]:
    """Send one GET per entry of `schedule` (seconds from now), each as soon as it is due and
    without waiting for earlier answers. On a busy machine the generator falls behind: a
    request overdue by more than `MAX_LATE` is skipped rather than sent in a burst with the
    others (a stalled test process is no client's traffic); what was sent is what counts.
    Returns the requests sent and how many were skipped."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent: list[Sent] = []
    tasks: list[asyncio.Task[None]] = []
    skipped = 0
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(record: Sent, user: int) -> None:
            try:
                headers = {"X-Request-User": f"user-{user}"}
                async with session.get(url + "/load", headers=headers) as resp:
                    await resp.read()
                    record.status = resp.status
                    record.backend = resp.headers.get("X-Cutover-Backend", "")
            except (aiohttp.ClientError, TimeoutError, OSError):
                record.status = 0

        for i, due in enumerate(schedule):
            wait = start + due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time() - start
            if now - due > MAX_LATE:
                skipped += 1
                continue
            record = Sent(now)
            sent.append(record)
            tasks.append(asyncio.create_task(one(record, i % USERS)))
        await asyncio.gather(*tasks)
    return sent, skipped


async def test_a_backend_killed_and_restarted_under_load(pair, gateway) -> None:
    a, b = pair
    data = gateway_config(
        {"a": a.url, "b": b.url},
        route={
            "split": {"a": 50, "b": 50},
            "sticky": {"header": "X-Request-User"},
            "fallback": ["a", "b"],  # each falls back on the other
        },
    )
    for backend in data["backends"].values():
        backend["health"] = {
            "path": "/healthz",
            "interval": f"{int(HEALTH_INTERVAL * 1000)}ms",
            "timeout": "250ms",
            "healthy_threshold": 1,
            "unhealthy_threshold": 2,
        }
        backend["outlier"] = {
            "consecutive_failures": 5,
            "base_ejection": f"{int(EJECTION * 1000)}ms",
            "max_ejection": f"{int(EJECTION * 1000)}ms",
        }
    gw = await gateway(data)
    loop = asyncio.get_running_loop()
    events: dict[str, float] = {}

    async def kill_and_restart(start: float) -> None:
        await asyncio.sleep(start + KILL_AT - loop.time())
        a.kill()
        events["killed"] = loop.time() - start
        await asyncio.sleep(start + RESTART_AT - loop.time())
        await a.start()  # the same port
        events["restarted"] = loop.time() - start

    schedule = [i / RATE for i in range(int(RATE * DURATION))]
    chaos = asyncio.ensure_future(kill_and_restart(loop.time()))
    sent, skipped = await steady_load(gw.url, schedule)
    await chaos

    failed = [r for r in sent if r.status != 200]
    by_backend = collections.Counter(r.backend for r in sent if r.status == 200)
    restarted = events["restarted"]
    back = [r.at for r in sent if r.backend == "a" and r.at > restarted]
    metric = gw.metrics.registry.get_sample_value
    fallbacks = metric(
        "cutover_fallbacks_total", {"route": "default", "from_backend": "a", "to_backend": "b"}
    )
    refused = metric("cutover_retry_budget_exhausted_total", {"route": "default"})
    print(  # the figures, for the record (pytest -s shows them)
        f"\nsent {len(sent)}, failed {len(failed)} ({100 * len(failed) / len(sent):.3f} %), "
        f"served by {dict(by_backend)}, fallbacks a->b {fallbacks or 0:g}, replays refused "
        f"{refused or 0:g}, skipped (the generator was late) {skipped}, killed at "
        f"{events['killed']:.2f} s, "
        f"restarted at {restarted:.2f} s, back after "
        f"{back[0] - restarted if back else float('nan'):.2f} s"
    )
    assert len(failed) < 0.001 * len(sent), failed[:10]
    assert back, "the restarted backend never served again"
    # Back within one health interval plus the ejection (expired already, unless the last
    # ejection came late), with slack for a loaded machine's timers.
    assert back[0] - restarted <= HEALTH_INTERVAL + EJECTION + SLACK
    # ... and its share came back: about half of the requests sent once it was back.
    late = [r for r in sent if r.at > back[0] + HEALTH_INTERVAL and r.status == 200]
    if len(late) >= 200:  # unless the generator fell too far behind to tell
        share = sum(1 for r in late if r.backend == "a") / len(late)
        assert 0.35 <= share <= 0.65, share
    await assert_quiescent(gw)
