"""What the gateway accepts of a request line and its framing (`core.http1`), table-driven."""

from __future__ import annotations

import pytest

from cutover.core.http1 import (
    Refused,
    Target,
    config_path,
    is_plain_path,
    normalize_escapes,
    normalize_path,
    parse_target,
    resolve_dots,
    transfer_coding_refusal,
    valid_host,
    version_refusal,
    versionless_line,
)
from cutover.proxy.config import parse_config
from cutover.proxy.upstreams import Upstream


@pytest.mark.parametrize(
    ("method", "raw", "target"),
    [
        ("GET", "/", Target("/", None, "/")),
        ("GET", "/a/b?x=1&y", Target("/a/b", "x=1&y", "/a/b")),
        ("GET", "/a?", Target("/a", "", "/a")),
        ("GET", "//evil.test/x", Target("//evil.test/x", None, "//evil.test/x")),
        ("GET", "/a/%2Fb?c=/../d", Target("/a/%2Fb", "c=/../d", "/a/%2Fb")),
        ("GET", "http://example.test/x?q=1", Target("/x", "q=1", "/x", "example.test")),
        ("GET", "HTTP://Example.TEST:8080", Target("/", None, "/", "Example.TEST:8080")),
        ("GET", "https://example.test?q", Target("/", "q", "/", "example.test")),
        ("GET", "http://[::1]:81//x", Target("//x", None, "//x", "[::1]:81")),
        ("POST", "http://example.test/a/../b", Target("/a/../b", None, "/b", "example.test")),
        ("OPTIONS", "/x", Target("/x", None, "/x")),
    ],
)
def test_targets_are_parsed_into_origin_form(method: str, raw: str, target: Target) -> None:
    assert parse_target(method, raw) == target


def test_origin_form_is_what_is_forwarded() -> None:
    assert parse_target("GET", "http://h.test/a/./b?x").origin == "/a/./b?x"
    assert parse_target("GET", "http://h.test").origin == "/"
    assert parse_target("GET", "/a?").origin == "/a?"


@pytest.mark.parametrize(
    ("method", "raw", "status", "words"),
    [
        ("OPTIONS", "*", 400, "asterisk-form"),
        ("GET", "*", 400, "asterisk-form"),
        ("CONNECT", "example.test:443", 405, "CONNECT"),
        ("CONNECT", "/x", 405, "CONNECT"),
        ("GET", "example.test:80", 400, "expected a request target"),
        ("GET", "ftp://example.test/x", 400, "expected a request target"),
        ("GET", "http:/x", 400, "expected a request target"),
        ("GET", "http://", 400, "invalid authority"),
        ("GET", "http://a b/x", 400, "invalid authority"),
        ("GET", "http://example.test:65536/x", 400, "invalid authority"),
        ("GET", "http://user:pw@example.test/x", 400, "user information"),
        ("GET", "/x#frag", 400, "fragment"),
        ("GET", "http://example.test/x#", 400, "fragment"),
        ("GET", "/..", 400, "above the root"),
        ("GET", "/a/../../b", 400, "above the root"),
        ("GET", "/%2e%2E/etc/passwd", 400, "above the root"),
        ("GET", "/a%2F..%2F..%2Fetc", 400, "encoded slash"),
        ("GET", "/a/..%2f..%2fb", 400, "encoded slash"),
        ("GET", "/a%2Fb/../c", 400, "encoded slash"),  # /c or /a/c: the backend's choice
        ("GET", "/a%2F%2e%2e", 400, "encoded slash"),
    ],
)
def test_targets_the_gateway_refuses(method: str, raw: str, status: int, words: str) -> None:
    with pytest.raises(Refused) as info:
        parse_target(method, raw)
    assert info.value.status == status
    assert words in info.value.message


def test_connect_names_the_allowed_methods() -> None:
    with pytest.raises(Refused) as info:
        parse_target("CONNECT", "example.test:443")
    allow = dict(info.value.headers)["Allow"]
    assert "GET" in allow and "CONNECT" not in allow


@pytest.mark.parametrize(
    ("path", "resolved"),
    [
        ("/a/b", "/a/b"),
        ("/.well-known/x", "/.well-known/x"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/..", "/"),
        ("/./", "/"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/.%2e/b/%2E", "/b/"),
        ("/a//../b", "/a/b"),
        ("/public/../admin/x", "/admin/x"),
        ("/a/b%2e/c", "/a/b%2e/c"),  # "b." is no dot-segment
    ],
)
def test_dot_segments_resolve_as_rfc3986_says(path: str, resolved: str) -> None:
    assert resolve_dots(path) == resolved


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("/a/b.json", True),
        ("/a%20b", True),
        ("/a%2Fb", True),  # an encoded slash alone hides nothing
        ("/a/.well-known", False),  # checked, found harmless
        ("/a/%2e", False),
        ("/a/%2E%2e", False),
        ("/a%2F..", False),
        ("/a%2f..%2fb", False),
    ],
)
def test_paths_that_need_no_resolution(raw: str, plain: bool) -> None:
    assert is_plain_path(raw) is plain


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        ("/api/v1/alerts", "/api/v1/alerts"),
        ("/api/v1/%61lerts", "/api/v1/alerts"),  # an unreserved letter: decoded
        ("/%61%6C%65%72%74%73", "/alerts"),
        ("/%41%5a%30%39%2D%2e%5F%7e", "/AZ09-._~"),  # every unreserved class, any case
        ("/a%2fb", "/a%2Fb"),  # an encoded slash stays one, its hex uppercased
        ("/a%2Fb", "/a%2Fb"),
        ("/a%20b%3f%25", "/a%20b%3F%25"),  # reserved or not allowed literally: kept
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/%2561", "/%2561"),  # a percent sign is not decoded (no double decoding)
        ("/a%zzb%4", "/a%zzb%4"),  # not escapes: left alone
        ("/a/%2e%2E/b", "/b"),  # a dot is unreserved: decoded, then the segments resolved
        ("/a/x/../%62", "/a/b"),
    ],
)
def test_paths_are_normalized_as_rfc3986_says(path: str, normalized: str) -> None:
    assert normalize_path(path) == normalized
    assert normalize_path(normalized) == normalized  # idempotent


def test_escapes_alone_keep_dot_segments() -> None:
    assert normalize_escapes("/a/%2e%2e/b") == "/a/../b"
    assert normalize_escapes("/plain") == "/plain"


def test_normalized_targets_keep_what_was_sent() -> None:
    target = parse_target("GET", "/api/v1/%61lerts?q=%61")
    assert (target.path, target.query, target.normalized) == (
        "/api/v1/%61lerts",
        "q=%61",  # the query is not a path: the rules that read it decode it themselves
        "/api/v1/alerts",
    )
    assert target.origin == "/api/v1/%61lerts?q=%61"  # forwarded as sent


@pytest.mark.parametrize(
    ("written", "compared"),
    [
        ("/api/", "/api/"),
        ("/api/v1/%61lerts", "/api/v1/alerts"),
        ("/café", "/caf%C3%A9"),
        ("/a b", "/a%20b"),
        ("/a%2fb", "/a%2Fb"),
        ("/a/../b", "/a/../b"),  # a config value is not a request: no dot resolution
    ],
)
def test_config_paths_take_the_normalized_form(written: str, compared: str) -> None:
    assert config_path(written) == compared
    assert config_path("/alerts/{id}/%61ck", keep="{}") == "/alerts/{id}/ack"


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("example.test", True),
        ("example.test:8080", True),
        ("127.0.0.1:65535", True),
        ("[::1]:80", True),
        ("a:", True),  # an empty port is allowed by RFC 3986
        ("a:65536", False),
        ("a:99999", False),
        ("a:123456", False),
        ("a b", False),
        ("a/b", False),
        ("a\n", False),
        ("[::1", False),
    ],
)
def test_host_values(host: str, ok: bool) -> None:
    assert valid_host(host) is ok


@pytest.mark.parametrize(
    ("version", "status"),
    [("1.1", None), ("1.0", None), ("0.9", 400), ("2.0", 505), ("3.0", 505), ("1.2", 505)],
)
def test_versions(version: str, status: int | None) -> None:
    refusal = version_refusal(version)
    assert (refusal.status if refusal is not None else None) == status


@pytest.mark.parametrize(
    ("start", "verdict"),
    [
        (b"GET /\r\n", True),
        (b"GET /\n", True),
        (b"\r\nGET /x\r\n", True),
        (b"hello\r\n", True),
        (b"GET / HTTP/1.1\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", False),
        (b"GET /a HTTP/2.0\r\n", False),  # a version: judged as one later
        (b"GET / HT", None),
        (b"GET /", None),
        (b"", None),
        (b"\r\n", None),
    ],
)
def test_versionless_request_lines(start: bytes, verdict: bool | None) -> None:
    assert versionless_line(start) is verdict


@pytest.mark.parametrize(
    ("values", "refused"),
    [
        ([], False),
        (["chunked"], False),
        (["Chunked "], False),
        (["gzip"], True),
        (["gzip, chunked"], True),
        (["chunked, chunked"], True),
        (["chunked", "chunked"], True),
        (["identity"], True),
    ],
)
def test_transfer_codings(values: list[str], refused: bool) -> None:
    assert (transfer_coding_refusal(values) is not None) is refused


def _upstream(url: str) -> Upstream:
    config = parse_config(
        {
            "listen": "127.0.0.1:0",
            "admin": "off",
            "backends": {"b": {"url": url, "health": "off"}},
            "routes": [{"name": "r", "split": {"b": 100}}],
        },
        "t.yaml",
    )
    return Upstream(config.backends["b"])


@pytest.mark.parametrize(
    ("base", "target", "url"),
    [
        ("http://10.0.0.1:8080", "/x?q=1", "http://10.0.0.1:8080/x?q=1"),
        ("http://10.0.0.1:8080/base", "/x", "http://10.0.0.1:8080/base/x"),
        ("http://10.0.0.1:8080/base", "//evil.test/x", "http://10.0.0.1:8080/base//evil.test/x"),
        ("http://10.0.0.1:8080", "//evil.test/x?a=%20", "http://10.0.0.1:8080//evil.test/x?a=%20"),
        ("https://[::1]", "/a%2Fb", "https://[::1]/a%2Fb"),
    ],
)
async def test_upstream_urls_keep_the_backend_authority(base: str, target: str, url: str) -> None:
    upstream = _upstream(base)
    try:
        built = upstream.url(target)
        assert str(built) == url
        assert built.host == upstream.backend.host
    finally:
        await upstream.close()


async def test_upstream_url_refuses_anything_but_origin_form() -> None:
    upstream = _upstream("http://10.0.0.1:8080")
    try:
        for target in ("http://evil.test/x", "evil.test/x", "*", ""):
            with pytest.raises(ValueError):
                upstream.url(target)
    finally:
        await upstream.close()
