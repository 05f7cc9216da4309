"""alerts.matchers: Alertmanager matcher syntax and semantics, classification fields."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from cutover.alerts.matchers import Matcher, alert_facts, matches_all, parse_matcher
from cutover.alerts.model import Alert, Classification


def m(text: str) -> Matcher:
    parsed = parse_matcher(text)
    assert isinstance(parsed, Matcher), parsed
    return parsed


@pytest.mark.parametrize(
    ("text", "facts", "expected"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ('severity="critical"', {"severity": "warning"}, False),
        ("severity=critical", {"severity": "critical"}, True),
        ('team=""', {}, True),  # a missing label reads as ""
        ('team!=""', {}, False),
        ('team!="db"', {"team": "web"}, True),
        ('team!="db"', {}, True),
        ('alertname=~"Node.*"', {"alertname": "NodeDown"}, True),
        ('alertname=~"Node"', {"alertname": "NodeDown"}, False),  # anchored at both ends
        ('alertname=~"a|b"', {"alertname": "ab"}, False),
        ('alertname=~"a|b"', {"alertname": "b"}, True),
        ('namespace!~"test-.*"', {"namespace": "test-1"}, False),
        ('namespace!~"test-.*"', {"namespace": "prod"}, True),
        ('msg="say \\"hi\\""', {"msg": 'say "hi"'}, True),
        ('classification.confidence<"0.5"', {"classification.confidence": "0.3"}, True),
        ('classification.confidence<"0.5"', {"classification.confidence": "0.7"}, False),
        ('classification.confidence<"0.5"', {}, False),  # not classified: never below
        ("classification.confidence>=0.5", {"classification.confidence": "0.5"}, True),
        ('x>"1"', {"x": "abc"}, False),
    ],
)
def test_matching(text, facts, expected) -> None:
    assert m(text).matches(facts) is expected


@pytest.mark.parametrize(
    "text",
    ['severity=="x"', "=x", 'a="unterminated', 'foo.bar="1"', 'a=~"("', 'a<"x"', "a b", 'a="x"y"'],
)
def test_bad_matchers(text) -> None:
    assert isinstance(parse_matcher(text), str)


def test_alert_facts_and_matches_all() -> None:
    alert = Alert(
        fingerprint="f1",
        status="resolved",
        labels=MappingProxyType({"alertname": "A", "team": "db"}),
        classification=Classification("noise", "test", 0.25, source="llm"),
    )
    facts = alert_facts(alert)
    assert facts["alert.status"] == "resolved" and facts["alert.fingerprint"] == "f1"
    assert facts["classification.severity"] == "noise"
    assert facts["classification.source"] == "llm"
    assert matches_all([m('team="db"'), m('classification.confidence<"0.3"')], facts)
    assert not matches_all([m('team="db"'), m('alert.status="firing"')], facts)
    assert matches_all([], facts)
    unclassified = alert_facts(Alert("f", "firing", MappingProxyType({"alertname": "A"})))
    assert "classification.severity" not in unclassified
    assert m('classification.severity=""').matches(unclassified)


def test_str_round_trips() -> None:
    for text in ('a="x"', 'b!~"y.*"', 'c=~"q\\"z"'):
        assert str(m(text)) == text
