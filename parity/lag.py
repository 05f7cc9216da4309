"""Is the gateway short of CPU? Two cheap signals, so that mirror work yields first.

- **Event-loop lag**: when the loop is busy, a timer wakes late; how late is the time a ready
  callback (a primary request) waits for the loop. A supervised probe sleeps `INTERVAL` over
  and over and feeds how late it woke into an exponentially smoothed value.
- **Run-queue wait** (Linux): the share of the probe's interval the loop's thread spent ready
  to run but waiting for a CPU (`/proc/thread-self/schedstat`, second field), smoothed the
  same way. A saturated machine shows here first: the loop may keep up (no lag) while each of
  its wake-ups waits behind other processes — among them the mirror's own work on the
  backends and the mirror process.

Above `parity.mirror.shed_lag`, or above `parity.mirror.shed_wait`, the parity feature sheds:
new mirror jobs are dropped and counted (`result="shed"`), and (inline) mirror workers pause
between jobs until both fall back under. The probe costs one timer wake-up and one `pread`
every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

from cutover.core.judged import Judged

__all__ = ["INTERVAL", "LoopLag", "RunQueueWait"]

INTERVAL = 0.05  # seconds between probe wake-ups
SMOOTHING = 0.3  # weight of the newest sample: a single 100 ms stall sheds for ~0.3 s
SCHEDSTAT = "/proc/thread-self/schedstat"


class RunQueueWait:
    """Nanoseconds the calling thread has waited for a CPU, from the kernel's schedstat (None
    where there is none: not Linux, or schedstats not built in). Open on the loop's thread."""

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self._fd: int | None = None
        with contextlib.suppress(OSError):
            self._fd = os.open(path, os.O_RDONLY)

    def read(self) -> int | None:
        if self._fd is None:
            return None
        try:
            return int(os.pread(self._fd, 128, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class LoopLag:
    """The smoothed lateness of a periodic timer and run-queue wait share, and whether either
    is over its threshold.

    `shedding` is a plain attribute, judged again whenever a figure or a threshold changes: a
    sampled request reads it without a call (the fast path pays for every Python call)."""

    __slots__ = ("_lag", "_threshold", "_wait", "_wait_threshold", "probes", "shedding")

    threshold: Judged[float] = Judged()  # seconds; 0 turns this signal off
    wait_threshold: Judged[float] = Judged()  # share 0..1 of the interval; 0 turns it off
    lag: Judged[float] = Judged()  # smoothed seconds late
    wait: Judged[float] = Judged()  # smoothed share of time ready to run but waiting for a CPU

    def __init__(self, threshold: float, wait_threshold: float = 0.0) -> None:
        self._threshold = threshold
        self._wait_threshold = wait_threshold
        self._lag = 0.0
        self._wait = 0.0
        self.probes = 0
        self.shedding = False  # a smoothed signal is above its threshold (never one that is 0)

    def _judge(self) -> None:
        self.shedding = 0.0 < self._threshold < self._lag or 0.0 < self._wait_threshold < self._wait

    def observe(self, late: float, waited: float | None = None) -> None:
        """One probe: the timer woke `late` seconds after it was due, and the loop's thread
        waited for a CPU for a `waited` share of the interval (None: not known)."""
        self.probes += 1
        self._lag += SMOOTHING * (max(0.0, late) - self._lag)
        if waited is not None:
            self._wait += SMOOTHING * (min(1.0, max(0.0, waited)) - self._wait)
        self._judge()

    async def run(
        self,
        time: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        on_probe: Callable[[], None] | None = None,
        waits: RunQueueWait | None = None,
    ) -> None:
        """Probe forever (a supervised loop); `time` is the loop's clock unless injected,
        `waits` the loop thread's run-queue counter (opened here unless injected)."""
        now = time or asyncio.get_running_loop().time
        counter = waits if waits is not None else RunQueueWait()
        try:
            before = counter.read()
            while True:
                start = now()
                await sleep(INTERVAL)
                elapsed = now() - start
                after = counter.read()
                waited = None
                if before is not None and after is not None and elapsed > 0:
                    waited = (after - before) / 1e9 / elapsed
                before = after
                self.observe(elapsed - INTERVAL, waited)
                if on_probe is not None:
                    on_probe()
        finally:
            if waits is None:
                counter.close()
