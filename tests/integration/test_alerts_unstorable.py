"""Values the store cannot hold never turn into a 500 (which Alertmanager re-sends forever), on
SQLite and PostgreSQL alike: identity fields with NUL or too long for an index are refused with
a 400 naming the field; every other string is stored escaped and read back as sent; times that
RFC 3339 cannot name in UTC are refused."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from cutover.core.storable import MAX_KEY
from tests.integration.alerts_helpers import am_alert, envelope, intake_rows, jobs

pytestmark = pytest.mark.parametrize("store", ["sqlite", "postgresql"])

ALERTS = {"forward_to_route": "default", "routing": {"targets": ["slack"]}}


async def post(http, gw, body: Any, path: str = "/webhook/proxy") -> tuple[int, dict]:
    async with http.post(gw.url + path, data=orjson.dumps(body)) as resp:
        return resp.status, await resp.json()


def problems(data: dict) -> list[tuple[str, str]]:
    return [(p["path"], p["expected"]) for p in data["error"]["problems"]]


async def test_nul_in_alertname_is_a_400_naming_it(ag, http, store: str) -> None:
    gw = await ag.start(ALERTS, store=store)
    status, data = await post(http, gw, envelope(am_alert("A"), am_alert("Disk\x00Full")))
    assert status == 400, data
    assert problems(data) == [
        ("$.alerts[1].labels.alertname", "a string without NUL (\\u0000) or unpaired surrogates")
    ]
    assert "Disk" not in orjson.dumps(data).decode()  # label values are never echoed
    assert await intake_rows(gw) == [] and await jobs(gw) == []  # nothing of the group


async def test_nul_in_fingerprint_is_a_400_naming_it(ag, http, store: str) -> None:
    gw = await ag.start(ALERTS, store=store)
    alert = dict(am_alert("A"), fingerprint="abc\x00def")
    status, data = await post(http, gw, envelope(am_alert("B"), alert))
    assert status == 400, data
    ((path, expected),) = problems(data)
    assert path == "$.alerts[1].fingerprint"
    assert f"at most {MAX_KEY} characters without NUL" in expected
    assert await intake_rows(gw) == []


async def test_a_fingerprint_too_long_for_the_index_is_a_400(ag, http, store: str) -> None:
    gw = await ag.start(ALERTS, store=store)
    rng = random.Random(7)  # random text does not compress: PostgreSQL refused it in its index
    long_fp = "".join(rng.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(3000))
    status, data = await post(http, gw, envelope(dict(am_alert("A"), fingerprint=long_fp)))
    assert status == 400, data
    assert problems(data)[0][0] == "$.alerts[0].fingerprint"
    longest = long_fp[:MAX_KEY]
    status, data = await post(http, gw, envelope(dict(am_alert("A"), fingerprint=longest)))
    assert status == 200, data
    assert [r["fingerprint"] for r in await intake_rows(gw)] == [longest]


async def test_nul_anywhere_else_is_stored_escaped_and_read_back(ag, http, store: str) -> None:
    gw = await ag.start(ALERTS, store=store)
    alert = am_alert("A", team="a\x00b")
    alert["labels"]["key\x00name"] = "v"
    alert["annotations"]["summary"] = "\x00 nul first"
    alert["generatorURL"] = "http://x/\x00"
    body = envelope(alert)
    body.update(groupKey="g\x00", receiver="r\x00", externalURL="http://am/\x00")
    body["commonLabels"] = {"x": "\x00"}
    status, data = await post(http, gw, body)
    assert status == 200, data
    (row,) = await intake_rows(gw)
    stored = orjson.loads(row["alert"])
    assert stored["labels"] == alert["labels"]
    assert stored["annotations"] == alert["annotations"]
    assert stored["generatorURL"] == "http://x/\x00"
    assert (stored["groupKey"], stored["receiver"], stored["externalURL"]) == (
        "g\x00",
        "r\x00",
        "http://am/\x00",
    )
    assert {target for target, _, _ in await jobs(gw)} == {"backend:default", "slack"}


@pytest.mark.parametrize(
    "starts_at",
    [
        "2026-01-02T03:04:05+24:00",  # RFC 3339 offsets stop at 23:59
        "2026-01-02T03:04:05+99:99",
        "2026-01-02T03:04:05-00:60",
        "0001-01-01T00:00:00+00:01",  # year 0 once in UTC
        "9999-12-31T23:59:59-00:01",  # year 10000 once in UTC
        "0000-01-01T00:00:00Z",
    ],
)
async def test_times_that_cannot_be_named_in_utc_are_a_400(
    ag, http, store: str, starts_at: str
) -> None:
    gw = await ag.start(ALERTS, store=store)
    status, data = await post(http, gw, envelope(am_alert("A", starts_at=starts_at)))
    assert status == 400, data
    ((path, expected),) = problems(data)
    assert path == "$.alerts[0].startsAt" and "RFC 3339" in expected


@pytest.mark.parametrize(
    "starts_at",
    ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z", "2026-01-02T03:04:05-23:59"],
)
async def test_times_at_the_edges_are_accepted(ag, http, store: str, starts_at: str) -> None:
    gw = await ag.start(ALERTS, store=store)
    status, data = await post(http, gw, envelope(am_alert("A", starts_at=starts_at)))
    assert status == 200, data


async def test_generic_mappings_name_the_mapped_field(ag, http, store: str) -> None:
    mapping = {"alerts": "events", "label_fields": {"alertname": "check"}, "fingerprint": "id"}
    paths = [{"path": "/hooks/generic", "format": "generic", "mapping": mapping}]
    gw = await ag.start({**ALERTS, "paths": paths}, store=store)
    body = {"events": [{"check": "Ping", "id": "x\x00"}, {"check": "P\x00ng", "id": "y"}]}
    status, data = await post(http, gw, body, path="/hooks/generic")
    assert status == 400, data
    assert [path for path, _ in problems(data)] == ["$.events[0].id", "$.events[1].check"]
    assert await intake_rows(gw) == []


async def test_classify_api_refuses_what_the_store_could_not_hold(ag, http, store: str) -> None:
    gw = await ag.start(ALERTS, store=store)
    body = {"alert": {"labels": {"alertname": "A"}, "fingerprint": "\x00"}}
    async with http.post(gw.url + "/classification/classify", json=body) as resp:
        assert resp.status == 400
        assert problems(await resp.json())[0][0] == "$.alert.fingerprint"


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        (b'{"alerts":[{"labels":{"alertname":"\\ud800"}}]}', "invalid_json", "$"),
        (b'{"alerts":[{"labels":{"alertname":"\xff"}}]}', "invalid_json", "$"),
        (b'{"alerts":[],"truncatedAlerts":1e400}', "invalid_json", "$"),
        (b'{"alerts":' + b"[" * 1100 + b"]" * 1100 + b"}", "invalid_json", "$"),
        (b'{"alerts":[],"truncatedAlerts":123456789012345678901234567890}', "invalid_payload",
         "$.truncatedAlerts"),
        (b'{"alerts":[{"labels":{"alertname":"A","n":1}}]}', "invalid_payload",
         "$.alerts[0].labels.n"),
        (b'{"alerts":[{"labels":{"alertname":"A"}}],"alerts":{}}', "invalid_payload", "$.alerts"),
    ],
)  # fmt: skip
async def test_what_json_itself_refuses_is_a_400(
    ag, http, store: str, body: bytes, code: str, path: str
) -> None:
    gw = await ag.start(ALERTS, store=store)
    async with http.post(gw.url + "/webhook/proxy", data=body) as resp:
        assert resp.status == 400
        data = await resp.json()
    assert data["error"]["code"] == code
    assert data["error"]["problems"][0]["path"] == path
    assert await intake_rows(gw) == []
