"""/readyz says which build of the fast path runs (core/build.py, issue 21)."""

from __future__ import annotations

import aiohttp

from cutover.core import build
from tests.conftest import gateway_config


async def test_readyz_says_which_build_runs(backends, gateway) -> None:  # type: ignore[no-untyped-def]
    """/readyz carries the build beside the routes (what an operator checks on a pod)."""
    go = await backends("go")
    gw = await gateway(gateway_config({"go": go.url}, route={"split": {"go": 100}}))
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/readyz") as resp:
        body = await resp.json()
    assert body["build"] == build.describe()["build"]
    assert body["build"] in ("compiled", "pure", "partial")
