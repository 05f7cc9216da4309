"""Background tasks: the one way to run one, so that nothing dies quietly.

A background task is work nobody awaits in line: a loop that lives as long as its owner (health
checks, the delivery engine, discovery watches, flushers, the canary controller) or a piece of
work started and left to finish (a reload, closing retired pools). Owners start them through a
`TaskSupervisor` and keep the `Supervised` handle; they stop them with `Supervised.stop`.

- A loop (`TaskSupervisor.start`) ends cleanly only when its owner stops it (`CancelledError`,
  or returning after `stop` was called). Any other exception, or the loop returning by itself,
  is logged once with the task's name and traceback, counted in
  `cutover_task_failures_total{task}`, kept for `/readyz` (`tasks`: state, failures, restarts,
  last error), and the loop is started again from its factory after a capped exponential
  backoff (`base_delay`, doubling, at most `max_delay`; a run that lasted `max_delay` counts as
  healthy again). `until_done=True`: returning is the clean end (a start-up that may retry).
- A one-shot task (`TaskSupervisor.once`) is not restarted: its failure is logged, counted and
  shown the same way.
- `Supervised.stop` never raises: it cancels (after an optional grace), waits, and logs the
  task's outcome once. `stop_in_order` runs shutdown steps so that one failing never skips the
  steps after it.

Per-request concurrency (a request's TaskGroup, the fast path's per-exchange task, the delivery
engine's per-job tasks) is awaited or collected by its owner and is not a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from cutover.core.clock import Clock, rfc3339_or_none

log = logging.getLogger("cutover.tasks")

BASE_DELAY = 1.0  # seconds before the first restart of a failed loop
MAX_DELAY = 60.0  # the cap of the doubling delay
STOP_TIMEOUT = 5.0  # seconds `stop` waits for a cancelled task before leaving it behind

State = Literal["running", "restarting", "done", "failed", "stopped"]
Mode = Literal["forever", "until_done", "once"]
_USERINFO = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")


def describe(exc: BaseException | None) -> str:
    """An exception as /readyz shows it: its type and message, short, without URL passwords."""
    if exc is None:
        return "returned: a background loop must run until it is stopped"
    text = str(exc)
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = _USERINFO.sub(r"\1:<redacted>@", text)
    return text if len(text) <= 300 else text[:297] + "..."


class Supervised:
    """One named background task, held by its owner (see the module docstring)."""

    def __init__(
        self,
        supervisor: TaskSupervisor,
        name: str,
        key: str,
        factory: Callable[[], Awaitable[Any]] | None,
        work: Awaitable[Any] | None,
        mode: Mode,
    ) -> None:
        self.supervisor = supervisor
        self.name = name  # the metric label (several tasks may share it)
        self.key = key  # unique within the supervisor (name, or name#n)
        self.mode = mode
        self.state: State = "running"
        self.failures = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.last_failure: float | None = None  # wall time
        self._factory = factory
        self._work = work
        self._stopping = False
        self._stopped = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    # -- what owners use -----------------------------------------------------------------

    def done(self) -> bool:
        """The task has ended (stopped, finished, or a one-shot task that failed)."""
        return self._task.done()

    def wake(self) -> None:
        """A loop waiting to restart after a failure restarts now."""
        self._wake.set()

    def cancel(self) -> None:
        """Ask the task to stop without waiting (`stop` waits)."""
        self._stopping = True
        self._task.cancel()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` for the task to end by itself; True when it has."""
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        return bool(done)

    async def stop(self, *, grace: float = 0.0, timeout: float = STOP_TIMEOUT) -> None:
        """Let the task finish for up to `grace` seconds, then cancel it and wait up to
        `timeout`. Never raises; logs the outcome once."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping = True
        if grace > 0 and not self._task.done():
            await self.wait(grace)
        if not self._task.done():
            self._task.cancel()
        if not await self.wait(timeout):
            log.warning("task %s did not stop within %gs; left behind", self.key, timeout)
        self._close_work()
        self.supervisor._forget(self)
        self._log_outcome()

    # -- the runner ----------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        streak = 0
        while True:
            began = loop.time()
            error: BaseException | None = None
            try:
                if self._work is not None:
                    work, self._work = self._work, None
                    await work
                else:
                    assert self._factory is not None
                    await self._factory()
            except asyncio.CancelledError:
                self.state = "stopped"
                raise
            except Exception as exc:
                error = exc
            else:
                if self._stopping or self.mode != "forever":
                    self.state = "done"
                    if self.mode == "once":
                        self.supervisor._forget(self)
                    return
            if self._stopping:
                self._record(error, None)
                self.state = "stopped"
                return
            if self.mode == "once":
                self._record(error, None)
                self.state = "failed"
                return
            if loop.time() - began >= self.supervisor.max_delay:
                streak = 0
            delay = min(self.supervisor.max_delay, self.supervisor.base_delay * 2**streak)
            streak += 1
            self._record(error, delay)
            self.state = "restarting"
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self.restarts += 1
            self.state = "running"

    def _record(self, error: BaseException | None, delay: float | None) -> None:
        """One failure: counted, kept for /readyz, logged (with the traceback when it differs
        from the previous one, so that a loop failing the same way does not flood the log)."""
        text = describe(error)
        again = text == self.last_error
        self.failures = n = self.failures + 1
        self.last_error = text
        self.last_failure = self.supervisor.clock.now()
        self.supervisor._count(self.name)
        then = "not restarted" if delay is None else f"restarting in {delay:g}s"
        if again:
            log.error("task %s failed again (%s; %d failures); %s", self.key, text, n, then)
        else:
            log.error("task %s failed (%s); %s", self.key, text, then, exc_info=error)

    def _close_work(self) -> None:
        """A one-shot coroutine cancelled before it ever ran is closed, not left unawaited."""
        work, self._work = self._work, None
        if work is not None and inspect.iscoroutine(work):
            work.close()

    def _log_outcome(self) -> None:
        if self.failures:
            log.warning(
                "task %s stopped after %d failures (%d restarts); last: %s",
                self.key,
                self.failures,
                self.restarts,
                self.last_error,
            )
        else:
            log.info("task %s stopped (no failures)", self.key)

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state,
            "failures": self.failures,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_failure": rfc3339_or_none(self.last_failure),
        }


class TaskSupervisor:
    """Starts and lists background tasks; one per gateway (`gw.tasks`).

    `failures`: a Prometheus counter with a `task` label (`cutover_task_failures_total`);
    without one, failures are only logged and shown."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        failures: Any = None,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.clock = clock or Clock()
        self.failures = failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._tasks: dict[str, Supervised] = {}

    def start(
        self, name: str, factory: Callable[[], Awaitable[Any]], *, until_done: bool = False
    ) -> Supervised:
        """Run `factory()` until stopped, starting it again after a failure."""
        mode: Mode = "until_done" if until_done else "forever"
        if self.failures is not None:  # exported at 0: `increase()` sees the first failure
            self.failures.labels(name)
        return self._add(name, factory, None, mode)

    def once(self, name: str, work: Awaitable[Any]) -> Supervised:
        """Run `work` once; a failure is logged, counted and shown, not retried."""
        return self._add(name, None, work, "once")

    def _add(
        self,
        name: str,
        factory: Callable[[], Awaitable[Any]] | None,
        work: Awaitable[Any] | None,
        mode: Mode,
    ) -> Supervised:
        key, n = name, 1
        while key in self._tasks and not self._replaceable(self._tasks[key]):
            n += 1
            key = f"{name}#{n}"
        handle = Supervised(self, name, key, factory, work, mode)
        self._tasks[key] = handle
        return handle

    @staticmethod
    def _replaceable(old: Supervised) -> bool:
        """A one-shot task that failed keeps its place in /readyz until the next of its name."""
        return old.done()

    def _forget(self, handle: Supervised) -> None:
        if self._tasks.get(handle.key) is handle:
            del self._tasks[handle.key]

    def _count(self, name: str) -> None:
        if self.failures is not None:
            self.failures.labels(name).inc()

    def __iter__(self) -> Any:
        return iter(list(self._tasks.values()))

    def get(self, key: str) -> Supervised | None:
        return self._tasks.get(key)

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every task held now, by name, for /readyz."""
        return {key: handle.snapshot() for key, handle in sorted(self._tasks.items())}

    async def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop what the owners left running (the gateway's last step before the store)."""
        for handle in list(self._tasks.values()):
            if handle.done():
                self._forget(handle)
                continue
            await handle.stop(timeout=timeout)


async def stop_in_order(
    steps: Iterable[tuple[str, Callable[[], Awaitable[Any]]]], logger: logging.Logger = log
) -> None:
    """Run each shutdown step in turn; one that raises is logged and the next still runs."""
    for what, step in steps:
        try:
            await step()
        except Exception:
            logger.exception("%s failed to stop cleanly; stopping the rest", what)
