"""Diffy's rule: a field is reported only when candidate differences beat the primary's noise."""

from __future__ import annotations

import pytest

from cutover.parity.noise import Sample, Thresholds, analyse, is_reported


def samples(endpoint: str, n: int, raw: dict[str, int], noise: dict[str, int]) -> list[Sample]:
    """n samples; field f differs (raw) in the first raw[f] of them, noise likewise."""
    out = []
    for i in range(n):
        out.append(
            Sample(
                endpoint,
                {f: "value" for f, k in raw.items() if i < k},
                frozenset(f for f, k in noise.items() if i < k),
            )
        )
    return out


@pytest.mark.parametrize(
    ("raw", "noise", "total", "reported"),
    [
        (10, 0, 10, True),  # always different, never noisy
        (10, 10, 10, False),  # a random id: as noisy as it is different
        (6, 5, 10, False),  # relative 9% < 20%
        (8, 2, 10, True),  # relative 60%, absolute 60%
        (0, 0, 10, False),
        (3, 4, 10, False),  # raw must be above noise
    ],
)
def test_rule(raw: int, noise: int, total: int, reported: bool) -> None:
    assert is_reported(raw, noise, total, Thresholds())[0] is reported


def test_thresholds_are_percentages() -> None:
    ok, relative, absolute = is_reported(3, 1, 100, Thresholds(relative=40, absolute=1))
    assert (relative, absolute) == (50.0, 2.0) and ok
    assert not is_reported(3, 1, 100, Thresholds(relative=60, absolute=1))[0]
    assert not is_reported(3, 1, 100, Thresholds(relative=40, absolute=2))[0]


def test_analyse_ranks_fields_and_counts_differing_requests() -> None:
    data = samples("GET /a", 10, {"$.x": 10, "$.id": 10, "$.y": 4}, {"$.id": 10})
    data += samples("GET /b", 4, {}, {"$.id": 4})
    a, b = analyse(data)
    assert a.endpoint == "GET /a" and b.endpoint == "GET /b"  # highest diff rate first
    assert [f.field for f in a.reported] == ["$.x", "$.y"]
    assert [(f.field, f.reported) for f in a.fields] == [
        ("$.x", True),
        ("$.y", True),
        ("$.id", False),
    ]
    assert a.differing == 10 and a.diff_rate == 1.0
    assert a.noise_samples == 10
    assert b.diff_rate == 0.0 and b.reported == ()
    assert a.fields[0].kinds == {"value": 10}


def test_a_request_differing_only_in_noise_does_not_count() -> None:
    data = samples("GET /a", 10, {"$.x": 2, "$.id": 10}, {"$.id": 10})
    (a,) = analyse(data)
    assert a.differing == 2 and a.diff_rate == pytest.approx(0.2)


def test_samples_without_noise_compare_against_zero() -> None:
    data = [Sample("GET /a", {"$.id": "value"}, None) for _ in range(5)]
    (a,) = analyse(data)
    assert a.noise_samples == 0 and [f.field for f in a.reported] == ["$.id"]
