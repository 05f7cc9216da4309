"""The durable outbox: one delivery job per (alert, target), claimed by workers with a lease.

An alert is accepted only once its jobs are committed (`enqueue` runs inside the caller's
transaction). Workers of every process and replica claim jobs with a lease (PostgreSQL
`FOR UPDATE SKIP LOCKED`; SQLite `BEGIN IMMEDIATE` short transactions in WAL mode), so a job
whose worker died is claimed again once its lease runs out. Jobs of one (target, fingerprint)
are delivered in order: a resolve never overtakes its trigger. Delivered jobs are deleted in
batches (`start_completions`), keeping their lease until then.

A claim costs the same at any backlog: it reads the targets that have jobs (one index probe
each), then per target only the first due jobs in the order of a partial index of unleased
pending jobs, each checked against the head of its (target, fingerprint) by one probe of
another partial index. The planner is told to plan it for the rows there are now
(`plan_cache_mode`), not to reuse a plan made while the table was empty (see
docs/publishing.md, "Claims at any backlog").

Times stored here are wall-clock seconds (`Clock.now()`), since they must outlive a restart.

A target named `backend:<route>` is the history backends behind that gateway route: the
delivery engine POSTs the Alertmanager envelope through the route's split and fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from cutover.alerts.model import ZERO_TIME, Alert, Classification
from cutover.core.clock import Clock, rfc3339_or_none
from cutover.core.db import Database, StoreUnavailable, Tx
from cutover.core.tasks import Supervised, TaskSupervisor

log = logging.getLogger("cutover.publishing")

BACKEND_PREFIX = "backend:"
_CLOCK_SKEW_LIMIT = 86_400.0  # a `now` further than this from the wall clock is not wall time
# Who wants to hear of new jobs, per store (intake and the engine may hold different Outboxes).
_LISTENERS: weakref.WeakKeyDictionary[Database, list[Callable[[], None]]] = (
    weakref.WeakKeyDictionary()
)
# Delivered jobs waiting to be deleted, per store (shared by every `Outbox` over it).
_COMPLETIONS: weakref.WeakKeyDictionary[Database, _Completions] = weakref.WeakKeyDictionary()
COMPLETE_BATCH = 64  # delivered jobs that trigger a flush at once
COMPLETE_INTERVAL = 0.02  # seconds the oldest delivered job waits at most (while the store is up)
_SQLITE_CHUNK = 500  # ids per `IN (...)`: far below SQLite's bound-parameter limit
_FLUSH_RETRY_CAP = 5.0  # seconds between flush attempts while the store is down

_MIGRATION_2_SQL = [
    # What may be claimed now, per target in due order: an unleased pending job. A lease takes
    # the job out of this index, so a claim never walks past jobs in flight.
    "CREATE INDEX IF NOT EXISTS publishing_jobs_ready ON publishing_jobs (target, next_at, id)"
    " WHERE state = 'pending' AND lease_until IS NULL",
    # The head of each (target, fingerprint): its oldest pending job, the only one claimable.
    "CREATE INDEX IF NOT EXISTS publishing_jobs_head ON publishing_jobs (target, fingerprint, id)"
    " WHERE state = 'pending'",
    # Leases, so that the ones that ran out (their engine died) are found without a scan.
    "CREATE INDEX IF NOT EXISTS publishing_jobs_leased ON publishing_jobs (lease_until)"
    " WHERE state = 'pending' AND lease_until IS NOT NULL",
    # The dead-letter queue, newest first.
    "CREATE INDEX IF NOT EXISTS publishing_jobs_dead ON publishing_jobs (id) WHERE state = 'dead'",
    # Superseded by the partial indexes above. Left in place, they would be chosen for
    # `state = 'pending'` by a planner without statistics (SQLite without ANALYZE does) and
    # turn a claim into a sort of every pending job.
    "DROP INDEX IF EXISTS publishing_jobs_order",
    "DROP INDEX IF EXISTS publishing_jobs_due",
]
_MIGRATION_2 = {"sqlite": _MIGRATION_2_SQL, "postgresql": _MIGRATION_2_SQL}
# The dead letters of one target, newest first, without walking every other target's.
_MIGRATION_3_SQL = [
    "CREATE INDEX IF NOT EXISTS publishing_jobs_dead_target"
    " ON publishing_jobs (target, id) WHERE state = 'dead'",
]
_MIGRATION_3 = {"sqlite": _MIGRATION_3_SQL, "postgresql": _MIGRATION_3_SQL}

# The targets that have unleased pending jobs: one probe of publishing_jobs_ready per target.
_TARGETS_SQL = (
    "WITH RECURSIVE t(name) AS ("
    " SELECT (SELECT target FROM publishing_jobs WHERE state = 'pending'"
    " AND lease_until IS NULL ORDER BY target LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT target FROM publishing_jobs WHERE state = 'pending'"
    " AND lease_until IS NULL AND target > t.name ORDER BY target LIMIT 1)"
    " FROM t WHERE t.name IS NOT NULL)"
    " SELECT name FROM t WHERE name IS NOT NULL"
)
# Leases that ran out go back in line (their engine died, or took longer than the lease).
_EXPIRED_SQL = (
    "UPDATE publishing_jobs SET lease_owner = NULL, lease_until = NULL WHERE id IN"
    " (SELECT id FROM publishing_jobs WHERE state = 'pending' AND lease_until IS NOT NULL"
    " AND lease_until < $1{lock})"
)
# One target's first claimable jobs: unleased, due, and the head of their (target,
# fingerprint) -- the correlated subquery is one probe of publishing_jobs_head per row read.
_PICK_ARM = (
    "SELECT id, next_at FROM (SELECT j.id, j.next_at FROM publishing_jobs j"
    " WHERE j.state = 'pending' AND j.lease_until IS NULL AND j.target = ${target}"
    " AND j.next_at <= $1 AND j.id = (SELECT p.id FROM publishing_jobs p"
    " WHERE p.state = 'pending' AND p.target = j.target AND p.fingerprint = j.fingerprint"
    " ORDER BY p.id LIMIT 1)"
    " ORDER BY j.next_at, j.id LIMIT ${limit}{lock}) AS a{arm}"
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

_ENQUEUE_SQL = (
    "INSERT INTO publishing_jobs"
    " (target, fingerprint, alert_status, alert, state, attempts, created_at, next_at)"
    " VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)"
)
# Many jobs in one statement, ids in the arrays' order.
_ENQUEUE_UNNEST_SQL = (
    "INSERT INTO publishing_jobs"
    " (target, fingerprint, alert_status, alert, state, attempts, created_at, next_at)"
    " SELECT t, f, s, a, 'pending', 0, w, w FROM UNNEST($1::text[], $2::text[], $3::text[],"
    " $4::text[], $5::float8[]) WITH ORDINALITY AS u(t, f, s, a, w, n) ORDER BY n"
)

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
            "group_labels": dict(alert.group_labels),
            "classification": c.to_stored() if c is not None else None,
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
            cached=c.get("cached") is True,
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
        group_labels=MappingProxyType(dict(raw.get("group_labels") or {})),  # older jobs: none
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
            "created_at": rfc3339_or_none(self.created_at),
            "next_at": rfc3339_or_none(self.next_at),
            "last_error": self.last_error,
            "dead_at": rfc3339_or_none(self.dead_at),
        }


DEAD_LETTERS_SQL = (
    f"SELECT {_COLUMNS} FROM publishing_jobs WHERE state = 'dead' ORDER BY id DESC LIMIT $1"
)
DEAD_LETTERS_OF_TARGET_SQL = (
    f"SELECT {_COLUMNS} FROM publishing_jobs WHERE state = 'dead' AND target = $2"
    " ORDER BY id DESC LIMIT $1"
)


def _copy_counts(counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Counts shared by several callers, each given its own (a caller may change it)."""
    return {target: dict(states) for target, states in counts.items()}


def _in_list(values: Sequence[str], first: int) -> str:
    return ", ".join(f"${i}" for i in range(first, first + len(values)))


def _notify(db: Database) -> None:
    for callback in list(_LISTENERS.get(db, ())):
        try:
            callback()
        except Exception:
            log.exception("outbox listener failed")


async def _delete_jobs(db: Database, ids: Sequence[int]) -> int:
    """Delete the jobs `ids`: one statement on PostgreSQL (`= ANY($1)`), one per chunk of
    `_SQLITE_CHUNK` on SQLite (`IN (...)`), in one transaction. Returns the statements run."""
    if db.dialect == "postgresql":
        await db.execute("DELETE FROM publishing_jobs WHERE id = ANY($1::bigint[])", list(ids))
        return 1
    chunks = [ids[i : i + _SQLITE_CHUNK] for i in range(0, len(ids), _SQLITE_CHUNK)]
    if len(chunks) == 1:
        await db.execute(f"DELETE FROM publishing_jobs WHERE id IN ({_in_list(ids, 1)})", *ids)
        return 1
    async with db.transaction() as tx:
        for chunk in chunks:
            await tx.execute(
                f"DELETE FROM publishing_jobs WHERE id IN ({_in_list(chunk, 1)})", *chunk
            )
    return len(chunks)


class _Completions:
    """Delivered jobs of one store not yet deleted, and the task that deletes them in batches.

    A delivered job waits here for at most `interval` seconds (or until `batch` jobs wait),
    then one statement deletes the whole batch. Until then its row keeps its lease and its
    `pending` state: no engine claims it again before the lease runs out, and the job behind
    it (same target and fingerprint) waits for the flush, so a resolve is never delivered
    while its trigger could still be delivered again (the process dying before the flush).
    While the store is down the ids stay here and the flush is retried.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ids: dict[int, float] = {}  # job id -> monotonic time it was queued, in order
        self.batch = COMPLETE_BATCH
        self.interval = COMPLETE_INTERVAL
        self.lock = asyncio.Lock()  # one flush at a time
        self.kick = asyncio.Event()  # the first id queued, or a batch is full
        self.task: Supervised | None = None
        self.users = 0  # engines relying on `task`
        self.statements = 0  # DELETE statements run (one per batch, per chunk on SQLite)
        self.flushes = 0  # flushes that deleted jobs
        self.deleted = 0  # jobs deleted by flushes
        self.failing = False  # the last flush failed (logged once until one succeeds)

    def add(self, job_id: int) -> None:
        self.ids.setdefault(job_id, self.clock.monotonic())
        if len(self.ids) == 1 or len(self.ids) >= self.batch:
            self.kick.set()

    def due_in(self, now: float) -> float:
        """Seconds until the waiting jobs must be flushed (0: now; inf: nothing waits)."""
        if not self.ids:
            return float("inf")
        if len(self.ids) >= self.batch:
            return 0.0
        oldest = next(iter(self.ids.values()))
        return max(0.0, oldest + self.interval - now)

    async def flush(self, db: Database) -> int:
        """Delete every job waiting now; the number deleted. On failure the ids stay queued
        and `StoreUnavailable` (or the store's error) is raised."""
        async with self.lock:
            if not self.ids:
                return 0
            ids = list(self.ids)
            try:
                self.statements += await _delete_jobs(db, ids)
            except Exception as exc:
                if not self.failing:
                    self.failing = True
                    log.warning(
                        "publishing: %d delivered jobs cannot leave the outbox yet (%s);"
                        " kept and retried",
                        len(ids),
                        exc if isinstance(exc, StoreUnavailable) else repr(exc),
                    )
                raise
            if self.failing:
                self.failing = False
                log.info("publishing: the store is back; delivered jobs leave the outbox again")
            for job_id in ids:
                self.ids.pop(job_id, None)
            self.flushes += 1
            self.deleted += len(ids)
        _notify(db)  # jobs that waited behind these (same target and fingerprint) are due
        return len(ids)

    async def run(self, db: Database) -> None:
        failures = 0
        while True:
            wait = self.due_in(self.clock.monotonic())
            if wait > 0:
                self.kick.clear()
                if not self.ids:
                    await self.kick.wait()
                    continue
                # The wait is read on the gateway's clock and slept on the loop's; once it
                # has passed the batch is flushed even if that clock did not move.
                try:
                    await asyncio.wait_for(self.kick.wait(), wait)
                    continue  # a batch is full, or the queue changed: look again
                except TimeoutError:
                    if not self.ids:
                        continue
            try:
                await self.flush(db)
                failures = 0
            except Exception:
                failures += 1
                await asyncio.sleep(min(_FLUSH_RETRY_CAP, self.interval * 2**failures))


class Outbox:
    """Delivery jobs in the durable store. Intake enqueues; the delivery engine claims."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        # `recent_counts`: the count running now, and the last one read (monotonic time it
        # started, the counts).
        self._counting: asyncio.Task[dict[str, dict[str, int]]] | None = None
        self._counted: tuple[float, dict[str, dict[str, int]]] | None = None

    async def setup(self) -> None:
        """Create the tables (SQLite and PostgreSQL), once."""
        await self.db.migrate("publishing-outbox-1", _MIGRATION_1)  # type: ignore[arg-type]
        await self.db.migrate("publishing-outbox-2", _MIGRATION_2)  # type: ignore[arg-type]
        await self.db.migrate("publishing-outbox-3", _MIGRATION_3)  # type: ignore[arg-type]

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        """`callback()` runs after each enqueue into this store, through any `Outbox` over the
        same `Database` (the delivery engine wakes up; it must not block)."""
        _LISTENERS.setdefault(self.db, []).append(callback)

    def off_enqueue(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(KeyError, ValueError):
            _LISTENERS[self.db].remove(callback)

    def _notify(self) -> None:
        _notify(self.db)

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

    async def enqueue_many(self, tx: Tx, jobs: Sequence[tuple[Alert, Sequence[str], float]]) -> int:
        """`enqueue` for many alerts in one statement (PostgreSQL `UNNEST`, SQLite
        `executemany`): (alert, targets, now) each, jobs in that order (each (target,
        fingerprint) keeps its order). The number of jobs written."""
        rows: list[tuple[str, str, str, str, float]] = []
        for alert, targets, now in jobs:
            if not targets:
                continue
            when = self._wall(now)
            body = alert_to_json(alert).decode()
            rows += [(t, alert.fingerprint, alert.status, body, when) for t in targets]
        if not rows:
            return 0
        if tx.dialect == "postgresql":
            await tx.execute(_ENQUEUE_UNNEST_SQL, *(list(col) for col in zip(*rows, strict=True)))
        else:
            await tx.executemany(_ENQUEUE_SQL, rows)
        self._notify()
        return len(rows)

    # -- the engine's side ---------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        *,
        limit: int,
        lease: float,
        exclude: Sequence[str] = (),
        caps: Mapping[str, int] | None = None,
        timeout: float | None = None,
    ) -> list[Job]:
        """Lease up to `limit` due jobs (longest due first, in order per target and
        fingerprint), none for targets in `exclude` (saturated, rate-limited or breaker open)
        and at most `caps[target]` for a target in `caps`. With `timeout` the whole claim is
        bounded and raises `StoreTimeout` past it (nothing is leased then)."""
        if limit <= 0:
            return []
        now = self.clock.now()
        skip = set(exclude)
        pg = self.db.dialect == "postgresql"
        lock = " FOR UPDATE SKIP LOCKED" if pg else ""
        # A claim transaction (core.db): planned for the table as it is now, not with a plan
        # cached while it was empty; a lease need not survive a crash of the store.
        async with self.db.transaction(timeout=timeout, claim=True) as tx:
            await tx.execute(_EXPIRED_SQL.format(lock=lock), now)
            arms: list[tuple[str, int]] = []
            for row in await tx.fetch(_TARGETS_SQL):
                name = row["name"]
                cap = limit if caps is None else min(limit, caps.get(name, limit))
                if name not in skip and cap > 0:
                    arms.append((name, cap))
            if not arms:
                return []
            pick = " UNION ALL ".join(
                _PICK_ARM.format(target=3 + 2 * i, limit=4 + 2 * i, lock=lock, arm=i)
                for i in range(len(arms))
            )
            args: list[Any] = [now, limit]
            for name, cap in arms:
                args += [name, cap]
            picked = await tx.fetch(pick + " ORDER BY next_at, id LIMIT $2", *args)
            if not picked:
                return []
            ids = [int(r["id"]) for r in picked]
            if pg:
                rows = await tx.fetch(
                    "UPDATE publishing_jobs SET lease_owner = $1, lease_until = $2"
                    f" WHERE id = ANY($3::bigint[]) RETURNING {_COLUMNS}",
                    owner,
                    now + lease,
                    ids,
                )
            else:
                rows = await tx.fetch(
                    "UPDATE publishing_jobs SET lease_owner = $1, lease_until = $2"
                    f" WHERE id IN ({_in_list(ids, 3)}) RETURNING {_COLUMNS}",
                    owner,
                    now + lease,
                    *ids,
                )
        jobs = [Job.from_row(r) for r in rows]
        # A job delivered here whose lease ran out while its deletion waited (the store was
        # down): it is done, and leaves with the next flush.
        jobs = [j for j in jobs if not self.completing(j.id)]
        return sorted(jobs, key=lambda j: j.id)

    async def backlog(self, *, timeout: float | None = None) -> int:
        """Pending jobs in the store (due or not, leased or not), counted within `timeout`."""
        async with self.db.transaction(timeout=timeout, read_only=True) as tx:
            return int(
                await tx.fetchval("SELECT COUNT(*) FROM publishing_jobs WHERE state = 'pending'")
            )

    async def release(self, job_ids: Sequence[int], owner: str) -> None:
        """Give back leased jobs untouched (claimed beyond a target's free capacity)."""
        job_ids = [i for i in job_ids if not self.completing(i)]
        if not job_ids:
            return
        await self.db.execute(
            "UPDATE publishing_jobs SET lease_owner = NULL, lease_until = NULL"
            f" WHERE lease_owner = $1 AND id IN ({_in_list([str(i) for i in job_ids], 2)})",
            owner,
            *job_ids,
        )

    async def complete(self, job: Job) -> None:
        """Delivered: the job leaves the outbox. While a delivery engine runs over this store
        (`start_completions`) it leaves with the next batch, within `interval` seconds; it
        keeps its lease until then. Otherwise it is deleted at once."""
        state = self._completions()
        state.add(job.id)
        if state.task is None:
            try:
                await state.flush(self.db)
            except Exception:
                state.ids.pop(job.id, None)  # as before batching: its lease runs out
                raise

    # -- batched completions ---------------------------------------------------------------

    def _completions(self) -> _Completions:
        state = _COMPLETIONS.get(self.db)
        if state is None:
            state = _COMPLETIONS[self.db] = _Completions(self.clock)
        return state

    def start_completions(
        self,
        *,
        batch: int = COMPLETE_BATCH,
        interval: float = COMPLETE_INTERVAL,
        tasks: TaskSupervisor | None = None,
    ) -> None:
        """Batch `complete`: delivered jobs are deleted `batch` at a time, or once the oldest
        has waited `interval` seconds. `interval` must be far below the lease. The flusher is
        a task of `tasks` (the gateway's), else of a supervisor of its own."""
        state = self._completions()
        state.clock = self.clock
        state.batch = max(1, batch)
        state.interval = max(0.0, interval)
        state.users += 1
        if state.task is None:
            supervisor = tasks or TaskSupervisor(clock=self.clock)
            state.task = supervisor.start("publishing-completions", lambda: state.run(self.db))

    async def stop_completions(self) -> None:
        """The last engine over this store stops: flush what waits, before the store closes.
        If the store is down, those jobs are delivered again once their lease runs out."""
        state = self._completions()
        state.users = max(0, state.users - 1)
        if state.users > 0 or state.task is None:
            return
        async with state.lock:  # not in the middle of a flush
            state.task.cancel()
        await state.task.stop()
        state.task = None
        try:
            await state.flush(self.db)
        except Exception as exc:
            log.warning(
                "publishing: %d delivered jobs could not leave the outbox at shutdown (%s);"
                " they are delivered again once their lease runs out",
                len(state.ids),
                exc,
            )
            state.ids.clear()

    async def flush(self) -> int:
        """Delete the delivered jobs still waiting in this process (reads of what is pending
        call this first, so they see the truth). Raises `StoreUnavailable`."""
        return await self._completions().flush(self.db)

    def completing(self, job_id: int) -> bool:
        """True while `job_id` is delivered and waits to be deleted."""
        state = _COMPLETIONS.get(self.db)
        return state is not None and job_id in state.ids

    def completion_stats(self) -> dict[str, int]:
        """Delivered jobs waiting, DELETE statements run, flushes and jobs deleted by them."""
        state = self._completions()
        return {
            "waiting": len(state.ids),
            "statements": state.statements,
            "flushes": state.flushes,
            "deleted": state.deleted,
        }

    async def retry(self, job: Job, error: str, *, at: float, count_attempt: bool = True) -> None:
        """Try again at wall time `at`, remembering the error. The jobs queued behind it (same
        target and fingerprint) cannot go before it, so they are not due before `at` either:
        a claim then never reads them while it waits."""
        if self.completing(job.id):
            return  # delivered already: it leaves with the next flush
        async with self.db.transaction() as tx:
            await tx.execute(
                "UPDATE publishing_jobs SET attempts = attempts + $2, next_at = $3,"
                " lease_owner = NULL, lease_until = NULL, last_error = $4 WHERE id = $1",
                job.id,
                1 if count_attempt else 0,
                at,
                error[:2000],
            )
            await tx.execute(
                "UPDATE publishing_jobs SET next_at = $4 WHERE state = 'pending'"
                " AND target = $1 AND fingerprint = $2 AND id > $3 AND next_at < $4",
                job.target,
                job.fingerprint,
                job.id,
                at,
            )

    async def dead_letter(self, job: Job, error: str, *, count_attempt: bool = True) -> None:
        """Give up: the job goes to the dead-letter queue with its last error."""
        if self.completing(job.id):
            return  # delivered already: it leaves with the next flush
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
            rows = await self.db.fetch(DEAD_LETTERS_SQL, limit)
        else:
            rows = await self.db.fetch(DEAD_LETTERS_OF_TARGET_SQL, limit, target)
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
        await self.flush()  # a delivered job is gone, as the caller expects
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM publishing_jobs WHERE id = $1", job_id
        )
        return Job.from_row(row) if row else None

    async def counts(self) -> dict[str, dict[str, int]]:
        """Jobs per target and state (`pending`, `dead`); delivered jobs are not counted.
        Read from the store by this call: what the caller changed before is counted."""
        await self.flush()
        rows = await self.db.fetch(
            "SELECT target, state, COUNT(*) AS n FROM publishing_jobs GROUP BY target, state"
        )
        out: dict[str, dict[str, int]] = {}
        for row in rows:
            out.setdefault(row["target"], {})[row["state"]] = int(row["n"])
        return out

    async def recent_counts(self, *, max_age: float, timeout: float) -> dict[str, dict[str, int]]:
        """`counts` for readers that may see numbers up to `max_age` seconds old (on the
        injected clock): /metrics, read by every scraper. A count that started less than
        `max_age` ago is reused; callers that arrive while a count runs wait for that one,
        so any number of scrapes costs one query in flight (a `GROUP BY` over every job).
        The query is bounded by `timeout` seconds from its start: past it every caller
        waiting for it gets `TimeoutError`. A failure is not reused: the next call asks
        the store again. `StoreUnavailable` as `counts`."""
        counted = self._counted
        if counted is not None and self.clock.monotonic() - counted[0] < max_age:
            return _copy_counts(counted[1])
        task = self._counting
        if task is None:
            task = self._counting = asyncio.get_running_loop().create_task(
                asyncio.wait_for(self.counts(), timeout), name="publishing-outbox-count"
            )
            task.add_done_callback(functools.partial(self._counted_now, self.clock.monotonic()))
        # A caller that gives up (cancelled) leaves the count to the others; it ends by
        # `timeout` whoever waits.
        return _copy_counts(await asyncio.shield(task))

    def _counted_now(self, started: float, task: asyncio.Task[dict[str, dict[str, int]]]) -> None:
        if self._counting is task:
            self._counting = None
        if not task.cancelled() and task.exception() is None:
            self._counted = (started, task.result())

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
