"""Detection end to end: real sockets, real backends, the controller ticking on the real clock.

A 90/10 sticky split under steady load; the candidate starts failing 5 % of its requests after a
clean stretch; the controller rolls back on its own. The detection time is printed (`-s`); the
many-seed figures are the simulation's (tests/unit/routing/test_canary_detection.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from pathlib import Path

import aiohttp

from tests.integration.canary_helpers import (
    FlakyBackend,
    admin,
    canary_config,
    start,
    started,
    weights,
)

RATE = 250.0  # requests per second, all users together
USERS = [f"user-{i}" for i in range(200)]


async def load(gw_url: str, stop: asyncio.Event, served: dict[str, list[tuple[int, str]]]) -> None:
    """Open-model traffic at RATE (bounded by `stop` and by 64 requests in flight)."""
    rng = random.Random(19)
    sem = asyncio.Semaphore(64)
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:

        async def one(seq: int, user: str) -> None:
            try:
                async with session.get(gw_url + "/x", headers={"X-Request-User": user}) as r:
                    await r.read()
                    side = r.headers.get("X-Cutover-Backend", "-")
                    served.setdefault(user, []).append((seq, side))
            finally:
                sem.release()

        started_at = time.monotonic()
        sent = 0
        while not stop.is_set():
            due = started_at + sent / RATE
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            task = asyncio.create_task(one(sent, rng.choice(USERS)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def test_a_5_percent_break_is_rolled_back_in_seconds_by_the_recent_lane(
    tmp_path: Path,
) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        data = canary_config(
            go, py, tmp_path, split={"go": 10, "python": 90},
            route={"sticky": {"header": "X-Request-User"}},
        )  # fmt: skip
        gw = await start(data, ticking=True)  # the real clock: the controller ticks each second
        stop = asyncio.Event()
        served: dict[str, list[tuple[int, str]]] = {}
        traffic = asyncio.create_task(load(gw.url, stop, served))
        try:
            await asyncio.sleep(10.0)  # a clean stretch: the windows fill, nothing happens
            assert weights(gw) == {"go": 10, "python": 90}
            go.every = 20  # the candidate starts failing 5 % of its requests
            broke = time.monotonic()
            deadline = broke + 15.0
            while weights(gw)["go"] != 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            delay = time.monotonic() - broke
            print(f"\nrolled back {delay:.2f} s after a 5 % break")
            assert weights(gw) == {"go": 0, "python": 100}, f"no rollback in {delay:.1f}s"
            assert delay <= 12.0  # the goal is 5 s at 30 req/s; a loaded test machine is slower
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
        try:
            _, body = await admin(gw, "GET", "/admin/events?route=default")
            rollback = next(e for e in body["events"] if e["kind"] == "rollback")
            judged = rollback["figures"]["judged"]
            assert judged["p"] <= judged["alpha"] and judged["z"] >= judged["z_critical"]
            assert "candidate error rate over" in rollback["reason"]
            assert "Fisher p=" in rollback["reason"]
            print(f"judged: {judged}")
            # Sticky users, in the order sent: never old -> new, new -> old at most once.
            for user, answers in served.items():
                sides = [side for _, side in sorted(answers)]
                flips = sum(1 for a, b in itertools.pairwise(sides) if a != b)
                assert flips <= 1 and (not flips or sides[0] == "go"), (user, sides)
        finally:
            await gw.close()
