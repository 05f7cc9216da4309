"""The parity window's running counts give exactly the rate a full analysis gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cutover.parity.noise import Sample, Thresholds, analyse, diff_rate
from cutover.parity.window import ResultWindow
from tests.fuzzing import fuzz

FIELDS = ["$.a", "$.b", "$.c", "$.d", "header.date"]
KINDS = ["value", "missing", "type"]
samples = st.builds(
    Sample,
    st.sampled_from(["GET /a", "GET /b/{id}", "POST /c"]),
    st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(KINDS), max_size=3),
    st.one_of(st.none(), st.frozensets(st.sampled_from(FIELDS), max_size=3)),
)
thresholds = st.builds(
    Thresholds,
    st.floats(0, 100, allow_nan=False),
    st.floats(0, 100, allow_nan=False),
)


@given(
    size=st.integers(1, 40),
    stream=st.lists(samples, max_size=150),
    th=thresholds,
)
@fuzz(400)
def test_the_running_rate_is_the_full_analysis_rate(
    size: int, stream: list[Sample], th: Thresholds
) -> None:
    window = ResultWindow(size)
    for i, sample in enumerate(stream):
        window.append((i, sample))
        kept = stream[max(0, i + 1 - size) : i + 1]
        assert window.samples() == kept
        assert window.rate(th) == diff_rate(analyse(kept, th))
    assert len(window) == min(size, len(stream))


def test_an_empty_window_has_nothing_reported() -> None:
    assert ResultWindow(5).rate(Thresholds()) == 1.0


def test_a_real_difference_leaves_when_its_samples_are_pushed_out() -> None:
    window = ResultWindow(4)
    for i in range(4):
        window.append((i, Sample("GET /a", {"$.a": "value"}, frozenset())))
    assert window.rate(Thresholds()) == 0.0
    for i in range(4, 7):
        window.append((i, Sample("GET /a", {}, frozenset())))
    assert window.rate(Thresholds()) == 0.75  # one differing sample of four left
    window.append((7, Sample("GET /a", {}, frozenset())))
    assert window.rate(Thresholds()) == 1.0


def test_noise_as_large_as_the_difference_hides_it() -> None:
    window = ResultWindow(10)
    for i in range(10):
        window.append((i, Sample("GET /a", {"$.ts": "value"}, frozenset({"$.ts"}))))
    assert window.rate(Thresholds()) == 1.0


def s(field: str | None = None) -> Sample:
    return Sample("GET /a", {field: "value"} if field else {}, frozenset())


def test_merge_adds_the_other_workers_rows_once_and_never_this_workers_own() -> None:
    window = ResultWindow(10, [(1, s()), (2, s())], top=2)  # read from the store
    window.append((4, s("$.mine")))  # this worker's, stored as 4
    window.append((None, s()))  # this worker's, not stored
    # the next read: 3 and 5 are another worker's, 4 is this worker's own
    window.merge([(3, s("$.other")), (4, s("$.mine")), (5, s())])
    assert [i for i, _ in window] == [1, 2, 4, None, 3, 5]
    assert window.top == 5
    window.append((7, s()))  # stored after that read ran
    window.merge([(6, s())])  # a read that ran before 7 was written
    assert [i for i, _ in window] == [1, 2, 4, None, 3, 5, 7, 6]
    window.merge([(7, s()), (8, s())])  # 7 is still known as this worker's own
    assert [i for i, _ in window] == [1, 2, 4, None, 3, 5, 7, 6, 8]
    assert window.top == 8


def test_an_own_row_pushed_out_of_the_window_is_not_read_back() -> None:
    window = ResultWindow(2, [], top=0)
    for i in (1, 2, 3):
        window.append((i, s()))  # 1 leaves the window
    window.merge([(1, s()), (2, s()), (3, s())])
    assert [i for i, _ in window] == [2, 3]
