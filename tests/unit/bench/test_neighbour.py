"""bench/neighbour.py: a CPU neighbour burns the share it is given, in bursts, and stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from cutover.bench.neighbour import burn
from tests.conftest import ROOT


def test_it_burns_its_share_in_bursts_and_stops_on_time() -> None:
    cpu, wall = time.process_time(), time.monotonic()
    bursts = burn(0.5, 0.01, 0.4)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    assert 0.4 <= wall < 30  # (generous: a busy machine may hold it back)
    assert 1 <= bursts <= 41  # one a period at most, 40 periods
    # it spun, and not all the time: it burns at most its share (a busy machine may give it
    # less), plus what a burst overruns by
    assert 0 < cpu <= 0.5 * wall + 0.05


def test_no_share_burns_nothing() -> None:
    cpu, wall = time.process_time(), time.monotonic()
    burn(0.0, 0.01, 0.2)
    assert time.process_time() - cpu < 0.5 * (time.monotonic() - wall)


@pytest.mark.parametrize("args", [["--share", "1.5"], ["--period", "0"], ["--seconds", "-1"]])
def test_the_command_refuses_what_it_cannot_do(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cutover.bench.neighbour", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "--share needs 0-1" in proc.stderr


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_idle_runs_it_niced_under_sched_idle() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cutover.bench.neighbour", "--idle", "--share", "0.1",
         "--seconds", "30"],
        cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.sched_getscheduler(proc.pid) == os.SCHED_IDLE:
                break
            time.sleep(0.05)
        assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) >= 10
    finally:
        proc.kill()
        proc.wait(10)
