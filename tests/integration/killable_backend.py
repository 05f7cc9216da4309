"""A small HTTP/1.1 backend run as its own process, so that a test can kill it (SIGKILL: the
kernel closes its listening socket and its connections, as when a backend crashes) and start
it again on the same port. Every request gets a short 200 after `--delay` seconds.

    python -m tests.integration.killable_backend --name a --port 0 --delay 0.005

prints the port it listens on, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import socket


class _Backend(asyncio.Protocol):
    def __init__(self, answer: bytes, delay: float) -> None:
        self.answer = answer
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while b"\r\n\r\n" in self.buffer:  # GETs: a head, no body
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            loop.call_later(self.delay, self._answer)

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.answer)


async def serve(name: str, port: int, delay: float) -> None:
    body = b'{"backend":"%s"}' % name.encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    answer %= (len(body), body)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # again on the same port
    sock.bind(("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Backend(answer, delay), sock=sock, backlog=1024)
    print(sock.getsockname()[1], flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.name, args.port, args.delay))


if __name__ == "__main__":
    main()
