"""Process management: one worker in this process, or a supervisor of N workers on one port.

The listening sockets are bound before any worker starts (`proxy.listen`): an address in use
fails `serve` at once with one line; a supervisor binds one SO_REUSEPORT socket per worker and
hands each its own, again when it restarts it. Signals: SIGTERM/SIGINT drain and exit,
SIGHUP reloads the config file (an invalid file keeps the running config and logs why).
The supervisor forwards signals to its workers and restarts one that dies unexpectedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from cutover.core.configkit import ConfigErrors, format_errors
from cutover.core.logs import setup_logging
from cutover.proxy.config import CutoverConfig, load_config
from cutover.proxy.listen import ENV as LISTEN_FDS
from cutover.proxy.listen import ListenError, Listeners, inherited, open_listeners

if TYPE_CHECKING:
    from cutover.core.tasks import Supervised
    from cutover.proxy.server import Gateway

log = logging.getLogger("cutover")

RESTART_BACKOFF = 1.0  # seconds before a crashed worker is started again


_reload_asked_early = False  # a SIGHUP came before the worker could run a reload


def _note_early_reload(_signum: int, _frame: object) -> None:
    global _reload_asked_early
    _reload_asked_early = True


def serve(path: str, workers: int | None = None) -> int:
    """Run the gateway from the config file at `path` until SIGTERM/SIGINT."""
    # The listening sockets accept connections before the gateway runs: a SIGHUP sent by
    # someone who saw the port open must not kill the process (the default action); it is
    # applied once the worker serves.
    signal.signal(signal.SIGHUP, _note_early_reload)
    setup_logging()
    try:
        config = load_config(path)
    except ConfigErrors as errs:
        print(format_errors(errs), file=sys.stderr)
        return 2
    count = workers if workers is not None else config.workers
    supervising = count > 1 and "CUTOVER_WORKER_ID" not in os.environ
    listeners = inherited()  # a supervisor's worker: its sockets came with it
    if listeners is None:
        try:
            sockets = open_listeners(config, count if supervising else 1)
        except ListenError as exc:
            print(f"cutover: {exc}", file=sys.stderr)
            return 1
        if supervising:
            return supervise(path, count, sockets, pinned=workers is not None)
        listeners = sockets[0]
    elif listeners.admin is None and config.admin.listen is not None:
        log.warning("admin.listen: set after the supervisor started; takes effect after a restart")
        config = dataclasses.replace(config, admin=dataclasses.replace(config.admin, listen=None))
    if workers is not None:
        os.environ["CUTOVER_WORKERS"] = str(count)  # `--workers` outranks the file on reloads
    return run_worker(path, _with_worker_count(config, count), listeners)


def _with_worker_count(config: CutoverConfig, count: int | None = None) -> CutoverConfig:
    """`config` with `workers` as actually run: a supervisor's `--workers N` reaches its
    workers through `CUTOVER_WORKERS` (features that split a budget among workers read it)."""
    given = os.environ.get("CUTOVER_WORKERS")
    if given is not None and given.isdigit():
        count = int(given)
    if count is None or count < 1 or count == config.workers:
        return config
    return dataclasses.replace(config, workers=count)


def run_worker(path: str, config: CutoverConfig, listeners: Listeners) -> int:
    try:
        import uvloop

        uvloop.run(_worker_main(path, config, listeners))
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        asyncio.run(_worker_main(path, config, listeners))
    finally:
        listeners.close()  # if the gateway never took them
    return 0


async def _worker_main(path: str, config: CutoverConfig, listeners: Listeners) -> None:
    from cutover.app import start_gateway

    gw = await start_gateway(config, sock=listeners.main, admin_sock=listeners.admin)
    # What exists now lives as long as the worker: keep it out of the collector's full
    # passes (about 50 ms each over the startup heap, every few thousand requests).
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_in_background, gw, path)
    if _reload_asked_early:
        reload_in_background(gw, path)  # the file may have changed while the worker started
    print(f"cutover serving on {gw.url}", file=sys.stderr, flush=True)
    await stop.wait()
    log.info("draining: %d requests in flight", gw.in_flight)
    await gw.close()
    log.info("stopped")


def reload_in_background(gw: Gateway, path: str) -> Supervised:
    """SIGHUP: reload `path` as one of the gateway's tasks, so that a reload that fails is
    logged with its traceback, counted and shown in /readyz (`tasks.reload`)."""
    return gw.tasks.once("reload", _reload(gw, path))


async def _reload(gw: object, path: str) -> None:
    """Load `path` and apply it; any failure to load is logged and the running config kept
    (this runs as a task of its own: an exception escaping it would only be noticed at exit)."""
    try:
        config = load_config(path)
    except ConfigErrors as errs:
        log.error("reload refused, keeping the running config:\n%s", format_errors(errs))
        return
    except Exception:
        log.exception("reload refused, keeping the running config: %s could not be loaded", path)
        return
    await gw.reload(_with_worker_count(config))  # type: ignore[attr-defined]


def supervise(path: str, count: int, listeners: list[Listeners], pinned: bool = False) -> int:
    """Start `count` workers on one port and keep them running until told to stop.

    Worker `i` serves on `listeners[i]`, which the supervisor keeps open across its restarts.
    `pinned`: the count came from `--workers`; else from the file, and a reload that changes
    the file's `workers` is reported as waiting for a restart (the workers cannot tell: they
    run with the supervisor's count)."""
    metrics_dir = tempfile.mkdtemp(prefix="cutover-metrics-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir, CUTOVER_WORKERS=str(count))
    stopping = False
    children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(index: int) -> None:
        cmd = [sys.executable, "-m", "cutover", "serve", "-c", path]
        mine = listeners[index]
        children[index] = subprocess.Popen(
            cmd,
            env=dict(env, CUTOVER_WORKER_ID=str(index), **{LISTEN_FDS: mine.env()}),
            pass_fds=mine.fds(),
        )

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        if signum == signal.SIGHUP and not pinned:
            _report_worker_count(path, count)
        for child in children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for i in range(count):
        spawn(i)
    log.info("supervising %d workers", count)
    try:
        while children:
            time.sleep(0.2)
            for index, child in list(children.items()):
                code = child.poll()
                if code is None:
                    continue
                _mark_dead(child.pid)
                del children[index]
                if not stopping:
                    log.error("worker %d exited with %s; restarting", index, code)
                    time.sleep(RESTART_BACKOFF)
                    if not stopping:
                        spawn(index)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for mine in listeners:
            mine.close()
    return 0


def _report_worker_count(path: str, count: int) -> None:
    with contextlib.suppress(ConfigErrors, OSError):  # the workers report a bad file
        wanted = load_config(path).workers
        if wanted != count:
            log.warning(
                "reload: workers: %d in the file, %d running; worker processes are started "
                "once; takes effect after a restart",
                wanted,
                count,
            )


def _mark_dead(pid: int) -> None:
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
