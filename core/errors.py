"""The gateway's own errors and the one place they become HTTP answers.

    CutoverError                             status_hint, code, message (and field, headers, extra)
     ├── UpstreamError(backend, failure)     502 (connect, reset, status) / 504 (timeout)
     ├── BodyTooLargeError(limit)            413 body_too_large
     ├── IncompleteBodyError                 400 incomplete_body
     ├── CompatError(status, code)           the rule's answer (compat.feature)
     └── Refusal(message, field=, code=, headers=, **extra)   an answer the gateway gives itself
          ├── BadRequest                     400 bad_request
          ├── Unauthorized                   401 unauthorized (with WWW-Authenticate)
          ├── Forbidden                      403 forbidden
          ├── NotFound                       404 not_found
          │    └── NoRoute                   404 no_route
          ├── MethodNotAllowed(allow)        405 method_not_allowed (with Allow)
          ├── Conflict                       409 conflict
          ├── Gone                           410 gone
          ├── UnsupportedEncoding            415 unsupported_encoding
          └── Unavailable                    503 a dependency (store, shared state, Redis) is down
               └── Overloaded                503 overloaded (the concurrency cap)

Handlers raise these; `json_errors`, the middleware of the main and the admin apps, renders
them (`render`), as it renders aiohttp's own refusals (an unknown path, a method the path does
not take, a body over `client_max_size`) and, as a JSON 500 logged once, any other exception.
The fast path writes the same body (`error_body`) on its own wire.

Each reply is `{"error": {"code", "message", ...extra}, "request_id"?}` and never carries
internal details (no exception text, no backend URL, no traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

import orjson
from aiohttp import web

from cutover.core.storable import storable

log = logging.getLogger("cutover.errors")

_NONE: Mapping[str, str] = MappingProxyType({})


class CutoverError(Exception):
    status_hint = 500
    code = "internal_error"
    message = "internal error"
    headers: Mapping[str, str] = _NONE  # sent with the answer (Retry-After, WWW-Authenticate, …)
    extra: Mapping[str, object] = _NONE  # more members of the body's "error" object


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


class Refusal(CutoverError):
    """An answer the gateway gives itself: the class says the status and the default code;
    the message says what was wrong and, for bad input, `field` names what."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if headers:
            self.headers = dict(headers)
        if field is not None:
            extra = {"field": field, **extra}
        if extra:
            self.extra = extra


class BadRequest(Refusal):
    status_hint = 400
    code = "bad_request"


class Unauthorized(Refusal):
    status_hint = 401
    code = "unauthorized"

    def __init__(self, message: str, challenge: str, **extra: object) -> None:
        super().__init__(message, headers={"WWW-Authenticate": challenge}, **extra)


class Forbidden(Refusal):
    status_hint = 403
    code = "forbidden"


class NotFound(Refusal):
    status_hint = 404
    code = "not_found"


class NoRoute(NotFound):
    code = "no_route"

    def __init__(self) -> None:
        super().__init__("no route matches this request")


class MethodNotAllowed(Refusal):
    status_hint = 405
    code = "method_not_allowed"

    def __init__(self, allow: str) -> None:
        super().__init__(f"use {allow}", field="method", headers={"Allow": allow})


class Conflict(Refusal):
    status_hint = 409
    code = "conflict"


class Gone(Refusal):
    status_hint = 410
    code = "gone"


class UnsupportedEncoding(Refusal):
    status_hint = 415
    code = "unsupported_encoding"


class Unavailable(Refusal):
    """A dependency the answer needs (the store, the shared state, Redis) is down: 503, with
    `Retry-After` when a retry soon is worth it. Nothing was changed."""

    status_hint = 503
    code = "store_unavailable"

    def __init__(
        self,
        message: str,
        *,
        retry_after: int | None = None,
        code: str | None = None,
        **extra: object,
    ) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(message, code=code, headers=headers, **extra)


class Overloaded(Unavailable):
    code = "overloaded"

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many requests in flight, retry later", retry_after=retry_after)


def error_body(
    code: str, message: str, request_id: str | None, extra: Mapping[str, object] = _NONE
) -> bytes:
    """The JSON of every error the gateway answers itself (both listener paths)."""
    error: dict[str, object] = {"code": code, "message": message}
    if extra:
        error.update(extra)
    body: dict[str, object] = {"error": error}
    if request_id is not None:  # the client's own (undecodable bytes in it escaped)
        body["request_id"] = storable(request_id)
    return orjson.dumps(body)


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> web.Response:
    """A small JSON error answered by the gateway itself."""
    return web.Response(
        status=status,
        body=error_body(code, message, request_id, extra),
        content_type="application/json",
        headers=headers,
    )


def render(exc: CutoverError, request_id: str | None) -> web.Response:
    """`exc` as the answer: its status, code, message, extra members and headers. A 413
    closes the connection: the rest of the body was not read."""
    resp = error_response(
        exc.status_hint, exc.code, exc.message, request_id, exc.headers or None, **exc.extra
    )
    if isinstance(exc, BodyTooLargeError):
        resp.force_close()
    return resp


from_error = render  # the older name, still used by the request path


# The request id a handler chose for its answer (one it generated when the client sent none):
# `json_errors` renders a raised error with it.
REQUEST_ID = web.RequestKey("cutover_request_id", str)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def json_errors(
    request_id: Callable[[web.BaseRequest], str | None] = lambda request: None,
) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    """Middleware, outermost on the main and the admin apps: a `CutoverError` raised by a
    handler, an aiohttp HTTP error (4xx/5xx, with the field it concerns: `path`, `method`,
    `body`) and any other exception (a JSON 500, logged once here) become `render`'s JSON.
    Once a response has started, nothing can be rendered: the exception goes on to aiohttp,
    which cuts the connection."""

    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _from_http(request, exc, request_id(request))
        except CutoverError as exc:
            if request.writer.output_size > 0:
                raise
            return render(exc, request_id(request))
        except Exception as exc:
            if request.writer.output_size > 0:
                raise
            if isinstance(exc, TimeoutError):  # as aiohttp answers a handler's timeout
                status, code, message = 504, "timeout", "the gateway timed out answering"
            else:
                status, code, message = 500, "internal_error", "internal error"
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
            resp = error_response(status, code, message, request_id(request))
            resp.force_close()
            return resp

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
