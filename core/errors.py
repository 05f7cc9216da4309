"""The gateway's own errors and the one place they become HTTP answers.

    CutoverError
     ├── UpstreamError(backend, failure)     status_hint 502 (connect, reset) / 504 (timeout)
     ├── BodyTooLargeError                   413
     ├── IncompleteBodyError                 400
     └── CompatError(status, code)           the rule's answer (compat.feature)

A request no route matches, and one past the concurrency cap, are answered in place
(`error_response`: 404 `no_route`, 503 `overloaded` with Retry-After), not raised.

Each reply is a small JSON object carrying the request id and never internal details
(no exception text, no backend URL). aiohttp's own refusals (an unknown path, a method the
path does not take, a body over `client_max_size`) get the same shape through `json_errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from cutover.core.storable import storable


class CutoverError(Exception):
    status_hint = 500
    code = "internal_error"
    message = "internal error"


class UpstreamError(CutoverError):
    def __init__(self, backend: str, failure: str) -> None:
        super().__init__(f"{backend}: {failure}")
        self.backend = backend
        self.failure = failure  # "connect" | "timeout" | "reset" | "status"
        if failure == "timeout":
            self.status_hint, self.code, self.message = (
                504,
                "upstream_timeout",
                "upstream timed out",
            )
        else:
            self.status_hint, self.code = 502, "upstream_unavailable"
            self.message = "upstream connection failed"


class BodyTooLargeError(CutoverError):
    status_hint = 413
    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.message = f"request body exceeds the limit of {limit} bytes"


class IncompleteBodyError(CutoverError):
    status_hint = 400
    code = "incomplete_body"
    message = "the request body ended before its Content-Length"


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> web.Response:
    """A small JSON error answered by the gateway itself."""
    body: dict[str, object] = {"error": {"code": code, "message": message}}
    if extra:
        body["error"].update(extra)  # type: ignore[union-attr]
    if request_id is not None:  # the client's own (undecodable bytes in it escaped)
        body["request_id"] = storable(request_id)
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def from_error(exc: CutoverError, request_id: str | None) -> web.Response:
    return error_response(exc.status_hint, exc.code, exc.message, request_id)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def json_errors(
    request_id: Callable[[web.BaseRequest], str | None] = lambda request: None,
) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    """Middleware: an aiohttp HTTP error (4xx/5xx) becomes `error_response`'s JSON, with the
    field it concerns (`path`, `method`, `body`); plain text answers none of our clients."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _from_http(request, exc, request_id(request))

    return middleware


def _from_http(
    request: web.BaseRequest, exc: web.HTTPException, request_id: str | None
) -> web.Response:
    status = exc.status
    headers = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
    if status == 404:
        code, field, message = "not_found", "path", f"no endpoint at {request.path}"
    elif status == 405:
        allowed = exc.headers.get("Allow", "")
        code, field = "method_not_allowed", "method"
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
    elif status == 413:
        code, field = "body_too_large", "body"
        message = f"the request body exceeds the limit of {request.client_max_size} bytes"
    else:
        code, field = exc.reason.lower().replace(" ", "_").replace("-", "_"), None
        message = exc.reason
    extra = {"field": field} if field is not None else {}
    resp = error_response(status, code, message, request_id, headers=headers, **extra)
    if status == 413:
        resp.force_close()  # the rest of the body was not read
    return resp
