"""Booking what mirror jobs came to: the counts, and the parity windows kept in agreement.

A mirrored route's window holds its latest `parity.window` comparisons (`ResultWindow`).
`WindowBook` keeps every mirrored route's window, books comparisons into it, and reads from the
store what other workers (and replicas) stored, so that they agree (`run`: only what is new
every `REFRESH_SECONDS`, the whole window every `FULL_REFRESH`th time).

Outcomes are booked where they are made. With the mirror process (the default) the child
books them into its own `WindowBook` and sends the gateway, with each frame, a `Tally`: per
route, the counts to add and what the window now says (its size and rate). The gateway's loop
then spends a few calls per frame on the mirror's results rather than a few dozen per copy
(decoding, windowing and counting each outcome). With `mirror.process: false` the gateway's
own workers book into a `WindowBook` of the gateway's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cutover.core.bounded import STORE_TIMEOUT, bounded
from cutover.core.db import Database, StoreUnavailable
from cutover.parity.mirror import sample_of
from cutover.parity.noise import Sample
from cutover.parity.results_store import latest, results_between
from cutover.parity.window import ResultWindow

if TYPE_CHECKING:
    from cutover.parity.config import ParityConfig

__all__ = ["FULL_REFRESH", "READ_SLICE", "REFRESH_SECONDS", "RouteTally", "Tally", "WindowBook"]

REFRESH_SECONDS = 5.0  # how often the windows read what other workers stored (they agree)
FULL_REFRESH = 12  # every this many refreshes a window is reloaded whole (once a minute)
READ_SLICE = 64  # stored results a window read takes between two turns of the loop's work
_SAMPLE_COLUMNS = "id, endpoint, fields, noise_fields"  # what a window keeps of a result


class WindowBook:
    """The windows of the mirrored routes, and their reads of the store."""

    def __init__(
        self,
        database: Callable[[], Awaitable[Database]],
        settings: ParityConfig,
        routes: Iterable[str] = (),
    ) -> None:
        self._database = database
        self.windows: dict[str, ResultWindow] = {}
        self.settings = settings
        self.routes: tuple[str, ...] = ()
        self.configure(settings, routes)

    def configure(self, settings: ParityConfig, routes: Iterable[str]) -> None:
        """The settings and the mirrored routes now (a window keeps what it holds, resized;
        one of a route that mirrors no more goes)."""
        self.settings = settings
        self.routes = tuple(routes)
        windows, self.windows = self.windows, {}
        for name in self.routes:
            old = windows.get(name)
            if old is None or old.size != settings.window:
                old = ResultWindow(settings.window, old or ())
            self.windows[name] = old

    def add(self, route: str, row_id: int | None, sample: Sample) -> None:
        """Book one comparison (its store row id; None: the store refused it)."""
        window = self.windows.get(route)
        if window is not None:
            window.append((row_id, sample))

    def compared(self, route: str) -> int:
        return len(self.windows.get(route, ()))

    def rate(self, route: str) -> float | None:
        """Share of `route`'s window without a reported difference; None under `min_samples`
        (a promotion gate should then wait, not pass)."""
        window = self.windows.get(route)
        if not window or len(window) < self.settings.min_samples:
            return None
        return window.rate(self.settings.thresholds)

    # -- reading the store ----------------------------------------------------------------

    async def latest_rows(
        self, route: str, after: int | None = None, columns: str = "*"
    ) -> list[dict[str, Any]]:
        """`route`'s latest `window` results (above id `after` only), oldest first."""
        return await latest(await self._database(), route, self.settings.window, after, columns)

    @staticmethod
    def _sample(row: dict[str, Any]) -> Sample:
        return sample_of(row["endpoint"], row["fields"], row.get("noise_fields"))

    async def read(self, name: str, window: ResultWindow | None, full: bool) -> None:
        """One read of `name`'s results into its window (whole, or above its `top`).

        The loop's other work runs every `READ_SLICE` results:
        - the ids come first, and only results the window does not hold are decoded (one
          worker alone reads back only its own, booked already: decoding 1,000 again took
          8-14 ms of the loop every `REFRESH_SECONDS`);
        - a whole reload that finds what the window holds leaves it as it is;
        - results are decoded, merged and a reloaded window built a slice at a time."""
        after = None if full or window is None else window.top
        # (each query bounded: a store that hangs costs a pass, not the reads for good)
        ids = [
            int(r["id"]) for r in await bounded(self.latest_rows(name, after, "id"), STORE_TIMEOUT)
        ]
        known = window.by_id() if window is not None else {}
        missing = [i for i in ids if i not in known]
        if missing:
            wanted = set(missing)
            db = await self._database()
            between = results_between(db, name, missing[0], missing[-1], _SAMPLE_COLUMNS)
            rows = await bounded(between, STORE_TIMEOUT)
            for n, row in enumerate(rows, 1):
                row_id = int(row["id"])
                if row_id in wanted:
                    known[row_id] = self._sample(row)
                if n % READ_SLICE == 0:
                    await asyncio.sleep(0)
        stored = [(i, known[i]) for i in ids if i in known]  # (one pruned meanwhile is gone)
        if not full and window is not None:
            if not missing:  # all this worker's own: nothing to add, `top` moves on
                window.merge(stored)
                return
            for n in range(0, len(stored), READ_SLICE):
                window.merge(stored[n : n + READ_SLICE])  # ascending: own ones stay skipped
                await asyncio.sleep(0)
            return
        top = max(ids, default=0)
        window = self.windows.get(name)  # as it is now: with what this worker booked meanwhile
        if window is not None and window.size == self.settings.window:
            newer = [i for i in window.ids() if i is not None and i > top]
            if window.ids() == [*(i for i, _ in stored), *newer]:
                window.top = top  # the same results: the window stays as it is
                return
        fresh = ResultWindow(self.settings.window, (), top)
        for n in range(0, len(stored), READ_SLICE):
            for entry in stored[n : n + READ_SLICE]:
                fresh.append(entry)
            await asyncio.sleep(0)
        window = self.windows.get(name)  # what this worker booked meanwhile is kept
        for entry in window or ():
            if entry[0] is not None and entry[0] > top:
                fresh.append(entry)  # (above `top`: this worker's own)
        self.windows[name] = fresh

    async def run(self, read: Callable[[str], None], every: float, full_every: int) -> None:
        """Read into every window what other workers stored since the last read, so that
        workers agree (every `every` seconds: `REFRESH_SECONDS`); every `full_every`th time
        (`FULL_REFRESH`), reload it whole (results that were never stored leave it, a store
        that was swapped is read afresh). `read(route)` after each read (the route's rate may
        have changed)."""
        refreshes = 0
        while True:
            for name in self.routes:
                window = self.windows.get(name)
                full = window is None or window.top is None or refreshes % full_every == 0
                try:
                    await self.read(name, window, full)
                except (StoreUnavailable, TimeoutError):  # down, or hanging: the next pass
                    break
                read(name)
            refreshes += 1
            await asyncio.sleep(every)


# -- what the mirror process sends ---------------------------------------------------------


@dataclass(slots=True)
class RouteTally:
    """One route's share of a `Tally`: counts to add, and its window as it is now."""

    same: int = 0  # comparisons without a raw difference
    differ: int = 0  # with one (before the noise rule)
    failures: dict[str, int] = field(default_factory=dict)  # the candidate gave no answer
    skipped: dict[str, int] = field(default_factory=dict)  # nothing compared (why)
    compared: int = 0  # the window's size
    rate: float | None = None  # its parity rate (None: under `min_samples`)

    def to_wire(self) -> list[Any]:
        return [self.same, self.differ, self.failures, self.skipped, self.compared, self.rate]

    @classmethod
    def of_wire(cls, values: Sequence[Any]) -> RouteTally:
        return cls(*values)


@dataclass(slots=True)
class Tally:
    """What a frame of the mirror process's brings the gateway: the jobs it is done with (no
    longer held), and per route the counts and window figures; the results it could not
    store (`store_errors`)."""

    done: list[int] = field(default_factory=list)
    routes: dict[str, RouteTally] = field(default_factory=dict)
    store_errors: int = 0

    def route(self, name: str) -> RouteTally:
        tally = self.routes.get(name)
        if tally is None:
            tally = self.routes[name] = RouteTally()
        return tally

    def to_wire(self) -> list[Any]:
        routes = {name: t.to_wire() for name, t in self.routes.items()}
        return [self.done, routes, self.store_errors]

    @classmethod
    def of_wire(cls, values: Sequence[Any]) -> Tally:
        done, routes, store_errors = values
        tallies = {name: RouteTally.of_wire(t) for name, t in routes.items()}
        return cls(done, tallies, store_errors)
