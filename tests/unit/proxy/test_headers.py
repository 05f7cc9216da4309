from multidict import CIMultiDict, CIMultiDictProxy

from cutover.proxy.headers import connection_tokens, downstream_headers, upstream_headers


def proxy_of(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def up(headers: CIMultiDictProxy[str], **kw: object) -> CIMultiDict[str]:
    args = dict(
        peer="10.0.0.7",
        scheme="https",
        host="api.example",
        host_header="backend:8080",
        request_id_name="X-Request-ID",
        request_id="rid",
        content_length=None,
    )
    args.update(kw)
    return upstream_headers(headers, **args)  # type: ignore[arg-type]


def test_connection_tokens_are_split_and_lowercased() -> None:
    h = proxy_of(("Connection", "Keep-Alive, X-A"), ("connection", " x-b ,"))
    assert connection_tokens(h) == {"keep-alive", "x-a", "x-b"}


def test_upstream_drops_hop_by_hop_and_named_fields() -> None:
    h = proxy_of(
        ("Host", "api.example"),
        ("Connection", "X-Private"),
        ("X-Private", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Trailer", "X-T"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic x"),
        ("Proxy-Connection", "keep-alive"),
        ("Expect", "100-continue"),
        ("Content-Length", "5"),
        ("Accept", "application/json"),
        ("Set-Cookie", "a=1"),
    )
    out = up(h)
    assert dict(out) == {
        "Accept": "application/json",
        "Set-Cookie": "a=1",
        "X-Forwarded-For": "10.0.0.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example",
        "X-Request-ID": "rid",
        "Host": "backend:8080",
    }


def test_forwarded_for_is_appended_and_proto_host_kept() -> None:
    h = proxy_of(
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-For", "2.2.2.2"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "edge.example"),
    )
    out = up(h, scheme="http")
    assert out["X-Forwarded-For"] == "1.1.1.1, 2.2.2.2, 10.0.0.7"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Host"] == "edge.example"


def test_host_passed_through_when_asked_and_length_for_streams() -> None:
    out = up(proxy_of(("Host", "api.example")), host_header=None, content_length=1234)
    assert out["Host"] == "api.example"
    assert out["Content-Length"] == "1234"


def test_downstream_keeps_repeated_fields_and_drops_hop_by_hop() -> None:
    h = proxy_of(
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("Connection", "close, X-Internal"),
        ("X-Internal", "x"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "10"),
        ("Content-Encoding", "gzip"),
    )
    out = downstream_headers(h, [("X-Cutover-Backend", "go")])
    assert out.getall("Set-Cookie") == ["a=1", "b=2"]
    assert out["Content-Encoding"] == "gzip"
    for name in ("Connection", "X-Internal", "Transfer-Encoding", "Content-Length"):
        assert name not in out
    assert out["X-Cutover-Backend"] == "go"
