"""The real Alertmanager (Debian's prometheus-alertmanager, on loopback, no clustering) posting to
/webhook/proxy: fingerprints, firing then resolved, bearer auth from `http_config`, and its retries
of a 503 while the store is down."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml

from cutover.alerts.webhook_formats import alertmanager_fingerprint
from cutover.core.clock import Clock
from tests.conftest import free_port
from tests.integration.alerts_helpers import PG_URL, TcpRelay, feature, intake_rows

BINARY = "prometheus-alertmanager"
TOKEN = "am-webhook-token"


class Alertmanager:
    def __init__(self, tmp_path: Path, webhook_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "route": {
                "receiver": "cutover",
                "group_by": ["alertname"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "cutover",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {"type": "Bearer", "credentials": TOKEN}
                            },
                        }
                    ],
                }
            ],
        }
        self.config = tmp_path / "am.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.storage = tmp_path / "am-data"
        self.log = open(tmp_path / "am.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={self.config}",
                f"--storage.path={self.storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    async def ready(self, http: aiohttp.ClientSession) -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited:\n{self.output()}")
            try:
                async with http.get(self.url + "/-/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"alertmanager never became ready:\n{self.output()}")

    async def post_alerts(self, http: aiohttp.ClientSession, alerts: list[dict]) -> None:
        async with http.post(self.url + "/api/v2/alerts", json=alerts) as resp:
            assert resp.status == 200, await resp.text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def binary() -> Iterator[str]:
    path = shutil.which(BINARY)
    if path is None:
        pytest.fail(f"{BINARY} is required (apt-get install prometheus-alertmanager; .ci/run does)")
    yield path


async def wait_rows(gw, predicate, deadline: float = 45.0) -> list[dict]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        rows = await intake_rows(gw)
        if predicate(rows):
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"alerts never arrived as expected: {rows}")


async def test_alertmanager_end_to_end(binary, ag, http, tmp_path: Path) -> None:
    gw = await ag.start(
        {"auth": {"bearer_token": TOKEN}, "forward_to_route": "default",
         "routing": {"targets": ["slack"]}},
        clock=Clock(),
    )  # fmt: skip
    am = Alertmanager(tmp_path, gw.url + "/webhook/proxy")
    try:
        await am.ready(http)
        start = datetime.now(UTC) - timedelta(seconds=5)
        labels = [
            {
                "alertname": "ProxyUpstreamDown",
                "instance": f"10.0.0.{i}:8080",
                "severity": "critical",
            }
            for i in range(3)
        ]
        await am.post_alerts(
            http,
            [{"labels": lab, "annotations": {"summary": "down"}, "startsAt": rfc3339(start),
              "generatorURL": "http://127.0.0.1:9090/graph"} for lab in labels],
        )  # fmt: skip
        rows = await wait_rows(gw, lambda rows: len(rows) >= 3)
        # Alertmanager's fingerprint is the one the gateway computes from the labels.
        assert {r["fingerprint"] for r in rows} == {alertmanager_fingerprint(x) for x in labels}
        assert {r["status"] for r in rows} == {"firing"}

        # Resolve one: Alertmanager sends the resolved notification, a new event.
        await am.post_alerts(
            http,
            [{"labels": labels[0], "startsAt": rfc3339(start),
              "endsAt": rfc3339(datetime.now(UTC) - timedelta(seconds=1))}],
        )  # fmt: skip
        rows = await wait_rows(gw, lambda rows: any(r["status"] == "resolved" for r in rows))
        resolved = [r for r in rows if r["status"] == "resolved"]
        assert [r["fingerprint"] for r in resolved] == [alertmanager_fingerprint(labels[0])]
        # Re-sends of the same group within the window were deduplicated, not stored again.
        assert len([r for r in rows if r["status"] == "firing"]) == 3
    finally:
        am.stop()


async def test_alertmanager_retries_a_503_until_stored(binary, ag, http, tmp_path: Path) -> None:
    relay = await TcpRelay().start()
    try:
        url = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
        gw = await ag.start(
            {"auth": {"bearer_token": TOKEN}}, clock=Clock(), store="postgresql", storage_url=url
        )
        await relay.stop()
        am = Alertmanager(tmp_path, gw.url + "/webhook/proxy")
        try:
            await am.ready(http)
            labels = {"alertname": "StoreWasDown", "severity": "warning"}
            await am.post_alerts(http, [{"labels": labels}])
            f = feature(gw)
            end = time.monotonic() + 45
            while f.counts["store_unavailable"] < 1 and time.monotonic() < end:
                await asyncio.sleep(0.1)
            assert f.counts["store_unavailable"] >= 1, am.output()  # Alertmanager got a 503
            await relay.start()
            rows = await wait_rows(gw, lambda rows: len(rows) >= 1)
            assert [r["fingerprint"] for r in rows] == [alertmanager_fingerprint(labels)]
        finally:
            am.stop()
    finally:
        await relay.stop()
