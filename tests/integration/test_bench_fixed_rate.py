"""bench/fixed_rate.py against small real aiohttp servers on 127.0.0.1.

Only lower bounds on latencies: a slow machine can make any figure larger, never smaller than
what the server imposed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from cutover.bench import fixed_rate
from tests.conftest import ROOT

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_every_request_counts_and_latency_includes_the_servers_delay(serve) -> None:  # type: ignore[no-untyped-def]
    hits = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await asyncio.sleep(0.05)
        return web.json_response({"ok": True})

    url = await serve(slow)
    result = await asyncio.wait_for(
        fixed_rate.run(url + "/x", rate=200, count=200, connections=32, drain=30), 120
    )
    assert (result.scheduled, result.ok, result.errors, result.unfinished) == (200, 200, 0, 0)
    assert hits == 200
    assert result.statuses == {"200": 200}
    assert result.latency_ms["50"] >= 50.0
    assert result.service_ms["50"] >= 50.0
    assert result.latency_ms["99"] >= result.latency_ms["50"]
    assert result.seconds >= 199 / 200  # the last one was due at 0.995 s


async def test_one_stall_shows_in_p99_which_the_send_time_view_hides(serve) -> None:  # type: ignore[no-untyped-def]
    """One connection, one 300 ms stall: requests queue behind it in the generator.

    Measured from their send time (a closed loop), only the stalled request is slow; measured
    from their schedule, every request that fell due during the stall is.
    """
    seen = 0
    stalls = 0

    async def stall_once(request: web.Request) -> web.Response:
        nonlocal seen, stalls
        seen += 1
        if seen == 50:
            stalls += 1
            await asyncio.sleep(0.3)
        return web.Response(text="ok")

    url = await serve(stall_once)
    result = await asyncio.wait_for(
        fixed_rate.run(url + "/", rate=200, count=200, connections=1, drain=30), 120
    )
    assert (result.ok, result.errors, result.unfinished) == (200, 0, 0)
    assert stalls == 1
    # about 60 requests fell due during the stall and waited for the one connection: the
    # generator's p99 (the 3rd slowest of 200) is one of them
    assert result.latency_ms["99"] >= 250.0
    assert result.latency_ms["90"] >= 100.0  # rank 180: the queue behind the stall is long
    assert result.lag_ms["99"] >= 250.0  # they left late, and that is counted
    # the send-time view sees one slow request only: its max, not its p90
    assert result.service_ms["max"] >= 300.0
    assert result.service_ms["90"] <= result.latency_ms["90"]


async def test_errors_and_a_server_that_never_answers_are_counted_and_bounded(serve) -> None:  # type: ignore[no-untyped-def]
    async def never(request: web.Request) -> web.Response:
        if request.path == "/fail":
            return web.Response(status=500)
        await asyncio.sleep(3600)
        return web.Response()

    url = await serve(never)
    failed = await asyncio.wait_for(
        fixed_rate.run(url + "/fail", rate=100, count=20, connections=4, drain=30), 120
    )
    assert (failed.ok, failed.errors, failed.unfinished) == (0, 20, 0)
    assert failed.statuses == {"500": 20}
    assert failed.latency_ms == {}

    stuck = await asyncio.wait_for(
        fixed_rate.run(url + "/hang", rate=100, count=10, connections=2, drain=0.5), 120
    )
    assert (stuck.ok, stuck.errors, stuck.unfinished) == (0, 0, 10)
    # the two in flight and the eight waiting keep what they waited as a lower bound
    assert stuck.latency_ms["max"] >= 500.0
    assert stuck.seconds >= 0.09 + 0.5


async def test_post_bodies_reach_the_server(serve) -> None:  # type: ignore[no-untyped-def]
    sizes: list[int] = []

    async def read(request: web.Request) -> web.Response:
        sizes.append(len(await request.read()))
        return web.json_response({"ok": True})

    url = await serve(read)
    body = b'{"a":"' + b"x" * 20_000 + b'"}'
    result = await asyncio.wait_for(
        fixed_rate.run(
            url + "/post",
            rate=100,
            count=30,
            connections=3,
            method="POST",
            body=body,
            headers=[("Content-Type", "application/json")],
            drain=30,
        ),
        120,
    )
    assert result.ok == 30
    assert sizes == [len(body)] * 30


async def test_server_closing_after_each_answer_costs_no_request(serve) -> None:  # type: ignore[no-untyped-def]
    async def close(request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    url = await serve(close)
    result = await asyncio.wait_for(
        fixed_rate.run(url + "/", rate=100, count=40, connections=2, drain=30), 120
    )
    assert (result.ok, result.errors, result.unfinished) == (40, 0, 0)


async def test_command_line_prints_json(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    url = await serve(ok)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cutover.bench.fixed_rate", url + "/",
        "--rate", "100", "--seconds", "0.3", "--connections", "2", cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    data = json.loads(out)
    assert data["scheduled"] == 30
    assert data["ok"] == 30
    assert set(data["latency_ms"]) == {"50", "90", "99", "99.9", "max"}
    assert data["latencies"] is None  # only when asked
    assert "30/30 ok" in err.decode()


async def test_every_latency_is_listed_when_asked(serve) -> None:  # type: ignore[no-untyped-def]
    """`--latencies` (the mirror cost bench pools its rounds with them): one per request, the
    same figures the percentiles come from."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(text="ok")

    url = await serve(slow)
    result = await asyncio.wait_for(
        fixed_rate.run(url + "/", rate=100, count=40, connections=4, keep_latencies=True), 120
    )
    assert result.latencies is not None and len(result.latencies) == result.ok == 40
    assert min(result.latencies) >= 20.0
    ordered = sorted(result.latencies)
    assert ordered[19] == pytest.approx(result.latency_ms["50"], abs=0.001)
    assert ordered[-1] == pytest.approx(result.latency_ms["max"], abs=0.001)


async def test_the_generator_sleeps_between_requests(serve) -> None:  # type: ignore[no-untyped-def]
    # 2,000/s leaves 0.5 ms between requests: an event loop with millisecond timers spins there
    # and uses the whole second of CPU; sleeping in select() until each due time uses a fraction
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    url = await serve(ok)
    result = await asyncio.wait_for(
        fixed_rate.run(url + "/", rate=2000, count=2000, connections=4, drain=30), 120
    )
    assert result.ok == 2000
    assert 0 < result.cpu_seconds < 0.5 * result.seconds, (result.cpu_seconds, result.seconds)


async def test_each_request_can_carry_its_own_body(serve) -> None:  # type: ignore[no-untyped-def]
    """`bodies`: request i sends bodies[i] (the intake benchmark's webhooks are all new)."""
    seen: list[bytes] = []

    async def read(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({"ok": True})

    url = await serve(read)
    bodies = [f'{{"n":{i}}}'.encode() for i in range(40)]
    result = await asyncio.wait_for(
        fixed_rate.run(
            url + "/post", rate=200, count=40, connections=4, method="POST", bodies=bodies,
            drain=30,
        ),
        120,
    )  # fmt: skip
    assert result.ok == 40
    assert sorted(seen) == sorted(bodies)
    with pytest.raises(ValueError, match="need as many bodies"):
        fixed_rate.run_blocking(url, rate=10, count=5, bodies=bodies[:2])
