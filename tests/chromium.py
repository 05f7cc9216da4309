"""A headless Chromium driven over the Chrome DevTools Protocol, with aiohttp's websocket client.

Enough for the dashboard's browser tests, and no dependency beyond Debian's `chromium`:
navigate, evaluate JavaScript, wait for a condition, capture a screenshot, and collect what the
page reports as errors (uncaught exceptions, `console.error`, the browser's own error log).
The browser runs in a throwaway profile and is killed in `close`, whatever happened.

`decode_png` reads the screenshot with the standard library (zlib), so tests check pixels.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
START_DEADLINE = 30.0  # seconds for the browser to say where DevTools listens


def chromium_path() -> str | None:
    """The browser to drive: `$CUTOVER_CHROMIUM`, else the first one found on PATH."""
    given = os.environ.get("CUTOVER_CHROMIUM")
    if given:
        return given
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(AssertionError):
    """The browser or the page did not do what the test waited for."""


@dataclass
class Problem:
    """Something the page reported as an error."""

    kind: str  # exception | console | log
    text: str
    source: str = ""  # for log entries: network, javascript, security, …


@dataclass
class Browser:
    proc: subprocess.Popen[bytes]
    profile: str
    http: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    problems: list[Problem] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _loaded: asyncio.Event = field(default_factory=asyncio.Event)

    # -- protocol ----------------------------------------------------------------------

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.ws.send_json({"id": ident, "method": method, "params": params or {}})
        try:
            return await asyncio.wait_for(future, 30.0)
        finally:
            self._waiting.pop(ident, None)

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = msg.json()
            if "id" in data:
                future = self._waiting.get(data["id"])
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(BrowserError(f"CDP error: {data['error']}"))
                    else:
                        future.set_result(data.get("result"))
                continue
            self._event(data.get("method", ""), data.get("params", {}))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(BrowserError("the browser went away"))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.problems.append(Problem("exception", text))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            self.problems.append(Problem("console", text))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                text = entry.get("text", "")
                if entry.get("url"):
                    text += f" ({entry['url']})"
                self.problems.append(Problem("log", text, entry.get("source", "")))
        elif method == "Page.loadEventFired":
            self._loaded.set()

    # -- what tests use ------------------------------------------------------------------

    async def viewport(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def goto(self, url: str) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), 30.0)

    async def evaluate(self, expression: str) -> Any:
        """The value of `expression` (awaited when it is a promise), or BrowserError."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if result.get("exceptionDetails"):
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} raised: {text}")
        return result.get("result", {}).get("value")

    async def wait(self, expression: str, deadline: float = 15.0, interval: float = 0.1) -> Any:
        """Poll until `expression` is truthy; its value. Fails after a generous deadline."""
        end = time.monotonic() + deadline
        last: Any = None
        while time.monotonic() < end:
            last = await self.evaluate(expression)
            if last:
                return last
            await asyncio.sleep(interval)
        raise BrowserError(f"not true within {deadline}s: {expression} (last: {last!r})")

    async def screenshot(self) -> bytes:
        data = await self.send("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(data["data"])

    def errors(self, *, allow_network: bool = False) -> list[Problem]:
        """What the page reported; `allow_network`: leave out the browser's own log lines for
        HTTP answers such as a 401 (the page handles them; Chrome logs them all the same)."""
        return [p for p in self.problems if not (allow_network and p.source == "network")]

    async def close(self) -> None:
        try:
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reader
            with contextlib.suppress(Exception):
                await self.ws.close()
            with contextlib.suppress(Exception):
                await self.http.close()
        finally:
            _kill(self.proc)
            shutil.rmtree(self.profile, ignore_errors=True)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """End the browser and its helpers (renderers, zygote, crash handler): it leads its own
    process group (`start_new_session`), so the group is exactly what this test started."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(proc.pid):
            return
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.asynccontextmanager
async def browser(width: int = 1280, height: int = 800) -> AsyncIterator[Browser]:
    """A fresh headless Chromium on one blank page; killed on the way out, whatever happened."""
    path = chromium_path()
    if path is None:
        raise BrowserError(
            "no Chromium found (install Debian's `chromium`, or set CUTOVER_CHROMIUM)"
        )
    profile = tempfile.mkdtemp(prefix="cutover-chromium-")
    proc = subprocess.Popen(
        [
            path,
            "--headless=new",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            f"--user-data-dir={profile}",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            "--password-store=basic",
            "--use-mock-keychain",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    b: Browser | None = None
    http: aiohttp.ClientSession | None = None
    try:
        port = await _devtools_port(Path(profile), proc)
        http = aiohttp.ClientSession()
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t.get("type") == "page")
        ws = await http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=64 << 20)
        b = Browser(proc, profile, http, ws)
        b._reader = asyncio.create_task(b._read(), name="cdp-reader")
        for domain in ("Page", "Runtime", "Log"):
            await b.send(f"{domain}.enable")
        await b.viewport(width, height)
        yield b
    finally:
        if b is not None:
            await b.close()
        else:
            if http is not None:
                await http.close()
            _kill(proc)
            shutil.rmtree(profile, ignore_errors=True)


async def _devtools_port(profile: Path, proc: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    end = time.monotonic() + START_DEADLINE
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BrowserError(f"the browser exited at start (status {proc.returncode})")
        # The browser creates the file before it writes the port: an empty or half-written
        # file is "not yet", like a missing one.
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            first = marker.read_text().splitlines()[0]
            return int(first)
        await asyncio.sleep(0.05)
    raise BrowserError("the browser did not open its DevTools port in time")


# -- PNG, read with the standard library --------------------------------------------------------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]  # unfiltered scanlines, `channels` bytes a pixel

    def pixel(self, x: int, y: int) -> tuple[int, ...]:
        c = self.channels
        return tuple(self.rows[y][x * c : x * c + c])


def decode_png(data: bytes) -> Image:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into its pixels."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat = 8, bytearray()
    width = height = depth = color = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {color})")
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, prev, channels)
        rows.append(bytes(line))
        prev = line
    return Image(width, height, channels, rows)


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    n = len(line)
    if kind == 0:
        return
    if kind == 1:
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif kind == 2:
        for i in range(n):
            line[i] = (line[i] + prev[i]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
    else:
        raise ValueError(f"bad PNG filter {kind}")
