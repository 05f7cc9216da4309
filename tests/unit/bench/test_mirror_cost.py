"""bench/mirror_cost.py's pure parts: the configs it runs, the counters it reads, its table."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from cutover.bench.mirror_cost import (
    SIDES,
    alert_json,
    cpu_seconds,
    gateway_conf,
    idle_tree,
    mirror_counts,
    on_time_summary,
    origin_conf,
    pin_tree,
    realtime_tree,
    render_table,
)
from cutover.proxy.config import load_config


@pytest.mark.parametrize("side", SIDES)
def test_every_side_is_a_valid_config(tmp_path: Path, side: str) -> None:
    path = tmp_path / "c.yaml"
    conf = gateway_conf(8080, 8081, 8082, side, str(tmp_path / "s.db"), "1ms", cpu="5%")
    path.write_text(conf)
    config = load_config(path)
    (route,) = config.routes
    assert (route.mirror is not None) == side.startswith("mirror")
    assert config.fast_path is (not side.endswith("-aiohttp"))
    assert config.parity is not None
    assert config.parity.mirror.shed_lag == (0.0 if side == "mirror-noshed" else 0.001)
    assert config.parity.mirror.shed_wait == (0.0 if side == "mirror-noshed" else 0.2)
    assert config.parity.mirror.process is (side != "mirror-inline")
    assert config.parity.mirror.noise is (side != "mirror-nonoise")
    assert config.parity.mirror.cpu == 0.05


def test_the_candidate_differs_from_the_primary() -> None:
    primary, candidate = orjson.loads(alert_json(False)), orjson.loads(alert_json(True))
    assert primary != candidate and primary.keys() == candidate.keys()
    assert 1000 < len(alert_json(False)) < 2048


def test_mirror_counts_reads_the_exposition() -> None:
    text = "\n".join(
        [
            "# HELP cutover_parity_mirror_requests_total x",
            'cutover_parity_mirror_requests_total{result="queued",route="default"} 7.0',
            'cutover_parity_mirror_requests_total{result="shed",route="default"} 3.0',
            'cutover_parity_mirror_requests_total{result="dropped",route="default"} 1.0',
            'cutover_parity_comparisons_total{result="same",route="default"} 2.0',
            'cutover_parity_comparisons_total{result="differ",route="default"} 4.0',
            'cutover_parity_mirror_skipped_total{reason="method",route="default"} 9.0',
        ]
    )
    assert mirror_counts(text) == {"queued": 7.0, "shed": 3.0, "dropped": 1.0, "compared": 6.0}
    assert mirror_counts("") == {"queued": 0.0, "shed": 0.0, "dropped": 0.0, "compared": 0.0}


def test_the_table_gives_ratios_to_plain_at_the_same_rate() -> None:
    plain = {"queued": 0, "shed": 0, "dropped": 0, "compared": 0, "lag_median": 0.1,
             "lag_max": 2.0, "requests": 1000, "gateway_cpu": 0.05, "mirror_cpu": 0.0}  # fmt: skip
    counts = {"queued": 5, "shed": 1, "dropped": 0, "compared": 5, "lag_median": 0.1,
              "lag_max": 2.0, "requests": 1000, "gateway_cpu": 0.06,
              "mirror_cpu": 0.002, "wait_median": 12.0}  # fmt: skip
    rows = [
        {"rate": 200.0, "side": "plain", "p50": 0.5, "p99": 2.0, "failed": 0, "counts": plain},
        {"rate": 200.0, "side": "mirror", "p50": 1.0, "p99": 3.0, "failed": 0, "counts": counts},
    ]
    table = render_table(rows)
    assert table[2].startswith(
        "| 200 | plain | 0.50 | 2.00 | 1.00 | 1.00 | - | 0 | 50 | - | 0.1 / 2.0 | 0 | - |"
    )
    assert table[3] == (
        "| 200 | mirror | 1.00 | 3.00 | 2.00 | 1.50 | - | 0 | 60 | 400 | 0.1 / 2.0 | 12"
        " | 5 | 1 | 0 | 5 |"
    )


def test_the_on_time_summary_pairs_rounds_and_leaves_out_late_ones() -> None:
    """A round where the generator sent late (on either side) is left out of the ratios; the
    others are paired round by round, CPU per request included."""
    plain = {"rate": 8000.0, "side": "plain", "p50_rounds": [0.10, 0.20, 0.10, 0.10],
             "p99_rounds": [1.0, 1.0, 50.0, 1.0], "cpu_rounds": [90.0, 100.0, 90.0, 90.0],
             "late_rounds": [0.05, 0.04, 40.0, 0.03]}  # fmt: skip
    mirror = {"rate": 8000.0, "side": "mirror", "p50_rounds": [0.11, 0.22, 0.50, 0.12],
              "p99_rounds": [1.1, 1.2, 2.0, 90.0], "cpu_rounds": [93.0, 103.0, 99.0, 99.0],
              "late_rounds": [0.05, 0.06, 0.05, 30.0]}  # fmt: skip
    older = {"rate": 8000.0, "side": "mirror-nonoise", "p50_rounds": [0.1]}  # no lateness kept
    (line,) = on_time_summary([plain, mirror, older], 1.0)
    assert line == (
        "8000/s mirror: 2 of 4 rounds on time; p50 x 1.10 (1.10-1.10);"
        " p99 x 1.15 (1.10-1.20); CPU x 1.03 (1.03-1.03)"
    )
    assert on_time_summary([plain, mirror], 0.01) == ["8000/s mirror: 0 of 4 rounds on time"]


def test_cpu_seconds_counts_the_process_and_its_children() -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", busy + "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        while cpu_seconds(os.getpid())[1] < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        own, children = cpu_seconds(os.getpid())
        assert own > 0 and children >= 0.3
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds(child.pid) == (0.0, 0.0)  # gone: nothing to read


def test_pin_tree_pins_a_process_and_its_children() -> None:
    """`--candidate-cpus` and `--mirror-cpus`: nginx's worker and the mirror process are
    children of the process the bench started."""
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            for task in Path(f"/proc/{parent.pid}/task").glob("*/children"):
                children += [int(c) for c in task.read_text().split()]
            time.sleep(0.05)
        assert children
        one = {min(os.sched_getaffinity(0))}
        pin_tree(parent.pid, one)
        assert os.sched_getaffinity(parent.pid) == one
        assert all(os.sched_getaffinity(c) == one for c in children)
    finally:
        for pid in children:
            os.kill(pid, 9)
        parent.kill()
        parent.wait()


@pytest.mark.parametrize(
    ("move", "policy"), [(idle_tree, os.SCHED_IDLE), (realtime_tree, os.SCHED_FIFO)]
)
def test_a_tree_moves_to_its_scheduling_class_whole(
    move: Callable[[int], None], policy: int
) -> None:
    """`--candidate-idle` and `--primary-realtime`: nginx's master and its worker both leave
    the normal class."""
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    children: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not children and time.monotonic() < deadline:
            for task in Path(f"/proc/{parent.pid}/task").glob("*/children"):
                children += [int(c) for c in task.read_text().split()]
            time.sleep(0.05)
        assert children
        assert os.sched_getscheduler(parent.pid) == os.SCHED_OTHER
        move(parent.pid)
        assert os.sched_getscheduler(parent.pid) == policy
        assert all(os.sched_getscheduler(c) == policy for c in children)
    finally:
        for pid in children:
            os.kill(pid, 9)
        parent.kill()
        parent.wait()


def test_each_origin_is_its_own_nginx(tmp_path: Path) -> None:
    """The primary and the candidate are two nginx processes (two services), each a valid
    config with its own pid file and port."""
    (tmp_path / "www").mkdir()
    text = origin_conf(str(tmp_path), "candidate", 18099, str(tmp_path / "www"))
    assert f"pid {tmp_path}/candidate.pid;" in text
    assert "listen 127.0.0.1:18099;" in text
    conf = tmp_path / "candidate.conf"
    conf.write_text(text)
    checked = subprocess.run(
        ["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_ratios_are_taken_round_by_round() -> None:
    """A slow round slows every side in it: the per-round ratios cancel that drift, where the
    ratio of the medians would not (here 1.0 against 2.0/1.1)."""
    counts = {"queued": 0.0, "shed": 0.0, "dropped": 0.0, "compared": 0.0, "requests": 0,
              "lag_median": 0.0, "lag_max": 0.0}  # fmt: skip
    plain = {"rate": 100.0, "side": "plain", "p50": 1.1, "p99": 1.1, "failed": 0,
             "counts": counts, "p50_rounds": [1.0, 1.1, 2.0],
             "p99_rounds": [1.0, 1.1, 2.0]}  # fmt: skip
    mirror = {"rate": 100.0, "side": "mirror", "p50": 2.0, "p99": 2.0, "failed": 0,
              "counts": counts, "p50_rounds": [1.0, 2.0, 2.2],
              "p99_rounds": [1.1, 2.0, 4.0]}  # fmt: skip
    table = render_table([plain, mirror])
    assert table[2].startswith("| 100 | plain | 1.10 | 1.10 | 1.00 | 1.00 |")
    assert table[3].startswith(
        "| 100 | mirror | 2.00 | 2.00 | 1.10 (1.00-1.82) | 1.82 (1.10-2.00) |"
    )
