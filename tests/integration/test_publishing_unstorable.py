"""The publishing API never answers 500 for what the store cannot hold or count, on SQLite and
PostgreSQL: a fingerprint with NUL (a Rootly test alert keeps a reference by fingerprint), a
dead-letter filter with NUL, a job id beyond 64 bits."""

from __future__ import annotations

import pytest

from tests.integration.publishing_fakes import FakeRootly
from tests.integration.publishing_helpers import config, start


@pytest.fixture
async def rootly_gateway(tmp_path, storage: str):  # type: ignore[no-untyped-def]
    rootly = await FakeRootly().start()
    target = {"name": "rootly", "type": "rootly", "url": f"http://127.0.0.1:{rootly.port}",
              "token": rootly.token}  # fmt: skip
    gw = await start(config(tmp_path, {"targets": [target]}, storage=storage))
    yield gw
    await gw.close()
    await rootly.stop()


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
