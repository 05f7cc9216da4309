"""Sample alert payloads for the demo, the docs and tests.

`alertmanager_payload()` is shaped like a real Alertmanager 0.25 webhook (payload version 4, two
firing alerts of one group). `flat_alert()` turns one of its alerts into the single flat alert the
Go service's ``POST /webhook`` accepts (spec digest §2.3): ``labels.alertname`` copied to the top
level, ``fingerprint`` kept.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

__all__ = ["alertmanager_payload", "flat_alert"]

# Alertmanager's "no end time" for a firing alert
ZERO_TIME = "0001-01-01T00:00:00Z"

_ALERTMANAGER_V4: dict[str, Any] = {
    "receiver": "proxy",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "ProxyUpstreamDown",
                "instance": "127.0.0.1:8080",
                "service": "proxy",
                "severity": "critical",
            },
            "annotations": {
                "runbook_url": "http://127.0.0.1/runbook",
                "summary": "upstream down",
            },
            "startsAt": "2026-11-21T21:38:32Z",
            "endsAt": ZERO_TIME,
            "generatorURL": "http://127.0.0.1:19090/graph?g0.expr=up%3D%3D0",
            "fingerprint": "1481b3e4e23664d0",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "ProxyUpstreamDown",
                "instance": "127.0.0.1:8081",
                "service": "proxy",
                "severity": "critical",
            },
            "annotations": {
                "runbook_url": "http://127.0.0.1/runbook",
                "summary": "upstream down",
            },
            "startsAt": "2026-11-21T21:38:32Z",
            "endsAt": ZERO_TIME,
            "generatorURL": "http://127.0.0.1:19090/graph?g0.expr=up%3D%3D0",
            "fingerprint": "d27718e7a37dc0a9",
        },
    ],
    "groupLabels": {"alertname": "ProxyUpstreamDown"},
    "commonLabels": {"alertname": "ProxyUpstreamDown", "service": "proxy", "severity": "critical"},
    "commonAnnotations": {"runbook_url": "http://127.0.0.1/runbook", "summary": "upstream down"},
    "externalURL": "http://127.0.0.1:9093",
    "version": "4",
    "groupKey": '{}:{alertname="ProxyUpstreamDown"}',
    "truncatedAlerts": 0,
}


def alertmanager_payload(starts_at: datetime | None = None) -> dict[str, Any]:
    """A fresh copy of the sample webhook; `starts_at` (whole seconds) replaces its start time."""
    payload = copy.deepcopy(_ALERTMANAGER_V4)
    if starts_at is not None:
        stamp = starts_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for alert in payload["alerts"]:
            alert["startsAt"] = stamp
    return payload


def flat_alert(alert: dict[str, Any]) -> dict[str, Any]:
    """One envelope alert as the Go webhook wants it: ``alertname`` at the top level."""
    flat = {
        "alertname": alert.get("labels", {}).get("alertname", ""),
        "status": alert.get("status", "firing"),
        "labels": dict(alert.get("labels", {})),
        "annotations": dict(alert.get("annotations", {})),
        "startsAt": alert.get("startsAt"),
        "generatorURL": alert.get("generatorURL", ""),
        "fingerprint": alert.get("fingerprint", ""),
    }
    if alert.get("endsAt") and alert["endsAt"] != ZERO_TIME:
        flat["endsAt"] = alert["endsAt"]
    return flat
