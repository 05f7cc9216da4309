"""The mirror process: mirror work on its own CPU budget, off the gateway's event loop.

With `parity.mirror.process: true` (the default) each gateway worker whose routes mirror starts
one child process (`python -m cutover.parity.mirror_process`) and hands it every mirror job
over a pipe. The child sends the copies and the noise requests, compares (`exchange` in
`parity.mirror`), writes the results to the gateway's store (its own connection, one
statement per batch) and books them (`parity.book`: the routes' windows, kept in agreement
with the store as the gateway's would be) on its own event loop. What stays on the gateway's
loop per mirrored request is the copy taken while the answer streams, one pickled frame added
to the pipe's next write (a fast-path copy's headers as they came: the child decodes them; the
copies of `FLUSH_EVERY` go in one write, one wake-up of the child) and its job number in a
frame read back: the child sends what finishes within `SEND_EVERY` together, as one `Tally`
(per route, the counts to add and the window's size and rate) that the gateway books in a few
calls whatever the number of copies — see `bench.call_count` — so primary traffic does not
queue behind comparisons, store writes or their bookkeeping. The child runs at nice 10 and,
on Linux, under SCHED_IDLE: it gets only CPU time that nothing else wants, so when the
machine is short of CPU the mirror falls behind, its jobs are dropped and counted, and the
primary does not wait. Busy is not free, though (a core's idle time burnt beside the gateway
moves the primary's p99 on a small host): with `parity.mirror.cpu` the child spends at most
that share of a CPU (`parity.cpu_budget`). Its jobs wait while it is spent, so that the
gateway finds it full and drops new copies where that costs least; a job that would wait
longer than `mirror.timeout` is skipped (outcome `cpu_budget`, counted).

The pipe carries length-prefixed frames: gateway to child, pickled `("spec", MirrorSpec)`,
`("at", ts)` before each write of copies (their time, the results' `ts`: one clock reading per
write, not per copy) and `("job", number, MirrorJob.to_wire())`, or `("raw", number, RawJob)`
for a fast-path copy, whose raw header fields the child decodes (the child trusts its
parent); child to gateway, JSON `Tally.to_wire()` lists (the gateway parses nothing executable
from the child; the rows are stored by then and do not cross back). At most
`parity.mirror.queue` jobs and `MAX_HELD_BYTES` of them are with the child at once; more are
dropped and counted. A child that dies, or holds a job past its deadlines (stopped, hung),
costs the jobs it held (counted as dropped) and is started again by the gateway's task
supervisor with its backoff. EOF on its stdin (the gateway stopping, or dying) makes the child
finish the jobs it holds, send their bookings and exit; one that holds none is simply ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import uvloop

from cutover.core.bounded import STORE_TIMEOUT, bounded
from cutover.core.db import Database, StoreUnavailable, open_database
from cutover.core.judged import Judged
from cutover.core.logs import setup_logging
from cutover.parity.book import Tally, WindowBook
from cutover.parity.cpu_budget import CpuBudget
from cutover.parity.mirror import MirrorJob, Outcome, RawJob, exchange
from cutover.parity.results_store import PRUNE_EVERY, RESULTS_BATCH, insert_results, migrate, prune

if TYPE_CHECKING:
    from cutover.core.clock import Clock
    from cutover.core.config_model import Backend
    from cutover.parity.config import ParityConfig
    from cutover.proxy.upstreams import Upstream

__all__ = ["MirrorProcess", "MirrorProcessExited", "MirrorSpec", "main"]

log = logging.getLogger("cutover.parity")

NICE = 10  # the child's CPU priority below the gateway's (and SCHED_IDLE where there is one)
_HEAD = struct.Struct("!I")
MAX_FRAME = 256 * 2**20  # a frame larger than this is a broken pipe, not a message
MAX_HELD_BYTES = 64 * 2**20  # job bytes the child may hold (bodies up to max_body each)
WATCH_EVERY = 1.0  # seconds between two looks at the oldest job the child holds
RETIRE_AFTER = 1.0  # seconds past mirror.timeout before a reload's old pools are closed
BUDGET_STEP = 0.05  # seconds, the shortest wait for `mirror.cpu` (a wake-up costs CPU too)
# Seconds the child gathers finished outcomes before it sends them: one frame, one wake-up and
# booking on the gateway's loop for all of them (a frame costs the loop some 20 µs whatever it
# holds; the figures it brings are for people and the promotion gate, 50 ms is soon enough).
SEND_EVERY = 0.05
# Seconds the gateway gathers copies before it writes them to the child: one system call and
# one wake-up of the child for all of them rather than one per copy.
FLUSH_EVERY = 0.002


@dataclass(frozen=True, slots=True)
class MirrorSpec:
    """What the child needs of the gateway's config (sent at start and on every reload)."""

    backends: Mapping[str, Backend]
    settings: ParityConfig
    request_id_name: str
    store: tuple[str | None, str]  # the gateway's store: `open_database`'s URL and base dir
    routes: tuple[str, ...] = ()  # the mirrored routes (their windows)
    refresh: tuple[float, int] = (5.0, 12)  # `WindowBook.run`'s every and full_every


class MirrorProcessExited(Exception):
    """The mirror process ended without being asked to (the supervisor starts it again)."""


def frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's payload; None at a clean end of the stream."""
    try:
        head = await reader.readexactly(_HEAD.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    (size,) = _HEAD.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"mirror pipe: frame of {size} bytes")
    return await reader.readexactly(size)


# -- the gateway's end -------------------------------------------------------------------------


class MirrorProcess:
    """The gateway's end: starts the child, hands it jobs, books what comes back.

    `run` is a supervised loop (one child per run); `submit` never blocks or awaits.
    """

    capacity: Judged[int] = Judged()  # jobs the child may hold at once (`mirror.queue`)
    max_held_bytes: Judged[int] = Judged()  # bytes of jobs it may hold (bodies can be large)

    def __init__(
        self,
        spec: Callable[[], MirrorSpec],
        book: Callable[[Tally], None],
        lost: Callable[[str], None],
        capacity: int,
        clock: Clock,
        stall_after: float,
    ) -> None:
        self._spec = spec
        self._book = book
        self._lost = lost  # one call per job the child held when it died (route)
        self._capacity = capacity
        self.clock = clock
        # A job held longer than this means the child stopped (or gets no CPU at all): it is
        # killed and started again. The oldest held job is the first in `_held` (insertion
        # order is submission order).
        self.stall_after = stall_after
        self._proc: asyncio.subprocess.Process | None = None
        self._held: dict[int, tuple[str, int]] = {}  # job -> route, frame size
        # When each write's copies were gathered: (its first job, monotonic time), oldest
        # first (the watchdog's: a clock reading per write, not per copy).
        self._gathered: collections.deque[tuple[int, float]] = collections.deque()
        self.held_bytes = 0
        self._max_held_bytes = MAX_HELD_BYTES
        self._next = 0
        self._unsent: list[bytes] = []  # frames for the next write (`FLUSH_EVERY`)
        self._flush_at: asyncio.TimerHandle | None = None
        self._closing = False
        self._stalled: float | None = None  # how long the oldest job was held when killed
        self.pid: int | None = None
        # The child takes no copy now (it holds `capacity` jobs or `max_held_bytes`, or is not
        # running): a copy taken now would only be dropped. A plain attribute, judged again by
        # `_judge` wherever what it depends on changes: every sampled request reads it, and
        # at a rate the mirror cannot keep up with most find it true.
        self.full = True

    def _judge(self) -> None:
        self.full = (
            self._proc is None
            or self._closing
            or len(self._held) >= self._capacity
            or self.held_bytes >= self._max_held_bytes
        )

    @property
    def in_flight(self) -> int:
        return len(self._held)

    def submit(self, job: MirrorJob) -> bool:
        """Hand `job` to the child; False when it cannot take it now (not running, stopping,
        `capacity` jobs or `max_held_bytes` held: bodies can be large): the caller counts it
        as dropped. Its result's time is when the write it goes in was started."""
        return self.submit_raw(job.route, job.to_wire(), "job")

    def submit_raw(self, route: str, values: RawJob | tuple[Any, ...], kind: str = "raw") -> bool:
        """`submit` for a fast-path copy (`RawJob`: the child decodes its headers), and the
        one way a job reaches the pipe (`kind` "job": a `MirrorJob`'s wire values).

        A child that died meanwhile takes the copy into a pipe that is closing: it is held,
        and counted as dropped with the others it held once `run` sees the exit."""
        if self.full:  # not running, stopping, or at `capacity` or `max_held_bytes`
            return False
        number = self._next
        payload = pickle.dumps((kind, number, values), pickle.HIGHEST_PROTOCOL)
        length = len(payload)
        size = _HEAD.size + length  # the frame's
        if self.held_bytes + size > self._max_held_bytes:
            return False
        self._next += 1
        if self._flush_at is None:  # the first copy of a write: its time, once
            self._gathered.append((number, self.clock.monotonic()))
            self._unsent.append(frame(pickle.dumps(("at", self.clock.now()))))
            self._flush_at = asyncio.get_running_loop().call_later(FLUSH_EVERY, self.flush)
        self._unsent.append(_HEAD.pack(length) + payload)  # `frame`, inline
        self._held[number] = (route, size)
        self.held_bytes += size
        # `_judge`, for what a submit changes: only more held, so only ever full now
        if len(self._held) >= self._capacity or self.held_bytes >= self._max_held_bytes:
            self.full = True
        return True

    def flush(self) -> None:
        """Write the gathered frames to the child (at `FLUSH_EVERY`, or before a spec)."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        unsent, self._unsent = self._unsent, []
        proc = self._proc
        if unsent and proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.write(b"".join(unsent))
        # else the child is gone: its `run` counts the jobs it held as lost

    def reconfigure(self) -> None:
        """Send the child the current spec (after a reload)."""
        self._write(("spec", self._spec()))

    def close(self) -> None:
        """Ask the child to finish what it holds and exit (EOF on its stdin); one that holds
        nothing is ended at once (it may still be starting: no need to wait for that)."""
        self._closing = True
        self.full = True
        proc = self._proc
        if proc is None:
            return
        if not self._held and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        elif proc.stdin is not None and not proc.stdin.is_closing():
            self.flush()
            proc.stdin.close()

    def _write(self, message: tuple[Any, ...]) -> None:
        """Send `message` now, after the copies gathered before it."""
        self._unsent.append(frame(pickle.dumps(message, pickle.HIGHEST_PROTOCOL)))
        self.flush()

    async def spawn(self) -> None:
        """Start the child (jobs submitted from now on wait in the pipe while it starts)."""
        if self._proc is not None:
            return
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cutover.parity.mirror_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=MAX_FRAME,
        )
        self._proc, self.pid = proc, proc.pid
        self._judge()
        self._write(("spec", self._spec()))
        if self._closing:  # stopped while starting
            self.close()

    async def run(self) -> None:
        """Book the child's outcomes until it exits (starting one when none runs); an exit
        nobody asked for raises, and the supervisor runs this again after its backoff."""
        await self.spawn()
        proc = self._proc
        assert proc is not None
        self._stalled = None
        watchdog = asyncio.create_task(self._watch(proc))
        try:
            assert proc.stdout is not None
            while (payload := await read_frame(proc.stdout)) is not None:
                self._book(self.received(payload))
            code = await proc.wait()
            if self._stalled is not None:
                raise MirrorProcessExited(
                    f"the mirror process held a copy for {self._stalled:.0f}s (stopped, or given"
                    " no CPU at all): killed"
                )
            if not self._closing:
                raise MirrorProcessExited(f"the mirror process exited ({code})")
        finally:
            watchdog.cancel()
            self._proc = None
            self.full = True
            self.flush()  # (drops what was never sent: those jobs are held, and lost below)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            held, self._held = self._held, {}
            self.held_bytes = 0
            self._gathered.clear()
            self._judge()
            for route, _ in held.values():
                self._lost(route)

    def received(self, payload: bytes) -> Tally:
        """One frame from the child: what to book (its jobs are no longer held)."""
        tally = Tally.of_wire(orjson.loads(payload))
        held = self._held
        for number in tally.done:
            job = held.pop(number, None)
            if job is not None:
                self.held_bytes -= job[1]
        self._judge()
        return tally

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Kill a child that holds a job past `stall_after` (its outcome never came)."""
        while proc.returncode is None:
            await asyncio.sleep(WATCH_EVERY)
            oldest = next(iter(self._held), None)
            gathered = self._gathered
            if oldest is None or not gathered:  # (nothing held: no write under way either)
                gathered.clear()
                continue
            # the writes before the oldest held job's go
            while len(gathered) > 1 and gathered[1][0] <= oldest:
                gathered.popleft()
            held_for = self.clock.monotonic() - gathered[0][1]
            if held_for > self.stall_after:
                self._stalled = held_for
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                return


# -- the child ---------------------------------------------------------------------------------


class _Child:
    """The child's state: the backends' pools, the settings, the store, the jobs in flight,
    the routes' windows."""

    def __init__(self, out: asyncio.StreamWriter) -> None:
        self.out = out
        self.spec: MirrorSpec | None = None
        self.upstreams: dict[str, Upstream] = {}
        self.budget: CpuBudget | None = None  # `mirror.cpu`: jobs wait for it
        self.affording = asyncio.Lock()  # the one worker that waits for the budget
        # (job number, its time, the job, when it came: monotonic)
        self.jobs: asyncio.Queue[tuple[int, float, MirrorJob, float]] = asyncio.Queue()
        self.ready: list[tuple[int, float, Outcome | None]] = []
        self.workers: list[asyncio.Task[None]] = []
        self.retiring: set[asyncio.Task[None]] = set()
        self.db: Database | None = None
        self.stored = 0
        self.book: WindowBook | None = None
        self.changed: set[str] = set()  # routes whose window a read changed: sent next
        self.refresher: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.enough = asyncio.Event()  # enough is ready to send before `SEND_EVERY` is over
        self.sending = asyncio.Lock()  # one batch stored and sent at a time, in order
        self.writer = asyncio.create_task(self._writer())
        self.logged = -1e9

    def configure(self, spec: MirrorSpec) -> None:
        from cutover.proxy.upstreams import Upstream  # (its pools need the running loop)

        old, self.upstreams = self.upstreams, {n: Upstream(b) for n, b in spec.backends.items()}
        self.spec = spec
        share = spec.settings.mirror.cpu
        if not share:
            self.budget = None
        elif self.budget is None or self.budget.share != share:
            self.budget = CpuBudget(share)
        if self.book is None:
            self.book = WindowBook(self._database, spec.settings, spec.routes)
            self.refresher = asyncio.create_task(self._refresh())
        else:  # a reload: a resized window's rate may differ
            self.book.configure(spec.settings, spec.routes)
            self._read_into(*spec.routes)
        if old:  # jobs under way finish on the old pools
            task = asyncio.create_task(self._retire(old, spec.settings.mirror.timeout))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)
        while len(self.workers) < spec.settings.mirror.workers:
            self.workers.append(asyncio.create_task(self._worker()))

    @staticmethod
    async def _retire(old: Mapping[str, Upstream], timeout: float) -> None:
        await asyncio.sleep(timeout + RETIRE_AFTER)
        for upstream in old.values():
            await upstream.close()

    async def _worker(self) -> None:
        while True:
            number, ts, job, came = await self.jobs.get()
            try:
                spec = self.spec
                assert spec is not None
                if self.budget is not None and not await self._afford(came):
                    outcome: Outcome | None = Outcome(job.route, None, "cpu_budget")
                else:
                    outcome = await exchange(
                        job, self.upstreams, spec.settings, spec.request_id_name
                    )
            except Exception:  # one job's bug costs that job, not the process
                log.exception("parity: a mirror job failed")
                outcome = None
            self.done(number, ts, outcome)
            self.jobs.task_done()

    async def _afford(self, came: float) -> bool:
        """Wait until `mirror.cpu` allows the next job; False (it is skipped) when the job would
        then have waited in this process longer than `mirror.timeout`. Meanwhile the jobs wait
        here, the gateway finds the mirror full and drops new copies at the cheapest point,
        and no job is held long enough for the gateway to take this process for a hung one."""
        spec, budget = self.spec, self.budget
        assert spec is not None and budget is not None
        # One worker at a time waits, and not in steps shorter than `BUDGET_STEP`: each
        # wake-up is CPU charged to the budget too (four workers waking as soon as a few
        # microseconds were earned spent all of a 1 % budget waking).
        async with self.affording:
            while (wait := budget.wait(time.process_time(), time.monotonic())) > 0:
                wait = max(wait, BUDGET_STEP)
                if time.monotonic() + wait - came > spec.settings.mirror.timeout:
                    return False
                await asyncio.sleep(wait)
        return True

    def done(self, number: int, ts: float, outcome: Outcome | None) -> None:
        """A job is over (None: nothing to book, e.g. the candidate left the config)."""
        self.ready.append((number, ts, outcome))
        self.wake.set()
        # The gateway counts a job as held until its frame: a quarter of what it lets the
        # child hold goes at once, not after `SEND_EVERY` (its copies would be dropped).
        spec = self.spec
        if spec is not None and len(self.ready) * 4 >= spec.settings.mirror.queue:
            self.enough.set()

    def _read_into(self, *routes: str) -> None:
        """`routes`' windows changed (a read of the store): their figures go in the next frame."""
        self.changed.update(routes)
        self.wake.set()

    async def _refresh(self) -> None:
        """The windows read what other workers stored (`WindowBook.run`), so that all agree;
        a store that hangs or a bug costs a pass, not the process."""
        while True:
            spec, book = self.spec, self.book
            assert spec is not None and book is not None
            try:
                await book.run(self._read_into, *spec.refresh)
            except TimeoutError as exc:
                self._warn(f"parity: reading the results failed ({exc or 'timed out'})")
            except Exception:
                log.exception("parity: reading the results failed")
            await asyncio.sleep(spec.refresh[0])

    async def _writer(self) -> None:
        while True:
            await self.wake.wait()
            # The outcomes that finish meanwhile go in the same frame: the gateway reads and
            # books them at once, and the store takes them in one statement.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.enough.wait(), SEND_EVERY)
            self.wake.clear()
            self.enough.clear()
            await self._send_ready()

    async def _send_ready(self) -> None:
        """Store the finished results (one statement per batch), book them, and send the
        gateway the tally: the jobs done, the counts, the changed windows' figures. What
        finishes meanwhile waits for the next `SEND_EVERY`: a frame wakes the gateway's loop,
        and at a high rate each should carry many outcomes."""
        async with self.sending:
            ready, self.ready = self.ready, []
            while ready or self.changed:
                batch, ready = ready[:RESULTS_BATCH], ready[RESULTS_BATCH:]
                ids = await self._store([(ts, *o.row) for _, ts, o in batch if o and o.row])
                tally = self._tally(batch, ids)
                book = self.book
                changed, self.changed = self.changed, set()
                if book is not None:
                    for name in changed.union(tally.routes):
                        route = tally.route(name)
                        route.compared, route.rate = book.compared(name), book.rate(name)
                if not self.out.is_closing():
                    self.out.write(frame(orjson.dumps(tally.to_wire())))

    def _tally(
        self, batch: list[tuple[int, float, Outcome | None]], ids: list[int | None]
    ) -> Tally:
        """Book a batch of outcomes (`ids`: their rows' ids, in order) into the windows and a
        tally for the gateway."""
        tally = Tally()
        book = self.book
        stored = iter(ids)
        for number, _, outcome in batch:
            tally.done.append(number)
            if outcome is None:  # nothing to book (the candidate left the config)
                continue
            route = tally.route(outcome.route)
            if outcome.failure is not None:
                route.failures[outcome.failure] = route.failures.get(outcome.failure, 0) + 1
            if outcome.skipped is not None:
                route.skipped[outcome.skipped] = route.skipped.get(outcome.skipped, 0) + 1
            row_id = next(stored) if outcome.row is not None else None
            sample = outcome.sample
            if sample is None:
                continue
            if row_id is None:
                tally.store_errors += 1  # compared, not stored: counted, windowed without an id
            if sample.raw:
                route.differ += 1
            else:
                route.same += 1
            if book is not None:
                book.add(outcome.route, row_id, sample)
        return tally

    def _warn(self, message: str) -> None:
        """A store problem, logged at most once a minute."""
        now = time.monotonic()
        if now - self.logged >= 60.0:
            self.logged = now
            log.warning("%s", message)

    async def _database(self) -> Database:
        """The gateway's store, opened (and migrated) on first use; a hang is a TimeoutError."""
        if self.db is None:
            spec = self.spec
            assert spec is not None
            url, base_dir = spec.store
            db = await bounded(open_database(url, base_dir=base_dir), STORE_TIMEOUT)
            try:
                await bounded(migrate(db), STORE_TIMEOUT)
            except BaseException:
                await db.close()
                raise
            self.db = db
        return self.db

    async def _store(self, rows: list[tuple[Any, ...]]) -> list[int | None]:
        """Write `rows`; their ids, or None each when the store refused them (logged at most
        once a minute; the gateway counts them)."""
        if not rows:
            return []
        spec = self.spec
        assert spec is not None
        try:
            db = await self._database()
            ids: list[int | None] = list(await bounded(insert_results(db, rows), STORE_TIMEOUT))
        except (StoreUnavailable, TimeoutError) as exc:
            self._warn(f"parity: {len(rows)} result(s) not stored ({exc or 'timed out'})")
            return [None] * len(rows)
        except Exception:  # a bug: this batch is lost, logged, the next one tries again
            log.exception("parity: storing results failed")
            return [None] * len(rows)
        before, self.stored = self.stored, self.stored + len(rows)
        if before // PRUNE_EVERY != self.stored // PRUNE_EVERY:
            for route in {row[1] for row in rows}:
                with contextlib.suppress(StoreUnavailable, TimeoutError):
                    await bounded(prune(db, route, 2 * spec.settings.window), STORE_TIMEOUT)
        return ids

    async def close(self) -> None:
        await self.jobs.join()  # every job taken gets its outcome sent
        if self.refresher is not None:
            self.refresher.cancel()
        await self._send_ready()
        self.writer.cancel()
        for task in self.workers:
            task.cancel()
        for upstream in self.upstreams.values():
            await upstream.close()
        if self.db is not None:
            await self.db.close()
        with contextlib.suppress(ConnectionError):
            await self.out.drain()


async def _serve(out_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_FRAME)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0)
    )
    out = asyncio.StreamWriter(transport, protocol, None, loop)
    child = _Child(out)
    ts = time.time()  # the gateway's time of the copies that follow (each write says it)
    while (payload := await read_frame(reader)) is not None:
        kind, *rest = pickle.loads(payload)
        if kind == "at":
            (ts,) = rest
        elif kind == "job" or kind == "raw":
            number, values = rest
            if child.spec is None:  # cannot happen: the spec is the first frame
                child.done(number, ts, None)
                continue
            job = MirrorJob.of_wire(values) if kind == "job" else MirrorJob.of_raw(values)
            child.jobs.put_nowait((number, ts, job, time.monotonic()))
        elif kind == "spec":
            child.configure(rest[0])
    await child.close()


def main() -> None:
    """The child's entry point (`python -m cutover.parity.mirror_process`)."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    with contextlib.suppress(OSError, AttributeError):  # Linux: run only on CPU nobody wants
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    out_fd = os.dup(1)  # the pipe to the gateway; stray prints go to stderr instead
    os.dup2(2, 1)
    # A terminal's Ctrl-C or a group-wide SIGTERM reaches the gateway too: the child ends at
    # the EOF its gateway's exit gives, after sending the outcomes of the jobs it holds.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging("mirror process")
    uvloop.run(_serve(out_fd))


if __name__ == "__main__":
    main()
