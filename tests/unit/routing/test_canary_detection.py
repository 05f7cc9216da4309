"""Detection speed and false alarms of the default canary config, simulated on a fake clock.

The issue's drill: 300 req/s, 90/10 (30 candidate req/s). Each scenario runs over many seeds
(`random.Random(seed)`) through the real windows, verdict and transition table
(`cutover.bench.canary_sim`); the detection-time distributions print with `pytest -s` and are
in docs/canary.md ("How fast, how often wrong"), from `python -m cutover.bench.canary_sim`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from cutover.bench.canary_sim import SCENARIOS, Scenario, Side, quantiles, run, summarize
from cutover.routing.canary import CanaryConfig

CFG = CanaryConfig("python", "go")  # every default


def delays(scenario: Scenario, seeds: range) -> tuple[list[float], str]:
    results = [run(scenario, CFG, seed) for seed in seeds]
    waits = [r.delay if r.delay is not None else math.inf for r in results]
    q = quantiles(waits)
    shown = ", ".join(f"{k} {v:.2f}s" for k, v in q.items())
    line = f"{scenario.name}: {len(waits)} seeds, detection {shown}"
    print(line)
    return waits, line


def test_a_5_percent_break_after_5_minutes_of_clean_traffic_rolls_back_within_5_s() -> None:
    scenario = replace(SCENARIOS["5% break after 5 min"], judge_from=230)
    waits, line = delays(scenario, range(100))
    q = quantiles(waits)
    assert q["p95"] <= 5.0, line
    assert q["max"] <= 8.0, line
    assert q["median"] <= 3.5, line


def test_the_recent_lane_decides_and_the_event_names_its_figures() -> None:
    result = run(SCENARIOS["5% break after 5 min"], CFG, seed=3)
    assert result.verdict is not None and result.verdict.criterion == "recent_error_rate"
    judged = result.figures["judged"]
    assert isinstance(judged, dict)
    assert judged["window_s"] == 6 and judged["baseline_window_s"] == 60
    assert judged["candidate_errors"] >= 3 and judged["p"] <= judged["alpha"] == 2e-6
    assert judged["z"] >= judged["z_critical"]
    assert result.figures["from_weight"] == 10 and result.figures["to_weight"] == 0
    assert "Fisher p=" in result.verdict.reason and "> max 1.000%" in result.verdict.reason


def test_a_2_percent_break_rolls_back_within_15_s() -> None:
    scenario = replace(SCENARIOS["2% break after 5 min"], judge_from=230)
    waits, line = delays(scenario, range(60))
    q = quantiles(waits)
    assert q["p95"] <= 15.0, line
    assert q["max"] <= 30.0, line


def test_a_candidate_p95_three_times_the_baseline_rolls_back_within_10_s() -> None:
    scenario = replace(SCENARIOS["p95 x3 after 5 min"], judge_from=230)
    waits, line = delays(scenario, range(60))
    assert quantiles(waits)["max"] <= 10.0, line
    result = run(scenario, CFG, seed=0)
    assert result.verdict is not None and result.verdict.criterion == "recent_p95_latency"


def test_no_rollback_in_10_minutes_of_both_sides_failing_half_a_percent() -> None:
    scenario = SCENARIOS["both fail 0.5% (10 min)"]
    summary = summarize(scenario, CFG, range(50))  # 500 minutes of traffic
    print(summary.row())
    assert summary.rollbacks == 0, summary.row()


def test_both_sides_failing_together_never_blames_the_candidate() -> None:
    scenario = replace(SCENARIOS["both fail 20% for a minute"], judge_from=230)
    summary = summarize(scenario, CFG, range(40))
    assert summary.rollbacks == 0, summary.row()


def test_low_traffic_stays_insufficient_data() -> None:
    # 1 candidate req/s failing 5 %: never min_requests in the window, never a verdict to act on.
    scenario = SCENARIOS["low traffic, 5% failing (10 min)"]
    for seed in range(50):
        result = run(scenario, CFG, seed)
        assert result.rolled_back_at is None
        assert set(result.statuses) == {"insufficient_data"}


def test_the_old_rule_was_slow_after_a_clean_stretch() -> None:
    # The whole window alone (recent lane off) takes ~window x max / break rate: the 12 s.
    whole_only = replace(CFG, criteria=replace(CFG.criteria, recent=None))
    scenario = replace(SCENARIOS["5% break after 5 min"], seconds=340, judge_from=230)
    waits = [run(scenario, whole_only, seed).delay or math.inf for seed in range(10)]
    assert quantiles(waits)["median"] >= 8.0


def test_a_5_percent_break_at_a_50_50_split_is_still_caught() -> None:
    # The recent lane weighs less when the candidate carries half the traffic (its recent
    # requests are a larger share of the comparison); the more traffic makes up for it.
    scenario = Scenario(
        "5% break at 50/50", Side(150), Side(150), 330, 300, Side(150, 0.05),
        weight=50, judge_from=230,
    )  # fmt: skip
    waits, line = delays(scenario, range(20))
    assert quantiles(waits)["max"] <= 10.0, line
