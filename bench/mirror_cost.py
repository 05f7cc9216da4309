"""What 100 % mirroring costs the primary: its latency at a fixed rate, with and without a mirror.

    python -m cutover.bench.mirror_cost --rates 200,1000 --seconds 4 --rounds 2

One-worker gateways run side by side in front of two nginx processes (one worker each): the
primary, serving a ~1.5 KiB JSON answer, and the candidate, serving a slightly different one.
The gateways (`--sides`, default `plain,mirror,mirror-inline`):

- `plain`: the route sends everything to the primary, no mirror (the fast path serves it);
- `mirror`: the same route with `mirror: {to: candidate, percent: 100}` and
  `parity.mirror.shed_lag` from `--shed-lag` (default: the config's default, 5ms) and
  `parity.mirror.cpu` from `--mirror-cpu-budget` (default off); the fast path
  serves it and takes the copy;
- `mirror-noshed`: the same with `shed_lag: off` and `shed_wait: off`, i.e. the mirror takes
  whatever CPU it needs;
- `mirror-nonoise`: `mirror` with `parity.mirror.noise: false` (the primary backend is not
  asked a second time);
- `mirror-full`: `mirror` whose mirror process is stopped (SIGSTOP) once it holds
  `FULL_QUEUE` copies: every request is sampled and its copy dropped, and nothing of the
  mirror runs anywhere else. What `mirror` costs beyond it is the copies and their outcomes,
  on the gateway and, on one host, the mirror process beside the clients and backends;
- `plain-neighbour`: `plain` with a CPU neighbour during its runs (`bench.neighbour`): a
  process on the mirror process's CPUs (`--mirror-cpus`) and in its scheduling class that
  burns `--neighbour-share` of a CPU in bursts every `--neighbour-period` and talks to nobody.
  What it costs the primary is the host's, not the mirror's: set it to the mirror process's
  CPU in `mirror` (the table's column) to tell the two apart;
- `mirror-inline`: `mirror` with `parity.mirror.process: false` (the mirror's work on the
  gateway's own event loop, as before the mirror process);
- `plain-aiohttp`, `mirror-aiohttp`: `plain` and `mirror` with `fast_path: false` (aiohttp
  serves every request: the general path's cost, and how mirrored routes were served before
  the fast path took the copy).

Per rate and round, each side gets the same open-model load (`bench.fixed_rate`, latency from each
request's scheduled time, no coordinated omission) in a rotated order; the table gives the
primary's p50/p99 (medians over rounds), their ratios to `plain` taken round by round (the median
of the per-round ratios, their range in brackets: a round's sides run within seconds of each other,
so the host's drift between rounds cancels out) and the mirror's counters over the run (queued,
shed, dropped, compared). Bounded: rates x rounds x sides runs of `--seconds` each, plus start-up.
Nothing is pinned unless asked: `--candidate-cpus 1` keeps the candidate's nginx on CPU 1 (a
candidate that runs elsewhere, as in production, as far as one host can say); `--mirror-cpus`,
`--primary-cpus`, `--gateway-cpus` and `--load-cpus` do the same for the gateways' mirror
processes, the primary's nginx, the gateways themselves (their main thread) and the load generator;
`--candidate-idle` runs the candidate's nginx under SCHED_IDLE (it gets only CPU time nothing else
wants: the nearest this host comes to a candidate on other machines). `--load-realtime` and
`--primary-realtime` run the load generator and the primary's nginx under SCHED_FIFO: in
production both are on other machines, and here the mirror process and the candidate, idle class
or not, made a normal process on their CPU wait (the generator sent 1-2 ms late at the 99th
percentile; the table's per-round lines say how late it sent). The layout closest to production
is the gateway alone on one core: `--gateway-cpus 0 --mirror-cpus 1 --load-cpus 1
--candidate-cpus 1 --primary-cpus 1 --candidate-idle --load-realtime --primary-realtime`. On a
shared machine the figures are ratios within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cutover.bench.fixed_rate import FixedRateResult
from cutover.bench.overhead import (
    ROOT,
    Processes,
    _common_http,
    _main_block,
    _nginx_user,
    fixed_rate_command,
    free_port,
    paired_ratio,
    wait_port,
)
from cutover.bench.stats import percentile

__all__ = ["DEFAULT_SIDES", "SIDES", "main", "mirror_counts", "render_table"]

SIDES = (
    "plain",
    "plain-aiohttp",
    "plain-neighbour",
    "mirror",
    "mirror-noshed",
    "mirror-nonoise",
    "mirror-full",
    "mirror-inline",
    "mirror-aiohttp",
)
DEFAULT_SIDES = ("plain", "mirror", "mirror-inline")
FULL_QUEUE = 50  # parity.mirror.queue of `mirror-full`: what its stopped mirror process holds
PATH = "/alerts/1.json"


def alert_json(candidate: bool) -> bytes:
    """An alert-like answer of ~1.5 KiB; the candidate's differs in two fields."""
    alerts = [
        {
            "fingerprint": f"{i:016x}",
            "status": "firing",
            "labels": {"alertname": f"HighLatency{i}", "severity": "warning", "team": "core"},
            "annotations": {"summary": "p99 latency over 500ms for 5 minutes", "runbook": "x"},
            "startsAt": "2026-12-05T01:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "count": str(i) if candidate and i == 2 else i,
        }
        for i in range(4)
    ]
    body = {"alerts": alerts, "total": 4, "version": "2" if candidate else "1"}
    return json.dumps(body).encode()


def origin_conf(prefix: str, name: str, port: int, docroot: str) -> str:
    """One static nginx (one worker) serving `docroot` on `port`: the primary, or the candidate
    (each its own process, as two implementations are two services)."""
    return "\n".join(
        [
            *_main_block(prefix, name, 1, _nginx_user()),
            "http {",
            "    access_log off;",
            "    default_type application/json;",
            "    keepalive_requests 1000000;",
            *_common_http(prefix, name),
            "    server {",
            f"        listen 127.0.0.1:{port};",
            f"        root {docroot};",
            "    }",
            "}",
            "",
        ]
    )


def gateway_conf(
    port: int,
    primary: int,
    candidate: int,
    side: str,
    storage: str,
    shed_lag: str = "5ms",
    shed_wait: str = "20%",
    queue: int = 1000,
    cpu: str = "off",
) -> str:
    mirror = "" if side.startswith("plain") else "    mirror: {to: candidate, percent: 100}\n"
    shed = "off" if side == "mirror-noshed" else shed_lag
    wait = "off" if side == "mirror-noshed" else shed_wait
    fast = "false" if side.endswith("-aiohttp") else "true"
    process = "false" if side == "mirror-inline" else "true"
    noise = "false" if side == "mirror-nonoise" else "true"
    # `mirror-full`'s stopped mirror process must not be taken for a hung one and restarted
    timeout = ", timeout: 600s" if side == "mirror-full" else ""
    return (
        f"listen: 127.0.0.1:{port}\n"
        f"fast_path: {fast}\n"
        "admin: off\n"
        "access_log: false\n"
        f"storage: sqlite://{storage}\n"
        "backends:\n"
        f"  primary: {{url: 'http://127.0.0.1:{primary}', health: {{path: /health.json}}}}\n"
        f"  candidate: {{url: 'http://127.0.0.1:{candidate}', health: {{path: /health.json}}}}\n"
        "routes:\n"
        "  - name: default\n"
        "    split: {primary: 100}\n"
        f"{mirror}"
        f"parity: {{mirror: {{shed_lag: {shed}, shed_wait: '{wait}', process: {process},"
        f" noise: {noise}, queue: {queue}, cpu: '{cpu}'{timeout}}}}}\n"
    )


_SAMPLE = re.compile(r"^(cutover_parity_[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$", re.M)
_LAG = re.compile(r"^cutover_parity_loop_lag_seconds(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)
_WAIT = re.compile(r"^cutover_parity_loop_cpu_wait_ratio(?:\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def mirror_counts(metrics_text: str) -> dict[str, float]:
    """Mirror counters from a /metrics exposition: queued, shed, dropped, compared."""
    out = {"queued": 0.0, "shed": 0.0, "dropped": 0.0, "compared": 0.0}
    for name, labels, value in _SAMPLE.findall(metrics_text):
        result = re.search(r'result="([a-z]+)"', labels)
        if result is None:
            continue
        if name == "cutover_parity_mirror_requests_total" and result[1] in out:
            out[result[1]] += float(value)
        elif name == "cutover_parity_comparisons_total":
            out["compared"] += float(value)
    return out


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def scrape(port: int) -> dict[str, float]:
    return mirror_counts(_metrics(port))


class LagWatch:
    """Reads the gateway's smoothed loop lag every `every` seconds during a run (max and
    median); 0: not at all. Each read is a /metrics scrape on the gateway's loop (most of a
    millisecond): at 4 a second it is itself in a high rate's p99, where Prometheus scrapes
    every 15-60 s."""

    def __init__(self, port: int, every: float = 0.25) -> None:
        self.port = port
        self.every = every
        self.values: list[float] = []
        self.waits: list[float] = []  # the loop's run-queue wait, percent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                text = _metrics(self.port)
                found = _LAG.search(text)
                waited = _WAIT.search(text)
                if waited:
                    self.waits.append(float(waited[1]) * 100.0)
            except OSError:
                continue
            if found:
                self.values.append(float(found[1]) * 1000.0)

    def __enter__(self) -> LagWatch:
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of process `pid` itself and of its live children (the
    gateway and its mirror process), from /proc."""

    def own(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime

    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(c) for c in task.read_text().split()]
    return own(pid), sum(own(c) for c in children)


def _tree(pid: int) -> list[int]:
    """Process `pid` and its children (nginx's workers; the gateway's mirror process)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids += [int(c) for c in task.read_text().split()]
    return pids


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin process `pid` and its children (nginx's workers; the gateway's mirror process) to
    `cpus`."""
    for p in _tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(p, cpus)


def idle_tree(pid: int) -> None:
    """Run process `pid` and its children under SCHED_IDLE: a stand-in for a candidate that
    runs on other machines (it gets only CPU time the others leave; on this host's kernel it can
    still make a process woken on its CPU wait, see `realtime_tree`)."""
    for p in _tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setscheduler(p, os.SCHED_IDLE, os.sched_param(0))


def realtime_tree(pid: int) -> None:
    """Run process `pid` and its children under SCHED_FIFO (priority 1): a stand-in for a
    process on other machines, which nothing on this host delays. SCHED_IDLE neighbours do
    delay a normal process here: with the mirror process and the candidate on its CPU, the load
    generator sent its requests up to 1-2 ms late at the 99th percentile."""
    for p in _tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setscheduler(p, os.SCHED_FIFO, os.sched_param(1))


@contextlib.contextmanager
def neighbour(
    procs: Processes, tmp: Path, seconds: float, share: float, period: float, cpus: set[int]
) -> Iterator[None]:
    """`bench.neighbour` burning `share` of a CPU on `cpus` (nice 10, SCHED_IDLE) meanwhile."""
    cmd = [sys.executable, "-m", "cutover.bench.neighbour", "--idle", "--seconds", str(seconds)]
    cmd += ["--share", str(share), "--period", str(period)]
    proc = procs.start("neighbour", cmd, tmp / "neighbour.out", cwd=ROOT)
    if cpus:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(proc.pid, cpus)
    try:
        yield
    finally:
        procs.stop(proc)


def _cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",") if c}


def fixed_rate(
    port: int,
    rate: float,
    seconds: float,
    connections: int,
    cpus: set[int] | None = None,
    realtime: bool = False,
) -> FixedRateResult:
    cmd = fixed_rate_command(
        f"http://127.0.0.1:{port}{PATH}",
        rate=rate,
        seconds=seconds,
        connections=connections,
        cpu=",".join(map(str, sorted(cpus))) if cpus else None,
    )
    cmd.append("--latencies")
    if realtime:
        cmd = ["chrt", "-f", "1", *cmd]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, check=False, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.fixed_rate exited with {proc.returncode}:\n{proc.stderr}")
    return FixedRateResult(**json.loads(proc.stdout))


def render_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One Markdown row per rate and side; ratios to `plain` at the same rate."""
    out = [
        "| rate/s | side | p50 ms | p99 ms | p50 / plain | p99 / plain | pooled p99 / plain"
        " | failed | gateway CPU µs/request | mirror process CPU µs/copy"
        " | loop lag ms (median / max) | CPU wait % | mirror queued | shed | dropped | compared |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["rate"]: r for r in rows if r["side"] == "plain"}
    for r in rows:
        b = base.get(r["rate"])
        p50r, p99r = (_ratio_text(r, b, p) for p in ("p50", "p99"))
        pooled = r.get("p99_pooled")
        base_pooled = b.get("p99_pooled") if b else None
        pooledr = f"{pooled / base_pooled:.2f}" if pooled and base_pooled else "-"
        c = r["counts"]
        mirror = (
            [
                f"{c['queued']:.0f}",
                f"{c['shed']:.0f}",
                f"{c['dropped']:.0f}",
                f"{c['compared']:.0f}",
            ]
            if r["side"].startswith("mirror")
            else ["-"] * 4
        )
        requests = c.get("requests") or 0
        gateway = f"{c['gateway_cpu'] / requests * 1e6:.0f}" if requests else "-"
        copies = c.get("compared") or 0
        child = f"{c['mirror_cpu'] / copies * 1e6:.0f}" if copies and c.get("mirror_cpu") else "-"
        out.append(
            f"| {r['rate']:g} | {r['side']} | {r['p50']:.2f} | {r['p99']:.2f} | {p50r} | {p99r}"
            f" | {pooledr} | {r['failed']} | {gateway} | {child}"
            f" | {c['lag_median']:.1f} / {c['lag_max']:.1f} | {c.get('wait_median', 0):.0f} | "
            + " | ".join(mirror)
            + " |"
        )
    return out


def pooled_percentile(
    results: Sequence[tuple[FixedRateResult, dict[str, float]]], p: float
) -> float | None:
    """The `p`th percentile of every request of every round together: a hiccup of the host
    that costs one round a few hundred slow requests moves that round's p99, hardly the
    pooled one's."""
    every = sorted(x for r, _ in results for x in r.latencies or ())
    return percentile(every, p) if every else None


def _ratio_text(row: dict[str, Any], plain: dict[str, Any] | None, key: str) -> str:
    """`row`'s `key` over `plain`'s: the median of the per-round ratios and their range, or,
    for rows without rounds (older files), the ratio of the medians."""
    if plain is None or not plain[key]:
        return "-"
    rounds, plain_rounds = row.get(f"{key}_rounds"), plain.get(f"{key}_rounds")
    if not rounds or not plain_rounds or row is plain:
        return f"{row[key] / plain[key]:.2f}"
    paired = paired_ratio(dict(enumerate(rounds)), dict(enumerate(plain_rounds)))
    if paired.median is None:
        return "-"
    return f"{paired.median:.2f} ({paired.low:.2f}-{paired.high:.2f})"


def on_time_summary(rows: Sequence[dict[str, Any]], limit_ms: float) -> list[str]:
    """Per side, the per-round ratios to `plain` over the rounds where the load generator sent
    on time for both (its p99 lateness at most `limit_ms`): a round in which the host held the
    generator back measures the host, not the gateway. Gateway CPU per request, too, paired
    by round (a host's slow minute moves both sides of a round alike)."""
    base = {r["rate"]: r for r in rows if r["side"] == "plain"}
    out = []
    for r in rows:
        b = base.get(r["rate"])
        if r["side"] == "plain" or b is None or "late_rounds" not in r or "late_rounds" not in b:
            continue
        late, base_late = r["late_rounds"], b["late_rounds"]
        kept = [i for i in range(min(len(late), len(base_late)))
                if late[i] <= limit_ms and base_late[i] <= limit_ms]  # fmt: skip
        parts = [f"{r['rate']:g}/s {r['side']}: {len(kept)} of {len(late)} rounds on time"]
        for key, name in (("p50_rounds", "p50"), ("p99_rounds", "p99"), ("cpu_rounds", "CPU")):
            num, den = r.get(key) or [], b.get(key) or []
            paired = paired_ratio(
                {i: num[i] for i in kept if i < len(num)}, {i: den[i] for i in kept if i < len(den)}
            )
            if paired.median is not None:
                parts.append(f"{name} x {paired.median:.2f} ({paired.low:.2f}-{paired.high:.2f})")
        out.append("; ".join(parts))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cutover.bench.mirror_cost")
    parser.add_argument("--rates", default="200,1000", help="comma-separated requests/s")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--on-time",
        type=float,
        default=1.0,
        help="ms: the summary's ratios keep the rounds where the load generator's p99"
        " lateness was at most this for both sides",
    )
    parser.add_argument("--shed-lag", default="5ms", help="parity.mirror.shed_lag of `mirror`")
    parser.add_argument("--shed-wait", default="20%", help="parity.mirror.shed_wait of `mirror`")
    parser.add_argument(
        "--mirror-cpu-budget",
        default="off",
        help="parity.mirror.cpu of the mirror sides: the share of a CPU their mirror process"
        " may spend (e.g. 5%%; default off)",
    )
    parser.add_argument(
        "--sides", default=",".join(DEFAULT_SIDES), help=f"comma-separated, of {', '.join(SIDES)}"
    )
    parser.add_argument(
        "--candidate-cpus",
        default="",
        help="pin the candidate's nginx to these CPUs (comma-separated): a candidate that runs"
        " elsewhere, as in production",
    )
    parser.add_argument(
        "--mirror-cpus",
        default="",
        help="pin each gateway's mirror process to these CPUs (comma-separated)",
    )
    parser.add_argument(
        "--primary-cpus",
        default="",
        help="pin the primary's nginx to these CPUs (comma-separated)",
    )
    parser.add_argument(
        "--gateway-cpus",
        default="",
        help="pin each gateway (not its mirror process) to these CPUs (comma-separated)",
    )
    parser.add_argument(
        "--load-cpus",
        default="",
        help="pin the load generator to these CPUs (comma-separated)",
    )
    parser.add_argument(
        "--load-realtime",
        action="store_true",
        help="run the load generator under SCHED_FIFO (chrt -f 1): the processes sharing its CPU"
        " cannot make it send late (clients are on other machines in production)",
    )
    parser.add_argument(
        "--primary-realtime",
        action="store_true",
        help="run the primary's nginx under SCHED_FIFO: the mirror's work on this host cannot"
        " delay it (a primary on other machines, as in production)",
    )
    parser.add_argument(
        "--candidate-idle",
        action="store_true",
        help="run the candidate's nginx under SCHED_IDLE: on this one host, a stand-in for a"
        " candidate on other machines, whose CPU delays nobody here",
    )
    parser.add_argument(
        "--lag-every",
        type=float,
        default=0.25,
        help="seconds between two reads of the gateway's loop lag during a run (a /metrics"
        " scrape on its loop each); 0: none, for latencies without them",
    )
    parser.add_argument(
        "--store-dir",
        default="",
        help="directory of the gateways' SQLite stores (default: the run's temporary directory;"
        " /dev/shm keeps the mirror process's writes off the disk and its flushes off the"
        " clients' CPU)",
    )
    parser.add_argument(
        "--neighbour-share",
        type=float,
        default=0.25,
        help="`plain-neighbour`: the share of a CPU its neighbour burns (0-1)",
    )
    parser.add_argument(
        "--neighbour-period",
        type=float,
        default=0.002,
        help="`plain-neighbour`: seconds between two of its neighbour's bursts",
    )
    parser.add_argument("--json", help="also write the raw rows to this file")
    args = parser.parse_args(argv)
    candidate_cpus = _cpus(args.candidate_cpus)
    mirror_cpus = _cpus(args.mirror_cpus)
    gateway_cpus = _cpus(args.gateway_cpus)
    primary_cpus = _cpus(args.primary_cpus)
    load_cpus = _cpus(args.load_cpus)
    rates = [float(r) for r in args.rates.split(",")]
    sides = tuple(s for s in args.sides.split(",") if s)
    unknown = set(sides) - set(SIDES)
    if unknown or "plain" not in sides:
        parser.error(f"--sides: needs plain, and only {', '.join(SIDES)} (got {args.sides})")
    procs = Processes()
    stopped: list[int] = []  # `mirror-full`'s mirror process
    with tempfile.TemporaryDirectory(prefix="cutover-mirror-cost-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            for side, candidate in (("primary", False), ("candidate", True)):
                (tmp / "www" / side / "alerts").mkdir(parents=True)
                (tmp / "www" / side / "alerts" / "1.json").write_bytes(alert_json(candidate))
                (tmp / "www" / side / "health.json").write_bytes(b'{"status":"ok"}')
            primary, candidate = free_port(), free_port()
            for name, port in (("primary", primary), ("candidate", candidate)):
                conf = tmp / f"{name}.conf"
                conf.write_text(origin_conf(str(tmp), name, port, str(tmp / "www" / name)))
                nginx = procs.start(
                    name,
                    ["nginx", "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"],
                    tmp / f"{name}.out",
                )
                wait_port(port, nginx, name)
                if name == "candidate" and candidate_cpus:
                    pin_tree(nginx.pid, candidate_cpus)
                if name == "primary" and primary_cpus:
                    pin_tree(nginx.pid, primary_cpus)
                if name == "candidate" and args.candidate_idle:
                    idle_tree(nginx.pid)
                if name == "primary" and args.primary_realtime:
                    realtime_tree(nginx.pid)
            ports: dict[str, int] = {}
            pids: dict[str, int] = {}
            for side in sides:
                port = free_port()
                path = tmp / f"{side}.yaml"
                path.write_text(
                    gateway_conf(
                        port,
                        primary,
                        candidate,
                        side,
                        str((Path(args.store_dir) if args.store_dir else tmp) / f"{side}.db"),
                        args.shed_lag,
                        args.shed_wait,
                        FULL_QUEUE if side == "mirror-full" else 1000,
                        args.mirror_cpu_budget,
                    )
                )
                cmd = [sys.executable, "-m", "cutover", "serve", "-c", str(path)]
                cmd += ["--workers", "1"]
                env = dict(os.environ, CUTOVER_LOG_LEVEL="ERROR")
                proc = procs.start(side, cmd, tmp / f"{side}.out", cwd=ROOT, env=env)
                wait_port(port, proc, side)
                ports[side] = port
                pids[side] = proc.pid
            time.sleep(1.0)
            if gateway_cpus:  # before the warm-up starts the mirror processes (--mirror-cpus)
                for pid in pids.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.sched_setaffinity(pid, gateway_cpus)
            for port in ports.values():  # warm up: pools, the store's migration
                fixed_rate(port, 100, 1, 4)
            if mirror_cpus:  # the mirror process starts with the first copy
                for pid in pids.values():
                    for task in Path(f"/proc/{pid}/task").glob("*/children"):
                        with contextlib.suppress(OSError):
                            for child in task.read_text().split():
                                pin_tree(int(child), mirror_cpus)
            if "mirror-full" in sides:
                stopped = _tree(pids["mirror-full"])[1:]
                for child in stopped:
                    os.kill(child, signal.SIGSTOP)
                fixed_rate(ports["mirror-full"], 400, 1, 4)  # fills what it may hold
                if not stopped or scrape(ports["mirror-full"])["dropped"] == 0:
                    raise RuntimeError("mirror-full: the stopped mirror process never filled")
            rows = []
            for rate in rates:
                runs: dict[str, list[tuple[FixedRateResult, dict[str, float]]]] = {
                    s: [] for s in sides
                }
                for rnd in range(args.rounds):
                    order = sides[rnd % len(sides) :] + sides[: rnd % len(sides)]
                    for side in order:
                        before = scrape(ports[side])
                        cpu_before = cpu_seconds(pids[side])
                        with (
                            neighbour(
                                procs,
                                tmp,
                                args.seconds + 1.0,
                                args.neighbour_share,
                                args.neighbour_period,
                                mirror_cpus,
                            )
                            if side == "plain-neighbour"
                            else contextlib.nullcontext(),
                            LagWatch(ports[side], args.lag_every) as watch,
                        ):
                            result = fixed_rate(
                                ports[side],
                                rate,
                                args.seconds,
                                args.connections,
                                load_cpus,
                                args.load_realtime,
                            )
                        lags = watch.values or [0.0]
                        time.sleep(1.0)  # the mirror's tail finishes inside this run's counts
                        after = scrape(ports[side])
                        cpu_after = cpu_seconds(pids[side])
                        delta = {k: after[k] - before[k] for k in after}
                        delta["requests"] = result.ok
                        delta["gateway_cpu"] = cpu_after[0] - cpu_before[0]
                        delta["mirror_cpu"] = cpu_after[1] - cpu_before[1]
                        delta["lag_median"] = statistics.median(lags)
                        delta["lag_max"] = max(lags)
                        delta["wait_median"] = statistics.median(watch.waits or [0.0])
                        runs[side].append((result, delta))
                        lat = result.latency_ms
                        print(
                            f"rate {rate:g} round {rnd} {side}: p50 {lat.get('50', 0):.2f}"
                            f" p99 {lat.get('99', 0):.2f} failed {result.failed}"
                            f" (p90 {lat.get('90', 0):.2f}, sent late p99"
                            f" {result.lag_ms.get('99', 0):.2f}) {delta}",
                            file=sys.stderr,
                            flush=True,
                        )
                for side in sides:
                    results = runs[side]
                    counts = {
                        k: sum(d[k] for _, d in results) for k in ("queued", "shed", "dropped",
                                                                   "compared", "requests",
                                                                   "gateway_cpu", "mirror_cpu")
                    }  # fmt: skip
                    counts["lag_median"] = statistics.median(d["lag_median"] for _, d in results)
                    counts["lag_max"] = max(d["lag_max"] for _, d in results)
                    counts["wait_median"] = statistics.median(d["wait_median"] for _, d in results)
                    rows.append(
                        {
                            "rate": rate,
                            "side": side,
                            "p50": statistics.median(r.latency_ms.get("50", 0) for r, _ in results),
                            "p99": statistics.median(r.latency_ms.get("99", 0) for r, _ in results),
                            "p50_rounds": [r.latency_ms.get("50", 0) for r, _ in results],
                            "p99_rounds": [r.latency_ms.get("99", 0) for r, _ in results],
                            "p99_pooled": pooled_percentile(results, 99),
                            "late_rounds": [r.lag_ms.get("99", 0) for r, _ in results],
                            "cpu_rounds": [
                                d["gateway_cpu"] / d["requests"] * 1e6 if d["requests"] else 0
                                for _, d in results
                            ],
                            "failed": sum(r.failed for r, _ in results),
                            "counts": counts,
                            "rounds": len(results),
                        }
                    )
        finally:
            for child in stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGCONT)
            procs.stop_all()
    print("\n".join(render_table(rows)))
    for line in on_time_summary(rows, args.on_time):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
