"""bench/compare.py without Locust: arguments, sample lines, round order, the verdict.

The runs themselves are in tests/integration/test_bench_compare.py.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import pytest

from cutover.bench import compare
from cutover.bench.compare import (
    UsageError,
    judge,
    parse_duration,
    parse_sample_line,
    round_order,
    settings_from_args,
)
from cutover.bench.stats import Sample


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    return parser.parse_args(["--a", "http://127.0.0.1:1", "--b", "http://127.0.0.1:2", *extra])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60", 60.0), ("60s", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "10x", "1m 30s", "-5s", "5s10"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_sample_lines_and_markers() -> None:
    line = "1795303382.793722\thistory_legacy\t9.9694\t1\t0.0000\t\n"
    assert parse_sample_line(line) == Sample(1795303382.793722, "history_legacy", 9.9694, True)
    failed = parse_sample_line("10.5\twebhook\t3.25\t0\t1.5\tHTTP 500\n")
    assert failed == Sample(10.5, "webhook", 3.25, False, 1.5, "HTTP 500")
    assert parse_sample_line("#ready\t10.0\n") is None
    assert parse_sample_line("garbage\n") is None
    assert parse_sample_line("x\thealth\t1\t1\t0\t\n") is None


def test_rounds_alternate_the_order() -> None:
    assert [round_order(i) for i in (1, 2, 3, 4)] == [
        ("a", "b"),
        ("b", "a"),
        ("a", "b"),
        ("b", "a"),
    ]


def test_settings_defaults() -> None:
    s = settings_from_args(_args())
    assert (s.users, s.spawn_rate, s.duration_s, s.rounds, s.max_error_rate) == (
        10,
        10.0,
        60.0,
        3,
        0.01,
    )
    assert s.open_rate is None and s.budgets == ()
    assert s.locustfile == compare.LOCUSTFILE


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--users", "0"], "--users must be at least 1"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--duration", "0.5s"], "--duration must be at least 1s"),
        (["--duration", "soon"], "expected a duration"),
        (["--open-rate", "0"], "--open-rate must be above 0"),
        (["--max-error-rate", "5"], "fraction"),
        (["--expect", "b.p95 <= 0.5 a.p95"], "a missing '*'?"),
        (["--expect", "b.p90 < 1"], "unknown metric 'p90'"),
        (["--locustfile", "/nonexistent/locustfile.py"], "no such file"),
    ],
)
def test_bad_settings_name_the_option(extra: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        settings_from_args(_args(*extra))
    assert message in str(info.value)


def test_bad_url_is_a_usage_error() -> None:
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    args = parser.parse_args(["--a", "127.0.0.1:8080", "--b", "http://127.0.0.1:2"])
    with pytest.raises(UsageError) as info:
        settings_from_args(args)
    assert "--a '127.0.0.1:8080': expected http://HOST" in str(info.value)


def test_the_runner_owns_the_samples_and_rate_variables() -> None:
    with pytest.raises(SystemExit):
        _args("--env", "CUTOVER_BENCH_RATE=100")
    with pytest.raises(SystemExit):
        _args("--b-env", "CUTOVER_BENCH_SAMPLES=/tmp/x")
    s = settings_from_args(_args("--env", "CUTOVER_BENCH_WEBHOOK=flat", "--b-env", "X=1"))
    assert s.env == (("CUTOVER_BENCH_WEBHOOK", "flat"),)
    assert s.side_env == {"a": (), "b": (("X", "1"),)}


def test_locust_command_is_headless_in_its_own_interpreter() -> None:
    s = settings_from_args(_args("--users", "5", "--duration", "10s"))
    cmd = compare.locust_command(s, "http://127.0.0.1:9")
    assert cmd[:3] == [sys.executable, "-m", "locust"]
    assert "--headless" in cmd
    assert cmd[cmd.index("-u") + 1] == "5"
    assert cmd[cmd.index("--host") + 1] == "http://127.0.0.1:9"
    assert cmd[cmd.index("--exit-code-on-error") + 1] == "0"  # errors are judged here
    # -t is a safety net above the window: the runner stops Locust itself
    assert int(cmd[cmd.index("-t") + 1].rstrip("s")) > 10


def _overall(requests: int, errors: int, p95: float) -> dict[str, float]:
    return {
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests,
        "p50": p95 / 2,
        "p95": p95,
        "p99": p95 * 2,
        "max": p95 * 3,
        "rps": 100.0,
    }


def test_judge_fails_on_error_rate_and_names_the_figures() -> None:
    s = settings_from_args(_args("--expect", "b.p95 <= 0.5 * a.p95"))
    verdict = judge(
        s,
        {"a": _overall(1000, 0, 10.0), "b": _overall(1000, 20, 4.0)},
        {"b": {"webhook: HTTP 500": 20}},
    )
    assert not verdict["passed"]
    by_kind = {(c["kind"], c.get("side")): c for c in verdict["checks"]}
    assert by_kind[("error_rate", "a")]["passed"]
    failed = by_kind[("error_rate", "b")]
    assert not failed["passed"]
    assert (
        "B error rate 2.00 % (20 of 1,000 requests) is over --max-error-rate 1 %"
        in (failed["detail"])
    )
    assert "20 x webhook: HTTP 500" in failed["detail"]
    assert by_kind[("budget", None)]["passed"]  # 4 <= 5


def test_judge_budget_failure_lists_what_failed() -> None:
    s = settings_from_args(_args("--expect", "b.p95 <= 0.5 * a.p95 and b.rps >= a.rps"))
    verdict = judge(s, {"a": _overall(100, 0, 10.0), "b": _overall(100, 0, 8.0)}, {})
    budget = verdict["checks"][-1]
    assert not verdict["passed"] and not budget["passed"]
    assert budget["failed"] == ["b.p95 <= 0.5 * a.p95: 8 <= 5 fails (b.p95 = 8 ms, a.p95 = 10 ms)"]


def test_bad_budget_exits_2_before_running_anything() -> None:
    err = io.StringIO()
    args = _args("--expect", "b.p95 =< a.p95")
    assert compare.run_command(args, stdout=io.StringIO(), stderr=err) == 2
    assert "--expect 'b.p95 =< a.p95': column 7: unexpected '='" in err.getvalue()


def test_unreachable_side_exits_3_with_a_clear_error() -> None:
    err = io.StringIO()
    out = io.StringIO()
    code = compare.run_command(_args("--duration", "1s"), stdout=out, stderr=err)
    assert code == 3
    assert "side A (http://127.0.0.1:1) is unreachable" in err.getvalue()
    assert out.getvalue() == ""  # no report of nothing


def test_the_product_never_imports_locust() -> None:
    code = (
        "import sys, cutover.cli, bench.compare, bench.report, bench.stats\n"
        "cutover.cli._parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_passwords_in_urls_are_never_shown() -> None:
    assert compare.redact("http://ops:s3cret@127.0.0.1:8080/x") == "http://ops:***@127.0.0.1:8080/x"
    assert compare.redact("--a http://u:p@h --b http://h2") == "--a http://u:***@h --b http://h2"
    assert compare.redact("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    args = argparse.ArgumentParser()
    compare.add_arguments(args)
    s = settings_from_args(args.parse_args(["--a", "http://u:pw@127.0.0.1:1", "--b", "http://h:2"]))
    assert s.describe()["a"] == "http://u:***@127.0.0.1:1"
    err = io.StringIO()
    parsed = args.parse_args(["--a", "http://u:pw@127.0.0.1:1", "--b", "http://127.0.0.1:2"])
    assert compare.run_command(parsed, stdout=io.StringIO(), stderr=err) == 3
    assert "pw" not in err.getvalue() and "u:***@" in err.getvalue()
