"""Weighted split of 10,000 buckets among a route's backends (nginx `split_clients` layout).

The first backend (the canary candidate, else the first one written) owns the lowest buckets
[0, weight*100); the others follow in written order. Raising the first backend's weight therefore
only adds buckets to it: sticky users only ever move towards it, never back.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

from cutover.routing.murmur import BUCKETS

__all__ = ["SplitTable"]

_MAX_REMAPS = 64  # cache bound: one entry per distinct set of available weighted backends


class SplitTable:
    """Bucket → backend table of one route, built once per (route, weights)."""

    __slots__ = ("_bounds", "_owners", "_remaps", "_weighted", "names", "weights")

    names: tuple[str, ...]
    weights: tuple[tuple[str, int], ...]

    def __init__(self, split: Sequence[tuple[str, int]], first: str | None = None) -> None:
        """`split` is (backend, weight) in written order, integer weights summing to 100.

        `first` is the backend that takes the lowest buckets (the canary candidate); `None`, or a
        name that is not in the split, means the first backend written.
        """
        entries = [(str(name), weight) for name, weight in split]
        if not entries:
            raise ValueError("a split needs at least one backend")
        names = [name for name, _ in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"a backend appears twice in the split: {names}")
        for name, weight in entries:
            if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
                raise ValueError(f"weight of {name!r} must be a non-negative integer: {weight!r}")
        if sum(w for _, w in entries) != 100:
            raise ValueError(f"split weights must sum to 100: {entries}")
        if first is not None and first in names:
            entries.sort(key=lambda e: e[0] != first)  # stable: the others keep written order
        self.weights = tuple(entries)
        self.names = tuple(name for name, _ in entries)
        owners = tuple(name for name, w in entries if w > 0)
        self._owners = owners
        self._bounds = _cumulative((w * (BUCKETS // 100) for _, w in entries if w > 0))
        self._weighted = frozenset(owners)
        self._remaps: dict[frozenset[str], tuple[tuple[int, ...], tuple[str, ...], int]] = {}

    @property
    def first(self) -> str:
        """The backend that owns the lowest buckets."""
        return self.names[0]

    def owner(self, bucket: int) -> str:
        """The backend that owns `bucket`, ignoring health."""
        return self._owners[bisect_right(self._bounds, bucket)]

    def pick(self, bucket: int, available: Iterable[str]) -> str | None:
        """The owner of `bucket` if available, else the same bucket re-mapped proportionally over
        the available weighted backends (order kept); `None` when none of them is available.

        Users whose owner is available never move, whatever happens to the other backends.
        """
        owner = self._owners[bisect_right(self._bounds, bucket)]
        if owner in available:
            return owner
        up = self._weighted.intersection(available)
        if not up:
            return None
        remap = self._remaps.get(up)
        if remap is None:
            remap = self._remap(up)
        bounds, owners, total = remap
        return owners[bisect_right(bounds, bucket * total)]

    def _remap(self, up: frozenset[str]) -> tuple[tuple[int, ...], tuple[str, ...], int]:
        kept = [(name, w) for name, w in self.weights if w > 0 and name in up]
        total = sum(w for _, w in kept)
        # bucket b goes to the i-th kept backend when b * total < cumulative_i * BUCKETS
        remap = (_cumulative(w * BUCKETS for _, w in kept), tuple(n for n, _ in kept), total)
        if len(self._remaps) >= _MAX_REMAPS:
            self._remaps.clear()
        self._remaps[up] = remap
        return remap

    def __repr__(self) -> str:
        return f"SplitTable({list(self.weights)!r})"


def _cumulative(values: Iterable[int]) -> tuple[int, ...]:
    out: list[int] = []
    acc = 0
    for v in values:
        acc += v
        out.append(acc)
    return tuple(out)
