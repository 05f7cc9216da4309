"""One JSON line per request, written in batches (never bodies, cookies or auth headers)."""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

import orjson

from cutover.core.storable import storable

FLUSH_INTERVAL = 0.5  # seconds between flushes of the batch
FLUSH_LINES = 256  # or as soon as this many lines are waiting


class AccessLog:
    def __init__(self, path: str | None) -> None:
        self._own = path is not None
        self._out: BinaryIO = open(path, "ab") if path else sys.stdout.buffer  # noqa: SIM115
        self._lines: list[bytes] = []
        self._handle: asyncio.TimerHandle | None = None

    def write(self, entry: dict[str, object]) -> None:
        try:
            line = orjson.dumps(entry)
        except TypeError:  # a client's header bytes that are not UTF-8 (surrogate escapes)
            line = orjson.dumps(
                {k: storable(v) if isinstance(v, str) else v for k, v in entry.items()}
            )
        self._lines.append(line + b"\n")
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._lines:
            data = b"".join(self._lines)
            self._lines.clear()
            try:
                self._out.write(data)
                self._out.flush()
            except (OSError, ValueError):
                pass  # a closed stdout must not take the gateway down

    def close(self) -> None:
        self.flush()
        if self._own:
            self._out.close()
