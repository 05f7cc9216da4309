"""The alert as the gateway handles it, whatever format it arrived in. Pure data.

Intake (`POST /webhook/proxy`) turns Alertmanager v4 envelopes, Prometheus alert arrays and
mapped generic JSON into `Alert`s; classification adds a `Classification`; publishing formats
them for each target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Status = Literal["firing", "resolved"]
Severity = Literal["critical", "warning", "info", "noise"]

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


@dataclass(frozen=True, slots=True)
class Classification:
    severity: Severity
    category: str
    confidence: float  # 0..1
    reasoning: str = ""
    recommendations: tuple[str, ...] = ()
    source: Literal["rules", "llm", "default"] = "rules"
    model: str | None = None
    cached: bool = False  # an LLM answer taken from the cache rather than asked for this alert

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "category": self.category,
            "confidence": self.confidence,
            "reasoning": self.reasoning,
            "recommendations": list(self.recommendations),
            "source": self.source,
            "model": self.model,
        }

    def to_stored(self) -> dict[str, object]:
        """`as_dict` and whether it came from the cache, for the rows publishing reads."""
        return {**self.as_dict(), "cached": self.cached}


@dataclass(frozen=True, slots=True)
class Alert:
    fingerprint: str
    status: Status
    labels: MappingProxyType[str, str]
    annotations: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    starts_at: str = ""  # RFC 3339 as received (or the intake time when absent)
    ends_at: str = ZERO_TIME
    generator_url: str = ""
    # From the envelope it came in (Alertmanager v4), when there was one:
    group_key: str = ""
    receiver: str = ""
    external_url: str = ""
    # the envelope's groupLabels: what Alertmanager grouped by (publishing passes them on)
    group_labels: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    classification: Classification | None = None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def as_alertmanager(self) -> dict[str, object]:
        """The alert in Alertmanager v4 webhook shape (one item of `alerts[]`)."""
        return {
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }
