"""The one durable store against real SQLite and a real PostgreSQL (127.0.0.1:5432, db `test`)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cutover.core.db import Database, StoreTimeout, StoreUnavailable, open_database
from tests.integration.store_helpers import write_lock

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


# -- bounded transactions ------------------------------------------------------------------

# A statement that runs for minutes unless the bound stops it.
ENDLESS = {
    "sqlite": "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c"
    " LIMIT 10000000000) SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(600)",
}


async def test_a_bounded_transaction_stops_a_slow_statement_and_rolls_back(db: Database) -> None:
    await db.migrate("jobs-1", DDL)
    with pytest.raises(StoreTimeout):
        async with db.transaction(timeout=0.2) as tx:
            await tx.execute("INSERT INTO jobs (name) VALUES ($1)", "lost")
            await asyncio.wait_for(tx.fetch(ENDLESS[db.dialect]), 60)
    assert await db.fetch("SELECT name FROM jobs") == []
    # The bound ends with its transaction: nothing after it is cut short.
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO jobs (name) VALUES ($1)", "kept")
        await tx.fetch("SELECT count(*) FROM jobs")
    assert await db.fetch("SELECT name FROM jobs") == [{"name": "kept"}]
    assert isinstance(StoreTimeout("x"), StoreUnavailable)  # callers that answer 503 still do


async def test_a_bounded_transaction_waits_for_a_lock_no_longer_than_its_bound(
    db: Database, tmp_path: Path
) -> None:
    await db.migrate("jobs-1", DDL)
    if db.dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = f"{PG_URL}?search_path={await db.fetchval('SELECT current_schema()')}"

    async def unbounded_insert() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO jobs (name) VALUES ($1)", "waited")

    async with write_lock(url, "jobs"):
        with pytest.raises(StoreTimeout):
            async with db.transaction(timeout=0.2) as tx:
                await tx.execute("INSERT INTO jobs (name) VALUES ($1)", "blocked")
        # A read-only bounded transaction reads beside the writer (SQLite WAL, PostgreSQL).
        async with db.transaction(timeout=5.0, read_only=True) as tx:
            assert await tx.fetchval("SELECT count(*) FROM jobs") == 0
        # An unbounded transaction waits for the lock again (the default busy wait is back).
        waiting = asyncio.create_task(unbounded_insert())
        await asyncio.sleep(0.5)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 10)
    assert [r["name"] for r in await db.fetch("SELECT name FROM jobs")] == ["waited"]
