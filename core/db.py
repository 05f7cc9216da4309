"""The one durable store: SQLite by default (embedded), PostgreSQL through asyncpg.

Features write SQL once, with PostgreSQL-style numbered parameters (`$1`, `$2`); on SQLite
they become `?1`, `?2`, which SQLite understands natively. DDL differs per dialect, so
`migrate` takes statements per dialect. Rows come back as plain dicts.

Every failure to reach or use the store raises `StoreUnavailable`, so that callers can answer
503 (an alert is accepted only once it is stored) instead of crashing. A transaction opened with
a `timeout` is bounded (PostgreSQL `statement_timeout`; SQLite the busy timeout and a progress
handler): past it, `StoreTimeout` (a `StoreUnavailable`) and the transaction rolls back.

Work queues (the publishing outbox, the alert intake's classify queue) take work with *claims*:
short transactions opened with `claim=True`, whose statements are planned for the table as it is
now (see `transaction`), timed and counted by a `ClaimMeter`. What keeps a claim cheap at any
backlog is the queue's own partial indexes (docs/publishing.md, "Claims at any backlog").

    db = await open_database("sqlite:///var/lib/cutover/state.db")
    await db.migrate("outbox-1", {"sqlite": [...], "postgresql": [...]})
    async with db.transaction() as tx:
        rows = await tx.fetch("SELECT ... WHERE id = $1", 7)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import asyncpg

from cutover.core.clock import Clock

Dialect = Literal["sqlite", "postgresql"]
DEFAULT_SQLITE_PATH = ".cutover/state.db"
_PARAM = re.compile(r"\$(\d+)")
_SQLITE_BUSY_MS = 5000  # how long a SQLite statement waits for another writer by default
_SQLITE_PROGRESS_STEPS = 1000  # VM steps between deadline checks in a bounded transaction
SLOW_CLAIM = 1.0  # seconds: a claim this slow is logged (at most once a minute per queue)
_SLOW_CLAIM_LOG_EVERY = 60.0
# A claim's statements are planned for the rows there are now; its commit does not wait for the
# WAL flush (PostgreSQL; set for the transaction only).
_PG_CLAIM_SETTINGS = [
    "set_config('plan_cache_mode', 'force_custom_plan', true)",
    "set_config('synchronous_commit', 'off', true)",
]
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The durable store cannot be reached or refused the operation."""


class StoreTimeout(StoreUnavailable):
    """A bounded transaction ran out of time (the store is slow, or a lock was held)."""


class Tx:
    """What `execute`/`fetch` run on: the database itself or an open transaction."""

    dialect: Dialect

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None


class Database(Tx):
    url: str

    def transaction(
        self, *, timeout: float | None = None, read_only: bool = False, claim: bool = False
    ) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A transaction; with `timeout` (seconds) everything in it, waiting for locks
        included, is bounded: past it `StoreTimeout` is raised and the work rolled back.
        `read_only` takes no write lock (SQLite: a deferred BEGIN).

        `claim`: a work queue's claim. On PostgreSQL its statements are planned for the table
        as it is now (`plan_cache_mode = force_custom_plan`, well under a millisecond), never
        with the generic plan PostgreSQL caches for a prepared statement after five runs,
        which, made while the queue was empty, can walk every row for every row once it is
        not; and its commit does not wait for the WAL flush (a lease lost with a crash of the
        store only means the work is claimed again: at least once). SQLite plans every
        statement as it runs."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def migrate(self, name: str, statements: dict[Dialect, list[str]]) -> None:
        """Apply `statements` for this dialect once (recorded under `name`)."""
        async with self.transaction() as tx:
            if self.dialect == "postgresql":
                # Several processes start at once: CREATE TABLE IF NOT EXISTS alone races in
                # PostgreSQL's catalog, so migrations run one at a time (SQLite's BEGIN
                # IMMEDIATE already serialises them).
                await tx.execute("SELECT pg_advisory_xact_lock(7461203)")
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS cutover_migrations (name TEXT PRIMARY KEY)"
            )
            done = await tx.fetchval("SELECT name FROM cutover_migrations WHERE name = $1", name)
            if done:
                return
            for sql in statements[self.dialect]:
                await tx.execute(sql)
            await tx.execute("INSERT INTO cutover_migrations (name) VALUES ($1)", name)


class ClaimMeter:
    """The claims of one work queue, timed and counted: every claim's seconds observed in
    `seconds` (a Histogram), a claim that ran out of its bound (`StoreTimeout`) counted in
    `timeouts` (a Counter), a slow one (`SLOW_CLAIM`) logged at WARNING at most once a minute,
    with how much waits (`waiting()`, None when the store cannot say; `unit` names it). `last`
    (seconds the last claim took) and `timed_out` (claims that timed out) are what /readyz
    shows."""

    def __init__(
        self,
        what: str,
        unit: str,
        clock: Clock,
        seconds: Any,
        timeouts: Any,
        waiting: Callable[[], Awaitable[int | None]],
        logger: logging.Logger,
    ) -> None:
        self.what = what  # "publishing: claiming due jobs", for the log
        self.unit = unit  # "jobs pending"
        self.clock = clock
        self._seconds = seconds
        self._timeouts = timeouts
        self._waiting = waiting
        self._log = logger
        self.last: float | None = None
        self.timed_out = 0
        self._slow_logged = float("-inf")  # monotonic time a slow claim was last logged

    async def measure(self, claim: Awaitable[T], bound: float | None) -> T:
        """Await `claim` (bounded by `bound` seconds, for the log), timed and counted."""
        started = self.clock.monotonic()
        try:
            result = await claim
        except StoreTimeout:
            self.timed_out += 1
            self._timeouts.inc()
            raise
        finally:
            now = self.clock.monotonic()
            self.last = now - started
            self._seconds.observe(self.last)
        if self.last >= SLOW_CLAIM and now - self._slow_logged >= _SLOW_CLAIM_LOG_EVERY:
            self._slow_logged = now
            self._log.warning(
                "%s took %.2fs (%s %s; bound %s)",
                self.what,
                self.last,
                count_or_unknown(await self.waiting()),
                self.unit,
                "none" if bound is None else f"{bound:g}s",
            )
        return result

    async def waiting(self) -> int | None:
        """How much waits in the queue, or None when the store cannot say."""
        try:
            return await self._waiting()
        except StoreUnavailable:
            return None


def count_or_unknown(count: int | None) -> str:
    """A count for a log line; None (the store could not say) reads "an unknown number of"."""
    return "an unknown number of" if count is None else str(count)


# -- SQLite -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _sqlite_sql(sql: str) -> str:
    return _PARAM.sub(r"?\1", sql)


def _sqlite_error(exc: sqlite3.OperationalError, bounded: bool) -> StoreUnavailable:
    """A bounded transaction that was interrupted, or waited its bound for a lock, timed out."""
    text = str(exc)
    if text == "interrupted" or (bounded and "locked" in text):
        return StoreTimeout(f"sqlite: {text} (time bound reached)")
    return StoreUnavailable(f"sqlite: {text}")


class _SqliteTx(Tx):
    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, bounded: bool = False) -> None:
        self._conn = conn
        self._bounded = bounded

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            cursor = await self._conn.execute(_sqlite_sql(sql), args)
            return cursor.rowcount
        except sqlite3.OperationalError as exc:
            raise _sqlite_error(exc, self._bounded) from exc

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(_sqlite_sql(sql), rows)
        except sqlite3.OperationalError as exc:
            raise _sqlite_error(exc, self._bounded) from exc

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        try:
            async with self._conn.execute(_sqlite_sql(sql), args) as cursor:
                names = [d[0] for d in cursor.description or ()]
                return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
        except sqlite3.OperationalError as exc:
            raise _sqlite_error(exc, self._bounded) from exc


class SqliteDatabase(_SqliteTx, Database):
    """One connection per process in WAL mode; writes are short transactions."""

    def __init__(self, url: str, conn: aiosqlite.Connection) -> None:
        super().__init__(conn)
        self.url = url
        self._lock = asyncio.Lock()  # one transaction at a time on the shared connection
        self._deadline: float | None = None  # time.monotonic() a bounded transaction ends

    def _past_deadline(self) -> int:
        """SQLite's progress handler (on the connection's thread): non-zero interrupts."""
        deadline = self._deadline
        return 1 if deadline is not None and time.monotonic() > deadline else 0

    def _begin_bounded(self, conn: sqlite3.Connection, busy: int, begin: str) -> None:
        """On the connection's thread: the bound, then BEGIN (one hand-off, not three)."""
        conn.execute(f"PRAGMA busy_timeout={busy}")
        conn.set_progress_handler(self._past_deadline, _SQLITE_PROGRESS_STEPS)
        conn.execute(begin)

    @staticmethod
    def _end_bounded(conn: sqlite3.Connection, commit: bool) -> None:
        """On the connection's thread: commit or roll back, then lift the bound whatever
        happened (one hand-off, not three)."""
        try:
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            with contextlib.suppress(sqlite3.Error):  # a closed connection
                conn.set_progress_handler(None, 0)
                conn.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")

    async def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the connection's thread, as aiosqlite runs each of its calls: a
        bounded transaction's set-up is one hand-off instead of one per step. (aiosqlite has
        no public call for this; `_execute` has been its queue since its first releases.)"""
        return await self._conn._execute(fn, *args)  # type: ignore[no-any-return]

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            count = await super().execute(sql, *args)
            await self._conn.commit()
            return count

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._lock:
            await super().executemany(sql, rows)
            await self._conn.commit()

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self._lock:
            return await super().fetch(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, timeout: float | None = None, read_only: bool = False, claim: bool = False
    ) -> AsyncIterator[Tx]:
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
        async with self._lock:
            if timeout is None:
                try:
                    await self._conn.execute(begin)
                except sqlite3.OperationalError as exc:
                    raise _sqlite_error(exc, False) from exc
                try:
                    yield _SqliteTx(self._conn, False)
                except BaseException:
                    await self._conn.rollback()
                    raise
                try:
                    await self._conn.commit()
                except sqlite3.OperationalError as exc:
                    raise _sqlite_error(exc, False) from exc
                return
            # Bounded: a lock wait by the busy timeout, running statements by the progress
            # handler; a deadline that is not armed interrupts nothing, so a late check never
            # hits a later statement.
            self._deadline = time.monotonic() + timeout
            busy = max(1, min(_SQLITE_BUSY_MS, int(timeout * 1000)))
            conn = self._conn._conn
            try:
                await self._on_thread(self._begin_bounded, conn, busy, begin)
            except sqlite3.OperationalError as exc:
                self._deadline = None
                with contextlib.suppress(sqlite3.Error, ValueError):  # a closed connection
                    await self._on_thread(self._end_bounded, conn, False)
                raise _sqlite_error(exc, True) from exc
            try:
                yield _SqliteTx(self._conn, True)
            except BaseException:
                self._deadline = None  # the rollback is never interrupted
                await self._on_thread(self._end_bounded, conn, False)
                raise
            try:
                await self._on_thread(self._end_bounded, conn, True)
            except sqlite3.OperationalError as exc:
                raise _sqlite_error(exc, True) from exc
            finally:
                self._deadline = None

    async def close(self) -> None:
        await self._conn.close()


# -- PostgreSQL ---------------------------------------------------------------------------

_PG_DOWN = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError)
# statement_timeout, or a query cancelled by an operator: the store did not do the work in time
_PG_CANCELLED = asyncpg.QueryCanceledError


def _pg_error(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, _PG_CANCELLED):
        return StoreTimeout(f"postgresql: {type(exc).__name__} ({exc})")
    return StoreUnavailable(f"postgresql: {type(exc).__name__}")


class _PgTx(Tx):
    dialect: Dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status = await self._conn.execute(sql, *args)
        except (*_PG_DOWN, _PG_CANCELLED) as exc:
            raise _pg_error(exc) from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, list(rows))
        except (*_PG_DOWN, _PG_CANCELLED) as exc:
            raise _pg_error(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        try:
            return [dict(r) for r in await self._conn.fetch(sql, *args)]
        except (*_PG_DOWN, _PG_CANCELLED) as exc:
            raise _pg_error(exc) from exc


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.url = url
        self._pool = pool

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await self._pool.acquire(timeout=5.0)
        except _PG_DOWN as exc:
            raise StoreUnavailable(f"postgresql: {type(exc).__name__}") from exc
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._conn() as conn:
            return await _PgTx(conn).execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._conn() as conn:
            await _PgTx(conn).executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self._conn() as conn:
            return await _PgTx(conn).fetch(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, timeout: float | None = None, read_only: bool = False, claim: bool = False
    ) -> AsyncIterator[Tx]:
        async with self._conn() as conn:
            try:
                tx = conn.transaction(readonly=read_only)
                await tx.start()
            except _PG_DOWN as exc:
                raise StoreUnavailable(f"postgresql: {type(exc).__name__}") from exc
            settings: list[str] = []
            if timeout is not None:  # every statement of this transaction, lock waits included
                settings.append(
                    f"set_config('statement_timeout', '{max(1, int(timeout * 1000))}', true)"
                )
            if claim:
                settings += _PG_CLAIM_SETTINGS
            # One round trip for all of them (as SET LOCAL: for this transaction only).
            for sql in [f"SELECT {', '.join(settings)}"] if settings else []:
                try:
                    await conn.execute(sql)
                except _PG_DOWN as exc:
                    with contextlib.suppress(*_PG_DOWN):
                        await tx.rollback()
                    raise StoreUnavailable(f"postgresql: {type(exc).__name__}") from exc
            try:
                yield _PgTx(conn)
            except BaseException:
                with contextlib.suppress(*_PG_DOWN):
                    await tx.rollback()
                raise
            else:
                try:
                    await tx.commit()
                except (*_PG_DOWN, _PG_CANCELLED) as exc:
                    raise _pg_error(exc) from exc

    async def close(self) -> None:
        await self._pool.close()


async def open_database(
    url: str | None, *, base_dir: str | Path = ".", schema: str | None = None
) -> Database:
    """Open the store named by `storage:` (None: SQLite at .cutover/state.db).

    `schema` (PostgreSQL only) puts every table in that schema, created if missing; tests use it
    to stay apart.
    """
    if url is None or url.startswith("sqlite://"):
        # sqlite:///var/lib/cutover/state.db is absolute; sqlite://state.db is relative to
        # the config file's folder (base_dir).
        path = Path(url[len("sqlite://") :] if url else DEFAULT_SQLITE_PATH)
        if not path.is_absolute():
            path = Path(base_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(str(path), isolation_level=None)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
            await conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        return SqliteDatabase(f"sqlite:///{path}", conn)
    if url.startswith(("postgresql://", "postgres://")):
        settings = {"search_path": schema} if schema else None
        try:
            if schema:
                conn = await asyncpg.connect(url, timeout=5.0)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                finally:
                    await conn.close()
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=10, timeout=5.0, server_settings=settings
            )
        except _PG_DOWN as exc:
            raise StoreUnavailable(f"postgresql: {type(exc).__name__}") from exc
        return PostgresDatabase(url, pool)
    raise ValueError(f"unsupported storage URL scheme: {url.split(':', 1)[0]}")
