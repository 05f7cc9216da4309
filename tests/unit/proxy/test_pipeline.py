"""proxy.pipeline: the one attempt loop, driven over a fake transport (no sockets).

Every failure phase x method idempotency x budget state x fallback list is checked against a
small reference model of the replay rules; cancellation at every await the loop makes (each
attempt, each backoff) is checked too. After each run the in-flight invariant holds: the
budget's replays and requests, and the answers the transport leased, are all back to zero.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cutover.core.config_model import Match, Retry, Route, Timeouts
from cutover.core.errors import UpstreamError
from cutover.proxy.attempts import Attempts, ProxyOutcome
from cutover.proxy.metrics import Metrics
from cutover.proxy.pipeline import run_attempts, upstream_errors
from cutover.routing.budget import RetryBudget

PHASES = ("connect", "timeout", "reset")
BACKENDS = ("a", "b", "c", "d")


class _Books:
    """What `Attempts` books into: metrics and passive health."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.health: list[tuple[str, bool]] = []

    def record_response(self, backend: str, ok: bool) -> None:
        self.health.append((backend, ok))


@dataclass
class _Answer:
    status: int
    transport: _Transport
    released: bool = False

    def release(self) -> None:
        assert not self.released, "an answer released twice"
        self.released = True
        self.transport.leased -= 1


@dataclass
class _Transport:
    """Plays a script: per call, a phase that fails, a status that answers, or "hang"."""

    script: list[str | int]
    calls: list[tuple[str, float]] = field(default_factory=list)
    leased: int = 0  # answers handed out and not released
    hanging: asyncio.Future[None] | None = None

    async def send(self, backend: str, per_try: float) -> _Answer:
        step = self.script[len(self.calls)]
        self.calls.append((backend, per_try))
        if step == "hang":
            self.hanging = asyncio.get_running_loop().create_future()
            await self.hanging
        if isinstance(step, str):
            raise UpstreamError(backend, step)
        self.leased += 1
        return _Answer(step, self)


def _route(attempts: int, percent: float = 20.0, minimum: int = 3) -> Route:
    retry = Retry(attempts=attempts, budget_percent=percent, budget_min=minimum)
    return Route(
        name="r",
        match=Match(),
        split=(("a", 100),),
        retry=retry,
        timeouts=Timeouts(total=10.0, per_try=3.0),
    )


def _run(
    script: list[str | int],
    tries: tuple[str, ...],
    *,
    method: str = "GET",
    key: bool = False,
    route: Route | None = None,
    budget: RetryBudget | None = None,
) -> tuple[str | UpstreamError, _Transport, _Books, ProxyOutcome, RetryBudget]:
    route = route or _route(len(tries) - 1)
    budget = budget or RetryBudget.from_retry(route.retry)
    books = _Books()
    outcome = ProxyOutcome()
    transport = _Transport(list(script))
    attempts = Attempts(books, route, budget, outcome, method, key, True)  # type: ignore[arg-type]

    async def main() -> str | UpstreamError:
        budget.start()
        try:
            name, answer = await run_attempts(attempts, tries, 10.0, transport, clock=lambda: 0.0)
        except UpstreamError as exc:
            return exc
        finally:
            budget.finish()
        answer.release()  # the caller's, once streamed
        return name

    result = asyncio.run(main())
    return result, transport, books, outcome, budget


def _assert_quiet(transport: _Transport, budget: RetryBudget, held: int = 0) -> None:
    assert budget.replays == held
    assert budget.in_flight == 0
    assert transport.leased == 0


def _model(
    script: list[str | int],
    tries: tuple[str, ...],
    method: str,
    key: bool,
    room: int,
    on_status: frozenset[int],
) -> tuple[list[str], str | None]:
    """The reference: which backends are called, and who answers (None: nobody)."""
    called: list[str] = []
    replayable_method = key or method in Retry().methods
    for index, name in enumerate(tries):
        if index:
            failure = script[index - 1]
            if failure != "connect" and not replayable_method:
                break
            if room <= 0:
                break
        called.append(name)
        step = script[index]
        if isinstance(step, int):
            if step in on_status and index + 1 < len(tries) and replayable_method:
                script = [*script[:index], "status", *script[index + 1 :]]
                continue
            return called, name
    return called, None


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.one_of(st.sampled_from(PHASES), st.sampled_from((200, 404, 500, 502, 503, 504))),
        min_size=1,
        max_size=4,
    ),
    method=st.sampled_from(("GET", "PUT", "DELETE", "POST", "PATCH")),
    key=st.booleans(),
    room=st.sampled_from((0, 1, 3)),
)
def test_every_phase_method_budget_and_fallback_list(
    steps: list[str | int], method: str, key: bool, room: int
) -> None:
    tries = BACKENDS[: len(steps)]
    route = _route(len(tries) - 1, percent=0.0, minimum=room)  # `room` replays at once
    result, transport, books, outcome, budget = _run(
        steps, tries, method=method, key=key, route=route
    )
    expected_calls, expected_winner = _model(steps, tries, method, key, room, route.retry.on_status)
    assert [name for name, _ in transport.calls] == expected_calls
    if expected_winner is None:
        assert isinstance(result, UpstreamError)
        assert result.backend == expected_calls[-1]
    else:
        assert result == expected_winner
        assert outcome.backend == expected_winner
    # Passive health: one booking per attempt made, a failure for every one but the winner's.
    assert [name for name, _ in books.health] == expected_calls
    assert all(per_try == 3.0 for _, per_try in transport.calls)  # the route's per_try
    _assert_quiet(transport, budget)


def test_a_spent_budget_refuses_the_fallback_and_counts_it() -> None:
    route = _route(1, percent=0.0, minimum=0)
    result, transport, _, _, budget = _run(["reset", 200], ("a", "b"), route=route)
    assert isinstance(result, UpstreamError) and result.failure == "reset"
    assert [name for name, _ in transport.calls] == ["a"]
    assert budget.refused == 1
    _assert_quiet(transport, budget)


def test_a_retry_status_answer_is_released_before_the_next_attempt() -> None:
    result, transport, books, outcome, budget = _run([503, 200], ("a", "b"))
    assert result == "b"
    assert outcome.failures == [("a", "status")] and outcome.fallback_from == "a"
    assert books.health == [("a", False), ("b", True)]
    _assert_quiet(transport, budget)


def test_the_deadline_bounds_every_attempt_together() -> None:
    route = _route(2)
    budget = RetryBudget.from_retry(route.retry)
    transport = _Transport(["reset", "reset", 200])
    attempts = Attempts(_Books(), route, budget, ProxyOutcome(), "GET", False, True)  # type: ignore[arg-type]
    now = [0.0]

    async def send(backend: str, per_try: float) -> _Answer:
        now[0] += 6.0  # each attempt takes 6 s of a 10 s deadline
        return await _Transport.send(transport, backend, per_try)

    transport.send = send  # type: ignore[method-assign]

    async def main() -> None:
        with pytest.raises(UpstreamError) as caught:
            await run_attempts(attempts, ("a", "b", "c"), 10.0, transport, clock=lambda: now[0])
        assert caught.value.failure == "timeout"

    asyncio.run(main())
    assert [c[1] for c in transport.calls] == [3.0, 3.0]  # per_try, then min(4, per_try)
    _assert_quiet(transport, budget)


def test_a_quick_lane_result_counts_as_the_first_attempt() -> None:
    route = _route(1)
    budget = RetryBudget.from_retry(route.retry)
    transport = _Transport([200])
    outcome = ProxyOutcome()
    attempts = Attempts(_Books(), route, budget, outcome, "GET", False, True)  # type: ignore[arg-type]

    async def main() -> str:
        name, answer = await run_attempts(
            attempts,
            ("a", "b"),
            10.0,
            transport,
            first=UpstreamError("a", "connect"),
            clock=lambda: 0.0,
        )
        answer.release()
        return name

    assert asyncio.run(main()) == "b"
    assert [c[0] for c in transport.calls] == ["b"]
    assert outcome.failures == [("a", "connect")]
    _assert_quiet(transport, budget)


@pytest.mark.parametrize("hang_at", [0, 1, 2])
@pytest.mark.parametrize("with_backoff", [False, True])
def test_cancellation_at_every_await_gives_everything_back(
    hang_at: int, with_backoff: bool
) -> None:
    """The client goes away while attempt `hang_at` is in flight, or while the loop waits
    out the backoff before it: the replay it holds goes back, nothing stays leased."""
    script: list[str | int] = ["connect"] * hang_at + ["hang"]
    route = _route(2)
    budget = RetryBudget.from_retry(route.retry)
    transport = _Transport(script)
    attempts = Attempts(_Books(), route, budget, ProxyOutcome(), "GET", False, True)  # type: ignore[arg-type]
    sleeping: list[asyncio.Future[None]] = []

    naps: list[float] = []

    async def sleep(delay: float) -> None:
        naps.append(delay)
        if len(naps) < hang_at:
            return
        fut = asyncio.get_running_loop().create_future()
        sleeping.append(fut)
        await fut  # the backoff before attempt `hang_at`, never over: the cancellation lands

    async def main() -> None:
        budget.start()
        try:
            task = asyncio.ensure_future(
                run_attempts(
                    attempts,
                    ("a", "b", "c"),
                    10.0,
                    transport,
                    clock=lambda: 0.0,
                    backoff=(lambda n: 0.5) if with_backoff else None,
                    sleep=sleep,
                )
            )
            for _ in range(100):
                await asyncio.sleep(0)
                if transport.hanging is not None or sleeping:
                    break
            held = 1 if hang_at else 0  # a replay in flight while the fallback runs
            assert budget.replays == held
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            budget.finish()

    asyncio.run(main())
    expected_calls = hang_at if with_backoff and hang_at else hang_at + 1  # hung in a backoff
    assert len(transport.calls) == expected_calls
    _assert_quiet(transport, budget)


def test_an_error_that_is_not_the_upstreams_ends_the_walk_and_releases() -> None:
    route = _route(1)
    budget = RetryBudget.from_retry(route.retry)

    class Broken:
        calls = 0

        async def send(self, backend: str, per_try: float) -> _Answer:
            self.calls += 1
            if self.calls == 1:
                raise UpstreamError(backend, "connect")
            raise ValueError("a bug in the transport")

    attempts = Attempts(_Books(), route, budget, ProxyOutcome(), "GET", False, True)  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(ValueError):
            await run_attempts(attempts, ("a", "b"), 10.0, Broken(), clock=lambda: 0.0)

    asyncio.run(main())
    assert budget.replays == 0


@pytest.mark.parametrize(
    ("error", "phase"),
    [
        (aiohttp.ConnectionTimeoutError(), "connect"),
        (aiohttp.ServerTimeoutError(), "timeout"),
        (TimeoutError(), "timeout"),
        (aiohttp.ServerDisconnectedError(), "reset"),
        (aiohttp.ClientPayloadError("cut"), "reset"),
        (ConnectionResetError(), "reset"),
    ],
)
def test_client_errors_map_to_upstream_error_phases_chained(
    error: BaseException, phase: str
) -> None:
    with pytest.raises(UpstreamError) as caught, upstream_errors("a"):
        raise error
    assert (caught.value.backend, caught.value.failure) == ("a", phase)
    assert caught.value.__cause__ is error


def test_other_errors_pass_through_the_mapping() -> None:
    with pytest.raises(KeyError), upstream_errors("a"):
        raise KeyError("not the upstream's")
