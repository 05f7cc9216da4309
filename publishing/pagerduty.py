"""PagerDuty Events API v2: trigger and resolve, `dedup_key` = the alert's fingerprint.

    POST https://events.pagerduty.com/v2/enqueue
    {"routing_key", "event_action": "trigger", "dedup_key",
     "payload": {"summary" (<= 1024), "source", "severity": critical|error|warning|info,
                 "timestamp", "component", "group", "class", "custom_details"},
     "links": [{"href", "text"}], "client", "client_url"}
    {"routing_key", "event_action": "resolve", "dedup_key"}

202 means accepted; 400 is a bad event (not retried); 429 slows us down.
"""

from __future__ import annotations

from cutover.alerts.model import Alert
from cutover.publishing import view
from cutover.publishing.targets import TargetSpec
from cutover.publishing.transport import SendContext, SendOutcome, post_json

MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


def pd_severity(alert: Alert) -> str:
    """critical | error | warning | info (noise counts as info)."""
    return _SEVERITY.get(view.severity(alert), "info")


def summary(alert: Alert) -> str:
    parts = [view.title(alert)]
    text = view.description(alert)
    if text:
        parts.append(f"— {text}")
    note = view.classification_note(alert)
    if note:
        parts.append(f"({note})")
    return view.truncate(" ".join(parts), MAX_SUMMARY)


def event(alert: Alert, routing_key: str) -> dict[str, object]:
    """The Events API v2 body for this alert (trigger when firing, resolve when resolved)."""
    dedup_key = alert.fingerprint[:MAX_DEDUP_KEY]
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    labels = alert.labels
    details: dict[str, object] = {
        "alert_name": alert.name,
        "status": alert.status,
        "fingerprint": alert.fingerprint,
        "labels": dict(labels),
        "annotations": dict(alert.annotations),
        "starts_at": alert.starts_at,
    }
    if alert.classification is not None:
        details["classification"] = alert.classification.as_dict()
    payload: dict[str, object] = {
        "summary": summary(alert),
        "source": labels.get("instance") or view.namespace(alert) or "cutover",
        "severity": pd_severity(alert),
        "custom_details": details,
    }
    ts = view.timestamp(alert.starts_at)
    if ts:
        payload["timestamp"] = ts
    for key, value in (
        ("component", labels.get("job") or labels.get("service")),
        ("group", view.namespace(alert) or alert.name),
        ("class", alert.name),
    ):
        if value:
            payload[key] = value
    links = []
    if alert.generator_url:
        links.append({"href": alert.generator_url, "text": "Source"})
    runbook = view.runbook_url(alert)
    if runbook:
        links.append({"href": runbook, "text": "Runbook"})
    body: dict[str, object] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": payload,
        "client": "cutover",
    }
    if links:
        body["links"] = links
    if alert.external_url:
        body["client_url"] = alert.external_url
    return body


async def send(ctx: SendContext, target: TargetSpec, alert: Alert) -> SendOutcome:
    return await post_json(
        ctx,
        target.url,
        event(alert, target.routing_key or ""),
        headers=dict(target.headers),
        timeout=target.timeout,
    )
