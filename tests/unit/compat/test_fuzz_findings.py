"""What the compat fuzzer (test_fuzz_compat.py) found, one minimal case each: conversions that
raised something other than `TransformError` (a 500 instead of the rule's 400/502), or produced
a number the gateway cannot write back as JSON, and a config value no JSON body can hold."""

from __future__ import annotations

import orjson
import pytest

from cutover.compat.jsonops import Convert, TransformError, apply
from cutover.core.configkit import ConfigErrors
from cutover.proxy.config import parse_config


@pytest.mark.parametrize("to", ["epoch", "epoch_ms"])
@pytest.mark.parametrize("value", ["1e400", "inf", "-inf", "nan"])
def test_a_time_that_is_not_finite_is_a_transform_error(to: str, value: str) -> None:
    # was: OverflowError (or ValueError from int(nan)) escaping the operation
    with pytest.raises(TransformError, match="expected a time"):
        apply([Convert(("t",), to)], {"t": value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("to", "value"),
    [("epoch_ms", 2**63 - 1), ("epoch_ms", 1e300), ("epoch", 1e300), ("integer", "1e300")],
)
def test_a_conversion_past_64_bits_is_a_transform_error(to: str, value: object) -> None:
    # was: an int orjson refuses to write (TypeError when the answer was sent)
    with pytest.raises(TransformError, match="within 64 bits"):
        apply([Convert(("t",), to)], {"t": value})  # type: ignore[arg-type]


def test_conversions_within_range_still_work() -> None:
    doc = {"a": "2025-04-01T00:00:00Z", "b": 1_700_000_000, "c": "42"}
    ops = [Convert(("a",), "epoch"), Convert(("b",), "epoch_ms"), Convert(("c",), "integer")]
    out = apply(ops, doc)  # type: ignore[arg-type]
    assert out == {"a": 1743465600, "b": 1_700_000_000_000, "c": 42}
    orjson.dumps(out)


def test_a_set_value_beyond_64_bits_is_refused_at_its_key() -> None:
    # was: accepted, and every answer the rule transformed failed to be written (a 500)
    data = {
        "backends": {"go": "http://go:8080", "python": "http://python:8080"},
        "routes": [{"name": "default", "split": {"go": 100}}],
        "compat": {
            "backends": {"new": "go", "legacy": "python"},
            "rules": [{"name": "r", "match": {"path": "/x"},
                       "rewrite": {"body": [{"set": {"a": 2**64}}]}}],
        },
    }  # fmt: skip
    with pytest.raises(ConfigErrors) as info:
        parse_config(data, "c.yaml", env={})
    (error,) = info.value.errors
    assert error.path == "compat.rules[0].rewrite.body[0].set.a"
    assert "a number within 64 bits" in error.expected
