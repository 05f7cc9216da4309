"""Credentials on the webhook with bytes that are not UTF-8 (or not base64) get a 401, never a
500, on both listener paths; the right credentials still pass, however they are spelled."""

from __future__ import annotations

import asyncio
import base64

import pytest

pytestmark = pytest.mark.parametrize("fast_path", [True, False])


async def post_raw(url: str, authorization: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /webhook/proxy HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization
        + b'\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{"alerts":[]}'
    )  # fmt: skip
    status_line = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    return status_line


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer t\xffk",
        b"Bearer \xc3",
        b"Basic \xff\xfe",
        b"Basic dTpw\xff",
        b"Basic //8=",
        b"\xff",
    ],
)
async def test_undecodable_credentials_are_a_401(ag, fast_path: bool, authorization: bytes) -> None:
    for auth in ({"bearer_token": "tok"}, {"username": "u", "password": "p"}):
        gw = await ag.start({"auth": auth}, fast_path=fast_path)
        assert await post_raw(gw.url, authorization) == b"HTTP/1.1 401 Unauthorized"


async def test_the_right_credentials_still_pass(ag, fast_path: bool) -> None:
    gw = await ag.start({"auth": {"bearer_token": "t\u00f6k"}}, fast_path=fast_path)
    assert await post_raw(gw.url, "Bearer t\u00f6k".encode()) == b"HTTP/1.1 200 OK"
    gw = await ag.start({"auth": {"username": "\u00fc", "password": "p"}}, fast_path=fast_path)
    basic = base64.b64encode("\u00fc:p".encode())
    assert await post_raw(gw.url, b"Basic " + basic) == b"HTTP/1.1 200 OK"
