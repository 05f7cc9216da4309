"""alerts.routes: deepest match wins, continue, inheritance, default."""

from __future__ import annotations

from types import MappingProxyType

from cutover.alerts.matchers import parse_matcher
from cutover.alerts.model import Alert, Classification
from cutover.alerts.routes import AlertRoute, all_targets, route_alert, route_facts


def node(*matchers, targets=None, cont=False, routes=(), name="") -> AlertRoute:
    return AlertRoute(tuple(parse_matcher(x) for x in matchers), targets, cont, tuple(routes), name)


TREE = AlertRoute(
    targets=("slack-general",),
    name="root",
    routes=(
        node('severity="critical"', targets=("pagerduty",), cont=True, name="crit",
             routes=(node('team="db"', targets=("pagerduty-db",), name="crit-db"),
                     node('team="web"', name="crit-web"))),
        node('classification.category="security"', targets=("slack-security",), name="sec"),
        node('team="db"', targets=("slack-db",), name="db"),
    ),
)  # fmt: skip


def alert(classification=None, **labels) -> Alert:
    return Alert("fp", "firing", MappingProxyType({"alertname": "A", **labels}),
                 classification=classification)  # fmt: skip


SEC = Classification("critical", "security", 0.9)


def test_default_when_nothing_matches() -> None:
    assert route_alert(alert(), TREE) == ("slack-general",)


def test_deepest_match_wins() -> None:
    targets, ends = route_facts({"severity": "critical", "team": "db"}, TREE)
    # crit-db is deeper than crit, so crit's own target is not used; crit has `continue`, so
    # the root's next matching child (db) applies as well.
    assert ends == ("crit-db", "db")
    assert targets == ("pagerduty-db", "slack-db")


def test_continue_keeps_matching_siblings() -> None:
    assert route_alert(alert(SEC, severity="critical"), TREE) == ("pagerduty", "slack-security")


def test_siblings_skipped_without_continue() -> None:
    # "sec" matches without continue, so "db" is never looked at.
    assert route_alert(alert(SEC, team="db"), TREE) == ("slack-security",)


def test_child_inherits_parent_targets() -> None:
    assert route_alert(alert(severity="critical", team="web"), TREE) == ("pagerduty",)


def test_continue_from_deep_path_then_sibling() -> None:
    # crit (continue) -> crit-db; then the next root child that matches (db) also applies.
    tree = AlertRoute(
        targets=("default",),
        routes=(
            node('severity="critical"', targets=("pd",), cont=True,
                 routes=(node('team="db"', targets=("pd-db",)),)),
            node('team="db"', targets=("slack-db",)),
        ),
    )  # fmt: skip
    assert route_alert(alert(severity="critical", team="db"), tree) == ("pd-db", "slack-db")


def test_empty_root_routes_nowhere() -> None:
    assert route_alert(alert(), AlertRoute()) == ()


def test_all_targets() -> None:
    assert all_targets(TREE) == (
        "slack-general", "pagerduty", "pagerduty-db", "slack-security", "slack-db"
    )  # fmt: skip
