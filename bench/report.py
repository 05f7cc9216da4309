"""Reports of ``cutover bench compare``: one JSON document, rendered as Markdown and as HTML.

``assemble`` turns the samples of both sides into the report document (figures pooled over
rounds and per round, ratios B/A with their spread, CDF points); ``render_markdown`` and
``render_html`` only read that document, so a saved ``compare.json`` can be drawn again::

    python -m cutover.bench.report DIR/compare.json [--out DIR]

The HTML page is self-contained: CSS and SVG plots inline, no script, no font, no fetch.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cutover.bench.stats import METRICS, Figures, SideSamples, cdf_points, ratio, spread

__all__ = ["assemble", "main", "render_html", "render_markdown", "write_reports"]

SIDES = ("a", "b")
LABEL = {"a": "A", "b": "B"}
COLOR = {"a": "#0072B2", "b": "#D55E00"}  # Okabe-Ito blue and vermillion: safe for colour blindness
DASH = "\u2013"


# --------------------------------------------------------------------------------------------------
# the document


def _figures(f: Figures) -> dict[str, Any]:
    out = asdict(f)
    for key, value in out.items():
        if isinstance(value, float):
            out[key] = round(value, 6)
    return out


def _ratios(
    pooled: Mapping[str, Figures], per_round: Sequence[Mapping[str, Figures]]
) -> dict[str, Any]:
    out = {}
    for metric in METRICS:
        rounds = [ratio(r["b"].metric(metric), r["a"].metric(metric)) for r in per_round]
        sp = spread(rounds)
        pooled_ratio = ratio(pooled["b"].metric(metric), pooled["a"].metric(metric))
        out[metric] = {
            "pooled": _round(pooled_ratio),
            "rounds": [_round(r) for r in rounds],
            "median": _round(sp.median) if sp else None,
            "min": _round(sp.min) if sp else None,
            "max": _round(sp.max) if sp else None,
        }
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def assemble(
    settings: Mapping[str, Any],
    sides: Mapping[str, SideSamples],
    orders: Sequence[Sequence[str]],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The report document (JSON-able) from both sides' samples."""
    endpoints = sorted(set(sides["a"].endpoint_names()) | set(sides["b"].endpoint_names()))
    runs = min(sides["a"].runs, sides["b"].runs)

    def scope(name: str | None) -> tuple[dict[str, Figures], list[dict[str, Figures]]]:
        pooled = {s: sides[s].pooled(name) for s in SIDES}
        per_round = [{s: sides[s].run_figures(i, name) for s in SIDES} for i in range(runs)]
        return pooled, per_round

    overall, overall_rounds = scope(None)
    doc: dict[str, Any] = dict(meta)
    doc["settings"] = dict(settings)
    doc["sides"] = {
        s: {
            "url": settings.get(s),
            "overall": _figures(overall[s]),
            "endpoints": {n: _figures(sides[s].pooled(n)) for n in endpoints},
            "errors": dict(sides[s].error_messages.most_common(10)),
        }
        for s in SIDES
    }
    doc["ratios"] = {"overall": _ratios(overall, overall_rounds), "endpoints": {}}
    for name in endpoints:
        pooled, per_round = scope(name)
        doc["ratios"]["endpoints"][name] = _ratios(pooled, per_round)
    doc["rounds"] = [
        {
            "round": i + 1,
            "order": list(orders[i]) if i < len(orders) else [],
            **{s: _figures(overall_rounds[i][s]) for s in SIDES},
        }
        for i in range(runs)
    ]
    doc["cdf"] = {
        "overall": {s: _points(sides[s].sorted_latencies()) for s in SIDES},
        "endpoints": {
            n: {s: _points(sides[s].sorted_latencies(n), 200) for s in SIDES} for n in endpoints
        },
    }
    return doc


def _points(values: Sequence[float], max_points: int = 400) -> list[list[float]]:
    return [[round(x, 4), round(q, 7)] for x, q in cdf_points(values, max_points)]


# --------------------------------------------------------------------------------------------------
# formatting


def fmt_ms(value: float | None) -> str:
    """A latency for people: 0.412 ms, 3.21 ms, 52.3 ms, 523 ms, 12,345 ms."""
    if value is None:
        return DASH
    if value < 10:
        return f"{value:.2f} ms" if value >= 1 else f"{value:.3f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def fmt_ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def fmt_rate(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.2f} %"


def fmt_rps(value: float | None) -> str:
    return DASH if value is None else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _spread_text(r: Mapping[str, Any]) -> str:
    if r.get("median") is None:
        return DASH
    if len([x for x in r.get("rounds", []) if x is not None]) < 2:
        return fmt_ratio(r["median"])
    return f"{fmt_ratio(r['median'])} ({fmt_ratio(r['min'])}{DASH}{fmt_ratio(r['max'])})"


ROWS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("requests", "requests", lambda v: f"{v:,}"),
    ("errors", "errors", lambda v: f"{v:,}"),
    ("error_rate", "error rate", fmt_rate),
    ("rps", "requests/s", fmt_rps),
    ("p50", "p50", fmt_ms),
    ("p95", "p95", fmt_ms),
    ("p99", "p99", fmt_ms),
    ("max", "max", fmt_ms),
)


def _summary_line(doc: Mapping[str, Any]) -> str:
    st = doc["settings"]
    model = (
        f"open model at {st['open_rate']:g} req/s in total"
        if st.get("model") == "open"
        else "closed model"
    )
    orders = ", ".join(" then ".join(LABEL[s] for s in r["order"]) for r in doc["rounds"])
    warm = f", first {st['warmup_s']:g} s of every run left out" if st.get("warmup_s") else ""
    return (
        f"{st['users']} users ({model}), {st['rounds']} round(s) of {st['duration_s']:g} s per "
        f"side{warm}; order per round: {orders}."
    )


def _verdict_lines(doc: Mapping[str, Any]) -> list[str]:
    out = []
    for check in doc["verdict"]["checks"]:
        mark = "pass" if check["passed"] else "**FAIL**"
        out.append(f"- {mark}: {check['detail']}")
    return out


def _machine_line(doc: Mapping[str, Any]) -> str:
    m = doc.get("machine") or {}
    load = m.get("loadavg_before")
    load_text = f", load average {load[0]:g} before" if load else ""
    return (
        f"{m.get('cpus', '?')} CPUs, {m.get('platform', '?')}, Python {m.get('python', '?')}, "
        f"Locust {m.get('locust', '?')}{load_text}"
    )


# --------------------------------------------------------------------------------------------------
# Markdown


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The report as Markdown (also what ``cutover bench compare`` prints)."""
    verdict = "PASS" if doc["verdict"]["passed"] else "FAIL"
    a, b = doc["sides"]["a"], doc["sides"]["b"]
    lines = [
        "# cutover bench compare",
        "",
        f"**Verdict: {verdict}**",
        "",
        *_verdict_lines(doc),
        *[f"- note: {n}" for n in doc.get("notes", ())],
        "",
        f"- A: {a['url']}",
        f"- B: {b['url']}",
        f"- {_summary_line(doc)}",
        f"- Machine: {_machine_line(doc)}. Started {doc.get('started_at', '?')}.",
        "- Latencies are exact (every request recorded), nearest-rank percentiles of the "
        "successful requests; failures count in the error rate. Ratios are B/A: pooled over "
        "all rounds, then the median of the per-round ratios with their range.",
    ]
    if doc.get("command"):
        lines.append(f"- Command: `{doc['command']}`")
    lines += [
        "",
        "## Overall",
        "",
        "| | A | B | B/A | B/A per round |",
        "|---|---:|---:|---:|---:|",
    ]
    ratios = doc["ratios"]["overall"]
    for key, title, fmt in ROWS:
        r = ratios.get(key)
        pooled = fmt_ratio(r["pooled"]) if r else ""
        per_round = _spread_text(r) if r else ""
        va, vb = a["overall"][key], b["overall"][key]
        lines.append(f"| {title} | {_cell(fmt, va)} | {_cell(fmt, vb)} | {pooled} | {per_round} |")
    lag = [doc["sides"][s]["overall"].get("lag_p99") for s in SIDES]
    if any(v is not None for v in lag):
        lines.append(f"| send lag p99 (open model) | {fmt_ms(lag[0])} | {fmt_ms(lag[1])} | | |")
    lines += [
        "",
        "## Per endpoint",
        "",
        "| endpoint | side | requests | errors | req/s | p50 | p95 | p99 | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ep_ratios in doc["ratios"]["endpoints"].items():
        for s in SIDES:
            f = doc["sides"][s]["endpoints"][name]
            lines.append(
                f"| {name} | {LABEL[s]} | {f['requests']:,} | {f['errors']:,} | "
                f"{fmt_rps(f['rps'])} | {fmt_ms(f['p50'])} | {fmt_ms(f['p95'])} | "
                f"{fmt_ms(f['p99'])} | {fmt_ms(f['max'])} |"
            )
        cells = " | ".join(_spread_text(ep_ratios[m]) for m in ("rps", "p50", "p95", "p99", "max"))
        lines.append(f"| {name} | B/A | | | {cells} |")
    lines += [
        "",
        "## Rounds",
        "",
        "| round | order | A req/s | B req/s | A p50 | B p50 | A p95 | B p95 | A p99 | B p99 |"
        " B/A p95 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(doc["rounds"]):
        p95_ratio = ratios["p95"]["rounds"][i] if i < len(ratios["p95"]["rounds"]) else None
        order = " then ".join(LABEL[s] for s in r["order"])
        lines.append(
            f"| {r['round']} | {order} | {fmt_rps(r['a']['rps'])} | {fmt_rps(r['b']['rps'])} | "
            f"{fmt_ms(r['a']['p50'])} | {fmt_ms(r['b']['p50'])} | {fmt_ms(r['a']['p95'])} | "
            f"{fmt_ms(r['b']['p95'])} | {fmt_ms(r['a']['p99'])} | {fmt_ms(r['b']['p99'])} | "
            f"{fmt_ratio(p95_ratio)} |"
        )
    errors = [(s, doc["sides"][s].get("errors") or {}) for s in SIDES]
    if any(e for _, e in errors):
        lines += ["", "## Errors", ""]
        for s, e in errors:
            for message, count in e.items():
                lines.append(f"- {LABEL[s]}: {count:,} x {message}")
    return "\n".join(lines) + "\n"


def _cell(fmt: Callable[[Any], str], value: Any) -> str:
    return DASH if value is None else fmt(value)


# --------------------------------------------------------------------------------------------------
# SVG plots


@dataclass(frozen=True, slots=True)
class _Axis:
    """Maps data values to pixels; ``transform`` first (log10, nines), then linear."""

    lo: float
    hi: float
    transform: Callable[[float], float]
    ticks: tuple[tuple[float, str], ...]  # (value, label)
    title: str

    def frac(self, value: float) -> float:
        t, lo, hi = self.transform(value), self.transform(self.lo), self.transform(self.hi)
        return 0.0 if hi == lo else min(max((t - lo) / (hi - lo), 0.0), 1.0)


def _log_ticks(lo: float, hi: float) -> tuple[float, float, tuple[tuple[float, str], ...]]:
    """A log axis from lo to hi (ms) with 1-2-5 ticks, widened to whole ticks."""
    lo = max(lo, 1e-3)
    hi = max(hi, lo * 1.01)
    steps = [m * 10.0**e for e in range(-3, 8) for m in (1, 2, 5)]
    start = max([s for s in steps if s <= lo] or [steps[0]])
    end = min([s for s in steps if s >= hi] or [steps[-1]])
    ticks = [s for s in steps if start <= s <= end]
    decades = [s for s in ticks if abs(math.log10(s) - round(math.log10(s))) < 1e-9]
    if len(ticks) > 6 and len(decades) >= 2:  # 1-2-5 labels would overlap: decades only
        ticks = decades
    return start, end, tuple((s, _ms_tick(s)) for s in ticks)


def _ms_tick(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g} ms"


def _nines(q: float) -> float:
    return -math.log10(max(1.0 - q, 1e-9))


def _polyline(points: Sequence[tuple[float, float]], color: str, dashed: bool = False) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash = ' stroke-dasharray="6 3"' if dashed else ""
    return (
        f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} '
        f'stroke-linejoin="round" points="{coords}"/>'
    )


def _chart(
    title: str,
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    x: _Axis,
    y: _Axis,
    width: int = 560,
    height: int = 320,
    legend_gap: int = 56,
) -> str:
    """One line chart: series of (label, colour, [(x, y), ...]) in data units; the legend
    takes `legend_gap` pixels per series at the top right."""
    left, right, top, bottom = 64, 30, 34, 46
    pw, ph = width - left - right, height - top - bottom

    def px(vx: float) -> float:
        return left + x.frac(vx) * pw

    def py(vy: float) -> float:
        return top + (1 - y.frac(vy)) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{left}" y="20" class="ct">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="pa"/>',
    ]
    for value, label in x.ticks:
        gx = px(value)
        parts.append(f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" y2="{top + ph}" class="gr"/>')
        parts.append(
            f'<text x="{gx:.1f}" y="{top + ph + 16}" class="tk" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    for value, label in y.ticks:
        gy = py(value)
        parts.append(f'<line x1="{left}" y1="{gy:.1f}" x2="{left + pw}" y2="{gy:.1f}" class="gr"/>')
        parts.append(
            f'<text x="{left - 6}" y="{gy + 4:.1f}" class="tk" text-anchor="end">'
            f"{html.escape(label)}</text>"
        )
    parts.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 8}" class="at" text-anchor="middle">'
        f"{html.escape(x.title)}</text>"
    )
    parts.append(
        f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" class="at" '
        f'text-anchor="middle">{html.escape(y.title)}</text>'
    )
    for i, (label, color, pts) in enumerate(series):
        if pts:
            parts.append(_polyline([(px(a), py(b)) for a, b in pts], color, dashed=i == 1))
        lx = left + pw - (len(series) - i) * legend_gap  # legend: top right, above the plot
        dash = ' stroke-dasharray="6 3"' if i == 1 else ""
        parts.append(
            f'<line x1="{lx}" y1="16" x2="{lx + 22}" y2="16" stroke="{color}" '
            f'stroke-width="3"{dash}/>'
        )
        parts.append(f'<text x="{lx + 28}" y="20" class="lg">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cdf_chart(title: str, cdf: Mapping[str, Sequence[Sequence[float]]], width: int = 560) -> str:
    values = [p[0] for s in SIDES for p in cdf.get(s, ())]
    if not values:
        return f'<p class="empty">{html.escape(title)}: no successful request.</p>'
    lo, hi, ticks = _log_ticks(min(values), max(values))
    x = _Axis(lo, hi, math.log10, ticks, "latency (log scale)")
    y_ticks = tuple((q, f"{q:.0%}") for q in (0.0, 0.25, 0.5, 0.75, 1.0))
    y = _Axis(0.0, 1.0, float, y_ticks, "share of requests at or below")
    series = []
    for s in SIDES:
        pts = [(p[0], p[1]) for p in cdf.get(s, ())]
        if pts:  # a CDF starts at 0: draw from the smallest latency up
            pts = [(pts[0][0], 0.0), *_steps(pts)]
        series.append((f"{LABEL[s]}", COLOR[s], pts))
    return _chart(title, series, x, y, width=width, height=300 if width < 560 else 320)


def _steps(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A CDF is a step function: hold each level until the next latency."""
    out: list[tuple[float, float]] = []
    previous_q = 0.0
    for value, q in points:
        out.append((value, previous_q))
        out.append((value, q))
        previous_q = q
    return out


def _percentile_chart(title: str, cdf: Mapping[str, Sequence[Sequence[float]]]) -> str:
    """Latency by percentile, the tail spread out (0, 90, 99, 99.9 % equally spaced)."""
    values = [p[0] for s in SIDES for p in cdf.get(s, ())]
    if not values:
        return ""
    top_q = max((p[1] for s in SIDES for p in cdf.get(s, ()) if p[1] < 1), default=0.9)
    # as far into the tail as the data has resolution: n samples reach 1 - 1/n
    nines_max = max(1, min(5, math.floor(_nines(top_q) + 1e-9)))
    x_ticks = tuple(
        (1 - 10.0**-k, f"{100 * (1 - 10.0**-k):.{max(k - 2, 0)}f} %") for k in range(nines_max + 1)
    )
    x = _Axis(0.0, 1 - 10.0**-nines_max, _nines, x_ticks, "percentile")
    lo, hi, ticks = _log_ticks(min(values), max(values))
    y = _Axis(lo, hi, math.log10, ticks, "latency (log scale)")
    series = []
    for s in SIDES:
        pts = [(min(p[1], 1 - 10.0**-nines_max), p[0]) for p in cdf.get(s, ())]
        series.append((LABEL[s], COLOR[s], pts))
    return _chart(title, series, x, y)


# --------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;
margin:24px auto;max-width:1180px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:700;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}
ul.checks{padding-left:18px}ul.checks li{margin:2px 0}
.ok{color:#1a7f37;font-weight:600}.ko{color:#cf222e;font-weight:600}
table{border-collapse:collapse;margin:6px 0 4px}
th,td{padding:4px 10px;border-bottom:1px solid #d8dee4}
th{text-align:left;background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#57606a}.a{color:#0072B2;font-weight:600}.b{color:#D55E00;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px;margin-top:16px}
.grid svg{width:100%;height:auto}
svg .ct{font-size:14px;font-weight:600;fill:#1b1f24}svg .tk{font-size:11px;fill:#57606a}
svg .at{font-size:12px;fill:#1b1f24}svg .lg{font-size:12px;fill:#1b1f24}
svg .pa{fill:#fff;stroke:#8c959f}svg .gr{stroke:#d8dee4;stroke-width:1}
code{background:#f6f8fa;padding:1px 4px;border-radius:3px}
"""


def _td(text: str, numeric: bool = True) -> str:
    cls = ' class="n"' if numeric else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def render_html(doc: Mapping[str, Any]) -> str:
    """One self-contained page: verdict, tables and hand-drawn SVG latency plots."""
    passed = doc["verdict"]["passed"]
    a, b = doc["sides"]["a"], doc["sides"]["b"]
    e = html.escape
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>cutover bench compare</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>cutover bench compare</h1>",
        f'<p><span class="verdict {"pass" if passed else "fail"}">'
        f"{'PASS' if passed else 'FAIL'}</span></p>",
        '<ul class="checks">',
    ]
    for check in doc["verdict"]["checks"]:
        mark = '<span class="ok">pass</span>' if check["passed"] else '<span class="ko">FAIL</span>'
        out.append(f"<li>{mark} {e(check['detail'])}</li>")
    for note in doc.get("notes", ()):
        out.append(f"<li><b>note</b> {e(note)}</li>")
    out += [
        "</ul>",
        f'<p><span class="a">A</span> {e(a["url"] or "")}<br>'
        f'<span class="b">B</span> {e(b["url"] or "")}</p>',
        f'<p class="meta">{e(_summary_line(doc))}<br>Machine: {e(_machine_line(doc))}. '
        f"Started {e(str(doc.get('started_at', '?')))}.<br>"
        "Latencies are exact (every request recorded): nearest-rank percentiles of the "
        "successful requests. Ratios are B/A, pooled and per round (median, range).</p>",
    ]
    if doc.get("command"):
        out.append(f'<p class="meta">Command: <code>{e(doc["command"])}</code></p>')
    out += ['<h2>Latency</h2><div class="charts">']
    cdf = doc["cdf"]["overall"]
    out.append(f"<div>{_cdf_chart('All requests: latency CDF', cdf)}</div>")
    out.append(f"<div>{_percentile_chart('All requests: latency by percentile', cdf)}</div>")
    out.append("</div>")

    out += [
        "<h2>Overall</h2><table><tr><th></th><th>A</th><th>B</th><th>B/A</th>"
        "<th>B/A per round</th></tr>"
    ]
    ratios = doc["ratios"]["overall"]
    for key, title, fmt in ROWS:
        r = ratios.get(key)
        out.append(
            f"<tr><th>{e(title)}</th>{_td(_cell(fmt, a['overall'][key]))}"
            f"{_td(_cell(fmt, b['overall'][key]))}"
            f"{_td(fmt_ratio(r['pooled']) if r else '')}{_td(_spread_text(r) if r else '')}</tr>"
        )
    out.append("</table>")

    out += [
        "<h2>Per endpoint</h2><table><tr><th>endpoint</th><th>side</th><th>requests</th>"
        "<th>errors</th><th>req/s</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>"
    ]
    for name, ep in doc["ratios"]["endpoints"].items():
        for s in SIDES:
            f = doc["sides"][s]["endpoints"][name]
            requests, errors = f"{f['requests']:,}", f"{f['errors']:,}"
            out.append(
                f"<tr><td>{e(name)}</td><td class={s}>{LABEL[s]}</td>{_td(requests)}"
                f"{_td(errors)}{_td(fmt_rps(f['rps']))}{_td(fmt_ms(f['p50']))}"
                f"{_td(fmt_ms(f['p95']))}{_td(fmt_ms(f['p99']))}{_td(fmt_ms(f['max']))}</tr>"
            )
        cells = "".join(_td(_spread_text(ep[m])) for m in ("rps", "p50", "p95", "p99", "max"))
        out.append(f"<tr><td>{e(name)}</td><td>B/A</td><td></td><td></td>{cells}</tr>")
    out.append("</table>")

    out += ['<h2>Latency CDF per endpoint</h2><div class="grid">']
    for name, cdf in doc["cdf"]["endpoints"].items():
        out.append(f"<div>{_cdf_chart(name, cdf, 420)}</div>")
    out.append("</div>")

    out += [
        "<h2>Rounds</h2><table><tr><th>round</th><th>order</th><th>A req/s</th><th>B req/s</th>"
        "<th>A p50</th><th>B p50</th><th>A p95</th><th>B p95</th><th>A p99</th><th>B p99</th>"
        "<th>B/A p95</th></tr>"
    ]
    for i, r in enumerate(doc["rounds"]):
        rr = ratios["p95"]["rounds"]
        out.append(
            f"<tr>{_td(str(r['round']))}{_td(' then '.join(LABEL[s] for s in r['order']), False)}"
            f"{_td(fmt_rps(r['a']['rps']))}{_td(fmt_rps(r['b']['rps']))}"
            f"{_td(fmt_ms(r['a']['p50']))}{_td(fmt_ms(r['b']['p50']))}"
            f"{_td(fmt_ms(r['a']['p95']))}{_td(fmt_ms(r['b']['p95']))}"
            f"{_td(fmt_ms(r['a']['p99']))}{_td(fmt_ms(r['b']['p99']))}"
            f"{_td(fmt_ratio(rr[i] if i < len(rr) else None))}</tr>"
        )
    out.append("</table>")
    errors = [(s, doc["sides"][s].get("errors") or {}) for s in SIDES]
    if any(err for _, err in errors):
        out.append("<h2>Errors</h2><ul>")
        for s, err in errors:
            for message, count in err.items():
                out.append(f"<li><span class={s}>{LABEL[s]}</span> {count:,} x {e(message)}</li>")
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# files


def write_reports(doc: Mapping[str, Any], directory: Path | str) -> list[Path]:
    """Write compare.json, compare.md and compare.html into ``directory``; their paths."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "compare.json": json.dumps(doc, indent=1, ensure_ascii=False) + "\n",
        "compare.md": render_markdown(doc),
        "compare.html": render_html(doc),
    }
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cutover.bench.report compare.json [--out DIR]``: draw a saved report again."""
    parser = argparse.ArgumentParser(
        prog="python -m cutover.bench.report", description=main.__doc__
    )
    parser.add_argument("json", help="a compare.json written by cutover bench compare")
    parser.add_argument("--out", help="directory for the files (default: next to the JSON)")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(Path(args.json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"bench.report: cannot read {args.json}: {exc}", file=sys.stderr)
        return 2
    for path in write_reports(doc, args.out or Path(args.json).parent):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
