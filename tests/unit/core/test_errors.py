"""The error tree: every class answers its status, code and body (`render`), and the fast
path's wire bytes carry the very same body (`error_body`)."""

from __future__ import annotations

import orjson
import pytest

from cutover.core.errors import (
    BadRequest,
    BodyTooLargeError,
    Conflict,
    CutoverError,
    Forbidden,
    Gone,
    IncompleteBodyError,
    MethodNotAllowed,
    NoRoute,
    NotFound,
    Overloaded,
    Unauthorized,
    Unavailable,
    UnsupportedEncoding,
    UpstreamError,
    error_body,
    render,
)
from cutover.proxy.fastpath import error_bytes

CASES = [
    (CutoverError(), 500, {"code": "internal_error", "message": "internal error"}, {}),
    (
        UpstreamError("go", "connect"),
        502,
        {"code": "upstream_unavailable", "message": "upstream connection failed"},
        {},
    ),
    (
        UpstreamError("go", "timeout"),
        504,
        {"code": "upstream_timeout", "message": "upstream timed out"},
        {},
    ),
    (
        BodyTooLargeError(10),
        413,
        {"code": "body_too_large", "message": "request body exceeds the limit of 10 bytes"},
        {},
    ),
    (
        IncompleteBodyError(),
        400,
        {"code": "incomplete_body", "message": "the request body ended before its Content-Length"},
        {},
    ),
    (
        BadRequest("limit: expected 1 to 1000", field="limit"),
        400,
        {"code": "bad_request", "message": "limit: expected 1 to 1000", "field": "limit"},
        {},
    ),
    (
        BadRequest("bad", code="invalid_json", problems=[{"path": "$"}]),
        400,
        {"code": "invalid_json", "message": "bad", "problems": [{"path": "$"}]},
        {},
    ),
    (
        Unauthorized("needs a token", 'Bearer realm="x"'),
        401,
        {"code": "unauthorized", "message": "needs a token"},
        {"WWW-Authenticate": 'Bearer realm="x"'},
    ),
    (
        Forbidden("loopback only", field="admin.token"),
        403,
        {"code": "forbidden", "message": "loopback only", "field": "admin.token"},
        {},
    ),
    (NotFound("no job 3"), 404, {"code": "not_found", "message": "no job 3"}, {}),
    (NoRoute(), 404, {"code": "no_route", "message": "no route matches this request"}, {}),
    (
        MethodNotAllowed("GET, POST"),
        405,
        {"code": "method_not_allowed", "message": "use GET, POST", "field": "method"},
        {"Allow": "GET, POST"},
    ),
    (Conflict("retry"), 409, {"code": "conflict", "message": "retry"}, {}),
    (
        UnsupportedEncoding("Content-Encoding must be identity or gzip"),
        415,
        {"code": "unsupported_encoding", "message": "Content-Encoding must be identity or gzip"},
        {},
    ),
    (
        Gone("moved", replacement="/v2"),
        410,
        {"code": "gone", "message": "moved", "replacement": "/v2"},
        {},
    ),
    (
        Unavailable("the store is down"),
        503,
        {"code": "store_unavailable", "message": "the store is down"},
        {},
    ),
    (
        Unavailable("down", retry_after=1, code="shared_state_unavailable", waiting=2),
        503,
        {"code": "shared_state_unavailable", "message": "down", "waiting": 2},
        {"Retry-After": "1"},
    ),
    (
        Overloaded(3),
        503,
        {"code": "overloaded", "message": "too many requests in flight, retry later"},
        {"Retry-After": "3"},
    ),
]


@pytest.mark.parametrize(("exc", "status", "error", "headers"), CASES)
def test_every_class_renders_its_status_body_and_headers(
    exc: CutoverError, status: int, error: dict, headers: dict
) -> None:
    resp = render(exc, "rid-1")
    assert resp.status == status
    assert resp.content_type == "application/json"
    assert orjson.loads(resp.body) == {"error": error, "request_id": "rid-1"}
    for name, value in headers.items():
        assert resp.headers[name] == value
    assert ("Retry-After" in resp.headers) == ("Retry-After" in headers)
    no_id = render(exc, None)
    assert orjson.loads(no_id.body) == {"error": error}


@pytest.mark.parametrize(("exc", "status", "error", "headers"), CASES)
def test_the_fast_path_writes_the_same_body(
    exc: CutoverError, status: int, error: dict, headers: dict
) -> None:
    wire = error_bytes(status, exc.code, exc.message, "rid-1")
    assert wire.partition(b"\r\n\r\n")[2] == error_body(exc.code, exc.message, "rid-1")


def test_a_refusal_does_not_share_state_between_instances() -> None:
    a = BadRequest("a", field="x")
    b = BadRequest("b")
    assert a.extra == {"field": "x"} and dict(b.extra) == {} and dict(CutoverError.extra) == {}
    assert dict(b.headers) == {}


def test_an_undecodable_request_id_is_escaped_as_before() -> None:
    body = orjson.loads(error_body("c", "m", "id\udcff"))
    assert body["request_id"] != "id\udcff" and body["request_id"].startswith("id")
