"""The gateway's CPU per mirror copy, in-process, without network noise.

    python -m cutover.bench.mirror_copy_cost [--copies 200] [--repeats 40]

A real gateway (the parity feature alone; one mirrored route at 100 %, shedding off) whose
parity feature hands its copies to a real `MirrorProcess` over a real pipe; the child at the
other end only reads and discards them (its pipe is enlarged to 1 MiB so that every copy's
write is a write into the pipe, not into the transport's buffer). Timed, best of `--repeats`
batches of `--copies`, in µs per copy:

- `copy`: what the fast path does per mirrored request — `sample` (the sampling), one `feed`
  (the ~1.5 KiB JSON answer of `bench.mirror_cost`), `finish_raw` (the copy, the job, its
  frame, the counters) — and the batch's one write to the pipe (the copies of `FLUSH_EVERY`
  share a write);
- `copy, write each`: the same with a write per copy (`MirrorProcess.flush` after each);
- `copy, k/loop`: the same with the event loop run once every k copies (as under load, where
  the loop runs between requests);
- `sample` and `feed+finish_raw` on their own;
- `sample, mirror full`: the sampling of a request whose mirror holds `mirror.queue` jobs
  already (no tap: the copy is counted as dropped at once), what most requests cost the
  mirror at a rate the mirror process cannot keep up with;
- `book/1`, `book/8`, `book/40`: taking one frame of the child's apart (1, 8 or 40 outcomes
  per frame: 40 is what 800 copies/s gather in `SEND_EVERY`) and booking its tally
  (`ParityFeature._book_process`: the counts, the window's figures; the child windowed them);
- `read+book/1`, `/10`, `/25`: the gateway thread's CPU time per outcome while
  `MirrorProcess.run` reads 2,000 outcomes from a child that sends them 1, 10 or 25 to a frame,
  0.5 ms apart (every frame a wake-up of the loop), and books them.

Between batches the loop runs until the child has read every byte written. The figures are
for comparing two versions of the code on one machine, not absolute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

from cutover.bench.mirror_cost import alert_json
from cutover.parity.book import RouteTally, Tally
from cutover.parity.mirror_process import MirrorProcess, frame
from cutover.parity.shadow import ParityFeature
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway

__all__ = ["main"]

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
SINK = "import os\nwhile os.read(0, 1 << 20):\n    pass\n"

# A browser-like request head and nginx's answer head, as the fast path holds them.
REQUEST_HEADERS = [
    (b"Host", b"127.0.0.1:8080"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    (b"Accept", b"application/json"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Accept-Language", b"en-GB,en;q=0.5"),
    (b"X-Request-ID", b"0f8e4c1a-6b2d-4f0e-9a51-3c7d2e8b9f10"),
    (b"Connection", b"keep-alive"),
]
RESPONSE_HEADERS = [
    (b"Server", b"nginx/1.26.2"),
    (b"Date", b"Sat, 05 Dec 2026 08:30:00 GMT"),
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"1536"),
    (b"Last-Modified", b"Sat, 05 Dec 2026 08:00:00 GMT"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b'"6751a0c0-600"'),
    (b"Accept-Ranges", b"bytes"),
]


class SinkProcess(MirrorProcess):
    """The real gateway end; its child reads the pipe and throws every frame away."""

    async def spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SINK, stdin=asyncio.subprocess.PIPE
        )
        assert proc.stdin is not None
        # asyncio's transport gives the pipe, uvloop's a socket-like object on its descriptor
        pipe = proc.stdin.get_extra_info("pipe") or proc.stdin.get_extra_info("socket")
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
        self._proc, self.pid = proc, proc.pid
        self._judge()

    def forget(self) -> None:
        """No outcome ever comes back: let go of what the sink was handed."""
        self._held.clear()
        self._gathered.clear()
        self.held_bytes = 0
        self._judge()

    async def drained(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        transport = proc.stdin.transport
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.005)  # the sink reads what is in the pipe

    async def stop(self) -> None:
        proc = self._proc
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()


class SourceProcess(MirrorProcess):
    """The real gateway end, reading from a child that sends `frames` frames of `per_frame`
    outcomes each, `gap` seconds apart (each frame its own wake-up of the loop), then exits."""

    def __init__(self, *args: Any, frames: int, per_frame: int, gap: float) -> None:
        super().__init__(*args)
        self.shape = (frames, per_frame, gap)

    async def spawn(self) -> None:
        if self._proc is not None:
            return
        frames, per_frame, gap = self.shape
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cutover.bench.mirror_copy_cost", "--source",
            f"{frames},{per_frame},{gap}", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._proc, self.pid = proc, proc.pid
        now = self.clock.monotonic()
        for n in range(frames * per_frame):
            self._held[n] = ("default", 2000)
        self._gathered.append((0, now))
        self.held_bytes = 2000 * frames * per_frame
        self.close()  # the child ends when it has sent them all: not an exit to complain of


def source(shape: str) -> None:
    """The `SourceProcess`'s child: its frames to stdout, `gap` apart."""
    frames, per_frame, gap = shape.split(",")
    out = sys.stdout.buffer
    time.sleep(0.2)  # the gateway is reading
    for i in range(int(frames)):
        out.write(frame(outcome_frame(i * int(per_frame), int(per_frame))))
        out.flush()
        time.sleep(float(gap))


def config(tmp: Path) -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:0",
        "admin": "off",
        "access_log": False,
        "storage": f"sqlite://{tmp}/state.db",
        "backends": {
            "primary": {"url": "http://127.0.0.1:9", "health": "off"},
            "candidate": {"url": "http://127.0.0.1:9", "health": "off"},
        },
        "routes": [
            {
                "name": "default",
                "split": {"primary": 100},
                "mirror": {"to": "candidate", "percent": 100},
            }
        ],
        "parity": {"mirror": {"shed_lag": "off", "shed_wait": "off", "queue": 100_000}},
    }


async def best(
    batch: Callable[[], Any], after: Callable[[], Any], repeats: int, count: int
) -> float:
    """The fastest of `repeats` runs of `batch` (awaited if it returns an awaitable), µs per
    item of its `count`; `after` (awaited) runs between batches, untimed."""
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = batch()
        if asyncio.iscoroutine(result):
            await result
        times.append(time.perf_counter() - start)
        done = after()
        if asyncio.iscoroutine(done):
            await done
    return min(times) / count * 1e6


def outcome_frame(first: int, count: int) -> bytes:
    """A frame as the child sends it: `count` compared jobs done (stored, windowed), and the
    route's counts and window figures."""
    route = RouteTally(0, count, compared=1000, rate=0.5)
    return orjson.dumps(Tally(list(range(first, first + count)), {"default": route}).to_wire())


async def measure(
    copies: int, repeats: int, read: int = 2000, read_runs: int = 3
) -> dict[str, float]:
    """The figures (µs per copy or per result); `read`: results each `read+book` run reads,
    `read_runs`: its runs per figure (the least counts)."""
    with tempfile.TemporaryDirectory(prefix="cutover-bench-copy-") as tmp:
        gw = Gateway(parse_config(config(Path(tmp)), "bench.yaml"), None, (ParityFeature,))
        await gw.start()
        sink: SinkProcess | None = None
        try:
            (parity,) = [f for f in gw.features if isinstance(f, ParityFeature)]
            await parity._stop_mirror()  # the real child goes; the sink takes its place
            sink = SinkProcess(
                parity._spec, parity._book_process, parity._lost, 1 << 30, gw.clock, 1e9
            )
            sink.max_held_bytes = 1 << 40
            await sink.spawn()
            parity.process, parity._mode = sink, "process"
            route = gw.config.routes[0]
            body = alert_json(False)
            sample_one = parity.sample
            head = ("GET", b"/alerts/1.json", REQUEST_HEADERS, "127.0.0.1", "http")
            sample = (route, "primary", "GET", b"", "rid-1", head)

            def copy_one() -> None:
                tap = sample_one(*sample)
                assert tap is not None
                tap.feed(body)
                tap.finish_raw(200, RESPONSE_HEADERS)

            def copy_batch() -> None:
                for _ in range(copies):
                    copy_one()
                sink.flush()

            def write_each_batch() -> None:
                for _ in range(copies):
                    copy_one()
                    sink.flush()

            def tap_batch() -> None:
                for _ in range(copies):
                    sample_one(*sample)

            taps: list[Any] = []

            def make_taps() -> None:
                taps[:] = [sample_one(*sample) for _ in range(copies)]

            def finish_batch() -> None:
                for tap in taps:
                    tap.feed(body)
                    tap.finish_raw(200, RESPONSE_HEADERS)
                sink.flush()

            async def settle() -> None:
                sink.flush()  # (what `tap_batch` left: no copy)
                await sink.drained()
                sink.forget()
                make_taps()

            def per_iteration(k: int) -> Callable[[], Any]:
                async def batch() -> None:
                    for i in range(copies):
                        copy_one()
                        if i % k == k - 1:
                            await asyncio.sleep(0)  # the loop runs once per k copies
                    sink.flush()

                return batch

            figures: dict[str, float] = {}
            await settle()
            figures["copy"] = await best(copy_batch, settle, repeats, copies)
            figures["copy, write each"] = await best(write_each_batch, settle, repeats, copies)
            for k in (1, 4):
                figures[f"copy, {k}/loop"] = await best(per_iteration(k), settle, repeats, copies)
            figures["sample"] = await best(tap_batch, settle, repeats, copies)
            capacity, sink.capacity = sink.capacity, 0
            figures["sample, mirror full"] = await best(tap_batch, settle, repeats, copies)
            sink.capacity = capacity
            await settle()  # (taps made while it was full are None)
            figures["feed+finish_raw"] = await best(finish_batch, settle, repeats, copies)

            for per_frame in (1, 8, 40):
                frames = [outcome_frame(i * per_frame, per_frame) for i in range(copies)]

                def hold(frames: list[bytes] = frames, per_frame: int = per_frame) -> None:
                    sink._gathered.append((0, gw.clock.monotonic()))
                    for n in range(copies * per_frame):
                        sink._held[n] = ("default", 2000)
                    sink.held_bytes = 2000 * copies * per_frame

                def book(frames: list[bytes] = frames) -> None:
                    for payload in frames:
                        parity._book_process(sink.received(payload))

                hold()
                per_outcome = await best(book, hold, repeats, copies * per_frame)
                figures[f"book/{per_frame}"] = per_outcome
            for per_frame in (1, 10, 25):
                spent = []
                for _ in range(read_runs):
                    shape = {"frames": read // per_frame, "per_frame": per_frame, "gap": 0.0005}
                    book = parity._book_process
                    reader = SourceProcess(parity._spec, book, parity._lost, 1 << 30, gw.clock,
                                           1e9, **shape)  # fmt: skip
                    parity.process = reader
                    await reader.spawn()  # (run finds it started)
                    before = time.thread_time()
                    await reader.run()
                    spent.append(
                        (time.thread_time() - before) / (read // per_frame * per_frame) * 1e6
                    )
                parity.process = sink
                figures[f"read+book/{per_frame}"] = min(spent)
            return figures
        finally:
            if sink is not None:
                parity.process, parity._mode = None, None
                await sink.stop()
            await gw.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=200, help="copies per timed batch")
    parser.add_argument("--repeats", type=int, default=40, help="batches (the best counts)")
    parser.add_argument("--source", help=argparse.SUPPRESS)  # SourceProcess's child
    args = parser.parse_args(argv)
    if args.source:
        source(args.source)
        return
    figures = uvloop.run(measure(args.copies, args.repeats))
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:7.2f} µs")


if __name__ == "__main__":
    main()
