"""The `parity_results` table: its DDL, the batched insert and the pruning, shared by the gateway
(its own mirror workers, its reads) and the mirror process (which writes what it compares)."""

from __future__ import annotations

from typing import Any

from cutover.core.db import Database

__all__ = [
    "MIGRATION",
    "RESULTS_BATCH",
    "insert_results",
    "latest",
    "migrate",
    "prune",
    "results_between",
]

RESULTS_BATCH = 64  # results written in one statement at most (12 parameters each)
PRUNE_EVERY = 100  # results stored between two prunes
_COLUMNS = (
    "ts, route, endpoint, method, path, primary_backend, candidate_backend, primary_status,"
    " candidate_status, fields, noise_fields, differences"
)


def _ddl(id_column: str, real_type: str) -> list[str]:
    """The `parity_results` table in one dialect (they differ in the id and float types)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS parity_results (
            id {id_column},
            ts {real_type} NOT NULL,
            route TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            primary_backend TEXT NOT NULL,
            candidate_backend TEXT NOT NULL,
            primary_status INTEGER NOT NULL,
            candidate_status INTEGER NOT NULL,
            fields TEXT NOT NULL,
            noise_fields TEXT,
            differences TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS parity_results_route ON parity_results (route, id)",
    ]


MIGRATION = {
    "sqlite": _ddl("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL"),
    "postgresql": _ddl("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION"),
}


async def migrate(db: Database) -> None:
    await db.migrate("parity-1", MIGRATION)  # type: ignore[arg-type]


async def insert_results(db: Database, rows: list[tuple[Any, ...]]) -> list[int]:
    """One INSERT for `rows` (ts first, then the columns of an `Outcome.row`); their ids (ids
    only order results and mark what a refresh already read, so which id went to which row of
    one batch is not relied upon)."""
    width = len(rows[0])
    values = ", ".join(
        "(" + ", ".join(f"${i * width + j + 1}" for j in range(width)) + ")"
        for i in range(len(rows))
    )
    async with db.transaction() as tx:
        found = await tx.fetch(
            f"INSERT INTO parity_results ({_COLUMNS}) VALUES {values} RETURNING id",
            *(v for row in rows for v in row),
        )
    return sorted(int(r["id"]) for r in found)


async def prune(db: Database, route: str, keep: int) -> None:
    """Keep the latest `keep` results of `route`."""
    await db.execute(
        "DELETE FROM parity_results WHERE route = $1 AND id <= (SELECT id FROM parity_results"
        " WHERE route = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        route,
        keep,
    )


async def latest(
    db: Database, route: str, limit: int, after: int | None = None, columns: str = "*"
) -> list[dict[str, Any]]:
    """The latest `limit` results of `route` (those above id `after` only), oldest first."""
    newer = "" if after is None else " AND id > $3"
    rows = await db.fetch(
        f"SELECT {columns} FROM parity_results WHERE route = $1{newer} ORDER BY id DESC LIMIT $2",
        route,
        limit,
        *(() if after is None else (after,)),
    )
    rows.reverse()
    return rows


async def results_between(
    db: Database, route: str, low: int, high: int, columns: str
) -> list[dict[str, Any]]:
    """`route`'s results with ids from `low` to `high`, ascending."""
    return await db.fetch(
        f"SELECT {columns} FROM parity_results"
        " WHERE route = $1 AND id >= $2 AND id <= $3 ORDER BY id",
        route,
        low,
        high,
    )
