"""A mirror job's copy and noise request on the wire (`parity.mirror.exchange` over the lean
pool): what the candidate receives, byte for byte, and what each fault of a backend comes to.

The backends are raw asyncio servers on 127.0.0.1 that record what they read and answer (or
fail) as each test says; after every exchange the pools hold no connection out.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from cutover.core.config_model import Backend
from cutover.parity.config import MirrorSettings, ParityConfig
from cutover.parity.mirror import MIRROR_HEADER, MirrorJob, decoded, exchange
from cutover.proxy.upstreams import Upstream
from tests.fuzzing import fuzz

BODY = orjson.dumps({"alerts": [{"fingerprint": "a1", "status": "firing"}], "total": 1})
Answer = Callable[[bytes], bytes | None]  # the request's bytes -> the answer (None: hang)


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


class Raw:
    """A backend that reads one request at a time (head, and the body its Content-Length
    announces) and writes what `answer` makes of it; records every request's bytes."""

    def __init__(self, answer: Answer = lambda _: ok(), close: bool = False) -> None:
        self.answer = answer
        self.close = close  # close the connection after each answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                answer = self.answer(request)
                if answer is None:
                    await asyncio.sleep(3600)  # hangs (the test's timeout ends it)
                    return
                writer.write(answer)
                await writer.drain()
                if not answer or self.close:
                    return  # (closes)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return  # (a cancelled handler ends quietly: the server is closing)
        finally:
            writer.close()


def backend(
    port: int, name: str = "go", base_path: str = "", host_header: str = "backend"
) -> Backend:
    return Backend(
        name=name,
        url=f"http://127.0.0.1:{port}{base_path}",
        scheme="http",
        host="127.0.0.1",
        port=port,
        base_path=base_path,
        host_header=host_header,
        health=None,
    )


def job(
    method: str = "GET",
    raw_path: str = "/api/v1/alerts?limit=5",
    headers: tuple[tuple[str, str], ...] = (("Host", "alerts.example"),),
    body: bytes = b"",
) -> MirrorJob:
    return MirrorJob(
        route="default", to="go", primary="python", method=method, raw_path=raw_path,
        headers=CIMultiDictProxy(CIMultiDict(headers)), body=body, peer="10.0.0.7",
        scheme="http", host=dict(headers).get("Host"), request_id="rid-1", status=200,
        response_headers=(("content-type", "application/json"),), response_body=BODY,
    )  # fmt: skip


def parity(**mirror: object) -> ParityConfig:
    return ParityConfig(mirror=replace(MirrorSettings(noise=False), **mirror))  # type: ignore[arg-type]


@pytest.fixture
async def pools() -> AsyncIterator[list[Upstream]]:
    made: list[Upstream] = []
    yield made
    for upstream in made:
        assert upstream.lean.busy == 0  # every exchange gave its connection back (or closed it)
        await upstream.close()


def upstreams(made: list[Upstream], **ports: Backend) -> dict[str, Upstream]:
    out = {name: Upstream(b) for name, b in ports.items()}
    made.extend(out.values())
    return out


def head_lines(request: bytes) -> list[bytes]:
    return request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


async def test_the_candidate_receives_the_copy_as_the_gateway_would_send_it(
    pools: list[Upstream],
) -> None:
    async with Raw() as go:
        ups = upstreams(pools, go=backend(go.port, base_path="/v2"))
        copy = job(
            "POST",
            headers=(("Host", "alerts.example"), ("X-Team", "caf\udcc3\udca9"),
                     ("Connection", "keep-alive"), ("X-Forwarded-For", "192.0.2.1")),
            body=b'{"a":1}',
        )  # fmt: skip
        outcome = await exchange(copy, ups, parity(), "X-Request-Id")
        assert outcome is not None and outcome.failure is None
        (request,) = go.requests
        lines = head_lines(request)
        assert lines[0] == b"POST /v2/api/v1/alerts?limit=5 HTTP/1.1"
        fields = [tuple(line.split(b": ", 1)) for line in lines[1:]]
        names = [n.lower() for n, _ in fields]
        assert (b"Host", f"127.0.0.1:{go.port}".encode()) in fields  # host_header: backend
        assert (b"X-Team", "café".encode()) in fields  # the client's bytes, not re-encoded
        assert (b"X-Forwarded-For", b"192.0.2.1, 10.0.0.7") in fields
        assert (b"X-Forwarded-Host", b"alerts.example") in fields
        assert (b"X-Request-Id", b"rid-1") in fields
        assert (MIRROR_HEADER.encode(), b"1") in fields
        assert (b"Content-Length", b"7") in fields
        assert b"connection" not in names and b"transfer-encoding" not in names
        assert names.count(b"host") == 1
        assert request.endswith(b'\r\n\r\n{"a":1}')


async def test_a_get_goes_without_a_length_and_the_clients_host_when_asked(
    pools: list[Upstream],
) -> None:
    async with Raw() as go:
        ups = upstreams(pools, go=backend(go.port, host_header="pass"))
        await exchange(job(), ups, parity(), "X-Request-Id")
        await exchange(job("DELETE"), ups, parity(), "X-Request-Id")
        await exchange(job("PUT"), ups, parity(), "X-Request-Id")
        await exchange(job(headers=()), ups, parity(), "X-Request-Id")  # an HTTP/1.0 client's
        get, delete, put, bare = (head_lines(r) for r in go.requests)
        assert b"Host: alerts.example" in get and not any(b"Content-Length" in x for x in get)
        assert not any(b"Content-Length" in x for x in delete)
        assert b"Content-Length: 0" in put  # a body method says it has none
        assert f"Host: 127.0.0.1:{go.port}".encode() in bare  # none given: the backend's own
        assert go.connections == 1  # one kept-alive connection for all four


async def test_the_answer_is_compared_decoded_and_the_noise_asked_of_the_primary(
    pools: list[Upstream],
) -> None:
    squeezed = gzip.compress(orjson.dumps({"alerts": [], "total": 0}))
    async with Raw(lambda _: ok(squeezed, b"Content-Encoding: gzip\r\n")) as go, Raw() as py:
        ups = upstreams(pools, go=backend(go.port), python=backend(py.port, "python"))
        outcome = await exchange(job(), ups, ParityConfig(), "X-Request-Id")
        assert outcome is not None and outcome.sample is not None
        assert dict(outcome.sample.raw) == {"$.alerts[*]": "missing", "$.total": "value"}
        assert outcome.sample.noise == frozenset()  # the primary answered alike, asked again
        assert len(py.requests) == 1 and MIRROR_HEADER.encode() in py.requests[0]


async def test_an_idle_connection_the_candidate_closed_gets_the_copy_once_more(
    pools: list[Upstream],
) -> None:
    def close_after_answer(request: bytes) -> bytes:
        return ok(extra=b"Connection: keep-alive\r\n")

    async with Raw(close_after_answer) as go:
        ups = upstreams(pools, go=backend(go.port))
        assert (await exchange(job(), ups, parity(), "X-Request-Id")).failure is None  # type: ignore[union-attr]
        for writer in go.writers:  # the candidate closes its idle keep-alive connection
            writer.close()
        await asyncio.sleep(0.05)
        outcome = await exchange(job(), ups, parity(), "X-Request-Id")
        assert outcome is not None and outcome.failure is None
        assert len(go.requests) == 2 and go.connections == 2


_CUT = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"


@pytest.mark.parametrize(
    ("answer", "close", "failure"),
    [
        (lambda _: b"", True, "error"),  # closes without a byte of an answer
        (lambda _: _CUT, True, "error"),  # closes mid-answer
        (lambda _: _CUT, False, "timeout"),  # stops mid-answer
        (lambda _: b"NOT HTTP AT ALL\r\n\r\n", False, "error"),  # garbage
        (lambda _: None, False, "timeout"),  # hangs
    ],
    ids=["closed", "cut", "stalled", "garbage", "hangs"],
)
async def test_a_failing_candidate_is_a_failure_of_its_kind_not_an_exception(
    pools: list[Upstream], answer: Answer, close: bool, failure: str
) -> None:
    async with Raw(answer, close) as go:
        ups = upstreams(pools, go=backend(go.port))
        outcome = await exchange(job(), ups, parity(timeout=0.3), "X-Request-Id")
        assert outcome is not None and outcome.failure == failure


async def test_a_candidate_nobody_listens_for_is_a_connect_failure(pools: list[Upstream]) -> None:
    async with Raw() as go:
        port = go.port
    ups = upstreams(pools, go=backend(port))
    outcome = await exchange(job(), ups, parity(), "X-Request-Id")
    assert outcome is not None and outcome.failure == "connect"


async def test_an_answer_over_max_body_is_skipped_and_its_connection_not_reused(
    pools: list[Upstream],
) -> None:
    async with Raw(lambda _: ok(b"[" + b"1," * 2**20 + b"1]")) as go:
        ups = upstreams(pools, go=backend(go.port))
        outcome = await exchange(job(), ups, parity(max_body=1024), "X-Request-Id")
        assert outcome is not None and outcome.skipped == "response_too_large"
        await exchange(job(), ups, parity(max_body=1024), "X-Request-Id")
        assert go.connections == 2  # the cut answer's connection was closed, not reused


async def test_many_copies_at_once_are_bounded_by_the_pool_and_all_answered(
    pools: list[Upstream],
) -> None:
    async with Raw() as go:
        ups = upstreams(
            pools, go=replace(backend(go.port), pool=replace(backend(0).pool, max_connections=4))
        )
        outcomes = await asyncio.gather(
            *(exchange(job(), ups, parity(), "X-Request-Id") for _ in range(200))
        )
        assert all(o is not None and o.failure is None for o in outcomes)
        assert len(go.requests) == 200 and go.connections <= 4


@given(
    path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
    value=st.binary(max_size=40).filter(
        lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b
    ),
)
@fuzz(60)
async def test_any_target_and_field_bytes_reach_the_candidate_as_received(
    path: str, value: bytes
) -> None:
    # the fast path's copy: the target ASCII, the fields raw bytes decoded as aiohttp would
    async with Raw() as go:
        ups = {"go": Upstream(backend(go.port))}
        try:
            ((name, text),) = decoded([(b"X-Raw", value.strip(b" \t"))])
            copy = job(raw_path="/" + path, headers=(("Host", "h"), (name, text)))
            outcome = await exchange(copy, ups, parity(), "X-Request-Id")
            assert outcome is not None and outcome.failure is None
            lines = head_lines(go.requests[0])
            assert lines[0] == b"GET /" + path.encode() + b" HTTP/1.1"
            assert b"X-Raw: " + value.strip(b" \t") in lines
        finally:
            await ups["go"].close()
