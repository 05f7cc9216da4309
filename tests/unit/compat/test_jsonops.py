"""JSON transform operations (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from cutover.compat import jsonops as J


def p(text: str) -> tuple[str, ...]:
    return J.split_path(text)


def test_go_alerts_to_legacy_history_shape() -> None:
    go = {
        "status": "success",
        "data": {
            "alerts": [
                {
                    "labels": {"alertname": "Disk", "severity": "warning"},
                    "status": {"state": "active", "silencedBy": []},
                    "receivers": [],
                    "fingerprint": "f1",
                }
            ],
            "total": 7,
            "page": 1,
            "limit": 100,
        },
    }
    ops = (
        J.Unwrap((), "data"),
        J.Each(
            p("alerts"),
            (
                J.Copy(p("labels.alertname"), p("alertname")),
                J.Move(p("status.state"), p("status")),
                J.Values(p("status"), (("active", "firing"),)),
                J.Drop((p("receivers"),)),
            ),
        ),
        J.Length(p("alerts"), p("total")),
        J.Keep((), frozenset({"alerts", "total"})),
    )
    assert J.apply(ops, go) == {
        "alerts": [
            {
                "labels": {"alertname": "Disk", "severity": "warning"},
                "status": "firing",
                "fingerprint": "f1",
                "alertname": "Disk",
            }
        ],
        "total": 1,
    }


def test_rename_move_default_set_wrap() -> None:
    doc: Any = {"a": {"b": 1}, "n": None}
    doc = J.Rename(p("a.b"), "c").apply(doc)
    assert doc == {"a": {"c": 1}, "n": None}
    doc = J.Move(p("a.c"), p("x.y.z")).apply(doc)
    assert doc == {"a": {}, "n": None, "x": {"y": {"z": 1}}}
    doc = J.Default(p("n"), 5).apply(doc)
    doc = J.Default(p("x.y.z"), 9).apply(doc)  # present: kept
    doc = J.Set(p("s"), [1]).apply(doc)
    assert doc == {"a": {}, "n": 5, "x": {"y": {"z": 1}}, "s": [1]}
    assert J.Wrap((), "data").apply({"k": 1}) == {"data": {"k": 1}}
    assert J.Wrap(p("k"), "v").apply({"k": 1}) == {"k": {"v": 1}}
    assert J.Move((), p("payload")).apply([1, 2]) == {"payload": [1, 2]}


def test_absent_paths_are_ignored() -> None:
    ops = (
        J.Rename(p("nope"), "x"),
        J.Move(p("a.b"), p("c")),
        J.Drop((p("q.r"),)),
        J.Each(p("items"), (J.Set(p("k"), 1),)),
        J.Convert(p("t"), "epoch"),
        J.Unwrap(p("missing"), "data"),
    )
    assert J.apply(ops, {"z": 1}) == {"z": 1}


@pytest.mark.parametrize(
    ("op", "doc", "message"),
    [
        (J.Unwrap((), "data"), {"status": "error"}, "no key 'data'"),
        (J.Each(p("alerts"), ()), {"alerts": {"a": 1}}, "alerts is not an array"),
        (J.Set(p("a.b"), 1), {"a": [1]}, "a is not an object"),
        (J.Convert(p("s"), "severity_name"), {"s": 9}, "severity from 1 to 4"),
        (J.Convert(p("t"), "epoch"), {"t": "yesterday"}, "expected a number"),
    ],
)
def test_wrong_shapes_fail_closed(op: J.Op, doc: Any, message: str) -> None:
    with pytest.raises(J.TransformError) as exc:
        op.apply(doc)
    assert message in str(exc.value)
    assert str(exc.value).startswith(op.name)


@pytest.mark.parametrize(
    ("value", "to", "expected"),
    [
        (1, "severity_name", "critical"),
        ("4", "severity_name", "noise"),
        ("warning", "severity_name", "warning"),
        ("Info", "severity_number", 3),
        (2, "severity_number", 2),
        ("2025-04-01T00:00:00Z", "epoch", 1743465600),
        ("2025-04-01T02:00:00+02:00", "epoch", 1743465600),
        ("2025-04-01T00:00:00.123456789Z", "epoch", 1743465600.123456),
        ("2025-04-01T00:00:00.5Z", "epoch_ms", 1743465600500),
        (1743465600, "rfc3339", "2025-04-01T00:00:00Z"),
        (1743465600.25, "rfc3339", "2025-04-01T00:00:00.25Z"),
        ("2025-04-01T02:00:00+02:00", "rfc3339", "2025-04-01T00:00:00Z"),
        (5, "string", "5"),
        ("7", "integer", 7),
        ("1.5", "number", 1.5),
    ],
)
def test_representations(value: Any, to: str, expected: Any) -> None:
    assert J.convert(value, to) == expected


def test_epoch_rfc3339_round_trip() -> None:
    for seconds in (0, 1_700_000_000, 1_743_465_600.5):
        assert J.convert(J.convert(seconds, "rfc3339"), "epoch") == seconds


def test_values_only_maps_matching_types() -> None:
    op = J.Values(p("s"), ((1, "critical"), ("1", "one")))
    assert op.apply({"s": 1}) == {"s": "critical"}
    assert op.apply({"s": "1"}) == {"s": "one"}
    assert op.apply({"s": True}) == {"s": True}
    assert op.apply({"s": 3}) == {"s": 3}


def test_copy_is_deep() -> None:
    doc = {"a": {"b": [1]}}
    doc = J.Copy(p("a"), p("c")).apply(doc)
    doc["c"]["b"].append(2)
    assert doc["a"] == {"b": [1]}
