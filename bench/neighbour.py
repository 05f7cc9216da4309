"""A CPU neighbour: a process that burns a share of one CPU in short bursts, and nothing else.

    python -m cutover.bench.neighbour --share 0.25 --period 0.002 --seconds 10

`bench.mirror_cost`'s `plain-neighbour` side runs one beside an unmirrored gateway, on the
mirror process's CPU and in its scheduling class (nice 10, SCHED_IDLE), burning what the mirror
process burns there. It talks to nobody: whatever it costs the primary is the host's (shared
caches, memory bandwidth, the hypervisor's scheduling of the CPUs), not the gateway's work for a
copy, so it tells apart what the mirror's own work costs from what any busy process beside the
gateway would.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

__all__ = ["burn", "main"]


def burn(share: float, period: float, seconds: float) -> int:
    """Spin `share` of every `period` and sleep the rest, for `seconds`; the bursts done."""
    end = time.monotonic() + seconds
    busy = share * period
    bursts = 0
    while (start := time.monotonic()) < end:
        while time.monotonic() - start < busy:
            pass
        bursts += 1
        rest = period - (time.monotonic() - start)
        if rest > 0:
            time.sleep(rest)
    return bursts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cutover.bench.neighbour")
    parser.add_argument("--share", type=float, default=0.25, help="of one CPU, 0-1")
    parser.add_argument("--period", type=float, default=0.002, help="seconds between bursts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", action="store_true", help="nice 10 and SCHED_IDLE, as the mirror")
    args = parser.parse_args(argv)
    if not 0 <= args.share <= 1 or args.period <= 0 or args.seconds < 0:
        parser.error("--share needs 0-1, --period more than 0, --seconds 0 or more")
    if args.idle:
        os.nice(10)
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    burn(args.share, args.period, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
