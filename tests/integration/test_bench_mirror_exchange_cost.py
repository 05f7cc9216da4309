"""bench/mirror_exchange_cost.py end to end, small: two real nginx origins, every figure."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_every_figure_is_measured() -> None:
    """A smoke run (the figures themselves are for BENCHMARKS.md, not for a test to judge)."""
    proc = subprocess.run(
        [sys.executable, "-m", "cutover.bench.mirror_exchange_cost", "--jobs", "40",
         "--repeats", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|")[1:3] for line in proc.stdout.splitlines()[2:]]
    figures = {name.strip(): float(value) for name, value in rows}
    assert set(figures) == {"exchange", "exchange, no noise", "compare", "send"}
    assert all(v > 0 for v in figures.values()), figures
