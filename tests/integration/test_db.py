"""The one durable store against real SQLite and a real PostgreSQL (127.0.0.1:5432, db `test`)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from proxy.db import Database, StoreUnavailable, open_database

PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

DDL = {
    "sqlite": [
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
        "state TEXT NOT NULL DEFAULT 'pending')"
    ],
    "postgresql": [
        "CREATE TABLE jobs (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, "
        "state TEXT NOT NULL DEFAULT 'pending')"
    ],
}


async def test_migrate_once_and_numbered_parameters(db: Database) -> None:
    await db.migrate("jobs-1", DDL)
    await db.migrate("jobs-1", DDL)  # a second run changes nothing
    assert await db.execute("INSERT INTO jobs (name) VALUES ($1)", "a") == 1
    await db.executemany("INSERT INTO jobs (name) VALUES ($1)", [("b",), ("c",)])
    rows = await db.fetch("SELECT name, state FROM jobs WHERE name <> $1 ORDER BY name", "a")
    assert rows == [{"name": "b", "state": "pending"}, {"name": "c", "state": "pending"}]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE state = $1 AND name > $2",
                             "pending", "a") == 2  # fmt: skip
    assert await db.fetchrow("SELECT name FROM jobs WHERE name = $1", "zz") is None


async def test_transaction_commits_or_rolls_back(db: Database) -> None:
    await db.migrate("jobs-1", DDL)
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO jobs (name) VALUES ($1)", "kept")
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO jobs (name) VALUES ($1)", "lost")
            raise RuntimeError("boom")
    assert [r["name"] for r in await db.fetch("SELECT name FROM jobs")] == ["kept"]


async def test_concurrent_transactions_do_not_interleave(db: Database) -> None:
    await db.migrate("jobs-1", DDL)
    await db.execute("INSERT INTO jobs (name) VALUES ($1)", "counter")

    async def claim() -> int:
        async with db.transaction() as tx:
            sql = "UPDATE jobs SET state = 'claimed' WHERE state = 'pending' RETURNING id"
            if tx.dialect == "postgresql":
                sql = (
                    "UPDATE jobs SET state = 'claimed' WHERE id IN (SELECT id FROM jobs "
                    "WHERE state = 'pending' FOR UPDATE SKIP LOCKED) RETURNING id"
                )
            return len(await tx.fetch(sql))

    claimed = await asyncio.gather(*(claim() for _ in range(10)))
    assert sorted(claimed) == [0] * 9 + [1]


async def test_unreachable_postgres_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        await open_database("postgresql://postgres@127.0.0.1:1/test")


async def test_default_sqlite_path_is_under_base_dir(tmp_path: Path) -> None:
    db = await open_database(None, base_dir=tmp_path)
    try:
        assert (tmp_path / ".cutover" / "state.db").exists()
        assert db.dialect == "sqlite"
    finally:
        await db.close()
