"""The one way to run a background task: failures logged once, counted, shown, restarted with a
capped backoff; cancellation the only clean end; stopping never raises and says how it went."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry, Counter

from cutover.core.clock import FakeClock
from cutover.core.tasks import TaskSupervisor, describe, stop_in_order
from tests.conftest import wait_for


def supervisor(**kw: float) -> tuple[TaskSupervisor, CollectorRegistry]:
    registry = CollectorRegistry()
    failures = Counter("cutover_task_failures_total", "t", ["task"], registry=registry)
    return TaskSupervisor(clock=FakeClock(), failures=failures, **kw), registry


def failures(registry: CollectorRegistry, task: str) -> float:
    value = registry.get_sample_value("cutover_task_failures_total", {"task": task})
    return value or 0.0


async def test_a_failing_loop_is_logged_counted_shown_and_restarted(caplog) -> None:
    caplog.set_level(logging.INFO, "cutover.tasks")
    sup, registry = supervisor(base_delay=0.01, max_delay=0.05)
    runs: list[int] = []
    resumed = asyncio.Event()

    async def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first run breaks")
        resumed.set()
        await asyncio.Event().wait()

    handle = sup.start("worker", loop)
    # exported at 0 from the start, so that Prometheus' increase() sees the first failure
    assert registry.get_sample_value("cutover_task_failures_total", {"task": "worker"}) == 0
    await asyncio.wait_for(resumed.wait(), 10)
    assert len(runs) == 2 and handle.restarts == 1 and handle.failures == 1
    assert failures(registry, "worker") == 1
    shown = sup.snapshot()["worker"]
    assert shown["state"] == "running" and shown["restarts"] == 1
    assert shown["last_error"] == "RuntimeError: first run breaks"
    assert shown["last_failure"] == "2023-11-14T22:13:20.000Z"  # the injected clock's wall time
    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.getMessage() == "task worker failed (RuntimeError: first run breaks);" \
        " restarting in 0.01s"  # fmt: skip
    assert record.exc_info is not None and record.levelno == logging.ERROR
    await handle.stop()
    assert "worker" not in sup.snapshot()
    assert "task worker stopped after 1 failures (1 restarts)" in caplog.text


async def test_backoff_doubles_up_to_the_cap_and_the_same_error_logs_one_traceback(
    caplog,
) -> None:
    sup, registry = supervisor(base_delay=0.01, max_delay=0.04)
    delays: list[str] = []

    async def loop() -> None:
        raise ValueError("always")

    handle = sup.start("broken", loop)
    await wait_for(lambda: handle.failures >= 5)
    await handle.stop()
    for r in caplog.records:
        if r.name == "cutover.tasks" and "failed" in r.getMessage():
            delays.append(r.getMessage().rsplit(" ", 1)[-1])
    assert delays[:5] == ["0.01s", "0.02s", "0.04s", "0.04s", "0.04s"]
    tracebacks = [r for r in caplog.records if r.exc_info and "broken" in r.getMessage()]
    assert len(tracebacks) == 1  # the same failure again is one line, not another traceback
    assert "failed again (ValueError: always; 2 failures)" in caplog.text
    assert failures(registry, "broken") == handle.failures


async def test_a_loop_that_returns_by_itself_is_a_failure() -> None:
    sup, registry = supervisor(base_delay=0.01)
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await asyncio.Event().wait()

    handle = sup.start("quiet", loop)
    await wait_for(lambda: runs == 2)
    assert handle.last_error == "returned: a background loop must run until it is stopped"
    assert failures(registry, "quiet") == 1
    await handle.stop()


async def test_cancellation_is_the_clean_end_and_stop_never_raises(caplog) -> None:
    caplog.set_level(logging.INFO, "cutover.tasks")
    sup, registry = supervisor()
    started = asyncio.Event()

    async def loop() -> None:
        started.set()
        await asyncio.Event().wait()

    handle = sup.start("calm", loop)
    await started.wait()
    await handle.stop()
    await handle.stop()  # twice is harmless
    assert handle.done() and handle.state == "stopped" and handle.failures == 0
    assert failures(registry, "calm") == 0
    assert caplog.text.count("task calm stopped (no failures)") == 1


async def test_a_loop_that_ignores_the_stop_flag_is_cancelled_after_the_grace() -> None:
    sup, _ = supervisor()
    flag = {"stop": False}

    async def polite() -> None:
        while not flag["stop"]:
            await asyncio.sleep(0.01)

    handle = sup.start("polite", polite)
    flag["stop"] = True
    await handle.stop(grace=5.0)  # returned by itself once asked: a clean end, not a failure
    assert handle.state == "done" and handle.failures == 0

    async def stubborn() -> None:
        await asyncio.Event().wait()

    handle = sup.start("stubborn", stubborn)
    await handle.stop(grace=0.05)
    assert handle.state == "stopped"


async def test_until_done_retries_a_start_that_failed_then_ends() -> None:
    sup, registry = supervisor(base_delay=0.01)
    tries = 0

    async def start() -> None:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise OSError("not yet")

    handle = sup.start("starter", start, until_done=True)
    assert await handle.wait(10)
    assert tries == 2 and handle.state == "done" and failures(registry, "starter") == 1


async def test_a_one_shot_failure_is_kept_until_the_next_of_its_name(caplog) -> None:
    sup, registry = supervisor()

    async def boom() -> None:
        raise KeyError("reason")

    first = sup.once("reload", boom())
    assert await first.wait(10)
    assert first.state == "failed" and sup.snapshot()["reload"]["failures"] == 1
    assert "task reload failed (KeyError: 'reason'); not restarted" in caplog.text
    assert failures(registry, "reload") == 1

    async def fine() -> None:
        return None

    second = sup.once("reload", fine())
    assert await second.wait(10)
    assert second.state == "done" and "reload" not in sup.snapshot()  # done: nothing to show


async def test_concurrent_one_shots_of_one_name_are_all_held() -> None:
    sup, _ = supervisor()
    gate = asyncio.Event()
    a, b = sup.once("reload", gate.wait()), sup.once("reload", gate.wait())
    assert sorted(sup.snapshot()) == ["reload", "reload#2"]
    assert a.name == b.name == "reload"
    gate.set()
    assert await a.wait(10) and await b.wait(10)
    assert sup.snapshot() == {}


async def test_a_one_shot_stopped_before_it_ran_leaves_no_unawaited_coroutine(recwarn) -> None:
    sup, _ = supervisor()
    handle = sup.once("never", asyncio.sleep(1))
    await handle.stop()
    import gc

    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_wake_cuts_a_restart_delay_short() -> None:
    sup, _ = supervisor(base_delay=3600.0, max_delay=3600.0)
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("x")
        await asyncio.Event().wait()

    handle = sup.start("sleepy", loop)
    await wait_for(lambda: handle.state == "restarting")
    handle.wake()
    await wait_for(lambda: runs == 2)
    await handle.stop()


async def test_stop_all_stops_what_owners_left() -> None:
    sup, _ = supervisor()
    handles = [sup.start(f"t{i}", lambda: asyncio.Event().wait()) for i in range(3)]
    await sup.stop_all()
    assert all(h.done() for h in handles) and sup.snapshot() == {}


async def test_stop_in_order_runs_every_step_whatever_fails(caplog) -> None:
    order: list[str] = []

    async def step(name: str, fail: bool = False) -> None:
        order.append(name)
        if fail:
            raise RuntimeError(name)

    await stop_in_order(
        [("a", lambda: step("a")), ("b", lambda: step("b", True)), ("c", lambda: step("c"))]
    )
    assert order == ["a", "b", "c"]
    assert "b failed to stop cleanly; stopping the rest" in caplog.text


@pytest.mark.parametrize(
    ("exc", "shown"),
    [
        (RuntimeError(), "RuntimeError"),
        (OSError("connect to http://u:hunter2@db:5432 failed"),
         "OSError: connect to http://u:<redacted>@db:5432 failed"),
        (ValueError("x" * 400), "ValueError: " + "x" * 285 + "..."),
    ],
)  # fmt: skip
def test_describe_is_short_and_keeps_passwords_out(exc: BaseException, shown: str) -> None:
    assert describe(exc) == shown
