"""Alertmanager-style matchers on an alert's labels and classification. Pure.

A matcher is `name op value`, written as Alertmanager writes it: `severity="critical"`,
`team!="db"`, `alertname=~"Node.*"`, `namespace!~"test-.*"`. Regexes are anchored at both ends
(`=~"a|b"` matches exactly `a` or `b`), and a missing label reads as "" (so `team=""` matches an
alert without a `team` label), as in Alertmanager.

Names are label names, or one of the alert's fields (never labels, since label names have no dot):

    alert.status               firing | resolved
    alert.fingerprint
    classification.severity    critical | warning | info | noise ("" when not classified)
    classification.category
    classification.confidence  0..1 ("" when not classified)
    classification.source      rules | llm | default

`<`, `<=`, `>`, `>=` compare numbers (`classification.confidence<"0.5"`); a value that is not a
number never matches them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from cutover.alerts.model import Alert

__all__ = ["FIELDS", "Matcher", "alert_facts", "matches_all", "parse_matcher"]

Op = Literal["=", "!=", "=~", "!~", "<", "<=", ">", ">="]
FIELDS = (
    "alert.status",
    "alert.fingerprint",
    "classification.severity",
    "classification.category",
    "classification.confidence",
    "classification.source",
)
_MATCHER = re.compile(
    r"\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*(=~|!~|!=|<=|>=|=|<|>)\s*(.*?)\s*"
)
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = None  # compiled, anchored, for =~ and !~

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'

    def matches(self, facts: Mapping[str, str]) -> bool:
        actual = facts.get(self.name, "")
        op = self.op
        if op == "=":
            return actual == self.value
        if op == "!=":
            return actual != self.value
        if op == "=~":
            return self.pattern is not None and self.pattern.fullmatch(actual) is not None
        if op == "!~":
            return self.pattern is not None and self.pattern.fullmatch(actual) is None
        try:
            left, right = float(actual), float(self.value)
        except ValueError:
            return False
        if not (math.isfinite(left) and math.isfinite(right)):
            return False
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        return left >= right


def _unquote(text: str) -> str | None:
    """A double-quoted value with \\" and \\\\ escapes, or an unquoted one; None if malformed."""
    if not text.startswith('"'):
        return None if '"' in text else text
    if len(text) < 2 or not text.endswith('"'):
        return None
    out: list[str] = []
    i = 1
    while i < len(text) - 1:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) - 1:
                return None
            nxt = text[i + 1]
            out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
            i += 2
            continue
        if ch == '"':
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def parse_matcher(text: str) -> Matcher | str:
    """A `Matcher`, or what was wrong with `text` (a message for the config error)."""
    m = _MATCHER.fullmatch(text)
    if m is None:
        return 'a matcher such as severity="critical", team!="db", alertname=~"Node.*"'
    name, op, raw = m.groups()
    if "." in name and name not in FIELDS:
        return f"a label name, or one of the fields {', '.join(FIELDS)}"
    value = _unquote(raw)
    if value is None:
        return 'a value in double quotes (escape " as \\")'
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(f"(?:{value})")
        except re.error as exc:
            return f"a valid regular expression ({exc})"
    if op in ("<", "<=", ">", ">="):
        try:
            float(value)
        except ValueError:
            return f"a number after {op}"
    return Matcher(name=name, op=op, value=value, pattern=pattern)  # type: ignore[arg-type]


def alert_facts(alert: Alert) -> dict[str, str]:
    """What matchers read: the labels plus the alert's and its classification's fields."""
    facts = dict(alert.labels)
    facts["alert.status"] = alert.status
    facts["alert.fingerprint"] = alert.fingerprint
    c = alert.classification
    if c is not None:
        facts["classification.severity"] = c.severity
        facts["classification.category"] = c.category
        facts["classification.confidence"] = repr(float(c.confidence))
        facts["classification.source"] = c.source
    return facts


def matches_all(matchers: Sequence[Matcher], facts: Mapping[str, str]) -> bool:
    """True when every matcher holds (an empty list matches everything)."""
    return all(m.matches(facts) for m in matchers)


def is_label_name(text: str) -> bool:
    return _LABEL.fullmatch(text) is not None
