"""Property-based fuzzing of compat rules: any rule the config accepts, applied to any JSON the
gateway can read (request bodies and backend answers) or to any query, either works — giving a
document the gateway can write back — or raises the documented `TransformError`; and any rule
the config does not accept is refused with errors at the rule's key path, never an exception.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from cutover.compat.jsonops import CONVERSIONS, TransformError
from cutover.compat.rules import Rule, RuleSet
from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import CutoverConfig, parse_config
from tests.fuzzing import NASTY_NUMBERS, NASTY_STRINGS, fuzz

# A small vocabulary, so that the paths of the rules meet the keys of the documents.
KEY_WORDS = ("a", "b", "data", "alerts", "labels", "status", "total", "x")
KEYS = st.sampled_from(KEY_WORDS)
PATHS = st.one_of(
    st.just("."), st.lists(KEYS, min_size=1, max_size=3).map(".".join)
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NASTY_NUMBERS),
    st.integers(-(2**63), 2**64 - 1),  # orjson's range: what a body can hold
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NASTY_STRINGS),
    st.sampled_from(["1", "4", "critical", "WARNING", "inf", "-inf", "nan", "1e400", "1e20",
                     "2025-04-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
                     "9999-12-31T23:59:59-01:00", "2025-04-01T00:00:00.1234567891Z"]),
    st.text(max_size=8),
)  # fmt: skip
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=4)), inner, max_size=4),
    ),
    max_leaves=10,
)
# What YAML may give a `set`/`default`/`values` (the config refuses what JSON cannot carry).
CONFIG_VALUES = st.recursive(
    st.one_of(
        SCALARS,
        st.sampled_from([2**64, -(2**63) - 1, 2**80]),  # beyond what a body can hold
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(KEYS, inner, max_size=2)),
    max_leaves=3,
)


def _leaf_op() -> st.SearchStrategy[dict[str, Any]]:
    pairs = st.dictionaries(PATHS, PATHS, min_size=1, max_size=2)
    return st.one_of(
        st.builds(lambda m: {"rename": m}, st.dictionaries(PATHS, KEYS, min_size=1, max_size=2)),
        st.builds(lambda m: {"move": m}, pairs),
        st.builds(lambda m: {"copy": m}, pairs),
        st.builds(lambda m: {"length": m}, pairs),
        st.builds(lambda p: {"drop": p}, st.lists(PATHS, min_size=1, max_size=3)),
        st.builds(lambda k: {"keep": k}, st.lists(KEYS, min_size=1, max_size=3)),
        st.builds(
            lambda p, k: {"keep": {"path": p, "keys": k}},
            PATHS,
            st.lists(KEYS, min_size=1, max_size=3),
        ),
        st.builds(
            lambda m: {"set": m}, st.dictionaries(PATHS, CONFIG_VALUES, min_size=1, max_size=2)
        ),
        st.builds(
            lambda m: {"default": m}, st.dictionaries(PATHS, CONFIG_VALUES, min_size=1, max_size=2)
        ),
        st.builds(lambda k: {"wrap": k}, KEYS),
        st.builds(lambda p, k: {"wrap": {"path": p, "key": k}}, PATHS, KEYS),
        st.builds(lambda k: {"unwrap": k}, KEYS),
        st.builds(lambda p, k: {"unwrap": {"path": p, "key": k}}, PATHS, KEYS),
        st.builds(
            lambda p, t: {"values": {p: t}},
            PATHS,
            st.dictionaries(
                st.sampled_from(["active", "1", "x"]), CONFIG_VALUES, min_size=1, max_size=2
            ),
        ),
        st.builds(lambda p, c: {"convert": {p: c}}, PATHS, st.sampled_from(CONVERSIONS)),
        st.builds(lambda p: {"empty_to_null": p}, st.lists(PATHS, min_size=1, max_size=2)),
        st.builds(lambda p: {"null_to_empty": p}, st.lists(PATHS, min_size=1, max_size=2)),
        st.builds(lambda p: {"to_array": p}, st.lists(PATHS, min_size=1, max_size=2)),
        st.builds(
            lambda p, d, t, z: {"time": {p: {"digits": d, "trim": t, "zone": z}}},
            PATHS,
            st.one_of(st.just("auto"), st.integers(0, 9)),
            st.booleans(),
            st.sampled_from(["Z", "+00:00", "keep"]),
        ),
    )


CONDITIONS = st.fixed_dictionaries(
    {},
    optional={
        "present": PATHS,
        "absent": st.lists(PATHS, min_size=1, max_size=2),
        "equals": st.dictionaries(PATHS, CONFIG_VALUES, min_size=1, max_size=2),
    },
).filter(bool)


OP: st.SearchStrategy[dict[str, Any]] = st.recursive(
    _leaf_op(),
    lambda inner: st.one_of(
        inner,
        st.builds(
            lambda p, ops: {"each": {"path": p, "ops": ops}}, PATHS, st.lists(inner, max_size=3)
        ),
        st.builds(
            lambda c, t, e: {"when": c, "then": t, "else": e},
            CONDITIONS,
            st.lists(inner, max_size=2),
            st.lists(inner, max_size=2),
        ),
    ),
    max_leaves=4,
)
OPS = st.lists(OP, max_size=4)
FEW_OPS = st.lists(OP, max_size=1)
QUERY_OPS = st.lists(
    st.one_of(
        st.builds(lambda a, b: {"rename": {a: b}}, KEYS, KEYS),
        st.builds(lambda a: {"drop": [a]}, KEYS),
        st.builds(lambda a, v: {"set": {a: v}}, KEYS, st.text(max_size=5)),
        st.builds(lambda a, v: {"default": {a: v}}, KEYS, st.sampled_from(["1", "x"])),
        st.builds(lambda a, v: {"values": {a: {"x": v}}}, KEYS, st.sampled_from(["y", "2"])),
        st.builds(lambda a: {"template": {a: 'id="{id}" {a} {missing}'}}, KEYS),
        st.just({"pagination": {"default_limit": 10}}),
        st.just({"pagination": True}),
    ),
    max_size=4,
)


def config(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "backends": {"go": "http://go:8080", "python": "http://python:8080"},
        "routes": [{"name": "default", "split": {"go": 100}}],
        "compat": {"backends": {"new": "go", "legacy": "python"}, "rules": [rule]},
    }


def parsed_rule(rule: dict[str, Any]) -> Rule | None:
    """The rule as the config parses it; None when refused (after checking the errors)."""
    try:
        cfg = parse_config(config(rule), "c.yaml", env={})
    except ConfigErrors as errs:
        for error in errs.errors:
            assert error.path.startswith("compat.rules[0]"), str(error)
            assert "the check itself failed" not in error.expected, str(error)
        return None
    assert isinstance(cfg, CutoverConfig)
    assert cfg.compat is not None
    (compiled,) = cfg.compat.rules
    return compiled


def written(doc: Any) -> None:
    """The gateway writes every transformed document with orjson: it must be able to."""
    orjson.dumps(doc)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "name": "r",
        "match": {"path": "/items/{id}"},
        "rewrite": {
            "path": "/v2/{id}",
            "query": draw(QUERY_OPS),
            "body": draw(OPS),
            "response": {
                "status": {400: 422},
                "body": draw(OPS),
                "error_body": draw(
                    st.one_of(
                        FEW_OPS,
                        st.fixed_dictionaries({"4xx": FEW_OPS}, optional={"default": FEW_OPS}),
                        st.just([{"when": {"status": ["4xx", 500]}, "then": [{"wrap": "e"}]}]),
                    )
                ),
            },
        },
    }


@fuzz(500)  # ~15 ms an example: CUTOVER_FUZZ=long runs 10,000
@given(
    rule=rules(),
    docs=st.lists(DOCS.map(lambda d: orjson.loads(orjson.dumps(d))), min_size=1, max_size=3),
    raw_query=st.one_of(st.text(max_size=30), st.sampled_from(["a=1&a=2", "%zz=%", "x=&=y", ""])),
    item_id=st.text(min_size=1, max_size=8),
)
def test_fuzz_compat_rules_transform_or_raise_transform_error(
    rule: dict[str, Any], docs: list[Any], raw_query: str, item_id: str
) -> None:
    compiled = parsed_rule(rule)
    if compiled is None:
        return
    (rw,) = compiled.rewrites
    assert rw.response is not None
    for doc in docs:
        for status in (200, 400):
            for ops in (rw.body, rw.response.ops_for(status)):
                try:
                    out = _apply(ops, orjson.loads(orjson.dumps(doc)), status)
                except TransformError:
                    continue
                written(out)
    target = rw.target("/items/x", raw_query, {"id": item_id})
    assert target.startswith("/v2/")
    hit = RuleSet((compiled,)).match("GET", "/items/" + item_id, lambda: {}, {})
    assert (hit is not None) == ("/" not in item_id)


def _apply(ops: Any, doc: Any, status: int) -> Any:
    from cutover.compat.jsonops import Facts, apply

    return apply(ops, doc, Facts(status))


# Junk where a rule's parts go: the parser reports it at the rule's key path.
JUNK = st.recursive(
    st.one_of(SCALARS, st.dates(), st.binary(max_size=3), st.integers(-5, 5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(KEYS, st.sampled_from(["each", "ops", "path", "set", "keys",
                                                         "rename", "key", "convert"]),
                                  st.integers(0, 3)), inner, max_size=3),
    ),
    max_leaves=8,
)  # fmt: skip


@fuzz(1000)
@given(
    body=st.one_of(OPS, st.lists(st.one_of(OP, JUNK), max_size=4), JUNK),
    query=st.one_of(QUERY_OPS, JUNK),
)
def test_fuzz_compat_rule_configs_are_checked_with_their_key_path(body: Any, query: Any) -> None:
    parsed_rule({"name": "r", "match": {"path": "/x"}, "rewrite": {"query": query, "body": body}})
