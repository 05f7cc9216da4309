"""The operations a real legacy/new pair needs: empty arrays and null, conditions, arrays of
one, timestamps, operations per status and bodies for empty answers (pure)."""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.compat import jsonops as J
from cutover.compat.rules import Fill, ResponseTransform


def p(text: str) -> tuple[str, ...]:
    return J.split_path(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


# -- empty arrays and null --------------------------------------------------------------------


def test_empty_array_to_null_and_back() -> None:
    doc = {"data": {"alerts": [], "silences": [1]}, "other": []}
    out = J.EmptyToNull((p("data.alerts"), p("data.silences"), p("missing.x"))).apply(doc)
    assert out == {"data": {"alerts": None, "silences": [1]}, "other": []}
    back = J.NullToEmpty((p("data.alerts"), p("missing"))).apply(out)
    assert back == {"data": {"alerts": [], "silences": [1]}, "other": []}
    assert J.EmptyToNull(((),)).apply([]) is None  # the document itself
    assert J.NullToEmpty(((),)).apply(None) == []


@given(value=st.one_of(st.just([]), st.lists(JSON, min_size=1, max_size=5)), rest=JSON)
def test_empty_to_null_round_trips_every_array(value: list[Any], rest: Any) -> None:
    doc = {"items": copy.deepcopy(value), "rest": rest}
    there = J.EmptyToNull((p("items"),)).apply(copy.deepcopy(doc))
    assert there["rest"] == rest
    assert there["items"] == (None if value == [] else value)
    assert J.NullToEmpty((p("items"),)).apply(there) == doc


@pytest.mark.parametrize("value", ["", 0, False, {}, "[]", {"a": []}])
def test_empty_to_null_leaves_other_values(value: Any) -> None:
    assert J.EmptyToNull((p("x"),)).apply({"x": value}) == {"x": value}
    assert J.NullToEmpty((p("x"),)).apply({"x": value}) == {"x": value}


# -- arrays of one ----------------------------------------------------------------------------


def test_to_array_wraps_a_value_once() -> None:
    op = J.ToArray((p("alert"), p("none"), p("absent")))
    doc = {"alert": {"labels": {"a": "b"}}, "none": None}
    once = op.apply(doc)
    assert once == {"alert": [{"labels": {"a": "b"}}], "none": None}
    assert op.apply(copy.deepcopy(once)) == once  # an array stays as it is
    assert J.ToArray(((),)).apply({"a": 1}) == [{"a": 1}]


@given(value=JSON)
def test_to_array_always_gives_an_array_or_null(value: Any) -> None:
    out = J.ToArray((p("v"),)).apply({"v": copy.deepcopy(value)})["v"]
    if value is None:
        assert out is None
    elif isinstance(value, list):
        assert out == value
    else:
        assert out == [value]


def test_v1_list_fans_out_as_v2_single_item_lists() -> None:
    item = {"alertname": "Disk", "labels": {"alertname": "Disk"}}
    ops = (J.Wrap((), "alerts"), J.ToArray((p("alerts"),)))
    assert J.apply(ops, item) == {"alerts": [item]}


# -- conditions -------------------------------------------------------------------------------


def when(
    condition: J.Condition, then: tuple[J.Op, ...], otherwise: tuple[J.Op, ...] = ()
) -> J.When:
    return J.When(condition, then, otherwise)


def test_when_on_status_and_class() -> None:
    cond = J.Condition(status=J.StatusSet(codes=frozenset({404}), classes=frozenset({5})))
    op = when(cond, (J.Set(p("matched"), True),), (J.Set(p("matched"), False),))
    for status, matched in ((404, True), (503, True), (500, True), (400, False), (200, False)):
        assert J.apply((op,), {}, J.Facts(status)) == {"matched": matched}, status
    assert J.apply((op,), {}) == {"matched": False}  # a request body has no status


def test_when_on_presence_absence_and_values() -> None:
    cond = J.Condition(
        present=(p("data"),), absent=(p("error"),), equals=((p("data.kind"), "list"),)
    )
    op = when(cond, (J.Unwrap((), "data"),))
    assert op.apply({"data": {"kind": "list", "n": 1}}) == {"kind": "list", "n": 1}
    assert op.apply({"data": {"kind": "one"}}) == {"data": {"kind": "one"}}
    assert op.apply({"data": {"kind": "list"}, "error": None}) == {
        "data": {"kind": "list"},
        "error": None,
    }  # present, though null
    assert op.apply([1, 2]) == [1, 2]  # not an object: nothing is present


@pytest.mark.parametrize(
    ("expected", "value", "holds"),
    [
        (1, 1, True),
        (1, True, False),
        (True, 1, False),
        (1, 1.0, False),
        ("1", 1, False),
        (None, None, True),
        ([], [], True),
        ([1], [True], False),
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
    ],
)
def test_equals_is_json_equality(expected: Any, value: Any, holds: bool) -> None:
    cond = J.Condition(equals=((p("v"), expected),))
    assert cond.holds({"v": value}, J.NO_FACTS) is holds


def test_when_inside_each_looks_at_the_item() -> None:
    op = J.Each(
        p("items"),
        (when(J.Condition(equals=((p("state"), "active"),)), (J.Set(p("state"), "firing"),)),),
    )
    doc = {"items": [{"state": "active"}, {"state": "gone"}, 3]}
    assert op.apply(doc, J.Facts(200)) == {"items": [{"state": "firing"}, {"state": "gone"}, 3]}


# -- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "digits", "trim", "zone", "expected"),
    [
        ("2025-04-01T10:00:00.123456789Z", None, False, "Z", "2025-04-01T10:00:00.123456789Z"),
        ("2025-04-01T10:00:00.123456789Z", 3, False, "Z", "2025-04-01T10:00:00.123Z"),
        ("2025-04-01T10:00:00.120Z", None, True, "Z", "2025-04-01T10:00:00.12Z"),
        ("2025-04-01T10:00:00.000Z", None, True, "Z", "2025-04-01T10:00:00Z"),
        ("2025-04-01T10:00:00Z", 6, False, "Z", "2025-04-01T10:00:00.000000Z"),
        ("2025-04-01T10:00:00.5+00:00", None, False, "Z", "2025-04-01T10:00:00.5Z"),
        ("2025-04-01T10:00:00.5Z", None, False, "+00:00", "2025-04-01T10:00:00.5+00:00"),
        ("2025-04-01T12:00:00+02:00", None, False, "Z", "2025-04-01T10:00:00Z"),
        ("2025-04-01T12:00:00+02:00", 0, False, "keep", "2025-04-01T12:00:00+02:00"),
        ("2025-04-01t10:00:00z", None, False, "keep", "2025-04-01T10:00:00Z"),
        (1743501600, None, False, "Z", "2025-04-01T10:00:00Z"),
        (1743501600.25, 3, False, "Z", "2025-04-01T10:00:00.250Z"),
        (-0.5, None, False, "Z", "1969-12-31T23:59:59.5Z"),
    ],
)
def test_time_formats(value: Any, digits: int | None, trim: bool, zone: str, expected: str) -> None:
    op = J.Time(p("t"), digits, trim, zone)  # type: ignore[arg-type]
    assert op.apply({"t": value}) == {"t": expected}


@pytest.mark.parametrize(
    "value",
    [
        "soon", "2025-02-30T00:00:00Z", "2025-04-01T10:00:00", "2025-04-01T24:00:00Z",
        True, float("inf"), 1e300, {"t": 1}, [1], "9" * 10_000, "0001-01-01T00:30:00+01:00",
    ],
)  # fmt: skip
def test_time_refuses_what_is_not_a_time(value: Any) -> None:
    with pytest.raises(J.TransformError) as exc:
        J.Time(p("t"), 3).apply({"t": value})
    assert exc.value.op == "time" and "t:" in exc.value.message
    assert len(str(exc.value)) < 300  # a huge value is not echoed whole


def test_time_leaves_null_and_absent() -> None:
    assert J.Time(p("t"), 3).apply({"t": None}) == {"t": None}
    assert J.Time(p("t"), 3).apply({}) == {}


INSTANTS = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9998, 12, 30), timezones=st.just(UTC)
)
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m))


@given(instant=INSTANTS, nanos=st.integers(0, 999_999_999), offset=OFFSETS,
       digits=st.integers(0, 9), trim=st.booleans())  # fmt: skip
@settings(max_examples=300)
def test_time_keeps_the_instant(
    instant: datetime, nanos: int, offset: timedelta, digits: int, trim: bool
) -> None:
    local = instant.replace(microsecond=0)
    sign = "+" if offset >= timedelta(0) else "-"
    minutes = abs(int(offset.total_seconds())) // 60
    shifted = (instant.replace(microsecond=0) + offset).strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{shifted}.{nanos:09d}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    utc = J.reformat_time(text, 9, False, "Z")
    assert utc == f"{local.strftime('%Y-%m-%dT%H:%M:%S')}.{nanos:09d}Z"
    short = J.reformat_time(text, digits, trim, "Z")
    # fewer digits is the same instant truncated, and reformatting is idempotent
    assert J.reformat_time(utc, digits, trim, "Z") == short
    assert J.reformat_time(short, digits, trim, "Z") == short
    assert J.reformat_time(short, 9, False, "+00:00").startswith(short[:19])
    assert J.reformat_time(utc, None, False, "keep") == utc


# -- per status, fills, hostile documents ------------------------------------------------------


def test_ops_per_status_most_specific_first() -> None:
    rt = ResponseTransform(
        body=(J.Set(p("from"), "body"),),
        error_body=(J.Set(p("from"), "error_body"),),
        by_code={404: (J.Set(p("from"), "404"),), 201: (J.Set(p("from"), "201"),)},
        by_class={4: (J.Set(p("from"), "4xx"),)},
    )
    got = {s: rt.transform(s, {})["from"] for s in (200, 201, 404, 400, 500, 302)}
    assert got == {200: "body", 201: "201", 404: "404", 400: "4xx", 500: "error_body",
                   302: "error_body"}  # fmt: skip


def test_fills_are_chosen_by_status_and_kind() -> None:
    ok = Fill(J.StatusSet(classes=frozenset({2})), {"status": "success"})
    text = Fill(J.StatusSet(codes=frozenset({502})), {"detail": "{text}"}, empty=False,
                not_json=True)  # fmt: skip
    rt = ResponseTransform(fills=(ok, text))
    assert rt.fill_for(200, empty=True) is ok
    assert rt.fill_for(200, empty=False) is None
    assert rt.fill_for(502, empty=False) is text
    assert rt.fill_for(502, empty=True) is None
    assert rt.reads(201) and rt.reads(502) and not rt.reads(404)


def nested(depth: int) -> Any:
    doc: Any = []
    for _ in range(depth):
        doc = [doc]
    return doc


ALL_OPS: tuple[J.Op, ...] = (
    J.EmptyToNull((p("a"), p("a.b"))),
    J.NullToEmpty((p("a"),)),
    J.ToArray((p("a.b"),)),
    J.When(J.Condition(present=(p("a.b.c"),), equals=((p("a"), [1]),)), (J.Drop((p("a"),)),)),
    J.Time(p("a.b"), 3),
    J.Copy(p("a"), p("copy")),
)


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: op.name)
@pytest.mark.parametrize(
    "doc",
    [
        {"a": nested(1000)},  # deeper than orjson writes and Python recurses
        {"a": list(range(200_000))},
        {"a": "x" * 1_000_000},
        {"a": {"b": {"c": 1}}},
        {"a": 5},
        [1, {"a": None}],
        "text",
        None,
        orjson.loads(b"[" * 1000 + b"]" * 1000),
    ],
    ids=["deep", "huge-array", "long-string", "object", "number", "array", "string", "null",
         "orjson-deep"],
)  # fmt: skip
def test_hostile_documents_only_ever_fail_as_transform_errors(op: J.Op, doc: Any) -> None:
    for status in (200, 404, None):
        with contextlib.suppress(J.TransformError):
            J.apply((op,), copy.copy(doc), J.Facts(status))


@given(doc=JSON, status=st.integers(100, 599))
@settings(max_examples=200)
def test_any_document_any_status_never_raises_anything_else(doc: Any, status: int) -> None:
    ops = (
        J.When(J.Condition(status=J.StatusSet(classes=frozenset({4}))), (J.Wrap((), "error"),)),
        J.Each(p("items"), (J.ToArray((p("x"),)), J.EmptyToNull((p("y"),)))),
        J.Time(p("t"), 3, True),
    )
    try:
        out = J.apply(ops, copy.deepcopy(doc), J.Facts(status))
    except J.TransformError:
        return
    orjson.dumps(out)
