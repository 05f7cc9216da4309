"""What every formatter reads off an alert: severity, title, summary, links. Pure."""

from __future__ import annotations

from cutover.alerts.model import ZERO_TIME, Alert

# Label spellings seen in the wild -> the classification scale (spec digest §3.2).
_LABEL_SEVERITY = {
    "critical": "critical",
    "crit": "critical",
    "page": "critical",
    "fatal": "critical",
    "emergency": "critical",
    "error": "error",
    "err": "error",
    "high": "error",
    "major": "error",
    "warning": "warning",
    "warn": "warning",
    "medium": "warning",
    "minor": "warning",
    "info": "info",
    "information": "info",
    "informational": "info",
    "low": "info",
    "debug": "info",
    "none": "info",
    "noise": "noise",
    "trace": "noise",
}


def severity(alert: Alert) -> str:
    """critical | error | warning | info | noise: the classification's, else the label's."""
    if alert.classification is not None:
        return alert.classification.severity
    label = alert.labels.get("severity", "").strip().lower()
    return _LABEL_SEVERITY.get(label, "warning")


def namespace(alert: Alert) -> str:
    return alert.labels.get("namespace", "")


def description(alert: Alert) -> str:
    a = alert.annotations
    return a.get("summary") or a.get("description") or a.get("message") or ""


def runbook_url(alert: Alert) -> str:
    a = alert.annotations
    return a.get("runbook_url") or a.get("runbook") or ""


def timestamp(value: str) -> str | None:
    """An RFC 3339 time as received, or None for Alertmanager's zero time / nothing."""
    return value if value and value != ZERO_TIME else None


def title(alert: Alert) -> str:
    """`[FIRING] HighLatency in payments`."""
    ns = namespace(alert)
    where = f" in {ns}" if ns else ""
    return f"[{alert.status.upper()}] {alert.name or 'alert'}{where}"


def classification_source(alert: Alert) -> str:
    """Who classified the alert, truthfully: `rules`, `LLM gpt-4o` or `LLM gpt-4o from cache`
    (an answer given earlier for the same fingerprint and status), `default`."""
    c = alert.classification
    if c is None:
        return ""
    if c.source != "llm":
        return c.source
    who = f"LLM {c.model}" if c.model else "LLM"
    return f"{who} from cache" if c.cached else who


def classification_note(alert: Alert) -> str:
    c = alert.classification
    if c is None:
        return ""
    return (
        f"classified by {classification_source(alert)}: {c.severity}, "
        f"{round(c.confidence * 100)}% confidence"
    )


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
