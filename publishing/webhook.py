"""Generic webhook: the Alertmanager v4 envelope for one alert, plus the classification.

`format: alertmanager` (default) — an envelope any Alertmanager receiver understands, with the
classification as `llm_*` annotations (as the originals did) and as a top-level
`classification` object. `format: webhook` — the originals' generic shape
`{alert{...}, classification, timestamp, source, version}`.

Every request carries `Idempotency-Key: <fingerprint>:<status>:<startsAt>`, so a receiver can
drop the second copy of an at-least-once delivery. A sender's fingerprint may hold characters a
header cannot (a line break, any control character): those, and `%`, go as `%XX` escapes.
"""

from __future__ import annotations

import datetime
import re

from cutover.alerts.model import Alert
from cutover.publishing import view
from cutover.publishing.targets import TargetSpec
from cutover.publishing.transport import SendContext, SendOutcome, post_json

RECEIVER = "cutover"


# What a header value cannot hold (RFC 9110 §5.5: no controls but HTAB), and `%`, so that the
# escaped key stays one-to-one with the alert's.
_NOT_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f%]")


def idempotency_key(alert: Alert) -> str:
    """The key of one alert's delivery, as a header value (see the module docstring)."""
    key = f"{alert.fingerprint}:{alert.status}:{alert.starts_at}"
    if _NOT_IN_HEADER.search(key) is None:
        return key
    return _NOT_IN_HEADER.sub(lambda m: f"%{ord(m.group()):02X}", key)


def _annotations(alert: Alert) -> dict[str, str]:
    out = dict(alert.annotations)
    c = alert.classification
    if c is not None:
        out["llm_severity"] = c.severity
        out["llm_confidence"] = f"{c.confidence:.2f}"
        out["llm_category"] = c.category
        out["classification_source"] = view.classification_source(alert)
        if c.reasoning:
            out["llm_reasoning"] = view.truncate(c.reasoning, 500)
        if c.recommendations:
            out["llm_recommendations"] = "; ".join(c.recommendations[:3])
    return out


def envelope(alert: Alert, *, classification: bool = True) -> dict[str, object]:
    """Alertmanager webhook v4 with this one alert (DESIGN.md, Facts)."""
    item = alert.as_alertmanager()
    annotations = _annotations(alert) if classification else dict(alert.annotations)
    item["annotations"] = annotations
    body: dict[str, object] = {
        "version": "4",
        "groupKey": alert.group_key or f"group:{alert.fingerprint}",
        "truncatedAlerts": 0,
        "status": alert.status,
        "receiver": alert.receiver or RECEIVER,
        "groupLabels": dict(alert.group_labels),
        "commonLabels": dict(alert.labels),
        "commonAnnotations": annotations,
        "externalURL": alert.external_url,
        "alerts": [item],
    }
    if classification and alert.classification is not None:
        body["classification"] = alert.classification.as_dict()
    return body


def flat(alert: Alert) -> dict[str, object]:
    """One flat alert, the shape the Go service's `POST /webhook` takes."""
    body: dict[str, object] = {
        "alertname": alert.name,
        "status": alert.status,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "fingerprint": alert.fingerprint,
    }
    if view.timestamp(alert.starts_at):
        body["startsAt"] = alert.starts_at
    if view.timestamp(alert.ends_at):
        body["endsAt"] = alert.ends_at
    if alert.generator_url:
        body["generatorURL"] = alert.generator_url
    return body


def generic(alert: Alert, now: float) -> dict[str, object]:
    """The originals' generic webhook body."""
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat().replace("+00:00", "Z")
    return {
        "alert": {
            "fingerprint": alert.fingerprint,
            "name": alert.name,
            "status": alert.status,
            "namespace": view.namespace(alert) or None,
            "starts_at": alert.starts_at,
            "ends_at": view.timestamp(alert.ends_at),
            "generator_url": alert.generator_url or None,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
        },
        "classification": alert.classification.as_dict() if alert.classification else None,
        "timestamp": stamp,
        "source": "cutover",
        "version": "1.0",
    }


async def send(ctx: SendContext, target: TargetSpec, alert: Alert) -> SendOutcome:
    body = generic(alert, ctx.clock.now()) if target.format == "webhook" else envelope(alert)
    headers = {"Idempotency-Key": idempotency_key(alert), **dict(target.headers)}
    return await post_json(ctx, target.url, body, headers=headers, timeout=target.timeout)
