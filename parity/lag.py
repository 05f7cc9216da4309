"""Event-loop lag: the cheap signal that the gateway is short of CPU, so mirror work yields.

The mirror shares the gateway's event loop with primary traffic. When the loop is busy, a timer
wakes late; how late is the time a ready callback (a primary request) waits for the loop. A
supervised probe sleeps `INTERVAL` over and over and feeds how late it woke into an exponentially
smoothed value. Above `parity.mirror.shed_lag` the parity feature sheds: new mirror jobs are
dropped and counted (`result="shed"`) and mirror workers pause between jobs until the lag falls
back under the threshold. The probe costs one timer wake-up every 50 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["INTERVAL", "LoopLag"]

INTERVAL = 0.05  # seconds between probe wake-ups
SMOOTHING = 0.3  # weight of the newest sample: a single 100 ms stall sheds for ~0.3 s


class LoopLag:
    """The smoothed lateness of a periodic timer, and whether it is over the threshold."""

    __slots__ = ("lag", "probes", "threshold")

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold  # seconds; 0 turns shedding off
        self.lag = 0.0  # smoothed seconds late
        self.probes = 0

    @property
    def shedding(self) -> bool:
        """True while the smoothed lag is above the threshold (never when it is 0)."""
        return 0.0 < self.threshold < self.lag

    def observe(self, late: float) -> None:
        """One probe: the timer woke `late` seconds after it was due."""
        self.probes += 1
        self.lag += SMOOTHING * (max(0.0, late) - self.lag)

    async def run(
        self,
        time: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        on_probe: Callable[[], None] | None = None,
    ) -> None:
        """Probe forever (a supervised loop); `time` is the loop's clock unless injected."""
        now = time or asyncio.get_running_loop().time
        while True:
            start = now()
            await sleep(INTERVAL)
            self.observe(now() - start - INTERVAL)
            if on_probe is not None:
                on_probe()
