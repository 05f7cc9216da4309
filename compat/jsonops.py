"""JSON-aware transforms of request and response bodies, as a list of small operations. Pure.

A document is what `orjson.loads` returns. Paths are dotted keys relative to the current value
(`data.alerts`, `status.state`); `""` or `"."` is the current value itself. Each operation is
lenient about absent keys (it does nothing) and strict about wrong shapes (a `TransformError`
that names the operation), so a backend answer that is not what the rule expects fails closed.

    ops = (Unwrap("", "data"), Drop(("page", "limit")), Each("alerts", (Copy("labels.alertname",
           "alertname"),)))
    doc = apply(ops, doc)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "CONVERSIONS",
    "NO_FACTS",
    "SEVERITY_NAMES",
    "ZONES",
    "Condition",
    "Convert",
    "Copy",
    "Default",
    "Drop",
    "Each",
    "EmptyToNull",
    "Facts",
    "Keep",
    "Length",
    "Move",
    "NullToEmpty",
    "Op",
    "Rename",
    "Set",
    "StatusSet",
    "Time",
    "ToArray",
    "TransformError",
    "Unwrap",
    "Values",
    "When",
    "Wrap",
    "apply",
    "get_path",
    "reformat_time",
    "split_path",
]

# Numeric severity 1-4 and the classification names (spec digest §3.2).
SEVERITY_NAMES: dict[int, str] = {1: "critical", 2: "warning", 3: "info", 4: "noise"}
_SEVERITY_NUMBERS = {name: n for n, name in SEVERITY_NAMES.items()}

Conversion = Literal[
    "severity_name",
    "severity_number",
    "epoch",
    "epoch_ms",
    "rfc3339",
    "string",
    "integer",
    "number",
]
CONVERSIONS: tuple[str, ...] = (
    "severity_name",
    "severity_number",
    "epoch",
    "epoch_ms",
    "rfc3339",
    "string",
    "integer",
    "number",
)


class TransformError(Exception):
    """A document did not have the shape an operation needs."""

    def __init__(self, op: str, message: str) -> None:
        super().__init__(f"{op}: {message}")
        self.op = op
        self.message = message


Keys = tuple[str, ...]


def split_path(text: str) -> Keys:
    """`a.b.c` -> ("a", "b", "c"); `""` and `"."` -> () (the current value)."""
    if text in ("", "."):
        return ()
    return tuple(text.split("."))


def _show(keys: Keys) -> str:
    return ".".join(keys) or "."


def get_path(doc: Any, keys: Keys) -> tuple[bool, Any]:
    """(found, value) at the dotted `keys` of `doc`."""
    cur = doc
    for key in keys:
        if not isinstance(cur, dict) or key not in cur:
            return False, None
        cur = cur[key]
    return True, cur


def _parent(doc: Any, keys: Keys, op: str, create: bool) -> dict[str, Any] | None:
    """The object holding the last key of `keys` (created when `create`); None when absent."""
    cur = doc
    for i, key in enumerate(keys[:-1]):
        if not isinstance(cur, dict):
            raise TransformError(op, f"{_show(keys[:i]) or 'the document'} is not an object")
        nxt = cur.get(key)
        if nxt is None:
            if not create:
                return None
            nxt = cur[key] = {}
        cur = nxt
    if not isinstance(cur, dict):
        where = _show(keys[:-1]) if len(keys) > 1 else "the document"
        raise TransformError(op, f"{where} is not an object")
    return cur


def _set(doc: Any, keys: Keys, value: Any, op: str) -> Any:
    if not keys:
        return value
    parent = _parent(doc, keys, op, create=True)
    assert parent is not None
    parent[keys[-1]] = value
    return doc


def _pop(doc: Any, keys: Keys, op: str) -> tuple[bool, Any]:
    if not keys:
        raise TransformError(op, "cannot remove the document itself")
    if not isinstance(doc, dict):
        return False, None
    parent = _parent(doc, keys, op, create=False)
    if parent is None or keys[-1] not in parent:
        return False, None
    return True, parent.pop(keys[-1])


@dataclass(frozen=True, slots=True)
class Facts:
    """What a condition may look at beside the document: the answer's status (None while a
    request body is transformed, where no answer exists yet)."""

    status: int | None = None


NO_FACTS = Facts()


class Op:
    """One operation: `apply(doc, facts)` returns the new document (it may change `doc` in
    place)."""

    __slots__ = ()
    name = "op"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Rename(Op):
    """Give the key at `path` a new name in the same object."""

    path: Keys
    new_name: str
    name = "rename"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, value = _pop(doc, self.path, self.name)
        if found:
            doc = _set(doc, (*self.path[:-1], self.new_name), value, self.name)
        return doc


@dataclass(frozen=True, slots=True)
class Move(Op):
    """Move the value at `source` to `target` (the parent objects are created)."""

    source: Keys
    target: Keys
    name = "move"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        if not self.source:
            return _set({}, self.target, doc, self.name) if self.target else doc
        found, value = _pop(doc, self.source, self.name)
        return _set(doc, self.target, value, self.name) if found else doc


@dataclass(frozen=True, slots=True)
class Copy(Op):
    """Copy the value at `source` to `target`."""

    source: Keys
    target: Keys
    name = "copy"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, value = get_path(doc, self.source)
        if not found:
            return doc
        if isinstance(value, dict | list):
            value = _deepcopy(value)
        return _set(doc, self.target, value, self.name)


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Drop(Op):
    """Remove the keys at `paths` (absent ones are ignored)."""

    paths: tuple[Keys, ...]
    name = "drop"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        for keys in self.paths:
            _pop(doc, keys, self.name)
        return doc


@dataclass(frozen=True, slots=True)
class Keep(Op):
    """Keep only `keys` of the object at `path`."""

    path: Keys
    keys: frozenset[str]
    name = "keep"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, obj = get_path(doc, self.path)
        if not found:
            return doc
        if not isinstance(obj, dict):
            raise TransformError(self.name, f"{_show(self.path)} is not an object")
        for key in [k for k in obj if k not in self.keys]:
            del obj[key]
        return doc


@dataclass(frozen=True, slots=True)
class Set(Op):
    """Put `value` at `path`, whatever was there."""

    path: Keys
    value: Any
    name = "set"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        return _set(doc, self.path, _deepcopy(self.value), self.name)


@dataclass(frozen=True, slots=True)
class Default(Op):
    """Put `value` at `path` when it is absent or null."""

    path: Keys
    value: Any
    name = "default"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, current = get_path(doc, self.path)
        if found and current is not None:
            return doc
        return _set(doc, self.path, _deepcopy(self.value), self.name)


@dataclass(frozen=True, slots=True)
class Wrap(Op):
    """Replace the value at `path` with `{key: value}`."""

    path: Keys
    key: str
    name = "wrap"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, value = get_path(doc, self.path)
        if not found:
            return doc
        return _set(doc, self.path, {self.key: value}, self.name)


@dataclass(frozen=True, slots=True)
class Unwrap(Op):
    """Replace the object at `path` with the value of its `key` (which must be there)."""

    path: Keys
    key: str
    name = "unwrap"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, obj = get_path(doc, self.path)
        if not found:
            return doc
        if not isinstance(obj, dict) or self.key not in obj:
            raise TransformError(self.name, f"no key {self.key!r} in {_show(self.path)}")
        return _set(doc, self.path, obj[self.key], self.name)


@dataclass(frozen=True, slots=True)
class Each(Op):
    """Apply `ops` to every item of the array at `path`."""

    path: Keys
    ops: tuple[Op, ...]
    name = "each"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, items = get_path(doc, self.path)
        if not found or items is None:
            return doc
        if not isinstance(items, list):
            raise TransformError(self.name, f"{_show(self.path)} is not an array")
        out = [apply(self.ops, item, facts) for item in items]
        return _set(doc, self.path, out, self.name)


@dataclass(frozen=True, slots=True)
class Values(Op):
    """Map the value at `path` through `table` (values not in the table stay as they are)."""

    path: Keys
    table: tuple[tuple[Any, Any], ...]
    name = "values"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, value = get_path(doc, self.path)
        if not found or isinstance(value, dict | list):
            return doc
        for src, dst in self.table:
            if value == src and type(value) is type(src):
                return _set(doc, self.path, dst, self.name)
        return doc


@dataclass(frozen=True, slots=True)
class Length(Op):
    """Put the length of the array at `source` at `target`."""

    source: Keys
    target: Keys
    name = "length"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, items = get_path(doc, self.source)
        if not found:
            return doc
        if not isinstance(items, list):
            raise TransformError(self.name, f"{_show(self.source)} is not an array")
        return _set(doc, self.target, len(items), self.name)


@dataclass(frozen=True, slots=True)
class Convert(Op):
    """Change the representation of the value at `path` (null stays null)."""

    path: Keys
    to: Conversion
    name = "convert"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, value = get_path(doc, self.path)
        if not found or value is None:
            return doc
        try:
            converted = convert(value, self.to)
        except ValueError as exc:
            raise TransformError(self.name, f"{_show(self.path)}: {exc}") from None
        return _set(doc, self.path, converted, self.name)


@dataclass(frozen=True, slots=True)
class EmptyToNull(Op):
    """Replace an empty array at each of `paths` with null (other values stay as they are)."""

    paths: tuple[Keys, ...]
    name = "empty_to_null"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        for keys in self.paths:
            found, value = get_path(doc, keys)
            if found and isinstance(value, list) and not value:
                doc = _set(doc, keys, None, self.name)
        return doc


@dataclass(frozen=True, slots=True)
class NullToEmpty(Op):
    """Replace null at each of `paths` with an empty array (the reverse of `EmptyToNull`)."""

    paths: tuple[Keys, ...]
    name = "null_to_empty"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        for keys in self.paths:
            found, value = get_path(doc, keys)
            if found and value is None:
                doc = _set(doc, keys, [], self.name)
        return doc


@dataclass(frozen=True, slots=True)
class ToArray(Op):
    """Put the value at each of `paths` into a one-item array; an array or null stays as it is,
    so the operation can run twice."""

    paths: tuple[Keys, ...]
    name = "to_array"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        for keys in self.paths:
            found, value = get_path(doc, keys)
            if found and value is not None and not isinstance(value, list):
                doc = _set(doc, keys, [value], self.name)
        return doc


@dataclass(frozen=True, slots=True)
class StatusSet:
    """Status codes and classes (4 for 4xx); empty means none."""

    codes: frozenset[int] = frozenset()
    classes: frozenset[int] = frozenset()

    def holds(self, status: int | None) -> bool:
        if status is None:
            return False
        return status in self.codes or status // 100 in self.classes


@dataclass(frozen=True, slots=True)
class Condition:
    """Every part given must hold: the answer's status, keys present or absent, values equal."""

    status: StatusSet | None = None
    present: tuple[Keys, ...] = ()
    absent: tuple[Keys, ...] = ()
    equals: tuple[tuple[Keys, Any], ...] = ()

    def holds(self, doc: Any, facts: Facts) -> bool:
        if self.status is not None and not self.status.holds(facts.status):
            return False
        if not all(get_path(doc, keys)[0] for keys in self.present):
            return False
        if any(get_path(doc, keys)[0] for keys in self.absent):
            return False
        for keys, expected in self.equals:
            found, value = get_path(doc, keys)
            if not found or not _same(value, expected):
                return False
        return True


def _same(a: Any, b: Any) -> bool:
    """JSON equality: `1` is not `true`, nor `1.0` `1` (`b` comes from the config: bounded)."""
    if isinstance(b, dict):
        return (
            isinstance(a, dict)
            and a.keys() == b.keys()
            and all(_same(a[k], v) for k, v in b.items())
        )
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@dataclass(frozen=True, slots=True)
class When(Op):
    """Run `then` when `condition` holds for the current value, else `otherwise`."""

    condition: Condition
    then: tuple[Op, ...]
    otherwise: tuple[Op, ...] = ()
    name = "when"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        ops = self.then if self.condition.holds(doc, facts) else self.otherwise
        return apply(ops, doc, facts)


Zone = Literal["Z", "+00:00", "keep"]
ZONES: tuple[str, ...] = ("Z", "+00:00", "keep")


@dataclass(frozen=True, slots=True)
class Time(Op):
    """Rewrite the RFC 3339 timestamp (or unix seconds) at `path`: fraction digits (`digits`,
    None = as given), trailing zeros trimmed or not, and the zone (`Z`, `+00:00`, or as given).
    Null stays null; anything else that is not a time fails the transform."""

    path: Keys
    digits: int | None = None
    trim: bool = False
    zone: Zone = "Z"
    name = "time"

    def apply(self, doc: Any, facts: Facts = NO_FACTS) -> Any:
        found, value = get_path(doc, self.path)
        if not found or value is None:
            return doc
        try:
            text = reformat_time(value, self.digits, self.trim, self.zone)
        except ValueError as exc:
            raise TransformError(self.name, f"{_show(self.path)}: {exc}") from None
        return _set(doc, self.path, text, self.name)


_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,64}))?([Zz]|[+-]\d{2}:\d{2})"
)


def _time_parts(value: Any) -> tuple[datetime, str, str]:
    """(whole seconds, fraction digits, zone as given) of an RFC 3339 string or unix seconds."""
    if isinstance(value, str) and len(value) <= 100:
        m = _RFC3339.fullmatch(value.strip())
        if m is not None:
            day, clock, fraction, zone = m.groups()
            zone = "Z" if zone in "Zz" else zone
            try:
                whole = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if zone == 'Z' else zone}")
            except ValueError:
                pass
            else:
                return whole, (fraction or "")[:9], zone
        raise ValueError(f"expected an RFC 3339 timestamp, got {value[:64]!r}")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = math.floor(value)
        nanos = round((value - seconds) * 1e9) if isinstance(value, float) else 0
        if nanos >= 1_000_000_000:
            seconds, nanos = seconds + 1, 0
        try:
            whole = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"expected a time, got {value!r}") from None
        return whole, f"{nanos:09d}".rstrip("0"), "Z"
    raise ValueError(f"expected an RFC 3339 timestamp or unix seconds, got {_kind_of(value)}")


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return repr(value)[:64]


def reformat_time(value: Any, digits: int | None, trim: bool, zone: str) -> str:
    """One timestamp in the requested form (see `Time`); raises ValueError when not a time."""
    whole, fraction, given = _time_parts(value)
    if zone != "keep":
        try:
            whole = whole.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValueError(f"a time outside years 1-9999 in UTC: {value!r}") from None
        given = zone
    if digits is not None:
        fraction = fraction[:digits].ljust(digits, "0")
    if trim:
        fraction = fraction.rstrip("0")
    text = whole.strftime("%Y-%m-%dT%H:%M:%S")
    if whole.year < 1000:  # strftime does not pad the year on every platform
        text = f"{whole.year:04d}{text[text.index('-') :]}"
    return f"{text}.{fraction}{given}" if fraction else f"{text}{given}"


def apply(ops: Sequence[Op], doc: Any, facts: Facts = NO_FACTS) -> Any:
    """Run `ops` in order over `doc`.

    A document nested deeper than Python's recursion allows (orjson reads 1024 levels) fails
    like a wrong shape, as a `TransformError`, never as an unexpected exception.
    """
    try:
        for op in ops:
            doc = op.apply(doc, facts)
    except RecursionError:
        raise TransformError("apply", "the document is nested too deeply") from None
    return doc


# -- representations -----------------------------------------------------------------------


def _number_of(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


def parse_rfc3339(text: str) -> datetime:
    """RFC 3339 (`Z` or an offset, any number of fraction digits) to an aware datetime."""
    raw = text.strip().replace("z", "Z")
    body = raw[:-1] + "+00:00" if raw.endswith("Z") else raw
    if "." in body:
        head, _, rest = body.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        body = f"{head}.{rest[: min(digits, 6)].ljust(6, '0')}{rest[digits:]}" if digits else body
    try:
        parsed = datetime.fromisoformat(body)
    except ValueError:
        raise ValueError(f"expected an RFC 3339 timestamp, got {text!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"expected an RFC 3339 timestamp with a time zone, got {text!r}")
    return parsed


def format_rfc3339(seconds: float) -> str:
    """Epoch seconds to RFC 3339 in UTC (`2025-04-01T00:00:00Z`; fractions only when present)."""
    dt = datetime.fromtimestamp(seconds, UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


def _json_int(number: int, value: Any) -> int:
    """`number`, if JSON as the gateway writes it can hold it (orjson: 64 bits)."""
    if not -(2**63) <= number < 2**64:
        raise ValueError(f"expected a number within 64 bits once converted, got {value!r}")
    return number


def convert(value: Any, to: str) -> Any:
    """One representation change; raises ValueError when `value` cannot take it."""
    if to == "severity_name":
        if isinstance(value, str) and value in _SEVERITY_NUMBERS:
            return value
        number = _number_of(value)
        if number not in SEVERITY_NAMES:
            raise ValueError(f"expected a severity from 1 to 4, got {value!r}")
        return SEVERITY_NAMES[int(number)]
    if to == "severity_number":
        if isinstance(value, str) and value.lower() in _SEVERITY_NUMBERS:
            return _SEVERITY_NUMBERS[value.lower()]
        number = _number_of(value)
        if number not in SEVERITY_NAMES:
            raise ValueError(f"expected critical, warning, info or noise, got {value!r}")
        return int(number)
    if to in ("epoch", "epoch_ms"):
        if isinstance(value, str):
            try:
                seconds = parse_rfc3339(value).timestamp()
            except (ValueError, OverflowError):
                seconds = _number_of(value)
        else:
            seconds = _number_of(value)
        if not math.isfinite(seconds):
            raise ValueError(f"expected a time, got {value!r}")
        if to == "epoch_ms":
            return _json_int(round(seconds * 1000), value)
        return _json_int(int(seconds), value) if seconds == int(seconds) else seconds
    if to == "rfc3339":
        if isinstance(value, str):
            try:
                return format_rfc3339(parse_rfc3339(value).timestamp())
            except ValueError:
                pass
        seconds = _number_of(value)
        if not math.isfinite(seconds):
            raise ValueError(f"expected epoch seconds, got {value!r}")
        try:
            return format_rfc3339(seconds)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"expected epoch seconds, got {value!r}") from None
    if to == "string":
        if isinstance(value, dict | list):
            raise ValueError("expected a scalar, got an object or array")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    if to == "integer":
        number = _number_of(value)
        if not math.isfinite(number) or number != int(number):
            raise ValueError(f"expected a whole number, got {value!r}")
        return _json_int(int(number), value)
    if to == "number":
        return _number_of(value)
    raise ValueError(f"unknown conversion {to!r}")
