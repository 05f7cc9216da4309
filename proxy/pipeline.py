"""The one attempt loop: a request's walk along its backends, whatever carries it.

    run_attempts(attempts, tries, deadline, transport)  ->  (backend, answer)

`Attempts` (`proxy.attempts`) is the walk's sans-IO state — replay rules, retry budget, passive
health, metrics; `run_attempts` drives it over a `Transport`, whose one method sends one attempt
to one backend within a per-try timeout and returns the upstream's answer (status, headers and
body stream) or raises `UpstreamError(backend, phase)`, as httpx's `BaseTransport` does. The
transports are the aiohttp client (`proxy.forwarder`, compat fan-out parts, WebSocket upgrades)
and the fast path's lean pool (`proxy.fastpath`, whose quick lane drives the same `Attempts`
methods without a task; history deliveries, `publishing.delivery`, through `pool.send_whole`).

Everything the walk holds (a replay of the route's budget, an answer not taken) is given back in
one `finally`, so that no exit — an error, the client going away at any await — can skip it.
The answer returned is the caller's to release.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol, TypeVar

import aiohttp

from cutover.core.errors import UpstreamError
from cutover.proxy.attempts import Attempts
from cutover.routing.replay import Failure

__all__ = ["Answer", "Transport", "WholeAnswer", "failure_of", "run_attempts", "upstream_errors"]


class Answer(Protocol):
    """What the loop reads of an upstream answer: its status; `release` lets it go unread."""

    @property
    def status(self) -> int: ...

    def release(self) -> object: ...


class WholeAnswer:
    """An answer read whole within its attempt (`value`: what the sender made of it); it
    holds nothing, so letting it go is free."""

    __slots__ = ("status", "value")

    def __init__(self, status: int, value: object) -> None:
        self.status = status
        self.value = value

    def release(self) -> None:
        """Nothing held."""


A = TypeVar("A", bound=Answer)
A_co = TypeVar("A_co", bound=Answer, covariant=True)


class Transport(Protocol[A_co]):
    """Sends one attempt to one backend within `per_try` seconds.

    Returns the upstream's answer (head in, body still streaming) or raises
    `UpstreamError(backend, phase)`; any other exception ends the walk (a body over the limit,
    a cancellation)."""

    def send(self, backend: str, per_try: float) -> Awaitable[A_co]: ...


_FAILURES = {f.value: f for f in Failure}


def failure_of(error: UpstreamError) -> Failure:
    """The replay rules' failure kind of an attempt's error."""
    return _FAILURES.get(error.failure, Failure.RESET)


@contextlib.contextmanager
def upstream_errors(backend: str) -> Iterator[None]:
    """Turn the client library's errors into `UpstreamError(backend, phase)`, chained with
    `from` (httpx's `map_exceptions`): connect (never reached the backend), timeout, reset."""
    try:
        yield
    except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
        raise UpstreamError(backend, "connect") from exc
    except aiohttp.ClientError as exc:
        if isinstance(exc, aiohttp.ServerTimeoutError):
            raise UpstreamError(backend, "timeout") from exc
        raise UpstreamError(backend, "reset") from exc
    except TimeoutError as exc:
        raise UpstreamError(backend, "timeout") from exc
    except OSError as exc:
        raise UpstreamError(backend, "reset") from exc


async def run_attempts(
    attempts: Attempts,
    tries: Sequence[str],
    deadline: float,
    transport: Transport[A],
    *,
    first: A | UpstreamError | None = None,
    clock: Callable[[], float] | None = None,
    backoff: Callable[[int], float | None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> tuple[str, A]:
    """Send to `tries` in order (at most `attempts.limit` of them) until one answers
    acceptably; return its backend and answer, or raise the `UpstreamError` of the last failure.

    `first`: the result of attempt 0, made already (the fast path's quick lane). `deadline`
    bounds every attempt together, on `clock` (the running loop's by default). `backoff(n)`:
    seconds to wait before attempt n (n ≥ 1), None for no more attempts — retries of one
    backend (compat fan-out parts) wait; fallbacks to another do not.
    """
    now = clock or asyncio.get_running_loop().time
    per_try_limit = attempts.route.timeouts.per_try
    tries = tries[: attempts.limit]
    count = len(tries)
    try:
        for index, name in enumerate(tries):
            result: A | UpstreamError
            if index == 0 and first is not None:
                result = first
            else:
                if index and backoff is not None:
                    delay = backoff(index)
                    if delay is None or now() + delay >= deadline:
                        break
                remaining = deadline - now()
                if attempts.expired(remaining) or not attempts.may_try(index, name):
                    break
                if index and backoff is not None and delay:
                    await sleep(delay)  # holding its replay, as a retry does from its backoff on
                    remaining = deadline - now()
                per_try = min(remaining, per_try_limit) if per_try_limit else remaining
                try:
                    result = await transport.send(name, per_try)
                except UpstreamError as exc:
                    result = exc
            if isinstance(result, UpstreamError):
                attempts.failed(index, name, failure_of(result), result.failure)
                continue
            try:
                accepted = attempts.answered(index, name, result.status, more=index + 1 < count)
            except BaseException:
                result.release()
                raise
            if accepted:
                return name, result
            result.release()  # worth the next attempt (a retry status the replay rules allow)
        raise attempts.give_up(tries[0] if tries else "")
    finally:
        attempts.release()  # a replay cut short (client gone, error) ends here too
