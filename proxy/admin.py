"""The admin API's listener-wide pieces: bearer-token auth and the gateway's own admin routes.

Features add their routes (weights, rollback, canary, parity, compat usage) through
`Feature.add_admin_routes`. Mutating endpoints on the main listener (e.g.
`POST /enrichment/mode`) use `require_admin_token` with the same token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.errors import error_response

if TYPE_CHECKING:
    from proxy.server import Gateway

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def token_ok(request: web.BaseRequest, token: str | None) -> bool:
    """True when no token is configured or the request carries it as a bearer token."""
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def unauthorized() -> web.Response:
    return error_response(
        401,
        "unauthorized",
        "this endpoint needs 'Authorization: Bearer <admin token>'",
        None,
        headers={"WWW-Authenticate": 'Bearer realm="cutover-admin"'},
    )


def admin_auth(token: str | None) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not token_ok(request, token):
            return unauthorized()
        return await handler(request)

    return middleware


def require_admin_token(request: web.BaseRequest, gw: Gateway) -> web.Response | None:
    """For the gateway's own mutating endpoints: None when allowed, else the 401 to answer."""
    return None if token_ok(request, gw.config.admin.token) else unauthorized()


def add_admin_routes(router: web.UrlDispatcher, gw: Gateway) -> None:
    async def index(request: web.Request) -> web.Response:
        paths = sorted({r.resource.canonical for r in request.app.router.routes() if r.resource})
        return web.json_response({"endpoints": paths})

    router.add_get("/admin", index)
