"""Another connection that holds a store's write lock, to make writers wait; what a store
reads, counted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import asyncpg

from cutover.core.db import Database, Tx


@contextlib.asynccontextmanager
async def write_lock(storage: str, table: str, readers: bool = False) -> AsyncIterator[None]:
    """Until exit, another connection holds the write lock (SQLite: of the database; PostgreSQL:
    `LOCK TABLE table IN EXCLUSIVE MODE`): writers wait for it, readers do not. `readers`
    (PostgreSQL only): `ACCESS EXCLUSIVE`, which readers wait for too — a store that hangs."""
    if storage.startswith("sqlite:///"):
        assert not readers, "SQLite (WAL) never makes readers wait"
        lite = await aiosqlite.connect(storage[len("sqlite:///") :], isolation_level=None)
        try:
            await lite.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                await lite.execute("ROLLBACK")
        finally:
            await lite.close()
        return
    conn = await asyncpg.connect(storage)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            mode = "ACCESS EXCLUSIVE" if readers else "EXCLUSIVE"
            await conn.execute(f'LOCK TABLE "{table}" IN {mode} MODE')
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()


# What a store reads for a table in the current transaction (PostgreSQL): rows read by
# sequential scans, index entries read by index scans of any of its indexes, and rows fetched
# by bitmap scans. This backend's own counters: other connections' work is not in them.
_PG_READS_SQL = (
    "SELECT pg_stat_get_xact_tuples_returned(c.oid) + pg_stat_get_xact_tuples_fetched(c.oid)"
    " + COALESCE((SELECT sum(pg_stat_get_xact_tuples_returned(i.indexrelid))"
    " FROM pg_index i WHERE i.indrelid = c.oid), 0) AS n"
    " FROM pg_class c WHERE c.oid = $1::regclass"
)
SQLITE_STEPS = 100  # SQLite virtual machine steps per unit of work counted


class ClaimWork:
    """How much the store works for each claim transaction (`transaction(claim=True)`) of one
    `Database` object, counted rather than timed: a count does not change with the load on
    the machine, only with what the store does.

    - PostgreSQL: rows and index entries of `table` read in the transaction (the backend's
      own counters, read at its start and end, within it);
    - SQLite: virtual machine steps, in units of `SQLITE_STEPS` (a progress handler, chained
      to a bounded transaction's deadline check; the connection runs one transaction at a
      time, so nothing else is counted).

    `claims` lists the work of each claim that completed, in order."""

    def __init__(self, db: Database, table: str) -> None:
        self.db = db
        self.table = table
        self.claims: list[int] = []
        transaction = db.transaction
        counted = self._sqlite if db.dialect == "sqlite" else self._postgresql

        def wrapped(**kwargs: Any) -> contextlib.AbstractAsyncContextManager[Tx]:
            return counted(transaction, **kwargs) if kwargs.get("claim") else transaction(**kwargs)

        db.transaction = wrapped  # type: ignore[method-assign]

    @contextlib.asynccontextmanager
    async def _postgresql(self, transaction: Any, **kwargs: Any) -> AsyncIterator[Tx]:
        async with transaction(**kwargs) as tx:
            before = int(await tx.fetchval(_PG_READS_SQL, self.table))
            yield tx  # (a claim that fails is not counted)
            self.claims.append(int(await tx.fetchval(_PG_READS_SQL, self.table)) - before)

    @contextlib.asynccontextmanager
    async def _sqlite(self, transaction: Any, **kwargs: Any) -> AsyncIterator[Tx]:
        db: Any = self.db
        deadline = db._past_deadline  # a bounded transaction's check (0 when unbounded)
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return int(deadline())

        async with transaction(**kwargs) as tx:
            handler = db._conn._conn.set_progress_handler
            await db._conn._execute(handler, step, SQLITE_STEPS)
            try:
                yield tx
            finally:
                await db._conn._execute(handler, None, 0)
            self.claims.append(steps)
