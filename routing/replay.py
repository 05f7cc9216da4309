"""May a failed attempt be replayed on the next backend? (DESIGN.md, Requests and retries)"""

from __future__ import annotations

import enum

from cutover.core.config_model import Retry

__all__ = ["Failure", "may_fall_back", "may_replay"]


class Failure(enum.Enum):
    """How an attempt failed."""

    CONNECT = "connect"  # refused, DNS, connect timeout: the request never reached the backend
    TIMEOUT = "timeout"  # read timeout after sending: it may have been processed
    RESET = "reset"  # connection reset after sending: it may have been processed
    STATUS = "status"  # a status in `retry.on_status` (502/503/504): it may have been processed


def may_replay(failure: Failure, method: str, has_idempotency_key: bool, retry: Retry) -> bool:
    """True when the request may go to the next attempt after `failure`.

    A request that never reached the backend always may. One that may have reached it only when
    its method is in `retry.methods` (the safe and idempotent methods by default; a route opts a
    POST in by listing it) or it carries an `Idempotency-Key`.
    """
    if failure is Failure.CONNECT:
        return True
    return has_idempotency_key or method in retry.methods


def may_fall_back(
    failure: Failure, method: str, has_idempotency_key: bool, retry: Retry, replayable: bool
) -> bool:
    """True when the request may go to the next backend after `failure`.

    The replay rules (`may_replay`), and a body that was streamed to the failed backend
    (`replayable` is False) cannot be sent again unless the request never reached it.
    """
    if not may_replay(failure, method, has_idempotency_key, retry):
        return False
    return replayable or failure is Failure.CONNECT
