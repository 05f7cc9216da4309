"""The publishing API never answers 500 for what the store cannot hold or count, on SQLite and
PostgreSQL: a fingerprint with NUL (a Rootly test alert keeps a reference by fingerprint), a
dead-letter filter with NUL, a job id beyond 64 bits, an id from Rootly that cannot be kept."""

from __future__ import annotations

import pytest

from tests.integration.publishing_fakes import FakeRootly, FakeSlack
from tests.integration.publishing_helpers import config, start


@pytest.fixture
async def rootly() -> FakeRootly:  # type: ignore[misc]
    fake = await FakeRootly().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def rootly_gateway(tmp_path, storage: str, rootly: FakeRootly):  # type: ignore[no-untyped-def]
    target = {"name": "rootly", "type": "rootly", "url": f"http://127.0.0.1:{rootly.port}",
              "token": rootly.token}  # fmt: skip
    gw = await start(config(tmp_path, {"targets": [target]}, storage=storage))
    yield gw
    await gw.close()


async def _answer(http, method: str, url: str, **kw) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    async with http.request(method, url, **kw) as resp:
        return resp.status, (await resp.json())["error"]["message"]


@pytest.mark.parametrize("fingerprint", ["a\x00b", "f" * 300, ["x"]])
async def test_a_test_alert_fingerprint_the_store_cannot_hold(
    rootly_gateway, http, fingerprint: object
) -> None:
    body = {"test_alert": {"fingerprint": fingerprint, "status": "resolved"}}
    status, message = await _answer(
        http, "POST", rootly_gateway.url + "/publishing/test/rootly", json=body
    )
    assert status == 400
    assert message.startswith("test_alert.fingerprint: expected a string")


async def test_a_test_alert_with_a_fingerprint_is_sent(rootly_gateway, http) -> None:
    body = {"test_alert": {"fingerprint": "fp-1"}}
    async with http.post(rootly_gateway.url + "/publishing/test/rootly", json=body) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["success"] is True and data["fingerprint"] == "fp-1"


async def test_a_dead_letter_filter_with_nul(rootly_gateway, http) -> None:
    status, message = await _answer(http, "GET", rootly_gateway.url + "/publishing/dlq?target=%00")
    assert status == 400 and message.startswith("target: expected a string without NUL")
    async with http.get(rootly_gateway.url + "/publishing/dlq?target=rootly") as resp:
        assert resp.status == 200 and (await resp.json())["count"] == 0


@pytest.mark.parametrize("job_id", ["99999999999999999999", str(2**63), "0", "-1"])
async def test_a_job_id_beyond_64_bits(rootly_gateway, http, job_id: str) -> None:
    url = f"{rootly_gateway.url}/publishing/dlq/{job_id}/replay"
    assert await _answer(http, "POST", url) == (400, "id: expected a job id (integer)")


async def test_the_largest_job_id_is_looked_up(rootly_gateway, http) -> None:
    url = f"{rootly_gateway.url}/publishing/dlq/{2**63 - 1}/replay"
    assert (await _answer(http, "POST", url))[0] == 404


@pytest.mark.parametrize(
    "bad_id", ["a\x00b", "../../v1/incidents", "x" * 201, "", None, True, {"id": 1}]
)
async def test_an_id_rootly_hands_back_that_cannot_be_kept(
    rootly_gateway, rootly: FakeRootly, http, bad_id: object
) -> None:
    """Created, but the id cannot be stored (NUL on PostgreSQL) or put in a URL path: the send
    fails with the reason, without a 500 and without a later resolve going elsewhere."""
    rootly.ids.append(bad_id)
    body = {"test_alert": {"fingerprint": "fp-bad-id"}}
    async with http.post(rootly_gateway.url + "/publishing/test/rootly", json=body) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    assert data["success"] is False
    assert "no usable data.id" in str(data), data
    body = {"test_alert": {"fingerprint": "fp-bad-id", "status": "resolved"}}
    async with http.post(rootly_gateway.url + "/publishing/test/rootly", json=body) as resp:
        assert resp.status == 200
    assert [r["path"] for r in rootly.requests] == ["/v1/alerts"]  # nothing to resolve


async def test_a_usable_id_is_kept_and_resolved(rootly_gateway, rootly: FakeRootly, http) -> None:
    rootly.ids.append(42)
    for status in ("firing", "resolved"):
        body = {"test_alert": {"fingerprint": "fp-int-id", "status": status}}
        async with http.post(rootly_gateway.url + "/publishing/test/rootly", json=body) as resp:
            assert resp.status == 200 and (await resp.json())["success"] is True
    assert [r["path"] for r in rootly.requests] == ["/v1/alerts", "/v1/alerts/42/resolve"]


@pytest.mark.parametrize("ts", ["1700000000.1\x00", "1|2|resolved", "../x"])
async def test_a_slack_ts_that_cannot_be_kept(tmp_path, storage: str, http, ts: str) -> None:
    """A bot-posted message whose ts cannot be stored (NUL on PostgreSQL) or split back out of
    the kept reference: the send fails with the reason instead of a 500 and a post per retry."""
    slack = await FakeSlack().start()
    slack.odd_ts.append(ts)
    target = {"name": "s", "type": "slack", "url": slack.hook_url, "api_url": slack.url + "/api",
              "bot_token": slack.bot_token,
              "channel": "C0CHANNEL"}  # fmt: skip
    gw = await start(config(tmp_path, {"targets": [target]}, storage=storage))
    try:
        body = {"test_alert": {"fingerprint": "fp-slack"}}
        async with http.post(gw.url + "/publishing/test/s", json=body) as resp:
            assert resp.status == 200, await resp.text()
            data = await resp.json()
        assert data["success"] is False and "no usable ts" in str(data), data
    finally:
        await gw.close()
        await slack.stop()
