"""The gateway's own mutating endpoints with no admin token: only clients on this host.

The gateway listens on 0.0.0.0 and is called from two real peers: 127.0.0.1, and the machine's
own non-loopback interface address (as a client on the network would appear); the loopback
check reads the connection's peer, never a header. Both listener paths. (The same rule on an
injected peer, for machines without such an address: tests/unit/proxy/test_loopback_guard.py.)
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import gateway_config

pytestmark = pytest.mark.usefixtures("serving_path")

TOKEN = "loopback-guard-token-42"
MUTATING = [
    ("POST", "/enrichment/mode", {"mode": "transparent"}),
    ("POST", "/classification/classify", {"labels": {"alertname": "X"}}),
    ("POST", "/publishing/test/hook", {}),
    ("POST", "/publishing/targets/refresh", None),
    ("POST", "/publishing/dlq/1/replay", None),
]


def _machine_address() -> str | None:
    """A non-loopback IPv4 address of this machine's own interfaces (`hostname -I`)."""
    try:
        words = subprocess.run(
            ["hostname", "-I"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    for word in words:
        try:
            addr = ipaddress.ip_address(word)
        except ValueError:
            continue
        if addr.version == 4 and not (addr.is_loopback or addr.is_link_local):
            return word
    return None


ADDRESS = _machine_address()
needs_address = pytest.mark.skipif(
    ADDRESS is None, reason="no non-loopback interface address (the unit tests cover the rule)"
)


def _config(tmp_path: Path, backend: str, **extra: Any) -> dict[str, Any]:
    data = gateway_config(
        {"go": backend},
        listen="0.0.0.0:0",
        storage=f"sqlite:///{tmp_path / 'state.db'}",
        alerts={},
        publishing={"targets": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/"}]},
    )
    data.update(extra)
    return data


async def _call(
    host: str,
    port: int,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """From `host` (the client's own address too) to `host:port`."""
    connector = aiohttp.TCPConnector(local_addr=(host, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.request(method, f"http://{host}:{port}{path}", json=body, headers=headers) as r,
    ):
        return r.status, await r.json(content_type=None)


def _port(gw) -> int:  # type: ignore[no-untyped-def]
    return int(gw.url.rsplit(":", 1)[1])


@needs_address
@pytest.mark.parametrize(("method", "path", "body"), MUTATING, ids=[m[1] for m in MUTATING])
async def test_other_hosts_get_403_naming_the_setting(
    backends, gateway, tmp_path: Path, method: str, path: str, body: object
) -> None:
    go = await backends("go")
    gw = await gateway(_config(tmp_path, go.url))
    assert ADDRESS is not None
    status, data = await _call(ADDRESS, _port(gw), method, path, body)
    assert status == 403, data
    assert data["error"]["code"] == "forbidden" and data["error"]["field"] == "admin.token"
    # from this host the endpoint answers (whatever it then says of the request)
    status, data = await _call("127.0.0.1", _port(gw), method, path, body)
    assert status != 403, data
    assert go.hits == 0  # never proxied


@needs_address
async def test_mode_changes_only_from_this_host(backends, gateway, tmp_path: Path) -> None:
    go = await backends("go")
    gw = await gateway(_config(tmp_path, go.url))
    port = _port(gw)
    assert ADDRESS is not None
    status, data = await _call(ADDRESS, port, "GET", "/enrichment/mode", None)
    assert (status, data["mode"]) == (200, "enriched")  # reading stays open
    status, _ = await _call(ADDRESS, port, "POST", "/enrichment/mode", {"mode": "transparent"})
    assert status == 403
    # a header claiming a local client changes nothing, even from a trusted proxy
    spoof = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1"}
    status, _ = await _call(
        ADDRESS, port, "POST", "/enrichment/mode", {"mode": "transparent"}, spoof
    )
    assert status == 403
    _, data = await _call("127.0.0.1", port, "GET", "/enrichment/mode", None)
    assert data["mode"] == "enriched"
    # a proxy on this host that says it relays another host does not make that host local
    relayed = {"X-Forwarded-For": ADDRESS}
    status, _ = await _call(
        "127.0.0.1", port, "POST", "/enrichment/mode", {"mode": "transparent"}, relayed
    )
    assert status == 403
    status, data = await _call(
        "127.0.0.1", port, "POST", "/enrichment/mode", {"mode": "transparent"}
    )
    assert (status, data["mode"]) == (200, "transparent")


@needs_address
async def test_trusted_proxies_do_not_open_the_endpoints(backends, gateway, tmp_path: Path) -> None:
    go = await backends("go")
    assert ADDRESS is not None
    data = _config(tmp_path, go.url)
    data["headers"] = {"trusted_proxies": [ADDRESS, "127.0.0.0/8"]}
    gw = await gateway(data)
    spoof = {"X-Forwarded-For": "127.0.0.1"}
    status, body = await _call(
        ADDRESS, _port(gw), "POST", "/enrichment/mode", {"mode": "transparent"}, spoof
    )
    assert status == 403, body


@needs_address
async def test_with_a_token_other_hosts_use_it(backends, gateway, tmp_path: Path) -> None:
    go = await backends("go")
    gw = await gateway(_config(tmp_path, go.url, admin={"listen": "off", "token": TOKEN}))
    assert ADDRESS is not None
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = {"mode": "transparent"}
    status, data = await _call(ADDRESS, _port(gw), "POST", "/enrichment/mode", body, auth)
    assert (status, data["mode"]) == (200, "transparent")
    status, data = await _call("127.0.0.1", _port(gw), "POST", "/enrichment/mode", body)
    assert status == 401  # a configured token is needed from this host too
