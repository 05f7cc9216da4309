"""alerts.filters: priorities, first match, deny, delay (firing only), default."""

from __future__ import annotations

from types import MappingProxyType

from cutover.alerts.filters import FilterRule, FilterSet, release
from cutover.alerts.matchers import parse_matcher
from cutover.alerts.model import Alert, Classification


def rule(name, action, *matchers, priority=100, delay=0.0, enabled=True) -> FilterRule:
    return FilterRule(
        name, action, tuple(parse_matcher(x) for x in matchers), priority, delay, enabled
    )


def alert(status="firing", classification=None, **labels) -> Alert:
    return Alert("fp", status, MappingProxyType({"alertname": "A", **labels}),
                 classification=classification)  # fmt: skip


NOISE = Classification("noise", "test", 0.9)


def test_priority_order_first_match_decides() -> None:
    fs = FilterSet(
        [
            rule("deny-noise", "deny", 'classification.severity="noise"', priority=10),
            rule("allow-critical", "allow", 'severity="critical"', priority=1),
            rule("hold-warn", "delay", 'severity="warning"', priority=20, delay=120),
        ]
    )
    assert fs.decide(alert(severity="critical", classification=NOISE), 0).rule == "allow-critical"
    d = fs.decide(alert(severity="info", classification=NOISE), 0)
    assert (d.action, d.rule) == ("deny", "deny-noise")
    d = fs.decide(alert(severity="warning"), 1000)
    assert (d.action, d.rule, d.release_at) == ("delay", "hold-warn", 1120)
    d = fs.decide(alert(severity="info"), 0)
    assert (d.action, d.rule, d.publish_now) == ("allow", None, True)


def test_ties_keep_written_order_and_disabled_rules_skip() -> None:
    fs = FilterSet([rule("a", "deny", priority=5), rule("b", "allow", priority=5)])
    assert fs.decide(alert(), 0).rule == "a"
    fs = FilterSet([rule("a", "deny", priority=5, enabled=False), rule("b", "allow", priority=5)])
    assert fs.decide(alert(), 0).rule == "b"


def test_resolved_alerts_are_never_delayed() -> None:
    fs = FilterSet([rule("hold", "delay", delay=60)])
    d = fs.decide(alert("resolved"), 0)
    assert (d.action, d.rule, d.release_at) == ("allow", "hold", None)


def test_default_deny() -> None:
    fs = FilterSet([rule("ok", "allow", 'team="db"')], default="deny")
    assert fs.decide(alert(team="db"), 0).action == "allow"
    assert fs.decide(alert(team="web"), 0).action == "deny"


def test_unclassified_alerts_do_not_match_classification_rules() -> None:
    fs = FilterSet([rule("low", "deny", 'classification.confidence<"0.5"')])
    assert fs.decide(alert(), 0).action == "allow"
    low = Classification("info", "x", 0.2)
    assert fs.decide(alert(classification=low), 0).action == "deny"


def test_release() -> None:
    assert release(resolved_meanwhile=False) == "publish"
    assert release(resolved_meanwhile=True) == "cancel"
