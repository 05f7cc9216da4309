"""What a reload cannot apply: the config keys a running gateway took at start.

A reload (SIGHUP, `POST /admin/reload`) swaps routes, backends, weights, tokens, limits and the
feature sections in place. A few things were fixed when the process started: the sockets it
listens on, the worker count, the access-log file, the store and Redis connections, which
features run, and the general (aiohttp) path's parser limits. `restart_required` lists them by
comparing the config the process started with to the one being loaded, without values (a
storage or Redis URL may hold a password), so that an operator learns from the reload itself,
and from /readyz until the restart, that part of the change is still waiting.
"""

from __future__ import annotations

from collections.abc import Mapping

from cutover.proxy.config import CutoverConfig

__all__ = ["restart_required"]

# The general path's parser and keep-alive settings are given to aiohttp at start; the fast
# path reads them from the config in force for every connection.
_GENERAL_PATH_LIMITS = ("max_header_size", "max_headers", "header_timeout", "keepalive_timeout")


def restart_required(
    started: CutoverConfig, new: CutoverConfig, features: Mapping[str, tuple[bool, bool]]
) -> list[str]:
    """One line per change in `new` that takes effect only after a restart.

    `started` is the config the process started with; `features` maps each feature's name to
    (running now, wanted by `new`)."""
    out: list[str] = []
    if new.listen != started.listen:
        out.append("listen: the listener is bound at start")
    if new.admin.listen != started.admin.listen:
        out.append("admin.listen: the admin listener is bound at start")
    if new.workers != started.workers:
        out.append("workers: worker processes are started once")
    if new.access_log != started.access_log:
        out.append("access_log: the log file is opened at start")
    if new.storage != started.storage:
        out.append("storage: the store is connected at start")
    if new.redis != started.redis:
        out.append("redis: Redis is connected at start")
    if new.fast_path and not started.fast_path:
        out.append("fast_path: the fast listener is set up at start (turning it off applies now)")
    changed = [
        name
        for name in _GENERAL_PATH_LIMITS
        if getattr(new.limits, name) != getattr(started.limits, name)
    ]
    if changed:
        keys = ", ".join(f"limits.{name}" for name in changed)
        out.append(f"{keys}: apply to the fast path now, to the general path after a restart")
    for name, (running, wanted) in sorted(features.items()):
        if wanted and not running:
            out.append(f"{name}: the feature starts with the gateway")
        elif running and not wanted:
            out.append(f"{name}: the feature keeps running until a restart")
    old_alerts, new_alerts = started.alerts, new.alerts
    alerts_running = features.get("alerts", (False, False))[0]
    old_paths = old_alerts.paths if old_alerts is not None else None
    if alerts_running and new_alerts is not None and new_alerts.paths != old_paths:
        out.append("alerts.paths: intake endpoints are registered at start")
    return out
