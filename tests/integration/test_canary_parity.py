"""The parity gate end to end: a real mirror compares the candidate's answers; promotion waits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from cutover.core.clock import FakeClock
from cutover.parity.shadow import ParityFeature
from cutover.proxy.server import Gateway
from tests.conftest import EchoBackend, wait_for
from tests.integration.canary_helpers import (
    admin,
    canary_config,
    feature,
    start,
    started,
    traffic,
    weights,
)


class Answering(EchoBackend):
    """Answers `{"answer": N}`; mirrored copies can be held until released."""

    def __init__(self, name: str, answer: int = 1) -> None:
        super().__init__(name)
        self.answer = answer
        self.hold_mirror: asyncio.Event | None = None
        self.mirrored = 0

    async def echo(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        await request.read()
        if "X-Cutover-Mirror" in request.headers:
            self.mirrored += 1
            if self.hold_mirror is not None:
                await self.hold_mirror.wait()
        return web.json_response({"answer": self.answer})


def parity(gw: Gateway) -> ParityFeature:
    return next(f for f in gw.features if isinstance(f, ParityFeature))


def compared(gw: Gateway, result: str) -> float:
    value = gw.metrics.registry.get_sample_value(
        "cutover_parity_comparisons_total", {"route": "default", "result": result}
    )
    return value or 0.0


async def events(gw: Gateway, kind: str) -> list[dict[str, Any]]:
    _, body = await admin(gw, "GET", "/admin/events?limit=100")
    return [e for e in body["events"] if e["kind"] == kind]


async def test_differing_answers_hold_promotion_identical_ones_let_it_move(tmp_path: Path) -> None:
    go, py = Answering("go", answer=2), Answering("python", answer=1)
    async with started(go, py):
        clock = FakeClock()
        canary = {
            "min_requests": 20,
            "steps": [10, 50, 100],
            "step_interval": "30s",
            "step_min_requests": 20,
            "promotion": {"min_parity": 0.99},
        }
        data = canary_config(
            go,
            py,
            tmp_path,
            split={"go": 10, "python": 90},
            canary=canary,
            route={"mirror": {"to": "go", "percent": 100}},
            # exact counts of comparisons: a loop lag on a busy machine must not shed copies
            parity={
                "window": 20,
                "min_samples": 10,
                "mirror": {"shed_lag": "off", "shed_wait": "off"},
            },
        )
        gw = await start(data, clock)
        try:
            # 1. The candidate holds every mirrored copy: no comparison yet.
            go.hold_mirror = asyncio.Event()
            await traffic(gw, 25, force="go")
            await traffic(gw, 25, force="python")
            await wait_for(lambda: go.mirrored >= 1)
            clock.advance(31)
            await feature(gw).tick()
            assert weights(gw) == {"go": 10, "python": 90}
            assert feature(gw).verdicts["default"].status == "healthy"
            _, body = await admin(gw, "GET", "/admin/canary")
            gate = body["routes"][0]["promotion"]
            assert gate["min_parity"] == 0.99 and gate["open"] is False
            assert gate["reason"].startswith("parity: insufficient comparisons (")
            assert "parity: insufficient comparisons" in gate["held"]
            (hold,) = await events(gw, "hold")
            assert hold["actor"] == "controller"
            assert hold["reason"].startswith("promotion held at 10%: parity: insufficient")
            assert hold["figures"]["parity_state"] == "insufficient"
            assert hold["weights_before"] == hold["weights_after"] == {"go": 10, "python": 90}

            # 2. The copies come back different: the rate is 0, the step is still held.
            go.hold_mirror.set()
            await wait_for(lambda: compared(gw, "differ") == 25, deadline=30.0)
            assert parity(gw).parity_rate("default") == 0.0
            for _ in range(3):
                clock.advance(1)
                await feature(gw).tick()
            assert weights(gw) == {"go": 10, "python": 90}
            holds = await events(gw, "hold")
            assert len(holds) == 2  # once per kind of reason, not once per tick
            assert "parity 0 < 0.99" in holds[0]["reason"]
            assert holds[0]["figures"]["parity_rate"] == 0.0
            assert holds[0]["figures"]["min_parity"] == 0.99
            _, body = await admin(gw, "GET", "/admin/canary")
            assert body["routes"][0]["promotion"]["reason"] == "parity 0 < 0.99"

            # 3. An operator's promotion is not gated.
            status, body = await admin(gw, "POST", "/admin/promote", {"route": "default"})
            assert status == 200 and weights(gw) == {"go": 50, "python": 50}

            # 4. Identical answers: the rate reaches 1 and the controller moves on.
            go.answer = 1
            before = compared(gw, "same")
            await traffic(gw, 25, force="go")
            await traffic(gw, 25, force="python")
            await wait_for(lambda: compared(gw, "same") - before == 25, deadline=30.0)
            assert parity(gw).parity_rate("default") == 1.0
            clock.advance(31)
            await feature(gw).tick()
            assert weights(gw) == {"go": 100, "python": 0}
            promotes = await events(gw, "promote")
            assert [e["actor"] for e in promotes] == ["controller", "operator:admin"]
            auto = promotes[0]
            assert "parity 1 >= 0.99" in auto["reason"]
            assert auto["figures"]["parity_rate"] == 1.0
            assert auto["figures"]["from_weight"] == 50 and auto["figures"]["to_weight"] == 100
            _, body = await admin(gw, "GET", "/admin/canary")
            route = body["routes"][0]
            assert route["phase"] == "promoted" and route["promotion"]["held"] is None
        finally:
            if go.hold_mirror is not None:
                go.hold_mirror.set()  # never leave mirrored copies hanging on a failure
            await gw.close()
