"""Alert intake benchmark: alerts per second accepted durably, end to end.

    python -m cutover.bench.alert_intake [--store sqlite,postgresql] [--duration 10] [--clients 16]
                                 [--batch 1,10] [--pg postgresql://postgres@127.0.0.1:5432/test]

A `python -m cutover serve` process (1 worker) takes Alertmanager webhooks on /webhook/proxy;
this process posts them from `--clients` concurrent keep-alive connections for `--duration`
seconds per case. Every alert is new (unique labels, so no dedup), is classified by the rules,
and is accepted as the gateway accepts any alert: its row, its dedup record and its outbox job
(the history copy, `backend:default`) committed in one transaction before the 200. Meanwhile
the gateway's delivery engine drains the outbox to a history backend
(`python -m cutover.examples.backends legacy`, a third process), as it would in production. A
case counts only 200 answers; any other status is reported as an error.

The PostgreSQL case uses a schema of its own (created and dropped here) through the DSN's
`search_path`. Everything runs on 127.0.0.1 from a temporary directory that is removed at the
end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(port: int, storage: str, history_port: int) -> dict:
    return {
        "listen": f"127.0.0.1:{port}",
        "admin": "off",
        "access_log": {"enabled": False},
        "storage": storage,
        "backends": {"history": f"http://127.0.0.1:{history_port}"},
        "routes": [{"name": "default", "split": {"history": 100}}],
        "alerts": {"forward_to_route": "default"},
    }


def _payload(run: str, n: int, batch: int) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "BenchAlert", "run": run, "seq": str(n * batch + i),
                       "severity": "warning", "instance": "10.0.0.1:9100"},
            "annotations": {"summary": "benchmark alert"},
            "startsAt": "2026-11-21T21:38:32Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
        }
        for i in range(batch)
    ]  # fmt: skip
    return orjson.dumps(
        {"version": "4", "status": "firing", "receiver": "cutover", "groupKey": "{}:{}",
         "truncatedAlerts": 0, "alerts": alerts}
    )  # fmt: skip


async def _load(url: str, clients: int, duration: float, batch: int) -> dict:
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))
    latencies: list[float] = []
    errors = 0
    ok = 0
    end = time.monotonic() + duration

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors, ok
        while time.monotonic() < end:
            body = _payload(run, next(counter), batch)
            started = time.monotonic()
            try:
                async with session.post(url, data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                        latencies.append(time.monotonic() - started)
                    else:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Content-Type": "application/json"}
    ) as session:
        began = time.monotonic()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.monotonic() - began
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0
        )

    return {
        "webhooks_per_s": ok / elapsed,
        "alerts_per_s": ok * batch / elapsed,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": errors,
        "webhooks": ok,
    }


def _wait_port(port: int, proc: subprocess.Popen, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("gateway exited early")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit("gateway never listened")


async def _pg(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run_case(store: str, pg: str, tmp: Path, batches: list[int], clients: int, duration: float):
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if store == "sqlite":
        storage = f"sqlite:///{tmp}/bench.db"
    else:
        asyncio.run(_pg(pg, f'CREATE SCHEMA "{schema}"'))
        storage = f"{pg}{'&' if '?' in pg else '?'}search_path={schema}"
    port, history_port = _free_port(), _free_port()
    cfg = tmp / f"{store}.yaml"
    cfg.write_text(yaml.safe_dump(_config(port, storage, history_port)))
    log = open(tmp / f"{store}.log", "wb")  # noqa: SIM115
    history = subprocess.Popen(
        [sys.executable, "-m", "cutover.examples.backends", "legacy", "--host", "127.0.0.1",
         "--port", str(history_port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutover", "serve", "-c", str(cfg)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    results = {}
    try:
        _wait_port(history_port, history)
        _wait_port(port, proc)
        url = f"http://127.0.0.1:{port}/webhook/proxy"
        asyncio.run(_load(url, clients, 2.0, 1))  # warm-up: tables, pools, caches
        for batch in batches:
            results[batch] = asyncio.run(_load(url, clients, duration, batch))
    finally:
        for p in (proc, history):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
            if p.poll() is None:
                p.kill()
        log.close()
        if store == "postgresql":
            asyncio.run(_pg(pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="sqlite,postgresql")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch", default="1,10")
    parser.add_argument(
        "--pg",
        default=os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="cutover-bench-alerts-"))
    rows = []
    try:
        for store in args.store.split(","):
            for batch, r in run_case(
                store, args.pg, tmp, batches, args.clients, args.duration
            ).items():
                rows.append((store, batch, r))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("| store | alerts per webhook | alerts/s | webhooks/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for store, batch, r in rows:
        print(
            f"| {store} | {batch} | {r['alerts_per_s']:,.0f} | {r['webhooks_per_s']:,.0f} |"
            f" {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
