"""The parity gate on automatic promotion (routing/canary.py: parity_gate, the stepping tick)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cutover.routing.canary import (
    CanaryConfig,
    Command,
    CommandOutcome,
    Control,
    Criteria,
    ParityReading,
    PromotionGate,
    SideWindow,
    Snapshot,
    apply,
    initial_control,
    judge,
    parity_gate,
)

SPLIT = (("go", 10), ("python", 90))
CFG = CanaryConfig(
    baseline="python",
    candidate="go",
    criteria=Criteria(min_requests=100),
    steps=(10, 50, 100),
    step_interval=60.0,
    step_min_requests=100,
    promotion=PromotionGate(min_parity=0.99),
)


def snap(n: int, errors: int = 0, start: float = 0.0, end: float = 59.0) -> Snapshot:
    w = SideWindow(60)
    for i in range(n):
        w.record(start + (end - start) * i / max(1, n - 1), i < errors, 0.01)
    return w.snapshot(end)


def tick(
    control: Control, reading: ParityReading | None, cfg: CanaryConfig = CFG, errors: int = 0
) -> CommandOutcome:
    """A tick at t=61 s where time, requests and the verdict all allow the next step."""
    verdict = judge(snap(5000, end=61.0), snap(500, errors, end=61.0), cfg.criteria)
    cmd = Command(
        "tick",
        "controller",
        61.0,
        verdict=verdict,
        candidate_window=snap(500, start=1.0, end=61.0),
        parity=reading,
    )
    return apply(control, cmd, cfg)


def test_no_minimum_means_no_gate() -> None:
    assert parity_gate(None, None) is None
    assert parity_gate(None, ParityReading(0.1, 100, 20)) is None


@pytest.mark.parametrize(
    ("reading", "state", "reason"),
    [
        (None, "insufficient", "parity: insufficient comparisons (no mirrored comparisons)"),
        (ParityReading(None), "insufficient", "parity: insufficient comparisons"),
        (ParityReading(None, 12, 20), "insufficient", "parity: insufficient comparisons (12 of"),
        (ParityReading(0.95, 100, 20), "below", "parity 0.95 < 0.99"),
        (ParityReading(0.98999, 100, 20), "below", "parity 0.9899 < 0.99"),
        (ParityReading(0.99, 100, 20), "open", "parity 0.99 >= 0.99"),
        (ParityReading(1.0, 100, 20), "open", "parity 1 >= 0.99"),
    ],
)
def test_parity_gate_states_and_reasons(
    reading: ParityReading | None, state: str, reason: str
) -> None:
    gate = parity_gate(0.99, reading)
    assert gate is not None
    assert gate.state == state and gate.open is (state == "open")
    assert gate.reason.startswith(reason)
    assert gate.figures["min_parity"] == 0.99
    assert gate.figures["parity_rate"] == (reading.rate if reading is not None else None)


def test_a_rate_just_under_the_minimum_never_reads_as_equal() -> None:
    gate = parity_gate(0.99, ParityReading(0.989999999, 1000, 20))
    assert gate is not None and not gate.open
    assert "0.99 < 0.99" not in gate.reason


def test_zero_minimum_needs_only_enough_comparisons() -> None:
    assert parity_gate(0.0, ParityReading(0.0, 20, 20)).open  # type: ignore[union-attr]
    assert not parity_gate(0.0, ParityReading(None, 3, 20)).open  # type: ignore[union-attr]


def test_too_few_comparisons_hold_the_step() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    out = tick(c, ParityReading(None, 5, 20))
    assert out.control is None and out.error is None
    assert out.event == "hold"
    assert "parity: insufficient comparisons (5 of 20 needed)" in out.reason
    assert out.reason.startswith("promotion held at 10%")
    assert out.figures["gate"] == "parity" and out.figures["parity_state"] == "insufficient"
    assert out.figures["verdict"] == "healthy"
    assert out.figures["requests_in_step"] >= CFG.step_min_requests


def test_no_reading_at_all_holds_the_step() -> None:
    out = tick(initial_control("r", SPLIT, CFG, 0.0), None)
    assert out.control is None and out.event == "hold"
    assert "parity: insufficient comparisons" in out.reason


def test_a_rate_under_the_minimum_holds_the_step() -> None:
    out = tick(initial_control("r", SPLIT, CFG, 0.0), ParityReading(0.95, 200, 20))
    assert out.control is None and out.event == "hold"
    assert "parity 0.95 < 0.99" in out.reason
    assert out.figures["parity_rate"] == 0.95 and out.figures["parity_state"] == "below"


def test_a_rate_at_the_minimum_promotes_and_says_so() -> None:
    out = tick(initial_control("r", SPLIT, CFG, 0.0), ParityReading(0.995, 200, 20))
    assert out.event == "promote"
    assert out.control is not None and out.control.weight_of("go") == 50
    assert "parity 0.995 >= 0.99" in out.reason
    assert out.figures["parity_rate"] == 0.995 and out.figures["min_parity"] == 0.99


def test_other_gates_come_first() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    early = Command(
        "tick",
        "controller",
        30.0,
        verdict=judge(snap(5000, end=30.0), snap(500, end=30.0), CFG.criteria),
        candidate_window=snap(500, end=30.0),
        parity=ParityReading(0.5, 200, 20),
    )
    assert apply(c, early, CFG) == CommandOutcome()  # too early: nothing to say about parity yet


def test_an_unhealthy_verdict_still_rolls_back_whatever_the_parity() -> None:
    out = tick(initial_control("r", SPLIT, CFG, 0.0), ParityReading(None), errors=50)
    assert out.event == "rollback"


def test_without_a_gate_the_reading_is_ignored() -> None:
    cfg = replace(CFG, promotion=PromotionGate())
    out = tick(initial_control("r", SPLIT, cfg, 0.0), ParityReading(0.1, 200, 20), cfg)
    assert out.event == "promote"
    assert "parity" not in out.reason and "parity_rate" not in out.figures


def test_per_route_settings_override_the_block() -> None:
    cfg = replace(
        CFG,
        route_promotion={"open": PromotionGate(), "strict": PromotionGate(min_parity=0.999)},
    )
    assert cfg.promotion_for("other").min_parity == 0.99
    assert cfg.promotion_for("open").min_parity is None
    reading = ParityReading(0.995, 200, 20)
    assert tick(initial_control("open", SPLIT, cfg, 0.0), None, cfg).event == "promote"
    assert tick(initial_control("other", SPLIT, cfg, 0.0), reading, cfg).event == "promote"
    held = tick(initial_control("strict", SPLIT, cfg, 0.0), reading, cfg)
    assert held.event == "hold" and "parity 0.995 < 0.999" in held.reason


def test_an_operator_promotion_is_not_gated() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    out = apply(c, Command("promote", "operator:alice", 5.0), CFG)
    assert out.event == "promote" and out.control is not None
    assert out.control.weight_of("go") == 50 and out.control.actor == "operator:alice"
