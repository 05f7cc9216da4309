"""The fast path's pure wire helpers, table-driven (no sockets, no event loop)."""

from __future__ import annotations

import httptools
import orjson
import pytest

from cutover.core.errors import error_response
from cutover.proxy.fastpath import (
    _HeaderView,
    chunk,
    connection_tokens,
    error_bytes,
    serialize_head,
    status_line,
)


@pytest.mark.parametrize(
    ("status", "reason", "line"),
    [
        (200, None, b"HTTP/1.1 200 OK\r\n"),
        (404, None, b"HTTP/1.1 404 Not Found\r\n"),
        (299, None, b"HTTP/1.1 299 \r\n"),
        (200, b"Fine", b"HTTP/1.1 200 Fine\r\n"),
    ],
)
def test_status_line(status: int, reason: bytes | None, line: bytes) -> None:
    assert status_line(status, reason) == line


@pytest.mark.parametrize(
    ("values", "tokens"),
    [
        ([], set()),
        ([b"keep-alive"], set()),
        ([b"Close"], set()),
        ([b"keep-alive, X-Private"], {b"x-private"}),
        ([b"Upgrade", b" TE , ,x-a"], {b"upgrade", b"te", b"x-a"}),
    ],
)
def test_connection_tokens(values: list[bytes], tokens: set[bytes]) -> None:
    headers = [(b"Host", b"a")] + [(b"Connection", v) for v in values]
    lower = [name.lower() for name, _ in headers]
    assert connection_tokens(headers, lower) == tokens


class _Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.done = True


def test_serialized_head_parses_back_to_the_same_request() -> None:
    headers = [(b"Host", b"example.test"), (b"X-Case", b"MiXeD"), (b"Content-Length", b"0")]
    raw = serialize_head(b"PATCH", b"/a%20b?q=1", "1.1", headers)
    assert raw.endswith(b"\r\n\r\n")
    seen = _Collect()
    parser = httptools.HttpRequestParser(seen)
    parser.feed_data(raw)
    assert seen.done and seen.url == b"/a%20b?q=1"
    assert seen.headers == headers
    assert parser.get_method() == b"PATCH"


def test_chunks_reassemble() -> None:
    seen: list[bytes] = []

    class Body(_Collect):
        def on_body(self, body: bytes) -> None:
            seen.append(body)

    body = Body()
    parser = httptools.HttpRequestParser(body)
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    parser.feed_data(head + chunk(b"hello") + chunk(b" " * 300) + b"0\r\n\r\n")
    assert body.done and b"".join(seen) == b"hello" + b" " * 300


def test_error_bytes_carry_the_same_body_as_the_general_path() -> None:
    data = error_bytes(503, "overloaded", "busy", "rid-1", (("Retry-After", "1"),), close=True)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    assert b"Retry-After: 1" in lines and b"Connection: close" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert body == error_response(503, "overloaded", "busy", "rid-1").body
    assert orjson.loads(error_bytes(404, "no_route", "x", None).partition(b"\r\n\r\n")[2]) == {
        "error": {"code": "no_route", "message": "x"}
    }


def test_header_view_is_case_insensitive_and_keeps_the_first_value() -> None:
    view = _HeaderView({b"x-user": b"u1", b"cookie": b"a=\xc3\xa9"})
    assert view.get("X-User") == "u1"
    assert view.get("x-missing") is None and view.get("x-missing", "d") == "d"
    assert view.get("Cookie") == "a=\u00e9"
    assert "X-USER" in view and "other" not in view
