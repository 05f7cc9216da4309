"""`cutover demo`: the two sample backends behind the gateway at 90/10, in one process.

Starts the Go-shaped and the Python-shaped sample backends (`examples.backends`) on ephemeral
127.0.0.1 ports, loads `examples/demo.yaml` (shipped as package data) with their urls, starts the
gateway in front of them and prints where traffic goes every two seconds. `--traffic` adds a small
built-in client. SIGINT/SIGTERM stop everything and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import logging
import os
import shlex
import signal
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

from cutover.app import start_gateway
from cutover.core.configkit import ConfigErrors, format_errors
from cutover.core.tasks import Supervised
from cutover.examples.backends import close_streams, go_app, legacy_app
from cutover.examples.samples import alertmanager_payload, flat_alert
from cutover.proxy.config import CutoverConfig, parse_config
from cutover.proxy.listen import bind
from cutover.proxy.server import Gateway

__all__ = ["demo_config", "format_summary", "main", "run_demo"]

SUMMARY_INTERVAL = 2.0  # seconds between traffic summaries
TRAFFIC_RATE = 20.0  # requests per second of the built-in client
TRAFFIC_USERS = 50  # distinct X-Request-User values it cycles through

log = logging.getLogger("cutover.demo")


def demo_config(go_url: str, python_url: str, host: str, port: int) -> CutoverConfig:
    """`examples/demo.yaml` with the listen address and the backend urls filled in."""
    resource = importlib.resources.files("cutover.examples") / "demo.yaml"
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    data["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    data["backends"]["go"]["url"] = go_url
    data["backends"]["python"]["url"] = python_url
    return parse_config(data, "examples/demo.yaml")


def format_summary(served: Counter[str], names: Iterable[str]) -> str:
    """``traffic: go 91.2% (912)  python 8.8% (88)``; `names` first, in order, then any other."""
    ordered = list(names)
    ordered += sorted(n for n in served if n not in ordered)
    total = sum(served[n] for n in ordered)
    parts = [f"{n} {100 * served[n] / total if total else 0:.1f}% ({served[n]})" for n in ordered]
    return "traffic: " + "  ".join(parts)


async def _start_backend(app: web.Application, runners: list[web.AppRunner]) -> str:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def _seed(session: aiohttp.ClientSession, go_url: str, python_url: str) -> Path:
    """Give both backends a little history; returns a file with the sample webhook, for curl."""
    payload = alertmanager_payload(datetime.now(UTC))
    async with session.post(f"{python_url}/webhook/", json=payload) as resp:
        resp.raise_for_status()
    for alert in payload["alerts"]:
        async with session.post(f"{go_url}/webhook", json=flat_alert(alert)) as resp:
            resp.raise_for_status()
    fd, name = tempfile.mkstemp(prefix="cutover-demo-", suffix="-alertmanager-v4.json")
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    return Path(name)


def _listen(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound here rather than by the gateway.

    A port that is taken fails before anything is started, and is never shared
    (`proxy.listen`): a second demo on the same port is refused instead of silently sharing it.
    """
    return bind((host, port), 1, "--port")[0]


def _banner(gateway_url: str, go_url: str, python_url: str, sample: Path, traffic: bool) -> str:
    flat = orjson.dumps(
        {"alertname": "DemoAlert", "status": "firing", "labels": {"severity": "warning"}}
    ).decode()
    json_header = "-H 'Content-Type: application/json'"
    lines = [
        "cutover demo",
        f"  gateway  {gateway_url}   route default: go 90 / python 10, fallback python",
        f"  go       {go_url}   Go-shaped sample backend",
        f"  python   {python_url}   Python/FastAPI-shaped sample backend",
        "",
        "try:",
        f"  curl -s {gateway_url}/healthz",
        "      # the gateway's own health",
        f"  curl -si '{gateway_url}/history?limit=5'",
        "      # 9 in 10 answered by go, 1 in 10 by python: see X-Cutover-Backend and the shapes",
        f"  curl -sN {gateway_url}/api/v2/events/stream",
        "      # Server-Sent Events, streamed through (Go only: python answers 404)",
        f"  curl -s -X POST {go_url}/webhook {json_header} -d @{shlex.quote(str(sample))}",
        "      # the sample Alertmanager webhook: Go's /webhook wants ONE flat alert, so 400",
        f"  curl -s -X POST {go_url}/webhook {json_header} -d {shlex.quote(flat)}",
        "      # a flat alert: 200, and it shows up in go's /history",
        f"  curl -s -X POST {python_url}/webhook/ {json_header} -d @{shlex.quote(str(sample))}",
        "      # the Python side takes the envelope (at /webhook/; /webhook answers 307)",
        "",
    ]
    if traffic:
        lines.append(f"sending ~{TRAFFIC_RATE:.0f} GET /history per second through the gateway")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


async def _report(served: Counter[str], names: list[str], out: Callable[[str], None]) -> None:
    last: Counter[str] = Counter()
    while True:
        await asyncio.sleep(SUMMARY_INTERVAL)
        if served != last:
            last = Counter(served)
            out(format_summary(last, names))


async def _traffic(session: aiohttp.ClientSession, gateway_url: str) -> None:
    """About `TRAFFIC_RATE` GET /history per second, with varying X-Request-User."""
    loop = asyncio.get_running_loop()
    period = 1.0 / TRAFFIC_RATE
    timeout = aiohttp.ClientTimeout(total=5.0)
    n = 0
    next_at = loop.time()
    while True:
        headers = {"X-Request-User": f"user-{n % TRAFFIC_USERS}"}
        n += 1
        try:
            async with session.get(
                f"{gateway_url}/history?limit=5", headers=headers, timeout=timeout
            ) as resp:
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("demo traffic: %s", exc)
        next_at = max(next_at + period, loop.time())
        await asyncio.sleep(next_at - loop.time())


def _print(line: str) -> None:
    print(line, flush=True)


async def run_demo(port: int = 8080, host: str = "127.0.0.1", traffic: bool = False) -> None:
    """Run the demo until SIGINT or SIGTERM (or until cancelled)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            continue
        handled.append(sig)

    apps = {"go": go_app(), "python": legacy_app()}
    runners: list[web.AppRunner] = []
    gateway: Gateway | None = None
    sample: Path | None = None
    listener: socket.socket | None = None
    tasks: list[Supervised] = []
    session = aiohttp.ClientSession()
    try:
        urls = {name: await _start_backend(app, runners) for name, app in apps.items()}
        sample = await _seed(session, urls["go"], urls["python"])
        config = demo_config(urls["go"], urls["python"], host, port)
        listener = _listen(host, port)
        gateway = await start_gateway(config, sock=listener)
        _print(_banner(gateway.url, urls["go"], urls["python"], sample, traffic))
        names = list(config.backends)
        served, url = gateway.served, gateway.url
        tasks.append(gateway.tasks.start("demo-summary", lambda: _report(served, names, _print)))
        if traffic:
            tasks.append(gateway.tasks.start("demo-traffic", lambda: _traffic(session, url)))
        await stop.wait()
        _print("stopping...")
    finally:
        for task in tasks:
            await task.stop()
        await session.close()
        for app in apps.values():
            await close_streams(app)  # lets the gateway's drain finish proxied streams at once
        if gateway is not None:
            await gateway.close()
        if listener is not None:
            listener.close()  # no-op once the gateway has closed it
        for runner in reversed(runners):
            await runner.cleanup()
        if sample is not None:
            sample.unlink(missing_ok=True)
        for sig in handled:
            loop.remove_signal_handler(sig)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cutover demo", description="Two sample backends behind the gateway at 90/10."
    )
    parser.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="gateway address (default 127.0.0.1)")
    parser.add_argument("--traffic", action="store_true", help="send sample traffic as well")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("CUTOVER_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        _run(run_demo(port=args.port, host=args.host, traffic=args.traffic))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        return 0
    except ConfigErrors as errs:  # only if demo.yaml and the loader disagree
        print(format_errors(errs), file=sys.stderr)
        return 2
    except OSError as exc:  # typically: the port is taken
        print(f"cutover demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
