"""One mirrored comparison: the candidate against the primary's two readings."""

from __future__ import annotations

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from cutover.parity.config import ParityConfig
from cutover.parity.diff import Reply, make_reply
from cutover.parity.mirror import MirrorJob
from cutover.parity.mirror import compare_job as _compare
from cutover.parity.noise import analyse

JSON = (("content-type", "application/json"),)


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
