"""The gateway's own mutating endpoints without an admin token: loopback clients only, judged by
the connection's peer (injected here at the transport, the seam aiohttp reads it from); the
real-socket tests are in tests/integration/test_loopback_guard.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cutover.core.config_model import AdminConfig
from cutover.core.errors import CutoverError, render
from cutover.proxy.admin import actor_of, from_loopback, open_endpoints_warning, require_admin_token
from cutover.proxy.config import parse_config

TOKEN = "main-listener-token-0123"


class _Transport:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def _request(peer: Any, headers: dict[str, str] | None = None) -> Any:
    return make_mocked_request(
        "POST", "/enrichment/mode", headers=headers or {}, transport=_Transport(peer)
    )


class _Gw:
    def __init__(self, admin: AdminConfig) -> None:
        self.config = type("C", (), {"admin": admin})()


@pytest.mark.parametrize(
    ("peer", "headers", "local"),
    [
        (("127.0.0.1", 5000), {}, True),
        (("127.0.0.2", 5000), {}, True),  # all of 127/8 is this host
        (("::1", 5000, 0, 0), {}, True),
        (("::ffff:127.0.0.1", 5000, 0, 0), {}, True),
        (("192.0.2.7", 5000), {}, False),
        (("10.1.2.3", 5000), {"X-Forwarded-For": "127.0.0.1"}, False),  # a header cannot widen
        (("fd00::2", 5000, 0, 0), {"Forwarded": "for=127.0.0.1"}, False),
        (("127.0.0.1", 5000), {"X-Forwarded-For": "203.0.113.9"}, False),  # a local proxy relays
        (("127.0.0.1", 5000), {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}, False),
        (("127.0.0.1", 5000), {"X-Forwarded-For": "127.0.0.1, [::1]:80"}, True),
        (("127.0.0.1", 5000), {"X-Forwarded-For": "garbage"}, False),
        (("127.0.0.1", 5000), {"Forwarded": 'for="[2001:db8::1]:4711";proto=http'}, False),
        (("127.0.0.1", 5000), {"Forwarded": "for=127.0.0.1;proto=http, for=unknown"}, False),
        (("127.0.0.1", 5000), {"Forwarded": "proto=http;for=127.0.0.1"}, True),
        (None, {}, False),  # no transport information: not local
        ("", {}, False),  # a unix socket has no address
    ],
)
def test_from_loopback(peer: Any, headers: dict[str, str], local: bool) -> None:
    assert from_loopback(_request(peer, headers)) is local


def test_no_transport_is_not_local() -> None:
    request = make_mocked_request("POST", "/enrichment/mode")
    request._transport_peername = ("127.0.0.1", 1)  # what request.remote would say
    request._protocol.transport = None  # type: ignore[union-attr]
    assert from_loopback(request) is False


def _denied(request: web.BaseRequest, gw: object) -> web.Response:
    """The answer `require_admin_token` raises, as `json_errors` renders it."""
    with pytest.raises(CutoverError) as caught:
        require_admin_token(request, gw)  # type: ignore[arg-type]
    return render(caught.value, None)


def test_without_a_token_only_loopback_clients_pass() -> None:
    gw = _Gw(AdminConfig())
    local = _request(("127.0.0.1", 4000))
    assert require_admin_token(local, gw) is None  # type: ignore[arg-type]
    assert actor_of(local) == "operator"
    denied = _denied(_request(("192.0.2.2", 4000)), gw)
    assert denied.status == 403
    error = orjson.loads(denied.body)["error"]  # type: ignore[arg-type]
    assert error["code"] == "forbidden" and error["field"] == "admin.token"
    assert "loopback" in error["message"] and "admin.token" in error["message"]
    relayed = _request(("127.0.0.1", 4000), {"X-Forwarded-For": "192.0.2.9"})
    assert _denied(relayed, gw).status == 403


def test_with_a_token_it_is_needed_from_everywhere_loopback_included() -> None:
    gw = _Gw(AdminConfig(token=TOKEN))  # type: ignore[arg-type]
    local = _denied(_request(("127.0.0.1", 4000)), gw)
    assert local.status == 401
    remote = _request(("192.0.2.2", 4000), {"Authorization": f"Bearer {TOKEN}"})
    assert require_admin_token(remote, gw) is None  # type: ignore[arg-type]
    assert actor_of(remote) == "operator:admin"


MINIMAL: dict[str, Any] = {
    "backends": {"go": "http://go:8080"},
    "routes": [{"name": "default", "split": {"go": 100}}],
}


@pytest.mark.parametrize(
    ("extra", "warns"),
    [
        ({"listen": "0.0.0.0:8080", "alerts": {}}, True),
        ({"listen": "0.0.0.0:8080", "alerts": {}, "admin": {"token": TOKEN}}, False),
        ({"listen": "0.0.0.0:8080", "alerts": {}, "admin": {"tokens": {"ops": TOKEN}}}, False),
        ({"listen": "127.0.0.1:8080", "alerts": {}}, False),  # only this host reaches it
        ({"listen": "0.0.0.0:8080"}, False),  # no such endpoint is served
    ],
)
def test_open_endpoints_warning(extra: dict[str, Any], warns: bool) -> None:
    config = parse_config({**MINIMAL, **extra}, "test.yaml", env={})
    warning = open_endpoints_warning(config)
    assert (warning is not None) is warns
    if warning is not None:
        assert warning.startswith("admin.token: not set")
        assert "/enrichment/mode" in warning and "0.0.0.0:8080" in warning
