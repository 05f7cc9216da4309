"""`cutover parity run`: replay a corpus to the primary, the candidate and a noise source.

Every request goes, concurrently, to the primary, the candidate and — to learn the primary's own
noise — the secondary (`--secondary`) or the primary a second time. The candidate is compared
with the primary, the secondary with the primary (`parity.diff`), and Diffy's rule
(`parity.noise`) keeps only differences the noise does not explain. Exit status: 0 when every
endpoint's diff rate is at most `--max-diff-rate`, 1 when one is over it, 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import aiohttp
from aiohttp.typedefs import LooseHeaders
from yarl import URL

from cutover.parity.config import ParityConfig, load_parity_file
from cutover.parity.corpus import CorpusError, CorpusRequest, load_corpus
from cutover.parity.diff import Reply, compare, endpoint_of, make_reply
from cutover.parity.noise import EndpointStats
from cutover.parity.results import Exchange, ParityRun

__all__ = ["fetch", "main", "read_bounded", "replay"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
IDEMPOTENT_METHODS = SAFE_METHODS | {"PUT", "DELETE"}
_NOT_SENT = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade",
     "proxy-connection", "trailer", "expect", "accept-encoding"}
)  # fmt: skip


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of a body, and whether that was all of it."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.readany()
        if not chunk:
            return b"".join(parts), True
        size += len(chunk)
        if size > limit:
            parts.append(chunk[: len(chunk) - (size - limit)])
            return b"".join(parts), False
        parts.append(chunk)


async def fetch(
    session: aiohttp.ClientSession,
    base: str,
    request: CorpusRequest,
    timeout: float,
    max_body: int,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> Reply:
    """Send one request; a failure becomes a `Reply` with status 0 and the failure's kind."""
    headers = [(n, v) for n, v in request.headers if n.lower() not in _NOT_SENT]
    headers.append(("Accept-Encoding", "gzip, deflate"))
    headers.extend(extra_headers)
    url = URL(base.rstrip("/") + request.path, encoded=True)
    return await send(session, request.method, url, headers, request.body, timeout, max_body)


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    headers: LooseHeaders,
    body: bytes | None,
    timeout: float,
    max_body: int,
    server_hostname: str | None = None,
) -> Reply:
    """One request as the parity tools send it (no redirects followed, the body read up to
    `max_body`); a failure becomes a `Reply` with status 0 and the failure's kind: `timeout`,
    `connect`, or the error's type."""
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                server_hostname=server_hostname,
            ) as resp:
                body, whole = await read_bounded(resp.content, max_body)
                error = None if whole else "body_too_large"
                return make_reply(resp.status, resp.headers.items(), body, error, max_body)
    except TimeoutError:
        return Reply(0, error="timeout")
    except aiohttp.ClientConnectorError:
        return Reply(0, error="connect")
    except (aiohttp.ClientError, OSError) as exc:
        return Reply(0, error=type(exc).__name__)


def new_session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(1, concurrency), limit_per_host=0),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    )


class Progress:
    """A progress bar on a terminal; a line every 10% elsewhere."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self._shown = -1

    def step(self) -> None:
        self.done += 1
        stream = self.stream
        if stream is None or not self.total:
            return
        if self.tty:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "-" * (width - filled)
            stream.write(f"\rparity [{bar}] {self.done}/{self.total}")
            if self.done == self.total:
                stream.write("\n")
            stream.flush()
            return
        tenth = 10 * self.done // self.total
        if tenth != self._shown:
            self._shown = tenth
            stream.write(f"parity: {self.done}/{self.total} requests\n")
            stream.flush()


async def replay(
    corpus: Sequence[CorpusRequest],
    *,
    primary: str,
    candidate: str,
    secondary: str | None = None,
    config: ParityConfig | None = None,
    concurrency: int = 8,
    timeout: float = 10.0,
    allow_unsafe: bool = False,
    progress: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> ParityRun:
    """Replay `corpus` and compare; see the module docstring."""
    config = config or ParityConfig()
    run = ParityRun(
        primary=primary,
        candidate=candidate,
        noise_source=secondary or f"{primary} (asked twice)",
        config=config,
        started=clock(),
    )
    todo: list[CorpusRequest] = []
    for req in corpus:
        if req.method not in IDEMPOTENT_METHODS and not allow_unsafe:
            run.skipped["unsafe_method"] = run.skipped.get("unsafe_method", 0) + 1
        else:
            todo.append(req)
    bar = Progress(len(todo), progress)
    limit = asyncio.Semaphore(max(1, concurrency))
    max_body = config.mirror.max_body * 16  # offline: generous, but still bounded
    rules = config.rules
    sessions = [new_session(concurrency) for _ in range(3)]
    try:

        async def one(req: CorpusRequest) -> None:
            async with limit:
                p, c, n = await asyncio.gather(
                    fetch(sessions[0], primary, req, timeout, max_body),
                    fetch(sessions[1], candidate, req, timeout, max_body),
                    fetch(sessions[2], secondary or primary, req, timeout, max_body),
                )
            exchange = Exchange(
                request=req,
                endpoint=endpoint_of(req.method, req.path, config.endpoints),
                primary=p,
                candidate=c,
                noise=n,
                differences=tuple(compare(p, c, rules)),
                noise_differences=tuple(compare(p, n, rules)),
            )
            run.add(exchange)
            bar.step()

        await asyncio.gather(*(one(r) for r in todo))
    finally:
        for s in sessions:
            await s.close()
    run.requests = len(todo)
    run.finished = clock()
    return run


def over_limit(stats: Sequence[EndpointStats], max_diff_rate: float) -> list[EndpointStats]:
    return [e for e in stats if e.diff_rate > max_diff_rate]


def summary_lines(stats: Sequence[EndpointStats], max_diff_rate: float) -> list[str]:
    lines = []
    for e in stats:
        mark = "FAIL" if e.diff_rate > max_diff_rate else "ok"
        fields = ", ".join(f.field for f in e.reported[:5])
        more = f" (+{len(e.reported) - 5})" if len(e.reported) > 5 else ""
        tail = f" — {fields}{more}" if fields else ""
        lines.append(
            f"{mark:4} {e.endpoint}: {e.differing}/{e.requests} differ "
            f"({100 * e.diff_rate:.1f}%){tail}"
        )
    return lines


def _rate(text: str) -> float:
    value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("expected a rate from 0 to 1 (or 0% to 100%)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--primary", required=True, help="base URL of the known-good side")
    parser.add_argument("--candidate", required=True, help="base URL of the side under test")
    parser.add_argument(
        "--secondary", help="a second copy of the primary, for noise (default: ask it twice)"
    )
    parser.add_argument("--corpus", required=True, help="JSONL corpus, capture file or HAR")
    parser.add_argument("--report", default="parity-report", help="report folder")
    parser.add_argument(
        "--max-diff-rate",
        type=_rate,
        default=0.0,
        help="exit 1 when an endpoint's diff rate is over this (0-1 or %%; default 0)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--config", help="YAML with a parity: section (ignore rules, ...)")
    parser.add_argument(
        "--allow-unsafe",
        action="store_true",
        help="replay POST/PATCH too (they reach the primary twice without --secondary)",
    )


def _url_ok(url: str) -> bool:
    try:
        u = URL(url)
    except ValueError:
        return False
    return u.scheme in ("http", "https") and bool(u.host)


def run_command(args: argparse.Namespace) -> int:
    """`cutover parity run` with parsed arguments; the exit status."""
    from cutover.core.configkit import ConfigErrors, format_errors
    from cutover.parity.report import build_report, write_report

    for name in ("primary", "candidate", "secondary"):
        value = getattr(args, name)
        if value is not None and not _url_ok(value):
            print(f"cutover parity: --{name}: expected an http(s):// URL", file=sys.stderr)
            return 2
    if args.concurrency < 1:
        print("cutover parity: --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_parity_file(args.config) if args.config else ParityConfig()
        corpus = load_corpus(args.corpus)
    except ConfigErrors as errs:
        print(format_errors(errs), file=sys.stderr)
        return 2
    except CorpusError as exc:
        print(f"cutover parity: {exc}", file=sys.stderr)
        return 2
    if not corpus:
        print(f"cutover parity: {args.corpus}: no requests in the corpus", file=sys.stderr)
        return 2
    run = asyncio.run(
        replay(
            corpus,
            primary=args.primary,
            candidate=args.candidate,
            secondary=args.secondary,
            config=config,
            concurrency=args.concurrency,
            timeout=args.timeout,
            allow_unsafe=args.allow_unsafe,
            progress=sys.stderr,
        )
    )
    stats = run.stats()
    report = build_report(run, stats, args.max_diff_rate)
    json_path, html_path = write_report(args.report, report)
    for line in summary_lines(stats, args.max_diff_rate):
        print(line)
    if run.skipped:
        print("skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(run.skipped.items())))
    print(f"report: {os.path.abspath(html_path)} ({os.path.basename(json_path)} beside it)")
    return 0 if report["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cutover parity run")
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
