"""One path for every matcher (core.http1.normalize_path): routes, compat rules and the
gateway's own endpoints (and the admin-token guard on them) read `/api/v1/%61lerts` as
`/api/v1/alerts`, on both listener paths; an encoded slash stays distinct; what goes upstream is
the target as sent, or the target a compat rule rewrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import gateway_config
from tests.integration.wire_helpers import exchange

pytestmark = pytest.mark.usefixtures("serving_path")

TOKEN = "normalized-paths-token-7"

RULES = [
    {"name": "alerts-v1", "match": {"method": "GET", "path": "/api/v1/alerts"},
     "rewrite": {"applies_to": "new", "path": "/api/v2/alerts"}},
    {"name": "removed", "match": {"path": "/old/{rest*}"}, "gone": {}},
    {"name": "query-only", "match": {"path": "/q/{id}"},
     "rewrite": {"applies_to": "new", "query": [{"rename": {"a": "b"}}]}},
    {"name": "written-encoded", "match": {"path": "/api/v1/%73ilences"}, "gone": {}},
]  # fmt: skip


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def get(port: int, target: str, method: str = "GET", *headers: str) -> tuple[int, bytes]:
    """One request with `target` written as is on the request line; (status, head and body)."""
    extra = "".join(f"{h}\r\n" for h in headers)
    raw = f"{method} {target} HTTP/1.1\r\nHost: h.test\r\n{extra}Connection: close\r\n"
    if method == "POST":
        raw += "Content-Length: 2\r\n\r\n{}"
    else:
        raw += "\r\n"
    answer = await exchange(port, raw.encode())
    assert len(answer.statuses) == 1, answer.data[:300]
    return answer.statuses[0], answer.data


@pytest.mark.parametrize(
    "target",
    ["/api/v1/alerts?x=1", "/api/v1/%61lerts?x=1", "/api/v1/%61%6C%65%72%74%73?x=1",
     "/api/x/../v1/%61lerts?x=1", "http://h.test/api/v1/%61lerts?x=1"],
)  # fmt: skip
async def test_every_spelling_gets_the_compat_treatment(
    target: str, backends, gateway, tmp_path: Path
) -> None:
    new, legacy = await backends("new"), await backends("legacy")
    gw = await gateway(_compat_config(new.url, legacy.url, tmp_path))
    status, data = await get(port_of(gw.url), target)
    assert status == 200, data[:300]
    assert b"\r\nDeprecation: @" in data  # the rule's headers: the rule applied
    assert [r["target"] for r in new.received] == ["/api/v2/alerts?x=1"]  # rewritten
    assert legacy.hits == 0


async def test_an_encoded_slash_is_not_the_rule_path(backends, gateway, tmp_path: Path) -> None:
    new, legacy = await backends("new"), await backends("legacy")
    gw = await gateway(_compat_config(new.url, legacy.url, tmp_path))
    status, data = await get(port_of(gw.url), "/api/v1%2Falerts")
    assert status == 200, data[:300]
    assert b"Deprecation" not in data
    assert [r["target"] for r in new.received] == ["/api/v1%2Falerts"]  # as sent, untouched


@pytest.mark.parametrize(
    ("target", "status", "sent"),
    [
        ("/%6Fld/report", 410, None),  # gone: answered by the gateway
        ("/api/v1/silences", 410, None),  # a rule written with an escape
        ("/api/v1/%73ilences", 410, None),
        ("/q/%41%2f?a=1", 200, "/q/%41%2f?b=1"),  # the query rewritten, the path as sent
    ],
)
async def test_rules_of_each_kind_match_the_normalized_path(
    target: str, status: int, sent: str | None, backends, gateway, tmp_path: Path
) -> None:
    new, legacy = await backends("new"), await backends("legacy")
    gw = await gateway(_compat_config(new.url, legacy.url, tmp_path))
    got, data = await get(port_of(gw.url), target)
    assert got == status, data[:300]
    assert b"\r\nDeprecation: @" in data
    assert [r["target"] for r in new.received] == ([sent] if sent else [])
    assert legacy.hits == 0


@pytest.mark.parametrize(
    ("target", "backend"),
    [
        ("/special/x", "py"),
        ("/%73pecial/x", "py"),
        ("/sp%65cial/x", "py"),
        ("/special%2Fx", "go"),  # an encoded slash: not below /special/
        ("/caf%C3%A9", "py"),
        ("/caf%c3%a9", "py"),
        ("/cafe", "go"),
    ],
)
async def test_routes_match_the_normalized_path(
    target: str, backend: str, backends, gateway
) -> None:
    go, py = await backends("go"), await backends("py")
    data = gateway_config({"go": go.url, "py": py.url})
    data["routes"] = [
        {"name": "special", "match": {"path_prefix": "/sp%65cial/"}, "split": {"py": 100}},
        {"name": "unicode", "match": {"path": "/caf\u00e9"}, "split": {"py": 100}},
        {"name": "default", "match": {"path_prefix": "/"}, "split": {"go": 100}},
    ]
    gw = await gateway(data)
    status, answer = await get(port_of(gw.url), target)
    assert status == 200, answer[:300]
    served = go if backend == "go" else py
    assert [r["target"] for r in served.received] == [target]  # forwarded as sent
    assert go.hits + py.hits == 1


@pytest.mark.parametrize(
    ("target", "own"),
    [
        ("/enrichment/mode", True),
        ("/enrichment/%6Dode", True),
        ("/publishing/test/a%2Fb", True),  # one segment holding an encoded slash
        ("/publishing/test/%61", True),
        ("/enrichment%2Fmode", False),  # not the endpoint: proxied
    ],
)
async def test_own_endpoints_and_their_guard_read_the_normalized_path(
    target: str, own: bool, backends, gateway, tmp_path: Path
) -> None:
    go = await backends("go")
    data = gateway_config(
        {"go": go.url},
        storage=f"sqlite:///{tmp_path / 'state.db'}",
        admin={"listen": "127.0.0.1:0", "token": TOKEN},
        alerts={},
        publishing={"targets": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/"}]},
    )
    gw = await gateway(data)
    status, answer = await get(port_of(gw.url), target, "POST")
    if own:
        assert status == 401, answer[:300]  # the endpoint's admin-token guard
        assert go.hits == 0
    else:
        assert status == 200, answer[:300]
        assert [r["target"] for r in go.received] == [target]


def _compat_config(new: str, legacy: str, tmp_path: Path) -> dict[str, Any]:
    data = gateway_config(
        {"new": new, "legacy": legacy}, storage=f"sqlite:///{tmp_path / 'state.db'}"
    )
    data["compat"] = {
        "backends": {"new": "new", "legacy": "legacy"},
        "deprecation": {"since": "2025-02-01", "sunset": "2025-04-01"},
        "rules": RULES,
    }
    return data
