"""The canary state machine: latch, steps, ramp-down, config precedence (routing/canary.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cutover.routing.canary import (
    PHASES,
    TRANSITIONS,
    CanaryConfig,
    Command,
    Control,
    Criteria,
    Ramp,
    RollbackPolicy,
    SideWindow,
    Snapshot,
    apply,
    initial_control,
    judge,
    next_step,
    reconcile,
    rollback_target,
    with_candidate_weight,
)
from cutover.routing.murmur import bucket_of
from cutover.routing.split import SplitTable

SPLIT = (("go", 10), ("python", 90))
CFG = CanaryConfig(
    baseline="python",
    candidate="go",
    criteria=Criteria(min_requests=100),
    steps=(10, 50, 90, 100),
    step_interval=60.0,
    step_min_requests=100,
)


def snap(n: int, errors: int = 0, start: float = 0.0, end: float = 59.0) -> Snapshot:
    w = SideWindow(60)
    for i in range(n):
        w.record(start + (end - start) * i / max(1, n - 1), i < errors, 0.01)
    return w.snapshot(end)


def verdict(candidate_errors: int = 0, n: int = 500, end: float = 59.0):
    return judge(snap(5000, end=end), snap(n, candidate_errors, end=end), CFG.criteria)


def tick(control: Control, now: float, v=None, window: Snapshot | None = None) -> Control:
    out = apply(
        control, Command("tick", "controller", now, verdict=v, candidate_window=window), CFG
    )
    return out.control or control


def test_the_table_covers_every_phase_and_command() -> None:
    commands = {"tick", "rollback", "promote", "pause", "resume", "set_weights"}
    assert set(TRANSITIONS) == {(p, c) for p in PHASES for c in commands}


def test_with_candidate_weight_moves_the_difference_to_the_baseline() -> None:
    assert with_candidate_weight(SPLIT, "go", "python", 50) == (("go", 50), ("python", 50))
    three = (("python", 80), ("go", 10), ("legacy", 10))
    assert with_candidate_weight(three, "go", "python", 95) == (
        ("python", 0),
        ("go", 95),
        ("legacy", 5),
    )
    assert with_candidate_weight(three, "go", "python", 0) == (
        ("python", 90),
        ("go", 0),
        ("legacy", 10),
    )
    assert next_step((10, 50, 100), 10) == 50 and next_step((10, 50, 100), 100) is None
    assert next_step((), 30) == 100


def test_initial_phase_from_the_config() -> None:
    assert initial_control("r", SPLIT, CFG, 0).phase == "stepping"
    assert initial_control("r", (("go", 100), ("python", 0)), CFG, 0).phase == "promoted"
    assert initial_control("r", SPLIT, replace(CFG, steps=()), 0).phase == "observing"
    assert initial_control("r", SPLIT, None, 0).phase == "observing"


def test_unhealthy_verdict_rolls_back_and_latches() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    v = verdict(candidate_errors=25)  # 5%
    assert v.status == "unhealthy"
    out = apply(c, Command("tick", "controller", 59.0, verdict=v, candidate_window=snap(500)), CFG)
    assert out.event == "rollback"
    after = out.control
    assert after is not None
    assert after.weights == (("go", 0), ("python", 100))
    assert (after.phase, after.latched, after.source) == ("rolled_back", True, "controller")
    assert out.figures["criterion"] == "error_rate"
    assert out.figures["judged"]["candidate_errors"] == 25
    assert "automatic rollback" in out.reason and "python takes 100%" in out.reason
    # The latch: healthy verdicts do not promote again...
    later = tick(after, 1000.0, verdict(), snap(500, start=941.0, end=1000.0))
    assert later == after
    # ...until an operator resumes.
    resumed = apply(after, Command("resume", "operator", 1001.0), CFG).control
    assert resumed is not None and not resumed.latched and resumed.phase == "stepping"


def test_insufficient_data_neither_promotes_nor_rolls_back() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    v = judge(snap(5000), snap(99, errors=50), CFG.criteria)
    assert v.status == "insufficient_data"
    assert apply(c, Command("tick", "controller", 500.0, verdict=v), CFG).control is None


def test_promotion_walks_the_steps_with_time_and_requests_gates() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    weights = [c.weight_of("go")]
    now = 0.0
    for _ in range(6):
        # not before step_interval
        early = now + 30.0
        assert tick(c, early, verdict(end=early), snap(500, start=now, end=early)) == c
        # not with too few candidate requests in the step
        t = now + 61.0
        assert tick(c, t, verdict(end=t), snap(50, start=now + 1, end=t)) == c
        nxt = tick(c, t, verdict(end=t), snap(500, start=now + 1, end=t))
        if nxt == c:
            break
        assert nxt.since == t and nxt.source == "controller"
        c, now = nxt, t
        weights.append(c.weight_of("go"))
    assert weights == [10, 50, 90, 100]
    assert c.phase == "promoted"
    assert dict(c.weights) == {"go": 100, "python": 0}


def test_operator_promote_pause_resume() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    paused = apply(c, Command("pause", "operator", 1.0), CFG).control
    assert paused is not None and paused.phase == "holding"
    assert apply(paused, Command("pause", "operator", 2.0), CFG).error == "already paused"
    # holding: no automatic promotion even with every gate open
    assert tick(paused, 500.0, verdict(end=500.0), snap(500, start=400, end=500)) == paused
    promoted = apply(paused, Command("promote", "operator:alice", 3.0), CFG).control
    assert promoted is not None and promoted.weight_of("go") == 50
    assert promoted.phase == "holding" and promoted.actor == "operator:alice"
    resumed = apply(promoted, Command("resume", "operator", 4.0), CFG).control
    assert resumed is not None and resumed.phase == "stepping"
    assert apply(resumed, Command("resume", "operator", 5.0), CFG).error is not None
    top = replace(resumed, weights=(("go", 100), ("python", 0)), phase="promoted")
    assert "last step" in (apply(top, Command("promote", "operator", 6.0), CFG).error or "")


def test_paused_canary_still_rolls_back_automatically() -> None:
    c = apply(initial_control("r", SPLIT, CFG, 0.0), Command("pause", "operator", 1.0), CFG)
    assert c.control is not None
    out = apply(c.control, Command("tick", "controller", 59.0, verdict=verdict(25)), CFG)
    assert out.event == "rollback"


def test_ramp_down_schedule() -> None:
    cfg = replace(CFG, rollback=RollbackPolicy(mode="ramp", over=30.0))
    c = replace(initial_control("r", (("go", 50), ("python", 50)), cfg, 0.0), since=0.0)
    out = apply(c, Command("rollback", "operator", 100.0, reason="bad deploy"), cfg)
    assert out.control is not None and out.control.ramp == Ramp(50, 100.0, 30.0)
    assert out.control.weight_of("go") == 50 and out.control.latched
    seen = []
    state = out.control
    for t in range(101, 135):
        step = apply(state, Command("tick", "controller", float(t)), cfg)
        if step.control is not None:
            assert step.event == "ramp"
            state = step.control
            seen.append((t, state.weight_of("go")))
    weights = [w for _, w in seen]
    assert weights == sorted(weights, reverse=True)  # only ever down: users move back only
    assert weights[-1] == 0 and seen[-1][0] == 130  # done exactly after `over`
    assert dict(seen)[115] == 25  # half way
    assert state.ramp is None and state.latched and state.phase == "rolled_back"
    assert state.weight_of("python") == 100


def test_instant_rollback_finishes_a_ramp() -> None:
    cfg = replace(CFG, rollback=RollbackPolicy(mode="ramp", over=30.0))
    c = initial_control("r", (("go", 50), ("python", 50)), cfg, 0.0)
    ramping = apply(c, Command("rollback", "operator", 10.0), cfg).control
    assert ramping is not None
    done = apply(ramping, Command("rollback", "operator", 11.0, mode="instant"), cfg).control
    assert done is not None and done.weight_of("go") == 0 and done.ramp is None
    again = apply(done, Command("rollback", "operator", 12.0), cfg)
    assert again.error is not None and "already rolled back" in again.error


def test_set_weights_releases_the_latch() -> None:
    c = initial_control("r", SPLIT, CFG, 0.0)
    back = apply(c, Command("rollback", "operator", 1.0), CFG).control
    assert back is not None and back.latched
    out = apply(
        back, Command("set_weights", "operator", 2.0, weights=(("go", 5), ("python", 95))), CFG
    )
    assert out.event == "weights" and out.control is not None
    assert not out.control.latched and out.control.phase == "stepping"
    assert out.figures == {"before": {"go": 0, "python": 100}, "after": {"go": 5, "python": 95}}


def test_config_split_change_wins_over_runtime_weights() -> None:
    c = apply(
        initial_control("r", SPLIT, CFG, 0.0),
        Command("set_weights", "operator", 1.0, weights=(("go", 30), ("python", 70))),
        CFG,
    ).control
    assert c is not None
    assert reconcile(c, SPLIT, CFG, 2.0).control is None  # config unchanged: runtime wins
    new_split = (("go", 20), ("python", 80))
    out = reconcile(c, new_split, CFG, 2.0)
    assert out.event == "config" and out.control is not None
    assert out.control.weights == new_split and out.control.source == "config"
    assert "runtime weights go 30/python 70 (operator) dropped" in out.reason
    # once the config is in force, other replicas with another config do not fight over it
    assert reconcile(out.control, SPLIT, CFG, 3.0).control is None


def test_routes_without_canary_take_weights_only() -> None:
    c = initial_control("r", SPLIT, None, 0.0)
    assert apply(c, Command("promote", "operator", 1.0), None).error is not None
    out = apply(
        c, Command("set_weights", "operator", 1.0, weights=(("go", 0), ("python", 100))), None
    )
    assert out.control is not None and out.control.source == "operator"


@pytest.mark.parametrize("phase", PHASES)
def test_control_round_trips_through_json(phase: str) -> None:
    c = replace(
        initial_control("r", SPLIT, CFG, 5.0),
        phase=phase,  # type: ignore[arg-type]
        ramp=Ramp(50, 4.0, 30.0, to=10),
        last_good=10,
        version=7,
        latched=True,
    )
    assert Control.from_dict(c.to_dict()) == c


# -- rollback_to: last_good_step ----------------------------------------------------------------

LAST_GOOD = replace(CFG, rollback_to="last_good_step")
USERS = [f"user-{i}" for i in range(2000)]


def walk_to(cfg: CanaryConfig, weight: int) -> tuple[Control, float]:
    """Promote automatically (healthy verdicts) from 10 % until the candidate is at `weight`."""
    c, now = initial_control("r", SPLIT, cfg, 0.0), 0.0
    while c.weight_of("go") < weight:
        t = now + 61.0
        out = apply(
            c,
            Command("tick", "controller", t, verdict=verdict(end=t),
                    candidate_window=snap(500, start=now + 1, end=t)),
            cfg,
        )  # fmt: skip
        assert out.event == "promote"
        assert out.control is not None
        c, now = out.control, t
    return c, now


def on_candidate(weights: tuple[tuple[str, int], ...]) -> set[str]:
    table = SplitTable(weights, first="go")
    return {u for u in USERS if table.owner(bucket_of(u)) == "go"}


def test_a_rollback_after_promotions_returns_to_the_last_step_judged_good() -> None:
    c, now = walk_to(LAST_GOOD, 90)
    assert c.last_good == 50
    good_users = on_candidate(with_candidate_weight(SPLIT, "go", "python", 50))
    at_90 = on_candidate(c.weights)
    assert good_users < at_90
    out = apply(
        c, Command("tick", "controller", now + 5, verdict=verdict(candidate_errors=25)), LAST_GOOD
    )
    assert out.event == "rollback" and out.control is not None
    back = out.control
    assert back.weight_of("go") == 50 and back.phase == "rolled_back" and back.latched
    assert out.figures["to_weight"] == 50 and out.figures["rollback_to"] == "last_good_step"
    assert "go back to 50%, the last step judged good (go was at 90%)" in out.reason
    # No user who was on the candidate at the last good step flips; only the newer ones go back.
    after = on_candidate(back.weights)
    assert after == good_users
    assert len(at_90 - after) > 0


def test_zero_stays_the_default_and_moves_every_promoted_user_back() -> None:
    assert CFG.rollback_to == "zero"
    c, now = walk_to(CFG, 90)
    out = apply(c, Command("tick", "controller", now + 5, verdict=verdict(25)), CFG)
    assert out.control is not None and out.control.weight_of("go") == 0
    assert on_candidate(out.control.weights) == set()


def test_a_ramped_rollback_stops_at_the_last_good_step_and_never_crosses_it() -> None:
    cfg = replace(LAST_GOOD, rollback=RollbackPolicy("ramp", 30.0))
    c, now = walk_to(cfg, 90)
    good_users = on_candidate(with_candidate_weight(SPLIT, "go", "python", 50))
    out = apply(c, Command("rollback", "operator:alice", now, reason="pager"), cfg)
    assert out.control is not None and out.control.ramp is not None
    c = out.control
    assert c.ramp == Ramp(90, now, 30.0, to=50)
    seen = []
    for dt in range(1, 40):
        c = _tick(c, now + dt, cfg)
        seen.append(c.weight_of("go"))
        assert good_users <= on_candidate(c.weights)
    assert min(seen) == 50 and seen[-1] == 50 and c.ramp is None
    assert seen == sorted(seen, reverse=True)


def _tick(c: Control, now: float, cfg: CanaryConfig, v=None) -> Control:
    out = apply(c, Command("tick", "controller", now, verdict=v), cfg)
    return out.control or c


def test_the_last_good_step_failing_too_goes_on_to_zero_on_fresh_evidence_only() -> None:
    c, now = walk_to(LAST_GOOD, 90)
    out = apply(c, Command("tick", "controller", now + 1, verdict=verdict(25)), LAST_GOOD)
    assert out.control is not None
    back, at = out.control, now + 1
    assert back.weight_of("go") == 50
    # The whole window still holds the failures that caused the rollback: not fresh evidence.
    assert _tick(back, at + 10, LAST_GOOD, verdict(25)) == back
    # Once a whole window has passed at 50 %, an unhealthy verdict is about the step itself.
    again = apply(back, Command("tick", "controller", at + 61, verdict=verdict(25)), LAST_GOOD)
    assert again.event == "rollback" and again.control is not None
    assert again.control.weight_of("go") == 0 and again.control.last_good == 0
    assert "the last good step fails too" in again.reason
    # An operator can take it to 0 at once, too.
    manual = apply(back, Command("rollback", "operator:bob", at + 2), LAST_GOOD)
    assert manual.control is not None and manual.control.weight_of("go") == 0


def test_the_last_good_step_is_never_above_the_weights_in_force() -> None:
    c, _ = walk_to(LAST_GOOD, 90)
    assert rollback_target(c, LAST_GOOD) == 50
    lower = apply(
        c, Command("set_weights", "operator", 1.0, weights=(("go", 20), ("python", 80))), LAST_GOOD
    ).control
    assert lower is not None and lower.last_good == 20
    assert rollback_target(lower, LAST_GOOD) == 0  # at its last good step: back to 0
    assert rollback_target(c, CFG) == 0
