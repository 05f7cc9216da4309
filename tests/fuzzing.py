"""What the property-based fuzz tests share: their Hypothesis profile and hostile values.

Two profiles, chosen by `CUTOVER_FUZZ`:

- `ci` (the default): each target's own budget of examples (a few thousand at most), so the
  fuzzers run with every test run;
- `long`: twenty times that, to run by hand (`CUTOVER_FUZZ=long python -m pytest -k fuzz`).

A failing example is printed with the seed to reproduce it (`@reproduce_failure`), and kept in
`.hypothesis/` so the next run tries it first.
"""

from __future__ import annotations

import os
import random
import string
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = {"ci": 1, "long": 20}
PROFILE = os.environ.get("CUTOVER_FUZZ", "ci")
if PROFILE not in SCALE:
    raise RuntimeError(f"CUTOVER_FUZZ={PROFILE!r}: expected one of {', '.join(SCALE)}")

for _name in SCALE:
    settings.register_profile(
        f"cutover-{_name}",
        deadline=None,  # examples run on real sockets and stores: time is not the property
        print_blob=True,
        # One gateway serves every example of a test, on purpose (it is the expensive part).
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def fuzz(examples: int) -> settings:
    """Settings for a fuzz test whose CI budget is `examples` (scaled by the profile)."""
    return settings(
        settings.get_profile(f"cutover-{PROFILE}"), max_examples=examples * SCALE[PROFILE]
    )


# -- hostile values -------------------------------------------------------------------------

# Strings that broke, or could break, something on the way to a store or a parser.
NASTY_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 3,
    "\r\n",
    "\t",
    "\x7f\x1b[31m",
    "\u2028\u2029",
    "\ufeff",
    "\ufffd",
    "é",
    "😀",
    "\U0010ffff",
    "null",
    "true",
    "0",
    "-1",
    "1e400",
    "NaN",
    "firing",
    "resolved",
    "FIRING",
    "alertname",
    "$",
    "${HOME}",
    "%00",
    "../../etc/passwd",
    "' OR 1=1 --",
    "\\",
    '"',
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-00:01",
    "2026-01-02T03:04:05+99:99",
    "2026-01-02T03:04:05-23:59",
    "2026-02-30T00:00:00Z",
    "2026-01-02T03:04:60Z",
    "2026-01-02T03:04:05." + "9" * 40 + "Z",
)

# Numbers at the edges of what JSON, orjson, Python and the stores make of them.
NASTY_NUMBERS = (
    0,
    -0.0,
    1,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64 - 1,
    1.5,
    1e-300,
    1e300,
    -1e308,
    1e11,
    253402300800,
)


def text() -> st.SearchStrategy[str]:
    """Any string JSON can carry (no lone surrogates: the encoder refuses them), hostile ones
    often."""
    return st.one_of(
        st.sampled_from(NASTY_STRINGS),
        st.text(max_size=20),
        st.text(alphabet=string.printable + "\x00\x01\x7f\u00e9\u2028\U0001f600", max_size=40),
        st.builds(str.__mul__, st.sampled_from(["x", "\x00", "é"]), st.integers(200, 6000)),
        st.builds(_noise, st.integers(0, 2**32), st.sampled_from([100, 300, 3000, 10000])),
    )


def _noise(seed: int, size: int) -> str:
    """`size` characters that do not compress (PostgreSQL compresses long text before
    indexing it, so only such text finds the index's size limit)."""
    return "".join(random.Random(seed).choices(string.ascii_letters + string.digits, k=size))


def numbers() -> st.SearchStrategy[int | float]:
    return st.one_of(
        st.sampled_from(NASTY_NUMBERS),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(), numbers(), text())


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """JSON documents of any shape, built from hostile scalars."""
    return st.recursive(
        scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(text(), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def nested(value: Any, depth: int, kind: str = "list") -> Any:
    """`value` wrapped `depth` levels deep in lists (or objects)."""
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value
