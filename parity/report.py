"""Parity reports: one JSON document and one self-contained HTML page (no scripts, no links).

Per endpoint: requests, diff rate, the differing fields ranked (the ones Diffy's rule reports;
the ones it dismissed as noise are listed apart), and side-by-side examples.
"""

from __future__ import annotations

import difflib
import html
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from cutover.parity.diff import Difference, Reply, field_of, key_path, preview
from cutover.parity.noise import EndpointStats, FieldStats
from cutover.parity.results import Exchange, ParityRun

__all__ = ["build_report", "endpoint_json", "field_json", "render_html", "write_report"]

EXAMPLES_PER_ENDPOINT = 3
BODY_LIMIT = 20_000  # characters of a body shown in an example
CONTEXT = 3  # equal lines kept around a change in side-by-side bodies


def field_json(f: FieldStats) -> dict[str, Any]:
    return {
        "field": f.field,
        "reported": f.reported,
        "raw": f.raw,
        "noise": f.noise,
        "raw_rate": round(f.raw_rate, 6),
        "noise_rate": round(f.noise_rate, 6),
        "relative": round(f.relative, 3),
        "absolute": round(f.absolute, 3),
        "kinds": dict(f.kinds),
    }


def difference_json(d: Difference) -> dict[str, Any]:
    return {
        "path": d.path,
        "field": d.field,
        "kind": d.kind,
        "primary": preview(d.left),
        "candidate": preview(d.right),
    }


def endpoint_json(e: EndpointStats, max_diff_rate: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "endpoint": e.endpoint,
        "requests": e.requests,
        "noise_samples": e.noise_samples,
        "differing": e.differing,
        "diff_rate": round(e.diff_rate, 6),
        "fields": [field_json(f) for f in e.fields if f.reported],
        "noise_fields": [field_json(f) for f in e.fields if not f.reported],
    }
    if max_diff_rate is not None:
        out["over_limit"] = e.diff_rate > max_diff_rate
    return out


def _pretty(
    value: Any, path: str = "$", indent: int = 0, key: str = "", tail: str = ""
) -> list[tuple[str, str]]:
    """JSON as indented text (keys sorted), each line with the path it shows."""
    pad = "  " * indent
    if isinstance(value, dict) and value:
        lines = [(f"{pad}{key}{{", path)]
        items = sorted(value.items())
        for i, (k, v) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            name = orjson.dumps(k).decode() + ": "
            lines += _pretty(v, key_path(path, k), indent + 1, name, comma)
        return [*lines, (f"{pad}}}{tail}", path)]
    if isinstance(value, list) and value:
        lines = [(f"{pad}{key}[", path)]
        for i, v in enumerate(value):
            comma = "," if i < len(value) - 1 else ""
            lines += _pretty(v, f"{path}[{i}]", indent + 1, "", comma)
        return [*lines, (f"{pad}]{tail}", path)]
    return [(f"{pad}{key}{orjson.dumps(value).decode()}{tail}", path)]


def _body_text(reply: Reply) -> str:
    body = reply.body
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    else:
        text = "\n".join(line for line, _ in _pretty(data))
    return text if len(text) <= BODY_LIMIT else text[:BODY_LIMIT] + "\n…"


def _reply_json(reply: Reply) -> dict[str, Any]:
    return {
        "status": reply.status,
        "error": reply.error,
        "headers": dict(reply.headers),
        "body": _body_text(reply),
    }


def example_json(exchange: Exchange, fields: Sequence[str]) -> dict[str, Any]:
    wanted = set(fields)
    return {
        "fields": list(fields),
        "request": {"method": exchange.request.method, "path": exchange.request.path},
        "differences": [difference_json(d) for d in exchange.differences if d.field in wanted],
        "primary": _reply_json(exchange.primary),
        "candidate": _reply_json(exchange.candidate),
    }


def _examples(run: ParityRun, e: EndpointStats) -> list[dict[str, Any]]:
    """Examples for the reported fields, most frequent first; an exchange is shown once."""
    chosen: list[tuple[Exchange, list[str]]] = []
    for f in e.reported:
        for ex in run.examples.get((e.endpoint, f.field), ()):
            for seen, names in chosen:
                if seen is ex:
                    names.append(f.field)
                    break
            else:
                if len(chosen) < EXAMPLES_PER_ENDPOINT:
                    chosen.append((ex, [f.field]))
                break  # one new exchange per field, then the next field
    every = [f.field for f in e.reported]
    return [example_json(ex, every) for ex, _ in chosen]


def build_report(
    run: ParityRun,
    stats: Sequence[EndpointStats],
    max_diff_rate: float,
    generated_at: float | None = None,
) -> dict[str, Any]:
    """The JSON report of one offline run."""
    endpoints = []
    for e in stats:
        item = endpoint_json(e, max_diff_rate)
        item["examples"] = _examples(run, e)
        endpoints.append(item)
    when = generated_at if generated_at is not None else run.finished
    return {
        "generated_at": datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds"),
        "primary": run.primary,
        "candidate": run.candidate,
        "noise_source": run.noise_source,
        "requests": run.requests,
        "skipped": dict(run.skipped),
        "duration_seconds": round(max(0.0, run.finished - run.started), 3),
        "max_diff_rate": max_diff_rate,
        "thresholds": {
            "relative": run.config.thresholds.relative,
            "absolute": run.config.thresholds.absolute,
        },
        "passed": all(not e["over_limit"] for e in endpoints),
        "endpoints": endpoints,
    }


def write_report(folder: str | os.PathLike[str], report: dict[str, Any]) -> tuple[str, str]:
    """Write `report.json` and `report.html` into `folder` (created); their paths."""
    os.makedirs(folder, exist_ok=True)
    json_path = os.path.join(folder, "report.json")
    html_path = os.path.join(folder, "report.html")
    with open(json_path, "wb") as f:
        f.write(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(report))
    return json_path, html_path


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;
background:#f5f6f8}
header{background:#1d232a;color:#fff;padding:18px 28px}
header h1{margin:0 0 6px;font-size:20px}
header .meta{color:#c5ccd4;font-size:13px}
header code{color:#fff}
main{padding:18px 28px;max-width:1500px}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:600;
margin-left:10px;font-size:13px;vertical-align:middle}
.pass{background:#1f883d;color:#fff}.fail{background:#cf222e;color:#fff}
section{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:14px 18px;
margin:0 0 18px}
h2{font-size:16px;margin:0 0 10px;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
h3{font-size:14px;margin:16px 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{font-size:12px;color:#57606a;font-weight:600;background:#f6f8fa}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
.bar{display:inline-block;width:90px;height:8px;background:#eaeef2;border-radius:4px;
vertical-align:middle;margin-right:6px;overflow:hidden}
.bar i{display:block;height:100%;background:#cf222e}
.bar.ok i{background:#1f883d}
.kind{display:inline-block;font-size:11px;padding:0 6px;border-radius:10px;background:#ddf4ff;
color:#0550ae;margin-right:4px}
.kind.missing{background:#ffebe9;color:#a40e26}.kind.extra{background:#dafbe1;color:#116329}
.kind.type{background:#fff8c5;color:#7d4e00}
.example{border:1px solid #eaeef2;border-radius:6px;margin:10px 0;padding:10px}
.req{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-weight:600;margin-bottom:6px}
table.sbs td{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;
white-space:pre-wrap;word-break:break-all;padding:0 6px;border:0;width:50%}
table.sbs th{width:50%}
table.sbs td.del{background:#ffebe9}table.sbs td.add{background:#dafbe1}
table.sbs td.noise{background:#eaeef2;color:#57606a}
table.sbs td.gap{color:#8c959f;text-align:center;background:#f6f8fa}
.muted{color:#57606a}
details summary{cursor:pointer;color:#57606a;margin-top:8px}
.over{color:#cf222e;font-weight:600}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def _bar(rate: float, bad: bool) -> str:
    width = max(0.0, min(1.0, rate)) * 100
    return f'<span class="bar{"" if bad else " ok"}"><i style="width:{width:.1f}%"></i></span>'


def _kinds(kinds: dict[str, int], counts: bool = True) -> str:
    return "".join(
        f'<span class="kind {_e(k)}">{_e(k)}{f" {n}" if counts else ""}</span>'
        for k, n in sorted(kinds.items())
    )


def _fields_table(fields: list[dict[str, Any]]) -> str:
    rows = []
    for rank, f in enumerate(fields, 1):
        rows.append(
            f"<tr><td class=num>{rank}</td><td><code>{_e(f['field'])}</code></td>"
            f"<td>{_kinds(f['kinds'])}</td>"
            f"<td class=num>{f['raw']} ({_pct(f['raw_rate'])})</td>"
            f"<td class=num>{f['noise']} ({_pct(f['noise_rate'])})</td>"
            f"<td class=num>{f['relative']:.0f}%</td><td class=num>{f['absolute']:.1f}%</td></tr>"
        )
    return (
        "<table><tr><th class=num>#</th><th>field</th><th>kind</th>"
        "<th class=num>candidate ≠ primary</th><th class=num>primary ≠ primary (noise)</th>"
        "<th class=num>relative</th><th class=num>absolute</th></tr>" + "".join(rows) + "</table>"
    )


def _annotated(body: str) -> tuple[list[str], list[str] | None]:
    """Lines of a shown body and, for JSON, the path of each line."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.splitlines(), None
    pairs = _pretty(data)
    return [t for t, _ in pairs], [p for _, p in pairs]


def _under(path: str | None, reported: set[str]) -> bool:
    if path is None:
        return False
    f = field_of(path)
    return any(f == r or f.startswith((r + ".", r + "[")) for r in reported)


def _side_by_side(left: str, right: str, reported: set[str]) -> str:
    """Rows of both bodies aligned; reported differences in red/green, the rest of what
    differs (noise, or below the thresholds) in grey."""
    a, a_paths = _annotated(left)
    b, b_paths = _annotated(right)
    rows: list[str] = []

    def same(i: int) -> str:
        return f"<tr><td>{_e(a[i])}</td><td>{_e(a[i])}</td></tr>"

    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            n = i2 - i1
            if n > 2 * CONTEXT + 1:
                rows += [same(i) for i in range(i1, i1 + CONTEXT)]
                hidden = n - 2 * CONTEXT
                rows.append(f"<tr><td class=gap colspan=2>… {hidden} equal lines …</td></tr>")
                rows += [same(i) for i in range(i2 - CONTEXT, i2)]
            else:
                rows += [same(i) for i in range(i1, i2)]
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            li, rj = i1 + k, j1 + k
            lv = a[li] if li < i2 else None
            rv = b[rj] if rj < j2 else None
            if a_paths is None or b_paths is None:
                line = li + 1 if li < i2 else i2 + 1  # the text diff's numbering (parity.diff)
                strong = f"body:{line}" in reported or "body" in reported
            else:
                strong = _under(a_paths[li] if lv is not None else None, reported) or _under(
                    b_paths[rj] if rv is not None else None, reported
                )
            lcls, rcls = ("del", "add") if strong else ("noise", "noise")
            lcell = f"<td class={lcls}>{_e(lv)}</td>" if lv is not None else "<td></td>"
            rcell = f"<td class={rcls}>{_e(rv)}</td>" if rv is not None else "<td></td>"
            rows.append(f"<tr>{lcell}{rcell}</tr>")
    return "".join(rows)


def _status_line(side: dict[str, Any]) -> str:
    if side["status"] == 0:
        return f"no answer ({_e(side.get('error') or 'error')})"
    ctype = side["headers"].get("content-type", "")
    return f"{side['status']} {_e(ctype)}"


def _example(ex: dict[str, Any], reported: set[str]) -> str:
    req = ex["request"]
    diffs = "".join(
        f"<tr><td><code>{_e(d['path'])}</code></td><td>{_kinds({d['kind']: 1}, counts=False)}</td>"
        f"<td><code>{_e(d['primary'])}</code></td><td><code>{_e(d['candidate'])}</code></td></tr>"
        for d in ex["differences"][:20]
    )
    p, c = ex["primary"], ex["candidate"]
    return (
        f"<div class=example><div class=req>{_e(req['method'])} {_e(req['path'])}</div>"
        "<table><tr><th>path</th><th>kind</th><th>primary</th><th>candidate</th></tr>"
        f"{diffs}</table>"
        f"<h3>Responses side by side</h3><table class=sbs><tr><th>primary — {_status_line(p)}"
        f"</th><th>candidate — {_status_line(c)}</th></tr>"
        f"{_side_by_side(p['body'], c['body'], reported)}</table></div>"
    )


def _endpoint(e: dict[str, Any], limit: float | None) -> str:
    over = e.get("over_limit", False)
    head = (
        f"<h2 id='{_e(_anchor(e['endpoint']))}'>{_e(e['endpoint'])}</h2>"
        f"<p>{e['requests']} requests, <b class='{'over' if over else ''}'>{e['differing']} "
        f"differ ({_pct(e['diff_rate'])})</b>"
        + (f" — over the limit of {_pct(limit)}" if over and limit is not None else "")
        + f"; noise learned from {e['noise_samples']} repeated requests.</p>"
    )
    body = ""
    if e["fields"]:
        body += "<h3>Differing fields, ranked</h3>" + _fields_table(e["fields"])
    else:
        body += "<p class=muted>No differences beyond the primary's own noise.</p>"
    if e.get("examples"):
        reported = {f["field"] for f in e["fields"]}
        body += (
            "<h3>Examples</h3><p class=muted>Red and green: the reported differences; "
            "grey: lines that also differ but are noise (the primary differs from itself "
            "there) or under the thresholds.</p>"
            + "".join(_example(x, reported) for x in e["examples"])
        )
    if e["noise_fields"]:
        body += (
            f"<details><summary>{len(e['noise_fields'])} field(s) dismissed as noise</summary>"
            + _fields_table(e["noise_fields"])
            + "</details>"
        )
    return f"<section>{head}{body}</section>"


def _anchor(endpoint: str) -> str:
    return "ep-" + "".join(c if c.isalnum() else "-" for c in endpoint).strip("-")


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page for a report built by `build_report`."""
    limit = report.get("max_diff_rate")
    passed = report.get("passed", True)
    verdict = (
        '<span class="verdict pass">PASS</span>'
        if passed
        else '<span class="verdict fail">FAIL</span>'
    )
    rows = []
    for e in report["endpoints"]:
        over = e.get("over_limit", False)
        rows.append(
            f"<tr><td><a href='#{_e(_anchor(e['endpoint']))}'><code>{_e(e['endpoint'])}</code>"
            f"</a></td><td class=num>{e['requests']}</td><td class=num>{e['differing']}</td>"
            f"<td>{_bar(e['diff_rate'], over or e['differing'] > 0)}{_pct(e['diff_rate'])}</td>"
            f"<td>{len(e['fields'])}</td><td>{'over limit' if over else 'ok'}</td></tr>"
        )
    skipped = report.get("skipped") or {}
    skipped_text = (
        " · skipped: " + ", ".join(f"{_e(k)} {v}" for k, v in sorted(skipped.items()))
        if skipped
        else ""
    )
    limit_text = f" · limit {_pct(limit)} per endpoint" if limit is not None else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>cutover parity report</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Parity report {verdict}</h1><div class=meta>"
        f"primary <code>{_e(report['primary'])}</code> · candidate "
        f"<code>{_e(report['candidate'])}</code> · noise from "
        f"<code>{_e(report['noise_source'])}</code><br>{report['requests']} requests · "
        f"{len(report['endpoints'])} endpoints{limit_text}{skipped_text} · "
        f"generated {_e(report['generated_at'])}</div></header><main>"
        "<section><h2>Endpoints</h2><table><tr><th>endpoint</th><th class=num>requests</th>"
        "<th class=num>differ</th><th>diff rate</th><th>fields</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table></section>"
        + "".join(_endpoint(e, limit) for e in report["endpoints"])
        + "</main></body></html>"
    )
