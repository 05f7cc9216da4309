"""Which text the durable store can hold, and how free text is made to fit. Pure.

PostgreSQL `text` cannot hold NUL (U+0000), and neither store can encode an unpaired surrogate
(what an undecodable byte of a header or a path becomes once decoded with `surrogateescape`).
PostgreSQL also refuses index entries above about 2.7 kB, and fingerprints are indexed.
Both refusals surface as exceptions deep in a transaction, so values are checked before:

- identity values (an alert's fingerprint and alertname) are refused, with a 400 that names the
  field: `identity_problem` says what is expected instead. Storing them changed would give the
  alert another identity than the one its sender knows.
- free text (a user agent, a request path, a reason) is stored escaped: `storable`.

Everything inside a JSON document (labels, annotations, URLs, ...) needs neither: JSON writes
NUL as `\\u0000`, and the JSON decoder refuses unpaired surrogates.
"""

from __future__ import annotations

import re

__all__ = ["MAX_KEY", "identity_problem", "storable"]

MAX_KEY = 256  # characters of an indexed identity value (4 bytes each at most: far below 2.7 kB)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def identity_problem(text: str, *, limit: int | None = None) -> str | None:
    """What an identity value must be instead of `text`, or None when the store can hold it."""
    too_long = limit is not None and len(text) > limit
    if not too_long and _UNSTORABLE.search(text) is None:
        return None
    size = f" of at most {limit} characters" if limit is not None else ""
    return f"a string{size} without NUL (\\u0000) or unpaired surrogates"


def storable(text: str) -> str:
    """`text` as the store can hold it: NUL written `\\x00`, an undecodable byte (a surrogate
    escape) `\\xNN`, any other unpaired surrogate `\\uNNNN`; other text unchanged."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(_escape, text)


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    if code == 0:
        return "\\x00"
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"
