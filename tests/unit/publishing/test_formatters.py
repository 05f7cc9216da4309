"""Payload shapes, table-driven (no sockets)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from cutover.alerts.model import Alert, Classification
from cutover.publishing import pagerduty, rootly, slack, webhook


def alert(status: str = "firing", **changes: object) -> Alert:
    base = Alert(
        fingerprint="abc123",
        status=status,  # type: ignore[arg-type]
        labels=MappingProxyType(
            {
                "alertname": "HighLatency",
                "severity": "warning",
                "namespace": "payments",
                "instance": "pod-1",
                "job": "api",
            }
        ),
        annotations=MappingProxyType(
            {"summary": "p99 over 2s", "runbook_url": "https://runbooks.example/latency"}
        ),
        starts_at="2026-11-20T10:00:00Z",
        generator_url="http://prom.example/graph",
        classification=Classification(
            "critical", "performance", 0.87, "latency rising", ("scale up", "check db", "x", "y")
        ),
    )
    return dataclasses.replace(base, **changes)


def test_pagerduty_trigger_fields():
    body = pagerduty.event(alert(), "KEY")
    assert body["routing_key"] == "KEY" and body["event_action"] == "trigger"
    assert body["dedup_key"] == "abc123"
    p = body["payload"]
    assert p["severity"] == "critical"  # the classification wins over the label
    assert p["source"] == "pod-1" and p["component"] == "api" and p["group"] == "payments"
    assert p["class"] == "HighLatency" and p["timestamp"] == "2026-11-20T10:00:00Z"
    assert p["custom_details"]["classification"]["recommendations"] == [
        "scale up", "check db", "x", "y"
    ]  # fmt: skip
    assert body["links"] == [
        {"href": "http://prom.example/graph", "text": "Source"},
        {"href": "https://runbooks.example/latency", "text": "Runbook"},
    ]
    assert "HighLatency" in p["summary"] and "87%" in p["summary"]


def test_pagerduty_resolve_and_limits():
    assert pagerduty.event(alert("resolved"), "K") == {
        "routing_key": "K", "event_action": "resolve", "dedup_key": "abc123"
    }  # fmt: skip
    long = alert(
        annotations=MappingProxyType({"summary": "z" * 4000}), fingerprint="f" * 400,
        starts_at="0001-01-01T00:00:00Z", generator_url="",
    )  # fmt: skip
    body = pagerduty.event(long, "K")
    assert len(body["payload"]["summary"]) == 1024 and body["payload"]["summary"].endswith("…")
    assert len(body["dedup_key"]) == 255
    assert "timestamp" not in body["payload"] and "links" not in body


@pytest.mark.parametrize(
    ("label", "classification", "expected"),
    [
        ("critical", None, "critical"),
        ("error", None, "error"),
        ("warning", None, "warning"),
        ("info", None, "info"),
        ("", None, "warning"),
        ("bogus", None, "warning"),
        ("info", "noise", "info"),
        ("info", "critical", "critical"),
    ],
)
def test_pagerduty_severity(label, classification, expected):
    c = Classification(classification, "x", 0.5) if classification else None
    a = alert(labels=MappingProxyType({"alertname": "A", "severity": label}), classification=c)
    assert pagerduty.pd_severity(a) == expected


def test_slack_message_blocks_and_colours():
    msg = slack.message(alert())
    att = msg["attachments"][0]
    assert att["color"] == slack.COLOURS["critical"]
    header, fields = att["blocks"][0], att["blocks"][1]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert "HighLatency" in header["text"]["text"]
    texts = [f["text"] for f in fields["fields"]]
    assert any(t.startswith("*Namespace:*") for t in texts)
    assert len(fields["fields"]) <= 10
    actions = next(b for b in att["blocks"] if b["type"] == "actions")
    assert [e["text"]["text"] for e in actions["elements"]] == ["Runbook", "Source"]
    reasoning = "\n".join(
        b["text"]["text"] for b in att["blocks"] if "text" in b and b["type"] == "section"
    )
    assert "• scale up" in reasoning and "• y" not in reasoning  # top 3 recommendations
    resolved = slack.message(alert("resolved", ends_at="2026-11-20T11:00:00Z"))
    assert resolved["attachments"][0]["color"] == slack.RESOLVED_COLOUR
    assert resolved["text"].startswith("✅ [RESOLVED]")


def test_slack_header_is_bounded():
    a = alert(labels=MappingProxyType({"alertname": "N" * 400}), classification=None)
    header = slack.message(a)["attachments"][0]["blocks"][0]["text"]["text"]
    assert len(header) == 150


def test_rootly_bodies():
    body = rootly.alert_body(alert())
    assert body["data"]["type"] == "alerts"
    attrs = body["data"]["attributes"]
    assert attrs["deduplication_key"] == "abc123" and attrs["external_id"] == "abc123"
    assert attrs["summary"] == (
        "[HighLatency] Alert in payments (classified by rules: critical, 87% confidence)"
    )
    assert {"key": "namespace", "value": "payments"} in attrs["labels"]
    assert attrs["data"]["severity"] == "critical" and attrs["noise"] == "not_noise"
    assert "scale up" in attrs["description"]
    inc = rootly.incident_body(alert())
    assert inc["data"]["type"] == "incidents" and len(inc["data"]["attributes"]["title"]) <= 255
    assert rootly.resolve_body(alert(), "incident") == {
        "data": {"type": "incidents",
                 "attributes": {"resolution_message": "Alert resolved: HighLatency in payments"}}
    }  # fmt: skip


def test_webhook_envelope_and_generic_shape():
    env = webhook.envelope(alert())
    assert set(env) >= {"version", "groupKey", "truncatedAlerts", "status", "receiver",
                        "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                        "alerts"}  # fmt: skip
    assert env["version"] == "4" and env["groupKey"] == "group:abc123"
    ann = env["alerts"][0]["annotations"]
    assert ann["llm_confidence"] == "0.87" and ann["llm_recommendations"] == "scale up; check db; x"
    assert env["classification"]["category"] == "performance"
    plain = webhook.envelope(alert(classification=None))
    assert "classification" not in plain and "llm_severity" not in plain["alerts"][0]["annotations"]
    generic = webhook.generic(alert(), 1_700_000_000.0)
    assert generic["alert"]["name"] == "HighLatency" and generic["version"] == "1.0"
    assert generic["timestamp"] == "2023-11-14T22:13:20Z"
    flat = webhook.flat(alert())
    assert flat["alertname"] == "HighLatency" and "endsAt" not in flat


@pytest.mark.parametrize(
    ("source", "model", "cached", "who"),
    [
        ("rules", None, False, "rules"),
        ("llm", "gpt-4o-mini", False, "LLM gpt-4o-mini"),
        ("llm", "gpt-4o-mini", True, "LLM gpt-4o-mini from cache"),
        ("llm", None, False, "LLM"),
        ("default", None, False, "default"),
    ],
)
def test_messages_name_who_classified_the_alert(
    source: str, model: str | None, cached: bool, who: str
) -> None:
    c = Classification("critical", "performance", 0.8, source=source, model=model, cached=cached)  # type: ignore[arg-type]
    a = alert(classification=c)
    note = f"classified by {who}: critical, 80% confidence"
    assert pagerduty.event(a, "KEY")["payload"]["summary"].endswith(f"({note})")
    assert rootly.alert_body(a)["data"]["attributes"]["summary"].endswith(f"({note})")
    assert f"- classified by: {who}\n" in rootly.alert_body(a)["data"]["attributes"]["description"]
    fields = slack.message(a)["attachments"][0]["blocks"][1]["fields"]
    assert {
        "type": "mrkdwn",
        "text": f"*Classification:*\ncritical / performance (80%, by {who})",
    } in fields
    for text in (str(pagerduty.event(a, "KEY")), str(slack.message(a)), str(rootly.alert_body(a))):
        assert "AI:" not in text


def test_webhook_envelope_carries_the_group_labels() -> None:
    a = alert(group_labels=MappingProxyType({"alertname": "HighLatency", "namespace": "payments"}))
    assert webhook.envelope(a)["groupLabels"] == {
        "alertname": "HighLatency",
        "namespace": "payments",
    }
    assert webhook.envelope(alert())["groupLabels"] == {}
