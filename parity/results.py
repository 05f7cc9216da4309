"""What one parity replay found: each exchange and the run's statistics (plain data).

`parity.runner` fills a `ParityRun`; `parity.report` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cutover.parity.config import ParityConfig
from cutover.parity.corpus import CorpusRequest
from cutover.parity.diff import Difference, Reply
from cutover.parity.noise import EndpointStats, Sample, analyse

EXAMPLES_PER_FIELD = 3


@dataclass(frozen=True, slots=True)
class Exchange:
    """One corpus request and what each side answered."""

    request: CorpusRequest
    endpoint: str
    primary: Reply
    candidate: Reply
    noise: Reply | None
    differences: tuple[Difference, ...]  # candidate vs primary
    noise_differences: tuple[Difference, ...] | None  # noise source vs primary

    def sample(self) -> Sample:
        raw: dict[str, str] = {}
        for d in self.differences:
            raw.setdefault(d.field, d.kind)
        noise = None
        if self.noise_differences is not None:
            noise = frozenset(d.field for d in self.noise_differences)
        return Sample(self.endpoint, raw, noise)


@dataclass(slots=True)
class ParityRun:
    """The outcome of one replay: statistics plus a few examples per differing field."""

    primary: str
    candidate: str
    noise_source: str
    config: ParityConfig
    requests: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    examples: dict[tuple[str, str], list[Exchange]] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    def add(self, exchange: Exchange) -> None:
        sample = exchange.sample()
        self.samples.append(sample)
        for f in sample.raw:
            kept = self.examples.setdefault((exchange.endpoint, f), [])
            if len(kept) < EXAMPLES_PER_FIELD:
                kept.append(exchange)

    def stats(self) -> tuple[EndpointStats, ...]:
        return analyse(self.samples, self.config.thresholds)
