"""A mirrored route's latest comparisons (the parity window), with its counts kept as they go.

The window holds `(store row id or None, sample)` pairs, oldest first, `size` at most; the
counts behind its parity rate (`noise.WindowCounts`) follow every sample that enters or is
pushed out, so the rate costs no pass over the window.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

from cutover.parity.noise import Sample, Thresholds, WindowCounts

__all__ = ["ResultWindow"]

Entry = tuple[int | None, Sample]


class ResultWindow:
    """The latest `size` comparisons of one route and their counts."""

    def __init__(self, size: int, entries: Iterable[Entry] = ()) -> None:
        self.size = size
        self._entries: collections.deque[Entry] = collections.deque()
        self._counts = WindowCounts()
        for entry in entries:
            self.append(entry)

    def append(self, entry: Entry) -> None:
        """Add the newest comparison; the oldest leaves once the window is full."""
        entries = self._entries
        if len(entries) >= self.size:
            self._counts.remove(entries.popleft()[1])
        entries.append(entry)
        self._counts.add(entry[1])

    def rate(self, thresholds: Thresholds) -> float:
        """Share of the window without a reported difference (`noise.diff_rate`)."""
        return self._counts.rate(thresholds)

    def samples(self) -> list[Sample]:
        return [sample for _, sample in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)
