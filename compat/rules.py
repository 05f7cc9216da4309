"""Compat rules: what a legacy request matches and what is done with it. Pure data and decisions.

A rule matches a method, one of its path templates (`/alerts/{id}`) and optional query/header
conditions. Then, in order of precedence:

- `gone`: the gateway answers (410 by default) with JSON naming the replacement and the guide;
- `health`: the gateway answers from its own readiness;
- otherwise the request is proxied through its route (split and fallback), except that
  `keep_on_legacy` pins it to the legacy backend; per backend role (`new`, `legacy`, `any`) a
  `fan_out` splits it into several requests, or a `rewrite` changes its path, query and body and
  transforms the answer. A backend with no rewrite for its role gets the request as it came.

Every rule's answers carry its deprecation headers (precomputed) unless it is not deprecated.
Backends are named by role so that a profile works whatever the backends are called; the
`compat` section maps roles to backend names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from cutover.compat.deprecation import Deprecation, deprecation_headers
from cutover.compat.jsonops import Facts, Op, StatusSet, apply
from cutover.compat.paths import PathTemplate, TargetPath
from cutover.compat.query import QOp, decode_query, encode_query, rewrite_query

__all__ = [
    "ROLES",
    "Condition",
    "FanOut",
    "Fill",
    "Gone",
    "Health",
    "Hit",
    "ResponseTransform",
    "Rewrite",
    "Role",
    "Rule",
    "RuleMatch",
    "RuleSet",
    "render_template",
]

Role = Literal["new", "legacy", "any"]
ROLES: tuple[str, ...] = ("new", "legacy", "any")


@dataclass(frozen=True, slots=True)
class Condition:
    """One query parameter or header: present, absent, equal to a value, or matching a regex."""

    name: str  # header names lowercased
    present: bool = True
    equals: str | None = None
    regex: re.Pattern[str] | None = None

    def holds(self, value: str | None) -> bool:
        if value is None:
            return not self.present
        if not self.present:
            return False
        if self.equals is not None and value != self.equals:
            return False
        return self.regex is None or self.regex.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class RuleMatch:
    paths: tuple[PathTemplate, ...]
    methods: frozenset[str] | None = None  # None: any method
    query: tuple[Condition, ...] = ()
    headers: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class Fill:
    """A body for an answer that has none (`empty`) or whose body is not JSON (`not_json`): a
    JSON template (`{status}`, and `{text}` for the answer's text), then the status's ops."""

    statuses: StatusSet
    body: Any
    empty: bool = True
    not_json: bool = False


@dataclass(frozen=True, slots=True)
class ResponseTransform:
    """What happens to a backend's answer: status codes mapped, JSON bodies transformed.

    The operations for a status are the most specific list: that code, then its class (`4xx`),
    then `body` (2xx) or `error_body` (the others).
    """

    status_map: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    body: tuple[Op, ...] = ()  # for 2xx answers
    error_body: tuple[Op, ...] = ()  # for the others
    by_code: Mapping[int, tuple[Op, ...]] = field(default_factory=lambda: MappingProxyType({}))
    by_class: Mapping[int, tuple[Op, ...]] = field(default_factory=lambda: MappingProxyType({}))
    fills: tuple[Fill, ...] = ()

    def status(self, status: int) -> int:
        return self.status_map.get(status, status)

    def ops_for(self, status: int) -> tuple[Op, ...]:
        """The body operations for a backend status (before mapping)."""
        ops = self.by_code.get(status)
        if ops is None:
            ops = self.by_class.get(status // 100)
        if ops is None:
            ops = self.body if 200 <= status < 300 else self.error_body
        return ops

    def fill_for(self, status: int, empty: bool) -> Fill | None:
        """The first fill for an answer of `status` that is empty (or else not JSON)."""
        for fill in self.fills:
            if (fill.empty if empty else fill.not_json) and fill.statuses.holds(status):
                return fill
        return None

    def reads(self, status: int) -> bool:
        """Whether an answer of `status` is read: operations or a fill apply to it."""
        if self.ops_for(status):
            return True
        return any(fill.statuses.holds(status) for fill in self.fills)

    def transform(self, status: int, doc: Any) -> Any:
        return apply(self.ops_for(status), doc, Facts(status))


@dataclass(frozen=True, slots=True)
class Rewrite:
    applies_to: Role = "any"
    path: TargetPath | None = None  # None: the path as sent
    query: tuple[QOp, ...] = ()
    body: tuple[Op, ...] = ()  # request body (JSON) operations
    response: ResponseTransform | None = None

    @property
    def changes_request(self) -> bool:
        return self.path is not None or bool(self.query)

    def target(self, raw_path: str, raw_query: str, params: Mapping[str, str]) -> str:
        """The raw path and query to send."""
        path = self.path.render(params) if self.path is not None else raw_path
        if self.query:
            pairs = rewrite_query(self.query, decode_query(raw_query), params)
            query = encode_query(pairs)
        else:
            query = raw_query
        return f"{path}?{query}" if query else path


@dataclass(frozen=True, slots=True)
class FanOut:
    """One request in, one request per item of the array at `items` out, answers combined."""

    applies_to: Role = "new"
    items: tuple[str, ...] = ("alerts",)  # JSON path of the array in the request body
    path: TargetPath | None = None  # None: the path as sent
    method: str = "POST"
    item_ops: tuple[Op, ...] = ()  # applied to each item before it is sent
    status: int = 200  # the combined answer's status when every part succeeded
    body: Any = None  # template of the combined answer ({count}, {succeeded}, ...)
    concurrency: int = 1  # parts in flight at once (1: one after another, in item order)


@dataclass(frozen=True, slots=True)
class Gone:
    status: int = 410
    message: str = "this endpoint was removed"
    replacement: str | None = None
    guide: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """The gateway answers from its readiness; bodies are templates ({now}, {now_rfc3339})."""

    ready_body: Any = None
    unready_body: Any = None
    unready_status: int = 503


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: RuleMatch
    deprecation: Deprecation | None = None  # None: not deprecated (no headers)
    gone: Gone | None = None
    health: Health | None = None
    keep_on_legacy: bool = False
    rewrites: tuple[Rewrite, ...] = ()  # at most one per role
    fan_out: FanOut | None = None
    headers: tuple[tuple[str, str], ...] = ()  # precomputed deprecation headers
    source: str = ""  # "compat.rules[0]" or "<profile file>: rules[3]", for messages

    @property
    def local(self) -> bool:
        """Answered by the gateway itself, without a backend."""
        return self.gone is not None or self.health is not None

    @property
    def sunset(self) -> int | None:
        return self.deprecation.sunset if self.deprecation is not None else None

    def rewrite_for(self, role: str | None) -> Rewrite | None:
        """The rewrite for a backend of `role` (a role-specific one before an `any` one)."""
        fallback = None
        for rw in self.rewrites:
            if rw.applies_to == role:
                return rw
            if rw.applies_to == "any":
                fallback = rw
        return fallback

    def fans_out_for(self, role: str | None) -> bool:
        fo = self.fan_out
        return fo is not None and (fo.applies_to == "any" or fo.applies_to == role)


def with_headers(rule: Rule) -> Rule:
    """`rule` with its deprecation headers computed (done once, at load)."""
    return Rule(
        name=rule.name,
        match=rule.match,
        deprecation=rule.deprecation,
        gone=rule.gone,
        health=rule.health,
        keep_on_legacy=rule.keep_on_legacy,
        rewrites=rule.rewrites,
        fan_out=rule.fan_out,
        headers=deprecation_headers(rule.deprecation),
        source=rule.source,
    )


@dataclass(frozen=True, slots=True)
class Hit:
    rule: Rule
    params: Mapping[str, str]


QueryLookup = Callable[[], Mapping[str, str]]


class RuleSet:
    """Rules in order; the first whose every condition holds wins.

    Literal paths are found by one dict lookup; templates are tried only when the path starts
    with their literal prefix. A request no rule can match costs a lookup and a few prefix tests.
    """

    __slots__ = ("_by_path", "_templates", "rules")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        by_path: dict[str, list[tuple[int, Rule, PathTemplate]]] = {}
        templates: list[tuple[int, Rule, PathTemplate]] = []
        for index, rule in enumerate(rules):
            for template in rule.match.paths:
                entry = (index, rule, template)
                if template.literal:
                    by_path.setdefault(template.text, []).append(entry)
                else:
                    templates.append(entry)
        self._by_path = {k: tuple(v) for k, v in by_path.items()}
        self._templates = tuple(templates)

    def match(
        self, method: str, path: str, query: QueryLookup, headers: Mapping[str, str]
    ) -> Hit | None:
        """The first rule for this request (`path` normalized as `core.http1.normalize_path`
        does, without the query; templates are normalized alike at load)."""
        best: tuple[int, Hit] | None = None
        for index, rule, _ in self._by_path.get(path, ()):
            if _conditions_hold(rule.match, method, query, headers):
                best = (index, Hit(rule, MappingProxyType({})))
                break
        for index, rule, template in self._templates:
            if best is not None and index >= best[0]:
                break
            params = template.match(path)
            if params is not None and _conditions_hold(rule.match, method, query, headers):
                best = (index, Hit(rule, MappingProxyType(params)))
                break
        return best[1] if best is not None else None


def _conditions_hold(
    m: RuleMatch, method: str, query: QueryLookup, headers: Mapping[str, str]
) -> bool:
    if m.methods is not None and method not in m.methods:
        return False
    if m.query:
        q = query()
        if not all(c.holds(q.get(c.name)) for c in m.query):
            return False
    return all(c.holds(headers.get(c.name)) for c in m.headers)


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(template: Any, values: Mapping[str, Any]) -> Any:
    """Fill a JSON template: a string that is exactly `{name}` becomes the value itself (a
    number stays a number); `{name}` inside a longer string is replaced by its text."""
    if isinstance(template, dict):
        return {k: render_template(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, values) for v in template]
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole is not None and whole.group(1) in values:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(
            lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template
        )
    return template
