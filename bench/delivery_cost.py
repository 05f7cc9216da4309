"""Delivery engine benchmark: gateway CPU per delivery, with no intake at all.

    python -m cutover.bench.delivery_cost [--store sqlite|postgresql] [--jobs 15000] [--runs 1]

`--jobs` pending history jobs (`backend:default`, as the intake writes them) are written into
the outbox before the gateway starts (`bench.outbox_backlog.fill`); the receiver (this
package's fast receiver, `bench.alert_intake --serve-receiver`, 200 at once) is paused until
the gateway listens, so that its start-up is not counted. Then the receiver goes on and the
drain is timed: deliveries/s, and the gateway's CPU (its process tree, from /proc) per
delivery — claim, send, completion — until the outbox is empty. Everything on 127.0.0.1; a
PostgreSQL run uses a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from cutover.bench import alert_intake as intake
from cutover.bench.outbox_backlog import fill, job_rows
from cutover.core.clock import Clock
from cutover.core.db import open_database
from cutover.publishing.outbox import Outbox

ROOT = Path(__file__).resolve().parent.parent


async def _prepare(store: str, storage: str, pg: str, schema: str, jobs: int) -> None:
    if store == "sqlite":
        db = await open_database(storage)
    else:
        db = await open_database(pg, schema=schema)
    try:
        await Outbox(db, Clock()).setup()
    finally:
        await db.close()
    await fill(storage, list(job_rows(jobs, ["backend:default"], time.time())))


def run_once(store: str, jobs: int, pg: str, limit: float = 300.0) -> dict[str, float]:
    """One drain of `jobs` pending jobs: deliveries, seconds, deliveries/s, CPU µs each."""
    tmp = Path(tempfile.mkdtemp(prefix="cutover-bench-delivery-"))
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if store == "sqlite":
        storage = f"sqlite:///{tmp}/bench.db"
    else:
        asyncio.run(intake._pg(pg, f'CREATE SCHEMA "{schema}"'))
        storage = f"{pg}{'&' if '?' in pg else '?'}search_path={schema}"
    procs: list[subprocess.Popen] = []
    try:
        asyncio.run(_prepare(store, storage, pg, schema, jobs))
        port, receiver_port = intake._free_port(), intake._free_port()
        cfg = tmp / "gateway.yaml"
        cfg.write_text(yaml.safe_dump(intake._config(port, storage, receiver_port)))
        receiver = subprocess.Popen(
            [sys.executable, "-m", "cutover.bench.alert_intake", "--serve-receiver",
             str(receiver_port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(receiver)
        intake._wait_port(receiver_port, receiver)
        os.kill(receiver.pid, signal.SIGSTOP)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "cutover", "serve", "-c", str(cfg), "--workers", "1"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.insert(0, gateway)
        intake._wait_port(port, gateway)
        time.sleep(1.0)  # started: its first deliveries wait on the paused receiver
        sent, cpu, began = intake._deliveries(port), intake._tree_cpu(gateway.pid), time.monotonic()
        os.kill(receiver.pid, signal.SIGCONT)
        while intake._pending_jobs(store, storage, tmp) and time.monotonic() - began < limit:
            time.sleep(0.1)
        seconds = time.monotonic() - began
        done = (intake._deliveries(port) or 0.0) - (sent or 0.0)
        used = intake._tree_cpu(gateway.pid) - cpu
        return {
            "deliveries": done,
            "seconds": seconds,
            "deliveries_per_s": done / seconds,
            "cpu_us_per_delivery": used / done * 1e6 if done else float("nan"),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.terminate()
                p.wait(30)
        if store == "postgresql":
            asyncio.run(intake._pg(pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="sqlite,postgresql")
    parser.add_argument("--jobs", type=int, default=15_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--pg",
        default=os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args(argv)
    print("| store | run | deliveries | seconds | deliveries/s | gateway CPU µs per delivery |")
    print("|---|---|---|---|---|---|")
    for run in range(1, args.runs + 1):
        for store in args.store.split(","):
            r = run_once(store, args.jobs, args.pg)
            print(
                f"| {store} | {run} | {r['deliveries']:,.0f} | {r['seconds']:.2f} |"
                f" {r['deliveries_per_s']:,.0f} | {r['cpu_us_per_delivery']:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
