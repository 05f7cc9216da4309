"""The mirror process's CPU budget (`parity.mirror.cpu`): a share of one CPU it may spend.

The mirror process already runs only on CPU time nothing else wants (SCHED_IDLE). But busy is
not free: a process that burns a core's idle time beside the gateway moves the primary's p99
on a small host (BENCHMARKS.md, "a CPU neighbour as a control"). With a budget the mirror
process spends at most `share` of one CPU on average: its jobs wait while it is spent (the
gateway, finding it full, drops new copies cheaply), and those that would wait past the
mirror timeout are skipped (counted, reason `cpu_budget`): fewer comparisons, a bounded
neighbour.

Decided from readings the caller takes (its CPU time and a monotonic clock), so it runs on
any clock: a token bucket of CPU seconds that refills at `share` a second, up to `WINDOW`
seconds' worth.
"""

from __future__ import annotations

__all__ = ["WINDOW", "CpuBudget"]

WINDOW = 1.0  # seconds of the budget that may be spent at once (after a quiet second)
_EPSILON = 1e-4  # (a wait that ends with the budget just above zero, not at it)


class CpuBudget:
    """`share` of one CPU (0-1), spent as a token bucket over `WINDOW` seconds."""

    __slots__ = ("_cpu", "_wall", "capacity", "share", "tokens")

    def __init__(self, share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError("a CPU budget is a share of one CPU, over 0 and at most 1")
        self.share = share
        self.capacity = share * WINDOW
        self.tokens = self.capacity
        self._cpu: float | None = None
        self._wall = 0.0

    def wait(self, cpu: float, wall: float) -> float:
        """Seconds to wait before the next job may run (0: now), given the process's CPU
        seconds so far and the time: what it spent since the last call is charged, what the
        time since earned is added. Nothing is charged for the time it waits."""
        if self._cpu is not None:
            earned = max(0.0, wall - self._wall) * self.share
            self.tokens = min(self.capacity, self.tokens + earned) - max(0.0, cpu - self._cpu)
        self._cpu, self._wall = cpu, wall
        if self.tokens > 0:
            return 0.0
        return -self.tokens / self.share + _EPSILON
