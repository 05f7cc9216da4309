"""The three secret layouts (spec digest §5.2) and broken secrets."""

from __future__ import annotations

import base64

import orjson
import pytest

from cutover.publishing.secrets import layout_of, parse_secret
from cutover.publishing.targets import InvalidTarget, TargetSpec


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def enc(data: dict[str, str]) -> dict[str, str]:
    return {k: b64(v) for k, v in data.items()}


def test_kebab_case_layout_python_and_helm():
    t = parse_secret("monitoring", "s1", enc({
        "target-name": "rootly-prod", "webhook-url": "https://api.rootly.com",
        "format": "rootly", "api-key": "rk-1", "header-X-Team": "sre", "enabled": "true",
    }))  # fmt: skip
    assert isinstance(t, TargetSpec)
    assert (t.name, t.type, t.format, t.token) == ("rootly-prod", "rootly", "rootly", "rk-1")
    assert t.headers == (("X-Team", "sre"),) and t.source == "kubernetes"
    assert t.origin == "monitoring/s1"


def test_kebab_auth_header_token_and_defaults():
    t = parse_secret("ns", "plain", enc({"url": "http://h.example/x", "token": "tk"}))
    assert t.name == "plain" and t.type == "webhook" and t.format == "alertmanager"
    assert t.headers == (("Authorization", "Token tk"),)
    pd = {"url": "https://events.pagerduty.com/v2/enqueue", "format": "pagerduty",
          "auth-header": "Bearer RK"}  # fmt: skip
    t = parse_secret("ns", "pd", enc(pd))
    assert t.routing_key == "RK" and t.headers == ()  # the Go publisher's fallback


def test_snake_case_layout_go_infra():
    t = parse_secret("ns", "s2", enc({
        "name": "slack-ops", "type": "slack", "url": "https://hooks.slack.com/services/a",
        "headers": "X-A=1, X-B=2", "enabled": "false",
    }))  # fmt: skip
    assert (t.name, t.type, t.enabled) == ("slack-ops", "slack", False)
    assert t.headers == (("X-A", "1"), ("X-B", "2"))
    t = parse_secret("ns", "s3", enc({"type": "webhook", "url": "http://h.example/",
                                      "api_key": "k9", "timeout": "5s"}))  # fmt: skip
    assert t.headers == (("Authorization", "Bearer k9"),) and t.timeout == 5.0


@pytest.mark.parametrize("raw", [False, True])
def test_config_json_layout_raw_or_base64(raw):
    doc = orjson.dumps({"name": "wh-json", "type": "webhook", "url": "http://h.example/",
                        "format": "webhook", "headers": {"X-K": "v"}}).decode()  # fmt: skip
    value = doc if raw else b64(doc)
    t = parse_secret("ns", "s4", {"config": b64(value)})
    assert (t.name, t.format, t.headers) == ("wh-json", "webhook", (("X-K", "v"),))
    assert parse_secret("ns", "s5", {"target.json": b64(doc)}).name == "wh-json"


def test_labels_fill_in_name_and_type():
    t = parse_secret("ns", "s6", enc({"url": "https://api.rootly.com", "token": "x"}),
                     labels={"alert-history.io/target-name": "from-label",
                             "alert-history.io/format": "rootly"})  # fmt: skip
    assert t.name == "from-label" and t.type == "rootly"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"url": "!!notbase64"}, "url", "base64-encoded UTF-8 text"),
        (enc({"type": "webhook", "url": "ftp://x"}), "url", "an http:// or https:// URL"),
        (enc({"type": "fax", "url": "http://x"}), "type", "one of pagerduty"),
        (enc({"name": "x", "url": "http://x"}), "type", "the target type"),
        (enc({"type": "pagerduty"}), "routing_key", "routing key"),
        (enc({"config": "{not json"}), "config", "a JSON object"),
        (enc({"config": "[1]"}), "config", "a JSON object"),
        (enc({"config": '{"type": "webhook", "url": "http://x", "name": "Bad Name!"}'}),
         "config.name", "a name of"),
        (enc({"url": "http://x", "enabled": "maybe"}), "enabled", "true or false"),
        (enc({"url": "http://x", "format": "slack", "channel": ""}), "url", ""),
        (enc({"url": "http://x", "header-X": "a\nb"}), "header-X", "header value"),
        (enc({"type": "webhook", "url": "http://x", "headers": "novalue"}),
         "headers", "name=value"),
    ],
)  # fmt: skip
def test_broken_secrets_name_the_field(data, field, reason):
    if field == "url" and reason == "":  # a slack format without a URL is fine: it has one
        assert isinstance(parse_secret("ns", "b", data), TargetSpec)
        return
    bad = parse_secret("ns", "broken", data)
    assert isinstance(bad, InvalidTarget), bad
    assert bad.field == field and reason in bad.reason
    assert bad.origin == "ns/broken"


def test_values_never_in_reasons():
    bad = parse_secret("ns", "b", enc({"type": "webhook", "url": "ftp://user:SECRETPW@h"}))
    assert "SECRETPW" not in bad.reason


def test_layouts_can_be_limited():
    bad = parse_secret("ns", "b", enc({"url": "http://x"}), layouts=("config",))
    assert isinstance(bad, InvalidTarget) and "layouts config" in bad.reason


def test_layout_detection():
    assert layout_of({"config": "{}"}) == "config"
    assert layout_of({"target-name": "a"}) == "kebab-case"
    assert layout_of({"webhook-url": "a"}) == "kebab-case"
    assert layout_of({"type": "a", "url": "b"}) == "snake_case"
    assert layout_of({"url": "b"}) == "kebab-case"
