"""routing.split: bucket layout, ratios, stickiness under weight changes, re-mapping."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cutover.routing.murmur import BUCKETS, bucket_of
from cutover.routing.split import SplitTable

ALL = frozenset({"go", "python", "rust"})


def test_first_listed_takes_lowest_buckets() -> None:
    t = SplitTable((("go", 10), ("python", 90)))
    assert t.first == "go"
    assert [t.owner(b) for b in (0, 999, 1000, 9999)] == ["go", "go", "python", "python"]


def test_first_argument_moves_candidate_to_the_front() -> None:
    t = SplitTable((("python", 90), ("rust", 0), ("go", 10)), first="go")
    assert t.names == ("go", "python", "rust")
    assert t.owner(999) == "go"
    assert t.owner(1000) == "python"
    assert t.owner(9999) == "python"


def test_unknown_first_keeps_written_order() -> None:
    t = SplitTable((("python", 90), ("go", 10)), first="elsewhere")
    assert t.names == ("python", "go")


def test_three_way_layout() -> None:
    t = SplitTable((("go", 20), ("python", 30), ("rust", 50)))
    layout = Counter(t.owner(b) for b in range(BUCKETS))
    assert layout == {"go": 2000, "python": 3000, "rust": 5000}
    assert t.owner(1999) == "go" and t.owner(2000) == "python" and t.owner(5000) == "rust"


@pytest.mark.parametrize(
    "split",
    [
        (),
        (("go", 50), ("python", 40)),
        (("go", 50), ("go", 50)),
        (("go", -10), ("python", 110)),
        (("go", 50.0), ("python", 50)),
    ],
)
def test_invalid_splits(split) -> None:
    with pytest.raises(ValueError):
        SplitTable(split)


@pytest.mark.parametrize(
    "weights",
    [(("go", 90), ("python", 10)), (("go", 1), ("python", 99)), (("go", 33), ("python", 67)),
     (("go", 20), ("python", 30), ("rust", 50)), (("go", 100), ("python", 0))],
)  # fmt: skip
def test_ratio_over_random_buckets(weights) -> None:
    t = SplitTable(weights)
    rng = random.Random(7)
    n = 100_000
    counts = Counter(t.pick(rng.randrange(BUCKETS), ALL) for _ in range(n))
    for name, weight in weights:
        assert abs(counts[name] / n * 100 - weight) < 1.0, (name, counts)


def test_ratio_over_hashed_keys() -> None:
    t = SplitTable((("go", 90), ("python", 10)))
    n = 100_000
    counts = Counter(t.pick(bucket_of(f"user-{i}"), ALL) for i in range(n))
    assert abs(counts["python"] / n * 100 - 10) < 1.0
    assert abs(counts["go"] / n * 100 - 90) < 1.0


def test_raising_candidate_weight_only_moves_users_to_it() -> None:
    buckets = [bucket_of(f"user-{i}") for i in range(20_000)]
    on_go: set[int] = set()
    for w in range(0, 101, 5):
        t = SplitTable((("python", 100 - w), ("go", w)), first="go")
        now_go = {i for i, b in enumerate(buckets) if t.pick(b, ALL) == "go"}
        assert on_go <= now_go, f"a user left go when its weight rose to {w}"
        on_go = now_go
    assert len(on_go) == len(buckets)


def test_monotonic_with_three_backends_every_step() -> None:
    # candidate rises 0 -> 100 by 1; the others lose weight in any pattern
    rng = random.Random(3)
    previous: set[int] = set()
    for w in range(101):
        rest = 100 - w
        a = rng.randint(0, rest)
        t = SplitTable((("python", a), ("rust", rest - a), ("go", w)), first="go")
        owned = {b for b in range(BUCKETS) if t.owner(b) == "go"}
        assert owned == set(range(w * 100))
        assert previous <= owned
        previous = owned


def test_unavailable_backend_remaps_only_its_own_users() -> None:
    t = SplitTable((("go", 50), ("python", 30), ("rust", 20)))
    up = frozenset({"go", "rust"})
    moved = Counter()
    for b in range(BUCKETS):
        owner = t.owner(b)
        got = t.pick(b, up)
        if owner in up:
            assert got == owner  # users of a healthy backend never move
        else:
            moved[got] += 1
    # python's 3000 buckets go to go/rust in proportion 50:20
    assert sum(moved.values()) == 3000
    assert abs(moved["go"] / 3000 - 50 / 70) < 0.01
    assert abs(moved["rust"] / 3000 - 20 / 70) < 0.01


def test_remap_is_stable_and_accepts_sets() -> None:
    t = SplitTable((("go", 50), ("python", 50)))
    for b in range(0, BUCKETS, 7):
        assert t.pick(b, {"python"}) == "python"
        assert t.pick(b, frozenset({"python", "unknown"})) == "python"


def test_none_when_no_weighted_backend_is_available() -> None:
    t = SplitTable((("go", 100), ("python", 0)))
    assert t.pick(5, frozenset({"python"})) is None
    assert t.pick(5, frozenset()) is None
    assert t.pick(5, frozenset({"go"})) == "go"


def test_remap_cache_is_bounded() -> None:
    names = [f"b{i}" for i in range(10)]
    t = SplitTable(tuple((n, 10) for n in names))
    rng = random.Random(1)
    for _ in range(500):
        up = frozenset(rng.sample(names, rng.randint(1, 9)))
        b = rng.randrange(BUCKETS)
        assert t.pick(b, up) in up
    assert len(t._remaps) <= 64
