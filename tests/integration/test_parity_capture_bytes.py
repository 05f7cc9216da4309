"""A captured request whose header carries bytes that are not UTF-8 is still captured (the
bytes written escaped), on both listener paths — and still mirrored: the sampling of a request
used to fail as a whole, with a traceback in the log for every such request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cutover.parity.corpus import load_corpus
from cutover.proxy.server import Gateway
from tests.conftest import wait_for
from tests.integration.parity_samples import samples
from tests.integration.test_parity_mirror import config_for, metric, start

pytestmark = pytest.mark.usefixtures("serving_path")


@pytest.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gw in started:
        await gw.close()


async def test_a_header_with_undecodable_bytes_is_captured_escaped(
    tmp_path: Path, gateways: list[Gateway], serving_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "captured.jsonl"
    async with samples() as (primary, candidate):
        route = {"mirror": {"to": "go", "percent": 100}, "capture": {"file": str(corpus)}}
        data = config_for(primary, candidate, tmp_path, route)
        data["fast_path"] = serving_path == "fast"
        gw = await start(gateways, data)
        host, port = gw.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /alerts/1 HTTP/1.1\r\nHost: x\r\nX-Team: caf\xe9\xff\r\n"
                     b"Connection: close\r\n\r\n")  # fmt: skip
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()
        await wait_for(
            lambda: (
                metric(gw, "cutover_parity_capture_total", route="default", result="written") == 1
            )
        )
        (captured,) = load_corpus(corpus)
        assert dict(captured.headers)["X-Team"] == "caf\\xe9\\xff"
        await wait_for(lambda: len(candidate.seen) == 1)  # the mirror copy went out too
    assert "sampling a request failed" not in caplog.text
