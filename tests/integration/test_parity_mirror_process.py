"""The mirror process (`parity.mirror.process`): its pipe protocol run against a real child, and
the gateway's end under reloads; the faults (a child killed -9, shutdown with a hung
candidate) are in test_tasks.py and test_quiescence.py."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from cutover.bench.mirror_cost import cpu_seconds
from cutover.core.db import open_database
from cutover.parity.book import RouteTally, Tally
from cutover.parity.config import MirrorSettings, ParityConfig
from cutover.parity.mirror import MirrorJob, RawJob
from cutover.parity.mirror_process import (
    NICE,
    SEND_EVERY,
    MirrorProcess,
    MirrorSpec,
    _Child,
    frame,
    read_frame,
)
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from cutover.routing.canary import ParityReading
from tests.conftest import wait_for
from tests.fuzzing import fuzz, text
from tests.integration.parity_samples import Sample, samples
from tests.integration.test_parity_mirror import (
    compared,
    config_for,
    feature,
    gateways,
    metric,
    start,
)

__all__ = ["gateways"]  # the fixture, used by name


def job(route: str, to: str, path: str, primary: str = "python") -> MirrorJob:
    headers = CIMultiDictProxy(CIMultiDict([("Accept", "application/json"), ("X-A", "1")]))
    answer = orjson.dumps({"id": 1, "alertname": "Alert1", "severity": "critical", "count": 2})
    return MirrorJob(route, to, primary, "GET", path, headers, b"", "10.0.0.1", "http",
                     "example.test", "rid-1", 200, (("content-type", "application/json"),),
                     answer)  # fmt: skip


def spec(primary: Sample, candidate: Sample, store: str, **mirror: object) -> MirrorSpec:
    data = config_for(primary, candidate, Path("/nonexistent"))
    config = parse_config(data, "t.yaml")
    settings = ParityConfig(mirror=MirrorSettings(**mirror))  # type: ignore[arg-type]
    return MirrorSpec(dict(config.backends), settings, "X-Request-ID", (store, "."), ("default",))


@asynccontextmanager
async def child() -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cutover.parity.mirror_process",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def send(proc: asyncio.subprocess.Process, message: tuple[object, ...]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(frame(pickle.dumps(message)))


async def tallies(proc: asyncio.subprocess.Process, count: int) -> Tally:
    """What the child sends until `count` more jobs are done: the frames' tallies summed (the
    window figures as the last frame gave them)."""
    assert proc.stdout is not None
    total = Tally()
    while len(total.done) < count:
        payload = await asyncio.wait_for(read_frame(proc.stdout), 30)
        assert payload is not None, "the child closed its pipe early"
        tally = Tally.of_wire(orjson.loads(payload))
        total.done += tally.done
        total.store_errors += tally.store_errors
        for name, t in tally.routes.items():
            into = total.route(name)
            into.same, into.differ = into.same + t.same, into.differ + t.differ
            for into_counts, counts in ((into.failures, t.failures), (into.skipped, t.skipped)):
                for key, n in counts.items():
                    into_counts[key] = into_counts.get(key, 0) + n
            into.compared, into.rate = t.compared, t.rate
    return total


async def test_the_child_compares_stores_sends_outcomes_and_exits_at_eof(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path}/state.db"
    async with samples() as (primary, candidate), child() as proc:
        send(proc, ("spec", spec(primary, candidate, store)))
        send(proc, ("at", 1.0))  # the gateway's time of the copies that follow
        for i in range(3):
            send(proc, ("job", i, job("default", "go", f"/alerts/{i + 1}").to_wire()))
        send(proc, ("job", 3, job("default", "gone", "/alerts/1").to_wire()))  # left the config
        got = await tallies(proc, 4)
        assert sorted(got.done) == [0, 1, 2, 3]  # 3: done, nothing to book
        assert list(got.routes) == ["default"] and got.store_errors == 0
        # booked by the child: all three differ (planted), in its window, under min_samples
        assert got.routes["default"] == RouteTally(0, 3, compared=3, rate=None)
        # the copies were marked and carried the request's own id; noise requests went to python
        assert [h["X-Cutover-Mirror"] for h in candidate.seen] == ["1"] * 3
        assert {h["X-Request-ID"] for h in candidate.seen} == {"rid-1"}
        assert len(primary.seen) == 3
        assert proc.stdin is not None
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert proc.stdout is not None and await proc.stdout.read() == b""
    db = await open_database(store)
    try:
        rows = await db.fetch("SELECT * FROM parity_results ORDER BY id")
    finally:
        await db.close()
    assert sorted(r["path"] for r in rows) == [f"/alerts/{i + 1}" for i in range(3)]
    for row in rows:
        assert row["ts"] == 1.0  # the gateway's time of the copy, not the child's
        assert (row["route"], row["endpoint"], row["method"]) == (
            "default", "GET /alerts/{id}", "GET")  # fmt: skip
        assert (row["primary_backend"], row["candidate_backend"]) == ("python", "go")
        assert (row["primary_status"], row["candidate_status"]) == (200, 200)
        assert {"$.alertname", "$.alert_name", "$.count"} <= set(orjson.loads(row["fields"]))
        # the primary was asked again: its own noise
        assert {"$.generated_at", "$.request_id"} <= set(orjson.loads(row["noise_fields"]))


async def test_jobs_wait_for_the_cpu_budget_then_are_compared(tmp_path: Path) -> None:
    """`mirror.cpu`: the child's jobs wait while its budget is spent, and are compared (100
    exchanges cost more than the 10 ms of CPU a 1 % budget holds at most)."""
    store = f"sqlite://{tmp_path}/state.db"
    async with samples() as (primary, candidate), child() as proc:
        send(proc, ("spec", spec(primary, candidate, store, cpu=0.01, timeout=120.0)))
        send(proc, ("job", 0, job("default", "go", "/alerts/1").to_wire()))
        await tallies(proc, 1)  # (started, the store open)
        cpu_before = cpu_seconds(proc.pid)[0]
        for i in range(1, 101):
            send(proc, ("job", i, job("default", "go", f"/alerts/{i % 3 + 1}").to_wire()))
        route = (await tallies(proc, 100)).routes["default"]
        assert route.same + route.differ == 100 and not route.skipped
        assert len(candidate.seen) == 101
        assert cpu_seconds(proc.pid)[0] - cpu_before > 0.01  # more than the budget holds


async def test_jobs_that_would_wait_past_the_timeout_are_skipped_and_not_sent(
    tmp_path: Path,
) -> None:
    """A budget too small for what comes: the jobs that would wait longer than
    `mirror.timeout` are skipped (outcome `cpu_budget`), sent nowhere, and every job is
    answered for within about the timeout; without the budget all are compared again."""
    store = f"sqlite://{tmp_path}/state.db"
    async with samples() as (primary, candidate), child() as proc:
        send(proc, ("spec", spec(primary, candidate, store, cpu=0.001, timeout=0.5)))
        for i in range(200):
            send(proc, ("job", i, job("default", "go", f"/alerts/{i % 3 + 1}").to_wire()))
        got = await tallies(proc, 200)
        assert sorted(got.done) == list(range(200))
        route = got.routes["default"]
        skipped = route.skipped.get("cpu_budget", 0)
        assert route.same + route.differ + skipped == 200  # each job compared or skipped
        assert skipped >= 150  # 1 ms of CPU a second compares a few of them, not 200
        assert route.same + route.differ >= 1  # the first ones, on a full budget
        assert len(candidate.seen) == route.same + route.differ  # the skipped: sent nowhere
        send(proc, ("spec", spec(primary, candidate, store)))  # a reload without the budget
        for i in range(200, 210):
            send(proc, ("job", i, job("default", "go", "/alerts/1").to_wire()))
        again = (await tallies(proc, 10)).routes["default"]
        assert again.same + again.differ == 10 and not again.skipped


async def test_a_store_the_child_cannot_open_costs_results_not_outcomes(tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path}/missing-dir/x/state.db"
    (tmp_path / "missing-dir").write_text("a file where a directory should be")
    async with samples() as (primary, candidate), child() as proc:
        send(proc, ("spec", spec(primary, candidate, store)))
        for i in range(2):
            send(proc, ("job", i, job("default", "go", f"/alerts/{i + 1}").to_wire()))
        got = await tallies(proc, 2)
        assert got.store_errors == 2  # compared, not stored: counted, and windowed
        assert got.routes["default"] == RouteTally(0, 2, compared=2, rate=None)


async def test_the_child_runs_below_the_gateways_priority(tmp_path: Path) -> None:
    async with samples() as (primary, candidate), child() as proc:
        send(proc, ("spec", spec(primary, candidate, f"sqlite://{tmp_path}/s.db")))
        send(proc, ("job", 0, job("default", "go", "/alerts/1").to_wire()))
        await tallies(proc, 1)  # it is up
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(ours + NICE, 19)


async def test_at_eof_a_hung_candidates_jobs_end_with_the_mirror_timeout(tmp_path: Path) -> None:
    """EOF (the gateway stopping or dead) while the candidate hangs: the child still answers
    every job it took (a timeout failure) and exits, it is never left behind."""
    async with samples() as (primary, candidate), child() as proc:
        candidate.gate = asyncio.Event()  # never set
        store = f"sqlite://{tmp_path}/s.db"
        send(proc, ("spec", spec(primary, candidate, store, timeout=0.5, workers=2)))
        for i in range(4):
            send(proc, ("job", i, job("default", "go", f"/alerts/{i + 1}").to_wire()))
        assert proc.stdin is not None
        proc.stdin.close()
        got = await tallies(proc, 4)
        assert got.routes["default"].failures == {"timeout": 4}
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_a_reload_sends_the_child_the_new_candidate(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with samples() as (primary, candidate), samples() as (_, other):
        data = config_for(primary, candidate, tmp_path)
        gw = await start(gateways, data)
        parity = feature(gw)
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/alerts/1") as resp:
                assert resp.status == 200
            await wait_for(lambda: len(candidate.seen) == 1)
            data["backends"]["go"]["url"] = other.url
            await gw.reload(parse_config(data, "t.yaml"))
            async with http.get(gw.url + "/alerts/2") as resp:
                assert resp.status == 200
            await wait_for(lambda: len(other.seen) == 1)
            assert len(candidate.seen) == 1
            # process: false on a reload: the child is stopped, the gateway's workers mirror
            pid = parity.process.pid if parity.process is not None else None
            assert pid is not None
            data["parity"] = {"mirror": {"process": False}}
            await gw.reload(parse_config(data, "t.yaml"))
            assert parity.process is None and parity.queue is not None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
            async with http.get(gw.url + "/alerts/3") as resp:
                assert resp.status == 200
            await wait_for(lambda: len(other.seen) == 2)
        # the own workers' window: the store's two results, then its own
        await wait_for(lambda: compared(parity) == 3)
        assert parity.depth == 0


async def test_a_gateway_without_a_mirror_starts_no_process(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    async with samples() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path, {"mirror": "off"}))
        assert feature(gw).process is None and feature(gw).queue is None


async def test_outcomes_that_finish_close_together_go_back_in_one_frame() -> None:
    """The child gathers what finishes within `SEND_EVERY` into one frame: the gateway wakes,
    reads and books once for all of them, not once per copy."""
    frames: list[bytes] = []

    class Pipe:  # the child's end of the pipe to the gateway
        def is_closing(self) -> bool:
            return False

        def write(self, data: bytes) -> None:
            frames.append(data)

    child = _Child(Pipe())  # type: ignore[arg-type]
    try:
        for number in range(3):  # finished 1 ms apart (nothing to book: no outcome)
            child.done(number, 1.0, None)
            await asyncio.sleep(0.001)
        await wait_for(lambda: bool(frames), interval=0.001)
        await asyncio.sleep(2 * SEND_EVERY)
        assert [orjson.loads(f[4:]) for f in frames] == [[[0, 1, 2], {}, 0]]
    finally:
        child.writer.cancel()


async def test_a_quarter_of_the_queue_done_goes_back_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway counts a job as held until its frame comes: once a quarter of what it lets
    the child hold is done, the child sends it without waiting for `SEND_EVERY` (else at a
    high rate the copies would find the child full and be dropped)."""
    monkeypatch.setattr("cutover.parity.mirror_process.SEND_EVERY", 3600.0)
    frames: list[bytes] = []

    class Pipe:
        def is_closing(self) -> bool:
            return False

        def write(self, data: bytes) -> None:
            frames.append(data)

    child = _Child(Pipe())  # type: ignore[arg-type]
    child.spec = MirrorSpec({}, ParityConfig(mirror=MirrorSettings(queue=8)), "X-Request-ID",
                            (None, "."))  # fmt: skip
    try:
        child.done(0, 1.0, None)
        await asyncio.sleep(0.2)
        assert frames == []  # 1 of 8: it waits for more
        child.done(1, 1.0, None)
        await wait_for(lambda: bool(frames))
        assert [orjson.loads(f[4:]) for f in frames] == [[[0, 1], {}, 0]]
    finally:
        child.writer.cancel()


_text = text()


@given(
    headers=st.lists(st.tuples(_text, _text), max_size=6),
    body=st.binary(max_size=200),
    path=_text,
    status=st.integers(0, 999),
)
@fuzz(200)
def test_a_job_crosses_the_pipe_unchanged(
    headers: list[tuple[str, str]], body: bytes, path: str, status: int
) -> None:
    fields = CIMultiDictProxy(CIMultiDict(headers))
    original = MirrorJob("r", "go", "python", "GET", path, fields, body, "::1", "https", None,
                         "id", status, tuple(headers), body)  # fmt: skip
    wire = pickle.loads(pickle.dumps(original.to_wire()))
    back = MirrorJob.of_wire(wire)
    assert list(back.headers.items()) == headers
    assert back.to_wire() == original.to_wire()


_name = st.one_of(st.sampled_from([b"Host", b"hOST", b"X-A"]), st.binary(max_size=12))
_fields = st.lists(st.tuples(_name, st.binary(max_size=20)), max_size=6)


def _decode(fields: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """As the gateway decoded a fast-path copy's header fields before it sent them raw."""
    return [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
            for n, v in fields]  # fmt: skip


@given(headers=_fields, answer_headers=_fields, body=st.binary(max_size=200), path=_text,
       status=st.integers(0, 999))  # fmt: skip
@fuzz(200)
def test_a_raw_copy_crosses_the_pipe_and_is_decoded_as_the_gateway_decoded_it(
    headers: list[tuple[bytes, bytes]],
    answer_headers: list[tuple[bytes, bytes]],
    body: bytes,
    path: str,
    status: int,
) -> None:
    """A fast-path copy goes raw (`RawJob`, any bytes, UTF-8 or not) and the child's job is
    the one the gateway built when it decoded the headers itself (UTF-8, surrogateescape)."""
    fields = CIMultiDictProxy(CIMultiDict(_decode(headers)))
    answer = tuple(_decode(answer_headers))
    before = MirrorJob("r", "go", "python", "GET", path, fields, body, "::1", "http",
                       fields.get("Host"), "id", status, answer, body)  # fmt: skip
    raw: RawJob = ("r", "go", "python", "GET", path, headers, body, "::1", "http", "id", status,
                   answer_headers, body)  # fmt: skip
    kind, number, values = pickle.loads(pickle.dumps(("raw", 7, raw), pickle.HIGHEST_PROTOCOL))
    back = MirrorJob.of_raw(values)
    assert (kind, number) == ("raw", 7)
    assert back.to_wire() == before.to_wire()
    assert [(n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
            for n, v in back.headers.items()] == headers  # fmt: skip


async def test_the_child_takes_a_raw_copy_and_decodes_its_headers(tmp_path: Path) -> None:
    """A fast-path copy's header fields reach the child as bytes: decoded there (UTF-8), they
    go to the candidate as the client sent them, its Host as the forwarded host."""
    store = f"sqlite://{tmp_path}/state.db"
    answer = orjson.dumps({"id": 1, "alertname": "Alert1", "severity": "critical", "count": 2})
    raw: RawJob = ("default", "go", "python", "GET", "/alerts/1",
                   [(b"Host", b"example.test"), (b"X-Note", "café".encode())], b"", "10.0.0.1",
                   "http", "rid-raw", 200, [(b"Content-Type", b"application/json")],
                   answer)  # fmt: skip
    async with samples() as (primary, candidate), child() as proc:
        send(proc, ("spec", spec(primary, candidate, store, noise=False)))
        send(proc, ("raw", 0, raw))
        got = await tallies(proc, 1)
        assert got.routes["default"] == RouteTally(0, 1, compared=1) and not got.store_errors
        (seen,) = candidate.seen
        assert seen["X-Note"] == "café"
        assert seen["X-Request-ID"] == "rid-raw" and seen["X-Cutover-Mirror"] == "1"
        assert seen["X-Forwarded-Host"] == "example.test"


_count = st.integers(0, 2**31)
_route_tally = st.builds(
    RouteTally,
    same=_count,
    differ=_count,
    failures=st.dictionaries(st.sampled_from(["connect", "timeout", "error"]), _count),
    skipped=st.dictionaries(_text, _count),
    compared=_count,
    rate=st.one_of(st.none(), st.floats(0.0, 1.0)),
)


@given(
    done=st.lists(st.integers(0, 2**62)),
    routes=st.dictionaries(_text, _route_tally),
    store_errors=_count,
)
@fuzz(200)
def test_a_tally_crosses_the_pipe_unchanged(
    done: list[int], routes: dict[str, RouteTally], store_errors: int
) -> None:
    tally = Tally(done, routes, store_errors)
    assert Tally.of_wire(orjson.loads(orjson.dumps(tally.to_wire()))) == tally


async def test_the_bytes_the_child_holds_are_bounded(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    """Copies carry bodies up to max_body each: the child holds `max_held_bytes` at most, more
    copies are dropped and counted, and every byte is given back once the outcomes are in."""
    async with samples() as (primary, candidate):
        candidate.gate = asyncio.Event()
        gw = await start(gateways, config_for(primary, candidate, tmp_path))
        parity = feature(gw)
        process = parity.process
        assert process is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/alerts/1") as resp:
                assert resp.status == 200
            await wait_for(lambda: process.in_flight == 1)
            one = process.held_bytes
            assert one > 100
            process.max_held_bytes = int(2.5 * one)
            for i in range(5):
                async with http.get(gw.url + f"/alerts/{i + 2}") as resp:
                    assert resp.status == 200
            assert process.in_flight == 2 and process.held_bytes <= process.max_held_bytes
            name = "cutover_parity_mirror_requests_total"
            dropped = {"route": "default", "result": "dropped"}
            assert gw.metrics.registry.get_sample_value(name, dropped) == 4.0
            candidate.gate.set()
        await wait_for(lambda: compared(parity) == 2, deadline=30)
        assert process.in_flight == 0 and process.held_bytes == 0


async def test_copies_submitted_together_reach_the_child_in_one_write(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    """The gateway gathers the copies of `FLUSH_EVERY` and writes them in one go (one system
    call, one wake-up of the child); each still comes back booked."""
    async with samples() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path))
        parity = feature(gw)
        process = parity.process
        assert process is not None and process._proc is not None
        stdin = process._proc.stdin
        assert stdin is not None
        writes: list[bytes] = []
        real_write = stdin.write

        def write(data: bytes) -> None:
            writes.append(data)
            real_write(data)

        stdin.write = write  # type: ignore[method-assign]
        for i in range(5):
            assert process.submit(job("default", "go", f"/alerts/{i + 1}"))
        assert writes == [] and process.in_flight == 5  # gathered, not yet written
        await wait_for(lambda: compared(parity) == 5)
        assert len(writes) == 1
        assert writes[0].count(b"/alerts/") == 5
        assert process.in_flight == 0 and process.held_bytes == 0


async def test_a_frame_is_booked_as_its_tally_says_in_calls_per_route(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    """The child books the outcomes; the gateway adds a frame's counts and takes its window
    figures. What that costs its loop depends on the routes in the frame, not on the copies:
    500 comparisons are booked in the calls that 5 are."""
    async with samples() as (primary, candidate):
        gw = await start(gateways, config_for(primary, candidate, tmp_path))
        parity = feature(gw)

        def tally(n: int) -> Tally:
            route = RouteTally(3 * n, 2 * n, {"timeout": n}, {"response_too_large": n},
                               compared=5 * n, rate=0.25)  # fmt: skip
            gone = RouteTally(n, 0, compared=n, rate=1.0)  # a route that mirrors no more
            return Tally([], {"default": route, "gone": gone}, store_errors=n)

        def booked(n: int) -> int:
            calls = 0

            def profile(frame: object, event: str, arg: object) -> None:
                nonlocal calls
                calls += event in ("call", "c_call")

            sys.setprofile(profile)
            try:
                parity._book_process(tally(n))
            finally:
                sys.setprofile(None)
            return calls

        booked(1)  # (the first frame of a route looks its counters up)
        assert booked(5) == booked(500)
        comparisons = "cutover_parity_comparisons_total"
        assert metric(gw, comparisons, route="default", result="same") == 3 * 506
        assert metric(gw, comparisons, route="default", result="differ") == 2 * 506
        failures = "cutover_parity_mirror_failures_total"
        assert metric(gw, failures, route="default", kind="timeout") == 506
        skipped = "cutover_parity_mirror_skipped_total"
        assert metric(gw, skipped, route="default", reason="response_too_large") == 506
        assert metric(gw, "cutover_parity_store_errors_total") == 506
        assert parity.parity_reading("default") == ParityReading(0.25, 2500, 20)
        assert metric(gw, "cutover_parity_rate", route="default") == 0.25
        assert parity.parity_reading("gone") == ParityReading(None, 0, 20)


def judged(process: MirrorProcess) -> bool:
    """What `MirrorProcess.full` must say, worked out from the state it keeps it for."""
    return (
        process._proc is None
        or process._closing
        or process.in_flight >= process.capacity
        or process.held_bytes >= process.max_held_bytes
    )


async def test_full_is_kept_right_through_the_process_life(
    tmp_path: Path, gateways: list[Gateway]
) -> None:
    """`full` is an attribute kept at each change, not worked out per request: it must turn
    true when the child holds `capacity` copies or is gone, and false again as soon as there is
    room (outcomes in, a reload raising the capacity, a new child after a kill -9) — a flag
    left true would stop mirroring without a word."""
    async with samples() as (primary, candidate):
        candidate.gate = asyncio.Event()  # the candidate holds the copies: the child holds jobs
        config = config_for(primary, candidate, tmp_path, parity={"mirror": {"queue": 3}})
        gw = await start(gateways, config)
        parity = feature(gw)
        process = parity.process
        assert process is not None
        name = "cutover_parity_mirror_requests_total"

        def count(result: str) -> float:
            return metric(gw, name, route="default", result=result)

        await wait_for(lambda: not process.full)
        assert not judged(process)
        async with aiohttp.ClientSession() as http:
            for i in range(4):
                async with http.get(gw.url + f"/alerts/{i + 1}") as resp:
                    assert resp.status == 200
                assert process.full is judged(process)
            assert process.in_flight == 3 and process.full and count("dropped") == 1.0
            depth = "cutover_parity_mirror_queue_depth"  # set by each lag probe, not per copy
            await wait_for(lambda: metric(gw, depth) == 3.0)
            process.capacity = 5  # as a reload does (`ParityFeature._arrange`)
            assert not process.full and not judged(process)
            process.max_held_bytes = process.held_bytes
            assert process.full and judged(process)
            process.max_held_bytes = 1 << 30
            process.capacity = 3
            assert process.full and judged(process)
            candidate.gate.set()  # the outcomes come in: room again
            await wait_for(lambda: process.in_flight == 0, deadline=30)
            assert not process.full and not judged(process)
            await wait_for(lambda: metric(gw, depth) == 0.0)

            first = process.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await wait_for(lambda: process.pid not in (None, first), deadline=30)
            await wait_for(lambda: not process.full, deadline=30)  # the new child takes copies
            assert not judged(process)
            queued = count("queued")
            async with http.get(gw.url + "/alerts/9") as resp:
                assert resp.status == 200
            assert count("queued") == queued + 1
        await wait_for(lambda: process.in_flight == 0, deadline=30)
        assert not process.full
        process.close()
        assert process.full and judged(process)
