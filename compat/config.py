"""`compat:` section: a rule profile (file or built-in) and/or inline rules, compiled at load.

    compat:
      profile: builtin:alert-history       # or a YAML file, relative to this config file
      backends: {new: go, legacy: python}  # which backend plays which role in the rules
      caller: {header: X-API-Key}          # caller identity for usage (hashed); else UA + IP
      max_body: 8MiB                       # bodies a rule transforms; 413 past it
      usage: {flush_interval: 5s, max_callers: 10000}
      deprecation: {since: 2025-02-01, sunset: 2025-04-01, link: https://...}
      rules: [...]                         # inline rules, tried before the profile's

Problems inside a profile file are reported with that file's name and the key path inside it
(`alert-history.yaml: rules[2].rewrite.query[0].rename: ...`). See docs/compat.md.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.resources
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

import yaml

from cutover.compat import jsonops as J
from cutover.compat import query as Q
from cutover.compat.deprecation import Deprecation
from cutover.compat.paths import PathTemplate, TargetPath, compile_target, compile_template
from cutover.compat.rules import (
    ROLES,
    Condition,
    FanOut,
    Fill,
    Gone,
    Health,
    ResponseTransform,
    Rewrite,
    Rule,
    RuleMatch,
    with_headers,
)
from cutover.core import configkit as kit
from cutover.core.configkit import Ctx, Invalid
from cutover.core.http1 import config_path

__all__ = ["BUILTIN_PROFILES", "CompatConfig", "parse_compat", "profile_resource"]

BUILTIN_PROFILES = {"alert-history": "alert-history.yaml"}
DEFAULT_MAX_BODY = 8 * 1024 * 1024
MAX_FAN_OUT = 64  # the most parts of one fan-out in flight at once (`fan_out.concurrency`)
_SECTION_KEYS = ("profile", "rules", "backends", "caller", "max_body", "usage", "deprecation")
_PROFILE_KEYS = ("name", "description", "deprecation", "backends", "rules")
_RULE_KEYS = (
    "name",
    "match",
    "deprecated",
    "deprecation",
    "gone",
    "health",
    "keep_on_legacy",
    "rewrite",
    "fan_out",
)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class CompatConfig:
    rules: tuple[Rule, ...]
    roles: Mapping[str, str]  # "new"/"legacy" -> backend name
    caller_header: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    flush_interval: float = 5.0
    max_callers: int = 10_000
    profile: str | None = None  # what `profile:` named, for messages

    def backend_role(self, backend: str) -> str | None:
        for role, name in self.roles.items():
            if name == backend:
                return role
        return None


def profile_resource(name: str) -> str:
    """The text of a built-in profile (shipped in the package as examples/compat/*.yaml)."""
    resource = importlib.resources.files("cutover.examples") / "compat" / BUILTIN_PROFILES[name]
    return resource.read_text(encoding="utf-8")


# -- the section ------------------------------------------------------------------------------


def parse_compat(ctx: Ctx, value: object, path: str) -> CompatConfig:
    if isinstance(value, str):  # `compat: FILE` is short for `compat: {profile: FILE}`
        value = {"profile": value}
        profile_path = path
    else:
        profile_path = kit.join(path, "profile")
    m = kit.section(ctx, value, path, _SECTION_KEYS)
    if "profile" not in m and "rules" not in m:
        ctx.fail(path, "a 'profile' (file or builtin:NAME) and/or inline 'rules'")
    base = kit.field(ctx, m, "deprecation", path, _deprecation, Deprecation())
    inline: list[Rule] = []
    if "rules" in m:
        inline = kit.field(ctx, m, "rules", path, _rules_parser(base), [])
    profile_name = None
    profile_rules: list[Rule] = []
    defaults: dict[str, str] = {}
    if "profile" in m:
        with contextlib.suppress(Invalid):  # already reported
            profile_name, profile_rules, defaults = _profile(ctx, m["profile"], profile_path, base)
    rules = [*inline, *profile_rules]
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.name in seen:
            ctx.add(
                f"{rule.source}.name",
                f"a rule name used once (also used by {seen[rule.name]})",
                rule.name,
            )
        seen[rule.name] = rule.source
    roles = kit.field(ctx, m, "backends", path, _roles, {})
    for role, name in defaults.items():
        if role not in roles and name in ctx.backend_names:
            roles[role] = name  # the profile's default, when this config has that backend
    _check_roles(ctx, rules, roles, kit.join(path, "backends"))
    caller = kit.field(ctx, m, "caller", path, _caller, None)
    max_body = kit.field(ctx, m, "max_body", path, kit.size(), DEFAULT_MAX_BODY)
    flush, max_callers = kit.field(ctx, m, "usage", path, _usage, (5.0, 10_000))
    return CompatConfig(
        rules=tuple(rules),
        roles=MappingProxyType(roles),
        caller_header=caller,
        max_body=max_body,
        flush_interval=flush,
        max_callers=max_callers,
        profile=profile_name,
    )


def _roles(ctx: Ctx, value: object, path: str) -> dict[str, str]:
    m = kit.section(ctx, value, path, ("new", "legacy"))
    out: dict[str, str] = {}
    for role in ("new", "legacy"):
        name = kit.field(ctx, m, role, path, kit.known_backend, None)
        if name is not None:
            out[role] = name
    if out.get("new") is not None and out.get("new") == out.get("legacy"):
        ctx.add(kit.join(path, "legacy"), "a backend other than the 'new' one", out["legacy"])
    return out


def _check_roles(ctx: Ctx, rules: list[Rule], roles: dict[str, str], path: str) -> None:
    for role in ("new", "legacy"):
        if role in roles:
            continue
        users = [
            r.name
            for r in rules
            if (role == "legacy" and r.keep_on_legacy)
            or any(rw.applies_to == role for rw in r.rewrites)
            or (r.fan_out is not None and r.fan_out.applies_to == role)
        ]
        if users:
            ctx.add(
                kit.join(path, role),
                f"the backend playing the role {role!r} (rules {', '.join(users[:3])} use it)",
            )


def _caller(ctx: Ctx, value: object, path: str) -> str | None:
    m = kit.section(ctx, value, path, ("header",))
    return kit.field(ctx, m, "header", path, kit.header_name, None)


def _usage(ctx: Ctx, value: object, path: str) -> tuple[float, int]:
    m = kit.section(ctx, value, path, ("flush_interval", "max_callers"))
    return (
        kit.field(ctx, m, "flush_interval", path, kit.duration(), 5.0),
        kit.field(ctx, m, "max_callers", path, kit.integer(1, 10_000_000), 10_000),
    )


# -- the profile file -------------------------------------------------------------------------


def _profile(
    ctx: Ctx, value: object, path: str, base: Deprecation
) -> tuple[str, list[Rule], dict[str, str]]:
    name = kit.string(ctx, value, path, "a profile file path or builtin:NAME")
    if name.startswith("builtin:"):
        key = name[len("builtin:") :]
        if key not in BUILTIN_PROFILES:
            ctx.fail(path, f"a built-in profile ({', '.join(BUILTIN_PROFILES)})", name)
        text = profile_resource(key)
        source = f"builtin:{key} (examples/compat/{BUILTIN_PROFILES[key]})"
        base_dir = ctx.base_dir
    else:
        source = os.path.abspath(os.path.join(ctx.base_dir, os.path.expanduser(name)))
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in it
            reason = getattr(exc, "strerror", None) or str(exc)
            ctx.fail(path, f"a readable UTF-8 profile file ({reason})", source)
        base_dir = os.path.dirname(source)
    sub = Ctx(source, base_dir)
    sub.backend_names = ctx.backend_names
    sub.route_names = ctx.route_names
    rules, defaults = _profile_rules(sub, text, base)
    if sub.errors:
        ctx.errors.extend(sub.errors)
        ctx.add(path, f"a valid profile ({len(sub.errors)} problem(s) in {source} listed above)")
        raise Invalid
    return name, rules, defaults


def _profile_roles(ctx: Ctx, value: object, path: str) -> dict[str, str]:
    """A profile's default role names (checked against the config's backends when used)."""
    m = kit.section(ctx, value, path, ("new", "legacy"))
    return {role: kit.field(ctx, m, role, path, kit.string, "") for role in m}


@functools.lru_cache(maxsize=8)
def _profile_yaml(text: str) -> tuple[object, tuple[tuple[str, int], ...]]:
    """A profile's YAML data and duplicate keys, loaded once per text: every config that names
    a profile (each reload, each check) would otherwise load the same file again, and PyYAML's
    loader is pure Python. A YAML error is raised (and not kept)."""
    loader = kit.Loader(text)
    try:
        return loader.load(), tuple(loader.duplicates)
    finally:
        loader.dispose()


def _profile_rules(sub: Ctx, text: str, base: Deprecation) -> tuple[list[Rule], dict[str, str]]:
    try:
        loaded, duplicates = _profile_yaml(text)
    except yaml.YAMLError as exc:
        sub.errors.append(kit.yaml_error(sub.source, text, exc))
        return [], {}
    data = copy.deepcopy(loaded)  # the parsers get their own, as from a fresh load
    for key, line in duplicates:
        sub.add(f"line {line}", f"each key once in a mapping ({key!r} is repeated)")
    try:
        m = kit.section(sub, data, "", _PROFILE_KEYS)
        if not kit.require(sub, m, "rules", "", "a list of rules"):
            return [], {}
        profile_dep = kit.field(sub, m, "deprecation", "", _deprecation, Deprecation())
        defaults = kit.field(sub, m, "backends", "", _profile_roles, {})
        rules = kit.field(sub, m, "rules", "", _rules_parser(profile_dep.merged(base)), [])
        return rules, defaults
    except Invalid:
        return [], {}


# -- rules ------------------------------------------------------------------------------------


def _rules_parser(base: Deprecation) -> kit.Parser[list[Rule]]:
    def parse(ctx: Ctx, value: object, path: str) -> list[Rule]:
        if not isinstance(value, list):
            ctx.fail(path, "a list of rules", value)
        rules: list[Rule] = []
        bad = False
        for i, item in enumerate(value):
            try:
                rules.append(_rule(ctx, item, f"{path}[{i}]", base))
            except Invalid:
                bad = True
        if bad:
            raise Invalid
        return rules

    return parse


def _rule(ctx: Ctx, value: object, path: str, base: Deprecation) -> Rule:
    m = kit.section(ctx, value, path, _RULE_KEYS)
    ok = kit.require(ctx, m, "name", path, "a rule name (letters, digits, '_', '.', '-')")
    ok = kit.require(ctx, m, "match", path, "a mapping with path and optionally method") and ok
    name = kit.field(ctx, m, "name", path, _rule_name, "")
    match = kit.field(ctx, m, "match", path, _match, None)
    deprecated = kit.field(ctx, m, "deprecated", path, kit.boolean, True)
    own = kit.field(ctx, m, "deprecation", path, _deprecation, Deprecation())
    deprecation = base.merged(own) if deprecated else None
    gone = kit.field(ctx, m, "gone", path, _gone_parser(deprecation), None)
    health = kit.field(ctx, m, "health", path, _health, None)
    keep = kit.field(ctx, m, "keep_on_legacy", path, kit.boolean, False)
    rewrites = kit.field(ctx, m, "rewrite", path, _rewrites, ())
    fan_out = kit.field(ctx, m, "fan_out", path, _fan_out, None)
    local = [k for k in ("gone", "health") if k in m]
    others = [k for k in ("keep_on_legacy", "rewrite", "fan_out") if k in m]
    if len(local) > 1 or (local and others):
        ctx.add(path, f"either {local[0]} alone or the proxying actions, not {local + others}")
    if not ok or match is None or ctx.failed(path):
        raise Invalid
    if fan_out is not None and fan_out.applies_to == "legacy" and keep:
        ctx.add(f"{path}.fan_out.applies_to", "new or any with keep_on_legacy: false")
    params = _common_params(match.paths)
    targets: list[tuple[str, TargetPath]] = [
        (f"{path}.rewrite.path", rw.path) for rw in rewrites if rw.path is not None
    ]
    if fan_out is not None and fan_out.path is not None:
        targets.append((f"{path}.fan_out.path", fan_out.path))
    for where, target in targets:
        missing = [p for p in target.params if p not in params]
        if missing:
            ctx.add(where, f"only parameters of every match path ({', '.join(missing)} is not)")
    return with_headers(
        Rule(
            name=name,
            match=match,
            deprecation=deprecation,
            gone=gone,
            health=health,
            keep_on_legacy=keep,
            rewrites=rewrites,
            fan_out=fan_out,
            source=path if path.startswith("compat") else f"{ctx.source}: {path}",
        )
    )


def _rule_name(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        ctx.fail(path, "a rule name made of letters, digits, '_', '.', '-'", value)
    return value


def _common_params(paths: tuple[PathTemplate, ...]) -> set[str]:
    sets = [set(p.params) for p in paths]
    return set.intersection(*sets) if sets else set()


def _match(ctx: Ctx, value: object, path: str) -> RuleMatch:
    m = kit.section(ctx, value, path, ("method", "methods", "path", "query", "headers"))
    kit.require(ctx, m, "path", path, "a path template or a list of them")
    if "method" in m and "methods" in m:
        ctx.add(kit.join(path, "methods"), "either method or methods, not both")
    methods = None
    if "method" in m:
        methods = frozenset(kit.field(ctx, m, "method", path, _one_method, []))
    if "methods" in m:
        methods = kit.field(ctx, m, "methods", path, kit.methods(empty=False), None)
    paths = kit.field(ctx, m, "path", path, _templates, ())
    query = kit.field(ctx, m, "query", path, _conditions(header=False), ())
    headers = kit.field(ctx, m, "headers", path, _conditions(header=True), ())
    if not paths:
        raise Invalid
    return RuleMatch(paths=paths, methods=methods, query=query, headers=headers)


def _one_method(ctx: Ctx, value: object, path: str) -> list[str]:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z]+", value):
        ctx.fail(path, "an HTTP method such as GET", value)
    return [value.upper()]


def _template(ctx: Ctx, value: object, path: str) -> PathTemplate:
    if not isinstance(value, str):
        ctx.fail(path, "a path template such as /alerts/{id}", value)
    try:
        # compared with the request's normalized path (core.http1): /api/%61lerts is /api/alerts
        return compile_template(config_path(value, keep="{}"))
    except ValueError as exc:
        ctx.fail(path, f"a path template such as /alerts/{{id}}: {exc}", value)


def _templates(ctx: Ctx, value: object, path: str) -> tuple[PathTemplate, ...]:
    if isinstance(value, list):
        if not value:
            ctx.fail(path, "at least one path template", value)
        return tuple(kit.items(ctx, value, path, _template))
    return (_template(ctx, value, path),)


def _target(ctx: Ctx, value: object, path: str) -> TargetPath:
    if not isinstance(value, str):
        ctx.fail(path, "a target path such as /api/v2/alerts/{id}", value)
    try:
        return compile_target(value)
    except ValueError as exc:
        ctx.fail(path, f"a target path such as /api/v2/alerts/{{id}}: {exc}", value)


def _conditions(*, header: bool) -> kit.Parser[tuple[Condition, ...]]:
    what = "header" if header else "query parameter"

    def parse(ctx: Ctx, value: object, path: str) -> tuple[Condition, ...]:
        if not isinstance(value, Mapping):
            ctx.fail(path, f"a mapping of {what} name to condition", value)
        out: list[Condition] = []
        for name, cond in value.items():
            cpath = kit.join(path, name)
            if not isinstance(name, str) or not name:
                ctx.add(cpath, f"a {what} name")
                continue
            try:
                c = _condition(ctx, cond, cpath, name.lower() if header else name)
            except Invalid:
                continue
            out.append(c)
        return tuple(out)

    return parse


def _condition(ctx: Ctx, value: object, path: str, name: str) -> Condition:
    expected = "true (present), false (absent), a value to equal, or {equals|regex: ...}"
    if value is True or value is False:
        return Condition(name, present=bool(value))
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return Condition(name, equals=str(value))
    if isinstance(value, Mapping):
        m = kit.section(ctx, value, path, ("equals", "regex"))
        equals = kit.field(ctx, m, "equals", path, _scalar_text, None)
        regex = kit.field(ctx, m, "regex", path, kit.regex, None)
        if equals is None and regex is None:
            ctx.fail(path, expected, value)
        return Condition(name, equals=equals, regex=regex)
    ctx.fail(path, expected, value)


def _scalar_text(ctx: Ctx, value: object, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        ctx.fail(path, "a string or number", value)
    return str(value)


# -- deprecation ------------------------------------------------------------------------------


def _instant(ctx: Ctx, value: object, path: str) -> int:
    expected = "a date (2025-04-01), an RFC 3339 time or unix seconds"
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(dt.timestamp())
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            try:
                d = date.fromisoformat(text)
            except ValueError:
                ctx.fail(path, expected, value)
            return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())
        try:
            return int(J.parse_rfc3339(text).timestamp())
        except ValueError:
            pass
    ctx.fail(path, expected, value)


def _link(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[^\s<>\"]+", value):
        ctx.fail(path, "a URI (no spaces, <, > or quotes)", value)
    return value


def _deprecation(ctx: Ctx, value: object, path: str) -> Deprecation:
    m = kit.section(ctx, value, path, ("since", "sunset", "link", "sunset_link"))
    return Deprecation(
        since=kit.field(ctx, m, "since", path, _instant, None),
        sunset=kit.field(ctx, m, "sunset", path, _instant, None),
        link=kit.field(ctx, m, "link", path, _link, None),
        sunset_link=kit.field(ctx, m, "sunset_link", path, _link, None),
    )


# -- actions ----------------------------------------------------------------------------------


def _gone_parser(dep: Deprecation | None) -> kit.Parser[Gone]:
    def parse(ctx: Ctx, value: object, path: str) -> Gone:
        if value is True:
            value = {}
        m = kit.section(ctx, value, path, ("status", "message", "replacement", "guide"))
        return Gone(
            status=kit.field(ctx, m, "status", path, kit.integer(400, 599), 410),
            message=kit.field(ctx, m, "message", path, kit.string, "this endpoint was removed"),
            replacement=kit.field(ctx, m, "replacement", path, kit.string, None),
            guide=kit.field(ctx, m, "guide", path, _link, dep.link if dep else None),
        )

    return parse


def _health(ctx: Ctx, value: object, path: str) -> Health:
    if value is True:
        value = {}
    m = kit.section(ctx, value, path, ("ready", "unready", "unready_status"))
    return Health(
        ready_body=kit.field(
            ctx, m, "ready", path, _json_value, {"status": "healthy", "timestamp": "{now}"}
        ),
        unready_body=kit.field(
            ctx, m, "unready", path, _json_value, {"detail": "Service unhealthy"}
        ),
        unready_status=kit.field(ctx, m, "unready_status", path, kit.integer(500, 599), 503),
    )


def _json_value(ctx: Ctx, value: object, path: str) -> Any:
    """A YAML value that JSON can carry (string keys; no dates or binary)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                ctx.fail(kit.join(path, k), "a string key (quote it)", k)
            out[k] = _json_value(ctx, v, kit.join(path, k))
        return out
    if isinstance(value, list):
        return [_json_value(ctx, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        ctx.fail(path, "a number within 64 bits (what a JSON body can hold)", value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    ctx.fail(path, "a JSON value (quote dates and times)", str(value))


def _role(ctx: Ctx, value: object, path: str) -> str:
    if value not in ROLES:
        ctx.fail(path, "one of new, legacy, any", value)
    return str(value)


def _rewrites(ctx: Ctx, value: object, path: str) -> tuple[Rewrite, ...]:
    if isinstance(value, list):
        out = tuple(kit.items(ctx, value, path, _rewrite))
    else:
        out = (_rewrite(ctx, value, path),)
    roles = [rw.applies_to for rw in out]
    if len(set(roles)) != len(roles):
        ctx.fail(path, "at most one rewrite per role (applies_to)", ", ".join(roles))
    return out


def _rewrite(ctx: Ctx, value: object, path: str) -> Rewrite:
    m = kit.section(ctx, value, path, ("applies_to", "path", "query", "body", "response"))
    rw = Rewrite(
        applies_to=kit.field(ctx, m, "applies_to", path, _role, "any"),  # type: ignore[arg-type]
        path=kit.field(ctx, m, "path", path, _target, None),
        query=kit.field(ctx, m, "query", path, _query_ops, ()),
        body=kit.field(ctx, m, "body", path, _json_ops, ()),
        response=kit.field(ctx, m, "response", path, _response, None),
    )
    if ctx.failed(path):
        raise Invalid
    return rw


def _response(ctx: Ctx, value: object, path: str) -> ResponseTransform:
    m = kit.section(ctx, value, path, ("status", "body", "error_body", "fill"))
    status_map = kit.field(ctx, m, "status", path, _status_map, {})
    body, body_codes, body_classes = kit.field(
        ctx, m, "body", path, _status_ops(success=True), ((), {}, {})
    )
    error, error_codes, error_classes = kit.field(
        ctx, m, "error_body", path, _status_ops(success=False), ((), {}, {})
    )
    fills = kit.field(ctx, m, "fill", path, _fills(status_map), ())
    return ResponseTransform(
        status_map=MappingProxyType(status_map),
        body=body,
        error_body=error,
        by_code=MappingProxyType({**body_codes, **error_codes}),
        by_class=MappingProxyType({**body_classes, **error_classes}),
        fills=fills,
    )


_STATUS_EXPECTED = "a status code (404), a class (4xx) or a list of them"


def _status_key(ctx: Ctx, value: object, path: str) -> tuple[str, int]:
    """("code", 404) or ("class", 4)."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return "code", value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and 100 <= int(text) <= 599:
            return "code", int(text)
        if re.fullmatch(r"[1-5]xx", text):
            return "class", int(text[0])
    ctx.fail(path, _STATUS_EXPECTED, value)


def _status_set(ctx: Ctx, value: object, path: str) -> J.StatusSet:
    if isinstance(value, list):
        if not value:
            ctx.fail(path, _STATUS_EXPECTED, value)
        keys = kit.items(ctx, value, path, _status_key)
    else:
        keys = [_status_key(ctx, value, path)]
    return J.StatusSet(
        codes=frozenset(n for kind, n in keys if kind == "code"),
        classes=frozenset(n for kind, n in keys if kind == "class"),
    )


StatusOps = tuple[tuple[J.Op, ...], dict[int, tuple[J.Op, ...]], dict[int, tuple[J.Op, ...]]]


def _status_ops(success: bool) -> kit.Parser[StatusOps]:
    """A list of operations, or a mapping of status / class / `default` to lists of them."""
    where = "2xx" if success else "not 2xx (body holds the 2xx ones)"

    def parse(ctx: Ctx, value: object, path: str) -> StatusOps:
        if not isinstance(value, Mapping):
            return _answer_ops(ctx, value, path), {}, {}
        default: tuple[J.Op, ...] = ()
        codes: dict[int, tuple[J.Op, ...]] = {}
        classes: dict[int, tuple[J.Op, ...]] = {}
        for k, v in value.items():
            kp = kit.join(path, k)
            try:
                if k == "default":
                    default = _answer_ops(ctx, v, kp)
                    continue
                kind, n = _status_key(ctx, k, kp)
                if ((n // 100 if kind == "code" else n) == 2) != success:
                    ctx.fail(kp, f"a status that is {where}", k)
                (codes if kind == "code" else classes)[n] = _answer_ops(ctx, v, kp)
            except Invalid:
                continue
        return default, codes, classes

    return parse


_FILL_WHEN = ("empty", "not_json")


def _fills(status_map: Mapping[int, int]) -> kit.Parser[tuple[Fill, ...]]:
    def one(ctx: Ctx, value: object, path: str) -> Fill:
        m = kit.section(ctx, value, path, ("status", "when", "body"))
        kit.require(ctx, m, "body", path, "the JSON body to give the answer")
        statuses = kit.field(
            ctx, m, "status", path, _status_set, J.StatusSet(classes=frozenset({2}))
        )
        when = kit.field(ctx, m, "when", path, _fill_when, ("empty",))
        body = kit.field(ctx, m, "body", path, _json_value, None)
        if 1 in statuses.classes or any(c < 200 for c in statuses.codes):
            ctx.add(kit.join(path, "status"), "statuses of answers that can carry a body (not 1xx)")
        for code in sorted(statuses.codes & {204, 304}):
            if status_map.get(code, code) in (204, 304):
                ctx.add(
                    kit.join(path, "status"),
                    f"statuses of answers that can carry a body ({code} cannot: map it to "
                    f"another status under response.status, e.g. {{{code}: 200}})",
                )
        if ctx.failed(path):
            raise Invalid
        return Fill(statuses, body, empty="empty" in when, not_json="not_json" in when)

    def parse(ctx: Ctx, value: object, path: str) -> tuple[Fill, ...]:
        if not isinstance(value, list):
            value = [value]
        return tuple(kit.items(ctx, value, path, one))

    return parse


def _fill_when(ctx: Ctx, value: object, path: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or any(x not in _FILL_WHEN for x in items):
        ctx.fail(path, "empty, not_json or a list of them", value)
    return tuple(str(x) for x in items)


def _status_map(ctx: Ctx, value: object, path: str) -> dict[int, int]:
    if not isinstance(value, Mapping):
        ctx.fail(path, "a mapping of backend status to client status, e.g. {400: 422}", value)
    out: dict[int, int] = {}
    for k, v in value.items():
        kp = kit.join(path, k)
        src = k if isinstance(k, int) and not isinstance(k, bool) else None
        if isinstance(k, str) and k.isdigit():
            src = int(k)
        if src is None or not 100 <= src <= 599:
            ctx.add(kp, "a status code (100-599) as the key", k)
            continue
        try:
            out[src] = kit.integer(100, 599)(ctx, v, kp)
        except Invalid:
            continue
    return out


def _fan_out(ctx: Ctx, value: object, path: str) -> FanOut:
    keys = ("applies_to", "items", "path", "method", "item", "status", "response", "concurrency")
    m = kit.section(ctx, value, path, keys)
    fo = FanOut(
        applies_to=kit.field(ctx, m, "applies_to", path, _role, "new"),  # type: ignore[arg-type]
        items=J.split_path(kit.field(ctx, m, "items", path, kit.string, "alerts")),
        path=kit.field(ctx, m, "path", path, _target, None),
        method=kit.field(ctx, m, "method", path, _one_method, ["POST"])[0],
        item_ops=kit.field(ctx, m, "item", path, _json_ops, ()),
        status=kit.field(ctx, m, "status", path, kit.integer(200, 299), 200),
        body=kit.field(ctx, m, "response", path, _json_value, None),
        concurrency=kit.field(ctx, m, "concurrency", path, kit.integer(1, MAX_FAN_OUT), 1),
    )
    if ctx.failed(path):
        raise Invalid
    return fo


# -- operations -------------------------------------------------------------------------------


def _single(ctx: Ctx, value: object, path: str, names: tuple[str, ...]) -> tuple[str, object]:
    if not isinstance(value, Mapping) or len(value) != 1:
        ctx.fail(path, f"a mapping with one operation ({', '.join(names)})", value)
    ((name, arg),) = value.items()
    if name not in names:
        hint = kit.did_you_mean(str(name), names) or f" (one of: {', '.join(names)})"
        ctx.fail(kit.join(path, name), f"a known operation{hint}")
    return str(name), arg


def _pairs(ctx: Ctx, arg: object, path: str, what: str) -> list[tuple[str, object]]:
    if not isinstance(arg, Mapping) or not arg:
        ctx.fail(path, f"a mapping of {what}", arg)
    out = []
    for k, v in arg.items():
        if not isinstance(k, str):
            ctx.fail(kit.join(path, k), "a string key (quote it)", k)
        out.append((k, v))
    return out


def _names(ctx: Ctx, arg: object, path: str, what: str) -> list[str]:
    items = [arg] if isinstance(arg, str) else arg
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        ctx.fail(path, f"{what} or a list of them", arg)
    return list(items)


def _text(ctx: Ctx, value: object, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        ctx.fail(path, "a string or number", value)
    return str(value)


_QUERY_OPS = ("rename", "drop", "set", "default", "values", "template", "pagination")


def _query_ops(ctx: Ctx, value: object, path: str) -> tuple[Q.QOp, ...]:
    if not isinstance(value, list):
        ctx.fail(path, "a list of query operations", value)
    return tuple(op for ops in kit.items(ctx, value, path, _query_op) for op in ops)


def _query_op(ctx: Ctx, value: object, path: str) -> list[Q.QOp]:
    name, arg = _single(ctx, value, path, _QUERY_OPS)
    p = kit.join(path, name)
    if name == "drop":
        return [Q.QDrop(frozenset(_names(ctx, arg, p, "a parameter name")))]
    if name == "pagination":
        return [_pagination(ctx, arg, p)]
    pairs = _pairs(ctx, arg, p, "parameter names")
    out: list[Q.QOp] = []
    for k, v in pairs:
        kp = kit.join(p, k)
        if name == "rename":
            out.append(Q.QRename(k, kit.string(ctx, v, kp, "the new parameter name")))
        elif name == "set":
            out.append(Q.QSet(k, _text(ctx, v, kp)))
        elif name == "default":
            out.append(Q.QDefault(k, _text(ctx, v, kp)))
        elif name == "template":
            out.append(Q.QTemplate(k, Q.compile_template_value(_text(ctx, v, kp))))
        else:  # values
            table = _pairs(ctx, v, kp, "old value to new value")
            out.append(Q.QValues(k, tuple((a, _text(ctx, b, kp)) for a, b in table)))
    return out


def _pagination(ctx: Ctx, arg: object, path: str) -> Q.Pagination:
    if arg is True or arg is None:
        arg = {}
    keys = ("offset", "limit", "page", "page_size", "default_limit", "always")
    m = kit.section(ctx, arg, path, keys)
    d = Q.Pagination()
    return Q.Pagination(
        offset=kit.field(ctx, m, "offset", path, kit.string, d.offset),
        limit=kit.field(ctx, m, "limit", path, kit.string, d.limit),
        page=kit.field(ctx, m, "page", path, kit.string, d.page),
        page_size=kit.field(ctx, m, "page_size", path, kit.string, d.page_size),
        default_limit=kit.field(ctx, m, "default_limit", path, kit.integer(1), d.default_limit),
        always=kit.field(ctx, m, "always", path, kit.boolean, d.always),
    )


_JSON_OPS = (
    "rename",
    "move",
    "copy",
    "drop",
    "keep",
    "set",
    "default",
    "wrap",
    "unwrap",
    "each",
    "values",
    "convert",
    "length",
    "empty_to_null",
    "null_to_empty",
    "to_array",
    "time",
)
_PATHS_OPS = {"empty_to_null": J.EmptyToNull, "null_to_empty": J.NullToEmpty, "to_array": J.ToArray}
_WHEN_KEYS = ("when", "then", "else")


def _json_ops(ctx: Ctx, value: object, path: str, answer: bool = False) -> tuple[J.Op, ...]:
    """Operations on a request body (`answer` False: no answer status to test yet) or an
    answer's body."""
    if not isinstance(value, list):
        ctx.fail(path, "a list of JSON operations", value)
    parse = functools.partial(_json_op, answer=answer)
    return tuple(op for ops in kit.items(ctx, value, path, parse) for op in ops)


def _answer_ops(ctx: Ctx, value: object, path: str) -> tuple[J.Op, ...]:
    return _json_ops(ctx, value, path, answer=True)


def _json_path(ctx: Ctx, value: object, path: str) -> J.Keys:
    if not isinstance(value, str) or any(not k for k in J.split_path(value)):
        ctx.fail(
            path, "a dotted JSON path such as data.alerts (or '.' for the value itself)", value
        )
    return J.split_path(value)


def _json_paths(ctx: Ctx, value: object, path: str) -> tuple[J.Keys, ...]:
    if isinstance(value, list):
        if not value:
            ctx.fail(path, "a JSON path or a list of them", value)
        return tuple(kit.items(ctx, value, path, _json_path))
    return (_json_path(ctx, value, path),)


def _key(ctx: Ctx, value: object, path: str) -> str:
    if not isinstance(value, str) or not value or "." in value:
        ctx.fail(path, "a key name (no dots)", value)
    return value


def _wrap_arg(ctx: Ctx, arg: object, path: str) -> tuple[J.Keys, str]:
    if isinstance(arg, str):
        return (), _key(ctx, arg, path)
    m = kit.section(ctx, arg, path, ("path", "key"))
    kit.require(ctx, m, "key", path, "the key name")
    keys = kit.field(ctx, m, "path", path, _json_path, ())
    key = kit.field(ctx, m, "key", path, _key, "")
    if not key:
        raise Invalid
    return keys, key


def _when(ctx: Ctx, value: Mapping[object, object], path: str, answer: bool) -> J.When:
    m = kit.section(ctx, value, path, _WHEN_KEYS)
    kit.require(ctx, m, "then", path, "the operations to run when the condition holds")
    condition = kit.field(
        ctx, m, "when", path, functools.partial(_when_condition, answer=answer), None
    )
    ops = functools.partial(_json_ops, answer=answer)
    then = kit.field(ctx, m, "then", path, ops, ())
    otherwise = kit.field(ctx, m, "else", path, ops, ())
    if condition is None or ctx.failed(path):
        raise Invalid
    return J.When(condition, then, otherwise)


_CONDITION_KEYS = ("status", "present", "absent", "equals")


def _when_condition(ctx: Ctx, value: object, path: str, answer: bool) -> J.Condition:
    m = kit.section(ctx, value, path, _CONDITION_KEYS)
    if not m:
        ctx.fail(path, f"a condition with at least one of {', '.join(_CONDITION_KEYS)}", value)
    if "status" in m and not answer:
        ctx.fail(
            kit.join(path, "status"),
            "no status condition here: a request body is transformed before there is an answer",
        )
    equals: list[tuple[J.Keys, Any]] = []
    if "equals" in m:
        ep = kit.join(path, "equals")
        for k, v in _pairs(ctx, m["equals"], ep, "JSON paths to the value they must hold"):
            kp = kit.join(ep, k)
            equals.append((_json_path(ctx, k, kp), _json_value(ctx, v, kp)))
    condition = J.Condition(
        status=kit.field(ctx, m, "status", path, _status_set, None),
        present=kit.field(ctx, m, "present", path, _json_paths, ()),
        absent=kit.field(ctx, m, "absent", path, _json_paths, ()),
        equals=tuple(equals),
    )
    if ctx.failed(path):
        raise Invalid
    return condition


def _time(ctx: Ctx, src: J.Keys, value: object, path: str) -> J.Time:
    m = kit.section(ctx, value, path, ("digits", "trim", "zone"))
    zone = m.get("zone", "Z")
    if zone not in J.ZONES:
        ctx.add(kit.join(path, "zone"), "Z, +00:00 or keep", zone)
    digits = m.get("digits", "auto")
    if digits != "auto":
        digits = kit.field(ctx, m, "digits", path, kit.integer(0, 9), None)
    trim = kit.field(ctx, m, "trim", path, kit.boolean, False)
    if ctx.failed(path):
        raise Invalid
    return J.Time(src, None if digits == "auto" else digits, trim, zone)  # type: ignore[arg-type]


def _json_op(ctx: Ctx, value: object, path: str, answer: bool = False) -> list[J.Op]:
    if isinstance(value, Mapping) and "when" in value:
        return [_when(ctx, value, path, answer)]
    name, arg = _single(ctx, value, path, _JSON_OPS)
    p = kit.join(path, name)
    if name == "drop":
        return [J.Drop(tuple(J.split_path(x) for x in _names(ctx, arg, p, "a JSON path")))]
    if name in _PATHS_OPS:
        return [_PATHS_OPS[name](_json_paths(ctx, arg, p))]
    if name == "keep":
        if isinstance(arg, Mapping):
            m = kit.section(ctx, arg, p, ("path", "keys"))
            keys = kit.field(ctx, m, "path", p, _json_path, ())
            names = _names(ctx, m.get("keys"), kit.join(p, "keys"), "a key name")
            return [J.Keep(keys, frozenset(names))]
        return [J.Keep((), frozenset(_names(ctx, arg, p, "a key name")))]
    if name == "wrap":
        return [J.Wrap(*_wrap_arg(ctx, arg, p))]
    if name == "unwrap":
        return [J.Unwrap(*_wrap_arg(ctx, arg, p))]
    if name == "each":
        m = kit.section(ctx, arg, p, ("path", "ops"))
        kit.require(ctx, m, "ops", p, "the list of operations for each item")
        keys = kit.field(ctx, m, "path", p, _json_path, ())
        ops = kit.field(ctx, m, "ops", p, functools.partial(_json_ops, answer=answer), ())
        if ctx.failed(p):
            raise Invalid
        return [J.Each(keys, ops)]
    out: list[J.Op] = []
    for k, v in _pairs(ctx, arg, p, "JSON paths"):
        kp = kit.join(p, k)
        src = _json_path(ctx, k, kp)
        if name == "rename":
            out.append(J.Rename(src, _key(ctx, v, kp)))
            if not src:
                ctx.fail(kp, "a key to rename, not '.'")
        elif name in ("move", "copy", "length"):
            dst = _json_path(ctx, v, kp)
            cls = {"move": J.Move, "copy": J.Copy, "length": J.Length}[name]
            out.append(cls(src, dst))
        elif name == "set":
            out.append(J.Set(src, _json_value(ctx, v, kp)))
        elif name == "default":
            out.append(J.Default(src, _json_value(ctx, v, kp)))
        elif name == "values":
            if not isinstance(v, Mapping) or not v:
                ctx.fail(kp, "a mapping of old value to new value", v)
            table = tuple((a, _json_value(ctx, b, kit.join(kp, a))) for a, b in v.items())
            out.append(J.Values(src, table))
        elif name == "time":
            out.append(_time(ctx, src, v, kp))
        else:  # convert
            if v not in J.CONVERSIONS:
                ctx.fail(kp, f"one of {', '.join(J.CONVERSIONS)}", v)
            out.append(J.Convert(src, v))  # type: ignore[arg-type]
    return out
