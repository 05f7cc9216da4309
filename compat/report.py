"""Who still calls the legacy endpoints: the usage rows shaped for the admin API and the CLI. Pure.

Callers of rules with a sunset date come first, the nearest sunset first, then by call count,
so the top of the list is who to contact first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cutover.compat.jsonops import format_rfc3339
from cutover.compat.rules import Rule

__all__ = ["usage_report", "usage_text"]

DAY = 86_400.0


def _when(seconds: float | None) -> str | None:
    return format_rfc3339(int(seconds)) if seconds is not None else None


def usage_report(
    rows: Iterable[Mapping[str, Any]],
    rules: Iterable[Rule],
    now: float,
    only: str | None = None,
) -> dict[str, Any]:
    """`{rules: [...], callers: [...]}` from stored rows and the configured rules.

    `only` keeps one rule: the rows were read for it alone, so listing the other configured
    rules would show them with `calls: 0` although they have calls.
    """
    by_name = {r.name: r for r in rules}
    callers: list[dict[str, Any]] = []
    totals: dict[str, list[int]] = {
        name: [0, 0] for name in by_name if only is None or name == only
    }
    for row in rows:
        if only is not None and row["rule"] != only:
            continue
        rule = by_name.get(row["rule"])
        sunset = rule.sunset if rule is not None else None
        count = int(row["count"])
        t = totals.setdefault(row["rule"], [0, 0])
        t[0] += count
        t[1] += 1
        callers.append(
            {
                "rule": row["rule"],
                "caller": row["caller"],
                "kind": row["kind"],
                "user_agent": row["user_agent"],
                "client_ip": row["client_ip"],
                "count": count,
                "first_seen": _when(row["first_seen"]),
                "last_seen": _when(row["last_seen"]),
                "sunset": _when(sunset),
                "days_to_sunset": (
                    None if sunset is None else int((sunset - now) // DAY)
                ),  # negative: past it
                "configured": rule is not None,
            }
        )
    far = float("inf")
    callers.sort(
        key=lambda c: (
            c["days_to_sunset"] if c["days_to_sunset"] is not None else far,
            -c["count"],
            c["rule"],
            c["caller"],
        )
    )
    summary = []
    for name, (calls, distinct) in totals.items():
        rule = by_name.get(name)
        summary.append(
            {
                "rule": name,
                "deprecated": rule.deprecation is not None if rule is not None else None,
                "sunset": _when(rule.sunset) if rule is not None else None,
                "calls": calls,
                "callers": distinct,
                "configured": rule is not None,
            }
        )
    return {"rules": summary, "callers": callers}


def usage_text(report: Mapping[str, Any]) -> str:
    """A plain table for `cutover compat report`."""
    callers = report["callers"]
    if not callers:
        return "no calls to legacy endpoints recorded"
    head = ("RULE", "SUNSET", "DAYS", "CALLS", "LAST SEEN", "CALLER", "CLIENT")
    lines = [head]
    for c in callers:
        who = c["user_agent"] or "-"
        client = f"{who} @ {c['client_ip'] or '-'}"
        days = "-" if c["days_to_sunset"] is None else str(c["days_to_sunset"])
        sunset = (c["sunset"] or "-")[:10]
        lines.append(
            (c["rule"], sunset, days, str(c["count"]), c["last_seen"] or "-", c["caller"], client)
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head) - 1)]
    out = []
    for row in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(out)
