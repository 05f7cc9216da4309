"""bench/report.py: the report document, its Markdown and its self-contained HTML page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cutover.bench import report
from cutover.bench.stats import Sample, SideSamples

SETTINGS = {
    "a": "http://127.0.0.1:8001",
    "b": "http://127.0.0.1:8002",
    "users": 4,
    "spawn_rate": 4.0,
    "duration_s": 2.0,
    "warmup_s": 0.0,
    "rounds": 2,
    "model": "closed",
    "open_rate": None,
    "max_error_rate": 0.01,
    "expect": ["b.p95 <= 0.5 * a.p95"],
}


def _side(latencies_per_round: list[dict[str, list[float]]], errors: int = 0) -> SideSamples:
    side = SideSamples()
    for index, per_endpoint in enumerate(latencies_per_round):
        begin = 1000.0 * (index + 1)
        samples = [
            Sample(begin + i * 0.01, name, ms, True)
            for name, values in per_endpoint.items()
            for i, ms in enumerate(values)
        ]
        samples += [Sample(begin, "webhook", 1.0, False, error="HTTP 500")] * errors
        side.add_run(samples, begin, begin + 2.0)
    return side


def _doc(name: str = "health") -> dict[str, Any]:
    a = _side(
        [
            {name: [1.0, 2.0, 3.0, 4.0], "webhook": [10.0, 20.0]},
            {name: [2.0, 2.0, 2.0, 8.0], "webhook": [30.0, 40.0]},
        ]
    )
    b = _side(
        [
            {name: [2.0, 4.0, 6.0, 8.0], "webhook": [5.0, 5.0]},
            {name: [4.0, 4.0, 4.0, 16.0], "webhook": [5.0, 5.0]},
        ],
        errors=1,
    )
    doc = report.assemble(SETTINGS, {"a": a, "b": b}, [["a", "b"], ["b", "a"]], {"schema": 1})
    doc["verdict"] = {
        "passed": False,
        "checks": [
            {"kind": "budget", "expect": "b.p95 <= 0.5 * a.p95", "passed": False, "detail": "x"}
        ],
    }
    return doc


def test_document_figures_are_exact_and_ratios_per_round() -> None:
    doc = _doc()
    a, b = doc["sides"]["a"], doc["sides"]["b"]
    # A pooled: 1 2 2 2 2 3 4 8 10 20 30 40 -> nearest-rank p50 = 6th value = 3
    assert a["overall"]["requests"] == 12 and a["overall"]["p50"] == 3.0
    assert a["overall"]["max"] == 40.0
    assert a["overall"]["rps"] == 3.0  # 12 requests over 2 x 2 s
    assert b["overall"]["errors"] == 2 and b["overall"]["requests"] == 14
    assert a["endpoints"]["health"]["p95"] == 8.0
    assert b["errors"] == {"webhook: HTTP 500": 2}
    # health p50: round 1 A 2 / B 4, round 2 A 2 / B 4 -> 2.0 and 2.0
    health = doc["ratios"]["endpoints"]["health"]["p50"]
    assert health["rounds"] == [2.0, 2.0] and health["median"] == 2.0
    # webhook max: round 1 5/20, round 2 5/40
    webhook_max = doc["ratios"]["endpoints"]["webhook"]["max"]
    assert webhook_max["rounds"] == [0.25, 0.125]
    assert (webhook_max["min"], webhook_max["max"]) == (0.125, 0.25)
    assert doc["ratios"]["overall"]["error_rate"]["pooled"] is None  # A had no errors
    assert [r["order"] for r in doc["rounds"]] == [["a", "b"], ["b", "a"]]
    assert doc["cdf"]["overall"]["a"][-1] == [40.0, 1.0]
    json.dumps(doc)  # the document is JSON as it is


def test_markdown_carries_the_verdict_and_the_figures() -> None:
    md = report.render_markdown(_doc())
    assert "**Verdict: FAIL**" in md
    assert "| p50 | 3.00 ms | 5.00 ms | 1.67 |" in md
    assert "| health | B/A | |" in md
    assert "| 1 | A then B |" in md and "| 2 | B then A |" in md
    assert "B: 2 x webhook: HTTP 500" in md


def test_html_is_one_self_contained_page_with_drawn_plots() -> None:
    page = report.render_html(_doc())
    assert page.startswith("<!doctype html>")
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)  # nothing to fetch
    # two overall plots and one per endpoint, each with a line for A and one for B
    assert page.count("<svg") == 4
    assert page.count("<polyline") == 8
    assert ">FAIL<" in page


def test_html_escapes_what_it_did_not_write() -> None:
    page = report.render_html(_doc(name="<img onerror=x>"))
    assert "<img" not in page
    assert "&lt;img onerror=x&gt;" in page


def test_write_reports_and_redraw_from_json(tmp_path: Path) -> None:
    doc = _doc()
    written = report.write_reports(doc, tmp_path / "out")
    assert sorted(p.name for p in written) == ["compare.html", "compare.json", "compare.md"]
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["sides"]["a"]["overall"]["p50"] == 3.0
    assert report.main([str(tmp_path / "out" / "compare.json"), "--out", str(tmp_path / "re")]) == 0
    assert (tmp_path / "re" / "compare.html").read_text() == report.render_html(saved)


def test_formatting_of_latencies() -> None:
    assert report.fmt_ms(0.4123) == "0.412 ms"
    assert report.fmt_ms(3.214) == "3.21 ms"
    assert report.fmt_ms(52.34) == "52.3 ms"
    assert report.fmt_ms(12345.0) == "12,345 ms"
    assert report.fmt_ms(None) == "\u2013"
