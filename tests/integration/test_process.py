"""The gateway as operators run it: a process, signals, workers, bounded memory."""

from __future__ import annotations

import asyncio
import collections
import json
import signal

import aiohttp
import pytest

from tests.conftest import gateway_config, wait_for

# Every test runs on both listener paths: proxy.fastpath and aiohttp alone.
pytestmark = pytest.mark.usefixtures("serving_path")


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


async def test_sigterm_drains_in_flight_requests(backends, gateway_process) -> None:
    go = await backends("go")
    gp = await gateway_process(gateway_config({"go": go.url})).ready()
    async with aiohttp.ClientSession() as s:
        slow = asyncio.create_task(s.get(gp.url + "/slow?delay=1.5"))
        await wait_for(lambda: go.hits == 1)
        gp.proc.send_signal(signal.SIGTERM)
        resp = await slow
        assert resp.status == 200
        assert (await resp.json())["backend"] == "go"
        resp.release()
    code = await asyncio.to_thread(gp.proc.wait, 20)
    assert code == 0, gp.output()
    assert "Traceback" not in gp.output()


async def test_request_durations_are_not_in_whole_milliseconds(
    backends, gateway_process, tmp_path
) -> None:
    # uvloop's loop.time() moves in whole milliseconds: durations measured with it would all be
    # whole numbers of ms (mostly 0) in the access log and the duration histogram
    go = await backends("go")
    log_path = tmp_path / "access.log"
    config = gateway_config({"go": go.url}, access_log={"enabled": True, "path": str(log_path)})
    gp = await gateway_process(config).ready()
    async with aiohttp.ClientSession() as s:
        for _ in range(20):
            async with s.get(gp.url + "/api/v1/history") as resp:
                assert resp.status == 200
                await resp.read()
    assert gp.stop() == 0, gp.output()  # the log is flushed on the way out
    durations = [
        json.loads(line)["duration_ms"] for line in log_path.read_text().splitlines() if line
    ]
    assert len(durations) == 20
    fractional = [d for d in durations if d != int(d)]
    assert len(fractional) >= 15, durations


async def test_sighup_reloads_and_bad_config_keeps_serving(backends, gateway_process) -> None:
    go, py = await backends("go"), await backends("python")
    config = gateway_config({"go": go.url, "python": py.url})
    gp = await gateway_process(config).ready()

    async def served_by() -> str:
        async with aiohttp.ClientSession() as s, s.get(gp.url + "/") as r:
            assert r.status == 200
            return r.headers["X-Cutover-Backend"]

    assert await served_by() == "go"
    gp.config_path.write_text("routes: [this is: not valid\n")
    gp.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    assert await served_by() == "go"
    assert "reload refused" in gp.output()

    config["routes"][0]["split"] = {"go": 0, "python": 100}
    config["storage"] = "sqlite:///elsewhere.db"  # cannot change in place: the reload says so
    config["workers"] = 3  # --workers 1 outranks the file: nothing to report
    gp.write_config(config)
    gp.proc.send_signal(signal.SIGHUP)
    seen: list[str] = []

    async def switched() -> bool:
        seen.append(await served_by())
        return seen[-1] == "python"

    for _ in range(100):
        if await switched():
            break
        await asyncio.sleep(0.05)
    assert seen[-1] == "python", gp.output()
    await wait_for(lambda: "storage: the store is connected at start" in gp.output())
    assert "takes effect after a restart" in gp.output()
    assert "workers:" not in gp.output()


async def test_a_sighup_while_the_worker_starts_is_applied_once_it_serves(
    backends, gateway_process
) -> None:
    # The port accepts connections before the gateway runs (the sockets are bound first): an
    # operator, or a test, who sees it open and sends SIGHUP must not kill the process.
    go, py = await backends("go"), await backends("python")
    config = gateway_config({"go": go.url, "python": py.url})
    gp = await gateway_process(config).ready()  # the port is open; the worker may still start
    config["routes"][0]["split"] = {"go": 0, "python": 100}
    gp.write_config(config)
    gp.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: "cutover serving on" in gp.output() or gp.proc.poll() is not None)
    assert gp.proc.poll() is None, gp.output()

    async def served_by() -> str:
        async with aiohttp.ClientSession() as s, s.get(gp.url + "/") as r:
            assert r.status == 200
            return r.headers["X-Cutover-Backend"]

    for _ in range(100):
        if await served_by() == "python":
            break
        await asyncio.sleep(0.05)
    assert await served_by() == "python", gp.output()


async def test_a_supervisor_reports_a_worker_count_changed_in_the_file(
    backends, gateway_process
) -> None:
    go = await backends("go")
    config = dict(gateway_config({"go": go.url}), workers=2)
    gp = await gateway_process(config, workers=None).ready()  # the count comes from the file
    await wait_for(lambda: "supervising 2 workers" in gp.output())
    config["workers"] = 3
    gp.write_config(config)
    gp.proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: "workers: 3 in the file, 2 running" in gp.output())
    async with aiohttp.ClientSession() as s, s.get(gp.url + "/") as r:
        assert r.status == 200  # the workers reloaded and serve on


async def test_two_workers_share_the_port(backends, gateway_process) -> None:
    go = await backends("go")
    gp = await gateway_process(gateway_config({"go": go.url}), workers=2).ready()
    statuses: collections.Counter[int] = collections.Counter()
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            await asyncio.sleep(0.3)
            for _ in range(50):
                async with s.get(gp.url + "/w") as r:
                    statuses[r.status] += 1
        await wait_for(lambda: go.hits >= 150)
        # /metrics sums every worker's counts. A worker books a request just after its last
        # byte left, and the client may already be asking the other worker (it reconnects when
        # it did not read a body to the end), so a scrape catches up within moments: poll.
        line = ""
        for _ in range(100):
            async with s.get(gp.url + "/metrics") as r:
                metrics = await r.text()
            line = next(m for m in metrics.splitlines() if m.startswith("cutover_requests_total{"))
            if float(line.rsplit(" ", 1)[1]) >= 150.0:
                break
            await asyncio.sleep(0.05)
    assert statuses == {200: 150}
    assert float(line.rsplit(" ", 1)[1]) == 150.0, line
    gp.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gp.proc.wait, 30) == 0


async def test_two_workers_mirror_counts_add_up_in_metrics(
    backends, gateway_process, tmp_path
) -> None:
    """Each worker counts its mirror copies in plain slots (`CounterSlots`); with two workers
    /metrics reads files, so the slots are folded into them: every request is counted once,
    queued, dropped or shed, whichever worker served it."""
    python, go = await backends("python"), await backends("go")
    route = {"mirror": {"to": "go", "percent": 100}}
    parity = {"mirror": {"queue": 1}}  # most copies find the mirror full: dropped
    config = gateway_config({"python": python.url, "go": go.url}, route=route, parity=parity,
                            storage=f"sqlite://{tmp_path}/state.db")  # fmt: skip
    gp = await gateway_process(config, workers=2).ready()
    sent = 120
    async with aiohttp.ClientSession() as s:
        for _ in range(sent):
            async with s.get(gp.url + "/w") as r:
                assert r.status == 200
        counts: dict[str, float] = {}
        for _ in range(200):
            async with s.get(gp.url + "/metrics") as r:
                metrics = await r.text()
            counts = {
                line.split('result="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("cutover_parity_mirror_requests_total{")
            }
            if sum(counts.values()) >= sent:
                break
            await asyncio.sleep(0.05)
    assert sum(counts.values()) == sent, counts
    assert counts.get("dropped", 0) > 0 and counts.get("queued", 0) > 0, counts
    gp.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gp.proc.wait, 30) == 0


async def test_50mib_streams_both_ways_with_bounded_memory(backends, gateway_process) -> None:
    go = await backends("go")
    gp = await gateway_process(
        gateway_config({"go": go.url}, limits={"max_body": "100MiB"})
    ).ready()
    size = 50 * 1024 * 1024
    async with aiohttp.ClientSession() as s:
        async with s.get(gp.url + "/warm") as r:
            await r.read()
        baseline = rss_kib(gp.proc.pid, "VmRSS")

        async def body():  # type: ignore[no-untyped-def]
            chunk = b"z" * 65536
            for _ in range(size // len(chunk)):
                yield chunk

        async with s.post(gp.url + "/upload", data=body()) as r:
            assert r.status == 200
            assert (await r.json())["body_bytes"] == size
        async with s.get(gp.url + f"/big/{size}") as r:
            got = 0
            async for chunk in r.content.iter_chunked(65536):
                got += len(chunk)
            assert got == size
        peak = rss_kib(gp.proc.pid, "VmHWM")
    assert peak - baseline < 24 * 1024, f"peak grew by {(peak - baseline) // 1024} MiB"
