"""With compat rules on, requests that match no rule still stream with bounded memory."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.conftest import gateway_config
from tests.integration.test_process import rss_kib


async def test_20mib_without_a_rule_streams_with_bounded_memory(
    backends, gateway_process, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    go, py = await backends("go"), await backends("python")
    config = gateway_config(
        {"go": go.url, "python": py.url},
        limits={"max_body": "100MiB"},
        storage=f"sqlite:///{tmp_path}/state.db",
    )
    config["compat"] = {
        "profile": "builtin:alert-history",
        "backends": {"new": "go", "legacy": "python"},
    }
    gp = await gateway_process(config).ready()
    size = 20 * 1024 * 1024
    async with aiohttp.ClientSession() as s:
        async with s.get(gp.url + "/legacy/x") as r:  # compat is on in this process
            assert r.status == 410
            assert "Sunset" in r.headers
        async with s.get(gp.url + "/warm") as r:
            await r.read()
        baseline = rss_kib(gp.proc.pid, "VmRSS")

        async def body():  # type: ignore[no-untyped-def]
            chunk = b"z" * 65536
            for _ in range(size // len(chunk)):
                yield chunk

        async with s.post(gp.url + "/upload", data=body()) as r:
            assert r.status == 200
            assert (await r.json())["body_bytes"] == size
            assert "Deprecation" not in r.headers
        async with s.get(gp.url + f"/big/{size}") as r:
            got = 0
            async for chunk in r.content.iter_chunked(65536):
                got += len(chunk)
            assert got == size
        peak = rss_kib(gp.proc.pid, "VmHWM")
    assert peak - baseline < 12 * 1024, f"peak grew by {(peak - baseline) // 1024} MiB"
