"""The browser helper waits out a DevTools marker file that exists but is not written yet."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from tests.chromium import _devtools_port


async def test_an_empty_marker_file_is_waited_for_not_an_error(tmp_path: Path) -> None:
    marker = tmp_path / "DevToolsActivePort"
    marker.write_text("")  # created, port not written yet: what Chromium leaves for a moment
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        waiting = asyncio.create_task(_devtools_port(tmp_path, proc))
        await asyncio.sleep(0.2)
        assert not waiting.done(), "an empty marker file ended the wait"
        marker.write_text("40123\n/devtools/browser/x\n")
        assert await asyncio.wait_for(waiting, 10) == 40123
    finally:
        proc.kill()
        proc.wait()
