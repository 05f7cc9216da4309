"""Memory per worker while large bodies stream through the gateway (issue 9).

    python -m cutover.bench.memory [--size 1GiB] [--paths fast,general]

For each listener path, starts a raw origin on 127.0.0.1 and `python -m cutover serve` with one
worker in front of it, then streams `--size` bytes up (a POST with Content-Length, drained by
the origin) and `--size` bytes down (a GET the origin answers with that many bytes), one after
the other. It reports the worker's peak resident set (VmHWM from /proc) after warm-up and after
both transfers: flat means the body was streamed, never held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 256 * 1024
_SIZE = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB)?$")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_size(text: str) -> int:
    """`1GiB`, `512MiB`, `1000` (bytes)."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 512MiB)")
    return int(m.group(1)) * _UNITS[m.group(2) or "B"]


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /big/N: N bytes; POST: the body drained, its size answered; anything else: ok."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, _, rest = head.partition(b"\r\n")
            method, target, _ = line.split(b" ", 2)
            length = 0
            for field in rest.split(b"\r\n"):
                name, _, value = field.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            left = length
            while left:
                left -= len(await reader.read(min(left, CHUNK)))
            if method == b"GET" and target.startswith(b"/big/"):
                size = int(target[5:])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                block = b"m" * CHUNK
                while size:
                    part = block[: min(size, CHUNK)]
                    writer.write(part)
                    size -= len(part)
                    await writer.drain()
            else:
                body = b'{"bytes":%d}' % length
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass  # (cancelled: the bench is over; ending quietly keeps the log clean)
    finally:
        writer.close()


async def upload(port: int, size: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /up HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)
    block = b"u" * CHUNK
    left = size
    while left:
        part = block[: min(left, CHUNK)]
        writer.write(part)
        left -= len(part)
        await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    body = await reader.readexactly(length)
    writer.close()
    return head.split(b"\r\n", 1)[0] + b" " + body


async def download(port: int, size: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /big/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % size)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    got = 0
    while got < size:
        data = await reader.read(CHUNK)
        if not data:
            break
        got += len(data)
    writer.close()
    return got


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure(path: str, size: int, tmp: Path) -> dict[str, object]:
    server = await asyncio.start_server(origin, "127.0.0.1", 0)
    origin_port = server.sockets[0].getsockname()[1]
    port = free_port()
    conf = tmp / f"cutover-{path}.yaml"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nadmin: off\naccess_log: {{enabled: false}}\n"
        f"fast_path: {'true' if path == 'fast' else 'false'}\n"
        f"limits: {{max_body: {size + 1}, drain_timeout: 2s}}\n"
        f"backends:\n  origin: {{url: 'http://127.0.0.1:{origin_port}', health: off}}\n"
        "routes:\n  - {name: all, split: {origin: 100}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutover", "serve", "-c", str(conf), "--workers", "1"],
        cwd=ROOT,
        env=dict(os.environ, CUTOVER_LOG_LEVEL="WARNING"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("cutover did not start")
            await asyncio.sleep(0.1)
        await upload(port, 4 * CHUNK)  # warm-up: pools, buffers, lazy imports
        await download(port, 4 * CHUNK)
        before = status_kib(proc.pid, "VmHWM")
        started = time.monotonic()
        answer = await upload(port, size)
        got = await download(port, size)
        seconds = time.monotonic() - started
        after = status_kib(proc.pid, "VmHWM")
        if b'"bytes":%d' % size not in answer or got != size:
            raise RuntimeError(f"transfer incomplete: {answer[:80]!r}, {got} bytes down")
        return {"path": path, "before_kib": before, "after_kib": after, "seconds": seconds}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        server.close()
        await server.wait_closed()


async def main_async(size: int, paths: list[str]) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="cutover-memory-") as tmp:
        return [await measure(path, size, Path(tmp)) for path in paths]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cutover.bench.memory", description=__doc__.split("\n")[0]
    )
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="bytes each way")
    p.add_argument("--paths", default="fast,general", help="listener paths: fast, general")
    args = p.parse_args(argv)
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    if not paths or any(x not in ("fast", "general") for x in paths):
        p.error("--paths takes fast and/or general")
    results = asyncio.run(main_async(args.size, paths))
    print(f"{args.size:,} bytes up, then {args.size:,} bytes down, through one worker:")
    for r in results:
        before, after = int(r["before_kib"]), int(r["after_kib"])  # type: ignore[call-overload]
        print(
            f"  {r['path']:8s} VmHWM {before / 1024:6.1f} MiB after warm-up -> "
            f"{after / 1024:6.1f} MiB after both ({(after - before) / 1024:+.1f} MiB), "
            f"{2 * args.size / float(r['seconds']) / 2**20:,.0f} MiB/s"  # type: ignore[arg-type]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
