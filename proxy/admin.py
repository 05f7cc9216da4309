"""The admin API's listener-wide pieces: bearer-token auth and the gateway's own admin routes.

Features add their routes (weights, rollback, canary, parity, compat usage) through
`Feature.add_admin_routes`. The gateway's own mutating endpoints on the main listener
(`POST /enrichment/mode`, `/classification/classify`, `/publishing/test/…`,
`/publishing/targets/refresh`, `/publishing/dlq/…/replay`) all go through `require_admin_token`:
the same tokens when any is configured; without one, loopback clients only (DESIGN.md,
Decisions), since the main listener is usually reachable from everywhere.

Tokens: `admin.token` (one shared token, named `admin`) and `admin.tokens` (name -> token). A
request's bearer token is compared with every configured token, each in constant time and with
no early exit, so the answer's timing tells neither which token nor how much of one matched.
The name of the token that matched is the request's actor (`operator:<name>`), which the audit
log records; `X-Cutover-Actor` is only a self-declared annotation, and only where the token
names nobody in particular (the shared token, or no token at all).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from cutover.core.config_model import DEFAULT_TOKEN_NAME, AdminConfig
from cutover.core.configkit import ConfigErrors
from cutover.core.errors import BadRequest, Forbidden, Unauthorized
from cutover.proxy.config import CutoverConfig, load_config
from cutover.proxy.config_view import config_json
from cutover.routing.decision import is_loopback

if TYPE_CHECKING:
    from cutover.proxy.server import Gateway

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

log = logging.getLogger("cutover.admin")

# request[ACTOR_KEY]: `operator`, `operator:<token name>`; request[TOKEN_NAME_KEY]: the name of
# the token used, or None (typed keys: aiohttp warns on string keys)
ACTOR_KEY = web.RequestKey("admin_actor", str)
TOKEN_NAME_KEY: web.RequestKey[str | None] = web.RequestKey("admin_token_name")
ACTOR_HEADER = "X-Cutover-Actor"
_DECLARED = re.compile(r"[A-Za-z0-9_.@+-]{1,64}")

Credentials = tuple[tuple[str, str], ...]


@functools.lru_cache(maxsize=16)
def _digests(credentials: Credentials) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, _digest(token)) for name, token in credentials)


def _digest(text: str) -> bytes:
    # Equal-length digests: compare_digest then takes as long whatever the token's length.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def match_token(given: str, credentials: Credentials) -> str | None:
    """The name of the configured token equal to `given`, or None. Every token is compared,
    in constant time, whichever matches (names are unique and so are tokens)."""
    presented = _digest(given)
    found: str | None = None
    for name, digest in _digests(credentials):
        if hmac.compare_digest(presented, digest):
            found = name
    return found


def authenticate(request: web.BaseRequest, admin: AdminConfig) -> tuple[bool, str | None]:
    """(allowed, token name). With no token configured every request is allowed, unnamed."""
    credentials = admin.credentials()
    if not credentials:
        return True, None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False, None
    name = match_token(given.strip(), credentials)
    return name is not None, name


def actor(token_name: str | None, declared: str | None) -> str:
    """Who acts, for the audit log: `operator:<token name>`; a named token is the whole truth.
    The shared token (`operator:admin`) or no token (`operator`) may carry a self-declared
    name, recorded as such: `operator:admin (self-declared: alice)`."""
    who = "operator" if token_name is None else f"operator:{token_name}"
    if token_name not in (None, DEFAULT_TOKEN_NAME):
        return who
    name = (declared or "").strip()
    return f"{who} (self-declared: {name})" if _DECLARED.fullmatch(name) else who


def _admit(request: web.BaseRequest, name: str | None) -> None:
    request[TOKEN_NAME_KEY] = name
    request[ACTOR_KEY] = actor(name, request.headers.get(ACTOR_HEADER))


def actor_of(request: web.BaseRequest) -> str:
    """The actor `admin_auth` / `require_admin_token` recorded for this request."""
    found = request.get(ACTOR_KEY)
    return found if isinstance(found, str) else actor(None, request.headers.get(ACTOR_HEADER))


def unauthorized() -> Unauthorized:
    return Unauthorized(
        "this endpoint needs 'Authorization: Bearer <admin token>'", 'Bearer realm="cutover-admin"'
    )


def admin_auth(gw: Gateway) -> Middleware:
    """The admin listener's middleware: the tokens of the config in force (a reload may add,
    rotate or remove them), but never none once it started with some — a reload does not turn
    authentication off on a listener that is already bound."""
    if isinstance(gw, str) or gw is None:  # a bare token would miss `admin.tokens`: fail closed
        raise TypeError("admin_auth takes the gateway, not a token")
    started = gw.config.admin

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request):
            return await handler(request)
        allowed, name = authenticate(request, _admin_in_force(gw, started))
        if not allowed:
            raise unauthorized()
        _admit(request, name)
        return await handler(request)

    return middleware


def _admin_in_force(gw: Gateway, started: AdminConfig) -> AdminConfig:
    admin = gw.config.admin
    return admin if admin.credentials() else started


def still_authorized(request: web.BaseRequest, gw: Gateway) -> bool:
    """For a long-lived admin answer (the dashboard's stream): does the request's token still
    pass `admin_auth` with the config in force now (a reload may have rotated it)?"""
    allowed, _ = authenticate(request, _admin_in_force(gw, gw.started_config.admin))
    return allowed


# The dashboard's page, its static files and the icon browsers ask every origin for: no data in
# them, so a browser loads them without a token and then asks for one (every data and action
# endpoint needs it).
PUBLIC_PAGES = frozenset({"/dashboard", "/dashboard/", "/favicon.ico"})
PUBLIC_PREFIX = "/dashboard/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_public(request: web.BaseRequest) -> bool:
    """Whether the admin listener serves `request` without a token (the page, not its data)."""
    if request.method not in ("GET", "HEAD"):
        return False
    path = request.rel_url.raw_path  # normalized (`proxy.http1`)
    return path in PUBLIC_PAGES or path.startswith(PUBLIC_PREFIX)


def same_origin(gw: Gateway) -> Middleware:
    """The admin listener's guard against cross-site requests, before the token check.

    A browser sends `Origin` with every POST, PUT, DELETE and PATCH; one naming another site
    (or `null`) is refused, so a page elsewhere cannot act through a visitor's browser even
    where no token is configured (loopback only). Clients that send no `Origin` (curl, ctl)
    are not browsers and pass. Without a token, a browser's request (one with `Sec-Fetch-Site`
    or `Origin`, which every current browser sends) must name this host in `Host` (an IP
    literal or `localhost`): a name that merely resolves here (DNS rebinding) would make
    another site's page same-origin with the admin API.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = request.headers
        browser = "Sec-Fetch-Site" in headers or "Origin" in headers
        tokenless = not gw.config.admin.credentials() and not gw.started_config.admin.credentials()
        if browser and tokenless and not _local_host(request.host):
            raise Forbidden(
                "with no admin token configured the admin API answers only requests "
                "addressed to this host by IP address or as localhost",
                field="Host",
            )
        if request.method not in SAFE_METHODS:
            origin = headers.get("Origin")
            fetch_site = headers.get("Sec-Fetch-Site", "")
            if (origin is not None and not _origin_matches(origin, request)) or (
                fetch_site == "cross-site"
            ):
                raise Forbidden(
                    "a browser request from another origin may not act on the admin API",
                    code="cross_origin",
                    field="Origin",
                )
        return await handler(request)

    return middleware


def _origin_matches(origin: str, request: web.BaseRequest) -> bool:
    expected = f"{request.scheme}://{request.host}".lower()
    return origin.strip().lower() == expected


def _local_host(host: str) -> bool:
    """`127.0.0.1:9901`, `[::1]:9901`, `localhost:9901` (or without a port)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def require_admin_token(request: web.BaseRequest, gw: Gateway) -> None:
    """For the gateway's own mutating endpoints: returns when allowed, else raises the answer
    (`Unauthorized` without a configured token's bearer; `Forbidden` for a client not on this
    host when no token is configured). The actor is recorded on the request as for the admin
    listener (`actor_of`)."""
    admin = gw.config.admin
    if not admin.credentials() and not from_loopback(request):
        raise Forbidden(
            "with no admin token configured this endpoint answers only clients on this host "
            "(loopback); set admin.token (or admin.tokens) and send it as "
            "'Authorization: Bearer <token>'",
            field="admin.token",
        )
    allowed, name = authenticate(request, admin)
    if not allowed:
        raise unauthorized()
    _admit(request, name)


def from_loopback(request: web.BaseRequest) -> bool:
    """Whether the request comes from this host: the socket's peer is a loopback address and
    no proxy in between says it relays another host (every `X-Forwarded-For` entry and
    `Forwarded: for=` is loopback too). The peer is the TCP connection's own, never a header
    (nor `trusted_proxies`, which only picks the sticky client address): headers can only
    narrow the answer, so a client cannot claim to be local, and a proxy on this host that
    relays others (and says so) does not make them local."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    host = peer[0] if isinstance(peer, tuple | list) and peer else None
    if not isinstance(host, str) or not is_loopback(host):
        return False
    headers = request.headers
    for value in headers.getall("X-Forwarded-For", ()):
        if not all(is_loopback(entry) for entry in value.split(",")):
            return False
    for value in headers.getall("Forwarded", ()):
        for pair in value.replace(",", ";").split(";"):
            key, _, given = pair.strip().partition("=")
            if key.strip().lower() == "for" and not is_loopback(given.strip().strip('"')):
                return False
    return True


ALERTS_ENDPOINTS = "POST /enrichment/mode, POST /classification/classify"
PUBLISHING_ENDPOINTS = (
    "POST /publishing/test/…, /publishing/targets/refresh, /publishing/dlq/…/replay"
)


def open_endpoints_warning(config: CutoverConfig) -> str | None:
    """For `check-config` and the start log: the mutating endpoints the main listener serves
    while no admin token is configured, which then answer loopback clients only."""
    host = config.listen[0]
    if config.admin.credentials() or host == "localhost" or is_loopback(host):
        return None
    endpoints = [ALERTS_ENDPOINTS] if config.alerts is not None else []
    if config.publishing is not None:
        endpoints.append(PUBLISHING_ENDPOINTS)
    if not endpoints:
        return None
    return (
        "admin.token: not set, so the gateway's own mutating endpoints on "
        f"{host}:{config.listen[1]} ({'; '.join(endpoints)}) answer only clients "
        "on this host (403 for the others); set admin.token or admin.tokens to use them from "
        "elsewhere with 'Authorization: Bearer <token>'"
    )


# -- the gateway's own tokens never go upstream ---------------------------------------------


def accepted_credentials(gw: Gateway) -> Credentials:
    """The tokens the admin API accepts now: the config's, or while a reload left none, the
    ones it started with (as `admin_auth`)."""
    return gw.config.admin.credentials() or gw.started_config.admin.credentials()


@functools.lru_cache(maxsize=16)
def _authorizations(credentials: Credentials) -> frozenset[str]:
    return frozenset(f"Bearer {token}" for _, token in credentials)


def admin_authorizations(gw: Gateway) -> frozenset[str]:
    """`Authorization` values that carry one of the gateway's admin tokens (`Bearer <token>`):
    a proxied request carrying one loses the header (a mistyped path must not hand a gateway
    credential to a backend)."""
    return _authorizations(accepted_credentials(gw))


def carries_admin_token(value: str, authorizations: frozenset[str]) -> bool:
    """Whether an `Authorization` value is one of `authorizations`, written as `authenticate`
    would accept it (any case of `Bearer`, spaces around the token)."""
    if value in authorizations:
        return True
    scheme, _, token = value.strip().partition(" ")
    return scheme.lower() == "bearer" and f"Bearer {token.strip()}" in authorizations


def log_admin_token_dropped(gw: Gateway, value: str, request_id: str, method: str) -> None:
    """One warning per request, naming the token by its name, never its value."""
    _, _, token = value.strip().partition(" ")
    name = match_token(token.strip(), accepted_credentials(gw)) or "?"
    log.warning(
        "request %s (%s): removed an Authorization header carrying the admin token %r before "
        "forwarding it; the gateway's credentials never go to a backend",
        request_id,
        method,
        name,
    )


def without_admin_token(request: web.BaseRequest, gw: Gateway, request_id: str) -> web.BaseRequest:
    """The request to forward: itself, or (when it carries an admin token) a copy without
    its `Authorization` headers. Called only when the request has one."""
    authorizations = admin_authorizations(gw)
    if not authorizations:
        return request
    values = request.headers.getall("Authorization", ())
    found = next((v for v in values if carries_admin_token(v, authorizations)), None)
    if found is None:
        return request
    log_admin_token_dropped(gw, found, request_id, request.method)
    headers = request.headers.copy()
    headers.popall("Authorization")
    return request.clone(headers=headers)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        content_type="application/json",
    )


def add_admin_routes(router: web.UrlDispatcher, gw: Gateway) -> None:
    """The gateway's own admin routes: the index, who am I, reload and the config in force.

    POST /admin/reload      re-read the config file (every worker, through the supervisor)
    GET  /admin/config      the config in force, secrets redacted
    """

    async def index(request: web.Request) -> web.Response:
        paths = sorted({r.resource.canonical for r in request.app.router.routes() if r.resource})
        return web.json_response({"endpoints": paths})

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"token": request.get(TOKEN_NAME_KEY), "actor": actor_of(request)})

    async def reload(request: web.Request) -> web.Response:
        path = gw.config.source
        try:
            config = load_config(path)
        except ConfigErrors as errs:
            problems = [str(e) for e in errs.errors]
            raise BadRequest(
                "the config file was not reloaded",
                code="invalid_config",
                field="config",
                problems=problems,
            ) from errs
        pending = gw.restart_required(config)
        if os.environ.get("CUTOVER_WORKER_ID") is not None:
            # Several workers: the supervisor relays SIGHUP to every one of them (this one too).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(os.getppid(), signal.SIGHUP)
                body = {"reloaded": "all workers", "config": config.summary()}
                return _json({**body, "restart_required": pending}, 202)
        await gw.reload(config)
        body = {"reloaded": True, "config": config.summary()}
        return _json({**body, "restart_required": pending})

    async def show_config(request: web.Request) -> web.Response:
        return _json(config_json(gw.config))

    router.add_get("/admin", index)
    router.add_get("/admin/whoami", whoami)
    router.add_post("/admin/reload", reload)
    router.add_get("/admin/config", show_config)
