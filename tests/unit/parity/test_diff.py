"""The structural diff engine: paths, kinds, arrays, rules, text bodies, endpoint templates."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
import pytest

from cutover.parity.diff import (
    Difference,
    DiffRules,
    Reply,
    Tolerance,
    compare,
    compile_pattern,
    endpoint_of,
    field_of,
    make_reply,
)

JSON = (("Content-Type", "application/json"),)


def reply(body: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = JSON) -> Reply:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return make_reply(status, headers, raw)


def diff(left: Any, right: Any, **rules: Any) -> list[tuple[str, str]]:
    compiled: dict[str, Any] = {}
    for key, value in rules.items():
        if key in ("ignore", "unordered"):
            compiled[key] = tuple(compile_pattern(p) for p in value)
        elif key == "array_keys":
            compiled[key] = tuple((compile_pattern(p), k) for p, k in value.items())
        elif key == "tolerances":
            compiled[key] = tuple(
                Tolerance(compile_pattern(p), numeric=n, timestamp=t) for p, n, t in value
            )
        else:
            compiled[key] = value
    return [(d.path, d.kind) for d in compare(reply(left), reply(right), DiffRules(**compiled))]


def test_equal_bodies_have_no_differences() -> None:
    assert diff({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}) == []
    assert diff({"a": 1, "b": 2}, {"b": 2, "a": 1}) == []  # key order is not a difference
    assert diff({"n": 1}, {"n": 1.0}) == []  # one JSON number type


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ({"a": 1}, {}, [("$.a", "missing")]),
        ({}, {"a": 1}, [("$.a", "extra")]),
        ({"alertname": "X"}, {"alert_name": "X"}, [("$.alertname", "missing"),
                                                    ("$.alert_name", "extra")]),
        ({"count": 2}, {"count": "2"}, [("$.count", "type")]),
        ({"ok": True}, {"ok": 1}, [("$.ok", "type")]),
        ({"x": None}, {"x": 0}, [("$.x", "type")]),
        ({"v": "a"}, {"v": "b"}, [("$.v", "value")]),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}, [("$.a.b[1]", "value")]),
        ({"l": [1, 2, 3]}, {"l": [1, 2]}, [("$.l[2]", "missing")]),
        ({"l": [1]}, {"l": [1, 2]}, [("$.l[1]", "extra")]),
        ({"odd key": 1}, {"odd key": 2}, [("$['odd key']", "value")]),
        ([1], {"a": 1}, [("$", "type")]),
    ],
)  # fmt: skip
def test_kinds_and_paths(left: Any, right: Any, expected: list[tuple[str, str]]) -> None:
    assert diff(left, right) == expected


def test_values_are_kept_for_examples() -> None:
    (d,) = compare(reply({"count": 2}), reply({"count": "2"}))
    assert d == Difference("$.count", "type", 2, "2")
    assert d.field == "$.count"


def test_field_generalises_positions() -> None:
    assert field_of("$.alerts[3].labels['a.b']") == "$.alerts[*].labels['a.b']"
    assert field_of('$.alerts[fp="x]y"].id') == "$.alerts[*].id"
    assert field_of("header.date") == "header.date"


def test_status_and_configured_headers() -> None:
    left = make_reply(200, [("Content-Type", "text/plain"), ("Date", "Mon")], b"x")
    right = make_reply(404, [("Content-Type", "text/html"), ("Date", "Tue"), ("X-New", "1")], b"x")
    found = [(d.path, d.kind) for d in compare(left, right)]
    assert found == [("status", "status"), ("header.content-type", "value")]  # Date: not compared
    rules = DiffRules(headers=("x-new", "date"), ignore=(compile_pattern("header.date"),))
    assert [(d.path, d.kind) for d in compare(left, right, rules)] == [
        ("status", "status"),
        ("header.x-new", "extra"),
    ]


def test_no_answer_is_a_status_difference_only() -> None:
    found = compare(reply({"a": 1}), Reply(0, error="connect"))
    assert [(d.path, d.left, d.right) for d in found] == [("status", 200, 0)]


def test_ignore_paths_cover_everything_below() -> None:
    left = {"meta": {"id": 1, "at": 2}, "items": [{"id": 1, "v": 1}], "deep": {"x": {"id": 3}}}
    right = {"meta": {"id": 9, "at": 8}, "items": [{"id": 2, "v": 1}], "deep": {"x": {"id": 4}}}
    assert diff(left, right, ignore=["$.meta", "$..id"]) == []
    assert diff(left, right, ignore=["$.items[*].id"]) == [
        ("$.meta.id", "value"), ("$.meta.at", "value"), ("$.deep.x.id", "value")
    ]  # fmt: skip
    assert diff({"a": 1}, {"b": 1}, ignore=["$.a", "$.b"]) == []  # missing and extra too


def test_numeric_and_timestamp_tolerances() -> None:
    tol = [("$.ms", 0.5, None), ("$..at", None, 2.0)]
    assert diff({"ms": 10.0}, {"ms": 10.4}, tolerances=tol) == []
    assert diff({"ms": 10.0}, {"ms": 10.6}, tolerances=tol) == [("$.ms", "value")]
    same = {"at": "2024-05-01T10:00:00Z", "x": {"at": 1714557600}}
    near = {"at": "2024-05-01T12:00:01.999999999+02:00", "x": {"at": 1714557601500}}  # ms
    assert diff(same, near, tolerances=tol) == []
    far = {"at": "2024-05-01T10:00:03Z", "x": {"at": 1714557603}}
    assert diff(same, far, tolerances=tol) == [("$.at", "value"), ("$.x.at", "value")]
    assert diff({"at": "soon"}, {"at": "later"}, tolerances=tol) == [("$.at", "value")]


def test_arrays_by_key_survive_reordering_and_name_the_missing_item() -> None:
    left = {"alerts": [{"fp": "a", "s": 1}, {"fp": "b", "s": 2}, {"fp": "c", "s": 3}]}
    right = {"alerts": [{"fp": "c", "s": 3}, {"fp": "a", "s": 9}]}
    assert diff(left, right, array_keys={"$.alerts": "fp"}) == [
        ('$.alerts[fp="a"].s', "value"),
        ('$.alerts[fp="b"]', "missing"),
    ]
    # without the key, positions are compared
    assert ("$.alerts[0].fp", "value") in diff(left, right)
    # a key that is absent or repeated falls back to positions
    dup = {"alerts": [{"fp": "a"}, {"fp": "a"}]}
    assert diff(dup, dup, array_keys={"$.alerts": "fp"}) == []


def test_unordered_arrays_are_multisets() -> None:
    assert diff({"t": [1, 2, 2, 3]}, {"t": [3, 2, 1, 2]}, unordered=["$.t"]) == []
    assert diff({"t": [1, 2, 2]}, {"t": [2, 1]}, unordered=["$.t"]) == [("$.t[2]", "missing")]
    assert diff({"t": [{"a": 1}, {"a": 2}]}, {"t": [{"a": 2}, {"a": 5}]}, unordered=["$.t"]) == [
        ("$.t[0].a", "value")
    ]
    assert diff({"t": [1, 2]}, {"t": [2, 1]}) == [("$.t[0]", "value"), ("$.t[1]", "value")]


def test_text_bodies_by_line() -> None:
    left = make_reply(200, [("Content-Type", "text/plain")], b"a\nb\nc\n")
    right = make_reply(200, [("Content-Type", "text/plain")], b"a\nB\nc\nd\n")
    assert [(d.path, d.kind, d.left, d.right) for d in compare(left, right)] == [
        ("body:2", "text", "b", "B"),
        ("body:4", "extra", None, "d"),
    ]
    rules = DiffRules(ignore=(compile_pattern("body:2"),))
    assert [d.path for d in compare(left, right, rules)] == ["body:4"]


def test_json_against_text_is_a_body_type_difference() -> None:
    left = reply({"a": 1})
    right = make_reply(200, [("Content-Type", "application/json")], b"oops")
    assert [(d.path, d.kind) for d in compare(left, right)] == [("body", "type")]


def test_gzip_bodies_are_compared_decoded() -> None:
    plain = reply({"a": 1})
    packed = make_reply(
        200, [*JSON, ("Content-Encoding", "gzip")], gzip.compress(orjson.dumps({"a": 2}))
    )
    assert [(d.path, d.right) for d in compare(plain, packed)] == [("$.a", 2)]


def test_many_differences_are_capped() -> None:
    left = {"l": list(range(5000))}
    right = {"l": [-1] * 5000}
    assert len(compare(reply(left), reply(right))) == 200


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("$.a", "$.a", True),
        ("$.a", "$.a.b[0]", True),
        ("$.a", "$.ab", False),
        ("$..id", "$.x[3].id", True),
        ("$..id", "$.id", True),
        ("$..id", "$.idx", False),
        ("$.*.id", "$.x.id", True),
        ("$.*.id", "$.x.y.id", False),
        ("$.l[*]", '$.l[k="v"]', True),
        ("$.l[1]", "$.l[10]", False),
        ("$['a b']", "$['a b'].c", True),
        ("header.date", "header.date", True),
        ("header.*", "header.x-y", True),
        ("body", "body:12", True),
        ("status", "status", True),
    ],
)
def test_patterns(pattern: str, path: str, matches: bool) -> None:
    assert compile_pattern(pattern).matches(path) is matches


@pytest.mark.parametrize("bad", ["", "a.b", "$.a..", "$...a", "$.[x]", "header.a b"])
def test_bad_patterns_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match=r"path|header"):
        compile_pattern(bad)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("get", "/alerts/17?x=1", "GET /alerts/{id}"),
        ("GET", "/alerts/3fa85f64-5717-4562-b3fc-2c963f66afa6/ack", "GET /alerts/{id}/ack"),
        ("GET", "/alerts/0f3a9c2b1d4e5f60", "GET /alerts/{id}"),
        ("GET", "/alerts/a1b2c3d4", "GET /alerts/{id}"),
        ("GET", "/alerts/deadbeef", "GET /alerts/deadbeef"),  # a word, not a fingerprint
        ("GET", "/history", "GET /history"),
        ("GET", "/", "GET /"),
    ],
)
def test_endpoint_templates(method: str, path: str, expected: str) -> None:
    assert endpoint_of(method, path) == expected


def test_configured_endpoint_templates_win() -> None:
    templates = ("/silences/{name}/expire",)
    assert endpoint_of("POST", "/silences/night/expire", templates) == (
        "POST /silences/{name}/expire"
    )
    assert endpoint_of("POST", "/silences/night/other", templates) == "POST /silences/night/other"


def test_endpoints_are_named_from_the_normalized_path() -> None:
    # the gateway's matchers read /%61lerts as /alerts: so does the report
    assert endpoint_of("GET", "/%61lerts/17?x=1") == "GET /alerts/{id}"
    assert endpoint_of("GET", "/x/../alerts/17") == "GET /alerts/{id}"
    assert endpoint_of("GET", "/a%2fb") == "GET /a%2Fb"  # an encoded slash is not a slash
    assert endpoint_of("GET", "/../x") == "GET /../x"  # refused by the gateway; named as is
    templates = ("/silences/{name}/%65xpire",)
    assert endpoint_of("POST", "/%73ilences/night/expire", templates) == (
        "POST /silences/{name}/%65xpire"
    )


def test_huge_text_bodies_are_compared_line_by_line() -> None:
    lines = [f"line {i}" for i in range(3000)]
    changed = [*lines[:10], "changed", *lines[11:]]
    left = make_reply(200, [("Content-Type", "text/plain")], "\n".join(lines).encode())
    right = make_reply(200, [("Content-Type", "text/plain")], "\n".join(changed).encode())
    assert [(d.path, d.right) for d in compare(left, right)] == [("body:11", "changed")]


def test_a_gzip_bomb_is_decoded_only_up_to_the_limit() -> None:
    """A few KiB of gzip may claim gigabytes: decoding stops at the limit and says so."""
    bomb = gzip.compress(b"\0" * (64 * 2**20))
    assert len(bomb) < 100_000
    reply = make_reply(200, [("Content-Encoding", "gzip")], bomb, max_decoded=2**20)
    assert len(reply.body) == 2**20
    assert reply.error == "body_too_large"
    small = make_reply(200, [("Content-Encoding", "gzip")], gzip.compress(b'{"a": 1}'), None, 8)
    assert (small.body, small.error) == (b'{"a": 1}', None)
    cut = make_reply(200, [("Content-Encoding", "gzip")], gzip.compress(b'{"a": 1}'), None, 7)
    assert (cut.body, cut.error) == (b'{"a": 1', "body_too_large")
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(b"[1,2]") + raw.flush()
    assert make_reply(200, [("Content-Encoding", "deflate")], deflated).body == b"[1,2]"
    assert make_reply(200, [("Content-Encoding", "gzip")], b"not gzip").body == b"not gzip"


def test_json_nested_deeper_than_a_walk_goes_is_compared_as_text() -> None:
    # orjson reads JSON up to 1,024 levels deep; the walk's recursion (and orjson's writer,
    # 255 levels) stops sooner. A backend that answers so is compared line by line, and never
    # costs the comparison an exception.
    json = {"content-type": "application/json"}
    deep = Reply(200, json, b"[" * 900 + b"]" * 900)
    other = Reply(200, json, b"[" * 900 + b"1" + b"]" * 900)
    assert [(d.path, d.kind) for d in compare(deep, other)] == [("body:1", "text")]
    assert compare(deep, Reply(200, json, b"[" * 900 + b"]" * 900)) == []
    objects = Reply(200, json, b'{"a":' * 400 + b"1" + b"}" * 400)
    assert len(compare(objects, Reply(200, json, b'{"a":' * 400 + b"2" + b"}" * 400))) == 1
