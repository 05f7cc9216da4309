"""Fixtures shared by the integration tests of publishing and alert intake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.alerts_helpers import AlertsGateway
from tests.integration.publishing_helpers import start


@pytest.fixture
async def ag(tmp_path: Path) -> AsyncIterator[AlertsGateway]:
    """A gateway with the alerts feature on, closed after the test."""
    helper = AlertsGateway(tmp_path)
    yield helper
    await helper.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def services():  # type: ignore[no-untyped-def]
    """Start fake target servers (`await services(FakePagerDuty)`), stopped after the test."""
    started = []

    async def make(cls, *args):  # type: ignore[no-untyped-def]
        svc = await cls(*args).start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        await svc.stop()


@pytest.fixture
async def gateways():  # type: ignore[no-untyped-def]
    """Start gateways from config dicts (`await gateways(data, clock)`), closed after the test."""
    started = []

    async def make(data, clock=None):  # type: ignore[no-untyped-def]
        gw = await start(data, clock)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.close()
