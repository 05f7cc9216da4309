"""The mirror process's CPU per comparison: what one mirror job costs where it runs.

    python -m cutover.bench.mirror_exchange_cost [--jobs 3000] [--repeats 5]

`bench.mirror_cost`'s two nginx origins (one worker each: the primary's ~1.5 KiB alert JSON and
the candidate's, which differs in two fields), and in this process, on uvloop, the mirror's own
exchange (`parity.mirror.exchange`, as the mirror process runs it: the copy to the candidate, the
noise request to the primary, the comparisons, the row) for `--jobs` jobs, `mirror.workers` (4)
at a time. The process's CPU time (user + system) per job, best of `--repeats` runs, for:

- `exchange`: all of it, the noise request included (`mirror.noise: true`, the default);
- `exchange, no noise`: without the noise request;
- `compare`: `compare_job` alone, on the answers of one exchange (no network);
- `send`: one request to the candidate and its answer read (no comparison).

The mirror process gets only the CPU nothing else wants (SCHED_IDLE): at a rate it cannot keep up
with, what it compares a second is the idle CPU divided by `exchange`. The figures are for
comparing two versions of the code on one machine, not absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import uvloop
from multidict import CIMultiDict, CIMultiDictProxy

from cutover.bench.mirror_cost import PATH, alert_json, origin_conf
from cutover.bench.overhead import Processes, free_port, wait_port
from cutover.core.config_model import Backend
from cutover.parity.config import MirrorSettings, ParityConfig
from cutover.parity.mirror import MirrorJob, _send, compare_job, exchange
from cutover.proxy.upstreams import Upstream

__all__ = ["main"]

REQUEST_ID = "X-Request-Id"


def backend(name: str, port: int) -> Backend:
    return Backend(name, f"http://127.0.0.1:{port}", "http", "127.0.0.1", port, "", health=None)


def job(body: bytes) -> MirrorJob:
    """A fast-path copy of `GET PATH` as `bench.mirror_cost`'s clients send it."""
    headers = CIMultiDictProxy(CIMultiDict([("Host", "127.0.0.1"), ("User-Agent", "bench")]))
    return MirrorJob("default", "candidate", "primary", "GET", PATH, headers, b"", "127.0.0.1",
                     "http", "127.0.0.1", "rid", 200, (("content-type", "application/json"),),
                     body)  # fmt: skip


async def cpu_per(run: Callable[[], Awaitable[object]], count: int, workers: int) -> float:
    """CPU seconds per call of `run`, `count` calls, `workers` at a time."""
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await run()

    gc.collect()
    start = time.process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return (time.process_time() - start) / count


async def measure(primary: int, candidate: int, jobs: int, repeats: int) -> dict[str, float]:
    ups = {"primary": Upstream(backend("primary", primary))}
    ups["candidate"] = Upstream(backend("candidate", candidate))
    settings = ParityConfig()
    quiet = replace(settings, mirror=replace(MirrorSettings(), noise=False))
    copy = job(alert_json(False))
    workers = settings.mirror.workers
    outcome = await exchange(copy, ups, settings, REQUEST_ID)  # warm: connections, imports
    assert outcome is not None and outcome.failure is None, outcome
    answer = await _send(ups["candidate"], copy, settings, REQUEST_ID)
    noise = await _send(ups["primary"], copy, settings, REQUEST_ID)

    async def compare() -> None:
        compare_job(copy, answer, noise, settings)

    sides: dict[str, Callable[[], Awaitable[object]]] = {
        "exchange": lambda: exchange(copy, ups, settings, REQUEST_ID),
        "exchange, no noise": lambda: exchange(copy, ups, quiet, REQUEST_ID),
        "compare": compare,
        "send": lambda: _send(ups["candidate"], copy, settings, REQUEST_ID),
    }
    best = dict.fromkeys(sides, float("inf"))
    for r in range(repeats):
        for name, run in sides.items():
            best[name] = min(best[name], await cpu_per(run, jobs, workers))
        print(f"run {r + 1}/{repeats}: " + ", ".join(f"{k} {v * 1e6:.0f}" for k, v in best.items()),
              file=sys.stderr, flush=True)  # fmt: skip
    for upstream in ups.values():
        await upstream.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cutover.bench.mirror_exchange_cost")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeats < 1:
        parser.error("--jobs and --repeats need 1 or more")
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="cutover-mirror-exchange-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            ports = {}
            for name, differs in (("primary", False), ("candidate", True)):
                (tmp / "www" / name / "alerts").mkdir(parents=True)
                (tmp / "www" / name / PATH.lstrip("/")).write_bytes(alert_json(differs))
                port = ports[name] = free_port()
                conf = tmp / f"{name}.conf"
                conf.write_text(origin_conf(str(tmp), name, port, str(tmp / "www" / name)))
                cmd = ["nginx", "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"]
                wait_port(port, procs.start(name, cmd, tmp / f"{name}.out"), name)
            run = measure(ports["primary"], ports["candidate"], args.jobs, args.repeats)
            best = uvloop.run(run)
        finally:
            procs.stop_all()
    print("| per job | CPU µs |")
    print("|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
