"""Overhead benchmark: what a gateway costs, as ratios measured in one interleaved run.

    python -m cutover.bench.overhead [--duration 10] [--rounds 3] [--workers 1,2] [--connections 32]
                             [--fixed-rate-seconds 5] [--out BENCHMARKS.md]

Three sides answer the same three cases (GET small JSON, GET 64 KiB, POST 20 KiB JSON):

- ``direct``: wrk -> origin (a static nginx, 1 worker);
- ``nginx``: wrk -> nginx reverse proxy -> origin, its config rendered by `nginx.render` (what
  ``cutover render nginx`` writes) from the same cutover YAML the cutover side runs;
- ``cutover``: wrk -> ``python -m cutover serve --workers N`` -> origin.

For each worker count, each round runs every case on every side once, the side order rotated
per round, so machine drift hits every side alike. Medians over rounds are reported, and the
ratios cutover/nginx and cutover/direct as the median of the per-round ratios (each ratio
compares two runs of the same round). The CPU time the proxy processes spent (utime + stime of
the process tree, from /proc) is divided by the requests wrk completed: CPU µs per request,
shown with its user part (utime + cutime) and its system part (stime + cstime).

Then a fixed-rate (open-model) run, `bench.fixed_rate`: GET small JSON at half of cutover's
median peak rate, on every side in interleaved rounds, latency counted from each request's
scheduled time; its p50/p99 and what nginx and cutover add over direct.

Everything runs on 127.0.0.1 on free ports, from a temporary directory that is removed at the
end; every process started here is stopped on exit, error or Ctrl-C.

The functions above the "Processes" line are pure (no sockets, no processes; only
`render_proxy_nginx` reads the YAML file it is given) and unit-tested in
tests/unit/bench/test_overhead.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cutover.bench.fixed_rate import FixedRateResult
from cutover.bench.stats import Spread, percentile, spread
from cutover.nginx.render import render as render_nginx
from cutover.proxy.accesslog import FLUSH_INTERVAL as ACCESS_LOG_FLUSH
from cutover.proxy.config import load_config

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- overhead:begin -->"
END = "<!-- overhead:end -->"

SIDES = ("direct", "nginx", "cutover")
DASH = "\u2013"  # en dash, for ranges and empty cells
MINUS = "\u2212"  # minus sign, for negative differences
PERCENTILES = ("50", "75", "90", "99")
POST_SIZE = 20 * 1024
BIG_SIZE = 64 * 1024
# Goals of issue 9 (cutover/nginx throughput, one worker).
GOALS = {"small": 0.5, "big": 0.7, "post": 0.5}
# Issue 9: added p99 over direct at a fixed rate of half of cutover's peak, one worker (ms).
ADDED_P99_GOAL_MS = 1.0
FIXED_RATE_CASE = "small"
FIXED_RATE_SHARE = 0.5  # of cutover's median peak rps


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    title: str
    method: str
    path: str


CASES = (
    Case("small", "GET small JSON", "GET", "/small.json"),
    Case("big", "GET 64 KiB", "GET", "/64k.bin"),
    Case("post", "POST 20 KiB JSON", "POST", "/post"),
)
CASES_BY_KEY = {c.key: c for c in CASES}


# ---------------------------------------------------------------------------------------------
# Payloads

SMALL_JSON = (
    b'{"status":"firing","labels":{"alertname":"HighErrorRate","service":"alert-history",'
    b'"severity":"page"},"annotations":{"summary":"5xx above 2% for 10m"},'
    b'"startsAt":"2026-11-02T10:00:00Z","fingerprint":"a1b2c3d4e5f60718"}\n'
)
HEALTH_JSON = b'{"status":"ok"}\n'
POST_REPLY = '{"ok":true}'


def make_post_body(size: int = POST_SIZE) -> bytes:
    """A JSON document of exactly `size` bytes: a list of alert-like objects, padded."""
    alert = (
        '{"labels":{"alertname":"HighErrorRate","instance":"10.0.0.%d:9100"},'
        '"status":"firing","startsAt":"2026-11-02T10:00:00Z"}'
    )
    head, tail = '{"alerts":[', '],"pad":""}'
    items: list[str] = []
    i = 0
    while True:
        nxt = alert % (i % 256)
        if len(head) + len(",".join([*items, nxt])) + len(tail) > size:
            break
        items.append(nxt)
        i += 1
    doc = head + ",".join(items) + tail
    if len(doc) > size:
        raise ValueError(f"size {size} is too small for a JSON body")
    pad = size - len(doc)
    doc = doc[: -len('"}')] + "x" * pad + '"}'
    return doc.encode()


def make_big_body(size: int = BIG_SIZE) -> bytes:
    """`size` bytes of not-very-compressible filler (the origin serves it as a static file)."""
    seed = bytes(range(256))
    return (seed * (size // 256 + 1))[:size]


def render_post_lua(body: bytes) -> str:
    """A wrk script that POSTs `body` as JSON on every request."""
    text = body.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [{eq}[{text}]{eq}]\n"
    )


# ---------------------------------------------------------------------------------------------
# wrk output

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_NUM = r"(\d+(?:\.\d+)?)"


def parse_time_ms(text: str) -> float:
    """A wrk time (`630.00us`, `1.50ms`, `2.00s`, `1.00m`) in milliseconds."""
    m = re.fullmatch(_NUM + r"(us|ms|s|m|h)", text.strip())
    if m is None:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]


def parse_size_bytes(text: str) -> int:
    """A wrk size (`100.00MB`, `512.00KB`, `812B`) in bytes (wrk's units are binary)."""
    m = re.fullmatch(_NUM + r"(B|KB|MB|GB|TB)", text.strip())
    if m is None:
        raise ValueError(f"not a wrk size: {text!r}")
    return round(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    requests: int
    seconds: float
    bytes_read: int
    latency_ms: dict[str, float]  # percentile ("50", "99", ...) -> ms
    latency_avg_ms: float | None = None
    latency_max_ms: float | None = None
    non_2xx: int = 0  # "Non-2xx or 3xx responses"
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())

    @property
    def bytes_per_request(self) -> float:
        return self.bytes_read / self.requests if self.requests else 0.0


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk 4 output run with `--latency`; ValueError when it has no Requests/sec."""
    rps_m = re.search(r"^Requests/sec:\s+" + _NUM, text, re.M)
    if rps_m is None:
        raise ValueError("no 'Requests/sec' in wrk output:\n" + text[-2000:])
    total = re.search(r"^\s*(\d+) requests in (\S+), (\S+) read", text, re.M)
    requests, seconds, bytes_read = 0, 0.0, 0
    if total:
        requests = int(total.group(1))
        seconds = parse_time_ms(total.group(2)) / 1000.0
        bytes_read = parse_size_bytes(total.group(3))
    latency: dict[str, float] = {}
    _, found, after = text.partition("Latency Distribution")
    for line in after.splitlines()[1:] if found else ():
        m = re.fullmatch(r"\s*" + _NUM + r"%\s+(\S+)\s*", line)
        if m is None:
            break
        pct = m.group(1)
        key = pct[:-3] if pct.endswith(".00") else pct
        latency[key] = parse_time_ms(m.group(2))
    avg = mx = None
    stats = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+%", text, re.M)
    if stats:
        avg, mx = parse_time_ms(stats.group(1)), parse_time_ms(stats.group(3))
    non_2xx_m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors: dict[str, int] = {}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        kinds = ("connect", "read", "write", "timeout")
        errors = dict(zip(kinds, map(int, sock.groups()), strict=True))
    return WrkResult(
        rps=float(rps_m.group(1)),
        requests=requests,
        seconds=seconds,
        bytes_read=bytes_read,
        latency_ms=latency,
        latency_avg_ms=avg,
        latency_max_ms=mx,
        non_2xx=int(non_2xx_m.group(1)) if non_2xx_m else 0,
        socket_errors=errors,
    )


# ---------------------------------------------------------------------------------------------
# Rounds, medians, ratios


def parse_workers(text: str) -> list[int]:
    """`1,2` -> [1, 2]."""
    out = [int(part) for part in text.split(",") if part.strip()]
    if not out or any(n < 1 for n in out):
        raise ValueError(f"worker counts must be integers >= 1: {text!r}")
    return out


def side_order(round_index: int, sides: Sequence[str] = SIDES) -> list[str]:
    """The sides rotated by `round_index`: round 0 d,n,c; round 1 n,c,d; round 2 c,d,n."""
    k = round_index % len(sides)
    return [*sides[k:], *sides[:k]]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(frozen=True, slots=True)
class SideSummary:
    runs: int
    rps: float | None
    p50_ms: float | None
    p99_ms: float | None
    non_2xx: int  # summed over rounds
    socket_errors: int  # summed over rounds
    requests: int  # summed over rounds
    bytes_per_request: float | None
    cpu_us_per_request: float | None = None  # proxy processes; median over rounds
    cpu_user_us_per_request: float | None = None  # its user part; median over rounds
    cpu_system_us_per_request: float | None = None  # its system part; median over rounds


@dataclass(frozen=True, slots=True)
class RatioSummary:
    median: float | None  # median over rounds of the per-round ratio
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class CpuTime:
    """CPU seconds of a process tree: user (utime + cutime) and system (stime + cstime)."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system


def cpu_us_per_request(cpu_seconds: float | None, requests: int) -> float | None:
    """CPU microseconds per completed request; None without a CPU figure or requests."""
    if cpu_seconds is None or requests <= 0:
        return None
    return cpu_seconds * 1e6 / requests


def _median_per_request(seconds: Sequence[float | None], requests: Sequence[int]) -> float | None:
    """Median over rounds of `cpu_us_per_request`, over the rounds that have a figure."""
    values = [cpu_us_per_request(s, n) for s, n in zip(seconds, requests, strict=False)]
    return _median([v for v in values if v is not None])


def summarize_side(
    results: Sequence[WrkResult],
    cpu_seconds: Sequence[float | None] = (),
    cpu_user_seconds: Sequence[float | None] = (),
    cpu_system_seconds: Sequence[float | None] = (),
) -> SideSummary:
    """Medians over rounds; `cpu_seconds[i]` is the proxies' CPU time during `results[i]`, and
    `cpu_user_seconds[i]` and `cpu_system_seconds[i]` its two parts (each summarized on its
    own: medians of the parts need not add up to the median of the total)."""
    requests = [r.requests for r in results]
    return SideSummary(
        runs=len(results),
        rps=_median([r.rps for r in results]),
        p50_ms=_median([r.latency_ms["50"] for r in results if "50" in r.latency_ms]),
        p99_ms=_median([r.latency_ms["99"] for r in results if "99" in r.latency_ms]),
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.errors for r in results),
        requests=sum(r.requests for r in results),
        bytes_per_request=_median([r.bytes_per_request for r in results if r.requests]),
        cpu_us_per_request=_median_per_request(cpu_seconds, requests),
        cpu_user_us_per_request=_median_per_request(cpu_user_seconds, requests),
        cpu_system_us_per_request=_median_per_request(cpu_system_seconds, requests),
    )


def paired_ratio(num: Mapping[int, float], den: Mapping[int, float]) -> RatioSummary:
    """Per-round ratios num[r]/den[r] over the rounds both have; their median, min and max."""
    ratios = [num[r] / den[r] for r in sorted(num) if r in den and den[r] > 0]
    if not ratios:
        return RatioSummary(None, None, None)
    return RatioSummary(statistics.median(ratios), min(ratios), max(ratios))


@dataclass(frozen=True, slots=True)
class Run:
    """One wrk run: which worker count, round, case and side, and what wrk said."""

    workers: int
    round: int
    case: str
    side: str
    result: WrkResult
    cpu_seconds: float | None = None  # the proxy processes' CPU time during the run (not direct)
    cpu_user_seconds: float | None = None  # its user part (none in older files)
    cpu_system_seconds: float | None = None  # its system part (none in older files)


def summarize(runs: Sequence[Run]) -> dict[int, dict[str, dict[str, Any]]]:
    """workers -> case -> {"sides": {side: SideSummary}, "ratios": {name: RatioSummary}}.

    Ratios: "nginx" and "direct" are cutover's rps over theirs; "cpu" is cutover's CPU per
    request over the nginx proxy's.
    """
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for workers in sorted({r.workers for r in runs}):
        per_case: dict[str, dict[str, Any]] = {}
        for case in CASES:
            mine = [r for r in runs if r.workers == workers and r.case == case.key]
            if not mine:
                continue
            sides = {
                side: summarize_side(
                    [r.result for r in mine if r.side == side],
                    [r.cpu_seconds for r in mine if r.side == side],
                    [r.cpu_user_seconds for r in mine if r.side == side],
                    [r.cpu_system_seconds for r in mine if r.side == side],
                )
                for side in SIDES
                if any(r.side == side for r in mine)
            }
            rps = {side: {r.round: r.result.rps for r in mine if r.side == side} for side in SIDES}
            cpu: dict[str, dict[int, float]] = {side: {} for side in SIDES}
            for r in mine:
                value = cpu_us_per_request(r.cpu_seconds, r.result.requests)
                if value is not None:
                    cpu[r.side][r.round] = value
            ratios = {
                "nginx": paired_ratio(rps["cutover"], rps["nginx"]),
                "direct": paired_ratio(rps["cutover"], rps["direct"]),
                "cpu": paired_ratio(cpu["cutover"], cpu["nginx"]),
            }
            per_case[case.key] = {"sides": sides, "ratios": ratios}
        out[workers] = per_case
    return out


# ---------------------------------------------------------------------------------------------
# Fixed rate


@dataclass(frozen=True, slots=True)
class FixedRun:
    """One fixed-rate run: which worker count, round and side, and what it measured."""

    workers: int
    round: int
    side: str
    result: FixedRateResult
    cpu_seconds: float | None = None  # the proxy processes' CPU time during the run
    core_busy: float | None = None  # share of the proxy's CPU not idle during the run (0..1)
    inside_p99_ms: float | None = None  # p99 of cutover's own access-log durations
    share: float = FIXED_RATE_SHARE  # the rate as a share of cutover's median peak
    cpu_user_seconds: float | None = None  # the user part of cpu_seconds (none in older files)
    cpu_system_seconds: float | None = None  # its system part (none in older files)


@dataclass(frozen=True, slots=True)
class FixedSideSummary:
    """One side's fixed-rate figures: medians over rounds of each run's own percentiles."""

    runs: int
    p50_ms: float | None
    p99_ms: float | None
    lag_p99_ms: float | None  # how late requests left: no free connection, or generator CPU
    cpu_us_per_request: float | None
    failed: int  # errors + unfinished, summed over rounds
    requests: int  # scheduled, summed over rounds
    core_busy: float | None = None  # median share of the proxy's own CPU that was busy
    inside_p99_ms: float | None = None  # median p99 of the time spent inside cutover
    cpu_user_us_per_request: float | None = None  # user part of cpu_us_per_request (median)
    cpu_system_us_per_request: float | None = None  # system part (median)


def fixed_rate_for(
    per_case: Mapping[str, Mapping[str, Any]], share: float = FIXED_RATE_SHARE
) -> float | None:
    """The fixed rate for one worker count: `share` (half by default) of cutover's median peak
    rps on GET small JSON (`per_case` is one worker count of `summarize`)."""
    side = per_case.get(FIXED_RATE_CASE, {}).get("sides", {}).get("cutover")
    if side is None or not side.rps:
        return None
    return side.rps * share


def summarize_fixed_side(runs: Sequence[FixedRun]) -> FixedSideSummary:
    results = [r.result for r in runs]
    answered = [r.result.ok + r.result.errors for r in runs]
    return FixedSideSummary(
        runs=len(runs),
        p50_ms=_median([x.latency_ms["50"] for x in results if "50" in x.latency_ms]),
        p99_ms=_median([x.latency_ms["99"] for x in results if "99" in x.latency_ms]),
        lag_p99_ms=_median([x.lag_ms["99"] for x in results if "99" in x.lag_ms]),
        cpu_us_per_request=_median_per_request([r.cpu_seconds for r in runs], answered),
        failed=sum(x.failed for x in results),
        requests=sum(x.scheduled for x in results),
        core_busy=_median([r.core_busy for r in runs if r.core_busy is not None]),
        inside_p99_ms=_median([r.inside_p99_ms for r in runs if r.inside_p99_ms is not None]),
        cpu_user_us_per_request=_median_per_request([r.cpu_user_seconds for r in runs], answered),
        cpu_system_us_per_request=_median_per_request(
            [r.cpu_system_seconds for r in runs], answered
        ),
    )


def paired_difference(side: Mapping[int, float], base: Mapping[int, float]) -> Spread | None:
    """Per-round differences side[r] - base[r] over the rounds both have: median and range."""
    return spread(side[r] - base[r] for r in sorted(side) if r in base)


def summarize_fixed(runs: Sequence[FixedRun]) -> dict[int, list[dict[str, Any]]]:
    """workers -> one entry per share of the peak, lowest first: {"share", "rate", "seconds",
    "connections", "sides": {side: FixedSideSummary}, "added": {"nginx"|"cutover":
    {"p50"|"p99": Spread | None}}} (added = side - direct in the same round)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for workers, share in sorted({(r.workers, r.share) for r in runs}):
        mine = [r for r in runs if r.workers == workers and r.share == share]
        sides = {
            side: summarize_fixed_side([r for r in mine if r.side == side])
            for side in SIDES
            if any(r.side == side for r in mine)
        }
        added: dict[str, dict[str, Spread | None]] = {}
        for side in ("nginx", "cutover"):
            added[side] = {}
            for pct in ("50", "99"):
                by_round = {
                    name: {
                        r.round: r.result.latency_ms[pct]
                        for r in mine
                        if r.side == name and pct in r.result.latency_ms
                    }
                    for name in (side, "direct")
                }
                added[side][pct] = paired_difference(by_round[side], by_round["direct"])
        out.setdefault(workers, []).append(
            {
                "share": share,
                "rate": _median([r.result.rate for r in mine]),
                "seconds": _median([r.result.scheduled / r.result.rate for r in mine]),
                "connections": _median([r.result.connections for r in mine]),
                "sides": sides,
                "added": added,
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# Markdown


def fmt_rps(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value < 1:
        return f"{value * 1000:.0f} µs"
    if value < 10:
        return f"{value:.2f} ms"
    return f"{value:.1f} ms"


def fmt_delta_ms(value: float | None) -> str:
    """A signed latency difference: `+310 µs`, or with MINUS for a negative one."""
    if value is None:
        return DASH
    return (MINUS if value < 0 else "+") + fmt_ms(abs(value))


def fmt_added(s: Spread | None) -> str:
    if s is None:
        return DASH
    if s.min == s.max:
        return fmt_delta_ms(s.median)
    return f"{fmt_delta_ms(s.median)} ({fmt_delta_ms(s.min)} to {fmt_delta_ms(s.max)})"


def fmt_cpu_us(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


CPU_HEADER = "CPU µs/request"
CPU_SPLIT_HEADER = "CPU µs/request (user + sys)"  # when a row of the table has the split


def fmt_cpu_split(total: float | None, user: float | None, system: float | None) -> str:
    """`44.3 (31.3 + 13.0)`: CPU µs per request and its user + system parts; the total alone
    when a part is missing (files written before the split was recorded)."""
    if total is None or user is None or system is None:
        return fmt_cpu_us(total)
    return f"{fmt_cpu_us(total)} ({fmt_cpu_us(user)} + {fmt_cpu_us(system)})"


def _cpu_figures(s: SideSummary | FixedSideSummary) -> tuple[float | None, ...]:
    return s.cpu_us_per_request, s.cpu_user_us_per_request, s.cpu_system_us_per_request


def _cpu_cell(s: SideSummary | FixedSideSummary) -> str:
    return fmt_cpu_split(*_cpu_figures(s))


def _cpu_header(sides: Sequence[SideSummary | FixedSideSummary]) -> str:
    """CPU_SPLIT_HEADER when some side of the table has the split, else CPU_HEADER."""
    split = any(None not in _cpu_figures(s) for s in sides)
    return CPU_SPLIT_HEADER if split else CPU_HEADER


def fmt_share(value: float | None) -> str:
    return DASH if value is None else f"{value:.0%}"


def fmt_ratio(r: RatioSummary) -> str:
    if r.median is None:
        return DASH
    if r.low is None or r.high is None or r.low == r.high:
        return f"{r.median:.2f}"
    return f"{r.median:.2f} ({r.low:.2f}{DASH}{r.high:.2f})"


def _errors_cell(s: SideSummary) -> str:
    if not s.non_2xx and not s.socket_errors:
        return "0"
    parts = []
    if s.non_2xx:
        parts.append(f"**{s.non_2xx:,} non-2xx**")
    if s.socket_errors:
        parts.append(f"**{s.socket_errors:,} socket errors**")
    return ", ".join(parts) + f" of {s.requests:,}"


def _failed_cell(s: FixedSideSummary) -> str:
    return "0" if not s.failed else f"**{s.failed:,} failed** of {s.requests:,}"


def render_fixed(data: Mapping[str, Any], workers: int) -> list[str]:
    """The fixed-rate table of one worker count (`data` is one entry of `summarize_fixed`)."""
    case = CASES_BY_KEY[FIXED_RATE_CASE]
    rate, seconds, conns = data.get("rate"), data.get("seconds"), data.get("connections")
    share = data.get("share", FIXED_RATE_SHARE)
    headline = share == FIXED_RATE_SHARE
    of_peak = "half" if headline else f"{share:.0%}"
    lines = [
        f"Fixed rate, {case.title}: **{fmt_rps(rate)} requests/s** ({of_peak} of cutover's median "
        f"peak above), {seconds or 0:g} s per side and round, {conns or 0:g} connections; "
        "latency from each request's scheduled send time (open loop, `bench/fixed_rate.py`).",
        "",
        "| side | p50 | p99 | added p50 over direct | added p99 over direct | goal (issue 9) "
        f"| p99 inside cutover | proxy CPU busy | {_cpu_header(list(data['sides'].values()))} "
        "| send lag p99 | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    added = data.get("added", {})
    for side, s in data["sides"].items():
        goal = DASH
        if side == "cutover" and workers == 1 and headline:
            goal = f"added p99 ≤ {ADDED_P99_GOAL_MS:g} ms"
        extra = added.get(side, {})
        lines.append(
            f"| {side} | {fmt_ms(s.p50_ms)} | {fmt_ms(s.p99_ms)} | {fmt_added(extra.get('50'))} "
            f"| {fmt_added(extra.get('99'))} | {goal} | {fmt_ms(s.inside_p99_ms)} "
            f"| {fmt_share(s.core_busy)} | {_cpu_cell(s)} "
            f"| {fmt_ms(s.lag_p99_ms)} | {_failed_cell(s)} |"
        )
    return lines


def render_tables(
    summary: Mapping[int, Mapping[str, Mapping[str, Any]]],
    rounds: int,
    fixed: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
    plot: str | None = None,
) -> str:
    """The results tables per worker count: ratios, per-side detail, and the fixed-rate run
    (`plot`: the image of the 1-worker fixed-rate runs, shown after their tables)."""
    lines: list[str] = []
    for workers, per_case in summary.items():
        plural = "worker" if workers == 1 else "workers"
        lines += [
            f"#### {workers} {plural} (nginx proxy and cutover alike)",
            "",
            "| case | cutover / nginx rps | cutover / direct rps | goal (issue 9) "
            "| cutover / nginx CPU per request |",
            "|---|---|---|---|---|",
        ]
        for key, data in per_case.items():
            case = CASES_BY_KEY[key]
            goal = f"≥ {GOALS[key]:.1f}" if workers == 1 else DASH
            r = data["ratios"]
            cpu = r.get("cpu", RatioSummary(None, None, None))
            lines.append(
                f"| {case.title} | {fmt_ratio(r['nginx'])} | {fmt_ratio(r['direct'])} | {goal} "
                f"| {fmt_ratio(cpu)} |"
            )
        every_side = [s for data in per_case.values() for s in data["sides"].values()]
        lines += [
            "",
            f"| case | side | rps (median of {rounds}) | p50 | p99 | {_cpu_header(every_side)} "
            "| errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, data in per_case.items():
            case = CASES_BY_KEY[key]
            for side, s in data["sides"].items():
                lines.append(
                    f"| {case.title} | {side} | {fmt_rps(s.rps)} | {fmt_ms(s.p50_ms)} "
                    f"| {fmt_ms(s.p99_ms)} | {_cpu_cell(s)} | {_errors_cell(s)} |"
                )
        for entry in (fixed or {}).get(workers, ()):
            lines += ["", *render_fixed(entry, workers)]
        if plot and workers == 1 and (fixed or {}).get(workers):
            lines += ["", f"![p99 against the offered rate at a fixed schedule]({plot})"]
        lines.append("")
    return "\n".join(lines)


PLOT_PATH = "bench/overhead-fixed-rate.svg"  # beside the Markdown file it is drawn for
PLOT_COLORS = {"direct": "#6E7781", "nginx": "#009E73", "cutover": "#0072B2"}  # Okabe-Ito
_PLOT_STYLE = (
    "<style>.ct{font:600 14px sans-serif;fill:#1b1f24}.tk{font:11px sans-serif;fill:#57606a}"
    ".at,.lg{font:12px sans-serif;fill:#1b1f24}.pa{fill:#fff;stroke:#8c959f}"
    ".gr{stroke:#d8dee4;stroke-width:1}</style>"
)


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def render_fixed_plot(entries: Sequence[Mapping[str, Any]], workers: int) -> str | None:
    """An SVG of each side's p99 against the offered rate (the fixed-rate runs of one worker
    count, `summarize_fixed`); None with fewer than two rates."""
    from cutover.bench.report import _Axis, _chart, _log_ticks

    points: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
    for entry in entries:
        for side, s in entry["sides"].items():
            if entry.get("rate") and s.p99_ms:
                points[side].append((float(entry["rate"]), float(s.p99_ms)))
    if len({rate for pts in points.values() for rate, _ in pts}) < 2:
        return None
    rates = [rate for pts in points.values() for rate, _ in pts]
    values = [v for pts in points.values() for _, v in pts]
    step = _nice_step(max(rates))
    top = step * math.ceil(max(rates) * 1.05 / step)
    x_ticks = tuple((step * i, f"{step * i:,.0f}") for i in range(round(top / step) + 1))
    x = _Axis(0.0, top, float, x_ticks, "offered rate (requests/s, fixed schedule)")
    lo, hi, y_ticks = _log_ticks(min(values), max(values))
    y = _Axis(lo, hi, math.log10, y_ticks, "p99 latency (log scale)")
    plural = "worker" if workers == 1 else "workers"
    series = [(side, PLOT_COLORS[side], sorted(points[side])) for side in SIDES]
    title = f"p99 by offered rate, {workers} {plural}"
    svg = _chart(title, series, x, y, width=640, legend_gap=84)
    head, sep, rest = svg.partition(">")
    return head + sep + _PLOT_STYLE + rest


def write_fixed_plot(
    fixed: Mapping[int, Sequence[Mapping[str, Any]]], out: Path, workers: int = 1
) -> str | None:
    """Draw `render_fixed_plot` to PLOT_PATH beside `out`; the relative path, or None."""
    svg = render_fixed_plot(fixed.get(workers, ()), workers)
    if svg is None:
        return None
    path = out.parent / PLOT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg + "\n")
    return PLOT_PATH


def render_section(
    summary: Mapping[int, Mapping[str, Mapping[str, Any]]],
    meta: Mapping[str, Any],
    notes: Sequence[str] = (),
    fixed: Mapping[int, Sequence[Mapping[str, Any]]] | None = None,
    plot: str | None = None,
) -> str:
    """The whole results section, markers included (`plot`: see `render_tables`)."""
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    lines = [
        BEGIN,
        f"### Results of {meta.get('date', '?')}",
        "",
        f"- Machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model', '?')}), "
        f"{machine.get('kernel', '?')}.",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        f"- Command: `{meta.get('command', '?')}`",
        f"- Load: {meta.get('load', '?')}.",
        f"- Layout: {meta.get('layout', '?')}.",
        f"- Ratios are the median of the {meta.get('rounds', '?')} per-round ratios "
        f"(min{DASH}max in brackets); rps, p50, p99 and CPU µs/request are medians over rounds.",
        "- CPU µs/request: user + system CPU time of the proxy's processes (nginx master and "
        "workers; cutover supervisor and workers) during a run, over the requests completed; "
        "`direct` has no proxy.",
    ]
    if _summaries_have_split(summary, fixed):
        lines.append(
            f"- {CPU_SPLIT_HEADER}: the total, then in brackets its user part (utime, and cutime "
            "of reaped children) and its system part (stime, cstime): where the CPU goes, in "
            "the proxy's own code or in the kernel. Each part is a median over rounds of its own, "
            "so with an odd number of rounds the parts may not add up exactly to the total."
        )
    if meta.get("fixed_rate"):
        lines.append(f"- Fixed rate: {meta['fixed_rate']}.")
    lines += [f"- {note}" for note in notes]
    tables = render_tables(summary, int(meta.get("rounds", 0)), fixed, plot)
    lines += ["", tables.rstrip(), "", END]
    return "\n".join(lines) + "\n"


def _summaries_have_split(
    summary: Mapping[int, Mapping[str, Mapping[str, Any]]],
    fixed: Mapping[int, Sequence[Mapping[str, Any]]] | None,
) -> bool:
    sides = [
        s for per_case in summary.values() for d in per_case.values() for s in d["sides"].values()
    ]
    sides += [s for entries in (fixed or {}).values() for d in entries for s in d["sides"].values()]
    return bool(sides) and _cpu_header(sides) == CPU_SPLIT_HEADER


def replace_section(document: str, section: str) -> str:
    """Put `section` (markers included) in place of the one in `document`, or append it."""
    start = document.find(BEGIN)
    stop = document.find(END, start if start >= 0 else 0)
    if start >= 0 and stop >= 0:
        after = document[stop + len(END) :]
        if after.startswith("\n"):
            after = after[1:]
        return document[:start] + section + after
    if document and not document.endswith("\n"):
        document += "\n"
    return document + ("\n" if document else "") + section


def fixed_to_json(fixed: Mapping[int, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    return {
        str(workers): [
            {
                **{k: v for k, v in data.items() if k not in {"sides", "added"}},
                "sides": {side: asdict(s) for side, s in data["sides"].items()},
                "added": {
                    side: {pct: asdict(v) if v is not None else None for pct, v in per.items()}
                    for side, per in data["added"].items()
                },
            }
            for data in entries
        ]
        for workers, entries in fixed.items()
    }


def summary_to_json(summary: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    return {
        str(workers): {
            key: {
                "sides": {side: asdict(s) for side, s in data["sides"].items()},
                "ratios": {name: asdict(r) for name, r in data["ratios"].items()},
            }
            for key, data in per_case.items()
        }
        for workers, per_case in summary.items()
    }


# ---------------------------------------------------------------------------------------------
# Configs


def _common_http(prefix: str, name: str) -> list[str]:
    """Temp paths inside the prefix: nginx must never touch /var/lib/nginx."""
    return [
        f"    client_body_temp_path {prefix}/{name}-client-body;",
        f"    proxy_temp_path {prefix}/{name}-proxy;",
        f"    fastcgi_temp_path {prefix}/{name}-fastcgi;",
        f"    uwsgi_temp_path {prefix}/{name}-uwsgi;",
        f"    scgi_temp_path {prefix}/{name}-scgi;",
    ]


def _main_block(prefix: str, name: str, workers: int, user: str | None) -> list[str]:
    lines = [f"user {user};"] if user else []
    return [
        *lines,
        f"worker_processes {workers};",
        f"pid {prefix}/{name}.pid;",
        f"error_log {prefix}/{name}-error.log warn;",
        "events { worker_connections 4096; }",
    ]


ECHOED_HEADERS = "|".join(
    f"$http_{name}"
    for name in ("x_forwarded_for", "x_forwarded_proto", "x_forwarded_host", "x_request_id")
)


def render_origin_conf(prefix: str, port: int, docroot: str, user: str | None = None) -> str:
    """The origin: one static nginx worker; no access log; POST /post reads and drops the body;
    GET /headers answers `X-Forwarded-For|-Proto|-Host|X-Request-ID` as it received them.

    `return` makes nginx discard the request body, which it still reads off the socket to the
    last byte before the connection serves its next request (checked by `check_post_reads`).
    """
    return "\n".join(
        [
            *_main_block(prefix, "origin", 1, user),
            "http {",
            "    access_log off;",
            "    default_type application/octet-stream;",
            "    types { application/json json; }",
            "    sendfile on;",
            "    tcp_nodelay on;",
            "    keepalive_timeout 75s;",
            "    keepalive_requests 1000000;",
            *_common_http(prefix, "origin"),
            "    server {",
            f"        listen 127.0.0.1:{port};",
            f"        root {docroot};",
            "        location = /post {",
            "            client_max_body_size 1m;",
            "            client_body_buffer_size 64k;",
            "            default_type application/json;",
            f"            return 200 '{POST_REPLY}';",
            "        }",
            "        location = /headers {",
            "            default_type text/plain;",
            f'            return 200 "{ECHOED_HEADERS}";',
            "        }",
            "    }",
            "}",
            "",
        ]
    )


def render_proxy_nginx(cutover_yaml: Path, port: int, workers: int) -> tuple[str, list[str]]:
    """The nginx proxy's config and the renderer's warnings: what `cutover render nginx` writes
    for the cutover side's own YAML (the project's loader and renderer), listening on `port`
    with `workers` workers. Paths are under nginx's prefix (`-p`): the access log (nginx's
    `combined` format) is `<prefix>/cutover-nginx-access.log`.

    Not touched here; the one benchmark-only addition is on the command line (`start_nginx`):
    `user <me>;` when run as root, so that workers keep access to the temporary directory.
    """
    config = load_config(cutover_yaml)
    rendered = render_nginx(
        config, listen=f"127.0.0.1:{port}", prefix_paths=True, worker_processes=str(workers)
    )
    return rendered.text, list(rendered.warnings)


def render_cutover_config(port: int, origin_port: int, access_log: str) -> str:
    """The gateway config measured: access log on (to a file), one backend with active health
    checks, one route sending everything to it. Admin API off (it is not on the hot path)."""
    return "\n".join(
        [
            "# Generated by bench/overhead.py",
            f"listen: 127.0.0.1:{port}",
            "admin: off",
            f"access_log: {{enabled: true, path: {json.dumps(access_log)}}}",
            "limits: {drain_timeout: 2s}",
            "backends:",
            "  origin:",
            f"    url: http://127.0.0.1:{origin_port}",
            "    health: {path: /health.json, interval: 5s}",
            "routes:",
            "  - name: default",
            "    match: {path_prefix: /}",
            "    split: {origin: 100}",
            "",
        ]
    )


def wrk_command(
    url: str, *, duration: float, connections: int, cpu: str | None, script: str | None
) -> list[str]:
    cmd = ["taskset", "-c", cpu] if cpu is not None else []
    cmd += ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if script:
        cmd += ["-s", script]
    return [*cmd, url]


def fixed_rate_command(
    url: str, *, rate: float, seconds: float, connections: int, cpu: str | None
) -> list[str]:
    """`bench.fixed_rate` in its own process, pinned like wrk."""
    cmd = ["taskset", "-c", cpu] if cpu is not None else []
    cmd += [sys.executable, "-m", "cutover.bench.fixed_rate", url, "--rate", f"{rate:g}"]
    return [*cmd, "--seconds", f"{seconds:g}", "--connections", str(connections)]


def forwarded_problems(echoed: str, request_id_back: str | None, port: int) -> list[str]:
    """What is wrong with the headers the origin's /headers echoed (`ECHOED_HEADERS`) after one
    proxy hop from a client that sent none of them to 127.0.0.1:`port`."""
    parts = echoed.strip().split("|")
    if len(parts) != 4:
        return [f"origin answered {echoed[:200]!r}, not four fields"]
    xff, proto, host, rid = parts
    problems = []
    for name, got, want in (
        ("X-Forwarded-For", xff, "127.0.0.1"),
        ("X-Forwarded-Proto", proto, "http"),
        ("X-Forwarded-Host", host, f"127.0.0.1:{port}"),
    ):
        if got != want:
            problems.append(f"{name} {got!r}, expected {want!r}")
    if not rid:
        problems.append("no X-Request-ID upstream")
    elif request_id_back != rid:
        problems.append(f"X-Request-ID {rid!r} upstream but {request_id_back!r} in the answer")
    return problems


def parse_proc_stat(text: str) -> tuple[int, int, int]:
    """(parent pid, user ticks, system ticks) from the text of /proc/<pid>/stat: user is utime +
    cutime, system is stime + cstime (children it reaped keep their split in the c- fields).
    The command name (field 2) may hold spaces and parentheses."""
    rest = text[text.rindex(")") + 2 :].split()  # rest[0] is field 3 (state)
    utime, stime, cutime, cstime = (int(rest[n - 3]) for n in (14, 15, 16, 17))
    return int(rest[1]), utime + cutime, stime + cstime


def tree_pids(stats: Mapping[int, tuple[int, ...]], root: int) -> list[int]:
    """`root` and every descendant, from pid -> (ppid, ...); empty if root is gone."""
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo += children.get(pid, [])
    return out


def tree_ticks(stats: Mapping[int, tuple[int, int, int]], root: int) -> tuple[int, int] | None:
    """(user, system) ticks of `root` and every descendant, from pid -> (ppid, user, system)
    (`parse_proc_stat`); None if root is gone.

    A child that was reaped has its time in its parent's cutime/cstime, so nothing is lost."""
    pids = tree_pids(stats, root)
    if not pids:
        return None
    return sum(stats[pid][1] for pid in pids), sum(stats[pid][2] for pid in pids)


def parse_cpu_line(stat_text: str, cpu: int) -> tuple[int, int] | None:
    """(busy, total) ticks of one CPU from the text of /proc/stat: busy is user, nice, system,
    irq and softirq; total adds idle, iowait and steal. None if the CPU is not listed."""
    prefix = f"cpu{cpu} "
    for line in stat_text.splitlines():
        if line.startswith(prefix):
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
            busy = user + nice + system + irq + softirq
            return busy, busy + idle + iowait + steal
    return None


def busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of a CPU's time that was busy between two `parse_cpu_line` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def cpu_reading(cpus: set[int] | None) -> tuple[int, int] | None:
    """`parse_cpu_line` summed over `cpus` now; None without CPUs or /proc/stat."""
    if not cpus:
        return None
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    readings = [parse_cpu_line(text, cpu) for cpu in sorted(cpus)]
    if any(r is None for r in readings):
        return None
    return sum(r[0] for r in readings if r), sum(r[1] for r in readings if r)


def _proc_stat_texts() -> Iterator[tuple[int, str]]:
    """(pid, text of /proc/<pid>/stat) of every process that is still there when read."""
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    yield int(entry), Path(f"/proc/{entry}/stat").read_text()


def _proc_stats() -> dict[int, tuple[int, int, int]]:
    stats: dict[int, tuple[int, int, int]] = {}
    for pid, text in _proc_stat_texts():
        with contextlib.suppress(ValueError, IndexError):
            stats[pid] = parse_proc_stat(text)
    return stats


def named_cpu_seconds(prefix: str = "kdamond") -> float:
    """CPU seconds so far of processes and kernel threads whose name starts with `prefix`.

    kdamond is DAMON's monitor: where a VM host runs proactive reclaim it wakes every ~0.5 s and
    holds a CPU for 2-40 ms, which shows in any proxy's tail latency at a few thousand requests
    per second. Recorded beside each fixed-rate run so that a reader can tell."""
    total = 0
    for _pid, text in _proc_stat_texts():
        with contextlib.suppress(ValueError, IndexError):
            if text[text.index("(") + 1 : text.rindex(")")].startswith(prefix):
                _ppid, user, system = parse_proc_stat(text)
                total += user + system
    return total / _CLK_TCK


def pin_tree(root: int, cpus: set[int]) -> dict[int, set[int]]:
    """Move every thread of `root` and its descendants to `cpus`; return each thread's old
    CPUs (for `unpin`). Threads that are gone by then are skipped."""
    old: dict[int, set[int]] = {}
    for pid in tree_pids(_proc_stats(), root):
        with contextlib.suppress(OSError):
            for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                with contextlib.suppress(OSError):
                    old[tid] = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, cpus)
    return old


def unpin(old: Mapping[int, set[int]]) -> None:
    for tid, cpus in old.items():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def access_log_p99(path: Path | None) -> float | None:
    """p99 of the `duration_ms` of cutover's access-log lines in `path` (time spent inside
    the gateway, from the request head to the end of the answer); None without lines."""
    if path is None:
        return None
    durations = []
    with contextlib.suppress(OSError):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                durations.append(float(json.loads(line)["duration_ms"]))
    return percentile(sorted(durations), 99.0) if durations else None


# ---------------------------------------------------------------------------------------------
# Processes


def log(message: str) -> None:
    print(f"[overhead {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process started here, each in its own process group; `stop_all` ends them."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, cmd: Sequence[str], logfile: Path, **kw: Any) -> subprocess.Popen:
        out = open(logfile, "ab")  # noqa: SIM115 - the child owns it; closed right below
        try:
            proc = subprocess.Popen(
                list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )
        finally:
            out.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        # workers of a supervisor or nginx may outlive their parent by a moment
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:g}s")


def request(port: int, case: Case, body: bytes | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(case.method, case.path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def expected_body(case: Case) -> bytes:
    return {"small": SMALL_JSON, "big": make_big_body(), "post": POST_REPLY.encode()}[case.key]


def check_side(port: int, side: str, post_body: bytes, tries: int = 1) -> None:
    """Every case answers 200 with the right body through this side (new connection each)."""
    for case in CASES:
        for _ in range(tries):
            status, data = request(port, case, post_body if case.method == "POST" else None)
            if status != 200 or data != expected_body(case):
                raise RuntimeError(
                    f"{side}: {case.method} {case.path} answered {status} with "
                    f"{len(data)} bytes: {data[:200]!r}"
                )


POST_CHECK_TRIES = 3  # a proxy may close a kept-alive connection after an answer: try anew


def check_post_reads(port: int, body: bytes, side: str = "origin") -> None:
    """Two POSTs on one keep-alive connection: the second only parses if the first body was
    consumed to its last byte (so the origin really reads the 20 KiB).

    A proxy may close a kept-alive connection right after an answer without saying so (RFC 9112
    §9.6 allows it; the nginx proxy does now and then after a POST whose upstream answered
    before the body was read): the second request then finds it closed, and the check starts
    again on a new connection, up to `POST_CHECK_TRIES` times. The origin must keep it open."""
    tries = POST_CHECK_TRIES if side != "origin" else 1
    for attempt in range(1, tries + 1):
        try:
            _two_posts(port, body, side)
            return
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            if attempt == tries:
                raise
            log(f"{side}: a kept-alive connection was closed after a POST ({exc!r}); again")


def _two_posts(port: int, body: bytes, side: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for _ in range(2):
            conn.request("POST", "/post", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200 or data != POST_REPLY.encode():
                raise RuntimeError(f"{side} POST answered {resp.status}: {data[:200]!r}")
    finally:
        conn.close()


def check_forwarded(port: int, side: str) -> None:
    """Through a proxy the origin gets X-Forwarded-For/-Proto/-Host and an X-Request-ID, and
    the client gets the same X-Request-ID back (`forwarded_problems`)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/headers")
        resp = conn.getresponse()
        echoed = resp.read().decode("utf-8", "replace")
        rid = resp.getheader("X-Request-ID")
    finally:
        conn.close()
    problems = [] if resp.status == 200 else [f"status {resp.status}"]
    problems += forwarded_problems(echoed, rid, port)
    if problems:
        raise RuntimeError(f"{side}: forwarded headers: " + "; ".join(problems))


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu_seconds(root: int) -> CpuTime | None:
    """CPU seconds used so far by process `root` and its descendants, user and system; None if
    it is gone."""
    ticks = tree_ticks(_proc_stats(), root)
    return None if ticks is None else CpuTime(ticks[0] / _CLK_TCK, ticks[1] / _CLK_TCK)


def cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else max(after - before, 0.0)


def cpu_time_delta(before: CpuTime | None, after: CpuTime | None) -> CpuTime | None:
    """What a process tree spent between two `tree_cpu_seconds` readings (`cpu_delta` of each
    part, so the total is the sum of the parts)."""
    if before is None or after is None:
        return None
    return CpuTime(
        cpu_delta(before.user, after.user) or 0.0, cpu_delta(before.system, after.system) or 0.0
    )


def cpu_fields(spent: CpuTime | None) -> tuple[float | None, float | None, float | None]:
    """(total, user, system) seconds of a `cpu_time_delta`, for a run and its JSON row."""
    return (None, None, None) if spent is None else (spent.total, spent.user, spent.system)


def wait_ready(
    port: int, proc: subprocess.Popen[bytes], post: bytes, timeout: float = 30.0
) -> None:
    """Until every case succeeds 10 times in a row (several workers each get a connection)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cutover exited with {proc.returncode}")
        try:
            check_side(port, "cutover", post, tries=10)
            return
        except (OSError, RuntimeError, http.client.HTTPException) as exc:
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"cutover not ready within {timeout:g}s: {last}")


def run_wrk(cmd: Sequence[str], timeout: float) -> tuple[WrkResult, str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{text}")
    return parse_wrk(text), text


def _version(cmd: Sequence[str], pattern: str) -> str:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else "?"


def _pkg_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def machine_meta() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": _version(["nproc"], r"(\d+)"),
        "cpu_model": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
    }


def versions_meta() -> dict[str, str]:
    return {
        "Python": platform.python_version(),
        "aiohttp": _pkg_version("aiohttp"),
        "uvloop": _pkg_version("uvloop"),
        "nginx": _version(["nginx", "-v"], r"nginx/(\S+)"),
        "wrk": _version(["wrk", "-v"], r"wrk (?:debian/)?(\S+)"),
    }


def _nginx_user() -> str | None:
    """As root, nginx workers would drop to `nobody` and lose access to the temp dir."""
    if os.geteuid() != 0:
        return None
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _cpu_arg(text: str, available: set[int]) -> str | None:
    if text.lower() in {"", "none", "off"}:
        return None
    cpus = {int(c) for c in text.split(",")}
    if not cpus <= available:
        log(f"CPU(s) {text} not available (have {sorted(available)}): running unpinned")
        return None
    return text


def cpu_set(text: str | None) -> set[int] | None:
    """The CPUs of a `_cpu_arg` value ("0", "0,1"); None when unpinned."""
    return {int(c) for c in text.split(",")} if text else None


@dataclass
class Env:
    tmp: Path
    procs: Processes
    post_body: bytes
    post_lua: str
    origin_port: int
    wrk_cpu: str | None
    user: str | None
    proxy_cpu: str | None = None  # the fixed-rate runs move every proxy process here
    origin_pid: int | None = None


def start_nginx(
    env: Env,
    name: str,
    conf: str,
    cpu: str | None,
    port: int,
    prefix: Path | None = None,
    user_flag: bool = False,
) -> subprocess.Popen:
    """nginx in the foreground with `conf`, under `prefix` (default: the temp dir); with
    `user_flag`, `user <me>;` is given on the command line (as root only)."""
    prefix = prefix or env.tmp
    path = prefix / f"{name}.conf"
    path.write_text(conf)
    cmd = ["nginx", "-c", str(path), "-p", str(prefix), "-e", str(prefix / f"{name}-error.log")]
    directives = "daemon off;"
    if user_flag and env.user:
        directives += f" user {env.user};"
    cmd += ["-g", directives]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = env.procs.start(name, cmd, prefix / f"{name}.out")
    wait_port(port, proc, name)
    return proc


def start_cutover(env: Env, workers: int, conf: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cutover", "serve", "-c", str(conf), "--workers", str(workers)]
    run_env = dict(os.environ, CUTOVER_LOG_LEVEL="WARNING")
    proc = env.procs.start(
        f"cutover-w{workers}", cmd, env.tmp / f"cutover-w{workers}.out", cwd=ROOT, env=run_env
    )
    wait_port(port, proc, "cutover")
    wait_ready(port, proc, env.post_body)
    return proc


def _truncate(log_path: Path | None) -> int:
    """The access log's size; then empty it (keeps the temp dir small)."""
    if log_path is None:
        return 0
    size = 0
    with contextlib.suppress(OSError):
        size = log_path.stat().st_size
        os.truncate(log_path, 0)
    return size


def measure_workers(
    env: Env,
    workers: int,
    args: argparse.Namespace,
    raw: list[dict[str, Any]],
    raw_fixed: list[dict[str, Any]],
) -> tuple[list[Run], list[FixedRun]]:
    """Start nginx proxy and cutover with `workers` workers; run every round (wrk, then the
    fixed rate); stop them."""
    nginx_port, cutover_port = free_port(), free_port()
    cutover_log = env.tmp / f"cutover-w{workers}-access.log"
    cutover_yaml = env.tmp / f"cutover-w{workers}.yaml"
    cutover_yaml.write_text(render_cutover_config(cutover_port, env.origin_port, str(cutover_log)))
    prefix = env.tmp / f"proxy-w{workers}"
    prefix.mkdir()
    nginx_log = prefix / "cutover-nginx-access.log"
    log(f"{workers} worker(s): starting nginx proxy on :{nginx_port}, cutover on :{cutover_port}")
    nginx_conf, warnings = render_proxy_nginx(cutover_yaml, nginx_port, workers)
    for warning in warnings:
        log(f"cutover render nginx: warning: {warning}")
    nginx = start_nginx(env, "nginx", nginx_conf, None, nginx_port, prefix, user_flag=True)
    cutover = start_cutover(env, workers, cutover_yaml, cutover_port)
    ports = {"direct": env.origin_port, "nginx": nginx_port, "cutover": cutover_port}
    logs = {"direct": None, "nginx": nginx_log, "cutover": cutover_log}
    pids: dict[str, int | None] = {"direct": None, "nginx": nginx.pid, "cutover": cutover.pid}
    outputs = {
        "direct": env.tmp / "origin.out",
        "nginx": prefix / "nginx.out",
        "cutover": env.tmp / f"cutover-w{workers}.out",
    }
    for side, port in ports.items():
        try:
            check_side(port, side, env.post_body)
            check_post_reads(port, env.post_body, side)
            if side != "direct":
                check_forwarded(port, side)
        except (OSError, http.client.HTTPException) as exc:
            # name the side and show what its process said before the temp dir goes away
            tail = ""
            with contextlib.suppress(OSError):
                tail = outputs[side].read_text(errors="replace")[-2000:]
            raise RuntimeError(
                f"{side} (port {port}) failed its checks: {type(exc).__name__}: {exc}\n{tail}"
            ) from exc

    def proxy_cpu(side: str) -> CpuTime | None:
        pid = pids[side]
        return None if pid is None else tree_cpu_seconds(pid)

    runs: list[Run] = []
    fixed: list[FixedRun] = []
    pinned: dict[int, set[int]] = {}
    try:
        if args.warmup > 0:
            for side in SIDES:
                for case in CASES:
                    log(f"w{workers} warm-up {args.warmup:g}s: {case.title} via {side}")
                    run_wrk(_wrk_cmd(env, ports[side], case, args, args.warmup), args.warmup + 60)
                    _truncate(logs[side])
        for rnd in range(args.rounds):
            order = side_order(rnd)
            for case in CASES:
                for side in order:
                    log(
                        f"w{workers} round {rnd + 1}/{args.rounds}: {case.title} via {side} "
                        f"({args.duration:g}s)"
                    )
                    cmd = _wrk_cmd(env, ports[side], case, args, args.duration)
                    before = proxy_cpu(side)
                    result, text = run_wrk(cmd, args.duration + 60)
                    cpu, user, system = cpu_fields(cpu_time_delta(before, proxy_cpu(side)))
                    log_bytes = _truncate(logs[side])
                    bad = ""
                    if result.non_2xx or result.errors:
                        bad = f", NON-2XX {result.non_2xx}, SOCKET ERRORS {result.socket_errors}"
                    per_request = cpu_us_per_request(cpu, result.requests)
                    cpu_text = ""
                    if per_request is not None:
                        cpu_text = f", {fmt_cpu_us(per_request)} CPU µs/req"
                        user_us = cpu_us_per_request(user, result.requests)
                        system_us = cpu_us_per_request(system, result.requests)
                        if user_us is not None and system_us is not None:
                            cpu_text += (
                                f" ({fmt_cpu_us(user_us)} user + {fmt_cpu_us(system_us)} sys)"
                            )
                    log(
                        f"   -> {result.rps:,.0f} rps, p50 {fmt_ms(result.latency_ms.get('50'))}"
                        f", p99 {fmt_ms(result.latency_ms.get('99'))}{cpu_text}{bad}"
                    )
                    runs.append(Run(workers, rnd, case.key, side, result, cpu, user, system))
                    raw.append(
                        {
                            "workers": workers,
                            "round": rnd,
                            "case": case.key,
                            "side": side,
                            "command": shlex.join(cmd),
                            "result": asdict(result),
                            "cpu_seconds": cpu,
                            "cpu_user_seconds": user,
                            "cpu_system_seconds": system,
                            "access_log_bytes": log_bytes,
                            "wrk_output": text,
                        }
                    )
        peak = summarize(runs).get(workers, {})
        if args.fixed_rate_seconds > 0 and workers in args.fixed_rate_worker_counts:
            proxy_cpus = cpu_set(env.proxy_cpu)
            if proxy_cpus and env.wrk_cpu and env.origin_pid:
                # the proxy under test gets a core to itself; the generator and the origin
                # share the other, so a side's added latency is the proxy's own
                log(
                    f"fixed rate: proxies moved to CPU {env.proxy_cpu}, origin to CPU "
                    f"{env.wrk_cpu} with the generator"
                )
                pinned.update(pin_tree(env.origin_pid, cpu_set(env.wrk_cpu) or set()))
                for proc in (nginx, cutover):
                    pinned.update(pin_tree(proc.pid, proxy_cpus))
            for share in args.fixed_rate_shares:
                rate = fixed_rate_for(peak, share)
                if rate:
                    sides = FixedSides(ports, logs, proxy_cpu, proxy_cpus)
                    fixed += measure_fixed(env, workers, share, round(rate), sides, args, raw_fixed)
        for side, proc in (("nginx", nginx), ("cutover", cutover)):
            if proc.poll() is not None:
                raise RuntimeError(f"{side} died during the run (exit {proc.returncode})")
    finally:
        unpin(pinned)
        env.procs.stop(cutover)
        env.procs.stop(nginx)
    return runs, fixed


@dataclass(frozen=True)
class FixedSides:
    """What the fixed-rate runs need to know of the sides: ports, access logs, the proxies'
    CPU time so far (by side), and the CPUs the proxies run on."""

    ports: Mapping[str, int]
    logs: Mapping[str, Path | None]
    cpu_seconds: Callable[[str], CpuTime | None]
    proxy_cpus: set[int] | None


def measure_fixed(
    env: Env,
    workers: int,
    share: float,
    rate: float,
    sides: FixedSides,
    args: argparse.Namespace,
    raw_fixed: list[dict[str, Any]],
) -> list[FixedRun]:
    """Every round of the fixed-rate run at `rate` (`share` of cutover's peak), sides rotated."""
    case = CASES_BY_KEY[FIXED_RATE_CASE]
    out: list[FixedRun] = []
    for rnd in range(args.rounds):
        for side in side_order(rnd):
            log(
                f"w{workers} fixed rate {rnd + 1}/{args.rounds} ({share:.0%} of peak): "
                f"{case.title} via {side} at {rate:,.0f}/s ({args.fixed_rate_seconds:g}s)"
            )
            cmd = fixed_rate_command(
                f"http://127.0.0.1:{sides.ports[side]}{case.path}",
                rate=rate,
                seconds=args.fixed_rate_seconds,
                connections=args.connections,
                cpu=env.wrk_cpu,
            )
            before, core_before = sides.cpu_seconds(side), cpu_reading(sides.proxy_cpus)
            kdamond = named_cpu_seconds()
            result = run_fixed_rate(cmd, args.fixed_rate_seconds + 60)
            kdamond = named_cpu_seconds() - kdamond
            cpu, user, system = cpu_fields(cpu_time_delta(before, sides.cpu_seconds(side)))
            busy = busy_share(core_before, cpu_reading(sides.proxy_cpus))
            inside = None
            if side == "cutover":
                time.sleep(ACCESS_LOG_FLUSH + 0.2)  # its last lines reach the file
                inside = access_log_p99(sides.logs[side])
            log_bytes = _truncate(sides.logs[side])
            lat = result.latency_ms
            bad = f", {result.failed} FAILED" if result.failed else ""
            core = "" if busy is None else f", proxy CPU {busy:.0%} busy"
            within = "" if inside is None else f", inside cutover p99 {fmt_ms(inside)}"
            noise = f", kdamond {kdamond * 1000:.0f} ms" if kdamond else ""
            log(
                f"   -> p50 {fmt_ms(lat.get('50'))}, p99 {fmt_ms(lat.get('99'))}, "
                f"send lag p99 {fmt_ms(result.lag_ms.get('99'))}{core}{within}{noise}{bad}"
            )
            out.append(FixedRun(workers, rnd, side, result, cpu, busy, inside, share, user, system))
            raw_fixed.append(
                {
                    "workers": workers,
                    "round": rnd,
                    "side": side,
                    "share": share,
                    "command": shlex.join(cmd),
                    "result": asdict(result),
                    "cpu_seconds": cpu,
                    "cpu_user_seconds": user,
                    "cpu_system_seconds": system,
                    "core_busy": busy,
                    "inside_p99_ms": inside,
                    "kdamond_seconds": kdamond,
                    "access_log_bytes": log_bytes,
                }
            )
    return out


def run_fixed_rate(cmd: Sequence[str], timeout: float) -> FixedRateResult:
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.fixed_rate exited with {proc.returncode}:\n{proc.stderr}")
    return FixedRateResult(**json.loads(proc.stdout))


def _wrk_cmd(
    env: Env, port: int, case: Case, args: argparse.Namespace, duration: float
) -> list[str]:
    return wrk_command(
        f"http://127.0.0.1:{port}{case.path}",
        duration=duration,
        connections=args.connections,
        cpu=env.wrk_cpu,
        script=env.post_lua if case.method == "POST" else None,
    )


def write_docroot(root: Path) -> None:
    root.mkdir()
    (root / "small.json").write_bytes(SMALL_JSON)
    (root / "64k.bin").write_bytes(make_big_body())
    (root / "health.json").write_bytes(HEALTH_JSON)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m cutover.bench.overhead", description=__doc__.split("\n")[0]
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated (1,2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per side/case (2)")
    p.add_argument("--wrk-cpu", default="0", help="CPU list for wrk, or none (0)")
    p.add_argument("--origin-cpu", default="1", help="CPU list for the origin, or none (1)")
    p.add_argument(
        "--proxy-cpu",
        default="1",
        help="CPU list the proxies move to for the fixed-rate runs, the origin moving to "
        "--wrk-cpu beside the generator; none leaves them where they are (1)",
    )
    p.add_argument(
        "--fixed-rate-seconds",
        type=float,
        default=5.0,
        help="seconds per side and round of the fixed-rate run at half of cutover's peak "
        "(5; 0 skips it)",
    )
    p.add_argument(
        "--fixed-rate-shares",
        default="0.5",
        help="shares of cutover's median peak to run at, comma-separated (0.5; the goal of "
        "issue 9 is at 0.5); e.g. 0.15,0.3,0.5 shows how the tail grows with load",
    )
    p.add_argument(
        "--fixed-rate-workers",
        default="1",
        help="worker counts that get the fixed-rate run (1): at half of a 2-worker peak the "
        "Python generator and every proxy process crowd 2 cores and the schedule itself slips",
    )
    p.add_argument("--out", default="BENCHMARKS.md", help="Markdown file to update")
    p.add_argument("--json-dir", default=str(ROOT / "bench" / "results"), help="raw JSON here")
    p.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: re-render --out from the raw JSON of an earlier run",
    )
    args = p.parse_args(argv)
    try:
        args.worker_counts = parse_workers(args.workers)
        args.fixed_rate_worker_counts = parse_workers(args.fixed_rate_workers)
    except ValueError:
        p.error("--workers and --fixed-rate-workers take worker counts >= 1, like 1,2")
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        p.error("--rounds, --duration and --connections must be positive")
    if args.fixed_rate_seconds < 0:
        p.error("--fixed-rate-seconds must be >= 0")
    try:
        args.fixed_rate_shares = parse_shares(args.fixed_rate_shares)
    except ValueError:
        p.error("--fixed-rate-shares takes shares of the peak in (0, 1], like 0.15,0.3,0.5")
    return args


def parse_shares(text: str) -> list[float]:
    """`0.5,0.15` -> [0.15, 0.5]: shares of the peak, each in (0, 1], sorted, no repeats."""
    shares = sorted({float(part) for part in text.split(",") if part.strip()})
    if not shares or not all(0 < share <= 1 for share in shares):
        raise ValueError(text)
    return shares


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def runs_from_json(payload: Mapping[str, Any]) -> list[Run]:
    """The runs of a raw JSON file written by `main`."""
    return [
        Run(
            r["workers"],
            r["round"],
            r["case"],
            r["side"],
            parse_wrk(r["wrk_output"]) if "wrk_output" in r else WrkResult(**r["result"]),
            r.get("cpu_seconds"),
            r.get("cpu_user_seconds"),
            r.get("cpu_system_seconds"),
        )
        for r in payload["runs"]
    ]


def fixed_runs_from_json(payload: Mapping[str, Any]) -> list[FixedRun]:
    """The fixed-rate runs of a raw JSON file written by `main` (none in older files)."""
    return [
        FixedRun(
            r["workers"],
            r["round"],
            r["side"],
            FixedRateResult(**r["result"]),
            r.get("cpu_seconds"),
            r.get("core_busy"),
            r.get("inside_p99_ms"),
            r.get("share", FIXED_RATE_SHARE),
            r.get("cpu_user_seconds"),
            r.get("cpu_system_seconds"),
        )
        for r in payload.get("fixed_rate_runs", ())
    ]


def rerender(args: argparse.Namespace) -> int:
    payload = json.loads(Path(args.from_json).read_text())
    summary = summarize(runs_from_json(payload))
    fixed = summarize_fixed(fixed_runs_from_json(payload))
    out = Path(args.out)
    plot = write_fixed_plot(fixed, out)
    section = render_section(summary, payload["meta"], payload.get("notes", ()), fixed, plot)
    out.write_text(replace_section(out.read_text() if out.exists() else "", section))
    log(f"wrote {out} from {args.from_json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.from_json:
        return rerender(args)
    for tool in ("nginx", "wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench.overhead: no {tool} (apt-get install -y nginx wrk)", file=sys.stderr)
            return 2
    command = "python -m cutover.bench.overhead " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    started = dt.datetime.now(dt.UTC)
    available = os.sched_getaffinity(0)
    wrk_cpu = _cpu_arg(args.wrk_cpu, available)
    origin_cpu = _cpu_arg(args.origin_cpu, available)
    proxy_cpu = _cpu_arg(args.proxy_cpu, available)
    notes: list[str] = []
    if args.fixed_rate_seconds <= 0:
        notes.append(
            "Fixed-rate latency run (added p99 at half of cutover's peak, issue 9): **skipped** "
            "(`--fixed-rate-seconds 0`); the closed-loop wrk percentiles below suffer from "
            "coordinated omission."
        )
    procs = Processes()
    raw: list[dict[str, Any]] = []
    raw_fixed: list[dict[str, Any]] = []
    runs: list[Run] = []
    fixed_runs: list[FixedRun] = []
    tmp = Path(tempfile.mkdtemp(prefix="cutover-bench-"))
    try:
        with _sigterm_as_interrupt():
            tmp.chmod(0o755)
            docroot = tmp / "www"
            write_docroot(docroot)
            post_body = make_post_body()
            lua = tmp / "post.lua"
            lua.write_text(render_post_lua(post_body))
            env = Env(
                tmp=tmp,
                procs=procs,
                post_body=post_body,
                post_lua=str(lua),
                origin_port=free_port(),
                wrk_cpu=wrk_cpu,
                user=_nginx_user(),
                proxy_cpu=proxy_cpu,
            )
            log(f"temp dir {tmp}; origin on :{env.origin_port} (cpu {origin_cpu or 'any'})")
            origin_conf = render_origin_conf(str(tmp), env.origin_port, str(docroot), env.user)
            origin = start_nginx(env, "origin", origin_conf, origin_cpu, env.origin_port)
            env.origin_pid = origin.pid
            check_side(env.origin_port, "direct", post_body)
            check_post_reads(env.origin_port, post_body)
            for workers in args.worker_counts:
                wrk_runs, rate_runs = measure_workers(env, workers, args, raw, raw_fixed)
                runs += wrk_runs
                fixed_runs += rate_runs
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(runs)
    fixed = summarize_fixed(fixed_runs)
    pinned = f"pinned to CPU {wrk_cpu}" if wrk_cpu else "unpinned"
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_meta(),
        "versions": versions_meta(),
        "command": command,
        "rounds": args.rounds,
        "load": (
            f"wrk -t1 -c{args.connections} -d{args.duration:g}s --latency, "
            f"{pinned}; "
            f"{args.warmup:g}s warm-up per side and case, not counted"
        ),
        "layout": (
            f"origin = static nginx, 1 worker, "
            f"{'pinned to CPU ' + origin_cpu if origin_cpu else 'unpinned'}; nginx proxy "
            "configured by `cutover render nginx` from the cutover side's own YAML; nginx proxy "
            "and cutover unpinned, same worker count, both with an access log to a file"
        ),
    }
    if args.fixed_rate_seconds > 0:
        meta["fixed_rate"] = (
            "`python -m cutover.bench.fixed_rate`, GET small JSON at half of cutover's median "
            "peak rps "
            f"(for {args.fixed_rate_workers} worker(s): `--fixed-rate-workers`), "
            f"{args.fixed_rate_seconds:g} s per side and round in the same "
            f"rotated order, {args.connections} keep-alive connections, {pinned}; "
            + (
                f"for these runs the proxies move to CPU {proxy_cpu} and the origin to CPU "
                f"{wrk_cpu} beside the generator, so each proxy has a core to itself; "
                if proxy_cpu and wrk_cpu
                else ""
            )
            + "latency from each request's scheduled time (open loop, no coordinated "
            "omission); p50/p99 are nearest-rank over every request of a run, medians over "
            "rounds; added = side minus direct in the same round, median (and range) over "
            "rounds; p99 inside cutover = its access log's durations (request head to last "
            "byte out); proxy CPU busy = share of the proxy's CPU not idle (user, system, "
            "irq, softirq: loopback packets are processed there too)"
        )
    out = Path(args.out)
    plot = write_fixed_plot(fixed, out)
    section = render_section(summary, meta, notes, fixed, plot)
    out.write_text(replace_section(out.read_text() if out.exists() else "", section))
    json_dir = Path(args.json_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    json_path = json_dir / f"overhead-{started.strftime('%Y-%m-%dT%H%M%SZ')}.json"
    payload = {
        "meta": meta,
        "notes": notes,
        "summary": summary_to_json(summary),
        "fixed_rate_summary": fixed_to_json(fixed),
        "runs": raw,
        "fixed_rate_runs": raw_fixed,
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"wrote {out} and {json_path}")
    print(render_tables(summary, args.rounds, fixed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
