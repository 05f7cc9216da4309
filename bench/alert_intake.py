"""Alert intake benchmark: alerts per second accepted durably, end to end.

    python -m cutover.bench.alert_intake [--store sqlite,postgresql] [--duration 10] [--clients 16]
                                 [--batch 1,10] [--pg postgresql://postgres@127.0.0.1:5432/test]
                                 [--workers 1,2] [--rates 500,1000,2000 --sweep-batch 1
                                  --sweep-seconds 4 --plot bench/alert-intake-rate.svg] [--json F]
                                 [--receiver history|fast] [--delivery on,off]
                                 [--payload minimal|alertmanager]

A `python -m cutover serve` process (1 worker) takes Alertmanager webhooks on /webhook/proxy;
this process posts them from `--clients` concurrent keep-alive connections for `--duration`
seconds per case. Every alert is new (unique labels, so no dedup), is classified by the rules,
and is accepted as the gateway accepts any alert: its row, its dedup record and its outbox job
(the history copy, `backend:default`) committed in one transaction before the 200. Meanwhile
the gateway's delivery engine drains the outbox to a history backend
(`python -m cutover.examples.backends legacy`, a third process), as it would in production. A
case counts only 200 answers; any other status is reported as an error. Each closed-loop case
also reports the gateway's CPU (user + system, its process tree, from /proc) per accepted
webhook: intake and the delivery engine's draining together, apart from the other processes,
and the delivery attempts the engine made meanwhile (its share of that CPU).

`--receiver fast`: the engine posts to a receiver that answers 200 at once (this module,
`--serve-receiver`) instead of the example history backend, so that what a delivery costs is
the gateway's alone. `--delivery off`: the receiver is paused (SIGSTOP) after the warm-up, so
the engine's deliveries in flight wait and it claims nothing more: intake alone.

`--payload alertmanager`: each webhook is the whole body Alertmanager sends (every alert with
its `fingerprint`, the group's labels and annotations, the external URL) instead of the fields
the intake needs (`minimal`, the default, for which the gateway computes each fingerprint).

`--workers`: the gateway's worker processes (`cutover serve --workers`), one set of cases each.
`--rates`: an offered-rate sweep after the closed-loop cases, open model (`bench.fixed_rate`:
webhooks leave on a fixed schedule over `--connections` keep-alive connections, latency counts
from the schedule, so a stall is not hidden), `--sweep-batch` alerts per webhook; `--plot`
draws accepted alerts/s and p99 against the offered alerts/s (SVG, one line per store and
worker count). Each webhook in a sweep is new as well (its bodies are built before the clock).

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
import signal
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

from cutover.bench.fixed_rate import run_blocking

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


SHAPES = ("minimal", "alertmanager")


def _payload(run: str, n: int, batch: int, shape: str = "minimal") -> bytes:
    """One webhook of `batch` new alerts. `minimal`: the fields the intake needs (it computes
    each alert's fingerprint); `alertmanager`: the whole v4 body Alertmanager sends, with each
    alert's `fingerprint` and the group's labels, annotations and external URL."""
    first = n * batch
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "BenchAlert", "run": run, "seq": str(first + i),
                       "severity": "warning", "instance": "10.0.0.1:9100"},
            "annotations": {"summary": "benchmark alert"},
            "startsAt": "2026-11-21T21:38:32Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
        }
        for i in range(batch)
    ]  # fmt: skip
    body = {"version": "4", "status": "firing", "receiver": "cutover", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "alerts": alerts}  # fmt: skip
    if shape == "alertmanager":
        for i, alert in enumerate(alerts):  # unique per run: 8 hex digits of it, 8 of the seq
            alert["fingerprint"] = f"{run}{(first + i) & 0xFFFFFFFF:08x}"
        body.update(
            groupKey='{}:{alertname="BenchAlert"}',
            groupLabels={"alertname": "BenchAlert"},
            commonLabels={"alertname": "BenchAlert", "severity": "warning"},
            commonAnnotations={"summary": "benchmark alert"},
            externalURL="http://127.0.0.1:9093",
        )
    return orjson.dumps(body)


async def _load(
    url: str, clients: int, duration: float, batch: int, shape: str = "minimal"
) -> dict:
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))
    latencies: list[float] = []
    errors = 0
    ok = 0
    end = time.monotonic() + duration

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors, ok
        while time.monotonic() < end:
            body = _payload(run, next(counter), batch, shape)
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


class _FastReceiver(asyncio.Protocol):
    """A history backend that costs next to nothing: 200 `{}` to every request (HTTP/1.1,
    keep-alive, bodies of declared length), so the gateway's own cost per delivery shows."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        answers = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                break
            self.buf = self.buf[end + 4 + length :]
            answers += 1
        if answers and self.transport is not None:
            self.transport.write(self.ANSWER * answers)


def serve_fast_receiver(port: int) -> None:
    """Run `_FastReceiver` on 127.0.0.1:`port` until killed."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_FastReceiver, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


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


def _sweep_point(
    url: str, rate: float, batch: int, seconds: float, connections: int, shape: str = "minimal"
) -> dict:
    """One open-model run at `rate` webhooks/s: accepted alerts/s and latency from schedule."""
    run = uuid.uuid4().hex[:8]
    count = max(1, round(rate * seconds))
    bodies = [_payload(run, n, batch, shape) for n in range(count)]
    r = run_blocking(
        url,
        rate=rate,
        count=count,
        connections=connections,
        method="POST",
        headers=[("Content-Type", "application/json")],
        drain=3.0,
        bodies=bodies,
    )
    seconds_run = max(r.seconds, 1e-9)
    return {
        "offered_alerts_per_s": rate * batch,
        "alerts_per_s": r.ok * batch / seconds_run,
        "p50_ms": r.latency_ms.get("50", 0.0),
        "p99_ms": r.latency_ms.get("99", 0.0),
        "errors": r.errors,
        "unfinished": r.unfinished,
        "statuses": r.statuses,
        "client_cpu_s": r.cpu_seconds,
    }


def _batches(port: int) -> tuple[float, float] | None:
    """(batches, alerts in them) so far, from /metrics (None before group commit)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        for key in ("count", "sum"):
            if line.startswith(f"cutover_alert_intake_batch_alerts_{key} "):
                values[key] = float(line.split()[-1])
    return (values["count"], values["sum"]) if len(values) == 2 else None


def _deliveries(port: int) -> float | None:
    """Delivery attempts so far (every target and outcome), from /metrics: the engine shares
    the gateway's CPU, and how much of it it got differs from run to run."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("cutover_publishing_deliveries_total{")
    )


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the process `pid` and its descendants.

    The gateway's own cost per webhook, apart from the load generator, the history backend and
    the database sharing the machine: read from /proc (0.0 where there is none)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def _drain(pid: int, port: int, store: str, storage: str, tmp: Path, limit: float = 120.0):
    """Delivery alone: the backlog the cases left, drained with no intake. Deliveries/s and
    the gateway's CPU per delivery (claim, send, completion), until the outbox is empty."""
    sent, cpu, began = _deliveries(port), _tree_cpu(pid), time.monotonic()
    pending = _pending_jobs(store, storage, tmp)
    while pending and time.monotonic() - began < limit:
        time.sleep(0.25)
        pending = _pending_jobs(store, storage, tmp)
    seconds = time.monotonic() - began
    done = (_deliveries(port) or 0.0) - (sent or 0.0)
    return {
        "deliveries": done,
        "seconds": seconds,
        "deliveries_per_s": done / seconds,
        "gateway_cpu_us_per_delivery": (_tree_cpu(pid) - cpu) / done * 1e6 if done else None,
        "pending_left": pending,
    }


def _mean_batch(before: tuple[float, float] | None, after: tuple[float, float] | None):
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def _pending_jobs(store: str, storage: str, tmp: Path) -> int | None:
    """Outbox jobs not yet delivered when a case ends (how far delivery is behind)."""

    async def count() -> int:
        from cutover.core.db import open_database

        if store == "sqlite":
            db = await open_database(storage)
        else:
            dsn, _, schema = storage.partition("search_path=")
            db = await open_database(dsn.rstrip("?&"), schema=schema)
        try:
            return int(await db.fetchval("SELECT COUNT(*) FROM publishing_jobs"))
        finally:
            await db.close()

    try:
        return asyncio.run(count())
    except Exception:
        return None


def run_case(
    store: str,
    pg: str,
    tmp: Path,
    batches: list[int],
    clients: int,
    duration: float,
    workers: int = 1,
    rates: list[float] = (),  # type: ignore[assignment]
    sweep_batch: int = 1,
    sweep_seconds: float = 4.0,
    connections: int = 64,
    receiver: str = "history",
    delivery: bool = True,
    drain: bool = False,
    shape: str = "minimal",
):
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if store == "sqlite":
        storage = f"sqlite:///{tmp}/bench-{workers}.db"
    else:
        asyncio.run(_pg(pg, f'CREATE SCHEMA "{schema}"'))
        storage = f"{pg}{'&' if '?' in pg else '?'}search_path={schema}"
    port, history_port = _free_port(), _free_port()
    cfg = tmp / f"{store}-{workers}.yaml"
    cfg.write_text(yaml.safe_dump(_config(port, storage, history_port)))
    log = open(tmp / f"{store}-{workers}.log", "wb")  # noqa: SIM115
    if receiver == "fast":
        command = [sys.executable, "-m", "cutover.bench.alert_intake", "--serve-receiver",
                   str(history_port)]  # fmt: skip
    else:
        command = [sys.executable, "-m", "cutover.examples.backends", "legacy", "--host",
                   "127.0.0.1", "--port", str(history_port)]  # fmt: skip
    history = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutover", "serve", "-c", str(cfg), "--workers", str(workers)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    results: dict = {}
    sweep: list[dict] = []
    try:
        _wait_port(history_port, history)
        _wait_port(port, proc)
        url = f"http://127.0.0.1:{port}/webhook/proxy"
        asyncio.run(_load(url, clients, 2.0, 1))  # warm-up: tables, pools, caches
        if not delivery:
            # The receiver stops answering: the engine's deliveries in flight wait (their
            # timeout is the route's), so it claims nothing more and intake has the worker.
            os.kill(history.pid, signal.SIGSTOP)
        for batch in batches:
            mark, cpu, sent = _batches(port), _tree_cpu(proc.pid), _deliveries(port)
            results[batch] = asyncio.run(_load(url, clients, duration, batch, shape))
            webhooks = results[batch]["webhooks"]
            results[batch]["gateway_cpu_us_per_webhook"] = (
                (_tree_cpu(proc.pid) - cpu) / webhooks * 1e6 if webhooks else None
            )
            after = _deliveries(port)
            results[batch]["deliveries"] = (
                after - sent if after is not None and sent is not None else None
            )
            results[batch]["mean_batch_alerts"] = _mean_batch(mark, _batches(port))
            results[batch]["pending_jobs"] = _pending_jobs(store, storage, tmp)
        if drain and delivery:  # paused, its deliveries timed out and wait for their retries
            results["drain"] = _drain(proc.pid, port, store, storage, tmp)
        for rate in rates:
            mark = _batches(port)
            point = _sweep_point(
                url, rate / sweep_batch, sweep_batch, sweep_seconds, connections, shape
            )
            point["mean_batch_alerts"] = _mean_batch(mark, _batches(port))
            sweep.append(point)
            print(
                f"sweep {store} w{workers}: offered {point['offered_alerts_per_s']:,.0f} alerts/s"
                f" -> {point['alerts_per_s']:,.0f}, p99 {point['p99_ms']:.1f} ms,"
                f" errors {point['errors']}, unfinished {point['unfinished']}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if not delivery:
            os.kill(history.pid, signal.SIGCONT)
        for p in (proc, history):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
            if p.poll() is None:
                p.kill()
        log.close()
        if store == "postgresql":
            asyncio.run(_pg(pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    return results, sweep


PLOT_COLORS = {
    "sqlite": ("#0072B2", "#56B4E9"),  # (this run, the run compared with); Okabe-Ito
    "postgresql": ("#D55E00", "#E69F00"),
}
STORE_NAMES = {"sqlite": "SQLite", "postgresql": "PG"}
_PLOT_STYLE = (
    "<style>.ct{font:600 14px sans-serif;fill:#1b1f24}.tk{font:11px sans-serif;fill:#57606a}"
    ".at,.lg{font:12px sans-serif;fill:#1b1f24}.pa{fill:#fff;stroke:#8c959f}"
    ".gr{stroke:#d8dee4;stroke-width:1}</style>"
)
Series = tuple[str, str, list[dict]]  # (legend, colour, sweep points)


def plot_series(sweeps: dict[tuple[str, int], list[dict]], label: str, other: bool) -> list[Series]:
    """The 1-worker sweeps of one run as plot lines (`other`: the run compared with)."""
    return [
        (f"{STORE_NAMES.get(store, store)} {label}".strip(),
         PLOT_COLORS.get(store, ("#6E7781", "#8C959F"))[other], points)
        for (store, workers), points in sweeps.items()
        if workers == 1
    ]  # fmt: skip


def render_plot(series: list[Series], batch: int) -> str:
    """Two charts in one SVG: accepted alerts/s and p99 (log) against the offered alerts/s."""
    import math

    from cutover.bench.overhead import _nice_step
    from cutover.bench.report import _Axis, _chart, _log_ticks

    offered = [p["offered_alerts_per_s"] for _, _, pts in series for p in pts]
    step = _nice_step(max(offered))
    top = step * math.ceil(max(offered) * 1.05 / step)
    ticks = tuple((step * i, f"{step * i:,.0f}") for i in range(round(top / step) + 1))
    x = _Axis(0.0, top, float, ticks, f"offered alerts/s ({batch} per webhook, fixed schedule)")
    accepted = [
        (name, c, [(p["offered_alerts_per_s"], p["alerts_per_s"]) for p in pts])
        for name, c, pts in series
    ]
    y1 = _Axis(0.0, top, float, ticks, "accepted alerts/s")
    p99s = [max(p["p99_ms"], 0.1) for _, _, pts in series for p in pts]
    lo, hi, y_ticks = _log_ticks(min(p99s), max(p99s))
    y2 = _Axis(lo, hi, math.log10, y_ticks, "p99 (log scale)")
    p99 = [
        (name, c, [(p["offered_alerts_per_s"], max(p["p99_ms"], 0.1)) for p in pts])
        for name, c, pts in series
    ]
    gap, width = 118, 720
    a = _chart("Accepted alerts/s", accepted, x, y1, width=width, legend_gap=gap)
    b = _chart("p99 (from schedule)", p99, x, y2, width=width, legend_gap=gap)
    inner = [svg.partition(">")[2].rpartition("</svg>")[0] for svg in (a, b)]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 640" width="{width}"'
        f' height="640" role="img" aria-label="Alert intake by offered rate">{_PLOT_STYLE}'
        f"<g>{inner[0]}</g>"
        f'<g transform="translate(0 320)">{inner[1]}</g></svg>'
    )


def _fmt_mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="sqlite,postgresql")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch", default="1,10")
    parser.add_argument("--workers", default="1", help="worker counts, e.g. 1,2")
    parser.add_argument("--rates", default="", help="offered alerts/s for the sweep, e.g. 500,1000")
    parser.add_argument("--sweep-batch", type=int, default=1)
    parser.add_argument("--sweep-seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64, help="sweep connections (64)")
    parser.add_argument("--plot", help="write the sweep's SVG here")
    parser.add_argument("--plot-label", default="", help="this run's name in the legend")
    parser.add_argument(
        "--plot-with",
        metavar="FILE:LABEL",
        help="also draw the 1-worker sweeps of an earlier run's --json file, named LABEL",
    )
    parser.add_argument("--json", help="write every figure here as JSON")
    parser.add_argument(
        "--receiver",
        choices=("history", "fast"),
        default="history",
        help="what the delivery engine posts to: the example history backend (default) or a"
        " receiver that answers 200 at once",
    )
    parser.add_argument(
        "--delivery",
        default="on",
        help="on, off or on,off: off pauses the receiver (SIGSTOP) after the warm-up, so the"
        " delivery engine holds its deliveries in flight and claims nothing during the cases",
    )
    parser.add_argument(
        "--drain",
        action="store_true",
        help="after the closed-loop cases with delivery on, time the delivery of the backlog"
        " they left, with no intake (deliveries/s and gateway CPU per delivery)",
    )
    parser.add_argument(
        "--payload",
        choices=SHAPES,
        default="minimal",
        help="minimal (the fields the intake needs; it computes the fingerprints) or"
        " alertmanager (the whole body Alertmanager sends, fingerprints included)",
    )
    parser.add_argument("--serve-receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pg",
        default=os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args(argv)
    if args.serve_receiver:
        serve_fast_receiver(args.serve_receiver)
        return 0
    batches = [int(b) for b in args.batch.split(",") if b]
    rates = [float(r) for r in args.rates.split(",") if r]
    tmp = Path(tempfile.mkdtemp(prefix="cutover-bench-alerts-"))
    rows = []
    sweeps: dict[tuple[str, int], list[dict]] = {}
    drains: list[tuple[str, int, str, dict]] = []
    try:
        for delivery in args.delivery.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                for store in args.store.split(","):
                    results, sweep = run_case(
                        store, args.pg, tmp, batches, args.clients, args.duration, workers,
                        rates, args.sweep_batch, args.sweep_seconds, args.connections,
                        args.receiver, delivery == "on", args.drain, args.payload,
                    )  # fmt: skip
                    if "drain" in results:
                        drains.append((store, workers, delivery, results.pop("drain")))
                    rows += [(store, workers, batch, delivery, r) for batch, r in results.items()]
                    if sweep and delivery == "on":
                        sweeps[(store, workers)] = sweep
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        "| store | workers | delivery | alerts per webhook | alerts/s | webhooks/s | p50 ms"
        " | p99 ms | errors | jobs pending at the end | alerts per commit"
        " | gateway CPU µs per webhook | deliveries during the case |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for store, workers, batch, delivery, r in rows:
        print(
            f"| {store} | {workers} | {delivery} | {batch} | {r['alerts_per_s']:,.0f} |"
            f" {r['webhooks_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
            f" {r['errors']} | {r['pending_jobs']} | {_fmt_mean(r['mean_batch_alerts'])} |"
            f" {_fmt_mean(r['gateway_cpu_us_per_webhook'])} | {_fmt_mean(r['deliveries'])} |"
        )
    if drains:
        print()
        print("| store | workers | delivery during the cases | backlog delivered | seconds"
              " | deliveries/s | gateway CPU µs per delivery | jobs left |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for store, workers, delivery, d in drains:
            print(
                f"| {store} | {workers} | {delivery} | {d['deliveries']:,.0f} |"
                f" {d['seconds']:.1f} | {d['deliveries_per_s']:,.0f} |"
                f" {_fmt_mean(d['gateway_cpu_us_per_delivery'])} | {d['pending_left']} |"
            )
    if sweeps:
        print()
        print(
            "| store | workers | offered alerts/s | accepted alerts/s | p50 ms | p99 ms | errors"
            " | alerts per commit |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for (store, workers), points in sweeps.items():
            for p in points:
                print(
                    f"| {store} | {workers} | {p['offered_alerts_per_s']:,.0f} |"
                    f" {p['alerts_per_s']:,.0f} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} |"
                    f" {p['errors'] + p['unfinished']} | {_fmt_mean(p['mean_batch_alerts'])} |"
                )
        if args.plot:
            series = plot_series(sweeps, args.plot_label, other=False)
            if args.plot_with:
                path, _, label = args.plot_with.rpartition(":")
                earlier: dict[tuple[str, int], list[dict]] = {}
                for p in orjson.loads(Path(path).read_bytes())["sweep"]:
                    earlier.setdefault((p["store"], p["workers"]), []).append(p)
                series = plot_series(earlier, label, other=True) + series
            Path(args.plot).write_text(render_plot(series, args.sweep_batch) + "\n")
    if args.json:
        Path(args.json).write_text(
            orjson.dumps(
                {
                    "closed": [
                        {"store": s, "workers": w, "batch": b, "delivery": d, **r}
                        for s, w, b, d, r in rows
                    ],
                    "drain": [
                        {"store": s, "workers": w, "delivery": d, **r} for s, w, d, r in drains
                    ],
                    "sweep": [
                        {"store": s, "workers": w, **p}
                        for (s, w), pts in sweeps.items()
                        for p in pts
                    ],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
