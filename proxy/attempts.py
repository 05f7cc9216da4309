"""One request's walk along its backends, as a sans-IO state: what every sender books.

`proxy.pipeline.run_attempts` drives it over a transport (the aiohttp client, the lean pool);
the fast path's quick lane calls the same plain methods without a task. `Attempts` holds what
they share — the replay rules (`routing.replay`), the route's retry budget, passive health,
the metrics and the request's `ProxyOutcome`:

    expired(remaining) / may_try(index, name)   before an attempt (a replay reserves budget)
    failed(index, name, failure, kind)          no answer (connect, timeout, reset, status)
    answered(index, name, status, more)         an answer: True when it goes to the client
    give_up(primary)                            the error once no attempt is left
    release()                                   in a `finally`: any replay held goes back

A fallback attempt holds one replay of the route's retry budget from `may_try` until it ends:
`failed` or `answered` gives it back, and so does `release`, for an attempt that never got that
far (the client went away and the attempt was cancelled, an error); it is idempotent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cutover.core.errors import UpstreamError
from cutover.routing.budget import RetryBudget
from cutover.routing.replay import Failure, may_fall_back

if TYPE_CHECKING:
    from cutover.core.config_model import Route
    from cutover.proxy.metrics import Metrics

__all__ = ["Attempts", "Books", "ProxyOutcome", "book_answer"]


class Books(Protocol):
    """Where attempts are booked: the gateway's metrics and passive health."""

    metrics: Metrics

    def record_response(self, backend: str, ok: bool) -> None: ...


class ProxyOutcome:
    """What happened to one proxied request, filled in by the forwarder, read by the log."""

    __slots__ = ("backend", "failures", "fallback_from", "set_cookie")

    def __init__(self) -> None:
        self.backend: str | None = None
        self.fallback_from: str | None = None
        self.set_cookie: str | None = None
        self.failures: list[tuple[str, str]] = []  # (backend, kind) of every failed attempt


def book_answer(books: Books, outcome: ProxyOutcome, name: str, status: int) -> None:
    """An answer from `name` goes to the client: passive health, and the request's backend.
    (The quick lane books its first attempt's answer here too.)"""
    books.record_response(name, status < 500)
    outcome.backend = name


class Attempts:
    __slots__ = (
        "budget",
        "failure",
        "gw",
        "idempotency_key",
        "kind",
        "limit",
        "method",
        "outcome",
        "previous",
        "refused",
        "replayable",
        "replaying",
        "route",
    )

    def __init__(
        self,
        gw: Books,
        route: Route,
        budget: RetryBudget,
        outcome: ProxyOutcome,
        method: str,
        idempotency_key: bool,
        replayable: bool,
    ) -> None:
        self.gw = gw
        self.route = route
        self.budget = budget
        self.outcome = outcome
        self.method = method
        self.idempotency_key = idempotency_key
        self.replayable = replayable  # False once a streamed body went to a backend
        self.limit = 1 + route.retry.attempts  # attempts at most, the first included
        self.previous: str | None = None  # the backend tried last
        self.failure: Failure | None = None  # how it failed
        self.kind = ""  # the same, as the metrics and errors name it
        self.replaying = False  # the attempt in progress holds a replay of the budget
        self.refused = False  # the retry budget refused a replay

    def expired(self, remaining: float) -> bool:
        """No time left for another attempt (the request's deadline passed)."""
        if remaining > 0:
            return False
        self.failure, self.kind = Failure.TIMEOUT, "timeout"
        return True

    def may_try(self, index: int, name: str) -> bool:
        """May attempt `index` go to backend `name`? The first always may; a fallback when the
        replay rules allow it and the retry budget has room (it is booked as a fallback)."""
        if not index:
            return True
        assert self.failure is not None
        if not may_fall_back(
            self.failure, self.method, self.idempotency_key, self.route.retry, self.replayable
        ):
            return False
        metrics = self.gw.metrics
        if not self.budget.try_replay():
            metrics.budget_exhausted.labels(self.route.name).inc()
            self.refused = True
            return False
        self.replaying = True
        if name != self.previous:  # a retry of the same backend (a fan-out part) is no fallback
            metrics.fallbacks.labels(self.route.name, self.previous, name).inc()
            outcome = self.outcome
            outcome.fallback_from = outcome.fallback_from or self.previous
        return True

    def failed(self, index: int, name: str, failure: Failure, kind: str) -> None:
        """Attempt `index` on `name` got no answer (connect, timeout, reset)."""
        self.release()
        self._failed(name, failure, kind)

    def answered(self, index: int, name: str, status: int, more: bool) -> bool:
        """Attempt `index` on `name` answered `status`: True when that answer goes to the
        client; False when it is worth the next backend (`more`: one is left) and the replay
        rules allow it — the caller releases the answer and goes on."""
        self.release()
        if (
            more
            and status in self.route.retry.on_status
            and may_fall_back(
                Failure.STATUS,
                self.method,
                self.idempotency_key,
                self.route.retry,
                self.replayable,
            )
        ):
            self._failed(name, Failure.STATUS, "status")
            return False
        book_answer(self.gw, self.outcome, name, status)
        return True

    def release(self) -> None:
        """The attempt in progress is over, however it ended: its replay (if it holds one)
        goes back to the budget. Idempotent; callers call it in a `finally`."""
        if self.replaying:
            self.replaying = False
            self.budget.replay_done()

    def give_up(self, primary: str) -> UpstreamError:
        """The error for a request no backend answered acceptably."""
        self.outcome.backend = self.previous
        return UpstreamError(self.previous or primary, self.kind)

    def _failed(self, name: str, failure: Failure, kind: str) -> None:
        gw = self.gw
        gw.metrics.upstream_errors.labels(name, kind).inc()
        self.outcome.failures.append((name, kind))
        gw.record_response(name, False)
        self.previous = name
        self.failure, self.kind = failure, kind
