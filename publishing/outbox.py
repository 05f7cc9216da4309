"""The durable outbox: one delivery job per (alert, target), claimed by workers with a lease.

An alert is accepted only once its jobs are committed (`enqueue` runs inside the caller's
transaction). Workers of every process and replica claim jobs with a lease (PostgreSQL
`FOR UPDATE SKIP LOCKED`; SQLite `BEGIN IMMEDIATE` short transactions in WAL mode), so a job
whose worker died is claimed again once its lease runs out. Jobs of one (target, fingerprint)
are delivered in order: a resolve never overtakes its trigger.

Times stored here are wall-clock seconds (`Clock.now()`), since they must outlive a restart.

A target named `backend:<route>` is the history backends behind that gateway route: the
delivery engine POSTs the Alertmanager envelope through the route's split and fallback.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from proxy.clock import Clock
from proxy.db import Database, Tx
from routing.alerts import ZERO_TIME, Alert, Classification

log = logging.getLogger("cutover.publishing")

BACKEND_PREFIX = "backend:"
_CLOCK_SKEW_LIMIT = 86_400.0  # a `now` further than this from the wall clock is not wall time
# Who wants to hear of new jobs, per store (intake and the engine may hold different Outboxes).
_LISTENERS: weakref.WeakKeyDictionary[Database, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)

_MIGRATION_1 = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS publishing_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            target TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            alert_status TEXT NOT NULL,
            alert TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            next_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            last_error TEXT,
            dead_at REAL
        )""",
        "CREATE INDEX IF NOT EXISTS publishing_jobs_due ON publishing_jobs (state, next_at)",
        "CREATE INDEX IF NOT EXISTS publishing_jobs_order"
        " ON publishing_jobs (target, fingerprint, id)",
        """CREATE TABLE IF NOT EXISTS publishing_refs (
            target TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            ref TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (target, fingerprint)
        )""",
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS publishing_jobs (
            id BIGSERIAL PRIMARY KEY,
            target TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            alert_status TEXT NOT NULL,
            alert TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            next_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION,
            last_error TEXT,
            dead_at DOUBLE PRECISION
        )""",
        "CREATE INDEX IF NOT EXISTS publishing_jobs_due ON publishing_jobs (state, next_at)",
        "CREATE INDEX IF NOT EXISTS publishing_jobs_order"
        " ON publishing_jobs (target, fingerprint, id)",
        """CREATE TABLE IF NOT EXISTS publishing_refs (
            target TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            ref TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (target, fingerprint)
        )""",
    ],
}

_COLUMNS = (
    "id, target, fingerprint, alert_status, alert, state, attempts, created_at, next_at,"
    " lease_owner, lease_until, last_error, dead_at"
)


# -- the alert as a job carries it ----------------------------------------------------------


def alert_to_json(alert: Alert) -> bytes:
    """The alert (with its classification) as the job stores it."""
    c = alert.classification
    return orjson.dumps(
        {
            "fingerprint": alert.fingerprint,
            "status": alert.status,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "starts_at": alert.starts_at,
            "ends_at": alert.ends_at,
            "generator_url": alert.generator_url,
            "group_key": alert.group_key,
            "receiver": alert.receiver,
            "external_url": alert.external_url,
            "classification": c.as_dict() if c is not None else None,
        }
    )


def alert_from_json(data: bytes | str) -> Alert:
    raw = orjson.loads(data)
    c = raw.get("classification")
    classification = None
    if c:
        classification = Classification(
            severity=c["severity"],
            category=c.get("category", ""),
            confidence=float(c.get("confidence", 0.0)),
            reasoning=c.get("reasoning", ""),
            recommendations=tuple(c.get("recommendations") or ()),
            source=c.get("source", "rules"),
            model=c.get("model"),
        )
    return Alert(
        fingerprint=raw["fingerprint"],
        status=raw["status"],
        labels=MappingProxyType(dict(raw.get("labels") or {})),
        annotations=MappingProxyType(dict(raw.get("annotations") or {})),
        starts_at=raw.get("starts_at", ""),
        ends_at=raw.get("ends_at", ZERO_TIME),
        generator_url=raw.get("generator_url", ""),
        group_key=raw.get("group_key", ""),
        receiver=raw.get("receiver", ""),
        external_url=raw.get("external_url", ""),
        classification=classification,
    )


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    target: str
    fingerprint: str
    alert_status: str
    alert_json: str
    state: str
    attempts: int
    created_at: float
    next_at: float
    last_error: str | None
    dead_at: float | None

    @property
    def alert(self) -> Alert:
        return alert_from_json(self.alert_json)

    @property
    def backend_route(self) -> str | None:
        """The gateway route for a `backend:<route>` job, else None."""
        if self.target.startswith(BACKEND_PREFIX):
            return self.target[len(BACKEND_PREFIX) :]
        return None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        alert = row["alert"]
        return cls(
            id=int(row["id"]),
            target=row["target"],
            fingerprint=row["fingerprint"],
            alert_status=row["alert_status"],
            alert_json=alert if isinstance(alert, str) else bytes(alert).decode(),
            state=row["state"],
            attempts=int(row["attempts"]),
            created_at=float(row["created_at"]),
            next_at=float(row["next_at"]),
            last_error=row.get("last_error"),
            dead_at=float(row["dead_at"]) if row.get("dead_at") is not None else None,
        )

    def summary(self) -> dict[str, object]:
        """The job as the API shows it (the alert's identity, not its whole body)."""
        return {
            "id": self.id,
            "target": self.target,
            "fingerprint": self.fingerprint,
            "status": self.alert_status,
            "alertname": orjson.loads(self.alert_json).get("labels", {}).get("alertname", ""),
            "state": self.state,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "next_at": self.next_at,
            "last_error": self.last_error,
            "dead_at": self.dead_at,
        }


def _in_list(values: Sequence[str], first: int) -> str:
    return ", ".join(f"${i}" for i in range(first, first + len(values)))


class Outbox:
    """Delivery jobs in the durable store. Intake enqueues; the delivery engine claims."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def setup(self) -> None:
        """Create the tables (SQLite and PostgreSQL), once."""
        await self.db.migrate("publishing-outbox-1", _MIGRATION_1)  # type: ignore[arg-type]

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        """`callback()` runs after each enqueue into this store, through any `Outbox` over the
        same `Database` (the delivery engine wakes up; it must not block)."""
        _LISTENERS.setdefault(self.db, []).append(callback)

    def off_enqueue(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(KeyError, ValueError):
            _LISTENERS[self.db].remove(callback)

    def _notify(self) -> None:
        for callback in list(_LISTENERS.get(self.db, ())):
            try:
                callback()
            except Exception:
                log.exception("outbox listener failed")

    def _wall(self, now: float) -> float:
        wall = self.clock.now()
        if abs(now - wall) > _CLOCK_SKEW_LIMIT:
            return wall  # the caller passed a monotonic reading: job times must be wall time
        return now

    async def enqueue(
        self, tx: Tx, alert: Alert, targets: Sequence[str], *, now: float
    ) -> list[int]:
        """One delivery job per target, inside the caller's transaction (the alert is accepted
        only when this commits). A target named `backend:<route>` means: POST the alert to the
        history backends through that gateway route's split and fallback (the Alertmanager
        envelope; through the compat fan-out where one is configured).

        `now` is wall-clock seconds (`clock.now()`). Returns the job ids, in `targets` order.
        """
        when = self._wall(now)
        body = alert_to_json(alert).decode()
        ids: list[int] = []
        for target in targets:
            job_id = await tx.fetchval(
                "INSERT INTO publishing_jobs"
                " (target, fingerprint, alert_status, alert, state, attempts, created_at, next_at)"
                " VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) RETURNING id",
                target,
                alert.fingerprint,
                alert.status,
                body,
                when,
            )
            ids.append(int(job_id))
        self._notify()
        return ids

    # -- the engine's side ---------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease: float,
        exclude: Sequence[str] = (),
    ) -> list[Job]:
        """Lease up to `limit` due jobs (oldest first, in order per target and fingerprint),
        skipping targets in `exclude` (saturated, rate-limited or breaker open)."""
        if limit <= 0:
            return []
        now = self.clock.now()
        args: list[Any] = [owner, now + lease, now, limit, *exclude]
        excluded = f" AND j.target NOT IN ({_in_list(exclude, 5)})" if exclude else ""
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        sql = (
            "UPDATE publishing_jobs SET lease_owner = $1, lease_until = $2"
            " WHERE id IN (SELECT j.id FROM publishing_jobs j"
            " WHERE j.state = 'pending' AND j.next_at <= $3"
            " AND (j.lease_until IS NULL OR j.lease_until < $3)" + excluded + " AND NOT EXISTS"
            " (SELECT 1 FROM publishing_jobs p WHERE p.target = j.target"
            " AND p.fingerprint = j.fingerprint AND p.id < j.id AND p.state = 'pending')"
            " ORDER BY j.id LIMIT $4" + lock + ")"
            f" RETURNING {_COLUMNS}"
        )
        async with self.db.transaction() as tx:
            rows = await tx.fetch(sql, *args)
        return sorted((Job.from_row(r) for r in rows), key=lambda j: j.id)

    async def release(self, job_ids: Sequence[int], owner: str) -> None:
        """Give back leased jobs untouched (claimed beyond a target's free capacity)."""
        if not job_ids:
            return
        await self.db.execute(
            "UPDATE publishing_jobs SET lease_owner = NULL, lease_until = NULL"
            f" WHERE lease_owner = $1 AND id IN ({_in_list([str(i) for i in job_ids], 2)})",
            owner,
            *job_ids,
        )

    async def complete(self, job: Job) -> None:
        """Delivered: the job leaves the outbox."""
        await self.db.execute("DELETE FROM publishing_jobs WHERE id = $1", job.id)

    async def retry(self, job: Job, error: str, *, at: float, count_attempt: bool = True) -> None:
        """Try again at wall time `at`, remembering the error."""
        await self.db.execute(
            "UPDATE publishing_jobs SET attempts = attempts + $2, next_at = $3,"
            " lease_owner = NULL, lease_until = NULL, last_error = $4 WHERE id = $1",
            job.id,
            1 if count_attempt else 0,
            at,
            error[:2000],
        )

    async def dead_letter(self, job: Job, error: str, *, count_attempt: bool = True) -> None:
        """Give up: the job goes to the dead-letter queue with its last error."""
        await self.db.execute(
            "UPDATE publishing_jobs SET state = 'dead', attempts = attempts + $2,"
            " lease_owner = NULL, lease_until = NULL, last_error = $3, dead_at = $4 WHERE id = $1",
            job.id,
            1 if count_attempt else 0,
            error[:2000],
            self.clock.now(),
        )

    async def dead_letters(self, *, limit: int = 100, target: str | None = None) -> list[Job]:
        if target is None:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM publishing_jobs WHERE state = 'dead'"
                " ORDER BY id DESC LIMIT $1",
                limit,
            )
        else:
            rows = await self.db.fetch(
                f"SELECT {_COLUMNS} FROM publishing_jobs WHERE state = 'dead' AND target = $2"
                " ORDER BY id DESC LIMIT $1",
                limit,
                target,
            )
        return [Job.from_row(r) for r in rows]

    async def replay(self, job_id: int) -> bool:
        """Put a dead-lettered job back in line (attempts start again). False if no such job."""
        changed = await self.db.execute(
            "UPDATE publishing_jobs SET state = 'pending', attempts = 0, next_at = $2,"
            " dead_at = NULL, lease_owner = NULL, lease_until = NULL"
            " WHERE id = $1 AND state = 'dead'",
            job_id,
            self.clock.now(),
        )
        if changed:
            self._notify()
        return bool(changed)

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM publishing_jobs WHERE id = $1", job_id
        )
        return Job.from_row(row) if row else None

    async def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per target and state (`pending`, `dead`)."""
        rows = await self.db.fetch(
            "SELECT target, state, COUNT(*) AS n FROM publishing_jobs GROUP BY target, state"
        )
        out: dict[str, dict[str, int]] = {}
        for row in rows:
            out.setdefault(row["target"], {})[row["state"]] = int(row["n"])
        return out

    # -- references targets hand back (Rootly incident id, Slack message ts) --------------

    async def get_ref(self, target: str, fingerprint: str) -> str | None:
        return await self.db.fetchval(
            "SELECT ref FROM publishing_refs WHERE target = $1 AND fingerprint = $2",
            target,
            fingerprint,
        )

    async def put_ref(self, target: str, fingerprint: str, ref: str) -> None:
        await self.db.execute(
            "INSERT INTO publishing_refs (target, fingerprint, ref, created_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (target, fingerprint)"
            " DO UPDATE SET ref = excluded.ref, created_at = excluded.created_at",
            target,
            fingerprint,
            ref,
            self.clock.now(),
        )

    async def drop_ref(self, target: str, fingerprint: str) -> None:
        await self.db.execute(
            "DELETE FROM publishing_refs WHERE target = $1 AND fingerprint = $2",
            target,
            fingerprint,
        )
