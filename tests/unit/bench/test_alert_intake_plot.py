"""bench/alert_intake.py's plot: one well-formed SVG, both charts, a line per 1-worker sweep."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from cutover.bench.alert_intake import plot_series, render_plot


def point(offered: float, accepted: float, p99: float) -> dict[str, float]:
    return {"offered_alerts_per_s": offered, "alerts_per_s": accepted, "p99_ms": p99}


def test_before_and_after_sweeps_in_one_svg() -> None:
    before = {("sqlite", 1): [point(250, 249, 97), point(1000, 521, 2768)],
              ("sqlite", 2): [point(250, 244, 174)]}  # fmt: skip
    after = {("sqlite", 1): [point(250, 250, 20), point(1000, 961, 505)],
             ("postgresql", 1): [point(250, 249, 92), point(1000, 974, 192)]}  # fmt: skip
    series = plot_series(before, "before", other=True) + plot_series(after, "after", other=False)
    assert [name for name, _, _ in series] == ["SQLite before", "SQLite after", "PG after"]
    svg = render_plot(series, 1)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{ns}polyline")) == 2 * 3  # both charts, every line
    texts = {t.text for t in root.iter(f"{ns}text")}
    assert {"Accepted alerts/s", "p99 (from schedule)", "SQLite before", "PG after"} <= texts
