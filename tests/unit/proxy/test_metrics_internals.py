"""The fast path counts through prometheus_client's internals (`proxy.metrics.fast_inc`,
`fast_observe`, `CounterSlots`: a child's `_value`, `_sum`, `_buckets`, `_upper_bounds`). If a
release of the library changes them, these tests fail instead of the fast path silently
falling back to the slow calls or, worse, counting wrong: the direct calls must be taken and
must give exactly the samples the public `inc`/`observe` give, in one process and with a
multiprocess directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from cutover.proxy.metrics import LATENCY_BUCKETS, CounterSlots, fast_inc, fast_observe

# Values on, between, below and above the bucket bounds (a bound itself is in its bucket: le).
AMOUNTS = [0.0, 0.0005, 0.0007, 0.001, 0.3, 1.0, 2.5, 29.9, 30.0, 31.0, 1e6]


def _pair(registry: CollectorRegistry, prefix: str) -> tuple[Counter, Histogram]:
    c = Counter(f"{prefix}_c", "c", ["route"], registry=registry)
    h = Histogram(f"{prefix}_h", "h", ["route"], buckets=LATENCY_BUCKETS, registry=registry)
    return c, h


def _samples(registry: CollectorRegistry, prefix: str) -> list[str]:
    text = generate_latest(registry).decode()
    return sorted(
        line.replace(prefix, "x", 1)
        for line in text.splitlines()
        if line.startswith(prefix) and "_created" not in line
    )


def check_fast_counting_matches_the_public_calls() -> None:
    registry = CollectorRegistry()
    fast_c, fast_h = _pair(registry, "fast")
    slow_c, slow_h = _pair(registry, "slow")
    inc = fast_inc(fast_c.labels("r"))
    observe = fast_observe(fast_h.labels("r"))
    # the direct calls are taken, not the public methods they fall back to
    assert inc != fast_c.labels("r").inc, "Counter child has no _value.inc any more"
    assert observe != fast_h.labels("r").observe, "Histogram child internals changed"
    for amount in AMOUNTS:
        inc(1)
        slow_c.labels("r").inc(1)
        observe(amount)
        slow_h.labels("r").observe(amount)
    inc(2.5)
    slow_c.labels("r").inc(2.5)
    fast, slow = _samples(registry, "fast"), _samples(registry, "slow")
    assert fast == slow
    assert any('le="+Inf"' in line for line in fast)


def test_fast_counting_matches_the_public_calls() -> None:
    check_fast_counting_matches_the_public_calls()


def check_counter_slots_count_as_the_public_calls(multiprocess: bool) -> None:
    """Counts in slots, through a child's `inc`, and from before the slots were made, read
    as the same counts made with `inc` alone: at once with one worker, after `fold` with a
    multiprocess directory (and folding twice adds nothing more)."""
    registry = CollectorRegistry()
    fast = Counter("slots_c", "c", ["route", "result"], registry=registry)
    slow = Counter("plain_c", "c", ["route", "result"], registry=registry)
    children = [fast.labels("r", k) for k in ("queued", "dropped", "shed")]
    children[0].inc(3)  # before the slots: kept
    slow.labels("r", "queued").inc(3)
    slots = CounterSlots(children)
    for i, amount in [(0, 1), (1, 1), (1, 1), (2, 4)]:
        slots.slots[i] += amount
        slow.labels("r", ("queued", "dropped", "shed")[i]).inc(amount)
    children[1].inc(5)  # a public inc beside the slots (a job lost with its process)
    slow.labels("r", "dropped").inc(5)
    # a second set of slots for the same children (a route configured again) carries on
    again = CounterSlots(children)
    again.slots[2] += 1
    slow.labels("r", "shed").inc(1)
    before = _samples(registry, "slots") == _samples(registry, "plain")
    assert before is not multiprocess, "read before a fold with one worker only"
    for _ in range(2):
        slots.fold()
        again.fold()
    assert _samples(registry, "slots") == _samples(registry, "plain")


def test_counter_slots_count_as_the_public_calls() -> None:
    check_counter_slots_count_as_the_public_calls(multiprocess=False)


def test_fast_counting_matches_with_a_multiprocess_directory(tmp_path: Path) -> None:
    """The value class is chosen at import when PROMETHEUS_MULTIPROC_DIR is set (workers)."""
    code = (
        "from prometheus_client import values\n"
        "assert values.ValueClass is not values.MutexValue, 'not in multiprocess mode'\n"
        "from tests.unit.proxy.test_metrics_internals import "
        "check_fast_counting_matches_the_public_calls as check, "
        "check_counter_slots_count_as_the_public_calls as slots\n"
        "check()\n"
        "slots(multiprocess=True)\n"
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.glob("*.db")), "no multiprocess value files were written"
