"""Fixed-rate (open-model) HTTP/1.1 load: requests leave on a schedule, latency counts from it.

    python -m cutover.bench.fixed_rate URL --rate 2000 --seconds 5 [--connections 32]
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
connection. The driver (`run_blocking`) is one thread with non-blocking sockets, `select` and the
httptools parser. Not an event loop: their timers step in whole milliseconds (libuv's, epoll's),
so at a few thousand requests per second a loop either sends up to a millisecond late or spins
at zero timeout and burns the core the proxy under test needs (uvloop did: a full core at
7,000/s). `select` sleeps to the microsecond, and the process asks for 1 µs of timer slack.
The generator's own CPU time is reported (``cpu_seconds``). The clock is `time.perf_counter`.
Only GET-like requests whose answer has a body or a Content-Length (not HEAD) are supported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import select
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools

from cutover.bench.stats import percentile

__all__ = ["PERCENTILES", "FixedRateResult", "Schedule", "build_request", "run", "run_blocking"]

PERCENTILES = ("50", "90", "99", "99.9")
RECONNECT_DELAY = 0.05  # seconds between attempts to reopen a lost connection
CONNECT_TIMEOUT = 5.0  # seconds to open one connection
READ_SIZE = 256 * 1024
FD_SETSIZE = 1024  # select() cannot watch a descriptor at or beyond this
MAX_CONNECTIONS = 512


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
    cpu_seconds: float = 0.0  # CPU time the generator itself used (user + system, its thread)
    # Every latency of `latency_ms` (ms, in answer order), when asked (`--latencies`): to pool
    # the percentiles of several runs.
    latencies: list[float] | None = None

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

    def result(
        self,
        now: float,
        connections: int,
        statuses: dict[str, int],
        cpu_seconds: float = 0.0,
        keep_latencies: bool = False,
    ) -> FixedRateResult:
        """The figures, the run having ended at `now` (unanswered requests count as unfinished);
        `keep_latencies`: with every latency as well."""
        pending = [r for r, _ in self._busy.values()] + list(self._waiting)
        late = [now - self.due(r) for r in pending]  # lower bounds
        every = [*self.latencies, *late]
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
            latency_ms=_percentiles_ms(every),
            service_ms=_percentiles_ms(self.service),
            lag_ms=_percentiles_ms(self.lags),
            statuses=dict(sorted(statuses.items())),
            cpu_seconds=cpu_seconds,
            latencies=[round(x * 1000, 4) for x in every] if keep_latencies else None,
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


class _Connection:
    """One non-blocking keep-alive socket: the bytes still to write and an answer parser."""

    def __init__(self, conn: int, sock: socket.socket) -> None:
        self.conn = conn
        self.sock = sock
        self.out = b""
        self.parser = httptools.HttpResponseParser(self)
        self.complete: list[tuple[int, bool]] = []  # (status, keep-alive) of answers just parsed

    def on_message_complete(self) -> None:
        self.complete.append((self.parser.get_status_code(), self.parser.should_keep_alive()))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _set_timer_slack(nanoseconds: int) -> None:
    """Ask Linux to wake this process within `nanoseconds` of a timeout (default slack: 50 µs)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, nanoseconds, 0, 0, 0)  # PR_SET_TIMERSLACK


class _Driver:
    """Drives a `Schedule` over real sockets with `select`, whose timeout has microsecond
    resolution. An event loop's timers have millisecond steps (libuv's and epoll's): a request
    due in 0.14 ms either waits a whole millisecond or the loop spins at zero timeout, which
    burns a core the server under test needs. Sleeping in `select` until the next due time
    costs nothing between requests.
    """

    def __init__(
        self,
        host: str,
        port: int,
        request: bytes,
        schedule: Schedule,
        connections: int,
        requests: Sequence[bytes] | None = None,
    ) -> None:
        if connections > MAX_CONNECTIONS:
            raise ValueError(f"at most {MAX_CONNECTIONS} connections, got {connections}")
        self.host, self.port, self.request = host, port, request
        self.requests = requests  # request i's own bytes (else `request` every time)
        self.schedule = schedule
        self.connections = connections
        self.conns: dict[int, _Connection] = {}  # conn -> open connection
        self.by_fd: dict[int, _Connection] = {}
        self.reopen_at: dict[int, float] = {}  # conn -> when to try opening it again
        self.statuses: Counter[str] = Counter()
        self.t0 = 0.0
        # one read buffer for every socket: a fresh 256 KiB bytes object per read would cost
        # an mmap and an munmap each time
        self.buffer = bytearray(READ_SIZE)
        self.view = memoryview(self.buffer)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def _open(self, conn: int) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        if sock.fileno() >= FD_SETSIZE:
            sock.close()
            raise OSError(f"file descriptor {sock.fileno()} is beyond select()'s {FD_SETSIZE}")
        proto = _Connection(conn, sock)
        self.conns[conn] = proto
        self.by_fd[sock.fileno()] = proto

    def start(self) -> None:
        for conn in range(self.connections):
            self._open(conn)
        self.t0 = time.perf_counter()
        for conn in self.conns:
            self._send(self.schedule.connection_ready(conn, 0.0))

    def loop(self, limit: float) -> None:
        """Send on schedule and read answers until every request is answered or `limit`."""
        schedule = self.schedule
        while not schedule.done:
            now = self.now()
            if now >= limit:
                return
            self._send(schedule.advance(now))
            self._reopen_due(now)
            wake = limit
            nxt = schedule.next_due()
            if nxt is not None:
                wake = min(wake, nxt)
            if self.reopen_at:
                wake = min(wake, *self.reopen_at.values())
            readers = [c.sock for c in self.conns.values()]
            writers = [c.sock for c in self.conns.values() if c.out]
            timeout = max(0.0, wake - self.now())
            readable, writable, _ = select.select(readers, writers, [], timeout)
            for sock in writable:
                proto = self.by_fd.get(sock.fileno())
                if proto is not None:
                    self._write(proto, proto.out)
            for sock in readable:
                proto = self.by_fd.get(sock.fileno())
                if proto is not None:
                    self._read(proto)

    def _send(self, pairs: list[tuple[int, int]]) -> None:
        requests = self.requests
        for conn, request in pairs:
            self._write(self.conns[conn], self.request if requests is None else requests[request])

    def _write(self, proto: _Connection, data: bytes) -> None:
        try:
            sent = proto.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(proto)
            return
        proto.out = data[sent:]

    def _read(self, proto: _Connection) -> None:
        try:
            size = proto.sock.recv_into(self.buffer)
        except BlockingIOError:
            return
        except OSError:
            size = 0
        stamp = self.now()  # the answer's last byte arrived no later than this
        if not size:
            self._lost(proto)
            return
        try:
            proto.parser.feed_data(self.view[:size])
        except httptools.HttpParserError:
            self._lost(proto)
            return
        done, proto.complete = proto.complete, []
        for status, keep_alive in done:
            if not self.schedule.busy(proto.conn):
                continue  # an answer nobody asked for
            self.statuses[str(status)] += 1
            ok = 200 <= status < 400
            pairs = self.schedule.answered(proto.conn, stamp, ok, reuse=keep_alive)
            if not keep_alive:
                self._drop(proto)
                self.reopen_at[proto.conn] = stamp
            self._send(pairs)

    def _drop(self, proto: _Connection) -> None:
        self.by_fd.pop(proto.sock.fileno(), None)
        self.conns.pop(proto.conn, None)
        proto.close()

    def _lost(self, proto: _Connection) -> None:
        if self.conns.get(proto.conn) is not proto:
            return
        now = self.now()
        self.schedule.connection_lost(proto.conn, now)
        self._drop(proto)
        self.reopen_at[proto.conn] = now

    def _reopen_due(self, now: float) -> None:
        for conn, when in list(self.reopen_at.items()):
            if when > now:
                continue
            try:
                self._open(conn)
            except OSError:
                self.reopen_at[conn] = now + RECONNECT_DELAY
                continue
            del self.reopen_at[conn]
            self._send(self.schedule.connection_ready(conn, self.now()))

    def close(self) -> None:
        for proto in list(self.conns.values()):
            proto.close()
        self.conns.clear()
        self.by_fd.clear()


def run_blocking(
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
    bodies: Sequence[bytes] | None = None,
    keep_latencies: bool = False,
) -> FixedRateResult:
    """One fixed-rate run against `url`, in the calling thread.

    `count` requests (default ``round(rate * seconds)``) at `rate` per second over `connections`
    keep-alive connections, opened before the clock starts; the run ends when every request is
    answered, or `drain` seconds after the last one fell due. `bodies`: request i sends
    ``bodies[i]`` (built before the clock starts; at least `count` of them), not `body`.
    `keep_latencies`: the result lists every latency too.
    """
    if count is None:
        if seconds is None:
            raise ValueError("give seconds or count")
        count = max(1, round(rate * seconds))
    if connections < 1:
        raise ValueError("connections must be >= 1")
    host, port, request = build_request(url, method, body, headers)
    requests = None
    if bodies is not None:
        if len(bodies) < count:
            raise ValueError(f"{count} requests need as many bodies, got {len(bodies)}")
        requests = [build_request(url, method, b, headers)[2] for b in bodies[:count]]
    schedule = Schedule(rate, count)
    driver = _Driver(host, port, request, schedule, connections, requests)
    cpu = time.thread_time()
    try:
        driver.start()
        driver.loop(schedule.due(max(count - 1, 0)) + drain)
        cpu = time.thread_time() - cpu
        statuses = dict(driver.statuses)
        return schedule.result(driver.now(), connections, statuses, cpu, keep_latencies)
    finally:
        driver.close()


async def run(url: str, **kwargs: Any) -> FixedRateResult:
    """`run_blocking` in a worker thread, so that servers on the calling loop keep serving."""
    return await asyncio.to_thread(run_blocking, url, **kwargs)


# ---------------------------------------------------------------------------------------------
# Command line


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"not a header 'Name: value': {text!r}")
    return name.strip(), value.strip()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m cutover.bench.fixed_rate", description=__doc__.split("\n")[0]
    )
    p.add_argument("url", help="http://host:port/path")
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the schedule (5)")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (32)")
    p.add_argument("--method", default="GET")
    p.add_argument("--body-file", help="request body, read from this file")
    p.add_argument("--header", type=_header, action="append", default=[], help="'Name: value'")
    p.add_argument("--drain", type=float, default=2.0, help="seconds to wait for the last answers")
    p.add_argument(
        "--latencies", action="store_true", help="list every latency in the JSON (to pool runs)"
    )
    args = p.parse_args(argv)
    if not args.rate > 0 or not args.seconds > 0 or args.connections < 1 or args.drain < 0:
        p.error("--rate, --seconds and --connections must be positive, --drain >= 0")
    if args.connections > MAX_CONNECTIONS:
        p.error(f"--connections: at most {MAX_CONNECTIONS} (select() watches them all)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run once; print the result as JSON on stdout and a one-line summary on stderr."""
    args = _parse_args(argv)
    body = b""
    if args.body_file:
        with open(args.body_file, "rb") as f:
            body = f.read()
    _set_timer_slack(1_000)
    gc.collect()
    gc.disable()  # a collection in the middle of the run would show up as server latency
    try:
        result = run_blocking(
            args.url,
            rate=args.rate,
            seconds=args.seconds,
            connections=args.connections,
            method=args.method.upper(),
            body=body,
            headers=args.header,
            drain=args.drain,
            keep_latencies=args.latencies,
        )
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
