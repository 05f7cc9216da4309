"""Admin reports answer promptly while the store hangs (PostgreSQL holding a lock that makes
readers and writers wait): `/admin/parity` from this worker's window, `/admin/compat/usage` 503
with the counts not yet stored — never a request that waits for the store as long as it hangs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.parity_samples import samples
from tests.integration.store_helpers import write_lock
from tests.integration.test_compat import NewBackend, compat_config
from tests.integration.test_parity_mirror import check_results, config_for, exercise


async def _get(url: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=20)  # fail, not hang, when the report waits
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
        return r.status, await r.json(), time.monotonic() - started


async def test_parity_report_while_the_store_hangs(pg_storage, tmp_path: Path, gateway) -> None:
    async with samples() as (primary, candidate):
        data = config_for(primary, candidate, tmp_path, parity={"min_samples": 5})
        data["storage"] = pg_storage
        gw = await gateway(data)
        await exercise(gw)
        await check_results(gw)
        async with write_lock(pg_storage, "parity_results", readers=True):
            status, body, took = await _get(gw.admin_url + "/admin/parity")
        assert status == 200 and body["store"] == "unavailable", body
        assert body["routes"]["default"]["compared"] == 8  # this worker's window
        assert took < 15, took  # the bound is 2 s; never as long as the lock is held
        status, body, _ = await _get(gw.admin_url + "/admin/parity")
        assert body["store"] == "ok"


async def test_compat_usage_while_the_store_hangs(
    pg_storage, tmp_path: Path, gateway, backends
) -> None:
    new = NewBackend()
    await new.start()
    try:
        legacy = await backends("legacy")
        data = compat_config(new.url, legacy.url, tmp_path)
        data["storage"] = pg_storage
        gw = await gateway(data)
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url + "/alerts/1", headers={"X-API-Key": "k1"}) as r:
                assert r.status == 200
            status, body, _ = await _get(gw.admin_url + "/admin/compat/usage")
            assert status == 200  # the table exists and the count is stored
            async with write_lock(pg_storage, "compat_usage", readers=True):
                async with s.get(gw.url + "/alerts/2", headers={"X-API-Key": "k1"}) as r:
                    assert r.status == 200  # proxying never waits for the store
                status, body, took = await _get(gw.admin_url + "/admin/compat/usage")
                assert status == 503 and body["stored"] is False, body
                assert {c["rule"]: c["count"] for c in body["callers"]} == {"item": 1}  # pending
                assert took < 15, took
            # the flush that waited goes on once the lock is gone: both counts are kept
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status, body, _ = await _get(gw.admin_url + "/admin/compat/usage")
                if status == 200 and body["callers"][0]["count"] == 2:
                    break
                await asyncio.sleep(0.1)
            assert (status, body["callers"][0]["count"]) == (200, 2), body
    finally:
        await new.stop()
