"""Which differences are real: Diffy's rule, per endpoint and field. Pure.

Every compared request gives a `Sample`: the fields where the candidate differed from the
primary (raw), and the fields where the primary differed from itself — a secondary copy of the
primary, or the primary asked twice (noise: timestamps, random ids, ordering). A field is
reported only when

- its raw count is above its noise count, and
- relative difference `|raw - noise| / (raw + noise)` (percent) is above `thresholds.relative`, and
- absolute difference `|raw - noise| / requests` (percent) is above `thresholds.absolute`.

An endpoint's diff rate is the share of its requests with at least one reported field.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EndpointStats",
    "FieldStats",
    "Sample",
    "Thresholds",
    "WindowCounts",
    "analyse",
    "diff_rate",
    "is_reported",
]


@dataclass(frozen=True, slots=True)
class Thresholds:
    relative: float = 20.0  # percent (Diffy's default)
    absolute: float = 0.03  # percent of the endpoint's requests (Diffy's default)


@dataclass(frozen=True, slots=True)
class Sample:
    """One compared request."""

    endpoint: str
    raw: Mapping[str, str] = field(default_factory=dict)  # field -> kind, candidate vs primary
    noise: frozenset[str] | None = None  # fields differing primary vs primary; None: not sampled


@dataclass(frozen=True, slots=True)
class FieldStats:
    field: str
    raw: int  # requests where the candidate differed from the primary here
    noise: int  # requests where the primary differed from itself here
    requests: int
    kinds: Mapping[str, int]  # missing / extra / type / value / text / status -> count
    relative: float  # percent
    absolute: float  # percent
    reported: bool

    @property
    def raw_rate(self) -> float:
        return self.raw / self.requests if self.requests else 0.0

    @property
    def noise_rate(self) -> float:
        return self.noise / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class EndpointStats:
    endpoint: str
    requests: int
    noise_samples: int  # requests that had a noise comparison
    differing: int  # requests with at least one reported field
    fields: tuple[FieldStats, ...]  # reported first, then by raw count, then by name

    @property
    def diff_rate(self) -> float:
        return self.differing / self.requests if self.requests else 0.0

    @property
    def reported(self) -> tuple[FieldStats, ...]:
        return tuple(f for f in self.fields if f.reported)


def is_reported(
    raw: int, noise: int, requests: int, thresholds: Thresholds
) -> tuple[bool, float, float]:
    """(reported, relative %, absolute %) for one field."""
    if requests <= 0 or raw <= noise:
        gap = abs(raw - noise)
        relative = 100.0 * gap / (raw + noise) if raw + noise else 0.0
        absolute = 100.0 * gap / requests if requests else 0.0
        return False, relative, absolute
    relative = 100.0 * (raw - noise) / (raw + noise)
    absolute = 100.0 * (raw - noise) / requests
    ok = relative > thresholds.relative and absolute > thresholds.absolute
    return ok, relative, absolute


def analyse(
    samples: Iterable[Sample], thresholds: Thresholds = Thresholds()
) -> tuple[EndpointStats, ...]:
    """Per endpoint (sorted by diff rate, highest first, then by name)."""
    grouped: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        grouped[s.endpoint].append(s)
    out = [_endpoint(name, group, thresholds) for name, group in grouped.items()]
    out.sort(key=lambda e: (-e.diff_rate, e.endpoint))
    return tuple(out)


def _endpoint(name: str, samples: list[Sample], thresholds: Thresholds) -> EndpointStats:
    raw: Counter[str] = Counter()
    noise: Counter[str] = Counter()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    noise_samples = 0
    for s in samples:
        for f, kind in s.raw.items():
            raw[f] += 1
            kinds[f][kind] += 1
        if s.noise is not None:
            noise_samples += 1
            noise.update(s.noise)
    total = len(samples)
    stats = []
    for f in set(raw) | set(noise):
        reported, relative, absolute = is_reported(raw[f], noise[f], total, thresholds)
        stats.append(
            FieldStats(
                field=f,
                raw=raw[f],
                noise=noise[f],
                requests=total,
                kinds=dict(kinds.get(f, {})),
                relative=relative,
                absolute=absolute,
                reported=reported,
            )
        )
    stats.sort(key=lambda x: (not x.reported, -x.raw, x.field))
    shown = {x.field for x in stats if x.reported}
    differing = sum(1 for s in samples if shown.intersection(s.raw))
    return EndpointStats(
        endpoint=name,
        requests=total,
        noise_samples=noise_samples,
        differing=differing,
        fields=tuple(stats),
    )


def diff_rate(stats: Iterable[EndpointStats]) -> float:
    """Share of the analysed requests without a reported difference, from 0.0 to 1.0."""
    total = differing = 0
    for e in stats:
        total += e.requests
        differing += e.differing
    return 1.0 - differing / total if total else 1.0


class _Counts:
    """One endpoint's counts in a window."""

    __slots__ = ("noise", "raw", "requests", "signatures")

    def __init__(self) -> None:
        self.requests = 0
        self.raw: Counter[str] = Counter()
        self.noise: Counter[str] = Counter()
        # How many samples differed in exactly these fields: `differing` without a pass.
        self.signatures: Counter[frozenset[str]] = Counter()


_NOWHERE: frozenset[str] = frozenset()  # the signature of a sample that differs nowhere


class WindowCounts:
    """What `diff_rate(analyse(window))` needs, kept up to date as samples enter and leave a
    window, so the rate costs a pass over the fields that differ rather than over the window
    (a parity gate asks for it on every tick, the gauge once a second)."""

    def __init__(self) -> None:
        self._endpoints: dict[str, _Counts] = {}

    def add(self, sample: Sample) -> None:
        counts = self._endpoints.get(sample.endpoint)
        if counts is None:
            counts = self._endpoints[sample.endpoint] = _Counts()
        counts.requests += 1
        # Most samples differ nowhere: counting one costs two lookups (it runs for every
        # comparison the gateway books, and again when the window pushes it out).
        raw = sample.raw
        if raw:
            tally = counts.raw
            for key in raw:
                tally[key] += 1
            signature = frozenset(raw)
        else:
            signature = _NOWHERE
        if sample.noise:
            tally = counts.noise
            for key in sample.noise:
                tally[key] += 1
        counts.signatures[signature] += 1

    def remove(self, sample: Sample) -> None:
        """Take out a sample `add` counted (the window's oldest, when a new one pushes it out)."""
        counts = self._endpoints[sample.endpoint]
        counts.requests -= 1
        if counts.requests == 0:
            del self._endpoints[sample.endpoint]
            return
        raw = sample.raw
        if raw:
            _take(counts.raw, raw)
        if sample.noise:
            _take(counts.noise, sample.noise)
        signatures = counts.signatures  # (`_take` of one key, inline: once per booking)
        signature = frozenset(raw) if raw else _NOWHERE
        left = signatures[signature] - 1
        if left:
            signatures[signature] = left
        else:
            del signatures[signature]

    def rate(self, thresholds: Thresholds) -> float:
        """`diff_rate(analyse(samples, thresholds))` of the samples counted now."""
        total = differing = 0
        for counts in self._endpoints.values():
            total += counts.requests
            reported = {
                f
                for f, n in counts.raw.items()
                if is_reported(n, counts.noise[f], counts.requests, thresholds)[0]
            }
            if reported:
                differing += sum(n for sig, n in counts.signatures.items() if sig & reported)
        return 1.0 - differing / total if total else 1.0


def _take(counter: Counter[Any], keys: Iterable[Any]) -> None:
    for key in keys:
        left = counter[key] - 1
        if left:
            counter[key] = left
        else:
            del counter[key]
