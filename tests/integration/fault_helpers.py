"""Backends that fail on purpose, on 127.0.0.1, for the fault and client-abort tests.

`FaultBackend` is a raw HTTP/1.1 server whose answers wait for `release` (an asyncio.Event the
test sets); it notices when the gateway cuts an exchange it was holding. `Blackhole` accepts no
connection at all (connects hang); `refused_url()` names a port nobody listens on.
`KillableBackend` runs in a process of its own, to be killed and started again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import socket
import subprocess
import sys
from collections.abc import Awaitable

from tests.conftest import ROOT, free_port, wait_for

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STREAM_SIZE = 1 << 20  # the /stream answer's announced length
STREAM_FIRST = 64 * 1024  # sent at once; the rest once released


def refused_url() -> str:
    """A backend URL whose connections are refused (nothing listens on the port)."""
    return f"http://127.0.0.1:{free_port()}"


class Blackhole:
    """A port whose connects hang: it listens with a backlog of 0 that one connection of its
    own fills, and never accepts, so the kernel drops every later SYN."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.filler.close()
        self.sock.close()


class FaultBackend:
    """A raw HTTP/1.1 backend. What it does depends on the first segment of the path:

    - `/hang…`: the answer (200, small JSON) waits for `release`;
    - `/stream…`: a head announcing `STREAM_SIZE` bytes and the first `STREAM_FIRST` of them at
      once, the rest once released;
    - `/upload…`: reads the whole request body (as slowly as it arrives), then answers;
    - `/ws…`: a WebSocket handshake (101) once released, then echoes nothing;
    - anything else: answered at once (unless `hold_all`: then as `/hang…`).

    While it holds an exchange it watches its connection: when the gateway closes it first,
    `cut` counts it. The first `fail_first` requests are answered 503 at once, whatever the path.
    Connections are kept alive between requests.
    """

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests: list[str] = []  # paths, as they arrived
        self.open = 0  # connections open now
        self.cut = 0  # exchanges the gateway cut while this backend held them
        self.body_bytes = 0  # request body bytes read so far (all requests)
        self.fail_first = 0
        self.hold_all = False  # every path waits for `release`, as `/hang…` does

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FaultBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()
            self.server = None

    async def arrived(self, count: int, deadline: float = 10.0) -> None:
        """Until `count` requests arrived."""
        await wait_for(lambda: len(self.requests) >= count, deadline)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is over."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        self.requests.append(path)
        length = int(fields.get("content-length", "0"))
        if path.startswith("/upload"):
            while length:
                data = await reader.read(min(length, 65536))
                if not data:
                    self.cut += 1
                    return False
                self.body_bytes += len(data)
                length -= len(data)
        elif length:
            self.body_bytes += len(await reader.readexactly(length))
        if len(self.requests) <= self.fail_first:
            writer.write(_answer(503, b'{"error":"busy"}'))
            await writer.drain()
            return True
        if path.startswith("/hang") or self.hold_all:
            if not await self._held(reader):
                return False
            writer.write(_answer(200, b'{"answer":"late"}'))
        elif path.startswith("/stream"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % STREAM_SIZE + b"s" * STREAM_FIRST
            )
            await writer.drain()
            if not await self._held(reader):
                return False
            writer.write(b"s" * (STREAM_SIZE - STREAM_FIRST))
        elif path.startswith("/ws"):
            if not await self._held(reader):
                return False
            accept = base64.b64encode(
                hashlib.sha1(fields.get("sec-websocket-key", "").encode() + _WS_GUID).digest()
            )
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            await writer.drain()
            await reader.read()  # until the gateway closes the session
            return False
        else:
            writer.write(_answer(200, b'{"answer":"now"}'))
        await writer.drain()
        return True

    async def _held(self, reader: asyncio.StreamReader) -> bool:
        """Hold the exchange until `release`; False (and counted) if the gateway cut it first."""
        if self.release.is_set():
            return True
        released = asyncio.ensure_future(self.release.wait())
        closed = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait((released, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (released, closed):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task
        if released.done() and not released.cancelled():
            return True
        self.cut += 1
        return False


def _answer(status: int, body: bytes) -> bytes:
    reason = {200: b"OK", 503: b"Service Unavailable"}[status]
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


async def cancel(task: Awaitable[object]) -> None:
    """Cancel a client task and wait until it has unwound (its connection closed)."""
    assert isinstance(task, asyncio.Task)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class KillableBackend:
    """`tests.integration.killable_backend` in a process of its own: `kill()` is a SIGKILL,
    `start()` (again) listens on the same port."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> KillableBackend:
        args = ["--name", self.name, "--port", str(self.port), "--delay", str(self.delay)]
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.killable_backend", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip(), f"{self.name} did not start (exit {proc.poll()})"
        self.port = int(line)
        return self

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
