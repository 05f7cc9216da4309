"""Legacy-usage counts in the durable store (`core/db.py`): one row per (rule, caller).

Writes are batched upserts that add to the stored count, so several workers and replicas can
write the same rows; first/last seen are the min/max over all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cutover.compat.usage import UsageDelta
from cutover.core.db import Database
from cutover.core.storable import storable

__all__ = ["MIGRATION", "read_usage", "write_usage"]

MIGRATION = "compat-usage-1"
_DDL = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS compat_usage ("
        " rule TEXT NOT NULL, caller TEXT NOT NULL, kind TEXT NOT NULL,"
        " user_agent TEXT NOT NULL, client_ip TEXT NOT NULL, count INTEGER NOT NULL,"
        " first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (rule, caller))"
    ],
    "postgresql": [
        "CREATE TABLE IF NOT EXISTS compat_usage ("
        " rule TEXT NOT NULL, caller TEXT NOT NULL, kind TEXT NOT NULL,"
        " user_agent TEXT NOT NULL, client_ip TEXT NOT NULL, count BIGINT NOT NULL,"
        " first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (rule, caller))"
    ],
}
_UPSERT = (
    "INSERT INTO compat_usage"
    " (rule, caller, kind, user_agent, client_ip, count, first_seen, last_seen)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    " ON CONFLICT (rule, caller) DO UPDATE SET"
    " count = compat_usage.count + excluded.count,"
    " first_seen = {least}(compat_usage.first_seen, excluded.first_seen),"
    " last_seen = {greatest}(compat_usage.last_seen, excluded.last_seen),"
    " user_agent = CASE WHEN excluded.last_seen >= compat_usage.last_seen"
    " THEN excluded.user_agent ELSE compat_usage.user_agent END,"
    " client_ip = CASE WHEN excluded.last_seen >= compat_usage.last_seen"
    " THEN excluded.client_ip ELSE compat_usage.client_ip END"
)
_SQL = {
    "sqlite": _UPSERT.format(least="min", greatest="max"),
    "postgresql": _UPSERT.format(least="LEAST", greatest="GREATEST"),
}


async def ensure_schema(db: Database) -> None:
    await db.migrate(MIGRATION, _DDL)  # type: ignore[arg-type]


async def write_usage(db: Database, deltas: Sequence[UsageDelta]) -> None:
    """Add `deltas` to the stored counts in one transaction (raises StoreUnavailable).

    User-Agent and client address are stored escaped (`core.storable`): a header's
    undecodable bytes would otherwise make every later write of the batch fail too."""
    rows = [
        (
            d.rule,
            d.caller.id,
            d.caller.kind,
            storable(d.caller.user_agent),
            storable(d.caller.client_ip),
            d.count,
            d.first_seen,
            d.last_seen,
        )
        for d in deltas
    ]
    async with db.transaction() as tx:
        await tx.executemany(_SQL[db.dialect], rows)


async def read_usage(db: Database, rule: str | None = None) -> list[dict[str, Any]]:
    """Every stored row (of one rule), most recent caller first within each rule."""
    columns = "rule, caller, kind, user_agent, client_ip, count, first_seen, last_seen"
    if rule is None:
        return await db.fetch(
            f"SELECT {columns} FROM compat_usage ORDER BY rule, last_seen DESC, caller"
        )
    return await db.fetch(
        f"SELECT {columns} FROM compat_usage WHERE rule = $1 ORDER BY last_seen DESC, caller", rule
    )
