"""One mirrored comparison: the candidate against the primary's two readings."""

from __future__ import annotations

import json
from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from cutover.parity import mirror
from cutover.parity.config import ParityConfig
from cutover.parity.diff import Difference, DiffRules, Reply, compare, make_reply
from cutover.parity.mirror import MirrorJob
from cutover.parity.mirror import compare_job as _compare
from cutover.parity.noise import analyse
from tests.fuzzing import fuzz, json_values

JSON = (("content-type", "application/json"),)
JSON_TYPES = ("application/json", "text/plain", "", "application/problem+json; charset=utf-8")


def job(body: dict[str, object]) -> MirrorJob:
    return MirrorJob(
        route="default", to="go", primary="python", method="GET",
        raw_path="/api/dashboard/overview", headers=CIMultiDictProxy(CIMultiDict()), body=b"",
        peer="127.0.0.1", scheme="http", host=None, request_id="r", status=200,
        response_headers=JSON, response_body=orjson.dumps(body),
    )  # fmt: skip


def reply(body: dict[str, object]) -> Reply:
    return make_reply(200, JSON, orjson.dumps(body))


def test_a_write_between_the_readings_is_not_the_candidates_difference() -> None:
    # Python answered the client with 7 alerts; an alert landed; Go and Python's second
    # reading both say 8. Go told the truth of its moment.
    sample, differences = _compare(
        job({"total_alerts": 7, "ok": True}),
        reply({"total_alerts": 8, "ok": True}),
        reply({"total_alerts": 8, "ok": True}),
        ParityConfig(),
    )
    assert sample.raw == {}
    assert differences == []
    assert sample.noise == frozenset({"$.total_alerts"})  # the primary did change


def test_a_candidate_unlike_both_readings_differs() -> None:
    sample, differences = _compare(
        job({"total_alerts": 7, "ok": True}),
        reply({"total_alerts": 7, "ok": False}),
        reply({"total_alerts": 8, "ok": True}),
        ParityConfig(),
    )
    assert dict(sample.raw) == {"$.ok": "value"}
    assert [d.field for d in differences] == ["$.ok"]


def test_without_a_second_reading_every_difference_counts() -> None:
    sample, _ = _compare(job({"total_alerts": 7}), reply({"total_alerts": 8}), None, ParityConfig())
    assert dict(sample.raw) == {"$.total_alerts": "value"}
    assert sample.noise is None


def test_races_do_not_count_as_differing_requests_beside_a_real_difference() -> None:
    # 20 requests where Go really differs on the field, 5 where a write raced the readings:
    # the field is reported, and the 5 raced requests are not counted as differing.
    real = [
        _compare(job({"n": i}), reply({"n": -1}), reply({"n": i}), ParityConfig())[0]
        for i in range(20)
    ]
    raced = [
        _compare(job({"n": i}), reply({"n": i + 1}), reply({"n": i + 1}), ParityConfig())[0]
        for i in range(5)
    ]
    (stats,) = analyse(real + raced)
    assert stats.requests == 25
    assert stats.differing == 20


@given(primary=json_values(), candidate=json_values(), ctype=st.sampled_from(JSON_TYPES))
@fuzz(300)
def test_a_second_reading_alike_the_first_dismisses_nothing_without_a_third_comparison(
    primary: object, candidate: object, ctype: str
) -> None:
    """The noise reading is the primary's very answer (the usual case): the comparison of it
    with the candidate's, skipped, would have been the first one again."""
    headers = (("content-type", ctype),)
    body = json.dumps(primary).encode()  # (big integers and NaN too: not JSON to orjson)
    copy = replace(job({}), response_headers=headers, response_body=body)
    answer = make_reply(200, headers, json.dumps(candidate).encode())
    again = make_reply(200, headers, body)
    settings = ParityConfig()
    sample, differences = _compare(copy, answer, again, settings)
    first = make_reply(200, headers, body)
    expected = compare(first, answer, settings.rules)
    later = {d.field for d in compare(again, answer, settings.rules)}
    assert differences == [d for d in expected if d.field in later]
    assert sample.noise == frozenset()
    assert set(sample.raw) == {d.field for d in differences}


def test_a_second_reading_under_another_content_type_is_compared_a_third_time() -> None:
    # the same body bytes read as text, then as JSON: another answer (even where no header is
    # compared), whose comparison with the candidate's dismisses what the first one found
    settings = ParityConfig(rules=DiffRules(headers=()))
    copy = replace(job({}), response_headers=(("content-type", "text/plain"),), response_body=b"1")
    answer = make_reply(200, JSON, b"2")
    again = make_reply(200, JSON, b"1")
    sample, differences = _compare(copy, answer, again, settings)
    first = make_reply(200, (("content-type", "text/plain"),), b"1")
    assert [d.field for d in compare(first, answer, settings.rules)] == ["body"]
    assert [d.field for d in compare(again, answer, settings.rules)] == ["$"]
    assert differences == []  # the first comparison's field changed between the readings
    assert sample.noise == frozenset()  # (the bytes are alike, no header compared)


def test_a_second_reading_alike_the_first_costs_two_comparisons_not_three(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Reply, Reply]] = []

    def counted(left: Reply, right: Reply, rules: DiffRules) -> list[Difference]:
        calls.append((left, right))
        return compare(left, right, rules)

    monkeypatch.setattr(mirror, "compare", counted)
    sample, _ = _compare(job({"n": 1}), reply({"n": 2}), reply({"n": 1}), ParityConfig())
    assert dict(sample.raw) == {"$.n": "value"} and len(calls) == 2
    calls.clear()
    _compare(job({"n": 1}), reply({"n": 2}), reply({"n": 3}), ParityConfig())  # it changed
    assert len(calls) == 3
