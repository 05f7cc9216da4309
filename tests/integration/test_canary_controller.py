"""The canary controller end to end: real traffic through the gateway, time on a FakeClock."""

from __future__ import annotations

from pathlib import Path

from cutover.core.clock import FakeClock
from tests.integration.canary_helpers import (
    FlakyBackend,
    admin,
    canary_config,
    feature,
    start,
    started,
    traffic,
    weights,
)


async def test_candidate_with_5_percent_500s_is_rolled_back(tmp_path: Path) -> None:
    go, py = FlakyBackend("go", every=20), FlakyBackend("python")
    async with started(go, py):
        clock = FakeClock()
        # 10/200 against 0/200 is p ~ 1e-3: the mechanism at a stated confidence (the default,
        # p <= 1e-6, wants ~20 failures against none on samples this small and this even).
        canary = {"min_requests": 100, "confidence": 0.999}
        gw = await start(canary_config(go, py, tmp_path, canary=canary), clock)
        try:
            await traffic(gw, 200, force="go")
            await traffic(gw, 200, force="python")
            await feature(gw).tick()
            assert weights(gw) == {"go": 0, "python": 100}
            served = await traffic(gw, 50, users=True)
            assert set(served) == {"python"}  # sticky users went back with it
            status, body = await admin(gw, "GET", "/admin/canary")
            assert status == 200
            route = body["routes"][0]
            assert route["phase"] == "rolled_back" and route["latched"] is True
            assert route["verdict"]["status"] == "unhealthy"
            assert route["verdict"]["criterion"] == "error_rate"
            assert route["candidate"]["errors"] == 10 and route["candidate"]["requests"] == 200
            status, body = await admin(gw, "GET", "/admin/events?route=default")
            kinds = [e["kind"] for e in body["events"]]
            assert kinds[:2] == ["rollback", "verdict"]
            rollback = body["events"][0]
            assert rollback["actor"] == "controller"
            assert rollback["weights_before"] == {"go": 50, "python": 50}
            assert rollback["weights_after"] == {"go": 0, "python": 100}
            judged = rollback["figures"]["judged"]
            assert judged["candidate_errors"] == 10 and judged["baseline_errors"] == 0
            assert judged["z"] >= judged["z_critical"]
            assert "automatic rollback" in rollback["reason"]
            metrics = gw.metrics.exposition()[0].decode()
            assert 'cutover_canary_verdict{route="default",verdict="unhealthy"} 1.0' in metrics
            assert 'cutover_canary_weight{backend="go",route="default"} 0.0' in metrics
            # The latch: a healthy window later does not promote again.
            go.every = 0
            clock.advance(120)
            await traffic(gw, 150, force="go")
            await traffic(gw, 150, force="python")
            await feature(gw).tick()
            assert weights(gw) == {"go": 0, "python": 100}
        finally:
            await gw.close()


async def test_baseline_failing_alike_is_not_blamed_on_the_candidate(tmp_path: Path) -> None:
    go, py = FlakyBackend("go", every=20), FlakyBackend("python", every=20)
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path, canary={"min_requests": 100}), FakeClock())
        try:
            await traffic(gw, 200, force="go")
            await traffic(gw, 200, force="python")
            await feature(gw).tick()
            assert weights(gw) == {"go": 50, "python": 50}
            verdict = feature(gw).verdicts["default"]
            assert verdict.status == "healthy"
            assert (verdict.candidate.errors, verdict.baseline.errors) == (10, 10)
        finally:
            await gw.close()


async def test_fallback_does_not_hide_candidate_failures(tmp_path: Path) -> None:
    # go answers 503 to every 10th request; fallback python serves it: clients see 200 only.
    go, py = FlakyBackend("go", every=10, status=503), FlakyBackend("python")
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path, canary={"min_requests": 100}), FakeClock())
        try:
            served = await traffic(gw, 200, force="go")
            assert served.count("python") == 20  # the fallback answered those
            await traffic(gw, 200, force="python")
            await feature(gw).tick()
            assert feature(gw).verdicts["default"].candidate.errors == 20
            assert weights(gw) == {"go": 0, "python": 100}
        finally:
            await gw.close()


async def test_under_min_requests_nothing_happens(tmp_path: Path) -> None:
    go, py = FlakyBackend("go", every=1), FlakyBackend("python")  # go fails every request
    async with started(go, py):
        clock = FakeClock()
        data = canary_config(go, py, tmp_path, canary={"min_requests": 100, "steps": [50, 100]})
        gw = await start(data, clock)
        try:
            await traffic(gw, 99, force="go")
            await traffic(gw, 500, force="python")
            for _ in range(3):
                clock.advance(10)
                await feature(gw).tick()
            assert weights(gw) == {"go": 50, "python": 50}
            assert feature(gw).verdicts["default"].status == "insufficient_data"
            _, body = await admin(gw, "GET", "/admin/events")
            assert body["events"] == []
        finally:
            await gw.close()


async def test_promotion_walks_the_steps(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        clock = FakeClock()
        canary = {
            "min_requests": 20,
            "steps": [10, 50, 100],
            "step_interval": "30s",
            "step_min_requests": 20,
        }
        data = canary_config(go, py, tmp_path, split={"go": 10, "python": 90}, canary=canary)
        gw = await start(data, clock)
        try:
            seen = [weights(gw)["go"]]
            for _ in range(4):
                await traffic(gw, 25, force="go")
                await traffic(gw, 25, force="python")
                clock.advance(10)
                await feature(gw).tick()  # too early: min 30 s per step
                assert weights(gw)["go"] == seen[-1]
                clock.advance(21)
                await feature(gw).tick()
                seen.append(weights(gw)["go"])
            assert seen == [10, 50, 100, 100, 100]
            _, body = await admin(gw, "GET", "/admin/routes")
            route = body["routes"][0]
            assert route["phase"] == "promoted" and route["source"] == "controller"
            _, body = await admin(gw, "GET", "/admin/events")
            promotions = [e for e in body["events"] if e["kind"] == "promote"]
            assert [e["figures"]["to_weight"] for e in reversed(promotions)] == [50, 100]
            assert all(e["actor"] == "controller" for e in promotions)
            assert promotions[-1]["figures"]["requests_in_step"] >= 20
        finally:
            await gw.close()


async def test_ramp_down_over_the_configured_duration(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        clock = FakeClock()
        canary = {"rollback": {"mode": "ramp", "over": "10s"}}
        data = canary_config(
            go, py, tmp_path, split={"go": 40, "python": 60}, canary=canary,
            route={"sticky": {"header": "X-Request-User"}},
        )  # fmt: skip
        gw = await start(data, clock)
        try:
            status, body = await admin(gw, "POST", "/admin/rollback", {"reason": "p99 alert"})
            assert status == 200 and body["results"][0]["latched"] is True
            assert weights(gw)["go"] == 40  # a ramp starts where the candidate is
            before = await traffic(gw, 200, users=True)
            seen = []
            for _ in range(12):
                clock.advance(1)
                await feature(gw).tick()
                seen.append(weights(gw)["go"])
            assert seen == [36, 32, 28, 24, 20, 16, 12, 8, 4, 0, 0, 0]
            after = await traffic(gw, 200, users=True)
            assert set(after) == {"python"}
            assert "go" in before
            _, body = await admin(gw, "GET", "/admin/events")
            ramps = [e for e in body["events"] if e["kind"] == "ramp"]
            assert len(ramps) == 10
            assert "ramp-down complete" in ramps[0]["reason"]
            assert body["events"][-1]["kind"] == "rollback"
            assert "p99 alert" in body["events"][-1]["reason"]
        finally:
            await gw.close()


async def test_ramp_moves_sticky_users_only_back(tmp_path: Path) -> None:
    go, py = FlakyBackend("go"), FlakyBackend("python")
    async with started(go, py):
        clock = FakeClock()
        data = canary_config(
            go, py, tmp_path, split={"go": 50, "python": 50},
            canary={"rollback": {"mode": "ramp", "over": "4s"}},
            route={"sticky": {"header": "X-Request-User"}},
        )  # fmt: skip
        gw = await start(data, clock)
        try:
            await admin(gw, "POST", "/admin/rollback")
            previous = await traffic(gw, 150, users=True)
            for _ in range(4):
                clock.advance(1)
                await feature(gw).tick()
                now = await traffic(gw, 150, users=True)
                for old, new in zip(previous, now, strict=True):
                    assert not (old == "python" and new == "go")  # never towards the candidate
                previous = now
        finally:
            await gw.close()


async def test_a_candidate_ejected_for_its_failures_is_still_judged_and_rolled_back(
    tmp_path: Path,
) -> None:
    # go fails everything: after a few failures passive health ejects it, and the split sends
    # go's users to python. Those requests still count against go (unavailable), so the
    # verdict does not starve at insufficient_data while go sits ejected.
    go, py = FlakyBackend("go", every=1, status=503), FlakyBackend("python")
    async with started(go, py):
        gw = await start(canary_config(go, py, tmp_path, canary={"min_requests": 100}), FakeClock())
        try:
            served = await traffic(gw, 400, users=True)
            assert served.count("python") > 300, served.count("go")  # fallback, then ejection
            assert go.hits < 100  # ejected: most of go's share never reached it
            await feature(gw).tick()
            verdict = feature(gw).verdicts["default"]
            assert verdict.status == "unhealthy" and verdict.criterion == "error_rate"
            assert verdict.candidate.requests >= 150
            assert verdict.candidate.errors == verdict.candidate.requests
            assert verdict.baseline.errors == 0
            assert weights(gw) == {"go": 0, "python": 100}
            _, body = await admin(gw, "GET", "/admin/canary")
            route = body["routes"][0]
            assert route["phase"] == "rolled_back"
            # the p95 of go is its own answers only; python's did not land in go's histogram
            assert route["candidate"]["requests"] == verdict.candidate.requests
        finally:
            await gw.close()
