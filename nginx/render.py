"""`cutover render nginx -c cutover.yaml`: an nginx config doing what cutover does at the edge.

- **Same split, same users.** `split_clients` hashes the route's sticky key with MurmurHash2 —
  the function cutover uses — and lists the same backend first (the canary candidate, else the
  first backend of the split) with the same percentage, so a user lands on the same side behind
  nginx or cutover. A request without a key gets a random one (`$request_id`); cookie stickiness
  sets the `cutover_id` cookie (HttpOnly, SameSite=Lax, 30 days) like cutover does.
- **Same fallback.** Each (route, backend) gets an upstream with the route's `fallback`
  backends as `backup` servers, `proxy_next_upstream error timeout http_502 http_503 http_504`
  (the route's retry statuses) — nginx, like cutover, replays a request that may have reached
  the backend only for idempotent methods unless the route opted POST in (`non_idempotent`).
  Passive ejection maps to `max_fails` / `fail_timeout`; active health checks are NGINX Plus only.
- **Keep-alive upstreams** (HTTP/1.1, empty `Connection`), the backends' base paths, the
  X-Forwarded-* and X-Request-ID headers, body, header and timeout limits. Like cutover, nginx
  streams bodies (no buffering to temp files) and keeps a busy connection open for many
  requests (`keepalive_requests`, client side and upstream).

What nginx cannot do the same way (method or header matches, mirroring, backend TLS files) is
left out with a warning rather than rendered wrong.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from cutover.core.config_model import Backend, Route
from cutover.proxy.config import CutoverConfig
from cutover.routing.canary import CanaryConfig

__all__ = ["Rendered", "render"]

_NGINX_RETRY_STATUSES = (500, 502, 503, 504, 403, 404, 429)
_NON_IDEMPOTENT = frozenset({"POST", "PATCH", "LOCK"})
_KEEPALIVE_REQUESTS = 10_000  # requests per keep-alive connection (client and upstream)
_STREAM_BUFFER = "64k"


@dataclass
class Rendered:
    text: str
    warnings: list[str] = field(default_factory=list)


def _ident(*parts: str) -> str:
    return "cutover_" + "_".join(re.sub(r"[^A-Za-z0-9]", "_", p) for p in parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _seconds(s: float) -> str:
    return f"{max(1, round(s * 1000))}ms"


def _server(b: Backend) -> str:
    host = f"[{b.host}]" if ":" in b.host else b.host
    return f"{host}:{b.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _order(route: Route, canary: CanaryConfig | None) -> list[tuple[str, int]]:
    """The split as `SplitTable` lays it out: the first backend takes the lowest buckets."""
    first = canary.candidate if canary is not None and canary.applies_to(route.split) else None
    entries = list(route.split)
    if first is not None:
        entries.sort(key=lambda e: e[0] != first)
    return entries


def _location(route: Route) -> str | None:
    m = route.match
    if m.path is not None:
        return f"= {m.path}"
    if m.path_regex is not None:
        return f"~ {_quote('^(?:' + m.path_regex.pattern + ')')}"
    return None  # prefix: decided with the other routes (^~ or not)


def _sticky_key(route: Route, name: str, out: list[str], warn: list[str]) -> str:
    """Lines of `map`s for the route's key; returns the key variable."""
    sticky = route.sticky
    key = f"${name}_key"
    if sticky is None:
        return "$request_id"  # per request, random: like cutover without stickiness
    if sticky.kind == "client_ip":
        return "$remote_addr"
    if sticky.kind == "header":
        source = "$http_" + sticky.name.lower().replace("-", "_")
        if not re.fullmatch(r"[a-z0-9_]+", source[6:]):
            warn.append(
                f"route {route.name}: sticky header {sticky.name!r} has characters nginx drops"
            )
    else:
        if not re.fullmatch(r"[A-Za-z0-9_]+", sticky.name):
            warn.append(f"route {route.name}: cookie {sticky.name!r} is not an nginx variable name")
        source = f"$cookie_{sticky.name}"
        attrs = f"Path=/; Max-Age={int(sticky.cookie_ttl)}; HttpOnly; SameSite=Lax"
        if sticky.cookie_secure:
            attrs += "; Secure"
        out += [
            f"    map {source} ${name}_set_cookie {{",
            f'        "" "{sticky.name}=$request_id; {attrs}";',
            '        default "";',
            "    }",
        ]
    out += [
        f"    map {source} {key} {{",
        '        "" $request_id;',  # no key: a random one, as cutover does
        f"        default {source};",
        "    }",
    ]
    return key


def _next_upstream(route: Route) -> list[str]:
    retry = route.retry
    if retry.attempts == 0 or not route.fallback:
        return ["        proxy_next_upstream off;"]
    conditions = ["error", "timeout"]
    conditions += [f"http_{s}" for s in _NGINX_RETRY_STATUSES if s in retry.on_status]
    if retry.methods & _NON_IDEMPOTENT:
        conditions.append("non_idempotent")
    total = route.timeouts.total
    return [
        f"        proxy_next_upstream {' '.join(conditions)};",
        f"        proxy_next_upstream_tries {1 + retry.attempts};",
        f"        proxy_next_upstream_timeout {_seconds(total)};",
    ]


def _prefix_locations(routes: list[Route]) -> dict[str, str]:
    """Prefix routes: `^~` unless a regex route comes first (then regexes get their turn)."""
    out: dict[str, str] = {}
    regex_seen = False
    for r in routes:
        m = r.match
        if m.path_regex is not None:
            regex_seen = True
        elif m.path is None:
            prefix = m.path_prefix or "/"
            out[r.name] = f"{prefix}" if regex_seen else f"^~ {prefix}"
    return out


def _shadowed(route: Route, earlier: Iterable[Route]) -> Route | None:
    """An earlier prefix route that already takes every request of this prefix route."""
    m = route.match
    if m.path_regex is not None:
        return None
    for e in earlier:
        em = e.match
        if em.path is not None or em.path_regex is not None or em.methods or em.headers:
            continue
        prefix = em.path_prefix or "/"
        mine = m.path if m.path is not None else (m.path_prefix or "/")
        if mine.startswith(prefix):
            return e
    return None


def render(
    config: CutoverConfig,
    *,
    listen: str | None = None,
    prefix_paths: bool = True,
    worker_processes: str = "auto",
) -> Rendered:
    """The nginx.conf text for `config` and what could not be rendered faithfully.

    With `prefix_paths`, pid, logs and temp files live under nginx's prefix (`nginx -p DIR`),
    so the file runs anywhere; without it, nginx's compiled-in paths are used.
    """
    warn: list[str] = []
    canary = config.canary
    limits = config.limits
    host, port = config.listen
    listen = listen or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    head = [
        "# Generated by `cutover render nginx` from " + config.source + ".",
        "# Re-render instead of editing: the split must stay the same as cutover's.",
        f"worker_processes {worker_processes};",
    ]
    if prefix_paths:
        head += ["pid cutover-nginx.pid;", "error_log cutover-nginx-error.log warn;"]
    head += ["events { worker_connections 4096; }", ""]

    http = [
        "http {",
        "    access_log off;" if not prefix_paths else "    access_log cutover-nginx-access.log;",
        f"    client_max_body_size {limits.max_body};",
        f"    client_header_timeout {_seconds(limits.header_timeout)};",
        f"    large_client_header_buffers 4 {max(1024, limits.max_header_size + 2)};",
        f"    keepalive_timeout {_seconds(limits.keepalive_timeout)};",
        # cutover closes no connection after a number of requests; nginx's default of 1,000
        # would make a busy client (and, below, each upstream connection) reconnect often.
        f"    keepalive_requests {_KEEPALIVE_REQUESTS};",
        "    proxy_http_version 1.1;",
        "    proxy_buffering off;  # stream responses as cutover does",
        "    proxy_request_buffering off;",
        # Streamed bodies move in pieces of up to these sizes (nginx's defaults are a page or
        # two): fewer system calls per large body, as cutover's event loop reads. proxy_buffers
        # only serve a response whose backend asks for buffering (X-Accel-Buffering: yes); nginx
        # wants them larger than proxy_buffer_size.
        f"    proxy_buffer_size {_STREAM_BUFFER};",
        f"    proxy_buffers 4 {_STREAM_BUFFER};",
        f"    client_body_buffer_size {_STREAM_BUFFER};",
    ]
    if prefix_paths:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            http.append(f"    {kind}_temp_path cutover-nginx-{kind.replace('_', '-')};")
    rid = config.headers.request_id
    rid_var = "$http_" + rid.lower().replace("-", "_")
    http += [
        # as cutover: X-Forwarded-Proto/-Host a client already sent are kept; else this hop's
        # scheme and the Host header as received (none without one)
        "    map $http_x_forwarded_proto $cutover_forwarded_proto {",
        '        "" $scheme;',
        "        default $http_x_forwarded_proto;",
        "    }",
        "    map $http_x_forwarded_host $cutover_forwarded_host {",
        '        "" $http_host;',
        "        default $http_x_forwarded_host;",
        "    }",
        f"    map {rid_var} $cutover_request_id {{",
        '        "" $request_id;',
        f"        default {rid_var};",
        "    }",
    ]
    for net in config.headers.trusted_proxies:
        http.append(f"    set_real_ip_from {net};")
    if config.headers.trusted_proxies:
        http += ["    real_ip_header X-Forwarded-For;", "    real_ip_recursive on;"]
    if config.headers.backend:
        # The last address nginx tried is the one that answered.
        http.append("    map $upstream_addr $cutover_backend {")
        http.append('        default "";')
        for name, b in config.backends.items():
            if not _is_ip(b.host):
                warn.append(f"backend {name}: {config.headers.backend} needs an IP address here")
            http.append(f"        ~{_quote(re.escape(_server(b)) + '$')} {name};")
        http.append("    }")

    body: list[str] = []
    routes = list(config.routes)
    kept: list[Route] = []
    for route in routes:
        m = route.match
        if m.methods or m.headers:
            warn.append(f"route {route.name}: method/header matches cannot be a location; left out")
            continue
        earlier = _shadowed(route, kept)
        if earlier is not None:
            warn.append(f"route {route.name}: never reached (route {earlier.name} matches first)")
            continue
        if route.mirror is not None:
            warn.append(f"route {route.name}: mirror to {route.mirror.to} is not rendered")
        kept.append(route)
    prefixes = _prefix_locations(kept)

    for route in kept:
        name = _ident(route.name)
        order = [(b, w) for b, w in _order(route, canary) if w > 0]
        for backend, _ in order:
            backups = [f for f in route.fallback if f != backend]
            http.append(f"    upstream {_ident(route.name, backend)} {{")
            for member, backup in [(backend, False), *((f, True) for f in backups)]:
                b = config.backends[member]
                o = b.outlier
                fail = max(1, math.ceil(o.base_ejection))  # whole seconds only here
                flags = f" max_fails={o.consecutive_failures} fail_timeout={fail}s"
                http.append(f"        server {_server(b)}{flags}{' backup' if backup else ''};")
            pool = config.backends[backend].pool
            http += [
                "        keepalive 64;",
                f"        keepalive_requests {_KEEPALIVE_REQUESTS};",
                f"        keepalive_timeout {_seconds(pool.keepalive_timeout)};",
                "    }",
            ]
            if config.backends[backend].tls is not None:
                warn.append(f"backend {backend}: TLS files/SNI settings are not rendered")
        key = _sticky_key(route, name, http, warn)
        http.append(f"    split_clients {key} ${name}_target {{")
        for i, (backend, weight) in enumerate(order):
            b = config.backends[backend]
            target = f"{b.scheme}://{_ident(route.name, backend)}{b.base_path}"
            share = "*" if i == len(order) - 1 else f"{weight}%"
            http.append(f"        {share} {_quote(target)};")
        http.append("    }")
        bases = {config.backends[b].base_path for b, _ in order} | {
            config.backends[f].base_path for f in route.fallback
        }
        if len(bases) > 1 and route.fallback:
            warn.append(
                f"route {route.name}: backends have different base paths; a fallback keeps "
                "the first one's path"
            )
        location = _location(route) or prefixes[route.name]
        body.append(f"        location {location} {{")
        body.append(f"            proxy_pass ${name}_target$request_uri;")
        # Every proxy_set_header of a location, together: a location that sets any of them
        # inherits none from the http block.
        body += [
            '            proxy_set_header Connection "";  # keep-alive upstream',
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "            proxy_set_header X-Forwarded-Proto $cutover_forwarded_proto;",
            "            proxy_set_header X-Forwarded-Host $cutover_forwarded_host;",
        ]
        hosts = {config.backends[b].host_header for b, _ in order}
        host_header = hosts.pop() if len(hosts) == 1 else "backend"
        if host_header == "pass":
            body.append("            proxy_set_header Host $host;")
        elif host_header != "backend":
            body.append(f"            proxy_set_header Host {_quote(host_header)};")
        else:  # each backend's own host[:port], as cutover sends it
            http.append(f"    map ${name}_target ${name}_host {{")
            for backend, _ in order:
                b = config.backends[backend]
                target = f"{b.scheme}://{_ident(route.name, backend)}{b.base_path}"
                http.append(f"        {_quote(target)} {_quote(b.authority)};")
            http.append("    }")
            body.append(f"            proxy_set_header Host ${name}_host;")
        body.append(f"            proxy_set_header {rid} $cutover_request_id;")
        body.append(f"            add_header {rid} $cutover_request_id always;")
        if config.headers.backend:
            body.append(f"            add_header {config.headers.backend} $cutover_backend always;")
        if route.sticky is not None and route.sticky.kind == "cookie":
            body.append(f"            add_header Set-Cookie ${name}_set_cookie always;")
        t = route.timeouts
        per_try = t.per_try or t.total
        body += [
            f"            proxy_connect_timeout {_seconds(t.connect)};",
            f"            proxy_read_timeout {_seconds(per_try)};",
            f"            proxy_send_timeout {_seconds(per_try)};",
        ]
        if route.max_body is not None:
            body.append(f"            client_max_body_size {route.max_body};")
        body += [line.replace("        ", "            ", 1) for line in _next_upstream(route)]
        body.append("        }")

    covers_root = any(
        r.match.path is None and r.match.path_regex is None and (r.match.path_prefix or "/") == "/"
        for r in kept
    )
    server = ["    server {", f"        listen {listen};"]
    server += [
        "        location = /healthz {",
        "            default_type application/json;",
        '            return 200 \'{"status":"ok"}\';',
        "        }",
    ]
    server += body
    if not covers_root:
        server += [
            "        location / {",
            "            default_type application/json;",
            '            return 404 \'{"error":{"code":"no_route","message":"no route matches '
            "this request\"}}';",
            "        }",
        ]
    server += ["    }", "}", ""]
    return Rendered("\n".join(head + http + server), warn)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    render_ = sub.add_parser("render", help="render another proxy's config from a cutover config")
    kinds = render_.add_subparsers(dest="render_kind", required=True)
    n = kinds.add_parser("nginx", help="nginx.conf with the same split, stickiness and fallback")
    n.add_argument("-c", "--config", required=True, help="cutover YAML config")
    n.add_argument("-o", "--output", help="write here (default: stdout)")
    n.add_argument("--listen", help="nginx listen address (default: the config's listen)")
    n.add_argument(
        "--system-paths",
        action="store_true",
        help="use nginx's own pid/log/temp paths instead of paths under its prefix (-p)",
    )


def main(args: argparse.Namespace) -> int:
    from cutover.core.configkit import ConfigErrors, format_errors
    from cutover.proxy.config import load_config

    try:
        config = load_config(args.config)
    except ConfigErrors as errs:
        print(format_errors(errs), file=sys.stderr)
        return 2
    result = render(config, listen=args.listen, prefix_paths=not args.system_paths)
    for w in result.warnings:
        print(f"cutover render: warning: {w}", file=sys.stderr)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(result.text)
    else:
        sys.stdout.write(result.text)
    return 0
