"""Every background task, hit by a fault nobody foresaw: logged once with its name and
traceback, counted in cutover_task_failures_total, shown in /readyz, restarted, and its work
resumes. A registry test fails when a task appears that no test here covers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
import yaml

from cutover import demo
from cutover.app import gateway, start_gateway
from cutover.compat.store import read_usage
from cutover.core.clock import FakeClock
from cutover.core.db import StoreUnavailable, open_database
from cutover.parity.lag import LoopLag
from cutover.proxy.config import load_config, parse_config
from cutover.proxy.dashboard import DashboardFeature
from cutover.proxy.server import Gateway
from cutover.publishing.outbox import Outbox
from cutover.routing.health import HealthTable
from cutover.run import reload_in_background
from tests.conftest import EchoBackend, free_port, gateway_config, wait_for
from tests.integration import canary_helpers as canary
from tests.integration import test_publishing_kubernetes as kubernetes
from tests.integration.alerts_helpers import (
    PG_URL,
    AlertsGateway,
    TcpRelay,
    am_alert,
    envelope,
    fake_llm,
    intake_rows,
    llm_section,
)
from tests.integration.alerts_helpers import feature as alerts_feature
from tests.integration.parity_samples import samples
from tests.integration.publishing_fakes import FakeWebhook
from tests.integration.publishing_helpers import config as publishing_config
from tests.integration.publishing_helpers import engine, enqueue, make_alert
from tests.integration.publishing_helpers import feature as publishing_feature
from tests.integration.task_helpers import (
    INJECTED,
    Fault,
    assert_restarted,
    fast_restarts,
    readyz_tasks,
    task_failures,
)
from tests.integration.test_parity_mirror import config_for
from tests.integration.test_parity_mirror import feature as parity_feature

REDIS = "redis://127.0.0.1:6379/14"


async def eventually(check: Callable[[], Awaitable[bool]], deadline: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


@pytest.fixture
async def started() -> AsyncIterator[list[Gateway]]:
    gateways: list[Gateway] = []
    yield gateways
    for gw in gateways:
        await gw.close()


async def launch(gateways: list[Gateway], data: dict[str, Any], clock: Any = None) -> Gateway:
    """A gateway whose failed tasks restart after 50 ms, from its very start."""
    gw = gateway(parse_config(data, "test.yaml"), clock)
    fast_restarts(gw)
    gateways.append(gw)
    await gw.start()
    return gw


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    p = f"cutover:test-{uuid.uuid4().hex[:10]}:"
    yield p
    r = aioredis.Redis.from_url(REDIS)
    keys = [k async for k in r.scan_iter(match=p + "*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


# -- the gateway's own ---------------------------------------------------------------------------


async def test_health_check(backends, started, monkeypatch, caplog) -> None:
    go = await backends("go")
    gw = await launch(started, gateway_config({"go": go.url}))
    Fault(monkeypatch, HealthTable, "record_check")  # slots: patched on the class
    await assert_restarted(gw, "health-check:go", caplog)
    await go.stop()  # a check after the fault marks the backend down
    await wait_for(
        lambda: not gw.health.snapshot(gw.clock.monotonic(), gw.clock.now())["go"]["healthy"]
    )


async def test_reload(backends, tmp_path, monkeypatch, caplog) -> None:
    go, py = await backends("go"), await backends("python")
    data = gateway_config({"go": go.url, "python": py.url})
    path = tmp_path / "cutover.yaml"
    path.write_text(yaml.safe_dump(data))
    gw = await start_gateway(load_config(path))
    try:
        Fault(monkeypatch, gw, "reload")
        handle = reload_in_background(gw, str(path))  # what SIGHUP does
        assert await handle.wait(10)
        shown = (await readyz_tasks(gw))["reload"]
        assert shown["state"] == "failed" and shown["failures"] == 1
        assert shown["last_error"] == INJECTED and task_failures(gw, "reload") == 1
        [record] = [r for r in caplog.records if r.getMessage().startswith("task reload failed")]
        assert record.getMessage() == f"task reload failed ({INJECTED}); not restarted"
        assert record.exc_info is not None
        # the next SIGHUP reloads
        data["routes"][0]["split"] = {"go": 0, "python": 100}
        path.write_text(yaml.safe_dump(data))
        assert await reload_in_background(gw, str(path)).wait(10)
        assert dict(gw.state.tables["default"].weights) == {"go": 0, "python": 100}
        assert "reload" not in await readyz_tasks(gw)  # done: nothing left to show
    finally:
        await gw.close()


async def test_close_retired_pools(backends, started, monkeypatch, caplog) -> None:
    go, other = await backends("go"), await backends("other")
    data = gateway_config({"go": go.url}, limits={"drain_timeout": "50ms"})
    gw = await launch(started, data)
    first = gw.state.upstreams["go"]
    Fault(monkeypatch, first, "close")
    await gw.reload(parse_config(gateway_config({"go": other.url}, **{"limits": data["limits"]}),
                                 "test.yaml"))  # fmt: skip
    await wait_for(lambda: task_failures(gw, "close-retired-pools") == 1)
    shown = (await readyz_tasks(gw))["close-retired-pools"]
    assert shown["state"] == "failed" and shown["last_error"] == INJECTED
    assert "task close-retired-pools failed (RuntimeError: injected fault); not restarted" in (
        caplog.text
    )
    # the next reload's retired pool is closed
    second = gw.state.upstreams["go"]
    await gw.reload(parse_config(data, "test.yaml"))
    await wait_for(lambda: second.session.closed)
    await first.close()  # the pool whose close failed (the fault is spent)


# -- features --------------------------------------------------------------------------------


async def test_canary_controller(tmp_path, started, monkeypatch, caplog) -> None:
    go, py = canary.FlakyBackend("go", every=20), canary.FlakyBackend("python")
    async with canary.started(go, py):
        # 10/200 against 0/200 is p ~ 1e-3: significant at this confidence, not the default's
        options = {"min_requests": 100, "confidence": 0.999}
        data = canary.canary_config(go, py, tmp_path, canary=options)
        gw = await launch(started, data, FakeClock())
        Fault(monkeypatch, canary.feature(gw), "tick")
        await assert_restarted(gw, "canary-controller", caplog)
        await canary.traffic(gw, 200, force="go")
        await canary.traffic(gw, 200, force="python")
        # a window after the fault is judged: 5% errors on the candidate roll it back
        await wait_for(lambda: canary.weights(gw) == {"go": 0, "python": 100}, deadline=20)


async def test_shared_state_poll(tmp_path, started, monkeypatch, caplog) -> None:
    go, py = canary.FlakyBackend("go"), canary.FlakyBackend("python")
    async with canary.started(go, py):
        data = canary.canary_config(go, py, tmp_path)
        a, b = await launch(started, data), await launch(started, data)
        canary.feature(a).ticking = canary.feature(b).ticking = False
        Fault(monkeypatch, canary.feature(a).shared, "load_all")
        await assert_restarted(a, "shared-state-poll", caplog)
        body = {"go": 10, "python": 90}
        assert (await canary.admin(b, "PUT", "/admin/routes/default/weights", body))[0] == 200
        await wait_for(lambda: canary.weights(a) == body)  # a read after the fault


async def test_shared_state_redis(tmp_path, started, prefix, monkeypatch, caplog) -> None:
    go, py = canary.FlakyBackend("go"), canary.FlakyBackend("python")
    async with canary.started(go, py):
        options = {"canary": {"redis_prefix": prefix}, "redis": REDIS}
        a = await launch(started, canary.canary_config(go, py, tmp_path / "a", **options))
        b = await launch(started, canary.canary_config(go, py, tmp_path / "b", **options))
        canary.feature(a).ticking = canary.feature(b).ticking = False
        Fault(monkeypatch, canary.feature(a).shared, "get")  # on the next change announced
        body = {"go": 20, "python": 80}
        assert (await canary.admin(b, "PUT", "/admin/routes/default/weights", body))[0] == 200
        await assert_restarted(a, "shared-state-redis", caplog)
        await wait_for(lambda: canary.weights(a) == body)  # the restart read it again
        body = {"go": 30, "python": 70}
        assert (await canary.admin(b, "PUT", "/admin/routes/default/weights", body))[0] == 200
        await wait_for(lambda: canary.weights(a) == body)  # and hears of the next one


async def test_shared_state_reconnect(tmp_path, started, monkeypatch, caplog) -> None:
    go, py = canary.FlakyBackend("go"), canary.FlakyBackend("python")
    relay = await TcpRelay().start()
    schema = f"tk_{uuid.uuid4().hex[:10]}"
    direct = await open_database(PG_URL, schema=schema)  # creates the schema
    try:
        async with canary.started(go, py):
            url = PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
            data = canary.canary_config(go, py, tmp_path, db=f"{url}?search_path={schema}")
            a = await launch(started, data)
            canary.feature(a).ticking = False
            shared = canary.feature(a).shared
            assert shared is not None
            Fault(monkeypatch, shared, "_on_reconnect")
            await relay.stop()
            await wait_for(lambda: not shared.connected)
            await relay.start()
            await wait_for(lambda: task_failures(a, "shared-state-reconnect") == 1)
            shown = (await readyz_tasks(a))["shared-state-reconnect"]
            assert shown["state"] == "failed" and shown["last_error"] == INJECTED
            assert "task shared-state-reconnect failed (RuntimeError: injected fault); not" \
                " restarted" in caplog.text  # fmt: skip
            # the poll goes on: a change made by another worker is applied
            b = await launch(started, canary.canary_config(go, py, tmp_path / "b", db=data[
                "storage"]))  # fmt: skip
            canary.feature(b).ticking = False
            body = {"go": 40, "python": 60}
            assert (await canary.admin(b, "PUT", "/admin/routes/default/weights", body))[0] == 200
            await wait_for(lambda: canary.weights(a) == body)
    finally:
        for gw in started:
            await gw.close()
        started.clear()
        await relay.stop()
        await direct.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await direct.close()


async def test_compat_usage_flush(backends, tmp_path, started, monkeypatch, caplog) -> None:
    go, legacy = await backends("go"), await backends("legacy")
    data = gateway_config(
        {"go": go.url, "legacy": legacy.url}, storage=f"sqlite:///{tmp_path}/s.db"
    )
    data["compat"] = {
        "backends": {"new": "go", "legacy": "legacy"},
        "usage": {"flush_interval": "100ms"},
        "rules": [{"name": "removed", "match": {"path": "/old/{rest*}"}, "gone": {}}],
    }
    gw = await launch(started, data)
    compat = gw.compat
    assert compat is not None
    Fault(monkeypatch, compat, "flush")
    await assert_restarted(gw, "compat-usage-flush", caplog)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/old/thing") as resp:
        assert resp.status == 410
    db = await gw.database()

    async def landed() -> bool:
        with contextlib.suppress(StoreUnavailable):  # no table before the first write
            return [(r["rule"], r["count"]) for r in await read_usage(db)] == [("removed", 1)]
        return False

    await eventually(landed)


async def test_alerts_worker(tmp_path, monkeypatch, caplog) -> None:
    helper = AlertsGateway(tmp_path)
    try:
        async with fake_llm() as llm:
            gw = await helper.start({"classification": llm_section(llm)})
            fast_restarts(gw)
            Fault(monkeypatch, alerts_feature(gw), "run_once")
            await assert_restarted(gw, "alerts-worker", caplog)
            async with aiohttp.ClientSession() as http:
                payload = envelope(am_alert("AfterTheFault", run=uuid.uuid4().hex))
                async with http.post(gw.url + "/webhook/proxy", json=payload) as resp:
                    assert (await resp.json())["alerts"][0]["result"] == "classifying"

            async def classified() -> bool:
                rows = await intake_rows(gw)
                return [r["state"] for r in rows] == ["queued"]

            await eventually(classified)
            assert llm.calls == 1
    finally:
        await helper.close()


async def test_alerts_intake_batcher(tmp_path, monkeypatch, caplog) -> None:
    """A bug in a batch's commit: its webhook gets 503 (nothing stored), the batcher is
    counted and started again, and the next webhook is stored."""
    helper = AlertsGateway(tmp_path)
    try:
        gw = await helper.start({})
        fast_restarts(gw)
        Fault(monkeypatch, alerts_feature(gw), "_accept_batch")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gw.url + "/webhook/proxy", json=envelope(am_alert("DuringTheFault"))
            ) as resp:
                assert resp.status == 503
                assert (await resp.json())["error"]["code"] == "intake_failed"
            await assert_restarted(gw, "alerts-intake-batcher", caplog)
            async with http.post(
                gw.url + "/webhook/proxy", json=envelope(am_alert("AfterTheFault"))
            ) as resp:
                assert resp.status == 200
        assert [r["alertname"] for r in await intake_rows(gw)] == ["AfterTheFault"]
    finally:
        await helper.close()


async def test_alerts_mode(tmp_path, monkeypatch, caplog) -> None:
    helper = AlertsGateway(tmp_path)
    r = aioredis.Redis.from_url(REDIS)
    await r.delete("enrichment:mode")
    try:
        gw = await helper.start({}, redis=REDIS)
        fast_restarts(gw)
        feature = alerts_feature(gw)
        Fault(monkeypatch, feature, "_refresh_mode")
        await assert_restarted(gw, "alerts-mode", caplog)
        await r.set("enrichment:mode", orjson.dumps({"mode": "transparent"}))
        await wait_for(lambda: feature.mode == "transparent")  # a read after the fault
    finally:
        await helper.close()
        await r.delete("enrichment:mode")
        await r.aclose()


async def test_dashboard(backends, started, monkeypatch, caplog) -> None:
    go = await backends("go")
    gw = await launch(started, gateway_config({"go": go.url}, admin={"listen": "127.0.0.1:0"}))
    feature = next(f for f in gw.features if isinstance(f, DashboardFeature))
    Fault(monkeypatch, feature, "tick")
    await assert_restarted(gw, "dashboard", caplog)
    rolled = feature.series.second
    await wait_for(lambda: feature.series.second != rolled)  # the ring rolls again


async def test_parity_mirror(tmp_path, started, monkeypatch, caplog) -> None:
    """The gateway's own mirror worker (`process: false`)."""
    async with samples() as (primary, candidate):
        mirror = {"workers": 1, "process": False}
        gw = await launch(started, config_for(primary, candidate, tmp_path,
                                              parity={"mirror": mirror}))  # fmt: skip
        feature = parity_feature(gw)
        Fault(monkeypatch, feature, "_book")
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/alerts/1") as resp:
                assert resp.status == 200
            await assert_restarted(gw, "parity-mirror-0", caplog)
            async with http.get(gw.url + "/alerts/2") as resp:
                assert resp.status == 200
        await wait_for(lambda: feature.parity_reading("default").compared == 1)  # compared


async def test_parity_mirror_process(tmp_path, started, caplog) -> None:
    """The mirror process killed (-9) while it holds a copy: that copy is counted as dropped,
    the task is counted and started again with a new process, and the next copy is compared;
    clients never notice."""
    async with samples() as (primary, candidate):
        candidate.gate = asyncio.Event()  # the candidate holds the copy: the child holds the job
        gw = await launch(started, config_for(primary, candidate, tmp_path))
        feature = parity_feature(gw)
        process = feature.process
        assert process is not None and process.pid is not None
        first = process.pid
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/alerts/1") as resp:
                assert resp.status == 200
            await wait_for(lambda: len(candidate.seen) == 1)
            assert feature.in_flight()["mirror.process"] == 1
            os.kill(first, signal.SIGKILL)
            exited = "MirrorProcessExited: the mirror process exited (-9)"
            await assert_restarted(gw, "parity-mirror-process", caplog, error=exited)
            dropped = {"route": "default", "result": "dropped"}
            name = "cutover_parity_mirror_requests_total"
            assert gw.metrics.registry.get_sample_value(name, dropped) == 1.0
            candidate.gate.set()
            await wait_for(lambda: process.pid not in (None, first), deadline=30)
            async with http.get(gw.url + "/alerts/2") as resp:
                assert resp.status == 200
        await wait_for(lambda: feature.parity_reading("default").compared == 1, deadline=30)
        assert feature.in_flight()["mirror.process"] == 0
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)  # the killed child was reaped, not left a zombie


async def test_a_stopped_mirror_process_is_killed_and_started_again(
    tmp_path, started, caplog
) -> None:
    """A child that stops answering (SIGSTOP: hung, or given no CPU at all) holds its jobs
    forever and would drop every later copy: once its oldest job is held past the stall
    deadline (on the gateway's clock) it is killed and started again."""
    clock = FakeClock()
    async with samples() as (primary, candidate):
        gw = await launch(started, config_for(primary, candidate, tmp_path), clock)
        feature = parity_feature(gw)
        process = feature.process
        assert process is not None and process.pid is not None
        first = process.pid
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/alerts/1") as resp:  # the child is up and answers
                assert resp.status == 200
            await wait_for(lambda: feature.parity_reading("default").compared == 1, deadline=30)
            os.kill(first, signal.SIGSTOP)
            try:
                for i in range(3):
                    async with http.get(gw.url + f"/alerts/{i + 2}") as resp:
                        assert resp.status == 200
                await wait_for(lambda: process.in_flight == 3)
                clock.advance(process.stall_after - 1)
                await asyncio.sleep(1.5)  # the watchdog looked: not yet
                assert process.pid == first and process.in_flight == 3
                clock.advance(2)
                error = (
                    f"MirrorProcessExited: the mirror process held a copy for"
                    f" {process.stall_after + 1:.0f}s (stopped, or given no CPU at all): killed"
                )
                await assert_restarted(gw, "parity-mirror-process", caplog, error=error)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(first, signal.SIGCONT)
            dropped = {"route": "default", "result": "dropped"}
            name = "cutover_parity_mirror_requests_total"
            assert gw.metrics.registry.get_sample_value(name, dropped) == 3.0
            await wait_for(lambda: process.pid not in (None, first), deadline=30)
            async with http.get(gw.url + "/alerts/5") as resp:
                assert resp.status == 200
        await wait_for(lambda: feature.parity_reading("default").compared == 2, deadline=30)
        assert process.in_flight == 0


async def test_parity_results(tmp_path, started, monkeypatch, caplog) -> None:
    """A bug in the results writer's commit: that result is not stored (counted), the writer
    is counted and started again, and the next result is stored."""
    async with samples() as (primary, candidate):
        mirror = {"shed_lag": "off", "process": False}  # the mirror process writes its own
        data = config_for(primary, candidate, tmp_path, parity={"mirror": mirror})
        gw = await launch(started, data)
        feature = parity_feature(gw)
        Fault(monkeypatch, feature, "_insert_results")
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/alerts/1") as resp:
                assert resp.status == 200
            await assert_restarted(gw, "parity-results", caplog)
            async with http.get(gw.url + "/alerts/2") as resp:
                assert resp.status == 200
        errors = "cutover_parity_store_errors_total"
        await wait_for(lambda: gw.metrics.registry.get_sample_value(errors) == 1.0)  # the bug's
        await wait_for(
            lambda: any(i is not None for i, _ in feature.book.windows.get("default", ()))
        )
        stored = await (await feature._database()).fetch("SELECT path FROM parity_results")
        assert [r["path"] for r in stored] == ["/alerts/2"]


async def test_parity_capture(tmp_path, started, monkeypatch, caplog) -> None:
    corpus = tmp_path / "captured.jsonl"
    async with samples() as (primary, candidate):
        route = {"mirror": "off", "capture": {"file": str(corpus)}}
        gw = await launch(started, config_for(primary, candidate, tmp_path, route))
        Fault(monkeypatch, parity_feature(gw), "_write_captures")
        async with aiohttp.ClientSession() as http:
            async with http.get(gw.url + "/alerts/1") as resp:
                assert resp.status == 200
            await assert_restarted(gw, "parity-capture", caplog)
            async with http.get(gw.url + "/alerts/2") as resp:
                assert resp.status == 200
        await wait_for(lambda: corpus.exists() and "/alerts/2" in corpus.read_text())


async def test_parity_refresh(tmp_path, started, monkeypatch, caplog) -> None:
    """The own workers' window reads (the mirror process reads into its own)."""
    monkeypatch.setattr("cutover.parity.shadow.REFRESH_SECONDS", 0.2)
    async with samples() as (primary, candidate):
        data = config_for(primary, candidate, tmp_path, parity={"mirror": {"process": False}})
        a, b = await launch(started, data), await launch(started, data)
        Fault(monkeypatch, parity_feature(a).book, "latest_rows")
        await assert_restarted(a, "parity-refresh", caplog)
        async with aiohttp.ClientSession() as http, http.get(b.url + "/alerts/3") as resp:
            assert resp.status == 200  # compared and stored by the other worker
        await wait_for(lambda: parity_feature(a).parity_reading("default").compared == 1)


async def test_parity_lag(tmp_path, started, monkeypatch, caplog) -> None:
    async with samples() as (primary, candidate):
        gw = await launch(started, config_for(primary, candidate, tmp_path))
        feature = parity_feature(gw)
        Fault(monkeypatch, LoopLag, "observe")
        await assert_restarted(gw, "parity-lag", caplog)
        probes = feature.lag.probes
        await wait_for(lambda: feature.lag.probes > probes)  # probing again after the restart
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/alerts/1") as resp:
            assert resp.status == 200
        await wait_for(lambda: feature.parity_reading("default").compared == 1)  # still mirrored


# -- publishing ----------------------------------------------------------------------------------


FAST = {"backoff": {"base": "20ms", "cap": "100ms"}, "poll_interval": "50ms"}


def hook_target(hook: FakeWebhook) -> dict[str, Any]:
    return {"name": "wh", "type": "webhook", "url": hook.url + "/hook", "rate_limit": "off"}


async def test_publishing_start(tmp_path, started, services, monkeypatch, caplog) -> None:
    hook = await services(FakeWebhook)
    Fault(monkeypatch, Outbox, "setup")  # the first start fails before the engine runs
    gw = await launch(started, publishing_config(tmp_path, {"targets": [hook_target(hook)],
                                                            "delivery": FAST}))  # fmt: skip
    await assert_restarted(gw, "publishing-start", caplog, states=("done",))
    await wait_for(lambda: engine(gw).state.value == "running")
    await enqueue(gw, make_alert("fp-after-start"), ["wh"])
    await wait_for(lambda: len(hook.accepted) == 1)


async def test_publishing_delivery(tmp_path, started, services, monkeypatch, caplog) -> None:
    hook = await services(FakeWebhook)
    data = publishing_config(tmp_path, {"targets": [hook_target(hook)], "delivery": FAST})
    gw = await launch(started, data)
    Fault(monkeypatch, engine(gw), "_tick")
    await assert_restarted(gw, "publishing-delivery", caplog)
    await enqueue(gw, make_alert("fp-after-tick"), ["wh"])  # a job enqueued after the fault
    await wait_for(lambda: len(hook.accepted) == 1)


async def test_publishing_completions(tmp_path, started, services, monkeypatch, caplog) -> None:
    hook = await services(FakeWebhook)
    data = publishing_config(tmp_path, {"targets": [hook_target(hook)], "delivery": FAST})
    gw = await launch(started, data)
    outbox = engine(gw).outbox
    Fault(monkeypatch, outbox._completions(), "due_in")
    await enqueue(gw, make_alert("fp-first"), ["wh"])  # its completion meets the fault
    await assert_restarted(gw, "publishing-completions", caplog)
    [job] = await enqueue(gw, make_alert("fp-second"), ["wh"])
    await wait_for(lambda: len(hook.accepted) == 2)
    db = await gw.database()

    async def deleted() -> bool:  # read straight, without the flush a read would do first
        return await db.fetchval("SELECT COUNT(*) FROM publishing_jobs") == 0

    await eventually(deleted)
    assert not outbox.completing(job)


async def test_shutdown_with_a_dead_task_flushes_then_closes_the_store_last(
    tmp_path, services, monkeypatch, caplog
) -> None:
    """A discovery watch has died (and waits an hour to restart); a job was delivered just
    before SIGTERM and waits for its batched deletion: the engine still stops and flushes it,
    and the store closes after that."""
    hook = await services(FakeWebhook)
    k8s = await kubernetes.FakeKubernetes().start()
    try:
        kube = {"namespaces": ["default"], "selectors": [kubernetes.SELECTOR],
                "kubeconfig": k8s.kubeconfig(tmp_path / "kc")}  # fmt: skip
        held = {**FAST, "lease": "1h", "completions": {"batch": 10_000, "interval": "36s"}}
        data = publishing_config(
            tmp_path, {"targets": [hook_target(hook)], "delivery": held, "kubernetes": kube}
        )
        k8s.answers = ["list"]  # the watch dies at once
        gw = gateway(parse_config(data, "test.yaml"))
        gw.tasks.base_delay = gw.tasks.max_delay = 3600.0
        await gw.start()
        watch = gw.tasks.get(kubernetes.WATCH)
        assert watch is not None
        await wait_for(lambda: watch.state == "restarting")
        [job] = await enqueue(gw, make_alert("fp-last"), ["wh"])
        outbox = engine(gw).outbox
        await wait_for(lambda: outbox.completing(job))  # delivered; its deletion waits
        running = [t.key for t in gw.tasks]
        order: list[str] = []
        db = await gw.database()
        stop_completions, close = outbox.stop_completions, db.close

        async def flushed() -> None:
            await stop_completions()
            order.append("flush")

        async def closed() -> None:
            order.append("close")
            await close()

        monkeypatch.setattr(outbox, "stop_completions", flushed)
        monkeypatch.setattr(db, "close", closed)
        caplog.clear()
        caplog.set_level(logging.INFO, "cutover.tasks")
        await gw.close()
        assert order == ["flush", "close"]
        outcomes = [r.getMessage() for r in caplog.records if r.name == "cutover.tasks"]
        for key in running:  # each task's outcome, once
            assert len([m for m in outcomes if m.startswith(f"task {key} stopped")]) == 1, key
        assert f"task {kubernetes.WATCH} stopped after 1 failures (0 restarts)" in caplog.text
        assert "failed to stop cleanly" not in caplog.text
        store = await open_database(data["storage"])
        try:
            assert await store.fetchval("SELECT COUNT(*) FROM publishing_jobs") == 0
        finally:
            await store.close()
        assert len(hook.accepted) == 1
    finally:
        await k8s.stop()


async def test_a_stop_step_that_raises_never_skips_the_flush(
    tmp_path, services, monkeypatch, caplog
) -> None:
    """Discovery's stop raises: the engine still stops and flushes, the watches it left are
    stopped by the gateway, and the store closes last."""
    hook = await services(FakeWebhook)
    k8s = await kubernetes.FakeKubernetes().start()
    try:
        kube = {"namespaces": ["default"], "selectors": [kubernetes.SELECTOR],
                "kubeconfig": k8s.kubeconfig(tmp_path / "kc")}  # fmt: skip
        held = {**FAST, "lease": "1h", "completions": {"batch": 10_000, "interval": "36s"}}
        data = publishing_config(
            tmp_path, {"targets": [hook_target(hook)], "delivery": held, "kubernetes": kube}
        )
        gw = await start_gateway(parse_config(data, "test.yaml"))
        [job] = await enqueue(gw, make_alert("fp-last"), ["wh"])
        outbox = engine(gw).outbox
        await wait_for(lambda: outbox.completing(job))
        discovery = publishing_feature(gw).discovery
        assert discovery is not None
        Fault(monkeypatch, discovery, "stop")
        watch = gw.tasks.get(kubernetes.WATCH)
        assert watch is not None
        order: list[str] = []
        db = await gw.database()
        close = db.close

        async def closed() -> None:
            order.append("watch stopped" if watch.done() else "watch running")
            order.append(f"jobs left: {await db.fetchval('SELECT COUNT(*) FROM publishing_jobs')}")
            await close()

        monkeypatch.setattr(db, "close", closed)
        await gw.close()
        assert order == ["watch stopped", "jobs left: 0"]
        assert "feature publishing" not in caplog.text  # the feature's own steps went on
        assert "kubernetes discovery failed to stop cleanly; stopping the rest" in caplog.text
        await discovery.stop()  # what the failed stop left: its API client
    finally:
        await k8s.stop()


# -- the demo ----------------------------------------------------------------------------------


async def test_demo_summary_and_traffic(monkeypatch, caplog) -> None:
    lines: list[str] = []
    monkeypatch.setattr(demo, "_print", lines.append)
    monkeypatch.setattr(demo, "SUMMARY_INTERVAL", 0.1)
    Fault(monkeypatch, demo, "format_summary")  # the first summary fails
    monkeypatch.setattr(demo, "TRAFFIC_RATE", 0)  # the traffic loop divides by zero
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    running = asyncio.create_task(demo.run_demo(port=port, traffic=True))
    try:

        async def shown(task: str) -> dict[str, Any] | None:
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
                    return (await resp.json())["tasks"].get(task)
            return None

        async def traffic_failed() -> bool:
            return bool((await shown("demo-traffic") or {}).get("failures"))

        await eventually(traffic_failed)
        monkeypatch.setattr(demo, "TRAFFIC_RATE", 20)  # the restart after the fault sends
        await wait_for(lambda: any(line.startswith("traffic: ") for line in lines), deadline=20)
        traffic = await shown("demo-traffic")
        summary = await shown("demo-summary")
        assert traffic is not None and summary is not None
        assert traffic["last_error"] == "ZeroDivisionError: float division by zero"
        assert traffic["restarts"] >= 1 and summary["restarts"] == 1
        assert summary["last_error"] == INJECTED and summary["failures"] == 1
        async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
            metrics = await resp.text()
        assert 'cutover_task_failures_total{task="demo-summary"} 1.0' in metrics
        assert "task demo-summary failed (RuntimeError: injected fault); restarting in" in (
            caplog.text
        )
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


# -- every task has a test -----------------------------------------------------------------------

# Each kind of background task, and the test above (or in the named module) that faults it.
COVERED: dict[str, tuple[Any, str]] = {
    "health-check": (None, "test_health_check"),
    "reload": (None, "test_reload"),
    "close-retired-pools": (None, "test_close_retired_pools"),
    "canary-controller": (None, "test_canary_controller"),
    "shared-state-poll": (None, "test_shared_state_poll"),
    "shared-state-redis": (None, "test_shared_state_redis"),
    "shared-state-reconnect": (None, "test_shared_state_reconnect"),
    "compat-usage-flush": (None, "test_compat_usage_flush"),
    "alerts-worker": (None, "test_alerts_worker"),
    "alerts-mode": (None, "test_alerts_mode"),
    "alerts-intake-batcher": (None, "test_alerts_intake_batcher"),
    "dashboard": (None, "test_dashboard"),
    "parity-mirror": (None, "test_parity_mirror"),
    "parity-mirror-process": (None, "test_parity_mirror_process"),
    "parity-capture": (None, "test_parity_capture"),
    "parity-results": (None, "test_parity_results"),
    "parity-refresh": (None, "test_parity_refresh"),
    "parity-lag": (None, "test_parity_lag"),
    "publishing-start": (None, "test_publishing_start"),
    "publishing-delivery": (None, "test_publishing_delivery"),
    "publishing-completions": (None, "test_publishing_completions"),
    "k8s-watch": (kubernetes, "test_a_watch_answering_a_list_is_logged_restarted_and_lists_again"),
    "k8s-resync": (kubernetes, "test_the_resync_restarts_after_an_unexpected_failure"),
    "demo-summary": (None, "test_demo_summary_and_traffic"),
    "demo-traffic": (None, "test_demo_summary_and_traffic"),
}


def kind(name: str) -> str:
    """`health-check:go` -> `health-check`, `parity-mirror-3` -> `parity-mirror`."""
    return re.sub(r"(#\d+|-\d+|:.*)$", "", name)


@pytest.mark.parametrize("task", sorted(COVERED))
def test_every_covered_task_names_a_test(task: str) -> None:
    module, test = COVERED[task]
    assert callable(getattr(module or __import__(__name__, fromlist=["_"]), test, None)), test


async def test_every_task_of_a_gateway_with_everything_on_has_a_test(
    tmp_path, started, prefix
) -> None:
    go, py = EchoBackend("go"), EchoBackend("python")
    k8s = await kubernetes.FakeKubernetes().start()
    try:
        await go.start()
        await py.start()
        data = canary.canary_config(go, py, tmp_path, canary={"redis_prefix": prefix},
                                    redis=REDIS)  # fmt: skip
        data["routes"][0]["mirror"] = {"to": "go", "percent": 1}
        data["routes"][0]["capture"] = {"file": str(tmp_path / "corpus.jsonl"), "percent": 1}
        data["compat"] = {
            "backends": {"new": "go", "legacy": "python"},
            "rules": [{"name": "removed", "match": {"path": "/old/{rest*}"}, "gone": {}}],
        }
        data["publishing"] = {
            "kubernetes": {"namespaces": ["default"], "kubeconfig": k8s.kubeconfig(tmp_path / "kc")}
        }
        data["alerts"] = {}  # fmt: skip
        gw = await launch(started, data)
        await wait_for(lambda: any(t.name.startswith("k8s-watch") for t in gw.tasks))
        kinds = {kind(t.name) for t in gw.tasks}
        always = {
            "health-check", "canary-controller", "shared-state-redis", "compat-usage-flush",
            "alerts-worker", "alerts-mode", "alerts-intake-batcher", "parity-mirror-process",
            "parity-capture", "parity-refresh", "parity-lag", "parity-results",
            "publishing-start", "publishing-delivery", "publishing-completions", "k8s-watch",
            "k8s-resync",
        }  # fmt: skip
        assert kinds >= always  # the gateway runs them all, so the check below means something
        assert kinds <= set(COVERED), f"no fault test for {sorted(kinds - set(COVERED))}"
        assert set(await readyz_tasks(gw)) == {t.key for t in gw.tasks}
    finally:
        for gw in started:
            await gw.close()
        started.clear()
        await k8s.stop()
        await go.stop()
        await py.stop()


async def test_a_failing_classification_leaves_none_running_on_its_own(
    tmp_path, monkeypatch
) -> None:
    """The worker's batch: one row fails, the others finish before the failure goes up."""
    helper = AlertsGateway(tmp_path)
    try:
        async with fake_llm() as llm:
            gw = await helper.start({"classification": llm_section(llm)})
            worker = gw.tasks.get("alerts-worker")
            assert worker is not None
            await worker.stop()  # this test runs the batch itself
            feature = alerts_feature(gw)
            async with aiohttp.ClientSession() as http:
                for name in ("One", "Two"):
                    payload = envelope(am_alert(name, run=uuid.uuid4().hex))
                    async with http.post(gw.url + "/webhook/proxy", json=payload) as resp:
                        assert (await resp.json())["alerts"][0]["result"] == "classifying"
            finished: list[str] = []
            classify_row = feature._classify_row

            async def one_fails(db: Any, outbox: Any, row: dict[str, Any]) -> None:
                if not finished and row["id"] == 1:
                    finished.append("failed")
                    raise RuntimeError("injected fault")
                await asyncio.sleep(0.2)
                await classify_row(db, outbox, row)
                finished.append("classified")

            monkeypatch.setattr(feature, "_classify_row", one_fails)
            with pytest.raises(RuntimeError, match="injected fault"):
                await feature.run_once()
            assert finished == ["failed", "classified"]
    finally:
        await helper.close()
