"""The log format every process of a gateway writes (worker, supervisor, mirror process)."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logging"]


def setup_logging(role: str | None = None) -> None:
    """Log lines to stderr, tagged with the worker (`CUTOVER_WORKER_ID`) and `role`."""
    worker = os.environ.get("CUTOVER_WORKER_ID")
    parts = [p for p in (f"worker {worker}" if worker is not None else None, role) if p]
    tag = f" [{', '.join(parts)}]" if parts else ""
    logging.basicConfig(
        level=os.environ.get("CUTOVER_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
