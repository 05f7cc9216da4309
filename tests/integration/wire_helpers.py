"""Raw bytes over a real socket, and the HTTP/1.1 answers read back, for the wire tests."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httptools


@dataclass
class Answer:
    """What came back on one connection: the responses in order, and whether it was closed."""

    data: bytes
    closed: bool  # the gateway closed (or reset) the connection before the deadline
    statuses: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # the status lines, as sent

    def __post_init__(self) -> None:
        self.statuses, self.bodies, self.lines = parse_responses(self.data)


def parse_responses(data: bytes) -> tuple[list[int], list[bytes], list[bytes]]:
    """Status codes, bodies and status lines of the HTTP/1.x responses in `data`."""
    statuses: list[int] = []
    bodies: list[bytes] = []
    lines = [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/")]
    body: list[bytes] = []

    class Collect:
        def on_body(self, chunk: bytes) -> None:
            body.append(chunk)

        def on_message_complete(self) -> None:
            statuses.append(parser.get_status_code())
            bodies.append(b"".join(body))
            body.clear()

    parser = httptools.HttpResponseParser(Collect())
    with contextlib.suppress(httptools.HttpParserError):
        parser.feed_data(data)
    return statuses, bodies, lines


async def exchange(port: int, raw: bytes, *, eof: bool = False, deadline: float = 10.0) -> Answer:
    """Send `raw` to 127.0.0.1:`port` (then half-close when `eof`) and read until the peer
    closes or `deadline` seconds pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b""
    closed = False
    try:
        writer.write(raw)
        if eof:
            writer.write_eof()
        await writer.drain()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            left = end - loop.time()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
    except ConnectionError:
        closed = True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return Answer(data, closed)
