"""Legacy-usage counts in the durable store, on real SQLite and a real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cutover.compat.store import ensure_schema, read_usage, write_usage
from cutover.compat.usage import UsageBuffer, caller_of
from cutover.core.db import Database, open_database

PG_URL = os.environ.get("CUTOVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
async def reopen(request, tmp_path: Path) -> AsyncIterator[Callable[[], object]]:
    """Opens the same store again on every call (a restart); everything is closed after."""
    opened: list[Database] = []
    schema = f"t_{uuid.uuid4().hex[:12]}"

    async def open_again() -> Database:
        if request.param == "sqlite":
            db = await open_database(f"sqlite://{tmp_path}/state.db")
        else:
            db = await open_database(PG_URL, schema=schema)
        opened.append(db)
        return db

    yield open_again
    if request.param == "postgresql":
        await opened[-1].execute(f'DROP SCHEMA "{schema}" CASCADE')
    for db in opened:
        await db.close()


async def test_counts_add_up_across_writers_and_restarts(reopen) -> None:  # type: ignore[no-untyped-def]
    alice = caller_of("alice-key", "cron/1", "10.0.0.1")
    bob = caller_of(None, "curl/8", "10.0.0.2")
    worker1, worker2 = UsageBuffer(), UsageBuffer()
    worker1.record("history", alice, 100.0)
    worker1.record("history", alice, 110.0)
    worker1.record("webhook", bob, 105.0)
    worker2.record("history", alice, 90.0)  # another worker saw alice earlier
    worker2.record("history", caller_of("alice-key", "cron/2", "10.0.0.9"), 120.0)

    db = await reopen()
    await ensure_schema(db)
    await write_usage(db, worker1.drain())
    await write_usage(db, worker2.drain())
    await db.close()

    db = await reopen()  # after a restart
    await ensure_schema(db)  # a no-op the second time
    rows = {(r["rule"], r["caller"]): r for r in await read_usage(db)}
    a = rows[("history", alice.id)]
    assert (a["count"], a["first_seen"], a["last_seen"]) == (4, 90.0, 120.0)
    assert (a["user_agent"], a["client_ip"]) == ("cron/2", "10.0.0.9")  # as last seen
    b = rows[("webhook", bob.id)]
    assert (b["count"], b["kind"], b["user_agent"]) == (1, "client", "curl/8")
    assert all("alice-key" not in str(r) for r in rows.values())
    assert [r["caller"] for r in await read_usage(db, "webhook")] == [bob.id]


async def test_a_user_agent_the_store_cannot_encode_is_stored_escaped(reopen) -> None:  # type: ignore[no-untyped-def]
    # A header's undecodable bytes reach us as surrogate escapes (aiohttp and the fast path
    # decode with surrogateescape); written as such, the whole batch failed and was kept for
    # a retry that failed the same way, for ever.
    odd = caller_of(None, "agent/\udcff\udcfe\x00", "10.0.0.3")
    plain = caller_of(None, "curl/8", "10.0.0.4")
    buffer = UsageBuffer()
    buffer.record("history", odd, 100.0)
    buffer.record("history", plain, 101.0)
    db = await reopen()
    await ensure_schema(db)
    await write_usage(db, buffer.drain())
    rows = {r["caller"]: r for r in await read_usage(db)}
    assert rows[odd.id]["user_agent"] == "agent/\\xff\\xfe\\x00"
    assert rows[plain.id]["user_agent"] == "curl/8"
