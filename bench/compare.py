"""``cutover bench compare``: the same Locust scenario against A and B, interleaved, with a verdict.

    cutover bench compare --a URL --b URL [--users 10] [--spawn-rate R] [--duration 60s]
        [--rounds 3] [--warmup 0s] [--open-rate RPS] [--expect "b.p95 <= 0.5 * a.p95"]...
        [--max-error-rate 0.01] [--report DIR] [--env K=V]... [--a-env K=V]... [--b-env K=V]...

Each round runs the scenario once against each side, for ``--duration`` each; the order
alternates (A B, B A, A B, ...) so that drift on the machine hits both sides alike. Locust runs
headless in its own process (``python -m locust``): gevent and the gateway's asyncio never share
one. The locustfile writes every request's exact latency to a samples file, which is read while
it runs (live progress on stderr) and afterwards for the figures (bench/stats.py: nearest-rank
percentiles, ratios B/A with their spread over rounds).

Exit codes: 0 the run is good and every budget holds; 1 a budget failed or an error rate is over
``--max-error-rate`` (the figures that failed are printed); 2 bad usage (arguments, a budget that
does not parse); 3 the benchmark could not run (Locust missing or crashed, a host unreachable, a
run with no request answered). Nothing is reported for a run that did not happen.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from cutover.bench import report as report_mod
from cutover.bench.stats import (
    Budget,
    BudgetError,
    Sample,
    SideSamples,
    figure_text,
    parse_budget,
    percentile,
)

__all__ = ["BenchError", "Settings", "add_arguments", "main", "run_command", "run_compare"]

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SIDE_LABELS = {"a": "A", "b": "B"}
RESERVED_ENV = ("CUTOVER_BENCH_SAMPLES", "CUTOVER_BENCH_RATE")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3
STOP_GRACE_S = 45.0  # Locust's start-up and shutdown on top of the run time, at most


_USERINFO = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")


def redact(text: str) -> str:
    """Hide the password of ``http://user:password@host`` URLs in anything shown or saved."""
    return _USERINFO.sub(r"\1:***@", text)


class BenchError(RuntimeError):
    """The benchmark could not produce figures (exit code 3)."""


class UsageError(ValueError):
    """Bad arguments (exit code 2)."""


# --------------------------------------------------------------------------------------------------
# arguments


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``60``, ``60s``, ``1m30s``, ``500ms``, ``2h`` -> seconds."""
    raw = text.strip()
    total, pos = 0.0, 0
    while pos < len(raw):
        m = _DURATION.match(raw, pos)
        if m is None or (m.group(2) is None and (pos, m.end()) != (0, len(raw))):
            raise UsageError(f"{text!r}: expected a duration such as 60s, 1m30s or 500ms")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not raw:
        raise UsageError("empty duration: expected e.g. 60s")
    return total


def _env_pair(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    if name in RESERVED_ENV:
        raise argparse.ArgumentTypeError(f"{name} is set by the runner (use --open-rate)")
    return name, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``cutover bench compare`` (also ``python -m cutover.bench.compare``)."""
    parser.add_argument("--a", required=True, metavar="URL", help="side A (the baseline)")
    parser.add_argument("--b", required=True, metavar="URL", help="side B (the candidate)")
    parser.add_argument("--users", type=int, default=10, help="Locust users (default 10)")
    parser.add_argument(
        "--spawn-rate", type=float, help="users started per second (default: all in 1 s)"
    )
    parser.add_argument(
        "--duration", default="60s", help="per side per round, measured (default 60s)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument(
        "--warmup",
        default="0s",
        help="left out at the start of every run (default 0s; the run is that much longer)",
    )
    parser.add_argument(
        "--open-rate",
        type=float,
        metavar="RPS",
        help="open model: this many requests per second in total, on a fixed schedule",
    )
    parser.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="BUDGET",
        help='e.g. "b.p95 <= 0.5 * a.p95 and b.error_rate <= 0.01" (repeatable)',
    )
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="a side above this fraction of failed requests fails the run (default 0.01)",
    )
    parser.add_argument("--report", metavar="DIR", help="write compare.md, .json and .html here")
    parser.add_argument(
        "--keep-samples", action="store_true", help="keep the raw samples in DIR/samples"
    )
    parser.add_argument(
        "--locustfile", default=str(LOCUSTFILE), help="scenario (default bench/locustfile.py)"
    )
    for flag, target in (("--env", "both sides"), ("--a-env", "side A"), ("--b-env", "side B")):
        parser.add_argument(
            flag,
            action="append",
            default=[],
            type=_env_pair,
            metavar="NAME=VALUE",
            help=f"environment for the scenario on {target} (repeatable)",
        )


@dataclass(frozen=True, slots=True)
class Settings:
    a: str
    b: str
    users: int
    spawn_rate: float
    duration_s: float
    warmup_s: float
    rounds: int
    open_rate: float | None
    budgets: tuple[Budget, ...]
    max_error_rate: float
    locustfile: Path
    env: tuple[tuple[str, str], ...] = ()
    side_env: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    report_dir: Path | None = None
    keep_samples: bool = False

    def url(self, side: str) -> str:
        return self.a if side == "a" else self.b

    def describe(self) -> dict[str, Any]:
        return {
            "a": redact(self.a),
            "b": redact(self.b),
            "users": self.users,
            "spawn_rate": self.spawn_rate,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "rounds": self.rounds,
            "model": "open" if self.open_rate else "closed",
            "open_rate": self.open_rate,
            "max_error_rate": self.max_error_rate,
            "expect": [b.text for b in self.budgets],
            "locustfile": str(self.locustfile),
            "env": dict(self.env),
            "a_env": dict(self.side_env.get("a", ())),
            "b_env": dict(self.side_env.get("b", ())),
        }


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate the parsed options; UsageError names the option and what was expected."""
    for side in ("a", "b"):
        url = urlsplit(getattr(args, side))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise UsageError(f"--{side} {getattr(args, side)!r}: expected http://HOST[:PORT]")
    if args.users < 1:
        raise UsageError("--users must be at least 1")
    if args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    spawn_rate = float(args.users) if args.spawn_rate is None else args.spawn_rate
    if not spawn_rate > 0:
        raise UsageError("--spawn-rate must be above 0")
    duration = parse_duration(args.duration)
    if duration < 1:
        raise UsageError("--duration must be at least 1s")
    warmup = parse_duration(args.warmup)
    if args.open_rate is not None and not (0 < args.open_rate < math.inf):
        raise UsageError("--open-rate must be above 0")
    if not 0 <= args.max_error_rate <= 1:
        raise UsageError("--max-error-rate is a fraction: 0.01 means 1%")
    budgets = []
    for text in args.expect:
        try:
            budgets.append(parse_budget(text))
        except BudgetError as exc:
            raise UsageError(f"--expect {text!r}: {exc}") from None
    locustfile = Path(args.locustfile).resolve()
    if not locustfile.is_file():
        raise UsageError(f"--locustfile {args.locustfile}: no such file")
    return Settings(
        a=args.a.rstrip("/"),
        b=args.b.rstrip("/"),
        users=args.users,
        spawn_rate=spawn_rate,
        duration_s=duration,
        warmup_s=warmup,
        rounds=args.rounds,
        open_rate=args.open_rate,
        budgets=tuple(budgets),
        max_error_rate=args.max_error_rate,
        locustfile=locustfile,
        env=tuple(args.env),
        side_env={"a": tuple(args.a_env), "b": tuple(args.b_env)},
        report_dir=Path(args.report) if args.report else None,
        keep_samples=bool(args.keep_samples),
    )


# --------------------------------------------------------------------------------------------------
# samples and progress


def parse_sample_line(line: str) -> Sample | None:
    """One line of the locustfile's samples file; None when it is not one."""
    parts = line.rstrip("\n").split("\t")
    if len(parts) < 5:
        return None
    try:
        return Sample(
            start=float(parts[0]),
            name=parts[1],
            latency_ms=float(parts[2]),
            ok=parts[3] == "1",
            lag_ms=float(parts[4]),
            error=parts[5] if len(parts) > 5 else "",
        )
    except ValueError:
        return None


class _Tail:
    """Reads the complete lines a running Locust has flushed so far: samples and markers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.samples: list[Sample] = []
        self.markers: dict[str, float] = {}

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line.startswith("#"):
                kind, _, when = line[1:].partition("\t")
                with contextlib.suppress(ValueError):
                    self.markers.setdefault(kind, float(when))
                continue
            sample = parse_sample_line(line)
            if sample is not None:
                self.samples.append(sample)


class Progress:
    """One status line on stderr: rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last = 0.0

    def note(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        print(text, file=self.stream, flush=True)

    def status(self, text: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self.last >= 5:
            print(text, file=self.stream, flush=True)
            self.last = now


def _status_line(label: str, elapsed: float, total: float, samples: Sequence[Sample]) -> str:
    ok = sorted(s.latency_ms for s in samples if s.ok)
    errors = len(samples) - len(ok)
    rate = len(samples) / elapsed if elapsed > 0 else 0.0
    lat = "no answer yet"
    if ok:
        p50, p99 = percentile(ok, 50), percentile(ok, 99)
        lat = f"p50 {figure_text('p50', p50)}  p99 {figure_text('p99', p99)}"
    return (
        f"{label}  {min(elapsed, total):4.0f}/{total:g} s  {len(samples):,} req  {rate:,.0f}/s"
        f"  {lat}  errors {errors:,}"
    )


# --------------------------------------------------------------------------------------------------
# one Locust run


@dataclass(frozen=True, slots=True)
class RunSpec:
    side: str
    round: int  # 1-based
    url: str
    samples: Path
    log_dir: Path


@dataclass(frozen=True, slots=True)
class RunResult:
    """The samples of one run and its measurement window ``[begin, end)`` (wall seconds)."""

    samples: list[Sample]
    begin: float
    end: float


def _ramp_s(settings: Settings) -> float:
    return settings.users / settings.spawn_rate


def locust_command(settings: Settings, url: str) -> list[str]:
    """The Locust command line of one run (headless, its own process).

    ``-t`` is only a safety net: the runner stops Locust itself (SIGTERM) once the measurement
    window and its grace period are over.
    """
    cap = math.ceil(_ramp_s(settings) + settings.warmup_s + settings.duration_s + STOP_GRACE_S)
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(settings.locustfile),
        "--headless",
        "-u",
        str(settings.users),
        "-r",
        f"{settings.spawn_rate:g}",
        "-t",
        f"{cap}s",
        "--host",
        url,
        "--stop-timeout",
        "0",
        "--exit-code-on-error",
        "0",
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]


def _run_env(settings: Settings, spec: RunSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.env)
    env.update(settings.side_env.get(spec.side, ()))
    env["CUTOVER_BENCH_SAMPLES"] = str(spec.samples)
    env["CUTOVER_BENCH_RATE"] = f"{settings.open_rate:g}" if settings.open_rate else "0"
    return env


def _scenario_timeout(env: dict[str, str]) -> float:
    try:
        return max(float(env.get("CUTOVER_BENCH_TIMEOUT") or 10.0), 0.001)
    except ValueError:
        return 10.0  # the locustfile itself will refuse it, with its own message


def _grace_s(samples: Sequence[Sample], timeout: float) -> float:
    """How long to wait after the window for the requests it sent: 3 x the p99 so far,
    between 0.5 s and the scenario's own timeout."""
    ok = sorted(s.latency_ms for s in samples if s.ok)
    p99 = percentile(ok, 99) / 1000 if ok else timeout
    return min(max(3 * p99, 0.5), max(timeout, 0.5))


def _tail_text(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""
    kept = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def run_locust(settings: Settings, spec: RunSpec, progress: Progress, label: str) -> RunResult:
    """Run Locust once against one side and return what it measured, or raise BenchError.

    The window opens ``--warmup`` after every user is running (the locustfile's ``#ready``
    marker) and lasts ``--duration``; after a grace period for the requests still out, Locust
    gets SIGTERM, and records whatever is still unanswered as failed.
    """
    spec.samples.unlink(missing_ok=True)
    stdout_path = spec.log_dir / f"locust-{spec.side}-{spec.round}.out"
    stderr_path = spec.log_dir / f"locust-{spec.side}-{spec.round}.err"
    env = _run_env(settings, spec)
    timeout = _scenario_timeout(env)
    start_deadline = STOP_GRACE_S + _ramp_s(settings)
    tail = _Tail(spec.samples)
    stopped, stop_deadline = False, math.inf
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            locust_command(settings, spec.url),
            cwd=spec.log_dir,  # no stray locust.conf / pyproject.toml settings
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        launched = time.monotonic()
        try:
            while proc.poll() is None:
                time.sleep(0.25)
                tail.poll()
                ready = tail.markers.get("ready")
                if ready is None:
                    if time.monotonic() - launched > start_deadline:
                        raise BenchError(
                            f"{label}: Locust did not start its users within "
                            f"{start_deadline:.0f} s" + _said(stderr_path)
                        )
                    progress.status(f"{label}  starting Locust")
                    continue
                begin = ready + settings.warmup_s
                window_end = begin + settings.duration_s
                now = time.time()
                measured = [s for s in tail.samples if begin <= s.start < window_end]
                if now < begin:
                    progress.status(f"{label}  warming up")
                else:
                    progress.status(_status_line(label, now - begin, settings.duration_s, measured))
                if not stopped and now >= window_end + _grace_s(measured, timeout):
                    _signal(proc, signal.SIGTERM)
                    stopped, stop_deadline = True, time.monotonic() + 15
                if time.monotonic() > stop_deadline:
                    raise BenchError(f"{label}: Locust did not stop within 15 s of SIGTERM")
        except BaseException:
            _stop(proc)
            raise
    tail.poll()
    rc = proc.returncode
    if rc != 0:
        said = _tail_text(stderr_path) or _tail_text(stdout_path) or "(no output)"
        headline = said.splitlines()[-1].strip()
        raise BenchError(
            f"{label}: Locust failed (exit code {rc}) against {spec.url}: {headline}\n"
            f"  its last words:\n{_indent(said)}"
        )
    ready = tail.markers.get("ready")
    if ready is None:
        raise BenchError(f"{label}: Locust ended before its users started" + _said(stderr_path))
    begin = ready + settings.warmup_s
    end = begin + settings.duration_s
    if not stopped:  # Locust ended on its own (its -t, or the scenario stopped): less was measured
        end = min(end, max((s.start + s.latency_ms / 1000 for s in tail.samples), default=begin))
    measured = [s for s in tail.samples if begin <= s.start < end]
    if not measured:
        raise BenchError(
            f"{label}: no request was sent to {spec.url} within the measurement window "
            f"(the scenario sent nothing, or Locust stopped early)" + _said(stderr_path)
        )
    if not any(s.ok for s in measured):
        raise BenchError(
            f"{label}: none of the {len(measured):,} requests to {spec.url} succeeded; "
            f"most frequent:\n" + _indent(_top_errors(measured))
        )
    progress.status(
        _status_line(label, settings.duration_s, settings.duration_s, measured), final=True
    )
    return RunResult(tail.samples, begin, end)


def _said(stderr_path: Path) -> str:
    said = _tail_text(stderr_path, 6)
    return f"; Locust said:\n{_indent(said)}" if said else ""


def _top_errors(samples: Sequence[Sample], limit: int = 5) -> str:
    counts: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            key = f"{s.name}: {s.error or 'failed'}"
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return "\n".join(f"{n:,} x {k}" for k, n in ranked)


def _indent(text: str) -> str:
    return "\n".join("    " + ln for ln in text.splitlines())


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a Locust process group we started: SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------------------------------
# the comparison


def preflight(side: str, url: str, timeout: float = 3.0) -> None:
    """Fail early, and clearly, when a side does not accept connections at all."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BenchError(f"side {SIDE_LABELS[side]} ({url}) is unreachable: {reason}") from None


def round_order(index: int) -> tuple[str, str]:
    """Round 1 runs A then B, round 2 B then A, and so on."""
    return ("a", "b") if index % 2 == 1 else ("b", "a")


def judge(
    settings: Settings, overall: dict[str, Any], error_messages: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """The verdict: error rates against --max-error-rate, then every budget."""
    checks: list[dict[str, Any]] = []
    for side in ("a", "b"):
        fig = overall[side]
        passed = fig["error_rate"] <= settings.max_error_rate
        detail = (
            f"{SIDE_LABELS[side]} error rate {fig['error_rate'] * 100:.2f} % "
            f"({fig['errors']:,} of {fig['requests']:,} requests) "
            f"{'<=' if passed else 'is over'} --max-error-rate "
            f"{settings.max_error_rate * 100:g} %"
        )
        if not passed and error_messages.get(side):
            top = sorted(error_messages[side].items(), key=lambda kv: -kv[1])[:3]
            detail += "; most frequent: " + "; ".join(f"{n:,} x {k}" for k, n in top)
        checks.append({"kind": "error_rate", "side": side, "passed": passed, "detail": detail})
    figures = {
        f"{side}.{metric}": overall[side].get(metric)
        for side in ("a", "b")
        for metric in ("p50", "p95", "p99", "max", "rps", "error_rate")
    }
    for budget in settings.budgets:
        result = budget.evaluate(figures)
        checks.append(
            {
                "kind": "budget",
                "expect": budget.text,
                "passed": result.passed,
                "detail": "; ".join(c.explain() for c in result.clauses),
                "failed": [c.explain() for c in result.failed()],
            }
        )
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def run_compare(
    settings: Settings, *, stderr: IO[str] | None = None, argv: Sequence[str] = ()
) -> dict[str, Any]:
    """Run every round and return the report (a JSON-able dict, with its ``verdict``)."""
    progress = Progress(stderr or sys.stderr)
    if importlib.util.find_spec("locust") is None:
        raise BenchError("Locust is not installed: pip install 'cutover[bench]'")
    for side in ("a", "b"):
        preflight(side, settings.url(side))
    started = dt.datetime.now(dt.UTC)
    load_before = _loadavg()
    sides = {"a": SideSamples(), "b": SideSamples()}
    windows: dict[str, list[list[float]]] = {"a": [], "b": []}
    orders: list[list[str]] = []
    keep = settings.keep_samples and settings.report_dir is not None
    with contextlib.ExitStack() as stack:
        if keep and settings.report_dir is not None:
            work = settings.report_dir / "samples"
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cutover-bench-")))
        rate = settings.open_rate
        model = f"open model, {rate:g} req/s" if rate else "closed model"
        progress.note(
            f"bench compare: A {redact(settings.a)}  B {redact(settings.b)}  "
            f"{settings.users} users, {model}, "
            f"{settings.rounds} round(s) x {settings.duration_s:g} s per side"
        )
        for index in range(1, settings.rounds + 1):
            order = round_order(index)
            orders.append(list(order))
            for side in order:
                label = f"[round {index}/{settings.rounds}] {SIDE_LABELS[side]}"
                spec = RunSpec(
                    side=side,
                    round=index,
                    url=settings.url(side),
                    samples=work / f"samples-{side}-{index}.tsv",
                    log_dir=work,
                )
                result = run_locust(settings, spec, progress, label)
                sides[side].add_run(result.samples, result.begin, result.end)
                windows[side].append([result.begin, result.end])
    meta = {
        "tool": "cutover bench compare",
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": redact(shlex.join(["cutover", *argv])) if argv else "",
        "machine": _machine(load_before),
        "samples_dir": str(work) if keep else None,
        "windows": windows,  # per side, per round: [begin, end) in wall seconds
    }
    data = report_mod.assemble(settings.describe(), sides, orders, meta)
    messages = {side: dict(sides[side].error_messages) for side in ("a", "b")}
    overall = {side: data["sides"][side]["overall"] for side in ("a", "b")}
    data["verdict"] = judge(settings, overall, messages)
    data["notes"] = _notes(settings, overall)
    for note in data["notes"]:
        progress.note(f"note: {note}")
    return data


def _notes(settings: Settings, overall: dict[str, Any]) -> list[str]:
    """Warnings about the measurement itself (they do not change the verdict)."""
    notes = []
    if settings.open_rate:
        for side in ("a", "b"):
            sent = overall[side]["rps"]
            if sent < 0.9 * settings.open_rate:
                notes.append(
                    f"{SIDE_LABELS[side]} was sent {sent:,.1f} req/s of the {settings.open_rate:g} "
                    f"asked for: the load generator fell behind (its send lag p99 is in the "
                    f"report); use more --users or a lower --open-rate"
                )
    return notes


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine(load_before: list[float] | None) -> dict[str, Any]:
    try:
        locust_version = importlib.metadata.version("locust")
    except importlib.metadata.PackageNotFoundError:
        locust_version = None
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "locust": locust_version,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
    }


# --------------------------------------------------------------------------------------------------
# command


def run_command(
    args: argparse.Namespace,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    argv: Sequence[str] = (),
) -> int:
    """``cutover bench compare``: run, print the Markdown summary, write reports, exit code."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        settings = settings_from_args(args)
    except UsageError as exc:
        print(f"cutover bench compare: {exc}", file=err)
        return EXIT_USAGE
    try:
        data = run_compare(settings, stderr=err, argv=argv)
    except BenchError as exc:
        print(f"cutover bench compare: error: {redact(str(exc))}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("cutover bench compare: interrupted; no report", file=err)
        return 130
    markdown = report_mod.render_markdown(data)
    print(markdown, file=out, flush=True)
    if settings.report_dir is not None:
        written = report_mod.write_reports(data, settings.report_dir)
        print("report: " + ", ".join(str(p) for p in written), file=err)
    return _print_verdict(data["verdict"], err)


def _print_verdict(verdict: dict[str, Any], err: IO[str]) -> int:
    failed = [c for c in verdict["checks"] if not c["passed"]]
    if not failed:
        print("cutover bench compare: PASS", file=err)
        return EXIT_OK
    print(f"cutover bench compare: FAIL ({len(failed)} check(s))", file=err)
    for check in failed:
        if check["kind"] == "budget":
            print(f"  budget {check['expect']!r} failed:", file=err)
            for line in check["failed"]:
                print(f"    {line}", file=err)
        else:
            print(f"  {check['detail']}", file=err)
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cutover.bench.compare ...``."""
    parser = argparse.ArgumentParser(
        prog="cutover bench compare",
        description="Run the same Locust scenario against A and B in alternating rounds.",
    )
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command(parser.parse_args(argv), argv=["bench", "compare", *argv])


if __name__ == "__main__":
    sys.exit(main())
