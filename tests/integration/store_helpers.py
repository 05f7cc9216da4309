"""Another connection that holds a store's write lock, to make writers wait."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiosqlite
import asyncpg


@contextlib.asynccontextmanager
async def write_lock(storage: str, table: str) -> AsyncIterator[None]:
    """Until exit, another connection holds the write lock (SQLite: of the database; PostgreSQL:
    `LOCK TABLE table IN EXCLUSIVE MODE`): writers wait for it, readers do not."""
    if storage.startswith("sqlite:///"):
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
            await conn.execute(f'LOCK TABLE "{table}" IN EXCLUSIVE MODE')
            yield
        finally:
            await tx.rollback()
    finally:
        await conn.close()
