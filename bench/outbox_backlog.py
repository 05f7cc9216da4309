"""Outbox backlog benchmark: a burst of jobs drains, and the claim costs the same throughout.

    python -m cutover.bench.outbox_backlog [--storage sqlite|postgresql://...] [--jobs 100000]
                                   [--concurrency 16] [--json]

A gateway runs in this process (so its claims can be timed one by one) and delivers to a
receiver in a child process answering 200 at once, all on 127.0.0.1. Half the jobs go to a
webhook target, half to the history backend through the gateway route (`backend:default`),
as the intake writes them. Steps:

1. the outbox's tables are created on a connection of their own (as by an earlier start or
   another replica), then the gateway starts and polls the empty outbox: PostgreSQL plans its
   prepared claim while the table is empty, the way an idle gateway meets a burst;
2. `--jobs` pending jobs are written in one transaction (COPY on PostgreSQL, executemany on
   SQLite) behind its back: a fresh schema, never ANALYZEd, autovacuum not relied upon;
3. the drain is timed (jobs / seconds from the commit to the last arrival), every claim is
   timed, and claims are grouped by the backlog left when they ran;
4. once empty, 200 more claims time the claim at zero backlog.

Prints progress every 2 s and a table of claim p50/p99 per backlog band. A PostgreSQL URL puts
the outbox in a fresh schema, dropped at the end; SQLite uses a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web

from cutover.bench.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (
    "target", "fingerprint", "alert_status", "alert", "state", "attempts", "created_at", "next_at",
)  # fmt: skip
EMPTY_CLAIMS = 200


def job_rows(alerts: int, targets: Sequence[str], now: float) -> Iterator[tuple[Any, ...]]:
    """Pending jobs as the intake writes them: one per alert and target, due now."""
    from cutover.alerts.model import Alert
    from cutover.publishing.outbox import alert_to_json

    for i in range(alerts):
        alert = Alert(
            fingerprint=f"{i:016x}",
            status="firing",
            labels=MappingProxyType(
                {
                    "alertname": "BacklogBurst",
                    "severity": "warning",
                    "namespace": "prod",
                    "instance": f"node-{i % 500}:9100",
                    "job": "node",
                }
            ),
            annotations=MappingProxyType({"summary": f"Burst alert {i}"}),
            starts_at="2026-11-23T10:00:00Z",
        )
        body = alert_to_json(alert).decode()
        for target in targets:
            yield (target, alert.fingerprint, "firing", body, "pending", 0, now, now)


async def fill(storage: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write `rows` into publishing_jobs in one transaction, on a connection of its own (the
    engine is not told: it finds them at its next poll, as jobs of another replica)."""
    if storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :]

        def write() -> None:
            conn = sqlite3.connect(path, timeout=30)
            try:
                marks = ", ".join("?" * len(COLUMNS))
                conn.executemany(
                    f"INSERT INTO publishing_jobs ({', '.join(COLUMNS)}) VALUES ({marks})", rows
                )
                conn.commit()
            finally:
                conn.close()

        await asyncio.to_thread(write)
        return
    conn = await asyncpg.connect(storage)
    try:
        await conn.copy_records_to_table("publishing_jobs", records=rows, columns=COLUMNS)
    finally:
        await conn.close()


@dataclass
class ClaimLog:
    """Every claim an outbox makes: (backlog left before it, seconds, jobs claimed)."""

    total: int = 0  # jobs put in; 0 until they are
    claimed: int = 0
    samples: list[tuple[int, float, int]] = field(default_factory=list)

    def wrap(self, outbox: Any) -> None:
        """Time `outbox.claim` from now on (an instance attribute over the method)."""
        claim: Callable[..., Awaitable[list[Any]]] = outbox.claim

        async def timed(*args: Any, **kwargs: Any) -> list[Any]:
            left = max(0, self.total - self.claimed)
            started = time.perf_counter()
            jobs = await claim(*args, **kwargs)
            self.samples.append((left, time.perf_counter() - started, len(jobs)))
            self.claimed += len(jobs)
            return jobs

        outbox.claim = timed

    def band(self, low: int, high: int, *, busy: bool = True) -> list[float]:
        """Seconds of the claims made with `low <= backlog <= high` (`busy`: that got jobs)."""
        return sorted(
            s for left, s, n in self.samples if low <= left <= high and (n > 0 or not busy)
        )


def figures(seconds: Sequence[float]) -> dict[str, float | int | None]:
    if not seconds:
        return {"claims": 0, "p50_ms": None, "p99_ms": None}
    ordered = sorted(seconds)
    return {
        "claims": len(ordered),
        "p50_ms": round(percentile(ordered, 50) * 1000, 3),
        "p99_ms": round(percentile(ordered, 99) * 1000, 3),
    }


# -- the receiver (a child process) ----------------------------------------------------------


def _receiver(port: int) -> None:
    count = 0

    async def take(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.Response(text="ok")

    async def counted(request: web.Request) -> web.Response:
        return web.json_response({"count": count})

    app = web.Application()
    app.router.add_post("/hook", take)
    app.router.add_post("/history", take)
    app.router.add_get("/count", counted)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _received(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url + "/count") as resp:
        return int((await resp.json())["count"])


# -- the run -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from cutover.core.clock import Clock
    from cutover.core.db import open_database
    from cutover.proxy.config import parse_config
    from cutover.proxy.server import Gateway
    from cutover.publishing.api import PublishingFeature
    from cutover.publishing.outbox import Outbox

    tmp = Path(tempfile.mkdtemp(prefix="cutover-bench-backlog-"))
    port = _free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "cutover.bench.outbox_backlog", "--receive", str(port)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    schema = None
    if args.storage == "sqlite":
        storage = f"sqlite:///{tmp / 'state.db'}"
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(args.storage)
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.close()
        sep = "&" if "?" in args.storage else "?"
        storage = f"{args.storage}{sep}search_path={schema}"
    config = {
        "listen": "127.0.0.1:0", "admin": "off", "access_log": {"enabled": False},
        "storage": storage,
        "backends": {"history": {"url": url, "health": None}},
        "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"history": 100}}],
        "publishing": {
            "targets": [{"name": "fast", "type": "webhook", "url": f"{url}/hook",
                         "rate_limit": "off", "concurrency": args.concurrency}],
            "delivery": {"workers": args.concurrency * 2, "concurrency": args.concurrency,
                         "poll_interval": "100ms"},
            "history": {"path": "/history"},
        },
    }  # fmt: skip
    gw = None
    log = ClaimLog()
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    await _received(http, url)
                    break
                await asyncio.sleep(0.05)
            db = await open_database(storage)
            try:
                await Outbox(db, Clock()).setup()
            finally:
                await db.close()
            # the one feature this config turns on; bench stands below the app (cutover.app)
            cfg = parse_config(config, str(tmp / "cutover.yaml"))
            gw = Gateway(cfg, None, (PublishingFeature,))
            await gw.start()
            feature = next(f for f in gw.features if isinstance(f, PublishingFeature))
            for _ in range(200):
                if feature.engine is not None:
                    break
                await asyncio.sleep(0.05)
            engine = feature.engine
            assert engine is not None, "the delivery engine did not start"
            log.wrap(engine.outbox)
            await asyncio.sleep(1.0)  # the idle engine polls the empty outbox (>= 5 claims)
            empty_before = log.band(0, 0, busy=False)
            alerts = args.jobs // 2
            rows = list(job_rows(alerts, ["fast", "backend:default"], time.time()))
            print(f"writing {len(rows)} pending jobs ...", flush=True)
            await fill(storage, rows)
            log.total = len(rows)
            started = time.perf_counter()
            seen, last_print = 0, started
            while seen < len(rows):
                await asyncio.sleep(0.2)
                seen = await _received(http, url)
                now = time.perf_counter()
                if now - last_print >= 2.0 or seen >= len(rows):
                    last_print = now
                    recent = sorted(s for _, s, n in log.samples[-200:] if n > 0)
                    shown = figures(recent)
                    print(
                        f"  {seen:>7}/{len(rows)} delivered, {seen / (now - started):7.0f} jobs/s,"
                        f" backlog {len(rows) - seen:>7}, recent claims p50"
                        f" {shown['p50_ms']} ms p99 {shown['p99_ms']} ms",
                        flush=True,
                    )
                if now - started > args.deadline:
                    raise SystemExit(f"the outbox did not drain in {args.deadline:g}s")
            elapsed = time.perf_counter() - started
            for _ in range(EMPTY_CLAIMS):
                await engine.outbox.claim("bench-empty", limit=32, lease=60)
            pending = await engine.outbox.backlog()
        n = len(rows)
        tail = log.samples[-EMPTY_CLAIMS:]
        result: dict[str, Any] = {
            "storage": "sqlite" if schema is None else "postgresql",
            "jobs": n,
            "drain_seconds": round(elapsed, 2),
            "jobs_per_s": round(n / elapsed, 1),
            "left_pending": pending,
            "claims": len(log.samples),
            "claim_empty_before": figures(empty_before),
            "claim_backlog_100k": figures(log.band(int(n * 0.9), n)),
            "claim_backlog_10k": figures(log.band(n // 10 - n // 50, n // 10 + n // 50)),
            "claim_backlog_1k": figures(log.band(n // 100 - n // 200, n // 100 + n // 200)),
            "claim_empty_after": figures([s for _, s, _ in tail]),
        }
        return result
    finally:
        if gw is not None:
            await gw.close()
        receiver.terminate()
        try:
            receiver.wait(10)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()
        if schema is not None:
            conn = await asyncpg.connect(args.storage)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _table(result: dict[str, Any]) -> str:
    n = result["jobs"]
    bands = [
        ("empty, before the burst", "claim_empty_before"),
        (f"{int(n * 0.9)}-{n} (the burst)", "claim_backlog_100k"),
        (f"{n // 10 - n // 50}-{n // 10 + n // 50}", "claim_backlog_10k"),
        (f"{n // 100 - n // 200}-{n // 100 + n // 200}", "claim_backlog_1k"),
        ("empty, after the drain", "claim_empty_after"),
    ]
    lines = [
        f"{result['storage']}: {n} jobs drained in {result['drain_seconds']} s ="
        f" {result['jobs_per_s']} jobs/s; {result['left_pending']} left pending",
        "| backlog | claims | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for label, key in bands:
        f = result[key]
        lines.append(f"| {label} | {f['claims']} | {f['p50_ms']} | {f['p99_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds the drain may take")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receive:
        _receiver(args.receive)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = asyncio.run(run(args))
    print(_table(result))
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
