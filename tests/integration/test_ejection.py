"""Passive ejection through a real gateway on a FakeClock: the multiplier decays, and /readyz
shows the ejection's end as wall time and seconds left, on both listener paths."""

from __future__ import annotations

import aiohttp
import pytest

from cutover.app import start_gateway
from cutover.core.clock import FakeClock
from cutover.proxy.config import parse_config
from tests.conftest import EchoBackend, _on_path, gateway_config

pytestmark = pytest.mark.usefixtures("serving_path")


@pytest.fixture
async def flaky(request: pytest.FixtureRequest, backends):  # type: ignore[no-untyped-def]
    """A gateway on a FakeClock in front of `go` (failing on demand) with `python` as fallback."""
    go, py = await backends("go"), await backends("python")
    data = gateway_config(
        {"go": go.url, "python": py.url},
        route={"split": {"go": 100, "python": 0}, "fallback": ["python"]},
    )
    for b in data["backends"].values():
        b["health"] = "off"  # passive ejection only: the FakeClock alone moves time
        b["outlier"] = {"max_ejection_percent": 100}
    clock = FakeClock()
    gw = await start_gateway(parse_config(_on_path(request, data), "test.yaml"), clock)
    yield gw, clock, go
    await gw.close()


async def _eject(session: aiohttp.ClientSession, url: str, go: EchoBackend) -> None:
    """Five failures in a row eject `go` (the fallback answers each request)."""
    go.fail_status = 503
    for _ in range(5):
        async with session.get(url + "/x") as r:
            assert r.status == 200 and r.headers["X-Cutover-Backend"] == "python"
    go.fail_status = None


async def _backend_state(session: aiohttp.ClientSession, url: str) -> dict:  # type: ignore[type-arg]
    async with session.get(url + "/readyz") as r:
        return (await r.json())["backends"]["go"]


async def test_readyz_shows_ejection_end_as_wall_time_and_seconds_left(flaky) -> None:
    gw, clock, go = flaky
    async with aiohttp.ClientSession() as s:
        await _eject(s, gw.url, go)
        clock.advance(12.0)
        state = await _backend_state(s, gw.url)
    # FakeClock: wall 1_700_000_000 at start; ejected at +0 for 30 s
    assert state["ejected"] is True
    assert state["ejected_until"] == "2023-11-14T22:13:50.000Z"  # 1_700_000_030, RFC 3339 UTC
    assert state["ejection_seconds_left"] == 18.0
    assert state["ejection_multiplier"] == 1


async def test_a_recovered_backend_is_ejected_for_base_again(flaky) -> None:
    gw, clock, go = flaky
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # three ejections back to back: 30 s, 60 s, 90 s
            await _eject(s, gw.url, go)
            clock.advance((await _backend_state(s, gw.url))["ejection_seconds_left"])
        state = await _backend_state(s, gw.url)
        assert state["ejected"] is False and state["ejection_multiplier"] == 3
        for _ in range(20):  # back and healthy for a while
            async with s.get(gw.url + "/x") as r:
                assert r.headers["X-Cutover-Backend"] == "go"
        clock.advance(120.0)
        assert (await _backend_state(s, gw.url))["ejection_multiplier"] == 0
        await _eject(s, gw.url, go)
        state = await _backend_state(s, gw.url)
    assert state["ejections"] == 4
    assert state["ejection_seconds_left"] == 30.0  # not 4 x 30 s
