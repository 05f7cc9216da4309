"""Fixtures shared by the integration tests: stores, gateways with features, HTTP clients."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from cutover.core.db import Database, open_database
from tests.integration.alerts_helpers import AlertsGateway
from tests.integration.publishing_helpers import start

PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request, tmp_path: Path) -> AsyncIterator[Database]:  # type: ignore[no-untyped-def]
    """An open store: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        database = await open_database(f"sqlite:///{tmp_path / 'state.db'}")
        try:
            yield database
        finally:
            await database.close()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    database = await open_database(PG_URL, schema=schema)
    try:
        yield database
    finally:
        await database.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request, tmp_path: Path) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A `storage:` URL: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    async with _pg_schema() as url:
        yield url


@pytest.fixture
async def pg_storage() -> AsyncIterator[str]:
    """A `storage:` URL of a fresh PostgreSQL schema, dropped afterwards."""
    async with _pg_schema() as url:
        yield url


@contextlib.asynccontextmanager
async def _pg_schema() -> AsyncIterator[str]:
    schema = f"s_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_URL)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?search_path={schema}"
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


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
