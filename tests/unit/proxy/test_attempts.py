"""proxy.attempts: the bookkeeping both forwarding paths share (no sockets)."""

from __future__ import annotations

from cutover.core.config_model import Match, Retry, Route
from cutover.proxy.attempts import Attempts, ProxyOutcome
from cutover.proxy.metrics import Metrics
from cutover.routing.budget import RetryBudget
from cutover.routing.replay import Failure


class _Gateway:
    """What `Attempts` uses of the gateway: metrics and passive health."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.responses: list[tuple[str, bool]] = []

    def record_response(self, backend: str, ok: bool) -> None:
        self.responses.append((backend, ok))


def _sample(metric: object, name: str, **labels: str) -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def _attempts(
    method: str = "GET", replayable: bool = True, budget: RetryBudget | None = None
) -> tuple[Attempts, _Gateway, ProxyOutcome, RetryBudget]:
    gw = _Gateway()
    route = Route(name="r", match=Match(), split=(("go", 100),), retry=Retry(attempts=2))
    budget = budget or RetryBudget(percent=100, minimum=10)
    budget.start()
    outcome = ProxyOutcome()
    return Attempts(gw, route, budget, outcome, method, False, replayable), gw, outcome, budget  # type: ignore[arg-type]


def test_a_reset_then_an_answer_books_one_fallback() -> None:
    attempts, gw, outcome, budget = _attempts()
    assert attempts.limit == 3
    assert attempts.may_try(0, "go")
    attempts.failed(0, "go", Failure.RESET, "reset")
    assert attempts.may_try(1, "python")
    assert budget.replays == 1
    assert attempts.answered(1, "python", 200, more=False)
    assert budget.replays == 0  # the replay is over
    assert outcome.backend == "python" and outcome.fallback_from == "go"
    assert outcome.failures == [("go", "reset")]
    assert gw.responses == [("go", False), ("python", True)]
    m = gw.metrics
    fallback = {"route": "r", "from_backend": "go", "to_backend": "python"}
    assert _sample(m.fallbacks, "cutover_fallbacks_total", **fallback) == 1.0
    assert (
        _sample(m.upstream_errors, "cutover_upstream_errors_total", backend="go", kind="reset")
        == 1.0
    )


def test_a_post_that_may_have_arrived_is_not_sent_again() -> None:
    attempts, _, outcome, _ = _attempts(method="POST")
    attempts.failed(0, "go", Failure.TIMEOUT, "timeout")
    assert not attempts.may_try(1, "python")
    error = attempts.give_up("go")
    assert (error.backend, error.failure) == ("go", "timeout")
    assert outcome.backend == "go"


def test_a_retry_status_goes_on_only_with_a_backend_left_and_a_replayable_body() -> None:
    attempts, _, outcome, _ = _attempts()
    assert not attempts.answered(0, "go", 503, more=True)  # worth the next backend
    assert outcome.failures == [("go", "status")] and outcome.backend is None
    assert attempts.answered(1, "python", 503, more=False)  # the last one stands
    assert outcome.backend == "python"
    streamed, _, out2, _ = _attempts(replayable=False)
    assert streamed.answered(0, "go", 503, more=True)  # its body cannot be sent again
    assert out2.backend == "go"


def test_an_exhausted_budget_stops_fallbacks_and_is_counted() -> None:
    budget = RetryBudget(percent=0, minimum=0)
    attempts, gw, _, _ = _attempts(budget=budget)
    attempts.failed(0, "go", Failure.CONNECT, "connect")
    assert not attempts.may_try(1, "python")
    assert (
        _sample(gw.metrics.budget_exhausted, "cutover_retry_budget_exhausted_total", route="r")
        == 1.0
    )


def test_a_spent_deadline_gives_a_timeout() -> None:
    attempts, *_ = _attempts()
    assert not attempts.expired(0.5)
    assert attempts.expired(0.0)
    assert attempts.give_up("go").failure == "timeout"


def test_a_replay_cut_short_gives_its_slot_back_once() -> None:
    """The attempt loops call `release()` in a `finally`: a fallback attempt that neither
    failed nor answered (its client went away, it was cancelled) does not keep its replay."""
    budget = RetryBudget(percent=0, minimum=1)
    attempts, *_ = _attempts(budget=budget)
    attempts.failed(0, "go", Failure.CONNECT, "connect")
    assert attempts.may_try(1, "python")
    assert budget.replays == 1
    attempts.release()  # the attempt was cancelled
    attempts.release()  # and the loop's `finally` runs too: still one slot given back
    assert budget.replays == 0
    other, *_ = _attempts(budget=budget)  # the next request may fall back again
    other.failed(0, "go", Failure.CONNECT, "connect")
    assert other.may_try(1, "python")


def test_release_without_a_replay_gives_nothing_back() -> None:
    budget = RetryBudget(percent=100, minimum=3)
    held, *_ = _attempts(budget=budget)
    held.failed(0, "go", Failure.CONNECT, "connect")
    assert held.may_try(1, "python")  # another request's replay, in flight
    attempts, *_ = _attempts(budget=budget)
    assert attempts.may_try(0, "go")  # a first attempt holds no replay
    attempts.release()
    assert attempts.answered(0, "go", 200, more=False)
    assert budget.replays == 1  # the other request's replay is still counted
