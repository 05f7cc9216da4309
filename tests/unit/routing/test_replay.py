"""routing.replay: every method x failure."""

from __future__ import annotations

import pytest

from cutover.core.config_model import Retry
from cutover.routing.replay import Failure, may_fall_back, may_replay

METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH", "CONNECT"]
REPLAYABLE = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}
DEFAULT = Retry()
POST_OPT_IN = Retry(methods=DEFAULT.methods | {"POST"})


@pytest.mark.parametrize("failure", list(Failure))
@pytest.mark.parametrize("method", METHODS)
def test_replay_table(method: str, failure: Failure) -> None:
    reached = failure is not Failure.CONNECT
    expected = (not reached) or method in REPLAYABLE
    assert may_replay(failure, method, False, DEFAULT) is expected
    # an Idempotency-Key makes any request replayable
    assert may_replay(failure, method, True, DEFAULT) is True
    # a route opts POST in by listing it
    assert may_replay(failure, method, False, POST_OPT_IN) is (expected or method == "POST")


def test_empty_method_list_still_replays_connect_failures() -> None:
    nothing = Retry(methods=frozenset())
    assert may_replay(Failure.CONNECT, "POST", False, nothing)
    assert not may_replay(Failure.TIMEOUT, "GET", False, nothing)
    assert may_replay(Failure.RESET, "GET", True, nothing)


@pytest.mark.parametrize("failure", list(Failure))
def test_a_streamed_body_falls_back_only_when_it_never_left(failure: Failure) -> None:
    assert may_fall_back(failure, "GET", False, DEFAULT, replayable=True)
    expected = failure is Failure.CONNECT
    assert may_fall_back(failure, "GET", False, DEFAULT, replayable=False) is expected
    # and never where the replay rules say no, buffered body or not
    assert may_fall_back(failure, "POST", False, DEFAULT, replayable=True) is expected
