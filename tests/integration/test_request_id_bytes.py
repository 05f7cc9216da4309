"""A client's X-Request-ID with bytes that are not UTF-8 is carried, escaped, into the gateway's
own JSON errors and its access log, on both listener paths. It used to make every such error a
500 (the JSON encoder refused it) and, on the fast path, kill the connection's task before the
answer was sent: the client waited for ever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from cutover.app import start_gateway
from cutover.proxy.config import parse_config
from tests.conftest import gateway_config
from tests.integration.alerts_helpers import am_alert, envelope

pytestmark = pytest.mark.parametrize("fast_path", [True, False])
RID = b"r\xff\xfe-1"
ESCAPED = "r\\xff\\xfe-1"


async def ask(url: str, method: bytes, path: bytes, body: bytes = b"") -> tuple[bytes, dict]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = b"%s %s HTTP/1.1\r\nHost: x\r\nX-Request-ID: %s\r\n" % (method, path, RID)
    writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], orjson.loads(payload) if payload else {}


async def test_proxied_requests_errors_and_the_access_log(tmp_path: Path, fast_path: bool) -> None:
    log = tmp_path / "access.log"
    data = gateway_config(
        {"go": "http://127.0.0.1:9"},
        fast_path=fast_path,
        access_log={"enabled": True, "path": str(log)},
        route={"match": {"path_prefix": "/api"}},
    )
    data["backends"]["go"].pop("health")
    gw = await start_gateway(parse_config(data, str(tmp_path / "cutover.yaml")))
    try:
        status, body = await ask(gw.url, b"GET", b"/api/x")  # the backend refuses: 502
        assert status == b"HTTP/1.1 502 Bad Gateway" and body["request_id"] == ESCAPED
        status, body = await ask(gw.url, b"GET", b"/elsewhere")  # no route: 404
        assert status == b"HTTP/1.1 404 Not Found" and body["request_id"] == ESCAPED
    finally:
        await gw.close()
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [(x["path"], x["status"], x["request_id"]) for x in lines] == [
        ("/api/x", 502, ESCAPED),
        ("/elsewhere", 404, ESCAPED),
    ]


async def test_the_gateways_own_endpoints(ag, fast_path: bool) -> None:
    gw = await ag.start({}, fast_path=fast_path)
    status, body = await ask(gw.url, b"POST", b"/webhook/proxy", b"{")
    assert status == b"HTTP/1.1 400 Bad Request" and body["request_id"] == ESCAPED
    status, body = await ask(gw.url, b"GET", b"/webhook/proxy")
    assert status == b"HTTP/1.1 405 Method Not Allowed" and body["request_id"] == ESCAPED
    status, body = await ask(gw.url, b"POST", b"/enrichment/mode", b"x")
    assert status == b"HTTP/1.1 400 Bad Request" and body["request_id"] == ESCAPED
    status, body = await ask(gw.url, b"POST", b"/webhook/proxy", orjson.dumps(envelope(am_alert())))
    assert status == b"HTTP/1.1 200 OK" and body["accepted"] == 1
