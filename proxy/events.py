"""The canary audit log: every weight change and verdict change, in the durable store.

One table, `cutover_canary_events`, in SQLite or PostgreSQL through `proxy.db`. An event says
when, which route, what (kind), who (actor: `operator`, `operator:<name>`, `controller`,
`config`), why (reason), the weights before and after, and the figures judged.
When the store is unavailable, events wait in memory (bounded) and are written with the next
one that gets through.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.db import Database, StoreUnavailable
from routing.storable import identity_problem, storable

log = logging.getLogger("cutover.canary")

MIGRATION = {
    "sqlite": [
        "CREATE TABLE cutover_canary_events (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "at REAL NOT NULL, route TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL, "
        "reason TEXT NOT NULL, weights_before TEXT, weights_after TEXT, figures TEXT)",
        "CREATE INDEX cutover_canary_events_route ON cutover_canary_events (route, id)",
    ],
    "postgresql": [
        "CREATE TABLE cutover_canary_events (id BIGSERIAL PRIMARY KEY, "
        "at DOUBLE PRECISION NOT NULL, route TEXT NOT NULL, kind TEXT NOT NULL, "
        "actor TEXT NOT NULL, reason TEXT NOT NULL, weights_before TEXT, weights_after TEXT, "
        "figures TEXT)",
        "CREATE INDEX cutover_canary_events_route ON cutover_canary_events (route, id)",
    ],
}
_BACKLOG = 1000
_MAX_ID = 2**63 - 1  # ids are 64-bit integers in both stores


@dataclass(frozen=True, slots=True)
class Event:
    at: float  # wall-clock seconds
    route: str
    kind: str  # rollback, promote, pause, resume, weights, ramp, config, verdict
    actor: str
    reason: str
    weights_before: Mapping[str, int] | None = None
    weights_after: Mapping[str, int] | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)


def _json(value: object) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class EventLog:
    """Writes and reads canary events."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._ready = False
        self._backlog: deque[Event] = deque(maxlen=_BACKLOG)

    async def _migrate(self) -> None:
        if not self._ready:
            try:
                await self.db.migrate("canary-events-1", MIGRATION)  # type: ignore[arg-type]
            except StoreUnavailable:
                raise
            except Exception:  # another worker migrated at the same moment: it is done now
                await self.db.migrate("canary-events-1", MIGRATION)  # type: ignore[arg-type]
            self._ready = True

    async def record(self, event: Event) -> bool:
        """Store `event` (and any waiting ones); False when it had to wait in memory."""
        self._backlog.append(event)
        try:
            await self._migrate()
            while self._backlog:
                e = self._backlog[0]
                await self.db.execute(
                    "INSERT INTO cutover_canary_events (at, route, kind, actor, reason, "
                    "weights_before, weights_after, figures) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    e.at,
                    e.route,
                    e.kind,
                    storable(e.actor),  # a reason comes from a request: it may hold anything
                    storable(e.reason),
                    _json(None if e.weights_before is None else dict(e.weights_before)),
                    _json(None if e.weights_after is None else dict(e.weights_after)),
                    _json(dict(e.figures)),
                )
                self._backlog.popleft()
        except StoreUnavailable as exc:
            log.warning("canary event kept in memory (%d waiting): %s", len(self._backlog), exc)
            return False
        return True

    @property
    def waiting(self) -> int:
        return len(self._backlog)

    async def list(
        self, route: str | None = None, limit: int = 100, after: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first (or, with `after`, the ones after that id, oldest first)."""
        await self._migrate()
        if route is not None and identity_problem(route) is not None:
            return []  # no route is named so (and the store could not even compare it)
        if after is not None:
            if after >= _MAX_ID:
                return []
            after = max(after, 0)
        where, args = [], []
        if route is not None:
            args.append(route)
            where.append(f"route = ${len(args)}")
        if after is not None:
            args.append(after)
            where.append(f"id > ${len(args)}")
        args.append(limit)
        order = "ASC" if after is not None else "DESC"
        sql = (
            "SELECT id, at, route, kind, actor, reason, weights_before, weights_after, figures "
            "FROM cutover_canary_events"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY id {order} LIMIT ${len(args)}"
        )
        rows = await self.db.fetch(sql, *args)
        out = []
        for r in rows:
            out.append(
                {
                    "id": int(r["id"]),
                    "at": float(r["at"]),
                    "route": r["route"],
                    "kind": r["kind"],
                    "actor": r["actor"],
                    "reason": r["reason"],
                    "weights_before": _load(r["weights_before"]),
                    "weights_after": _load(r["weights_after"]),
                    "figures": _load(r["figures"]) or {},
                }
            )
        return out


def _load(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)
