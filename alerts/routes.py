"""Which publishing targets an alert goes to: an Alertmanager-like routing tree. Pure.

The root matches every alert and its `targets` are the default. Children are tried in order;
matching goes down as long as a child matches, so the deepest match wins; after a matching
child the siblings that follow are skipped unless that child has `continue: true`. A node
without its own `targets` inherits its parent's. The result is the targets of every node where
matching ended, in order, each target once.

    root (targets: [slack-general])
     ├── severity="critical"            targets: [pagerduty], continue: true
     │    └── team="db"                 targets: [pagerduty-db]
     └── classification.category="security"  targets: [slack-security]

A critical db alert goes to pagerduty-db (deepest) only; a critical security alert to pagerduty
and slack-security (continue); anything else to slack-general.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cutover.alerts.matchers import Matcher, alert_facts, matches_all
from cutover.alerts.model import Alert

__all__ = ["AlertRoute", "all_targets", "route_alert", "route_facts"]


@dataclass(frozen=True, slots=True)
class AlertRoute:
    matchers: tuple[Matcher, ...] = ()
    targets: tuple[str, ...] | None = None  # None: inherit the parent's
    continue_: bool = False
    routes: tuple[AlertRoute, ...] = ()
    name: str = ""  # for explanations ("routing.routes[1]")


def route_facts(
    facts: Mapping[str, str], root: AlertRoute
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(targets, names of the nodes where matching ended) for these matcher facts."""
    ends: list[tuple[AlertRoute, tuple[str, ...]]] = []
    _walk(root, facts, root.targets or (), ends)
    targets: list[str] = []
    for _, found in ends:
        for t in found:
            if t not in targets:
                targets.append(t)
    return tuple(targets), tuple(node.name for node, _ in ends)


def route_alert(
    alert: Alert, root: AlertRoute, facts: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The target names for `alert` (classified or not); `facts`: its `alert_facts`, when the
    caller has them already."""
    return route_facts(alert_facts(alert) if facts is None else facts, root)[0]


def _walk(
    node: AlertRoute,
    facts: Mapping[str, str],
    inherited: tuple[str, ...],
    ends: list[tuple[AlertRoute, tuple[str, ...]]],
) -> None:
    targets = node.targets if node.targets is not None else inherited
    matched_child = False
    for child in node.routes:
        if not matches_all(child.matchers, facts):
            continue
        matched_child = True
        _walk(child, facts, targets, ends)
        if not child.continue_:
            break
    if not matched_child:
        ends.append((node, targets))


def all_targets(root: AlertRoute) -> tuple[str, ...]:
    """Every target named anywhere in the tree (for `transparent_with_recommendations`)."""
    out: list[str] = []

    def visit(node: AlertRoute) -> None:
        for t in node.targets or ():
            if t not in out:
                out.append(t)
        for child in node.routes:
            visit(child)

    visit(root)
    return tuple(out)
