"""One backend's clients: the aiohttp session (general path, health checks) and the lean
kept-alive pool the fast path forwards over (`proxy.pool`)."""

from __future__ import annotations

import ssl

import aiohttp
from yarl import URL

from cutover.core.config_model import Backend, HealthCheck, Timeouts
from cutover.proxy.pool import LeanPool

# Response heads from backends may be larger than what we accept from clients.
_MAX_RESPONSE_FIELD = 32 * 1024


def ssl_context(backend: Backend) -> ssl.SSLContext | bool:
    """TLS settings for an https backend (CA bundle, client certificate, verification)."""
    if backend.scheme != "https":
        return False
    tls = backend.tls
    ctx = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    if tls is not None:
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if not tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    """A route's connect timeout as the client library takes it (built once per route at load;
    the attempt loop bounds each attempt itself)."""
    return aiohttp.ClientTimeout(
        total=None, connect=timeouts.connect, sock_connect=timeouts.connect
    )


def check_timeout(check: HealthCheck) -> aiohttp.ClientTimeout:
    """An active health check's bound as the client library takes it (built once per backend
    at load, as `client_timeout` is per route)."""
    return aiohttp.ClientTimeout(total=check.timeout)


class Upstream:
    """A backend's pools. `session` streams, never decompresses, never keeps cookies;
    `lean` is the fast path's (connections are opened on first use)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.base = f"{backend.scheme}://{backend.authority}{backend.base_path}"
        self.server_hostname = backend.tls.server_name if backend.tls else None
        tls = ssl_context(backend)
        self.lean = LeanPool(backend, tls)
        connector = aiohttp.TCPConnector(
            limit=backend.pool.max_connections,
            limit_per_host=0,
            keepalive_timeout=backend.pool.keepalive_timeout,
            ssl=tls,
            ttl_dns_cache=10,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            max_field_size=_MAX_RESPONSE_FIELD,
            max_line_size=_MAX_RESPONSE_FIELD,
            read_bufsize=2**17,
        )

    def url(self, target: str) -> URL:
        """The backend URL for an origin-form request target (`/path?query`, as the gateway
        accepted it: `core.http1`), built from its parts: the backend's scheme, authority and
        base path, then the target's path and query. Nothing a client sends can change where
        the request goes, nor climb out of the base path."""
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            raise ValueError(f"not an origin-form request target: {target[:100]!r}")
        backend = self.backend
        return URL.build(
            scheme=backend.scheme,
            authority=backend.authority,
            path=backend.base_path + path,
            query_string=query,
            encoded=True,
        )

    async def close(self) -> None:
        await self.lean.close()
        await self.session.close()
