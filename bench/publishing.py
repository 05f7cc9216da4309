"""Publishing benchmark: deliveries per second, and webhook-to-delivery latency.

    python -m cutover.bench.publishing [--jobs 2000] [--alerts 300] [--rate 50] [--workers 1]
                               [--storage sqlite|postgresql://...] [--concurrency 16]

Two measurements against `python -m cutover serve` (a subprocess) and a fast receiver (an
aiohttp app in this process answering 200 at once), all on 127.0.0.1:

1. throughput: `--jobs` jobs are put in the outbox before the gateway starts; the figure is
   jobs / (last delivery - first delivery), so start-up is not counted;
2. latency: `--alerts` Alertmanager envelopes (one alert each) are POSTed to
   `/webhook/proxy` at `--rate` per second; each alert's time from the POST leaving this
   process to its delivery arriving back here (one clock), reported as p50/p99/max.

Everything runs from a temporary directory removed at the end. A PostgreSQL URL puts the
outbox in a fresh schema, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import MappingProxyType

import aiohttp
import orjson
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        self.count += 1
        self.first = self.first or now
        self.last = now
        fp = orjson.loads(body)["alerts"][0]["fingerprint"]
        self.arrivals.setdefault(fp, now)
        return web.Response(text="ok")

    async def history(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")


async def _wait(predicate, deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise SystemExit("timed out waiting for deliveries")


async def run(args: argparse.Namespace) -> dict[str, object]:
    from cutover.alerts.model import Alert
    from cutover.core.clock import Clock
    from cutover.core.db import open_database
    from cutover.publishing.outbox import Outbox

    tmp = Path(tempfile.mkdtemp(prefix="cutover-bench-pub-"))
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/history", receiver.history)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    rport = _free_port()
    await web.TCPSite(runner, "127.0.0.1", rport).start()
    schema = None
    if args.storage == "sqlite":
        storage = f"sqlite:///{tmp / 'state.db'}"
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = await open_database(args.storage, schema=schema)
        await admin.close()
        storage = f"{args.storage}?search_path={schema}"
    port = _free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "workers": args.workers,
        "admin": "off",
        "access_log": {"enabled": False},
        "storage": storage,
        "backends": {"history": {"url": f"http://127.0.0.1:{rport}", "health": None}},
        "routes": [{"name": "default", "match": {"path_prefix": "/"}, "split": {"history": 100}}],
        "publishing": {
            "targets": [{"name": "fast", "type": "webhook", "url": f"http://127.0.0.1:{rport}/hook",
                         "rate_limit": "off", "concurrency": args.concurrency}],
            "delivery": {"workers": args.concurrency * 2, "poll_interval": "200ms"},
            "history": {"path": "/history"},
        },
        "alerts": {"routing": {"targets": ["fast"]}, "forward_to_route": "default"},
    }  # fmt: skip
    path = tmp / "cutover.yaml"
    path.write_text(yaml.safe_dump(config))
    proc: subprocess.Popen[bytes] | None = None
    db = await open_database(storage)
    try:
        outbox = Outbox(db, Clock())
        await outbox.setup()
        clock = Clock()
        batch = 200
        for start in range(0, args.jobs, batch):
            async with db.transaction() as tx:
                for i in range(start, min(args.jobs, start + batch)):
                    alert = Alert(
                        fingerprint=f"tp-{i}",
                        status="firing",
                        labels=MappingProxyType({"alertname": "Bench", "i": str(i)}),
                    )
                    await outbox.enqueue(tx, alert, ["fast"], now=clock.now())
        proc = subprocess.Popen(
            [sys.executable, "-m", "cutover", "serve", "-c", str(path)],
            cwd=ROOT,
            stdout=open(tmp / "gateway.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        await _wait(lambda: receiver.count >= args.jobs, 600)
        assert receiver.first is not None and receiver.last is not None
        throughput = args.jobs / max(1e-9, receiver.last - receiver.first)

        # latency through POST /webhook/proxy
        sent: dict[str, float] = {}
        async with aiohttp.ClientSession() as http:
            for _ in range(100):  # the listener is up once the jobs flowed; check anyway
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
            interval = 1.0 / args.rate
            started = time.perf_counter()
            for i in range(args.alerts):
                fp = f"lat-{i}"
                envelope = {
                    "version": "4", "groupKey": f"g{i}", "truncatedAlerts": 0,
                    "status": "firing", "receiver": "bench", "groupLabels": {},
                    "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
                    "alerts": [{"status": "firing", "fingerprint": fp,
                                "labels": {"alertname": "BenchLatency", "i": str(i)},
                                "annotations": {}, "startsAt": "2026-11-21T00:00:00Z",
                                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": ""}],
                }  # fmt: skip
                due = started + i * interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                sent[fp] = time.perf_counter()
                async with http.post(
                    f"http://127.0.0.1:{port}/webhook/proxy", json=envelope
                ) as resp:
                    if resp.status != 200:
                        raise SystemExit(f"/webhook/proxy answered {resp.status}")
        await _wait(lambda: all(fp in receiver.arrivals for fp in sent), 120)
        lat = [(receiver.arrivals[fp] - t) * 1000 for fp, t in sent.items()]
        return {
            "storage": "sqlite" if schema is None else "postgresql",
            "workers": args.workers,
            "jobs": args.jobs,
            "deliveries_per_s": round(throughput, 1),
            "alerts": args.alerts,
            "rate": args.rate,
            "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(percentile(lat, 0.99), 1),
            "max_ms": round(max(lat), 1),
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if schema is not None:
            await db.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await db.close()
        await runner.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--alerts", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--storage", default="sqlite")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
