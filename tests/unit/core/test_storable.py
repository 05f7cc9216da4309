"""core.storable: what the store can hold; alerts.webhook_formats.parse_time's bounds."""

from __future__ import annotations

import pytest

from cutover.alerts.webhook_formats import parse_time
from cutover.core.storable import MAX_KEY, identity_problem, storable


@pytest.mark.parametrize("text", ["", "DiskFull", "1481b3e4e23664d0", "ü€😀", "a\x01\x7f"])
def test_text_the_store_holds_is_an_identity_and_stored_as_is(text: str) -> None:
    assert identity_problem(text, limit=MAX_KEY) is None
    assert storable(text) is text


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\ud800", "x\udcff"])
def test_nul_and_unpaired_surrogates_are_no_identity(text: str) -> None:
    assert identity_problem(text) == "a string without NUL (\\u0000) or unpaired surrogates"


def test_identity_length_counts_characters() -> None:
    assert identity_problem("é" * MAX_KEY, limit=MAX_KEY) is None
    assert identity_problem("é" * (MAX_KEY + 1), limit=MAX_KEY) == (
        f"a string of at most {MAX_KEY} characters without NUL (\\u0000) or unpaired surrogates"
    )


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("a\x00b", "a\\x00b"),
        ("Mozilla\udcff\udcfe", "Mozilla\\xff\\xfe"),  # bytes 0xff 0xfe under surrogateescape
        ("\ud800x", "\\ud800x"),
    ],
)
def test_free_text_is_escaped_into_what_both_stores_encode(text: str, stored: str) -> None:
    assert storable(text) == stored
    stored.encode("utf-8")  # both drivers encode text as UTF-8


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1970-01-01T00:00:00Z", 0.0),
        ("1970-01-01T01:00:00+01:00", 0.0),
        ("1970-01-01T00:00:00-23:59", 86340.0),
        ("0001-01-01T00:00:00Z", -62135596800.0),
        ("9999-12-31T23:59:59Z", 253402300799.0),
    ],
)
def test_parse_time_within_bounds(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T00:00:00+24:00",
        "2026-01-01T00:00:00-00:60",
        "0001-01-01T00:59:59+01:00",
        "9999-12-31T23:00:00-01:00",
        "0000-06-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
    ],
)
def test_parse_time_refuses_what_utc_cannot_name(text: str) -> None:
    assert parse_time(text) is None
