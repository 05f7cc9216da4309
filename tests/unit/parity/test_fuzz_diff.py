"""Property-based fuzzing of the parity diff and noise rule: any two answers — JSON of any
shape, text, bytes that are neither, compressed or not — compare without an exception under any
rules the config can compile; an answer compared with itself (even written differently) shows no
difference; comparing the other way round gives the same differences, mirrored, where that
holds (JSON bodies without unordered arrays); and the noise rule never reports what the primary
does on its own.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutover.parity import diff
from cutover.parity.diff import (
    MAX_DIFFERENCES,
    Difference,
    DiffRules,
    PathPattern,
    Reply,
    Tolerance,
    compare,
    compile_pattern,
    endpoint_of,
    make_reply,
)
from cutover.parity.noise import Sample, Thresholds, analyse
from tests.fuzzing import NASTY_STRINGS, fuzz

KEY_WORDS = ("a", "b", "id", "alerts", "labels", "startsAt", "odd key", "it's", "x.y", "")
KEYS = st.one_of(st.sampled_from(KEY_WORDS), st.text(max_size=4))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 1.0, -0.0, 1e11, 1e12, 253402300800]),
    st.sampled_from(NASTY_STRINGS),
    st.sampled_from(["2026-01-02T03:04:05Z", "2026-01-02T03:04:06.123456789+01:00",
                     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-13-45"]),
    st.text(max_size=6),
)  # fmt: skip
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(KEYS, inner, max_size=4),
        # arrays of items with an id: what array_keys pair up
        st.lists(st.fixed_dictionaries({"id": SCALARS}, optional={"a": inner}), max_size=4),
    ),
    max_leaves=16,
)
PATTERN_TEXTS = st.one_of(
    st.sampled_from(["status", "body", "body:*", "body:3", "header.date", "header.*", "$",
                     "$..id", "$.alerts[*].id", "$.alerts", "$.*", "$['odd key']", "$..*",
                     "$.a[0]", "$['it\\'s']", "$..labels..a", "$.b"]),
    st.text(alphabet="$.*[]'\\0123abid ", max_size=12),
)  # fmt: skip


def _patterns(texts: list[str]) -> tuple[PathPattern, ...]:
    out = []
    for text in texts:
        try:
            out.append(compile_pattern(text))
        except ValueError:
            continue  # refused: the config says so at its key
    return tuple(out)


@st.composite
def rules(draw: st.DrawFn, ordered: bool = False) -> DiffRules:
    tolerances = tuple(
        Tolerance(
            p,
            numeric=draw(st.none() | st.floats(0, 10)),
            timestamp=draw(st.none() | st.floats(0, 5)),
        )
        for p in _patterns(draw(st.lists(PATTERN_TEXTS, max_size=2)))
    )
    return DiffRules(
        ignore=_patterns(draw(st.lists(PATTERN_TEXTS, max_size=2))),
        tolerances=tolerances,
        array_keys=tuple(
            (p, draw(st.sampled_from(["id", "a", "odd key"])))
            for p in _patterns(draw(st.lists(PATTERN_TEXTS, max_size=2)))
        ),
        unordered=() if ordered else _patterns(draw(st.lists(PATTERN_TEXTS, max_size=2))),
        headers=tuple(draw(st.lists(st.sampled_from(["content-type", "x-a", "date"]), max_size=2))),
    )


def _json_reply(draw: st.DrawFn, doc: Any) -> Reply:
    body = orjson.dumps(
        doc, option=draw(st.sampled_from([0, orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS]))
    )
    return Reply(draw(st.sampled_from([200, 200, 404, 500, 0])), _headers(draw), body)


def _headers(draw: st.DrawFn) -> dict[str, str]:
    return draw(
        st.dictionaries(
            st.sampled_from(["content-type", "x-a", "date"]),
            st.sampled_from(["application/json", "text/plain", "", "a", "b"]),
            max_size=3,
        )
    )


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    kind = draw(st.sampled_from(["json", "json", "text", "bytes", "compressed"]))
    if kind == "json":
        return _json_reply(draw, draw(JSON))
    if kind == "text":
        body = "\n".join(
            draw(st.lists(st.sampled_from(["a", "b", "c", "", "{", "é"]), max_size=30))
        )
        return Reply(200, _headers(draw), body.encode())
    raw = draw(st.binary(max_size=40))
    if kind == "bytes":
        return Reply(draw(st.sampled_from([200, 0])), _headers(draw), raw)
    encoding = draw(st.sampled_from(["gzip", "deflate", "x-gzip", "br"]))
    body = draw(st.sampled_from([gzip.compress(raw), zlib.compress(raw), raw, raw[:3]]))
    return make_reply(
        200, [("Content-Encoding", encoding), ("Content-Type", "application/json")], body
    )


@fuzz(600)
@given(left=replies(), right=replies(), rules=rules())
def test_fuzz_parity_compare_never_raises(left: Reply, right: Reply, rules: DiffRules) -> None:
    out = compare(left, right, rules)
    assert len(out) <= MAX_DIFFERENCES
    for d in out:
        assert isinstance(d, Difference) and d.field
    if left == right:
        assert out == []


@fuzz(600)
@given(doc=JSON, status=st.sampled_from([200, 500, 0]), rules=rules(), data=st.data())
def test_fuzz_parity_an_answer_equals_itself_however_written(
    doc: Any, status: int, rules: DiffRules, data: st.DataObject
) -> None:
    compact = Reply(status, {"content-type": "application/json"}, orjson.dumps(doc))
    pretty = Reply(
        status,
        {"content-type": "application/json"},
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
    )
    assert compare(compact, pretty, rules) == []
    assert compare(pretty, compact, rules) == []


def _mirrored(d: Difference) -> tuple[str, str, Any, Any]:
    kind = {"missing": "extra", "extra": "missing"}.get(d.kind, d.kind)
    return (d.path, kind, _key(d.right), _key(d.left))


def _key(value: Any) -> Any:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) if value is not None else None


@fuzz(600)
@given(left=JSON, right=JSON, rules=rules(ordered=True))
def test_fuzz_parity_diff_is_symmetric_for_json(left: Any, right: Any, rules: DiffRules) -> None:
    a = Reply(200, {"content-type": "application/json"}, orjson.dumps(left))
    b = Reply(200, {"content-type": "application/json"}, orjson.dumps(right))
    forward, backward = compare(a, b, rules), compare(b, a, rules)
    if len(forward) < MAX_DIFFERENCES and len(backward) < MAX_DIFFERENCES:
        assert sorted(map(_mirrored, forward)) == sorted(
            (d.path, d.kind, _key(d.left), _key(d.right)) for d in backward
        )


@fuzz(300)
@given(
    pairs=st.lists(st.tuples(replies(), replies(), replies()), min_size=1, max_size=6),
    rules=rules(),
    thresholds=st.builds(Thresholds, st.floats(0, 100), st.floats(0, 100)),
    paths=st.lists(st.text(alphabet="/ab1{}%?#", max_size=12), min_size=1, max_size=6),
)
def test_fuzz_parity_noise_rule(
    pairs: list[tuple[Reply, Reply, Reply]],
    rules: DiffRules,
    thresholds: Thresholds,
    paths: list[str],
) -> None:
    samples = []
    same = []
    for i, (primary, candidate, secondary) in enumerate(pairs):
        endpoint = endpoint_of("get", paths[i % len(paths)])
        raw = {d.field: d.kind for d in compare(primary, candidate, rules)}
        noise = frozenset(d.field for d in compare(primary, secondary, rules))
        samples.append(Sample(endpoint, raw, noise))
        same.append(Sample(endpoint, raw, frozenset(raw)))  # the primary differs as much alone
    for stats in analyse(samples, thresholds):
        assert 0 <= stats.differing <= stats.requests
        assert all(f.raw > f.noise for f in stats.reported)
    for stats in analyse(same, thresholds):
        assert stats.reported == () and stats.differing == 0


ID_VALUES = st.sampled_from([True, False, 1, 0, 1.0, -0.0, "1", "true", None, "a"])
KEYED = st.lists(
    st.fixed_dictionaries({"id": ID_VALUES}, optional={"a": SCALARS}), max_size=4
)  # fmt: skip
BY_ID = DiffRules(array_keys=((compile_pattern("$"), "id"),))


@fuzz(500)
@given(left=KEYED, right=KEYED)
def test_fuzz_parity_keyed_arrays_are_symmetric(left: Any, right: Any) -> None:
    """Items paired by a key: the same pairs whichever side is the primary."""
    a = Reply(200, {"content-type": "application/json"}, orjson.dumps(left))
    b = Reply(200, {"content-type": "application/json"}, orjson.dumps(right))
    forward, backward = compare(a, b, BY_ID), compare(b, a, BY_ID)
    assert sorted(map(_mirrored, forward)) == sorted(
        (d.path, d.kind, _key(d.left), _key(d.right)) for d in backward
    )


def _mutated(draw: st.DrawFn, doc: Any) -> Any:
    """`doc` with a few of its leaves swapped for look-alikes (`true` for `1`, `1.0` for `1`),
    its other subtrees left equal: what two implementations' answers mostly are."""
    if isinstance(doc, dict):
        return {k: _mutated(draw, v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_mutated(draw, v) for v in doc]
    if draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from([True, False, 1, 0, 1.0, 0.0, -0.0, None, "1", "x"]))
    return doc


@fuzz(600)
@given(doc=JSON, rules=rules(), data=st.data())
def test_fuzz_parity_alike_subtrees_are_passed_over_with_the_same_result(
    doc: Any, rules: DiffRules, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_walk` passes over objects and arrays that are the same JSON on both sides: whatever
    the rules, what it finds is what the full walk finds (`true` is not `1`, `1.0` is `1`)."""
    other = _mutated(data.draw, {"same": doc, "changed": doc, "list": [doc, doc]})
    a = Reply(200, {"content-type": "application/json"}, orjson.dumps({"same": doc,
              "changed": doc, "list": [doc, doc]}))  # fmt: skip
    b = Reply(200, {"content-type": "application/json"}, orjson.dumps(other))
    found = compare(a, b, rules)
    with monkeypatch.context() as m:
        m.setattr(diff, "_same_json", lambda left, right: False)
        assert found == compare(a, b, rules)


def test_a_boolean_is_not_passed_over_as_the_number_python_takes_it_for() -> None:
    a = Reply(200, {"content-type": "application/json"}, b'{"a": [true, 0, 1.0], "b": {"c": 1}}')
    b = Reply(200, {"content-type": "application/json"}, b'{"a": [1, false, 1], "b": {"c": 1}}')
    assert [(d.path, d.kind) for d in compare(a, b)] == [("$.a[0]", "type"), ("$.a[1]", "type")]
