"""Faults for background tasks, and what every supervised task must show once one hit it."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import aiohttp
import pytest

from cutover.proxy.server import Gateway
from tests.conftest import wait_for

INJECTED = "RuntimeError: injected fault"


class Fault:
    """Replaces `obj.attr` so that its next call raises `exc` (once, or `times` times); later
    calls reach the original. `hits` counts the calls that raised."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        obj: Any,
        attr: str,
        exc: BaseException | None = None,
        times: int = 1,
    ) -> None:
        self.exc = exc or RuntimeError("injected fault")
        self.left = times
        self.hits = 0
        original = getattr(obj, attr)
        fault = self

        if inspect.iscoroutinefunction(original):

            async def replacement(*args: Any, **kwargs: Any) -> Any:
                if fault._fire():
                    raise fault.exc
                return await original(*args, **kwargs)

        else:

            def replacement(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                if fault._fire():
                    raise fault.exc
                return original(*args, **kwargs)

        monkeypatch.setattr(obj, attr, replacement)

    def _fire(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        self.hits += 1
        return True


def task_failures(gw: Gateway, task: str) -> float:
    value = gw.metrics.registry.get_sample_value("cutover_task_failures_total", {"task": task})
    return value or 0.0


async def readyz_tasks(gw: Gateway) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as resp:
        return (await resp.json())["tasks"]


async def assert_restarted(
    gw: Gateway,
    task: str,
    caplog: pytest.LogCaptureFixture,
    error: str = INJECTED,
    failures: int = 1,
    states: tuple[str, ...] = ("running", "restarting"),
) -> dict[str, Any]:
    """The task failed `failures` times with `error`: logged once with its traceback and name,
    counted in cutover_task_failures_total, shown in /readyz, and running again (or, for a
    start-up, `states=("done",)`: done)."""
    await wait_for(
        lambda: (h := gw.tasks.get(task)) is not None and h.restarts >= failures, deadline=30
    )
    shown = (await readyz_tasks(gw))[task]
    assert shown["failures"] == failures and shown["restarts"] >= failures, shown
    assert shown["last_error"] == error and shown["last_failure"] is not None
    assert shown["state"] in states, shown
    assert task_failures(gw, task) == failures
    records = [
        r
        for r in caplog.records
        if r.name == "cutover.tasks" and r.getMessage().startswith(f"task {task} failed (")
    ]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert f"({error}); restarting in" in records[0].getMessage()
    assert records[0].exc_info is not None and records[0].levelno == logging.ERROR
    metrics = gw.metrics.exposition()[0].decode()
    assert f'cutover_task_failures_total{{task="{task}"}} {float(failures)}' in metrics
    return shown


def fast_restarts(gw: Gateway) -> None:
    """Restart failed tasks after 50 ms (doubling) instead of a second."""
    gw.tasks.base_delay = 0.05
