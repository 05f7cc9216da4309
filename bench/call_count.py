"""Python and C calls per request on the gateway's thread: what mirroring adds, deterministically.

    python -m cutover.bench.call_count --requests 4800 --rate 800

On a shared host the primary's latency and the gateway's CPU per request move by more than a
few percent from one round to the next, while the mirror's cost to the primary is a few
percent of each. This counts instead: every function call the gateway's main thread makes
while serving a fixed number of requests (`sys.setprofile`: a Python function's frame is a
"call", a builtin's a "C call"), divided by the requests. Counts hardly move between runs.

One-worker gateways of `bench.mirror_cost`'s configs, in front of its two nginx origins, one
side at a time:

- `plain`: no mirror;
- `mirror`: `mirror: {to: candidate, percent: 100}`, a rate the mirror process keeps up with:
  every request is copied, compared and booked;
- `mirror-full`: the same gateway with its mirror process stopped (SIGSTOP) once it holds
  `parity.mirror.queue` copies: every request finds the mirror full and is dropped.

The profiler slows the gateway several times over, so the rate is low (800/s by default); the
counts do not depend on it, but on what each request does. Bounded: three gateways, each
`--requests` requests plus a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cutover.bench.mirror_cost import alert_json, fixed_rate, gateway_conf, origin_conf, scrape
from cutover.bench.overhead import ROOT, Processes, free_port, wait_port

__all__ = ["SIDES", "main", "render"]

SIDES = ("plain", "mirror", "mirror-full")
QUEUE = 50  # parity.mirror.queue of the gateways: `mirror-full` fills it before counting
SETTLE = 1.0  # seconds after the load for the last copies to be compared and booked

# The gateway's own process: the counter, zeroed on SIGUSR1, written to OUT on SIGUSR2. With
# a third argument, each call is also counted by function (OUT.by: "count name" lines).
SERVE = """
import collections, signal, sys
calls = [0, 0]
by = collections.Counter() if len(sys.argv) > 3 else None
def profile(frame, event, arg):
    if event == "call":
        calls[0] += 1
        if by is not None:
            code = frame.f_code
            by[f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_qualname}"] += 1
    elif event == "c_call":
        calls[1] += 1
        if by is not None:
            by["C " + getattr(arg, "__qualname__", repr(arg))] += 1
def zero(*_):
    calls[0] = calls[1] = 0
    if by is not None:
        by.clear()
def write(*_):
    if by is not None:
        with open(sys.argv[2] + ".by", "w") as f:
            f.writelines(f"{n} {name}\\n" for name, n in by.most_common())
    with open(sys.argv[2], "w") as f:
        f.write(f"{calls[0]} {calls[1]}")
signal.signal(signal.SIGUSR1, zero)
signal.signal(signal.SIGUSR2, write)
sys.setprofile(profile)
from cutover.cli import main
sys.exit(main(["serve", "-c", sys.argv[1], "--workers", "1"]))
"""


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(c) for c in task.read_text().split()]
    return out


def _count(
    procs: Processes,
    tmp: Path,
    side: str,
    origins: tuple[int, int],
    requests: int,
    rate: float,
    by_function: bool = False,
) -> dict[str, float]:
    """Run one side's gateway, warm it up, count `requests` requests; calls per request (and,
    `by_function`, per function: `tmp/<side>.count.by`)."""
    port = free_port()
    conf = tmp / f"{side}.yaml"
    kind = "plain" if side == "plain" else "mirror"
    store = str(tmp / f"{side}.db")
    conf.write_text(gateway_conf(port, *origins, kind, store, "off", "off", QUEUE))
    out = tmp / f"{side}.count"
    command = [sys.executable, "-c", SERVE, str(conf), str(out), *(["by"] if by_function else [])]
    gw = procs.start(side, command, tmp / f"{side}.out",
                     cwd=ROOT, env=dict(os.environ, CUTOVER_LOG_LEVEL="ERROR"))  # fmt: skip
    stopped: list[int] = []
    try:
        wait_port(port, gw, side, timeout=60)
        fixed_rate(port, rate, 1.0, 8)  # warm-up: pools, the store, the mirror process
        if side == "mirror-full":
            stopped = _children(gw.pid)
            for child in stopped:
                os.kill(child, signal.SIGSTOP)
            fixed_rate(port, rate, max(0.5, 4 * QUEUE / rate), 8)  # fills what it may hold
            if scrape(port)["dropped"] == 0:
                raise RuntimeError("mirror-full: the stopped mirror process never filled")
        time.sleep(0.5)  # the warm-up's tail (the mirror's bookings) is not counted
        before = scrape(port)
        gw.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        result = fixed_rate(port, rate, requests / rate, 8)
        # The last copies' outcomes come back within milliseconds at this rate; the gateway
        # is not asked before the count is written (rendering /metrics costs many calls).
        time.sleep(SETTLE if side == "mirror" else 0.2)
        out.unlink(missing_ok=True)
        gw.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        calls, c_calls = (int(x) for x in out.read_text().split())
        after = scrape(port)
    finally:
        for child in stopped:
            os.kill(child, signal.SIGCONT)
        procs.stop(gw)
    ok = result.ok or 1
    return {
        "requests": result.ok,
        "calls": calls / ok,
        "c_calls": c_calls / ok,
        "copied": (after["compared"] - before["compared"]) / ok,
        "dropped": (after["dropped"] - before["dropped"]) / ok,
    }


def render(rows: dict[str, dict[str, float]]) -> list[str]:
    """A Markdown table: calls per request, and what each side adds to `plain`'s."""
    out = [
        "| side | requests | Python calls/request | C calls/request | added to plain (Python + C)"
        " | copied | dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    base = rows.get("plain")
    for side, r in rows.items():
        added = "-"
        if base is not None and side != "plain":
            added = f"{r['calls'] - base['calls']:+.1f} + {r['c_calls'] - base['c_calls']:+.1f}"
        out.append(
            f"| {side} | {r['requests']:.0f} | {r['calls']:.1f} | {r['c_calls']:.1f} | {added}"
            f" | {r['copied']:.0%} | {r['dropped']:.0%} |"
        )
    return out


def _per_request(path: Path, requests: float) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in path.read_text().splitlines():
        n, name = line.split(" ", 1)
        counts[name] = int(n) / (requests or 1)
    return counts


def by_function(tmp: Path, rows: dict[str, dict[str, float]], top: int) -> list[str]:
    """Per side, the `top` functions whose calls per request differ most from `plain`'s."""
    base = (
        _per_request(tmp / "plain.count.by", rows["plain"]["requests"]) if "plain" in rows else {}
    )
    out = []
    for side, row in rows.items():
        if side == "plain" and base:
            continue
        counts = _per_request(tmp / f"{side}.count.by", row["requests"])
        diff = {k: counts.get(k, 0.0) - base.get(k, 0.0) for k in {*counts, *base}}
        out += [f"{side}: calls per request added to plain's, by function", ""]
        out += ["| calls/request | function |", "|---|---|"]
        for name, n in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
            if abs(n) >= 0.005:
                out.append(f"| {n:+.2f} | `{name}` |")
        out.append("")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cutover.bench.call_count")
    parser.add_argument("--requests", type=int, default=4800)
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--sides", default=",".join(SIDES), help=f"of {', '.join(SIDES)}")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--by-function",
        type=int,
        default=0,
        metavar="N",
        help="also print the N functions whose calls per request differ most from plain's",
    )
    args = parser.parse_args(argv)
    sides = [s for s in args.sides.split(",") if s]
    if not sides or any(s not in SIDES for s in sides):
        parser.error(f"--sides: of {', '.join(SIDES)} (got {args.sides})")
    procs = Processes()
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cutover-call-count-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            ports = []
            for name, candidate in (("primary", False), ("candidate", True)):
                www = tmp / "www" / name
                (www / "alerts").mkdir(parents=True)
                (www / "alerts" / "1.json").write_bytes(alert_json(candidate))
                (www / "health.json").write_bytes(b'{"status":"ok"}')
                port = free_port()
                conf = tmp / f"{name}.conf"
                conf.write_text(origin_conf(str(tmp), name, port, str(www)))
                nginx = procs.start(
                    name,
                    ["nginx", "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"],
                    tmp / f"{name}.out",
                )
                wait_port(port, nginx, name)
                ports.append(port)
            for side in sides:
                origins = (ports[0], ports[1])
                rows[side] = _count(
                    procs, tmp, side, origins, args.requests, args.rate, args.by_function > 0
                )
                print(f"{side}: {rows[side]}", file=sys.stderr, flush=True)
            if args.by_function:
                print("\n".join(by_function(tmp, rows, args.by_function)))
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            print(f"bench.call_count: {exc}", file=sys.stderr)
            return 1
        finally:
            procs.stop_all()
    print("\n".join(render(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
