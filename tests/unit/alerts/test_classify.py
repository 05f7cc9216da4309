"""alerts.classify: the rules, secret redaction, the prompt, and checking LLM answers."""

from __future__ import annotations

import json
import re
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.alerts.classify import (
    DEFAULT_SECRET_PATTERNS,
    CategoryRule,
    RulesConfig,
    build_prompt,
    classify_by_rules,
    first_match,
    normalize_severity,
    parse_llm_answer,
    redact,
)
from cutover.alerts.model import Alert

PATTERNS = tuple(re.compile(p) for p in DEFAULT_SECRET_PATTERNS)


def alert(status="firing", annotations=None, **labels) -> Alert:
    return Alert(
        fingerprint="fp",
        status=status,
        labels=MappingProxyType({"alertname": "Something", **labels}),
        annotations=MappingProxyType(annotations or {}),
    )


@pytest.mark.parametrize(
    ("labels", "status", "severity", "confidence"),
    [
        ({"severity": "critical"}, "firing", "critical", 0.7),
        ({"severity": "ERROR"}, "firing", "critical", 0.7),
        ({"severity": "warn"}, "firing", "warning", 0.7),
        ({"severity": "debug"}, "firing", "info", 0.7),
        ({"severity": "trace"}, "firing", "noise", 0.7),
        ({"severity": "bogus", "priority": "P1"}, "firing", "critical", 0.7),
        ({"priority": "p3"}, "firing", "info", 0.7),
        ({"priority": "medium"}, "firing", "warning", 0.7),
        ({}, "firing", "warning", 0.4),
        ({}, "resolved", "info", 0.4),
        ({"alertname": "ServiceDown"}, "firing", "critical", 0.5),
        ({"alertname": "NodeDown", "severity": "critical"}, "firing", "critical", 0.8),
    ],
)
def test_rules_severity_and_confidence(labels, status, severity, confidence) -> None:
    c = classify_by_rules(alert(status, **labels))
    assert (c.severity, c.confidence, c.source) == (severity, confidence, "rules")
    assert c.reasoning


def test_rules_categories_are_configurable() -> None:
    rules = RulesConfig(
        categories=(
            CategoryRule("payments", labels=(("team", re.compile("pay.*")),)),
            CategoryRule("disk", alertname=re.compile("Disk.*")),
        ),
        default_category="other",
    )
    assert classify_by_rules(alert(team="payments-eu"), rules).category == "payments"
    assert classify_by_rules(alert(alertname="DiskFull"), rules).category == "disk"
    assert classify_by_rules(alert(alertname="XDiskFull"), rules).category == "other"
    assert classify_by_rules(alert(alertname="NodeDown")).category == "infrastructure"
    assert classify_by_rules(alert(alertname="HighCPUUsage")).category == "resource"


def test_rules_recommend_the_runbook() -> None:
    c = classify_by_rules(alert(annotations={"runbook_url": "http://rb/1"}))
    assert c.recommendations == ("Follow the runbook: http://rb/1",)


def test_normalize_severity_unknown() -> None:
    assert normalize_severity("  Critical ") == "critical"
    assert normalize_severity("sometimes") is None


@pytest.mark.parametrize(
    "value",
    [
        "Bearer abcdefghijklmnop",
        "sk-" + "a" * 40,
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_" + "x" * 36,
        "xoxb-1234567890-abc",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig",
        "-----BEGIN RSA PRIVATE KEY-----",
        "postgres://user:pw@db:5432/x",
        "password=hunter2",
        "f" * 40,
    ],
)
def test_secret_values_are_redacted(value) -> None:
    assert redact({"note": value}, PATTERNS) == {"note": "<redacted>"}


def test_redaction_by_name_and_harmless_values_kept() -> None:
    out = redact({"api_key": "short", "db_password": "x", "instance": "10.0.0.1:9100"}, PATTERNS)
    assert out == {
        "api_key": "<redacted>",
        "db_password": "<redacted>",
        "instance": "10.0.0.1:9100",
    }


def test_prompt_never_contains_secrets_and_has_a_stable_digest() -> None:
    a = alert(token_label="x", instance="i-1", annotations={"description": "key sk-" + "z" * 30})
    p = build_prompt(a, PATTERNS)
    text = json.dumps(p.messages)
    assert "sk-zzz" not in text and "<redacted>" in text and "i-1" in text
    assert p.digest == build_prompt(a, PATTERNS).digest and len(p.digest) == 64
    assert p.digest != build_prompt(alert(instance="i-2"), PATTERNS).digest


GOOD = {
    "severity": "critical",
    "category": "Database",
    "confidence": 0.9,
    "reasoning": " replica lag ",
    "recommendations": ["check replica", " ", *[f"r{i}" for i in range(10)]],
}


def test_parse_good_answer() -> None:
    c = parse_llm_answer(json.dumps(GOOD), "m1")
    assert not isinstance(c, str)
    assert (c.severity, c.category, c.confidence, c.source, c.model) == (
        "critical", "database", 0.9, "llm", "m1"
    )  # fmt: skip
    assert c.reasoning == "replica lag" and len(c.recommendations) == 5


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "[1]",
        json.dumps({k: v for k, v in GOOD.items() if k != "category"}),
        json.dumps(dict(GOOD, severity="high")),
        json.dumps(dict(GOOD, category="")),
        json.dumps(dict(GOOD, confidence=1.5)),
        json.dumps(dict(GOOD, confidence="0.5")),
        json.dumps(dict(GOOD, confidence=True)),
        json.dumps(dict(GOOD, reasoning=3)),
        json.dumps(dict(GOOD, recommendations="do it")),
        json.dumps(dict(GOOD, recommendations=[1])),
    ],
)
def test_malformed_answers(text) -> None:
    assert isinstance(parse_llm_answer(text, "m"), str)


_WORDS = st.sampled_from(["Node", "Down", "db", "prod", "CPU", "", "x", "TLS", "é"])
_RULES = st.lists(
    st.builds(
        CategoryRule,
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), _WORDS.map(lambda w: re.compile(f".*{re.escape(w)}.*", re.I))),
        st.lists(
            st.tuples(st.sampled_from(["team", "env"]), _WORDS.map(re.compile)), max_size=2
        ).map(tuple),
    ),
    max_size=4,
).map(lambda rules: RulesConfig(categories=tuple(rules)))
_LABELS = st.dictionaries(st.sampled_from(["alertname", "team", "env", "other"]), _WORDS)


@given(_RULES, st.lists(_LABELS, max_size=6))
@settings(max_examples=300, deadline=None)
def test_remembered_category_equals_trying_every_rule(rules, label_sets) -> None:
    # Twice each (the second answer remembered), alerts that differ in a label some rule reads
    # and in one no rule reads: the first matching rule in order, every time.
    for labels in [*label_sets, *label_sets]:
        a = alert(**labels)
        assert first_match(a, rules) is next((r for r in rules.categories if r.matches(a)), None)


def test_remembered_categories_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import cutover.alerts.classify as classify

    monkeypatch.setattr(classify, "_matched", {})
    monkeypatch.setattr(classify, "_MATCHED_MAX", 20)
    rule_sets = [RulesConfig(default_category=str(n)) for n in range(10)]
    for rules in rule_sets:
        for n in range(200):
            assert classify_by_rules(alert(alertname=f"Disk{n}"), rules).category == "resource"
    assert len(classify._matched) == classify._RULE_SETS_MAX
    assert all(len(memo) == 20 for _, _, memo in classify._matched.values())
