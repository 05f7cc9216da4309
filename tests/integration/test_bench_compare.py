"""``cutover bench compare`` end to end: real Locust runs against two sample backends.

Both sides are ``python -m cutover.examples.backends go``; B holds every answer ``SLOW_MS`` longer
(``--delay-ms``), so B's latencies are known to be at least that. Locust runs as a subprocess of
the runner, never inside pytest. Runs are short (1-2 s per side per round); no assertion
depends on how fast this machine is beyond "a request delayed 60 ms is slower than one that is
not".
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SLOW_MS = 60.0
ENDPOINTS = {"alerts_v2", "health", "history_legacy", "history_new", "webhook"}


def _start_backend(delay_ms: float = 0.0) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "cutover.examples.backends", "go", "--port", str(port)]
    if delay_ms:
        cmd += ["--delay-ms", str(delay_ms)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"backend exited: {said}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("backend did not start")


@pytest.fixture(scope="module")
def sides() -> Iterator[tuple[str, str]]:
    fast, fast_url = _start_backend()
    slow, slow_url = _start_backend(SLOW_MS)
    try:
        yield fast_url, slow_url
    finally:
        for proc in (fast, slow):
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()


def _compare(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cutover", "bench", "compare", "--spawn-rate", "100", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def _measured(doc: dict[str, Any], side: str, samples_dir: Path) -> list[tuple[str, float, bool]]:
    """The raw samples of one side inside its windows, read back from the kept files."""
    out = []
    for index, (begin, end) in enumerate(doc["windows"][side], start=1):
        for line in (samples_dir / f"samples-{side}-{index}.tsv").read_text().splitlines():
            if line.startswith("#"):
                continue
            start, name, latency, ok, *_ = line.split("\t")
            if begin <= float(start) < end:
                out.append((name, float(latency), ok == "1"))
    return out


def test_a_slower_b_fails_its_budget_and_the_report_has_the_exact_figures(
    sides: tuple[str, str], tmp_path: Path
) -> None:
    fast, slow = sides
    report_dir = tmp_path / "report"
    result = _compare(
        "--a", fast, "--b", slow,
        "--users", "3", "--duration", "1s", "--rounds", "2",
        "--env", "CUTOVER_BENCH_WEBHOOK=flat",  # the Go shape on both sides
        # B's health checks go to a path it does not serve: ~1 request in 11 is a 404
        "--b-env", "CUTOVER_BENCH_HEALTH_PATH=/missing",
        "--expect", "b.p50 >= a.p50 and a.error_rate <= 0.01",
        "--expect", "b.p50 <= a.p50",
        "--report", str(report_dir), "--keep-samples",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "**Verdict: FAIL**" in result.stdout
    assert "budget 'b.p50 <= a.p50' failed:" in result.stderr
    assert "b.p50 <= a.p50: " in result.stderr and " fails (b.p50 = " in result.stderr
    failures = result.stderr.split("FAIL (2 check(s))", 1)[1]
    assert "B error rate" in failures and "is over --max-error-rate 1 %" in failures
    assert "health: HTTP 404" in failures
    assert "A error rate" not in failures
    assert "round 2/2" in result.stderr  # live progress went to stderr

    doc = json.loads((report_dir / "compare.json").read_text())
    checks = doc["verdict"]["checks"]
    assert [(c["kind"], c["passed"]) for c in checks] == [
        ("error_rate", True),
        ("error_rate", False),
        ("budget", True),
        ("budget", False),
    ]
    assert doc["sides"]["b"]["endpoints"]["health"]["errors"] > 0
    assert doc["sides"]["b"]["endpoints"]["health"]["p50"] is None  # no successful answer
    assert doc["sides"]["b"]["endpoints"]["webhook"]["errors"] == 0
    a, b = doc["sides"]["a"]["overall"], doc["sides"]["b"]["overall"]
    assert b["min"] >= SLOW_MS  # every answer from B was held SLOW_MS
    assert b["p50"] > a["p50"]
    assert [r["order"] for r in doc["rounds"]] == [["a", "b"], ["b", "a"]]
    assert set(doc["sides"]["a"]["endpoints"]) == ENDPOINTS
    assert all(f["requests"] > 0 for f in doc["sides"]["b"]["endpoints"].values())
    assert a["errors"] == 0
    assert doc["ratios"]["overall"]["p50"]["pooled"] == pytest.approx(b["p50"] / a["p50"], rel=1e-5)
    assert len(doc["ratios"]["overall"]["p50"]["rounds"]) == 2

    # the report's figures are the exact nearest-rank figures of the raw samples
    for side in ("a", "b"):
        raw = _measured(doc, side, report_dir / "samples")
        ok = [ms for _, ms, good in raw if good]
        figures = doc["sides"][side]["overall"]
        assert figures["requests"] == len(raw)
        assert figures["errors"] == len(raw) - len(ok)
        for p, key in ((50, "p50"), (95, "p95"), (99, "p99"), (100, "max")):
            assert figures[key] == pytest.approx(_nearest_rank(ok, p), abs=1e-6)
        total_span = sum(end - begin for begin, end in doc["windows"][side])
        assert total_span == pytest.approx(2.0)  # 2 rounds x 1 s, exactly the windows
        assert figures["rps"] == pytest.approx(len(raw) / total_span)
        webhook = [ms for name, ms, good in raw if good and name == "webhook"]
        assert doc["sides"][side]["endpoints"]["webhook"]["p95"] == pytest.approx(
            _nearest_rank(webhook, 95), abs=1e-6
        )

    page = (report_dir / "compare.html").read_text()
    assert page.count("<svg") == 2 + len(ENDPOINTS) and ">FAIL<" in page
    assert (report_dir / "compare.md").read_text() == result.stdout.rstrip("\n") + "\n"


def test_open_model_sends_on_schedule_and_passes(sides: tuple[str, str], tmp_path: Path) -> None:
    fast, slow = sides
    result = _compare(
        "--a", fast, "--b", slow,
        "--users", "2", "--duration", "1s", "--rounds", "1", "--open-rate", "60",
        "--env", "CUTOVER_BENCH_WEBHOOK=flat",
        "--expect", "b.p50 > a.p50", "--report", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cutover bench compare: PASS" in result.stderr
    doc = json.loads((tmp_path / "compare.json").read_text())
    assert doc["settings"]["model"] == "open"
    for side in ("a", "b"):
        figures = doc["sides"][side]["overall"]
        # 60 requests/s for 1 s, due on a fixed schedule whether or not answers came back
        assert abs(figures["requests"] - 60) <= 6, figures
        assert figures["lag_p99"] is not None
    assert doc["sides"]["b"]["overall"]["min"] >= SLOW_MS


def test_a_crashing_locustfile_gives_a_clear_error_and_no_report(
    sides: tuple[str, str], tmp_path: Path
) -> None:
    fast, slow = sides
    broken = tmp_path / "broken_locustfile.py"
    broken.write_text('raise RuntimeError("scenario broken on purpose")\n')
    result = _compare(
        "--a", fast, "--b", slow, "--duration", "1s", "--rounds", "1",
        "--locustfile", str(broken), "--report", str(tmp_path / "report"),
    )  # fmt: skip
    assert result.returncode == 3
    assert "[round 1/1] A: Locust failed (exit code 1)" in result.stderr
    assert "RuntimeError: scenario broken on purpose" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "report").exists()


@pytest.fixture
def silent_host() -> Iterator[str]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_a_host_that_answers_nothing_is_an_error_not_a_report(
    sides: tuple[str, str], silent_host: str
) -> None:
    fast, _ = sides
    result = _compare(
        "--a", silent_host, "--b", fast, "--users", "2", "--duration", "1s", "--rounds", "1",
        "--env", "CUTOVER_BENCH_TIMEOUT=1",
    )  # fmt: skip
    assert result.returncode == 3
    assert "[round 1/1] A: none of the" in result.stderr
    assert f"requests to {silent_host} succeeded" in result.stderr
    assert "timed out" in result.stderr or "no answer before the run stopped" in result.stderr
    assert result.stdout == ""
