"""A mirrored route's latest comparisons (the parity window), with its counts kept as they go.

The window holds `(store row id or None, sample)` pairs, oldest first, `size` at most; the
counts behind its parity rate (`noise.WindowCounts`) follow every sample that enters or is
pushed out, so the rate costs no pass over the window.

Workers (and replicas) sharing a store agree because each reads the others' results from it:
`top` is the highest row id read from the store, and `merge` adds the rows above it that this
worker did not append itself (its own are remembered until a read covers them), so a refresh
reads only what is new.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

from cutover.parity.noise import Sample, Thresholds, WindowCounts

__all__ = ["ResultWindow"]

Entry = tuple[int | None, Sample]


class ResultWindow:
    """The latest `size` comparisons of one route and their counts."""

    def __init__(self, size: int, entries: Iterable[Entry] = (), top: int | None = None) -> None:
        """`top`: the highest id of `entries` read from the store (None: nothing read yet);
        entries above it are this worker's own."""
        self.size = size
        self.top = top
        self._own: set[int] = set()  # ids this worker appended above `top`
        self._entries: collections.deque[Entry] = collections.deque()
        self._counts = WindowCounts()
        for entry in entries:
            self.append(entry)

    def append(self, entry: Entry) -> None:
        """Add the newest comparison (this worker's); the oldest leaves once the window is
        full."""
        row_id = entry[0]
        if row_id is not None and (self.top is None or row_id > self.top):
            self._own.add(row_id)
        # `_add`, inline: this runs for every comparison the gateway books
        entries = self._entries
        if len(entries) >= self.size:
            self._counts.remove(entries.popleft()[1])
        entries.append(entry)
        self._counts.add(entry[1])

    def merge(self, stored: Iterable[Entry]) -> None:
        """Add the store's rows above `top` (ascending ids) that are not this worker's own."""
        own = self._own
        top = self.top or 0
        for entry in stored:
            row_id = entry[0]
            assert row_id is not None
            top = max(top, row_id)
            if row_id not in own:
                self._add(entry)
        self.top = top
        self._own = {i for i in own if i > top}

    def _add(self, entry: Entry) -> None:
        entries = self._entries
        if len(entries) >= self.size:
            self._counts.remove(entries.popleft()[1])
        entries.append(entry)
        self._counts.add(entry[1])

    def rate(self, thresholds: Thresholds) -> float:
        """Share of the window without a reported difference (`noise.diff_rate`)."""
        return self._counts.rate(thresholds)

    def ids(self) -> list[int | None]:
        return [row_id for row_id, _ in self._entries]

    def by_id(self) -> dict[int, Sample]:
        """The samples held with a store row id, by id (a read need not decode them again)."""
        return {row_id: sample for row_id, sample in self._entries if row_id is not None}

    def samples(self) -> list[Sample]:
        return [sample for _, sample in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries)
