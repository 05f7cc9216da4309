"""alerts.intake: the alert copied with a classification is the one dataclasses.replace makes."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from cutover.alerts.intake import _with_classification
from cutover.alerts.model import Alert, Classification


def test_copy_with_classification_equals_replace() -> None:
    # Every field set to something other than its default, so a field left out or moved shows.
    alert = Alert(
        fingerprint="0123456789abcdef",
        status="resolved",
        labels=MappingProxyType({"alertname": "A", "team": "db"}),
        annotations=MappingProxyType({"summary": "s"}),
        starts_at="2026-01-02T03:04:05Z",
        ends_at="2026-01-02T04:04:05Z",
        generator_url="http://prom/graph",
        group_key="{}:{}",
        receiver="r",
        external_url="http://am",
        group_labels=MappingProxyType({"team": "db"}),
        classification=Classification("info", "database", 0.5, source="llm"),
    )
    c = Classification("critical", "network", 0.8)
    copied = _with_classification(alert, c)
    assert copied == dataclasses.replace(alert, classification=c)
    assert copied.classification is c and copied is not alert
    assert _with_classification(alert, None) == dataclasses.replace(alert, classification=None)
    assert _with_classification(alert, alert.classification) is alert  # nothing to change
