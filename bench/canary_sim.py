"""A traffic simulator for the canary verdict and controller, on a fake clock
(`python -m cutover.bench.canary_sim --seeds 200`: docs/canary.md's detection figures).

Two sides (baseline, candidate) send requests at fixed rates; each second is cut in four steps
whose requests, failures (binomial) and latencies (drawn from a log-normal pool) are counted
into the real windows (`RouteCanary`). Once a second, as the gateway's controller does, the
windows are judged (`judge`) and the verdict goes through the real transition table (`apply`).
Everything random comes from `random.Random(seed)`: a run is reproducible from its seed.
"""

from __future__ import annotations

import argparse
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from cutover.core.clock import FakeClock
from cutover.routing.canary import (
    CanaryConfig,
    Command,
    Control,
    RouteCanary,
    Verdict,
    apply,
    bin_of,
    initial_control,
    judge,
)

STEP = 0.25  # seconds per traffic step
POOL = 4096  # latency samples drawn once per run and side profile


@dataclass(frozen=True, slots=True)
class Side:
    """One side's traffic: requests per second, failure probability, latency scale."""

    rate: float
    error: float = 0.0
    slow: float = 1.0  # latencies x this (3.0: p95 three times the baseline's)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    baseline: Side
    candidate: Side
    seconds: float  # how long the run lasts
    breaks_at: float | None = None  # the candidate turns into `broken` (plus a random phase)
    broken: Side | None = None
    baseline_broken: Side | None = None  # the baseline changes too (both sides failing)
    weight: int = 10  # the candidate's weight (for the control's split)
    judge_from: float = 0.0  # no ticks before (the clean stretch is recorded, not judged)


@dataclass(slots=True)
class Result:
    seed: int
    rolled_back_at: float | None = None  # seconds since the start
    delay: float | None = None  # seconds since the break began
    breaks_at: float | None = None
    verdict: Verdict | None = None  # the one that rolled back
    figures: dict[str, object] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Binomial(n, p) by inversion (p is small here, so it takes a few steps)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    u, k = rng.random(), 0
    q = (1.0 - p) ** n
    cdf, ratio = q, p / (1.0 - p)
    while u > cdf and k < n:
        q *= (n - k) / (k + 1) * ratio
        k += 1
        cdf += q
    return k


def _pool(rng: random.Random, slow: float) -> list[int]:
    """Latency bins of a log-normal with median 20 ms and p95 ~45 ms, times `slow`."""
    return [bin_of(slow * rng.lognormvariate(math.log(0.020), 0.5)) for _ in range(POOL)]


def run(scenario: Scenario, cfg: CanaryConfig, seed: int) -> Result:
    """One run; stops at the first rollback."""
    rng = random.Random(seed)
    # The controller ticks once a second at whatever phase the gateway started with.
    clock = FakeClock(wall=1_700_000_000.0 + STEP * rng.randrange(round(1 / STEP)))
    lane = cfg.criteria.recent
    windows = RouteCanary(cfg.window, lane.window if lane is not None else 0)
    split = ((cfg.candidate, scenario.weight), (cfg.baseline, 100 - scenario.weight))
    start = clock.now()
    control: Control = initial_control("default", split, cfg, start)
    control = replace(control, source="operator")
    pools: dict[float, list[int]] = {}
    breaks = None
    if scenario.breaks_at is not None:
        breaks = scenario.breaks_at + rng.random()  # a random phase against the ticks
    result = Result(seed, breaks_at=breaks)
    carry = {"baseline": rng.random(), "candidate": rng.random()}
    steps = int(scenario.seconds / STEP)
    per_tick = round(1 / STEP)
    for i in range(steps):
        t = i * STEP
        broken = breaks is not None and t >= breaks
        for name, side in (
            ("baseline", scenario.baseline_broken if broken else scenario.baseline),
            ("candidate", scenario.broken if broken else scenario.candidate),
        ):
            side = side or (scenario.baseline if name == "baseline" else scenario.candidate)
            carry[name] += side.rate * STEP
            n = int(carry[name])
            carry[name] -= n
            if n == 0:
                continue
            pool = pools.get(side.slow)
            if pool is None:
                pool = pools[side.slow] = _pool(rng, side.slow)
            bins = Counter(rng.choices(pool, k=n))
            windows.side(name).add(start + t + STEP / 2, n, binomial(rng, n, side.error), bins)
        clock.advance(STEP)
        if (i + 1) % per_tick or t < scenario.judge_from:
            continue
        now = clock.now()
        b = windows.baseline.snapshot(now)
        c = windows.candidate.snapshot(now)
        verdict = judge(b, c, cfg.criteria, cfg.window)
        result.statuses[verdict.status] += 1
        out = apply(
            control, Command("tick", "controller", now, verdict=verdict, candidate_window=c), cfg
        )
        if out.control is not None:
            control = out.control
        if out.event == "rollback":
            result.rolled_back_at = now - start
            result.verdict = verdict
            result.figures = dict(out.figures)
            if breaks is not None:
                result.delay = result.rolled_back_at - breaks
            return result
    return result


def quantiles(values: list[float]) -> dict[str, float]:
    """median, p90, p95, max of `values` (nearest rank)."""
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"median": at(0.5), "p90": at(0.9), "p95": at(0.95), "max": ordered[-1]}


# The drill: 300 req/s, 90/10 split (30 candidate req/s), a healthy baseline.
CLEAN, BASE = Side(30), Side(270)
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("both fail 0.5% (10 min)", Side(270, 0.005), Side(30, 0.005), 600),
        Scenario("5% break after 5 min", BASE, CLEAN, 330, 300, Side(30, 0.05)),
        Scenario("2% break after 5 min", BASE, CLEAN, 360, 300, Side(30, 0.02)),
        Scenario("p95 x3 after 5 min", BASE, CLEAN, 330, 300, Side(30, slow=3.0)),
        Scenario("5% break at 20 s", BASE, CLEAN, 60, 20, Side(30, 0.05)),
        Scenario("low traffic, 5% failing (10 min)", Side(9), Side(1, 0.05), 600),
        Scenario(
            "both fail 20% for a minute", Side(270, 0.005), Side(30, 0.005), 360, 300,
            Side(30, 0.2), Side(270, 0.2),
        ),
        Scenario(
            "5% break, baseline 0.1%", Side(270, 0.001), Side(30, 0.001), 330, 300,
            Side(30, 0.05),
        ),
        Scenario(
            "2% break, baseline 0.1%", Side(270, 0.001), Side(30, 0.001), 360, 300,
            Side(30, 0.02),
        ),
        Scenario(
            "5% break, both 0.5% before", Side(270, 0.005), Side(30, 0.005), 330, 300,
            Side(30, 0.05),
        ),
    )
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Summary:
    scenario: str
    seeds: int
    rollbacks: int
    delays: dict[str, float] | None  # quantiles of the detection delay, when a break happened
    lanes: dict[str, int]  # the deciding criterion of each rollback

    def row(self) -> str:
        d = self.delays
        shown = (
            " | ".join(f"{d[k]:.1f}" for k in ("median", "p90", "p95", "max"))
            if d and self.rollbacks
            else "- | - | - | -"
        )
        lanes = ", ".join(f"{k} {v}" for k, v in sorted(self.lanes.items())) or "-"
        return f"| {self.scenario} | {self.seeds} | {self.rollbacks} | {shown} | {lanes} |"


def summarize(scenario: Scenario, cfg: CanaryConfig, seeds: range) -> Summary:
    """Run `scenario` once per seed; a run that never rolls back counts as no detection."""
    results = [run(scenario, cfg, seed) for seed in seeds]
    rolled = [r for r in results if r.rolled_back_at is not None]
    delays: dict[str, float] | None = None
    if scenario.breaks_at is not None:
        waits = [r.delay if r.delay is not None else math.inf for r in results]
        delays = quantiles(waits)
    lanes = Counter(str(r.verdict.criterion) for r in rolled if r.verdict is not None)
    return Summary(scenario.name, len(results), len(rolled), delays, dict(lanes))


HEADER = (
    "| scenario | seeds | rollbacks | delay median s | p90 | p95 | max | deciding check |\n"
    "|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="runs per scenario")
    parser.add_argument("--only", default="", help="scenarios whose name contains this")
    args = parser.parse_args(argv)
    cfg = CanaryConfig("python", "go")
    print(HEADER)
    for name, scenario in SCENARIOS.items():
        if args.only in name:
            print(summarize(scenario, cfg, range(args.seeds)).row(), flush=True)


if __name__ == "__main__":
    main()
