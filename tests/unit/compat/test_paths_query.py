"""Path templates and query rewrites (pure)."""

from __future__ import annotations

import pytest

from cutover.compat.paths import compile_target, compile_template
from cutover.compat.query import (
    Pagination,
    QDefault,
    QDrop,
    QRename,
    QSet,
    QTemplate,
    QValues,
    compile_template_value,
    decode_query,
    encode_query,
    rewrite_query,
)


@pytest.mark.parametrize(
    ("template", "path", "params"),
    [
        ("/history", "/history", {}),
        ("/history", "/history/", None),
        ("/alerts/{id}", "/alerts/abc", {"id": "abc"}),
        ("/alerts/{id}", "/alerts/a%2Fb", {"id": "a%2Fb"}),  # raw path: encoding kept
        ("/alerts/{id}", "/alerts/a/b", None),  # one segment only
        ("/alerts/{id}", "/alerts/", None),
        ("/a/{x}/b/{y}", "/a/1/b/2", {"x": "1", "y": "2"}),
        ("/legacy/{rest*}", "/legacy/report/x", {"rest": "report/x"}),
        ("/legacy/{rest*}", "/legacy/", {"rest": ""}),
        ("/legacy/{rest*}", "/legacyx", None),
    ],
)
def test_template_match(template: str, path: str, params: dict[str, str] | None) -> None:
    assert compile_template(template).match(path) == params


@pytest.mark.parametrize("bad", ["history", "/a/{id", "/a/{id}/{id}", "/a/{rest*}/b", "/a/}"])
def test_template_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_template(bad)


def test_target_renders_params() -> None:
    target = compile_target("/api/v2/alerts/{id}/x")
    assert target.params == ("id",)
    assert target.render({"id": "a%2Fb"}) == "/api/v2/alerts/a%2Fb/x"
    with pytest.raises(ValueError):
        compile_target("/a/{rest*}")


def test_query_ops_in_order() -> None:
    pairs = decode_query("alertname=Disk%20Full&start_time=2025&fingerprint=f&x=1&x=2")
    ops = (
        QTemplate("filter", compile_template_value('alertname="{alertname}"')),
        QDrop(frozenset({"alertname", "fingerprint"})),
        QRename("start_time", "startTime"),
        QDefault("limit", "100"),
        QSet("x", "3"),
        QValues("startTime", (("2025", "2025-01-01"),)),
    )
    out = rewrite_query(ops, pairs, {})
    assert out == [
        ("startTime", "2025-01-01"),
        ("filter", 'alertname="Disk Full"'),
        ("limit", "100"),
        ("x", "3"),
    ]
    assert encode_query(out) == (
        "startTime=2025-01-01&filter=alertname%3D%22Disk%20Full%22&limit=100&x=3"
    )


def test_template_skipped_without_its_parameter_and_reads_path_params() -> None:
    op = QTemplate("filter", compile_template_value('alertname="{alertname}"'))
    assert op.apply([("status", "firing")], {}) == [("status", "firing")]
    assert op.apply([], {"alertname": "P"}) == [("filter", 'alertname="P"')]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("offset=40&limit=20", [("page", "3"), ("page_size", "20")]),
        ("offset=45&limit=20", [("page", "3"), ("page_size", "20")]),  # rounded down
        ("limit=20", [("page", "1"), ("page_size", "20")]),
        ("offset=200", [("page", "3"), ("page_size", "100")]),  # default limit 100
        ("", [("page", "1")]),
        ("offset=x&limit=20", [("offset", "x"), ("limit", "20")]),  # left for the backend
        ("status=firing&offset=0&limit=5", [("status", "firing"), ("page", "1"),
                                            ("page_size", "5")]),
    ],
)  # fmt: skip
def test_pagination_offset_limit_to_page(query: str, expected: list[tuple[str, str]]) -> None:
    assert Pagination().apply(decode_query(query), {}) == expected
