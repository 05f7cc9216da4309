"""A legacy caller whose User-Agent carries bytes that are not UTF-8 is counted like any other,
on both listener paths: its usage row is stored escaped instead of failing the batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cutover.app import start_gateway
from cutover.compat.feature import CompatFeature
from cutover.proxy.config import parse_config
from tests.integration.test_compat import NewBackend, compat_config, usage

pytestmark = pytest.mark.usefixtures("serving_path")


@pytest.fixture
async def new_backend() -> AsyncIterator[NewBackend]:
    b = NewBackend()
    await b.start()
    yield b
    await b.stop()


async def test_undecodable_user_agent_bytes_are_counted(
    new_backend: NewBackend, backends: Any, tmp_path: Path, serving_path: str
) -> None:
    legacy = await backends("legacy")
    data = compat_config(new_backend.url, legacy.url, tmp_path)
    data["fast_path"] = serving_path == "fast"
    gw = await start_gateway(parse_config(data, str(tmp_path / "cutover.yaml")))
    try:
        host, port = gw.url.removeprefix("http://").rsplit(":", 1)
        for agent in (b"cron\xff\xfe/1", b"curl/8"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /old/x HTTP/1.1\r\nHost: x\r\nUser-Agent: " + agent + b"\r\n"
                         b"Connection: close\r\n\r\n")  # fmt: skip
            head = (await reader.read()).split(b"\r\n", 1)[0]
            writer.close()
            assert head == b"HTTP/1.1 410 Gone"
        feature = next(f for f in gw.features if isinstance(f, CompatFeature))
        assert await feature.flush() is True
        agents = sorted(c["user_agent"] for c in (await usage(gw))["callers"])
        assert agents == ["cron\\xff\\xfe/1", "curl/8"]
    finally:
        await gw.close()
