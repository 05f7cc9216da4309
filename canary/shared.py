"""Runtime weights and rollback flags shared by every worker and replica (DESIGN.md, State).

Two implementations of one small interface:

- `RedisShared` (when `redis:` is configured): one JSON document per route under
  `<prefix>route:<name>` (prefix `cutover:` by default), changed by compare-and-set (WATCH on the
  document's version) and announced on the `<prefix>changes` pub/sub channel, so every
  subscriber applies it at once. Every document written is also copied to the durable store
  (in the background: the answer never waits for it), which is what a gateway starts from when
  Redis is unavailable.
- `StoreShared` (no Redis): the same documents as versioned rows of `cutover_runtime` in the
  durable store (`core.db`), polled every 300 ms, so the workers of one host (and replicas that
  share a PostgreSQL store) agree within a second.

Both also carry the canary analysis windows of every worker (`publish_window` / `windows`) and a
leader lease (`lease`): one worker at a time runs the controller on the merged windows.

Unavailable (at start or later): the gateway fails static on the last state it knew, keeps
serving, and reconnects in the background; `status()` says so (for /readyz and the metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from cutover.core.bounded import STORE_TIMEOUT, bounded
from cutover.core.clock import Clock, rfc3339_or_none
from cutover.core.db import Database, StoreUnavailable
from cutover.core.tasks import Supervised, TaskSupervisor
from cutover.routing.canary import Control

log = logging.getLogger("cutover.shared")

POLL_INTERVAL = 0.3  # seconds between two reads of the store (no Redis)
RESYNC_INTERVAL = 5.0  # Redis: full re-read, in case a message was missed
BACKOFF_MAX = 5.0

MIGRATION = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS cutover_runtime (route TEXT PRIMARY KEY, "
        "version INTEGER NOT NULL, data TEXT NOT NULL, updated_at REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS cutover_canary_windows (route TEXT NOT NULL, "
        "worker TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (route, worker))",
        "CREATE TABLE IF NOT EXISTS cutover_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
        "expires_at REAL NOT NULL)",
    ],
    "postgresql": [
        "CREATE TABLE IF NOT EXISTS cutover_runtime (route TEXT PRIMARY KEY, "
        "version BIGINT NOT NULL, data TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE IF NOT EXISTS cutover_canary_windows (route TEXT NOT NULL, "
        "worker TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, data TEXT NOT NULL, "
        "PRIMARY KEY (route, worker))",
        "CREATE TABLE IF NOT EXISTS cutover_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
        "expires_at DOUBLE PRECISION NOT NULL)",
    ],
}

OnChange = Callable[[Control], None]
OnReconnect = Callable[[], Awaitable[None]]


class SharedUnavailable(Exception):
    """The shared state cannot be read or written now (the last known state stays in force)."""


class Conflict(Exception):
    """The shared state kept changing under a command (it was retried several times)."""


def redact_url(url: str) -> str:
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:<redacted>@", url)


def _dump(control: Control) -> str:
    return orjson.dumps(control.to_dict()).decode()


def _load(data: str | bytes) -> Control:
    return Control.from_dict(orjson.loads(data))


class SharedState:
    """The interface (see the module docstring)."""

    kind = "none"

    def __init__(self, clock: Clock, tasks: TaskSupervisor | None = None) -> None:
        self.clock = clock
        self.supervisor = tasks or TaskSupervisor(clock=clock)
        self.connected = False
        self.last_error: str | None = None
        self.changed_at: float | None = None
        self._versions: dict[str, int] = {}
        self._on_change: OnChange | None = None
        self._on_reconnect: OnReconnect | None = None
        self._task: Supervised | None = None
        self._reconnects: list[Supervised] = []  # rollbacks written once it is back
        self._stopping = False
        self._stop_asked = asyncio.Event()  # set with `_stopping`: ends a wait between polls

    # -- status --------------------------------------------------------------------------

    def _up(self) -> bool:
        """Mark reachable; True when it was down before."""
        was_down = not self.connected
        if was_down:
            self.connected = True
            self.changed_at = self.clock.now()
            if self.last_error is not None:
                log.warning("%s shared state reachable again", self.kind)
        return was_down

    def _down(self, exc: BaseException) -> SharedUnavailable:
        reason = f"{type(exc).__name__}: {redact_url(str(exc))}"[:300]
        if self.connected or self.last_error is None:
            log.error(
                "%s shared state unavailable (%s): keeping the last known weights",
                self.kind,
                reason,
            )
            self.changed_at = self.clock.now()
        self.connected = False
        self.last_error = reason
        return SharedUnavailable(reason)

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "connected": self.connected,
            "since": rfc3339_or_none(self.changed_at),
            "last_error": self.last_error,
        }

    def _background(self, coro: Awaitable[None]) -> None:
        self._reconnects = [t for t in self._reconnects if not t.done()]
        self._reconnects.append(self.supervisor.once("shared-state-reconnect", coro))

    def _notify(self, control: Control) -> None:
        """Tell the gateway about a document newer than the last one it saw."""
        if control.version > self._versions.get(control.route, 0):
            self._versions[control.route] = control.version
            if self._on_change is not None:
                self._on_change(control)

    def seen(self, control: Control) -> None:
        """The gateway wrote `control` itself: no need to hear about it again."""
        self._versions[control.route] = max(self._versions.get(control.route, 0), control.version)

    # -- the interface -------------------------------------------------------------------

    async def start(self, on_change: OnChange, on_reconnect: OnReconnect) -> None:
        self._on_change = on_change
        self._on_reconnect = on_reconnect

    async def load_all(self) -> dict[str, Control]:
        raise NotImplementedError

    async def get(self, route: str) -> Control | None:
        raise NotImplementedError

    async def put(self, control: Control, expect: int) -> bool:
        """Write `control` if the stored version is still `expect` (0: none stored)."""
        raise NotImplementedError

    async def publish_window(
        self, route: str, worker: str, at: float, data: dict[str, Any]
    ) -> None:
        raise NotImplementedError

    async def windows(self, route: str, fresh_after: float) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease `name` for `holder`; True while `holder` has it."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop the background loop: it sees `_stopping` within a quarter second (a redis-py
        read may swallow a cancellation, so cancelling is only the last resort). Rollbacks
        being written since a reconnect get the same grace."""
        self._stopping = True
        self._stop_asked.set()
        task, self._task = self._task, None
        if task is not None:
            await task.stop(grace=2.0, timeout=1.0)
        reconnects, self._reconnects = self._reconnects, []
        for t in reconnects:
            await t.stop(grace=2.0, timeout=1.0)


# ---------------------------------------------------------------------------------------------
# The durable store (SQLite / PostgreSQL)


class StoreShared(SharedState):
    kind = "store"

    def __init__(
        self,
        open_db: Callable[[], Awaitable[Database]],
        clock: Clock,
        tasks: TaskSupervisor | None = None,
    ) -> None:
        super().__init__(clock, tasks)
        self._open_db = open_db
        self._db: Database | None = None

    async def _database(self) -> Database:
        if self._db is None:
            db = await self._open_db()
            try:
                await db.migrate("shared-state-1", MIGRATION)  # type: ignore[arg-type]
            except StoreUnavailable:
                raise
            except Exception:  # a concurrent first migration by another worker
                await db.migrate("shared-state-1", MIGRATION)  # type: ignore[arg-type]
            self._db = db
        return self._db

    async def _run(self, fn: Callable[[Database], Awaitable[Any]]) -> Any:
        return await fn(await self._database())

    async def _call(self, fn: Callable[[Database], Awaitable[Any]]) -> Any:
        """`fn(db)`, bounded: a store that does not answer is unavailable after STORE_TIMEOUT
        (an admin write answers 503 then, instead of waiting on the store's own timeouts)."""
        try:
            result = await bounded(self._run(fn), STORE_TIMEOUT)
        except (StoreUnavailable, OSError, TimeoutError) as exc:
            raise self._down(exc) from exc
        if self._up() and self._on_reconnect is not None and self._task is not None:
            self._background(self._on_reconnect())
        return result

    async def start(self, on_change: OnChange, on_reconnect: OnReconnect) -> None:
        await super().start(on_change, on_reconnect)
        self._task = self.supervisor.start("shared-state-poll", self._poll)

    async def _poll(self) -> None:
        while not self._stopping:
            with contextlib.suppress(SharedUnavailable):
                for control in (await self.load_all()).values():
                    self._notify(control)
            with contextlib.suppress(TimeoutError):  # the next poll, or a stop at once
                async with asyncio.timeout(POLL_INTERVAL):
                    await self._stop_asked.wait()

    async def load_all(self) -> dict[str, Control]:
        rows = await self._call(lambda db: db.fetch("SELECT data FROM cutover_runtime"))
        out = {}
        for row in rows:
            control = _load(row["data"])
            out[control.route] = control
        return out

    async def get(self, route: str) -> Control | None:
        data = await self._call(
            lambda db: db.fetchval("SELECT data FROM cutover_runtime WHERE route = $1", route)
        )
        return None if data is None else _load(data)

    async def put(self, control: Control, expect: int) -> bool:
        data, now = _dump(control), self.clock.now()

        async def write(db: Database) -> int:
            if expect == 0:
                return await db.execute(
                    "INSERT INTO cutover_runtime (route, version, data, updated_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (route) DO NOTHING",
                    control.route,
                    control.version,
                    data,
                    now,
                )
            return await db.execute(
                "UPDATE cutover_runtime SET version = $2, data = $3, updated_at = $4 "
                "WHERE route = $1 AND version = $5",
                control.route,
                control.version,
                data,
                now,
                expect,
            )

        done = await self._call(write) == 1
        if done:
            self.seen(control)
        return done

    async def mirror(self, control: Control) -> None:
        """Keep a copy (Redis mode): newer versions only."""
        await self._call(
            lambda db: db.execute(
                "INSERT INTO cutover_runtime (route, version, data, updated_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (route) DO UPDATE SET "
                "version = excluded.version, data = excluded.data, "
                "updated_at = excluded.updated_at WHERE cutover_runtime.version < excluded.version",
                control.route,
                control.version,
                _dump(control),
                self.clock.now(),
            )
        )

    async def publish_window(
        self, route: str, worker: str, at: float, data: dict[str, Any]
    ) -> None:
        text = orjson.dumps(data).decode()
        await self._call(
            lambda db: db.execute(
                "INSERT INTO cutover_canary_windows (route, worker, at, data) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (route, worker) DO UPDATE SET "
                "at = excluded.at, data = excluded.data",
                route,
                worker,
                at,
                text,
            )
        )

    async def windows(self, route: str, fresh_after: float) -> list[dict[str, Any]]:
        async def read(db: Database) -> list[dict[str, Any]]:
            await db.execute("DELETE FROM cutover_canary_windows WHERE at < $1", fresh_after - 60.0)
            return await db.fetch(
                "SELECT data FROM cutover_canary_windows WHERE route = $1 AND at >= $2",
                route,
                fresh_after,
            )

        return [orjson.loads(r["data"]) for r in await self._call(read)]

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        now = self.clock.now()

        async def take(db: Database) -> bool:
            async with db.transaction() as tx:
                changed = await tx.execute(
                    "UPDATE cutover_leases SET holder = $2, expires_at = $3 "
                    "WHERE name = $1 AND (holder = $2 OR expires_at < $4)",
                    name,
                    holder,
                    now + ttl,
                    now,
                )
                if changed:
                    return True
                return (
                    await tx.execute(
                        "INSERT INTO cutover_leases (name, holder, expires_at) "
                        "VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                        name,
                        holder,
                        now + ttl,
                    )
                    == 1
                )

        return await self._call(take)


# ---------------------------------------------------------------------------------------------
# Redis

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class RedisShared(SharedState):
    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str,
        clock: Clock,
        durable: StoreShared | None = None,
        tasks: TaskSupervisor | None = None,
    ) -> None:
        super().__init__(clock, tasks)
        import redis.asyncio as aioredis
        from redis import exceptions

        self._errors: tuple[type[BaseException], ...] = (
            exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self._watch_error = exceptions.WatchError
        self.url = url
        self.prefix = prefix
        self.durable = durable
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        # A pooled connection that died with the server is replaced at once (one retry).
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
            retry_on_error=[exceptions.ConnectionError, exceptions.TimeoutError],
        )
        self._channel = f"{prefix}changes"
        self._index = f"{prefix}routes"

    def _key(self, route: str) -> str:
        return f"{self.prefix}route:{route}"

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["url"] = redact_url(self.url)
        out["prefix"] = self.prefix
        return out

    async def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            result = await fn()
        except self._watch_error:
            raise
        except self._errors as exc:
            raise self._down(exc) from exc
        if self._up() and self._on_reconnect is not None and self._task is not None:
            self._background(self._on_reconnect())
        return result

    async def start(self, on_change: OnChange, on_reconnect: OnReconnect) -> None:
        await super().start(on_change, on_reconnect)
        self._task = self.supervisor.start("shared-state-redis", self._listen)

    async def _listen(self) -> None:
        backoff = 0.25
        while not self._stopping:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                was_down = self._up()
                backoff = 0.25
                await self._resync()
                if was_down and self._on_reconnect is not None:
                    await self._on_reconnect()
                loop = asyncio.get_running_loop()
                next_resync = loop.time() + RESYNC_INTERVAL
                while not self._stopping:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if msg is not None and msg.get("type") == "message":
                        data = msg["data"]
                        route = data.decode() if isinstance(data, bytes) else data
                        control = await self.get(route)
                        if control is not None:
                            self._notify(control)
                    if loop.time() >= next_resync:
                        await self._resync()
                        next_resync = loop.time() + RESYNC_INTERVAL
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            except (*self._errors, SharedUnavailable) as exc:
                if not isinstance(exc, SharedUnavailable):
                    self._down(exc)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except BaseException:  # cancelled, or a failure the supervisor restarts us after
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                raise

    async def _resync(self) -> None:
        stored = await self.load_all()
        if self.durable is not None:
            # Redis lost what it held (restarted without persistence): seed it from the copy.
            with contextlib.suppress(SharedUnavailable):
                for route, control in (await self.durable.load_all()).items():
                    if route not in stored:
                        await self._call(lambda c=control: self._seed(c))
                        stored[route] = control
        for control in stored.values():
            self._notify(control)
            if self.durable is not None:
                with contextlib.suppress(SharedUnavailable):
                    await self.durable.mirror(control)

    async def _seed(self, control: Control) -> None:
        if await self._redis.set(self._key(control.route), _dump(control), nx=True):
            await self._redis.sadd(self._index, control.route)

    async def load_all(self) -> dict[str, Control]:
        async def read() -> dict[str, Control]:
            routes = sorted(m.decode() for m in await self._redis.smembers(self._index))
            if not routes:
                return {}
            values = await self._redis.mget([self._key(r) for r in routes])
            return {r: _load(v) for r, v in zip(routes, values, strict=True) if v is not None}

        return await self._call(read)

    async def load_last_known(self) -> dict[str, Control]:
        """Redis when it answers, else the durable copy."""
        try:
            return await self.load_all()
        except SharedUnavailable:
            if self.durable is None:
                raise
            return await self.durable.load_all()

    async def get(self, route: str) -> Control | None:
        raw = await self._call(lambda: self._redis.get(self._key(route)))
        if raw is None and self.durable is not None:
            # Redis lost what it held (restarted without persistence) and no resync has run
            # yet: a command decided now would start from the config's split. The durable copy
            # is the truth; put it back first (unless another replica just did).
            with contextlib.suppress(SharedUnavailable):
                copy = await self.durable.get(route)
                if copy is not None:
                    await self._call(lambda: self._seed(copy))
                    raw = await self._call(lambda: self._redis.get(self._key(route)))
        return None if raw is None else _load(raw)

    async def put(self, control: Control, expect: int) -> bool:
        key = self._key(control.route)

        async def write() -> bool:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                raw = await pipe.get(key)
                current = 0 if raw is None else _load(raw).version
                if current != expect:
                    await pipe.unwatch()
                    return False
                pipe.multi()
                pipe.set(key, _dump(control))
                pipe.sadd(self._index, control.route)
                pipe.publish(self._channel, control.route)
                await pipe.execute()
                return True

        try:
            done = await self._call(write)
        except self._watch_error:
            return False
        if done:
            self.seen(control)
            if self.durable is not None:  # a copy: the answer does not wait for the store
                self._background(self._mirror(control))
        return done

    async def _mirror(self, control: Control) -> None:
        """Copy to the durable store; a copy that fails is made again by the next resync."""
        assert self.durable is not None
        with contextlib.suppress(SharedUnavailable):
            await self.durable.mirror(control)

    async def publish_window(
        self, route: str, worker: str, at: float, data: dict[str, Any]
    ) -> None:
        key = f"{self.prefix}canary:window:{route}"
        text = orjson.dumps({"at": at, "data": data})

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, worker, text)
                pipe.pexpire(key, 60_000)
                await pipe.execute()

        await self._call(write)

    async def windows(self, route: str, fresh_after: float) -> list[dict[str, Any]]:
        key = f"{self.prefix}canary:window:{route}"
        raw = await self._call(lambda: self._redis.hgetall(key))
        out, stale = [], []
        for worker, value in raw.items():
            item = orjson.loads(value)
            if item["at"] >= fresh_after:
                out.append(item["data"])
            elif item["at"] < fresh_after - 60.0:
                stale.append(worker)
        if stale:
            with contextlib.suppress(SharedUnavailable):
                await self._call(lambda: self._redis.hdel(key, *stale))
        return out

    async def lease(self, name: str, holder: str, ttl: float) -> bool:
        key = f"{self.prefix}lease:{name}"
        ms = max(1, int(ttl * 1000))

        async def take() -> bool:
            if await self._redis.set(key, holder, nx=True, px=ms):
                return True
            return bool(await self._redis.eval(_RENEW, 1, key, holder, ms))

        return await self._call(take)

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(Exception):
            await self._redis.aclose()
