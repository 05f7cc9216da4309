"""bench/mirror_copy_cost.py end to end, small: a real gateway, a real sink child, every figure."""

from __future__ import annotations

import math

import uvloop

from cutover.bench.mirror_copy_cost import measure


def test_every_figure_is_measured() -> None:
    """A smoke run (the figures themselves are for BENCHMARKS.md, not for a test to judge)."""
    figures = uvloop.run(measure(copies=20, repeats=2, read=50, read_runs=1))
    assert set(figures) == {
        "copy", "copy, write each", "copy, 1/loop", "copy, 4/loop", "sample",
        "sample, mirror full", "feed+finish_raw", "book/1", "book/8", "book/40",
        "read+book/1", "read+book/10", "read+book/25",
    }  # fmt: skip
    assert all(v > 0 and math.isfinite(v) for v in figures.values()), figures
