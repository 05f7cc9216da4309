"""The canary audit log: every weight change and verdict change, in the durable store.

One table, `cutover_canary_events`, in SQLite or PostgreSQL through `core.db`. An event says
when, which route, what (kind), who (actor: `operator`, `operator:<name>`, `controller`,
`config`), why (reason), the weights before and after, and the figures judged.

Recording never holds the caller: the weights live in the shared state (Redis, or the store's
own table), and an admin answer must not wait for an audit row, least of all on a store that
does not answer. `record` queues the event in memory and one background writer stores the
queue in order, each write bounded by `STORE_TIMEOUT`; while the store is unavailable it retries
with backoff and says so once in the log. Nothing is dropped silently: past `BACKLOG` waiting
events the oldest is logged in full and counted, as is an event the store refuses `REFUSALS`
times (an error that does not say the store is down) and any event still waiting at shutdown.
A write cut off by the timeout may have reached the store all the same: an event can then be
stored twice (at least once, never lost), which a reader tells by its identical fields.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cutover.core.backoff import backoff
from cutover.core.bounded import STORE_TIMEOUT, bounded
from cutover.core.clock import format_rfc3339
from cutover.core.db import Database, StoreUnavailable
from cutover.core.storable import identity_problem, storable

log = logging.getLogger("cutover.canary")

BACKLOG = 10_000  # events waiting in memory at most
RETRY_BASE, RETRY_CAP = 0.25, 30.0  # backoff between two tries while the store is unavailable
REFUSALS = 3  # tries of an event the store refuses (not unavailable) before it is dropped
_DOWN = (StoreUnavailable, TimeoutError, OSError)

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
    """Writes (in the background) and reads canary events."""

    def __init__(
        self, open_db: Callable[[], Awaitable[Database]], timeout: float = STORE_TIMEOUT
    ) -> None:
        self._open_db = open_db
        self.timeout = timeout
        self._db: Database | None = None
        self._backlog: deque[Event] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._retrying = False  # the writer waits for the store to come back
        self.written = 0
        self.dropped = 0  # logged in full: over the backlog, refused by the store, shutdown
        self.last_error: str | None = None

    async def _database(self) -> Database:
        if self._db is None:
            db = await self._open_db()
            try:
                await db.migrate("canary-events-1", MIGRATION)  # type: ignore[arg-type]
            except StoreUnavailable:
                raise
            except Exception:  # another worker migrated at the same moment: it is done now
                await db.migrate("canary-events-1", MIGRATION)  # type: ignore[arg-type]
            self._db = db
        return self._db

    # -- writing -------------------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Queue `event` for the store; returns at once."""
        if len(self._backlog) >= BACKLOG:
            self._drop(self._backlog.popleft(), f"more than {BACKLOG} events waiting")
        self._backlog.append(event)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._drain(), name="canary-events-writer"
            )

    async def _drain(self) -> None:
        attempt = 0
        refusals = 0  # of the first waiting event, by an error that does not say "down"
        while self._backlog:
            event = self._backlog[0]
            try:
                await bounded(self._insert(event), self.timeout)
            except _DOWN as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if not self._retrying:
                    log.warning(
                        "canary events wait in memory (%d), retried in the background: %s",
                        len(self._backlog),
                        self.last_error,
                    )
                self._retrying = True
                await asyncio.sleep(backoff(attempt, RETRY_BASE, RETRY_CAP))
                attempt += 1
                continue
            except Exception as exc:  # the store refuses this row: tried again, then dropped
                refusals += 1
                if refusals < REFUSALS:
                    await asyncio.sleep(backoff(refusals, RETRY_BASE, RETRY_CAP))
                    continue
                refusals = 0
                if self._backlog and self._backlog[0] is event:
                    self._backlog.popleft()
                self._drop(event, f"refused by the store ({type(exc).__name__})")
                continue
            refusals = 0
            if self._backlog and self._backlog[0] is event:
                self._backlog.popleft()
            self.written += 1
            if self._retrying:
                self._retrying, attempt = False, 0
                log.warning("canary events: the store answers again; storing the waiting ones")

    async def _insert(self, e: Event) -> None:
        db = await self._database()
        await db.execute(
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

    def _drop(self, event: Event, why: str) -> None:
        self.dropped += 1
        log.error("canary event not stored (%s): %s", why, event)

    async def flush(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) for the waiting events to be stored; True when none wait."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.wait({writer}, timeout=timeout)
        return not self._backlog

    async def close(self, timeout: float) -> None:
        """Store what waits (at most `timeout` s, unless the store is known to be failing),
        then stop; what is left is logged in full."""
        if not self._retrying:
            await self.flush(timeout)
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            await asyncio.wait({writer}, timeout=1.0)
        while self._backlog:
            self._drop(self._backlog.popleft(), "still waiting at shutdown")

    @property
    def waiting(self) -> int:
        return len(self._backlog)

    def status(self) -> dict[str, Any]:
        """For /readyz: events waiting for the store, dropped ones, the last store error."""
        return {
            "waiting": len(self._backlog),
            "written": self.written,
            "dropped": self.dropped,
            "retrying": self._retrying,
            "last_error": self.last_error if self._retrying else None,
        }

    # -- reading -------------------------------------------------------------------------

    async def list(
        self, route: str | None = None, limit: int = 100, after: int | None = None
    ) -> list[dict[str, Any]]:
        """Newest first by the time of the change (or, with `after`, the ones stored after
        that id, in the order they were stored).

        Events recorded just before are stored first (unless the store is known to be down),
        so that a reader sees its own change. Raises StoreUnavailable or TimeoutError.
        """
        if not self._retrying:
            await self.flush(self.timeout)
        return await bounded(self._select(route, limit, after), self.timeout)

    async def _select(
        self, route: str | None, limit: int, after: int | None
    ) -> list[dict[str, Any]]:
        db = await self._database()
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
        # The listing by the time of each change: replicas store their events in the
        # background, so a change made on one after a change on another can be stored first.
        # `after` is a feed of what was stored since an id: in store order.
        order = "id ASC" if after is not None else "at DESC, id DESC"
        sql = (
            "SELECT id, at, route, kind, actor, reason, weights_before, weights_after, figures "
            "FROM cutover_canary_events"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY {order} LIMIT ${len(args)}"
        )
        rows = await db.fetch(sql, *args)
        out = []
        for r in rows:
            out.append(
                {
                    "id": int(r["id"]),
                    "at": format_rfc3339(float(r["at"])),
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
