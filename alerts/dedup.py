"""Dedup of repeated webhook deliveries. Pure: `now` is passed in.

Alertmanager may deliver one group twice within milliseconds, and re-sends it every group
interval until it gets a 2xx. An alert is a repeat when the last one accepted with the same
fingerprint had the same status and the same `startsAt`, less than `window` seconds ago
(DESIGN.md, Decisions; default 5 minutes). So a resolve is new after a firing, and a re-fire after
a resolve is new again, even when the source kept `startsAt`; past the window an alert is
processed again.

`is_repeat` is the rule. `DedupWindow` applies it in memory (bounded, oldest first out); the
durable intake applies the same rule inside its transaction (`alerts/intake.py`: one
`INSERT ... ON CONFLICT DO UPDATE ... WHERE <not a repeat>` per alert).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["DEFAULT_WINDOW", "DedupWindow", "Seen", "is_repeat"]

DEFAULT_WINDOW = 300.0


@dataclass(frozen=True, slots=True)
class Seen:
    """The last alert accepted for one fingerprint."""

    status: str
    starts_at: str
    at: float  # when it was accepted (wall time, seconds)


def is_repeat(last: Seen | None, status: str, starts_at: str, now: float, window: float) -> bool:
    """Whether an alert with this status and startsAt repeats `last` within `window`."""
    if last is None or window <= 0:
        return False
    return last.status == status and last.starts_at == starts_at and now - last.at < window


class DedupWindow:
    """The rule in memory, for up to `max_entries` fingerprints."""

    def __init__(self, window: float = DEFAULT_WINDOW, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[str, Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, fingerprint: str, status: str, starts_at: str, now: float) -> bool:
        """True when new (and remembered as the last one), False when a repeat."""
        if is_repeat(self._seen.get(fingerprint), status, starts_at, now, self.window):
            return False
        self._seen[fingerprint] = Seen(status, starts_at, now)
        self._seen.move_to_end(fingerprint)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        return True

    def expire(self, now: float) -> int:
        """Forget entries older than the window; how many were dropped."""
        old = [fp for fp, s in self._seen.items() if now - s.at >= self.window]
        for fp in old:
            del self._seen[fp]
        return len(old)
