"""Filter rules: allow, deny or delay an alert before it is published. Pure.

Rules are tried by `priority`, lowest first (ties keep their written order); the first enabled
rule whose matchers all hold decides. No match means `default` (allow). Matchers are
Alertmanager-style, on labels and on the classification (`alerts.matchers`).

`delay` holds a firing alert for the rule's delay: it is published when the delay is over unless
the same alert (fingerprint) resolved meanwhile, in which case neither the firing nor the resolve
is published (a blip nobody needs to hear of). A resolved alert is never delayed: a delay rule
lets it through, so that a resolve is never later than it needs to be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cutover.alerts.matchers import Matcher, alert_facts, matches_all
from cutover.alerts.model import Alert

__all__ = ["Action", "FilterDecision", "FilterRule", "FilterSet", "decide"]

Action = Literal["allow", "deny", "delay"]
ACTIONS: tuple[Action, ...] = ("allow", "deny", "delay")


@dataclass(frozen=True, slots=True)
class FilterRule:
    name: str
    action: Action
    matchers: tuple[Matcher, ...] = ()
    priority: int = 100
    delay: float = 0.0  # seconds, for action delay
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class FilterDecision:
    action: Action
    rule: str | None  # the rule that decided; None for the default
    release_at: float | None = None  # for delay: when to publish (same clock as `now`)

    @property
    def publish_now(self) -> bool:
        return self.action == "allow"


class FilterSet:
    """Rules sorted once, by priority then written order."""

    def __init__(self, rules: Sequence[FilterRule] = (), default: Action = "allow") -> None:
        indexed = sorted(enumerate(rules), key=lambda pair: (pair[1].priority, pair[0]))
        self.rules: tuple[FilterRule, ...] = tuple(r for _, r in indexed if r.enabled)
        self.default: Action = "deny" if default == "deny" else "allow"

    def decide(
        self, alert: Alert, now: float, facts: Mapping[str, str] | None = None
    ) -> FilterDecision:
        return decide(self, alert, now, facts)


def decide(
    filters: FilterSet, alert: Alert, now: float, facts: Mapping[str, str] | None = None
) -> FilterDecision:
    """What to do with `alert` (classified or not) at time `now`. `facts`: its
    `alert_facts`, when the caller has them already (routing reads the same)."""
    if not filters.rules:
        return FilterDecision(filters.default, None)
    if facts is None:
        facts = alert_facts(alert)
    for rule in filters.rules:
        if not matches_all(rule.matchers, facts):
            continue
        if rule.action == "delay":
            if alert.status == "resolved" or rule.delay <= 0:
                return FilterDecision("allow", rule.name)
            return FilterDecision("delay", rule.name, now + rule.delay)
        return FilterDecision(rule.action, rule.name)
    return FilterDecision(filters.default, None)


def release(resolved_meanwhile: bool) -> Literal["publish", "cancel"]:
    """What happens to a delayed alert once its delay is over."""
    return "cancel" if resolved_meanwhile else "publish"
