"""The copy of the exchange a mirror takes: on the fast path for mirrored and captured routes
(no handoff to aiohttp), whole for a streamed, chunked answer, never partial when the client
goes away mid-answer, and nothing held once traffic stopped. Both listener paths."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cutover.parity.mirror import MirrorJob, RawJob
from cutover.proxy import fastpath
from cutover.proxy.server import Gateway
from tests.conftest import wait_for
from tests.integration.parity_samples import samples as sample_backends
from tests.integration.parity_samples import stream_body
from tests.integration.test_parity_mirror import Started, config_for, feature, metric, start
from tests.quiescence import assert_quiescent

pytestmark = pytest.mark.usefixtures("serving_path")


@pytest.fixture
async def gateways(serving_path: str) -> AsyncIterator[list[Gateway]]:
    started = Started()
    started.fast_path = serving_path == "fast"
    yield started
    for gw in started:
        await gw.close()


def jobs_of(gw: Gateway) -> list[MirrorJob]:
    """Every mirror job the gateway hands to its queue, from now on (in order)."""
    parity = feature(gw)
    seen: list[MirrorJob] = []
    enqueue, enqueue_raw = parity.enqueue, parity.enqueue_raw

    def spy(job: MirrorJob) -> None:
        seen.append(job)
        enqueue(job)

    def spy_raw(route: str, values: RawJob) -> None:  # the fast path's copies
        seen.append(MirrorJob.of_raw(values))
        enqueue_raw(route, values)

    parity.enqueue = spy  # type: ignore[method-assign]
    parity.enqueue_raw = spy_raw  # type: ignore[method-assign]
    return seen


def compared(gw: Gateway) -> float:
    name = "cutover_parity_comparisons_total"
    return metric(gw, name, route="default", result="same") + metric(
        gw, name, route="default", result="differ"
    )


async def test_a_mirrored_and_captured_route_stays_on_the_fast_path(
    tmp_path: Path, gateways: list[Gateway], monkeypatch: pytest.MonkeyPatch, serving_path: str
) -> None:
    handoffs: list[Any] = []
    handoff = fastpath._Conn._handoff

    def counted(self: Any, ex: Any) -> None:
        handoffs.append(ex)
        handoff(self, ex)

    monkeypatch.setattr(fastpath._Conn, "_handoff", counted)
    corpus = tmp_path / "captured.jsonl"
    async with sample_backends() as (primary, candidate):
        route = {"mirror": {"to": "go", "percent": 100}, "capture": {"file": str(corpus)}}
        gw = await start(gateways, config_for(primary, candidate, tmp_path, route))
        jobs = jobs_of(gw)
        connector = aiohttp.TCPConnector(limit=1)  # one kept-alive connection for all
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(1, 4):
                async with session.get(f"{gw.url}/alerts/{i}") as r:
                    assert r.status == 200
            async with session.put(f"{gw.url}/echo/p?x=1", data=b"payload") as r:
                assert await r.read() == b"echo:/echo/p?x=1:payload"
            if serving_path == "fast":
                assert gw._fast is not None and len(gw._fast.conns) == 1  # not handed off
        assert handoffs == []
        await wait_for(lambda: compared(gw) == 4)
        await wait_for(
            lambda: (
                metric(gw, "cutover_parity_capture_total", route="default", result="written") == 4
            )
        )
        put = jobs[-1]
        assert (put.method, put.raw_path, put.body) == ("PUT", "/echo/p?x=1", b"payload")
        assert put.headers["Host"] == put.host and put.peer == "127.0.0.1"
        assert put.response_body == b"echo:/echo/p?x=1:payload" and put.status == 200
        assert dict(put.response_headers)["Content-Type"] == "application/octet-stream"
        assert [job.raw_path for job in jobs[:3]] == ["/alerts/1", "/alerts/2", "/alerts/3"]
        # the candidate got the copies as the general path sends them
        assert all(h.get("X-Cutover-Mirror") == "1" for h in candidate.seen)
        assert candidate.seen[-1]["X-Forwarded-For"] == "127.0.0.1"
        # traffic over: the mirror holds nothing (Feature.in_flight and the gateway's counts)
        await wait_for(lambda: not any(feature(gw).in_flight().values()))
        await assert_quiescent(gw)


async def test_a_streamed_chunked_answer_is_copied_whole(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with sample_backends() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path))
        jobs = jobs_of(gw)
        expected = stream_body(5)
        async with aiohttp.ClientSession() as session:

            async def get() -> None:
                async with session.get(f"{gw.url}/stream/5") as r:
                    assert r.headers.get("Transfer-Encoding") == "chunked"
                    assert await r.read() == expected

            await get()  # a new backend connection: the task lane
            await get()  # a pooled one: the quick lane streams it
            await asyncio.gather(get(), get(), get())
        await wait_for(lambda: compared(gw) == 5)
        assert len(jobs) == 5
        for job in jobs:
            assert job.status == 200
            assert job.response_body == expected  # decoded: no chunk framing, nothing cut
            assert dict(job.response_headers)["Transfer-Encoding"] == "chunked"
        # primary and candidate answer the same bytes: the pairs compare equal
        assert metric(gw, "cutover_parity_comparisons_total", route="default", result="same") == 5
        await assert_quiescent(gw)


async def test_an_answer_over_max_body_is_skipped_not_copied(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with sample_backends() as (primary, candidate):
        data = config_for(primary, candidate, tmp_path, parity={"mirror": {"max_body": "32KiB"}})
        gw = await start(gateways, data)
        jobs = jobs_of(gw)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{gw.url}/stream/3") as r,
        ):
            assert await r.read() == stream_body(3)  # the client's answer is whole
        reason = "response_too_large"
        await wait_for(
            lambda: metric(gw, "cutover_parity_mirror_skipped_total", route="default",
                           reason=reason) == 1
        )  # fmt: skip
        assert jobs == [] and candidate.seen == []


async def test_a_client_gone_mid_answer_queues_no_partial_copy(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with sample_backends() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path))
        jobs = jobs_of(gw)
        primary.hold = asyncio.Event()  # the primary sends its first part, then waits
        host, port = gw.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /stream/4 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        async with asyncio.timeout(10):
            while b'"items"' not in got:  # the head and the first part of the body are in
                data = await reader.read(65536)
                assert data, "the gateway closed before the first part"
                got += data
        writer.transport.abort()  # the client goes away mid-answer
        await wait_for(lambda: gw.in_flight == 0)  # the gateway let the request go
        primary.hold.set()
        await wait_for(lambda: primary.streamed == 1)
        primary.hold = None
        # a whole answer after it: its copy is the first (and only) one queued
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{gw.url}/stream/2") as r,
        ):
            assert await r.read() == stream_body(2)
        await wait_for(lambda: compared(gw) == 1)
        assert [job.raw_path for job in jobs] == ["/stream/2"]
        assert jobs[0].response_body == stream_body(2)
        assert len(candidate.seen) == 1
        queued = "cutover_parity_mirror_requests_total"
        assert metric(gw, queued, route="default", result="queued") == 1
        await assert_quiescent(gw)


async def test_the_client_has_its_answer_before_the_mirror_takes_its_copy(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    """The mirror's work (the request's copy, the job, the hand-off) never runs on the primary
    request's clock: while the mirror queues the copy — held here until the client says it has
    its answer — the answer is already out. A client in a thread of its own reads it, since the
    held queueing holds the gateway's loop."""
    async with sample_backends() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path))
        parity = feature(gw)
        enqueue, enqueue_raw = parity.enqueue, parity.enqueue_raw
        answered = threading.Event()
        order: list[str] = []

        def hold() -> None:
            order.append("queueing")
            order.append("client had it" if answered.wait(10) else "client still waiting")

        def held(job: MirrorJob) -> None:
            hold()
            enqueue(job)

        def held_raw(route: str, values: RawJob) -> None:  # the fast path's copies
            hold()
            enqueue_raw(route, values)

        parity.enqueue = held  # type: ignore[method-assign]
        parity.enqueue_raw = held_raw  # type: ignore[method-assign]
        host, port = gw.url.removeprefix("http://").rsplit(":", 1)

        def client(path: str) -> bytes:
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                seen = b""
                while b"\r\n\r\n" not in seen:
                    seen += sock.recv(65536)
                head, _, body = seen.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":", 1)[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                )
                while len(body) < length:
                    body += sock.recv(65536)
                answered.set()
                return body

        for path in ("/alerts/1", "/alerts/2"):  # a new backend connection, then a pooled one
            answered.clear()
            body = await asyncio.to_thread(client, path)
            assert b"alert" in body
            await wait_for(lambda: len(order) >= 2)
            assert order == ["queueing", "client had it"]
            order.clear()
        await wait_for(lambda: compared(gw) == 2)
        await wait_for(lambda: not any(feature(gw).in_flight().values()))
        await assert_quiescent(gw)
