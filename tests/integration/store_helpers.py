"""Another connection that holds a store's write lock, to make writers wait."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiosqlite
import asyncpg


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
