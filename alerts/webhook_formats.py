"""Webhook payloads -> `Alert`s, or every problem with its JSON path. Pure.

Three formats arrive on the intake paths:

- `alertmanager`: the Alertmanager webhook envelope, version 4 (`{"version": "4", "alerts": [...],
  ...}`). Envelope fields (`receiver`, `groupKey`, `externalURL`) are copied onto each alert.
- `prometheus`: the alert array Prometheus posts to Alertmanager's `/api/v2/alerts`
  (`[{"labels": ..., "annotations": ..., "startsAt": ..., "endsAt": ..., "generatorURL": ...}]`).
  There is no status: as in Alertmanager, an alert whose `endsAt` is in the past is resolved.
- `generic`: any JSON, through a declared `FieldMapping` (where the alerts are, which fields become
  which labels, how status values read).

Required (DESIGN.md, Decisions): `alerts` (an array), each alert an object with `labels` (an
object of strings) that includes `alertname`. Everything else is optional and defaulted; unknown
fields are ignored; a known field of the wrong type or with an impossible value is a problem, since
the payload could never be stored as sent. Values are never echoed for labels and annotations
(they may carry secrets); enum and timestamp problems show what was sent, cut to 64 characters.

Fingerprint: the alert's own `fingerprint` when it has one (Alertmanager's), else the one
Alertmanager itself computes from the labels (`alertmanager_fingerprint`: FNV-1a 64 over the sorted
label names and values, each followed by the byte 0xff, as 16 hex digits), so an alert keeps one
identity whichever way it came in.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Literal

from cutover.alerts.model import ZERO_TIME, Alert, Classification, Status
from cutover.core.clock import format_rfc3339
from cutover.core.storable import MAX_KEY, identity_problem

__all__ = [
    "FORMATS",
    "FieldMapping",
    "Format",
    "Payload",
    "Problem",
    "alert_from_stored",
    "alert_to_stored",
    "alertmanager_fingerprint",
    "compile_path",
    "detect_format",
    "parse_payload",
    "parse_single_alert",
    "parse_time",
]

Format = Literal["alertmanager", "prometheus", "generic"]
FORMATS: tuple[Format, ...] = ("alertmanager", "prometheus", "generic")
PathPart = str | int

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1
_SHOWN = 64  # characters of a bad value shown back in a problem


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a payload cannot be accepted: where (`$.alerts[0].labels`) and what was expected."""

    path: str
    expected: str
    got: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"path": self.path, "expected": self.expected}
        if self.got is not None:
            out["got"] = self.got
        return out


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """How a generic JSON document maps onto alerts (paths are compiled: `("data", "items")`).

    `alerts` points at the array of alerts (or a single alert object); None means the document
    itself. Within each alert, `labels`/`annotations` point at objects copied whole, and
    `label_fields`/`annotation_fields` take single fields. Status values are compared lowercased.
    """

    alerts: tuple[PathPart, ...] | None = None
    labels: tuple[PathPart, ...] | None = None
    annotations: tuple[PathPart, ...] | None = None
    label_fields: tuple[tuple[str, tuple[PathPart, ...]], ...] = ()
    annotation_fields: tuple[tuple[str, tuple[PathPart, ...]], ...] = ()
    status: tuple[PathPart, ...] | None = None
    firing_values: frozenset[str] = frozenset(
        {"firing", "alerting", "triggered", "open", "problem", "active", "critical", "warning"}
    )
    resolved_values: frozenset[str] = frozenset(
        {"resolved", "ok", "closed", "recovered", "inactive", "normal", "cleared"}
    )
    starts_at: tuple[PathPart, ...] | None = None
    ends_at: tuple[PathPart, ...] | None = None
    fingerprint: tuple[PathPart, ...] | None = None
    generator_url: tuple[PathPart, ...] | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    """A parsed webhook: its alerts, or its problems (then `alerts` is empty)."""

    format: Format | None
    alerts: tuple[Alert, ...] = ()
    # Whether each alert carried its own startsAt (dedup keys use "" when it did not).
    starts_given: tuple[bool, ...] = ()
    problems: tuple[Problem, ...] = ()
    truncated_alerts: int = 0
    group_key: str = ""
    receiver: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


# -- fingerprints and times ---------------------------------------------------------------


def alertmanager_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (prometheus/common `LabelSet.Fingerprint`)."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ 0xFF) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:\d{2})"
)
# The instants an RFC 3339 time can name in UTC: 0001-01-01T00:00:00Z up to (not including)
# year 10000. A local time near either end with an offset can fall outside (`0001-01-01T00:00:00
# +01:00` is in year 0): nothing downstream could write it back in UTC.
_FIRST_SECOND = -62135596800.0
_PAST_LAST_SECOND = 253402300800.0


@functools.lru_cache(maxsize=4096)
def parse_time(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (nanoseconds allowed); None if invalid:
    an impossible date, an offset beyond ±23:59, or an instant outside years 0001-9999 UTC.

    Remembered for the last 4,096 texts: every alert carries two, most of them repeated (the
    zero `endsAt`, a group's shared `startsAt`), and each costs a regex and a datetime."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None
    if zone in ("Z", "z"):
        offset = 0
    else:
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        offset = (-1 if zone[0] == "-" else 1) * (hours * 3600 + minutes * 60)
    seconds = (dt - datetime(1970, 1, 1)).total_seconds() - offset
    if not _FIRST_SECOND <= seconds < _PAST_LAST_SECOND:
        return None
    return seconds + (float("0." + frac) if frac else 0.0)


def _is_zero_time(text: str) -> bool:
    return text.startswith("0001-01-01")


# -- the parsers ----------------------------------------------------------------------------


def detect_format(body: object) -> Format | None:
    """`alertmanager` for an object with `alerts`, `prometheus` for an array, else None."""
    if isinstance(body, Mapping) and "alerts" in body:
        return "alertmanager"
    if isinstance(body, list):
        return "prometheus"
    return None


def parse_payload(
    body: object,
    *,
    now: float,
    formats: Sequence[Format] = ("alertmanager", "prometheus"),
    mapping: FieldMapping | None = None,
) -> Payload:
    """Parse a decoded JSON document in one of `formats` (detected when several are allowed)."""
    fmt: Format | None
    if len(formats) == 1:
        fmt = formats[0]
    else:
        fmt = detect_format(body)
        if fmt not in formats:
            fmt = "generic" if "generic" in formats and mapping is not None else None
        if fmt is None and isinstance(body, Mapping) and "alertmanager" in formats:
            fmt = "alertmanager"  # an object without `alerts`: say that `alerts` is missing
    if fmt is None:
        wanted = " or ".join(_FORMAT_NAMES[f] for f in formats if f != "generic")
        return Payload(None, problems=(Problem("$", wanted or "a JSON document", _kind(body)),))
    if fmt == "alertmanager":
        return _parse_alertmanager(body, now)
    if fmt == "prometheus":
        return _parse_prometheus(body, now)
    return _parse_generic(body, now, mapping or FieldMapping())


_FORMAT_NAMES = {
    "alertmanager": "an Alertmanager webhook (an object with an alerts array)",
    "prometheus": "a Prometheus alert array",
}


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: str, expected: str, got: str | None = None) -> None:
        self.items.append(Problem(path, expected, got))

    def at(self, path: str) -> bool:
        """A problem is already reported at `path` (one bad value is one problem)."""
        return any(item.path == path for item in self.items)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _shown(value: object) -> str:
    """A bad enum, number or timestamp as sent (cut short); other values by kind only."""
    if isinstance(value, str):
        return value if len(value) <= _SHOWN else value[: _SHOWN - 3] + "..."
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)[:_SHOWN]
    return _kind(value)


def _parse_alertmanager(body: object, now: float) -> Payload:
    p = _Problems()
    if not isinstance(body, Mapping):
        p.add("$", "an object (the Alertmanager webhook envelope)", _kind(body))
        return Payload("alertmanager", problems=tuple(p.items))
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        p.add("$.version", 'a string such as "4"', _kind(version))
    truncated = body.get("truncatedAlerts", 0)
    if truncated is None:
        truncated = 0
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        p.add("$.truncatedAlerts", "an integer >= 0", _shown(truncated))
        truncated = 0
    envelope_status = body.get("status")
    if envelope_status is not None and envelope_status not in ("firing", "resolved"):
        p.add("$.status", "firing or resolved", _shown(envelope_status))
    strings = {}
    for key in ("receiver", "groupKey", "externalURL"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            p.add(f"$.{key}", "a string", _kind(value))
            value = None
        strings[key] = value or ""
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        value = body.get(key)
        if value is not None and not isinstance(value, Mapping):
            p.add(f"$.{key}", "an object", _kind(value))
    raw_group = body.get("groupLabels")
    group_labels = MappingProxyType(
        {str(k): v for k, v in raw_group.items() if isinstance(v, str)}
        if isinstance(raw_group, Mapping)
        else {}
    )
    if "alerts" not in body:
        p.add("$.alerts", "an array of alerts (this field is required)")
        return Payload("alertmanager", problems=tuple(p.items))
    items = body["alerts"]
    if not isinstance(items, list):
        p.add("$.alerts", "an array of alerts", _kind(items))
        return Payload("alertmanager", problems=tuple(p.items))
    alerts: list[Alert] = []
    given: list[bool] = []
    for i, item in enumerate(items):
        parsed = _alert_object(
            item,
            f"$.alerts[{i}]",
            p,
            now,
            group_key=strings["groupKey"],
            receiver=strings["receiver"],
            external_url=strings["externalURL"],
            group_labels=group_labels,
        )
        if parsed is not None:
            alerts.append(parsed[0])
            given.append(parsed[1])
    if p.items:
        return Payload("alertmanager", problems=tuple(p.items), truncated_alerts=truncated)
    return Payload(
        "alertmanager",
        alerts=tuple(alerts),
        starts_given=tuple(given),
        truncated_alerts=truncated,
        group_key=strings["groupKey"],
        receiver=strings["receiver"],
    )


def _parse_prometheus(body: object, now: float) -> Payload:
    p = _Problems()
    if not isinstance(body, list):
        p.add("$", "an array of alerts (the Prometheus alert array)", _kind(body))
        return Payload("prometheus", problems=tuple(p.items))
    alerts: list[Alert] = []
    given: list[bool] = []
    for i, item in enumerate(body):
        parsed = _alert_object(item, f"$[{i}]", p, now)
        if parsed is not None:
            alerts.append(parsed[0])
            given.append(parsed[1])
    if p.items:
        return Payload("prometheus", problems=tuple(p.items))
    return Payload("prometheus", alerts=tuple(alerts), starts_given=tuple(given))


def parse_single_alert(
    item: object, *, now: float, path: str = "$"
) -> tuple[Alert | None, tuple[Problem, ...]]:
    """One alert object (Alertmanager item shape; status inferred from endsAt when absent)."""
    p = _Problems()
    parsed = _alert_object(item, path, p, now)
    if p.items or parsed is None:
        return None, tuple(p.items)
    return parsed[0], ()


def _string_map(value: object, path: str, p: _Problems, what: str) -> dict[str, str] | None:
    if not isinstance(value, Mapping):
        p.add(path, f"an object of {what} (name -> string value)", _kind(value))
        return None
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            p.add(f"{path}{_key_path(key)}", "a string", _kind(item))
        else:
            out[str(key)] = item
    return out


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _key_path(key: object) -> str:
    text = str(key)
    if _IDENT.fullmatch(text):
        return f".{text}"
    return "[" + '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"]'


def _check_alertname(labels: Mapping[str, str], path: str, p: _Problems) -> None:
    """The alertname names the alert in the store: present, and text the store can hold."""
    if p.at(path):  # present but not a string: reported already
        return
    name = labels.get("alertname")
    if not name:
        p.add(path, "a non-empty string (this label is required)")
        return
    problem = identity_problem(name)
    if problem is not None:
        p.add(path, problem)  # never echoed: labels may hold secrets


def _check_fingerprint(fingerprint: str, path: str, p: _Problems) -> None:
    """A given fingerprint is the alert's identity in the store (and indexed there)."""
    problem = identity_problem(fingerprint, limit=MAX_KEY)
    if problem is not None:
        p.add(path, problem, _shown(fingerprint))


def _time_field(item: Mapping[str, object], key: str, path: str, p: _Problems) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or parse_time(value) is None:
        p.add(f"{path}.{key}", _TIME_EXPECTED, _shown(value))
        return None
    return value


_TIME_EXPECTED = (
    "an RFC 3339 timestamp such as 2026-01-02T03:04:05Z (offsets up to ±23:59, years 0001-9999)"
)


def _alert_object(
    item: object,
    path: str,
    p: _Problems,
    now: float,
    *,
    group_key: str = "",
    receiver: str = "",
    external_url: str = "",
    group_labels: MappingProxyType[str, str] | None = None,
) -> tuple[Alert, bool] | None:
    if not isinstance(item, Mapping):
        p.add(path, "an alert object", _kind(item))
        return None
    before = len(p.items)
    labels: dict[str, str] | None = None
    if "labels" not in item:
        p.add(f"{path}.labels", "an object of labels including alertname (this field is required)")
    else:
        labels = _string_map(item["labels"], f"{path}.labels", p, "labels")
        if labels is not None:
            _check_alertname(labels, f"{path}.labels.alertname", p)
    annotations: dict[str, str] = {}
    if item.get("annotations") is not None:
        annotations = (
            _string_map(item["annotations"], f"{path}.annotations", p, "annotations") or {}
        )
    starts_at = _time_field(item, "startsAt", path, p)
    ends_at = _time_field(item, "endsAt", path, p)
    if starts_at and ends_at and not _is_zero_time(ends_at):
        start, end = parse_time(starts_at), parse_time(ends_at)
        if start is not None and end is not None and end < start:
            p.add(f"{path}.endsAt", "a time not before startsAt", _shown(ends_at))
    status_value = item.get("status")
    status: Status
    if status_value is None or status_value == "":
        end = parse_time(ends_at) if ends_at and not _is_zero_time(ends_at) else None
        status = "resolved" if end is not None and end <= now else "firing"
    elif status_value in ("firing", "resolved"):
        status = status_value  # type: ignore[assignment]
    else:
        p.add(f"{path}.status", "firing or resolved", _shown(status_value))
        status = "firing"
    strings: dict[str, str] = {}
    for key in ("fingerprint", "generatorURL"):
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            p.add(f"{path}.{key}", "a string", _kind(value))
            value = None
        strings[key] = value or ""
    _check_fingerprint(strings["fingerprint"], f"{path}.fingerprint", p)
    if len(p.items) > before or labels is None:
        return None
    return (
        Alert(
            fingerprint=strings["fingerprint"] or alertmanager_fingerprint(labels),
            status=status,
            labels=MappingProxyType(labels),
            annotations=MappingProxyType(annotations),
            starts_at=starts_at or format_rfc3339(now),
            ends_at=ends_at or ZERO_TIME,
            generator_url=strings["generatorURL"],
            group_key=group_key,
            receiver=receiver,
            external_url=external_url,
            group_labels=group_labels if group_labels is not None else MappingProxyType({}),
        ),
        starts_at is not None,
    )


# -- generic JSON through a field mapping ---------------------------------------------------

_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def compile_path(text: str) -> tuple[PathPart, ...] | None:
    """`data.items[0].name` -> ("data", "items", 0, "name"); `$` or `.` -> (); None if invalid."""
    text = text.strip()
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    if text in ("", "."):
        return ()
    parts: list[PathPart] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "." and parts:
            pos += 1
        m = _PATH_PART.match(text, pos)
        if m is None:
            return None
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return tuple(parts)


def _path_text(base: str, parts: Sequence[PathPart]) -> str:
    out = base
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else _key_path(part)
    return out


_MISSING = object()


def _get(doc: object, parts: Sequence[PathPart]) -> object:
    for part in parts:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return _MISSING
            doc = doc[part]
        else:
            if not isinstance(doc, Mapping) or part not in doc:
                return _MISSING
            doc = doc[part]
    return doc


def _scalar_text(value: object) -> str | None:
    """A label value from a JSON scalar (numbers and booleans as JSON writes them)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _generic_time(value: object, path: str, p: _Problems) -> str | None:
    """RFC 3339 text, or a Unix time in seconds (or milliseconds, when above 1e11)."""
    if value is _MISSING or value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = value / 1000 if value > 1e11 else float(value)
        if 0 <= seconds < 253402300800:  # before year 10000
            return format_rfc3339(seconds)
    elif isinstance(value, str) and parse_time(value) is not None:
        return value
    p.add(path, "an RFC 3339 timestamp or a Unix time in seconds", _shown(value))
    return None


def _parse_generic(body: object, now: float, m: FieldMapping) -> Payload:
    p = _Problems()
    root = "$"
    items: object = body if m.alerts is None else _get(body, m.alerts)
    list_path = _path_text(root, m.alerts or ())
    if items is _MISSING:
        p.add(list_path, "an array of alerts (the mapping's alerts path)")
        return Payload("generic", problems=tuple(p.items))
    if isinstance(items, Mapping):
        elements: list[tuple[object, str]] = [(items, list_path)]
    elif isinstance(items, list):
        elements = [(x, f"{list_path}[{i}]") for i, x in enumerate(items)]
    else:
        p.add(list_path, "an array of alerts or one alert object", _kind(items))
        return Payload("generic", problems=tuple(p.items))
    alerts: list[Alert] = []
    given: list[bool] = []
    for element, path in elements:
        parsed = _generic_alert(element, path, p, now, m)
        if parsed is not None:
            alerts.append(parsed[0])
            given.append(parsed[1])
    if p.items:
        return Payload("generic", problems=tuple(p.items))
    return Payload("generic", alerts=tuple(alerts), starts_given=tuple(given))


def _generic_alert(
    item: object, path: str, p: _Problems, now: float, m: FieldMapping
) -> tuple[Alert, bool] | None:
    if not isinstance(item, Mapping):
        p.add(path, "an alert object", _kind(item))
        return None
    before = len(p.items)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    for target, what, parts in (
        (labels, "labels", m.labels),
        (annotations, "annotations", m.annotations),
    ):
        if parts is None:
            continue
        value = _get(item, parts)
        if value is _MISSING or value is None:
            continue
        vpath = _path_text(path, parts)
        if not isinstance(value, Mapping):
            p.add(vpath, f"an object of {what}", _kind(value))
            continue
        for key, inner in value.items():
            text = _scalar_text(inner)
            if text is None:
                p.add(f"{vpath}{_key_path(key)}", "a string, number or boolean", _kind(inner))
            else:
                target[str(key)] = text
    for target, fields in ((labels, m.label_fields), (annotations, m.annotation_fields)):
        for name, parts in fields:
            value = _get(item, parts)
            if value is _MISSING or value is None:
                continue
            text = _scalar_text(value)
            if text is None:
                p.add(
                    _path_text(path, parts),
                    f"a string, number or boolean (mapped to {name})",
                    _kind(value),
                )
            else:
                target[name] = text
    where = dict(m.label_fields).get("alertname")
    name_path = _path_text(path, where) if where is not None else None
    if not labels.get("alertname"):
        shown = name_path or f"{path} (mapped labels)"
        if not p.at(shown):  # a value of the wrong type there is reported already
            p.add(shown, "a non-empty alertname (the mapping's label_fields.alertname or labels)")
    else:
        labels_path = _path_text(path, (*(m.labels or ()), "alertname"))
        _check_alertname(labels, name_path or labels_path, p)
    status: Status = "firing"
    ends_at = (
        _generic_time(_get(item, m.ends_at), _path_text(path, m.ends_at), p) if m.ends_at else None
    )
    starts_at = (
        _generic_time(_get(item, m.starts_at), _path_text(path, m.starts_at), p)
        if m.starts_at
        else None
    )
    if m.status is not None:
        raw = _get(item, m.status)
        if raw is not _MISSING and raw is not None:
            text = _scalar_text(raw)
            lowered = text.lower() if text is not None else None
            if lowered in m.resolved_values:
                status = "resolved"
            elif lowered in m.firing_values:
                status = "firing"
            else:
                allowed = sorted(m.firing_values | m.resolved_values)
                p.add(_path_text(path, m.status), f"one of {', '.join(allowed)}", _shown(raw))
    elif ends_at is not None:
        end = parse_time(ends_at)
        status = "resolved" if end is not None and end <= now else "firing"
    fingerprint = ""
    generator_url = ""
    for key, parts in (("fingerprint", m.fingerprint), ("generator_url", m.generator_url)):
        if parts is None:
            continue
        value = _get(item, parts)
        if value is _MISSING or value is None:
            continue
        text = _scalar_text(value)
        if text is None:
            p.add(_path_text(path, parts), "a string", _kind(value))
        elif key == "fingerprint":
            fingerprint = text
            _check_fingerprint(text, _path_text(path, parts), p)
        else:
            generator_url = text
    if len(p.items) > before:
        return None
    return (
        Alert(
            fingerprint=fingerprint or alertmanager_fingerprint(labels),
            status=status,
            labels=MappingProxyType(labels),
            annotations=MappingProxyType(annotations),
            starts_at=starts_at or format_rfc3339(now),
            ends_at=ends_at or ZERO_TIME,
            generator_url=generator_url,
        ),
        starts_at is not None,
    )


# -- stored form (the alert rows of the intake table) ----------------------------------------


def alert_to_stored(alert: Alert) -> dict[str, object]:
    """Everything an `Alert` holds, as JSON-ready data (`alert_from_stored` reads it back)."""
    out = alert.as_alertmanager()
    out.update(groupKey=alert.group_key, receiver=alert.receiver, externalURL=alert.external_url)
    out["groupLabels"] = dict(alert.group_labels)
    if alert.classification is not None:
        out["classification"] = alert.classification.to_stored()
    return out


def alert_from_stored(data: Mapping[str, object]) -> Alert:
    c = data.get("classification")
    classification = None
    if isinstance(c, Mapping):
        classification = Classification(
            severity=c["severity"],  # type: ignore[arg-type]
            category=str(c["category"]),
            confidence=float(c["confidence"]),  # type: ignore[arg-type]
            reasoning=str(c.get("reasoning") or ""),
            recommendations=tuple(c.get("recommendations") or ()),  # type: ignore[arg-type]
            source=c.get("source") or "rules",  # type: ignore[arg-type]
            model=c.get("model"),  # type: ignore[arg-type]
            cached=c.get("cached") is True,  # rows stored before it was kept: not cached
        )
    return Alert(
        fingerprint=str(data["fingerprint"]),
        status=data["status"],  # type: ignore[arg-type]
        labels=MappingProxyType(dict(data["labels"])),  # type: ignore[call-overload]
        annotations=MappingProxyType(dict(data.get("annotations") or {})),  # type: ignore[call-overload]
        starts_at=str(data.get("startsAt") or ""),
        ends_at=str(data.get("endsAt") or ZERO_TIME),
        generator_url=str(data.get("generatorURL") or ""),
        group_key=str(data.get("groupKey") or ""),
        receiver=str(data.get("receiver") or ""),
        external_url=str(data.get("externalURL") or ""),
        # rows stored before the group labels were kept have none
        group_labels=MappingProxyType(_str_items(data.get("groupLabels"))),
        classification=classification,
    )


def _str_items(value: object) -> dict[str, str]:
    """The string entries of a stored mapping (nothing for a row without it)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}
