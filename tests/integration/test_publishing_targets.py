"""Each formatter against a small server that checks the documented format."""

from __future__ import annotations

import asyncio
import dataclasses
from types import MappingProxyType

import aiohttp
import pytest

from tests.conftest import wait_for
from tests.integration.publishing_fakes import FakePagerDuty, FakeRootly, FakeSlack, FakeWebhook
from tests.integration.publishing_helpers import (
    config,
    enqueue,
    make_alert,
    pending,
)

FAST = {"backoff": {"base": "20ms", "cap": "100ms"}, "poll_interval": "100ms"}


async def test_pagerduty_trigger_then_resolve_with_the_fingerprint_as_dedup_key(
    tmp_path, services, gateways
):
    pd = await services(FakePagerDuty)
    target = {"name": "pd", "type": "pagerduty", "url": pd.url + "/v2/enqueue",
              "routing_key": pd.routing_key}  # fmt: skip
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": FAST}))
    long = dataclasses.replace(
        make_alert("fp-pd-1"),
        annotations=MappingProxyType(
            {"summary": "y" * 5000, "runbook_url": "https://runbooks.example/x"}
        ),
    )
    await enqueue(gw, long, ["pd"])
    await wait_for(lambda: len(pd.accepted) == 1)
    await enqueue(gw, make_alert("fp-pd-1", "resolved"), ["pd"])
    await wait_for(lambda: len(pd.accepted) == 2)
    assert pd.problems == []
    trigger, resolve = pd.accepted
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == "fp-pd-1"
    payload = trigger["payload"]
    assert len(payload["summary"]) == 1024
    assert payload["severity"] == "critical"
    assert payload["custom_details"]["classification"]["category"] == "infrastructure"
    assert {link["text"] for link in trigger["links"]} == {"Source", "Runbook"}
    assert resolve == {"routing_key": pd.routing_key, "event_action": "resolve",
                       "dedup_key": "fp-pd-1"}  # fmt: skip
    assert pd.open == {}


@pytest.mark.parametrize(
    ("label", "expected"),
    [("critical", "critical"), ("error", "error"), ("warn", "warning"), ("debug", "info")],
)
async def test_pagerduty_severity_mapping(tmp_path, services, gateways, label, expected):
    pd = await services(FakePagerDuty)
    target = {"name": "pd", "type": "pagerduty", "url": pd.url + "/v2/enqueue",
              "routing_key": pd.routing_key}  # fmt: skip
    gw = await gateways(config(tmp_path, {"targets": [target]}))
    await enqueue(gw, make_alert("fp-sev", classified=False, severity=label), ["pd"])
    await wait_for(lambda: len(pd.accepted) == 1)
    assert pd.accepted[0]["payload"]["severity"] == expected
    assert pd.problems == []


async def test_slack_incoming_webhook_block_kit(tmp_path, services, gateways):
    slack = await services(FakeSlack)
    target = {"name": "ops", "type": "slack", "url": slack.hook_url}
    gw = await gateways(config(tmp_path, {"targets": [target]}))
    await enqueue(gw, make_alert("fp-s1"), ["ops"])
    await wait_for(lambda: len(slack.hook_messages) == 1)
    assert slack.problems == []
    msg = slack.hook_messages[0]
    attachment = msg["attachments"][0]
    assert attachment["color"] == "#FF0000"
    kinds = [b["type"] for b in attachment["blocks"]]
    assert kinds[0] == "header" and "section" in kinds and "actions" in kinds
    buttons = next(b for b in attachment["blocks"] if b["type"] == "actions")["elements"]
    assert {b["url"] for b in buttons} == {
        "https://runbooks.example/disk",
        "http://prometheus.example/graph?g0.expr=disk",
    }


@pytest.mark.parametrize("resolve", ["update", "thread"])
async def test_slack_bot_resolves_by_update_or_thread_reply(tmp_path, services, gateways, resolve):
    slack = await services(FakeSlack)
    target = {"name": "ops", "type": "slack", "url": slack.hook_url, "api_url": slack.url + "/api",
              "bot_token": slack.bot_token, "channel": "C0CHANNEL", "resolve": resolve}  # fmt: skip
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": FAST}))
    await enqueue(gw, make_alert("fp-s2"), ["ops"])
    await wait_for(lambda: len(slack.posted) == 1)
    await enqueue(gw, make_alert("fp-s2"), ["ops"])  # a repeat updates, never posts twice
    await wait_for(lambda: len(slack.updates) == 1)
    await enqueue(gw, make_alert("fp-s2", "resolved"), ["ops"])
    if resolve == "update":
        await wait_for(lambda: len(slack.updates) == 2)
        assert slack.updates[-1]["attachments"][0]["color"] == "#2EB67D"
        assert slack.replies == []
    else:
        await wait_for(lambda: len(slack.replies) == 1)
        assert slack.replies[0]["thread_ts"] == slack.updates[0]["ts"]
    assert len(slack.posted) == 1 and slack.hook_messages == []
    assert slack.problems == []


@pytest.mark.parametrize("kind", ["alert", "incident"])
async def test_rootly_create_remember_id_resolve(tmp_path, services, gateways, kind):
    rootly = await services(FakeRootly)
    target = {"name": "rootly", "type": "rootly", "url": rootly.url, "token": rootly.token,
              "kind": kind}  # fmt: skip
    gw = await gateways(config(tmp_path, {"targets": [target], "delivery": FAST}))
    await enqueue(gw, make_alert("fp-r1"), ["rootly"])
    created = rootly.alerts if kind == "alert" else rootly.incidents
    await wait_for(lambda: len(created) == 1)
    await enqueue(gw, make_alert("fp-r1"), ["rootly"])  # known id: not created again
    await enqueue(gw, make_alert("fp-r1", "resolved"), ["rootly"])
    await wait_for(lambda: len(rootly.resolved) == 1)
    assert rootly.resolved == list(created)
    assert len(created) == 1
    assert rootly.problems == []
    # a resolve without a create (never seen) is done, not retried forever
    await enqueue(gw, make_alert("fp-r-unknown", "resolved"), ["rootly"])
    await _drained(gw)
    if kind == "alert":
        attrs = next(iter(rootly.alerts.values()))
        assert attrs["deduplication_key"] == "fp-r1"
        assert {"key": "alertname", "value": "DiskFull"} in attrs["labels"]


async def _drained(gw) -> None:
    async def empty() -> bool:
        return not any(c.get("pending") for c in (await pending(gw)).values())

    for _ in range(200):
        if await empty():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs still pending: {await pending(gw)}")


async def test_webhook_alertmanager_envelope_with_classification(tmp_path, services, gateways):
    hook = await services(FakeWebhook)
    target = {"name": "wh", "type": "webhook", "url": hook.url + "/hook"}
    gw = await gateways(config(tmp_path, {"targets": [target]}))
    await enqueue(gw, make_alert("fp-w1"), ["wh"])
    await wait_for(lambda: len(hook.accepted) == 1)
    body = hook.accepted[0]
    assert body["classification"]["severity"] == "critical"
    item = body["alerts"][0]
    assert item["fingerprint"] == "fp-w1" and item["annotations"]["llm_severity"] == "critical"
    assert hook.keys == {"fp-w1:firing:2026-11-20T10:00:00Z": 1}
    assert hook.problems == []


async def test_fan_out_to_several_targets_in_parallel(tmp_path, services, gateways):
    slow = await services(FakeWebhook)
    slow.hold = asyncio.Event()  # the slow target answers only once the fast ones got theirs
    fast = [await services(FakeWebhook) for _ in range(2)]
    targets = [{"name": "slow", "type": "webhook", "url": slow.url + "/hook"}] + [
        {"name": f"fast{i}", "type": "webhook", "url": f.url + "/hook"} for i, f in enumerate(fast)
    ]
    gw = await gateways(config(tmp_path, {"targets": targets}))
    await enqueue(gw, make_alert("fp-fan"), ["slow", "fast0", "fast1"])
    await wait_for(lambda: len(slow.requests) == 1)
    await wait_for(lambda: all(len(f.accepted) == 1 for f in fast))  # while slow still holds
    assert slow.accepted == []
    slow.hold.set()
    await wait_for(lambda: len(slow.accepted) == 1)


async def test_backend_jobs_go_through_the_route_split_and_fallback(tmp_path, services, gateways):
    legacy = await services(FakeWebhook)  # serves POST /hook only
    data = config(
        tmp_path,
        {"history": {"path": "/hook"}},
        backends={"down": "http://127.0.0.1:9", "legacy": legacy.url},
    )
    gw = await gateways(data)
    await enqueue(gw, make_alert("fp-b1"), ["backend:default"])
    await wait_for(lambda: len(legacy.accepted) == 1)
    assert legacy.accepted[0]["alerts"][0]["fingerprint"] == "fp-b1"
    assert legacy.requests[0]["headers"]["Idempotency-Key"].startswith("fp-b1:")


async def test_test_endpoint_reports_the_target_answer(tmp_path, services, gateways):
    pd = await services(FakePagerDuty)
    target = {"name": "pd", "type": "pagerduty", "url": pd.url + "/v2/enqueue",
              "routing_key": "WRONG-KEY-0000"}  # fmt: skip
    gw = await gateways(config(tmp_path, {"targets": [target]}))
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/publishing/test/pd") as resp:
            body = await resp.json()
        async with http.post(gw.url + "/publishing/test/nope") as resp:
            assert resp.status == 404
            assert "Target 'nope' not found" in (await resp.json())["error"]["message"]
    assert resp.status == 404
    assert body["success"] is False and body["status_code"] == 400
    assert body["target_name"] == "pd" and body["fingerprint"].startswith("test-pd-")
    assert "WRONG-KEY" not in str(body)
    assert pd.requests[0]["body"]["payload"]["severity"] == "info"


async def test_webhook_proxy_to_pagerduty_and_history_end_to_end(tmp_path, services, gateways):
    """Alertmanager -> POST /webhook/proxy -> outbox -> PagerDuty and the history backend."""
    pd = await services(FakePagerDuty)
    pd.down = True  # accepted while PagerDuty is down; delivered once it is back
    history = await services(FakeWebhook)
    target = {"name": "pd", "type": "pagerduty", "url": pd.url + "/v2/enqueue",
              "routing_key": pd.routing_key}  # fmt: skip
    data = config(
        tmp_path,
        {
            "targets": [target],
            "history": {"path": "/hook"},
            "delivery": {**FAST, "breaker": {"failures": 5, "open_for": "100ms"}},
        },
        backends={"legacy": history.url},
    )
    data["alerts"] = {"routing": {"targets": ["pd"]}, "forward_to_route": "default"}
    gw = await gateways(data)
    payload = SAMPLE
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # Alertmanager sometimes delivers a group twice
            async with http.post(gw.url + "/webhook/proxy", json=payload) as resp:
                assert resp.status == 200
    fingerprints = {a["fingerprint"] for a in payload["alerts"]}
    await wait_for(lambda: len(history.accepted) == len(fingerprints))
    # what Alertmanager grouped by reaches the receiver
    assert [b["groupLabels"] for b in history.accepted] == [{"alertname": "DiskFull"}] * 2
    await wait_for(lambda: len(pd.requests) >= 2)
    pd.down = False
    await wait_for(lambda: set(pd.triggers) == fingerprints)
    assert sorted(pd.triggers.values()) == [1] * len(fingerprints)
    assert pd.problems == [] and history.problems == []


SAMPLE = {
    "version": "4",
    "groupKey": "{}:{alertname=\"DiskFull\"}",
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "cutover",
    "groupLabels": {"alertname": "DiskFull"},
    "commonLabels": {"alertname": "DiskFull"},
    "commonAnnotations": {},
    "externalURL": "http://am.example",
    "alerts": [
        {"status": "firing", "labels": {"alertname": "DiskFull", "severity": "critical",
                                        "instance": f"node-{i}"},
         "annotations": {"summary": "disk full"}, "startsAt": "2026-11-20T10:00:00Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom.example/g",
         "fingerprint": f"d15cf011{i}"}
        for i in range(2)
    ],
}  # fmt: skip
