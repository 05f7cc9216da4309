"""Fixed-rate (open-model) HTTP/1.1 load: requests leave on a schedule, latency counts from it.

    python -m bench.fixed_rate URL --rate 2000 --seconds 5 [--connections 32]
        [--method POST --body-file FILE --header 'Content-Type: application/json']
        [--drain 2]

Request ``i`` is due at ``i / rate`` seconds after the start. It leaves on the first idle
keep-alive connection as soon as it is due; when every connection is busy it waits in a queue
until one is free. Its **latency runs from its due time** to the last byte of its response, so
the time it waited (behind a stalled server, on a busy connection, or behind the generator
itself) is counted. A closed-loop tool such as wrk measures from the moment it sends and simply
sends less while the server stalls, which hides the stall from its percentiles ("coordinated
omission"); this generator, like wrk2, does not. The latency from the actual send time is
reported too (``service_ms``), as a closed loop would see it, and so is the send lag (how late
each request left compared with its schedule).

Bounded in count and in time: ``rate x seconds`` requests, and at most the schedule's length
plus ``drain`` seconds of wall time. A request still unanswered then counts as ``unfinished``,
and its latency so far (a lower bound) is kept among the latencies, so a server that stops
answering cannot look fast. Answers other than 2xx/3xx and requests lost with their connection
count as ``errors`` and are left out of the latencies. Percentiles are exact (nearest rank, from
every sample, `bench.stats.percentile`).

The core (`Schedule`) is sans-IO: it is told the time and says which request goes out on which
connection. The driver is asyncio Protocols with the httptools parser; on uvloop by default
(`main`). The clock is `time.perf_counter` (uvloop's own clock has millisecond steps). Only
GET-like requests whose answer has a body or a Content-Length (not HEAD) are supported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httptools

from bench.stats import percentile

__all__ = ["PERCENTILES", "FixedRateResult", "Schedule", "build_request", "run"]

PERCENTILES = ("50", "90", "99", "99.9")
RECONNECT_DELAY = 0.05  # seconds between attempts to reopen a lost connection


def _percentiles_ms(seconds: Iterable[float]) -> dict[str, float]:
    """Nearest-rank percentiles (and the max) of durations in seconds, in milliseconds."""
    ms = sorted(s * 1000.0 for s in seconds)
    if not ms:
        return {}
    out = {p: percentile(ms, float(p)) for p in PERCENTILES}
    out["max"] = ms[-1]
    return out


@dataclass(frozen=True, slots=True)
class FixedRateResult:
    """What one fixed-rate run measured. Latencies in ms, keyed "50", "90", "99", "99.9", "max"."""

    rate: float  # requests per second, as scheduled
    connections: int
    scheduled: int  # requests in the schedule
    ok: int  # answered 2xx/3xx
    errors: int  # answered otherwise, or lost with their connection
    unfinished: int  # no answer by the end of the run (waiting, in flight or never sent)
    seconds: float  # from the first due time to the last answer (or the end of the run)
    latency_ms: dict[str, float]  # from the due time: ok requests and unfinished (lower bound)
    service_ms: dict[str, float]  # from the send time, ok requests: what a closed loop reports
    lag_ms: dict[str, float]  # how late each sent request left compared with its schedule
    statuses: dict[str, int] = field(default_factory=dict)  # status code -> answers

    @property
    def failed(self) -> int:
        return self.errors + self.unfinished

    @property
    def achieved_rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


class Schedule:
    """The sans-IO core: which request leaves when and on which connection; what it measured.

    Times are seconds since the start (request 0 is due at 0). Every method that can free a
    connection or make a request due returns the ``(connection, request)`` pairs to send now;
    the caller sends them and reports each answer with `answered`.
    """

    def __init__(self, rate: float, count: int) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        self.rate = rate
        self.count = count
        self._next = 0  # the next request to fall due
        self._waiting: deque[int] = deque()  # due, no idle connection yet
        self._idle: deque[int] = deque()  # idle connections, first freed first used
        self._busy: dict[int, tuple[int, float]] = {}  # connection -> (request, sent at)
        self.latencies: list[float] = []  # due -> answer, ok requests
        self.service: list[float] = []  # sent -> answer, ok requests
        self.lags: list[float] = []  # due -> sent, every sent request
        self.errors = 0
        self.last_answer = 0.0

    def due(self, request: int) -> float:
        return request / self.rate

    def next_due(self) -> float | None:
        """When the next request falls due; None when every one already has."""
        return self.due(self._next) if self._next < self.count else None

    @property
    def done(self) -> bool:
        """Every request was answered (or failed)."""
        return self._next >= self.count and not self._waiting and not self._busy

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def busy(self, conn: int) -> bool:
        return conn in self._busy

    def advance(self, now: float) -> list[tuple[int, int]]:
        """Requests due by `now` join the queue; idle connections take them."""
        while self._next < self.count and self.due(self._next) <= now:
            self._waiting.append(self._next)
            self._next += 1
        return self._assign(now)

    def connection_ready(self, conn: int, now: float) -> list[tuple[int, int]]:
        """A connection (new or reopened) is idle."""
        self._idle.append(conn)
        return self.advance(now)

    def answered(
        self, conn: int, now: float, ok: bool, reuse: bool = True
    ) -> list[tuple[int, int]]:
        """The request on `conn` got its whole answer at `now`; `reuse`: the connection stays."""
        request, sent = self._busy.pop(conn)
        if ok:
            self.latencies.append(now - self.due(request))
            self.service.append(now - sent)
        else:
            self.errors += 1
        self.last_answer = max(self.last_answer, now)
        if reuse:
            self._idle.append(conn)
        return self.advance(now)

    def connection_lost(self, conn: int, now: float) -> None:
        """`conn` is gone: its request (if any) failed; it is no longer idle."""
        if conn in self._busy:
            del self._busy[conn]
            self.errors += 1
            self.last_answer = max(self.last_answer, now)
        with_conn = [c for c in self._idle if c != conn]
        self._idle.clear()
        self._idle.extend(with_conn)

    def _assign(self, now: float) -> list[tuple[int, int]]:
        out = []
        while self._waiting and self._idle:
            request = self._waiting.popleft()
            conn = self._idle.popleft()
            self._busy[conn] = (request, now)
            self.lags.append(now - self.due(request))
            out.append((conn, request))
        return out

    def result(self, now: float, connections: int, statuses: dict[str, int]) -> FixedRateResult:
        """The figures, the run having ended at `now` (unanswered requests count as unfinished)."""
        pending = [r for r, _ in self._busy.values()] + list(self._waiting)
        late = [now - self.due(r) for r in pending]  # lower bounds
        unfinished = len(pending) + (self.count - self._next)
        end = now if unfinished else self.last_answer
        return FixedRateResult(
            rate=self.rate,
            connections=connections,
            scheduled=self.count,
            ok=len(self.latencies),
            errors=self.errors,
            unfinished=unfinished,
            seconds=end,
            latency_ms=_percentiles_ms([*self.latencies, *late]),
            service_ms=_percentiles_ms(self.service),
            lag_ms=_percentiles_ms(self.lags),
            statuses=dict(sorted(statuses.items())),
        )


def build_request(
    url: str, method: str = "GET", body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
) -> tuple[str, int, bytes]:
    """(host, port, the bytes of one HTTP/1.1 keep-alive request) for an http:// URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"an http:// URL is needed, got {url!r}")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {parts.netloc}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method not in {"GET", "DELETE", "OPTIONS"}:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return parts.hostname, port, head + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes requests, parses answers, tells the run."""

    def __init__(self, run: _Run, conn: int) -> None:
        self.run = run
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.stamp = 0.0
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.stamp = time.perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            self.run.lost(self)

    def on_message_complete(self) -> None:
        self.run.answered(self, self.parser.get_status_code(), self.parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.run.lost(self)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class _Run:
    """Drives a `Schedule` over real connections on the running loop."""

    def __init__(
        self, host: str, port: int, request: bytes, schedule: Schedule, connections: int
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port, self.request = host, port, request
        self.schedule = schedule
        self.connections = connections
        self.conns: dict[int, _Connection] = {}
        self.statuses: Counter[str] = Counter()
        self.t0 = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.ended = False
        self.tasks: set[asyncio.Task[None]] = set()

    def now(self, stamp: float | None = None) -> float:
        return (time.perf_counter() if stamp is None else stamp) - self.t0

    async def _open(self, conn: int) -> _Connection:
        _, proto = await self.loop.create_connection(
            lambda: _Connection(self, conn), self.host, self.port
        )
        return proto

    async def start(self) -> None:
        protos = await asyncio.gather(*(self._open(c) for c in range(self.connections)))
        self.conns = {p.conn: p for p in protos}
        self.t0 = time.perf_counter()
        for conn in self.conns:
            self._send(self.schedule.connection_ready(conn, 0.0))
        self._check()

    def _send(self, pairs: list[tuple[int, int]]) -> None:
        for conn, _request in pairs:
            transport = self.conns[conn].transport
            assert transport is not None
            transport.write(self.request)

    def _check(self) -> None:
        """Arm the timer for the next due time; end the run when everything is answered."""
        if self.ended:
            return
        if self.schedule.done:
            self.end()
            return
        nxt = self.schedule.next_due()
        if nxt is not None and self.timer is None:
            self.timer = self.loop.call_later(max(0.0, nxt - self.now()), self._tick)

    def _tick(self) -> None:
        self.timer = None
        self._send(self.schedule.advance(self.now()))
        self._check()

    def answered(self, proto: _Connection, status: int, keep_alive: bool) -> None:
        if self.ended or not self.schedule.busy(proto.conn):
            return
        self.statuses[str(status)] += 1
        now = self.now(proto.stamp)
        pairs = self.schedule.answered(proto.conn, now, 200 <= status < 400, reuse=keep_alive)
        if not keep_alive:
            proto.close()
            self._reopen(proto.conn)
        self._send(pairs)
        self._check()

    def lost(self, proto: _Connection) -> None:
        if self.ended or self.conns.get(proto.conn) is not proto:
            return
        self.schedule.connection_lost(proto.conn, self.now())
        self._reopen(proto.conn)
        self._check()

    def _reopen(self, conn: int) -> None:
        async def reopen() -> None:
            while not self.ended:
                try:
                    proto = await self._open(conn)
                except OSError:
                    await asyncio.sleep(RECONNECT_DELAY)
                    continue
                if self.ended:
                    proto.close()
                    return
                self.conns[conn] = proto
                self._send(self.schedule.connection_ready(conn, self.now()))
                self._check()
                return

        task = self.loop.create_task(reopen())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        if not self.finished.done():
            self.finished.set_result(None)

    async def close(self) -> None:
        for proto in self.conns.values():
            proto.close()
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def run(
    url: str,
    *,
    rate: float,
    seconds: float | None = None,
    count: int | None = None,
    connections: int = 32,
    method: str = "GET",
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    drain: float = 2.0,
) -> FixedRateResult:
    """One fixed-rate run against `url` on the running loop.

    `count` requests (default ``round(rate * seconds)``) at `rate` per second over `connections`
    keep-alive connections, opened before the clock starts; the run ends when every request is
    answered, or `drain` seconds after the last one fell due.
    """
    if count is None:
        if seconds is None:
            raise ValueError("give seconds or count")
        count = max(1, round(rate * seconds))
    if connections < 1:
        raise ValueError("connections must be >= 1")
    host, port, request = build_request(url, method, body, headers)
    schedule = Schedule(rate, count)
    driver = _Run(host, port, request, schedule, connections)
    limit = schedule.due(max(count - 1, 0)) + drain
    try:
        await driver.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(driver.finished), limit)
        driver.end()
        return schedule.result(driver.now(), connections, dict(driver.statuses))
    finally:
        driver.end()
        await driver.close()


# ---------------------------------------------------------------------------------------------
# Command line


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"not a header 'Name: value': {text!r}")
    return name.strip(), value.strip()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.fixed_rate", description=__doc__.split("\n")[0]
    )
    p.add_argument("url", help="http://host:port/path")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the schedule (5)")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (32)")
    p.add_argument("--method", default="GET")
    p.add_argument("--body-file", help="request body, read from this file")
    p.add_argument("--header", type=_header, action="append", default=[], help="'Name: value'")
    p.add_argument("--drain", type=float, default=2.0, help="seconds to wait for the last answers")
    args = p.parse_args(argv)
    if not args.rate > 0 or not args.seconds > 0 or args.connections < 1 or args.drain < 0:
        p.error("--rate, --seconds and --connections must be positive, --drain >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run once; print the result as JSON on stdout and a one-line summary on stderr."""
    args = _parse_args(argv)
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    coro = run(
        args.url,
        rate=args.rate,
        seconds=args.seconds,
        connections=args.connections,
        method=args.method.upper(),
        body=body,
        headers=args.header,
        drain=args.drain,
    )
    import uvloop

    gc.collect()
    gc.disable()  # a collection in the middle of the run would show up as server latency
    try:
        result = uvloop.run(coro)
    except OSError as exc:
        print(f"bench.fixed_rate: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 2
    finally:
        gc.enable()
    print(json.dumps(asdict(result)))
    lat = result.latency_ms
    print(
        f"bench.fixed_rate: {result.ok}/{result.scheduled} ok at {result.rate:g}/s, "
        f"{result.errors} errors, {result.unfinished} unfinished; latency from schedule "
        f"p50 {lat.get('50', math.nan):.3f} ms, p99 {lat.get('99', math.nan):.3f} ms",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
