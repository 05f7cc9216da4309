"""bench/stats.py: exact percentiles, ratios and spread, samples per run, the budget grammar."""

from __future__ import annotations

import ast
import itertools
import math
import random
from pathlib import Path

import pytest

from cutover.bench import stats
from cutover.bench.stats import (
    BudgetError,
    Sample,
    SideSamples,
    cdf_points,
    parse_budget,
    percentile,
    ratio,
    spread,
    summarize,
)

# --------------------------------------------------------------------------------------------------
# percentiles


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        (list(range(1, 11)), 50, 5),
        (list(range(1, 11)), 90, 9),
        (list(range(1, 11)), 91, 10),
        (list(range(1, 11)), 95, 10),
        (list(range(1, 11)), 10, 1),
        (list(range(1, 11)), 0, 1),
        (list(range(1, 11)), 100, 10),
        (list(range(1, 21)), 95, 19),  # 0.95 * 20 = 19 exactly: no float drift to rank 20
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 99.5, 100),
        (list(range(1, 1001)), 99.9, 999),
        ([7.25], 50, 7.25),
        ([7.25], 99, 7.25),
        ([1.0, 1.0, 1.0, 50.0], 75, 1.0),
        ([1.0, 1.0, 1.0, 50.0], 76, 50.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected


def test_percentiles_on_a_known_latency_set() -> None:
    # 1,000 requests: 900 at 2 ms, 90 at 10 ms, 9 at 100 ms, one at 1,000 ms
    values = sorted([2.0] * 900 + [10.0] * 90 + [100.0] * 9 + [1000.0])
    assert percentile(values, 50) == 2.0
    assert percentile(values, 90) == 2.0
    assert percentile(values, 90.1) == 10.0
    assert percentile(values, 99) == 10.0
    assert percentile(values, 99.9) == 100.0
    assert percentile(values, 100) == 1000.0
    fig = summarize(reversed(values), errors=0, duration_s=10.0)  # summarize sorts itself
    assert (fig.p50, fig.p95, fig.p99, fig.max, fig.min) == (2.0, 10.0, 10.0, 1000.0, 2.0)
    assert fig.mean == pytest.approx((900 * 2 + 90 * 10 + 9 * 100 + 1000) / 1000)
    assert fig.rps == 100.0


def test_percentile_definition_holds_for_any_data() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(1, 400)
        data = sorted(round(rng.lognormvariate(1, 1.2), rng.choice((0, 1, 3))) for _ in range(n))
        for p in (0, 1, 50, 90, 95, 99, 99.9, 100, rng.uniform(0, 100)):
            got = percentile(data, p)
            assert got in data  # always an observed latency, never interpolated
            # nearest rank: at least p % are <= it, and fewer than p % are strictly below it
            assert sum(v <= got for v in data) >= p / 100 * n - 1e-9
            if p > 0:
                assert sum(v < got for v in data) < p / 100 * n + 1e-9
        assert percentile(data, 50) <= percentile(data, 95) <= percentile(data, 99) <= data[-1]


@pytest.mark.parametrize("p", [-1, 100.5, math.nan])
def test_percentile_rejects_a_level_outside_0_100(p: float) -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0, 2.0], p)


def test_percentile_of_nothing_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_failures_count_in_the_error_rate_not_in_the_latencies() -> None:
    fig = summarize([5.0, 6.0, 7.0], errors=1, duration_s=2.0)
    assert fig.requests == 4 and fig.errors == 1
    assert fig.error_rate == 0.25
    assert fig.rps == 2.0
    assert (fig.min, fig.p50, fig.max) == (5.0, 6.0, 7.0)
    nothing = summarize([], errors=3, duration_s=1.0)
    assert nothing.error_rate == 1.0 and nothing.p50 is None and nothing.max is None


# --------------------------------------------------------------------------------------------------
# ratios, spread, CDF


def test_ratio_and_its_undefined_cases() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(0.0, 2.0) == 0.0
    assert ratio(1.0, 0.0) is None  # error rate 0 on A: no meaningful ratio
    assert ratio(None, 2.0) is None and ratio(2.0, None) is None


def test_spread_is_median_and_range_of_the_values_present() -> None:
    odd = spread([3.0, 1.0, 2.0])
    assert odd is not None and (odd.median, odd.min, odd.max, odd.n) == (2.0, 1.0, 3.0, 3)
    even = spread([4.0, None, 1.0, 2.0, 3.0])
    assert even is not None and (even.median, even.min, even.max, even.n) == (2.5, 1.0, 4.0, 4)
    assert spread([None, None]) is None


def test_cdf_points_are_exact_small_and_dense_in_the_tail() -> None:
    assert cdf_points([]) == []
    assert cdf_points([1.0, 2.0, 4.0]) == [(1.0, 1 / 3), (2.0, 2 / 3), (4.0, 1.0)]
    values = [float(i) for i in range(1, 100_001)]
    pts = cdf_points(values, 300)
    assert len(pts) <= 320
    assert pts[-1] == (100_000.0, 1.0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in itertools.pairwise(pts))
    for x, q in pts:  # each point is a real sample and its exact share
        assert q == x / 100_000
    assert any(0.999 <= q < 1 for _, q in pts)  # the tail is drawn, not skipped


# --------------------------------------------------------------------------------------------------
# samples


def _s(start: float, name: str, ms: float, ok: bool = True, error: str = "") -> Sample:
    return Sample(start=start, name=name, latency_ms=ms, ok=ok, error=error)


def test_side_samples_keep_only_the_window_and_pool_rounds() -> None:
    side = SideSamples()
    run1 = [
        _s(99.5, "health", 1000.0),  # before the window (ramp, warm-up): left out
        _s(100.0, "health", 2.0),
        _s(100.5, "webhook", 4.0),
        _s(101.0, "webhook", 6.0, ok=False, error="HTTP 500"),
        _s(101.9, "health", 3.0),
        _s(102.0, "health", 1000.0),  # sent after the window closed: left out
    ]
    assert side.add_run(run1, begin=100.0, end=102.0) == 4
    run2 = [_s(200.0, "health", 8.0), _s(200.5, "webhook", 10.0)]
    assert side.add_run(run2, begin=200.0, end=201.0) == 2

    first = side.run_figures(0)
    assert (first.requests, first.errors, first.duration_s, first.rps) == (4, 1, 2.0, 2.0)
    assert (first.p50, first.max) == (3.0, 4.0)
    assert side.run_figures(1).p50 == 8.0

    pooled = side.pooled()
    assert (pooled.requests, pooled.errors, pooled.duration_s) == (6, 1, 3.0)
    assert pooled.rps == 2.0
    assert (pooled.p50, pooled.p95, pooled.max) == (4.0, 10.0, 10.0)
    assert side.pooled("webhook").requests == 3 and side.pooled("webhook").errors == 1
    assert side.sorted_latencies("health") == [2.0, 3.0, 8.0]
    assert side.endpoint_names() == ["health", "webhook"]
    assert side.error_messages == {"webhook: HTTP 500": 1}
    assert side.runs == 2


def test_side_samples_without_a_window_span_first_send_to_last_answer() -> None:
    side = SideSamples()
    side.add_run([_s(10.0, "x", 500.0), _s(11.0, "x", 1000.0)])
    assert side.run_figures(0).duration_s == 2.0


# --------------------------------------------------------------------------------------------------
# budgets


FIGURES = {
    "a.p50": 10.0,
    "a.p95": 40.0,
    "a.p99": 80.0,
    "a.max": 200.0,
    "a.rps": 100.0,
    "a.error_rate": 0.0,
    "b.p50": 4.0,
    "b.p95": 18.0,
    "b.p99": 50.0,
    "b.max": 300.0,
    "b.rps": 250.0,
    "b.error_rate": 0.002,
}


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ("b.p95 <= 0.5 * a.p95", True),  # the seeds' "Go at least 2x faster", on exact figures
        ("b.p95 < 0.46 * a.p95", True),
        ("b.p95 < 0.46*a.p95", True),
        ("b.p95 < 0.45 * a.p95", False),  # 18 < 18
        ("b.p95 < 0.4 * a.p95", False),
        ("b.p99 >= a.p99", False),
        ("b.max > a.max", True),
        ("b.rps >= 2 * a.rps and b.error_rate <= 0.01", True),
        ("b.rps >= 2 * a.rps and b.error_rate <= a.error_rate", False),
        ("2 * b.p50 <= a.p50", True),
        ("b.p50 <= 0.5 * 0.8 * a.p50", True),
        ("b.p50 <= 1e1", True),
        ("b.p50 <= .3e1", False),
        ("  b.p50<a.p50  ", True),
    ],
)
def test_budget_evaluation(text: str, passed: bool) -> None:
    assert parse_budget(text).evaluate(FIGURES).passed is passed


def test_budget_result_names_the_figures_that_failed_it() -> None:
    result = parse_budget("b.p95 <= 0.4 * a.p95 and b.rps > a.rps").evaluate(FIGURES)
    assert not result.passed
    (failed,) = result.failed()
    assert failed.text == "b.p95 <= 0.4 * a.p95"
    assert (failed.left, failed.op, failed.right) == (18.0, "<=", 16.0)
    assert dict(failed.figures) == {"b.p95": 18.0, "a.p95": 40.0}
    assert failed.explain() == (
        "b.p95 <= 0.4 * a.p95: 18 <= 16 fails (b.p95 = 18 ms, a.p95 = 40 ms)"
    )
    assert parse_budget("b.error_rate <= 0.001").evaluate(FIGURES).clauses[0].explain() == (
        "b.error_rate <= 0.001: 0.002 <= 0.001 fails (b.error_rate = 0.2 %)"
    )


def test_a_missing_figure_fails_the_budget_instead_of_passing_it() -> None:
    result = parse_budget("b.p95 <= a.p95").evaluate({**FIGURES, "a.p95": None})
    assert not result.passed
    assert "cannot be judged" in result.clauses[0].explain()


def test_budget_keys_lists_the_figures_read() -> None:
    assert parse_budget("b.p95 <= 0.5 * a.p95 and b.p95 < 100").keys() == ("b.p95", "a.p95")


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "empty budget", None),
        ("   ", "empty budget", None),
        ("b.p95 <=", "expected a number or a metric", 9),
        ("b.p95", "expected a comparison", 6),
        ("b.p90 < 1", "unknown metric 'p90'", 3),
        ("b.P95 < 1", "unknown metric 'P95'", 3),
        ("b. < 1", "unknown metric nothing", 3),
        ("b < 1", "'b' is not a metric: expected e.g. b.p95", 1),
        ("c.p50 < 1", "unknown side 'c'", 1),
        ("b.p95 == a.p95", "unexpected '=' (use <=, <, >= or >)", 7),
        ("b.p95 != a.p95", "unexpected '!'", 7),
        ("b.p95 <= 0.5 a.p95", "a missing '*'?", 14),
        ("b.p95 <= 0.5 * * a.p95", "expected a number or a metric", 16),
        ("1 < 2", "needs at least one a./b. metric", 3),
        ("a.p50 < b.p50 < 3", "chained comparisons", 15),
        ("b.p95 <= 0.5 * a.p95 or b.p50 < 1", "expected 'and' or the end, got 'or'", 22),
        ("b.p95 <= 0.5 * a.p95 and", "expected a number or a metric", 25),
        ("b.p95 <= 1e999 * a.p95", "out of range", 10),
        ("b.p95 <= a.p95 + 1", "unexpected '+'", 16),
        ("b.p95 <= a.p95 / 2", "unexpected '/'", 16),
        ("b.p95 <= (a.p95)", "unexpected '('", 10),
        ("b.p95 <= __import__('os').getpid()", "unexpected '('", 20),
        ("b.p95 <= a.__class__", "unknown metric '__class__'", 12),
    ],
)
def test_bad_budgets_give_a_clear_error(text: str, message: str, column: int | None) -> None:
    with pytest.raises(BudgetError) as info:
        parse_budget(text)
    text_of_error = str(info.value)
    assert message in text_of_error
    if column is not None:
        assert text_of_error.startswith(f"column {column}:")
        caret_line = text_of_error.splitlines()[-1]
        assert caret_line.index("^") == 2 + column - 1  # the caret points at the culprit


def test_stats_stays_pure_and_never_evaluates_code() -> None:
    source = Path(stats.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
        if alias.name
    }
    assert imported <= {"__future__", "collections", "dataclasses", "math", "re"}
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & {"eval", "exec", "compile", "open", "__import__"}
