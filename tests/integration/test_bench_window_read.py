"""bench/window_read.py end to end, small: a real gateway on a real SQLite store, every case."""

from __future__ import annotations

import math

import uvloop

from cutover.bench.window_read import measure, render


def test_every_case_is_measured() -> None:
    """A smoke run (the figures themselves are for BENCHMARKS.md, not for a test to judge)."""
    figures = uvloop.run(measure(None, results=64, repeats=1))
    assert list(figures) == ["own", "reload, held", "other", "previous, own"]
    for cpu, stall in figures.values():
        assert cpu > 0 and math.isfinite(cpu) and stall >= 0
    table = render(figures, 64)
    assert len(table) == 2 + len(figures) and table[2].startswith("| own |")
