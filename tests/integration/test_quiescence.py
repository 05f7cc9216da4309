"""The quiescence check (`tests.quiescence`) itself: it passes on a quiet gateway and fails,
naming the count, whenever anything is still held — so that it cannot pass silently."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from cutover.app import start_gateway
from cutover.proxy.config import parse_config
from cutover.proxy.server import Gateway
from tests.conftest import ROOT, EchoBackend, gateway_config, wait_for
from tests.integration.fault_helpers import FaultBackend, refused_url
from tests.integration.parity_samples import samples
from tests.integration.publishing_fakes import FakeWebhook
from tests.integration.publishing_helpers import config, enqueue, make_alert, start
from tests.integration.test_parity_mirror import config_for, feature
from tests.quiescence import assert_quiescent, expect_held, in_flight_counts

on_both_paths = pytest.mark.usefixtures("serving_path")


async def _quiet_gateway(backends, gateway) -> tuple[Gateway, EchoBackend]:  # type: ignore[no-untyped-def]
    go = await backends("go")
    data = gateway_config(
        {"dead": refused_url(), "go": go.url},
        route={"split": {"dead": 100}, "fallback": ["go"]},
    )
    for backend in data["backends"].values():
        backend["health"] = "off"
    gw = await gateway(data)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # each one fails over: a replay that ended
            async with s.get(gw.url + "/x") as r:
                assert r.status == 200
    return gw, go


@on_both_paths
async def test_a_gateway_whose_traffic_stopped_is_quiet(backends, gateway) -> None:
    gw, _ = await _quiet_gateway(backends, gateway)
    await assert_quiescent(gw)
    assert await in_flight_counts(gw) == {}


async def _budget_request(gw: Gateway) -> Callable[[], None]:
    budget = gw.state.budgets["default"]
    budget.start()
    return budget.finish


async def _budget_replay(gw: Gateway) -> Callable[[], None]:
    budget = gw.state.budgets["default"]
    assert budget.try_replay()
    return budget.replay_done


async def _concurrency(gw: Gateway) -> Callable[[], None]:
    gw.in_flight += 1

    def undo() -> None:
        gw.in_flight -= 1

    return undo


async def _gauge(gw: Gateway) -> Callable[[], None]:
    gw.metrics.in_flight.inc()
    return gw.metrics.in_flight.dec


async def _lean_lease(gw: Gateway) -> Callable[[], None]:
    conn = await gw.state.upstreams["go"].lean.connect(5.0)
    return conn.close


async def _aiohttp_lease(gw: Gateway) -> Callable[[], None]:
    upstream = gw.state.upstreams["go"]
    resp = await upstream.session.get(upstream.base + "/big/50000000")  # read by nobody
    return resp.release


HOLDS: dict[str, tuple[Callable[[Gateway], Awaitable[Callable[[], None]]], str]] = {
    "a request in the retry budget": (_budget_request, "budget[default].in_flight"),
    "a replay of the retry budget": (_budget_replay, "budget[default].replays"),
    "a slot of the concurrency cap": (_concurrency, "gateway.in_flight"),
    "the in-flight gauge": (_gauge, "/metrics cutover_in_flight_requests"),
    "a lean pool connection": (_lean_lease, "lean[go].busy"),
    "an aiohttp connector connection": (_aiohttp_lease, "session[go].acquired"),
}


@on_both_paths
@pytest.mark.parametrize("held", sorted(HOLDS))
async def test_anything_held_fails_the_check_by_name(held: str, backends, gateway) -> None:
    gw, _ = await _quiet_gateway(backends, gateway)
    hold, name = HOLDS[held]
    undo = await hold(gw)
    with pytest.raises(AssertionError, match=name.replace("[", r"\[").replace("]", r"\]")):
        await assert_quiescent(gw, deadline=0.3)
    undo()
    await assert_quiescent(gw)


@on_both_paths
async def test_a_request_still_in_flight_fails_the_check(gateway) -> None:
    slow = await FaultBackend().start()
    try:
        data = gateway_config({"slow": slow.url})
        data["backends"]["slow"]["health"] = "off"
        gw = await gateway(data)
        async with aiohttp.ClientSession() as s:
            pending = asyncio.ensure_future(s.get(gw.url + "/hang"))
            await slow.arrived(1)
            with pytest.raises(AssertionError) as failed:
                await assert_quiescent(gw, deadline=0.3)
            for name in ("gateway.in_flight", "budget[default].in_flight"):
                assert name in str(failed.value)
            if gw._fast is not None:
                assert "fast.exchanges" in str(failed.value)
            slow.release.set()
            async with await pending as r:
                assert r.status == 200
        await assert_quiescent(gw)
    finally:
        await slow.stop()


LEAKY_TEST = """
from cutover.proxy.config import parse_config
from cutover.app import start_gateway
from tests.conftest import backends, closing_checks, gateway, gateway_config  # noqa: F401
from tests.quiescence import expect_held


async def test_leaves_a_replay_held(backends, gateway):
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    assert gw.state.budgets["default"].try_replay()  # and never gives it back


async def test_closes_its_own_gateway_with_a_request_held(backends):
    go = await backends("go")
    gw = await start_gateway(parse_config(gateway_config({"go": go.url}), "t.yaml"))
    try:
        gw.state.budgets["default"].start()  # a request that never finishes
    finally:
        await gw.close()


async def test_declares_what_it_leaves_held(backends, gateway):
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}))
    assert gw.state.budgets["default"].try_replay()
    expect_held(gw, {"budget[default].replays": 1}, "a replay this test keeps")
"""


def test_every_gateway_of_a_test_is_checked_when_it_closes(tmp_path: Path) -> None:
    """Every gateway a test starts is checked as it closes, by the `gateway` fixture or by
    the test itself: a leak is an error; a count declared held is wanted exactly."""
    (tmp_path / "conftest.py").write_text(
        "import tests.quiescence\n\ntests.quiescence.DEADLINE = 0.5\n"
    )
    (tmp_path / "test_leaky.py").write_text(textwrap.dedent(LEAKY_TEST))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "3 passed, 2 errors" in out, out
    assert "ERROR test_leaky.py::test_leaves_a_replay_held" in out, out
    assert "ERROR test_leaky.py::test_closes_its_own_gateway_with_a_request_held" in out, out
    assert "budget[default].replays" in out, out
    assert "budget[default].in_flight" in out, out


async def test_a_delivery_being_sent_is_held_until_it_ends(tmp_path: Path) -> None:
    """A feature's in-memory work is part of the check: a delivery a target holds is counted
    (per target, and the engine's task) and reads zero once the target answers."""
    hook = await FakeWebhook().start()
    hook.hold = asyncio.Event()
    target = {"name": "hook", "type": "webhook", "url": hook.url + "/hook"}
    delivery = {"backoff": {"base": "20ms", "cap": "100ms"}, "poll_interval": "50ms"}
    gw = await start(config(tmp_path, {"targets": [target], "delivery": delivery}))
    try:
        await enqueue(gw, make_alert("fp-held"), ["hook"])
        await wait_for(lambda: len(hook.requests) == 1)
        held = await in_flight_counts(gw)
        assert held["publishing.delivering[hook]"] == 1 and held["publishing.delivery.tasks"] == 1
        hook.hold.set()
        await wait_for(lambda: len(hook.accepted) == 1)
        await assert_quiescent(gw)
    finally:
        await gw.close()
        await hook.stop()


@pytest.mark.parametrize("process", [True, False], ids=["process", "inline"])
async def test_mirror_jobs_left_at_shutdown_are_counted_dropped(
    tmp_path: Path, process: bool
) -> None:
    """Mirror jobs still held when the gateway closes are dropped and counted, not left (the
    mirror process gets a short grace, then is killed with what it holds)."""
    async with samples() as (primary, candidate):
        candidate.gate = asyncio.Event()  # the one worker waits on the first comparison
        parity = {"mirror": {"queue": 5, "workers": 1, "process": process}}
        gw = await start_gateway(
            parse_config(config_for(primary, candidate, tmp_path, parity=parity), "t.yaml")
        )
        closed = False
        try:
            async with aiohttp.ClientSession() as s:
                for i in range(4):
                    async with s.get(f"{gw.url}/alerts/{i + 1}") as r:
                        assert r.status == 200
            await wait_for(lambda: len(candidate.seen) == 1)
            held = await in_flight_counts(gw)
            if process:  # one under way in the child, three waiting there
                await wait_for(lambda: feature(gw).in_flight().get("mirror.process") == 4)
                held = await in_flight_counts(gw)
                assert held["parity.mirror.process"] == 4, held
            else:
                assert held["parity.mirror.queued"] == 3, held
            expect_held(gw, held, "the candidate holds the one worker's comparison", once_closed={})
            pid = feature(gw).process.pid if process else None  # type: ignore[union-attr]
            await gw.close()  # the worker is cancelled with its request
            closed = True
            candidate.gate.set()
            left = await in_flight_counts(gw, scrape=False)
            assert "parity.mirror.queued" not in left and "parity.mirror.process" not in left
            dropped = gw.metrics.registry.get_sample_value(
                "cutover_parity_mirror_requests_total", {"route": "default", "result": "dropped"}
            )
            assert dropped is not None and dropped >= (4 if process else 3)
            if pid is not None:
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)  # the mirror process is gone with its gateway
        finally:
            if not closed:
                await gw.close()
