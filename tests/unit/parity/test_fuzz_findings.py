"""What the parity diff fuzzer (test_fuzz_diff.py) found: items of arrays paired by a key were
paired by Python equality (`true == 1`) and named by each side's own spelling (`0`, `-0.0`), so
the report depended on which side was the primary."""

from __future__ import annotations

from typing import Any

import orjson

from cutover.parity.diff import Difference, DiffRules, Reply, compare, compile_pattern

BY_ID = DiffRules(array_keys=((compile_pattern("$"), "id"),))


def diff(left: Any, right: Any) -> list[tuple[str, str]]:
    a = Reply(200, {"content-type": "application/json"}, orjson.dumps(left))
    b = Reply(200, {"content-type": "application/json"}, orjson.dumps(right))
    return sorted((d.path, d.kind) for d in compare(a, b, BY_ID))


def test_a_true_key_and_a_1_key_are_different_items() -> None:
    # was: paired, and reported as a type difference at $[id=true].id (or $[id=1].id)
    assert diff([{"id": True}], [{"id": 1}]) == [("$[id=1]", "extra"), ("$[id=true]", "missing")]


def test_equal_numbers_pair_and_are_named_alike_both_ways() -> None:
    # was: $[id=-0.0].a one way and $[id=0].a the other
    left, right = [{"id": -0.0, "a": 1}], [{"id": 0, "a": 2}]
    assert diff(left, right) == diff(right, left) == [("$[id=0].a", "value")]
    assert diff([{"id": 1.0, "a": 1}], [{"id": 1, "a": 1}]) == []


def test_keys_of_other_types_still_pair() -> None:
    out = compare(
        Reply(200, {}, orjson.dumps({"x": [{"id": "a", "v": 1}, {"id": None, "v": 1}]})),
        Reply(200, {}, orjson.dumps({"x": [{"id": None, "v": 2}, {"id": "a", "v": 1}]})),
        DiffRules(array_keys=((compile_pattern("$.x"), "id"),)),
    )
    assert out == [Difference("$.x[id=null].v", "value", 1, 2)]
