"""parity/cpu_budget.py: the mirror process's share of a CPU, on an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutover.parity.cpu_budget import WINDOW, CpuBudget
from tests.fuzzing import fuzz


def test_a_fresh_budget_allows_a_window_of_work_then_says_how_long_to_wait() -> None:
    budget = CpuBudget(0.1)
    assert budget.wait(cpu=0.0, wall=0.0) == 0
    assert budget.wait(cpu=0.09, wall=0.09) == 0  # 0.09 spent of 0.1 (+ 0.009 earned)
    wait = budget.wait(cpu=0.2, wall=0.2)  # 0.089 overspent: 0.89 s to earn it back
    assert wait == pytest.approx(0.89, abs=1e-3)
    assert budget.wait(cpu=0.2, wall=0.2 + wait) == 0  # waited: allowed again
    assert budget.tokens <= budget.capacity


def test_waiting_is_not_charged_and_earns_the_share() -> None:
    budget = CpuBudget(0.5)
    budget.wait(0.0, 0.0)
    assert budget.wait(1.0, 0.0) == pytest.approx(1.0, abs=1e-3)  # 1 s of CPU in no time
    assert budget.wait(1.0, 0.5) == pytest.approx(0.5, abs=1e-3)  # half of it earned back


def test_time_without_work_earns_no_more_than_a_window() -> None:
    budget = CpuBudget(0.25)
    budget.wait(0.0, 0.0)
    budget.wait(0.0, 3600.0)  # an idle hour
    assert budget.tokens == pytest.approx(0.25 * WINDOW)


def test_a_clock_that_steps_back_earns_nothing_and_charges_nothing() -> None:
    budget = CpuBudget(0.5)
    budget.wait(5.0, 100.0)
    before = budget.tokens
    assert budget.wait(4.0, 50.0) == 0
    assert budget.tokens == before


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5, float("nan")])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share of one CPU"):
        CpuBudget(share)


@given(
    share=st.floats(0.01, 1.0),
    steps=st.lists(st.tuples(st.floats(0, 0.05), st.floats(0, 0.05)), min_size=1, max_size=400),
)
@fuzz(300)
def test_over_any_run_the_work_done_is_at_most_the_share_plus_a_window(
    share: float, steps: list[tuple[float, float]]
) -> None:
    """A caller that waits as told: whatever the jobs cost and however time goes, the CPU they
    spent is at most share x elapsed + a window's worth + the last job's overrun."""
    budget = CpuBudget(share)
    cpu = wall = spent = 0.0
    biggest = 0.0
    for cost, pause in steps:
        wall += pause
        while (wait := budget.wait(cpu, wall)) > 0:
            assert wait < 10 / share  # (never more than what was overspent, at the share)
            wall += wait
        cpu += cost
        wall += cost
        spent += cost
        biggest = max(biggest, cost)
    assert spent <= share * wall + budget.capacity + biggest + 1e-9
