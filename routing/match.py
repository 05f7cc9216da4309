"""Route matching: the first route, in config order, whose every condition holds.

Conditions of one `Match` are ANDed; an empty `Match` matches everything.

- `path_prefix` is a plain string prefix, like an nginx prefix `location`: `/api` also matches
  `/apix` and `/api/v1`. Write `/api/` to match only below `/api/`.
- `path` is an exact match; `path_regex` is anchored at the start (`re.match`), not at the end.
- `path` is the request path without the query string.
- `methods`: the request method as sent; methods are case-sensitive (RFC 9110 §9.1).
- A header condition with `value` needs that exact value, with `regex` a `re.match` (anchored at
  the start) of the value, with neither just presence; `present=False` needs the header absent.
  Headers are read with `.get(lowercased name)`; a multi-valued header is judged by its first value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from cutover.core.config_model import HeaderMatch, Route

__all__ = ["HeaderLookup", "Router"]


class HeaderLookup(Protocol):
    """Anything with a case-insensitive `.get(name)`: aiohttp's CIMultiDictProxy, or a dict."""

    def get(self, key: str, /) -> Any: ...


class _Compiled:
    __slots__ = ("exact", "headers", "methods", "prefix", "regex", "route")

    def __init__(self, route: Route) -> None:
        m = route.match
        self.route = route
        self.prefix = m.path_prefix or None  # "" and "/"-less prefixes are taken as written
        self.exact = m.path
        self.regex = m.path_regex.match if m.path_regex is not None else None
        self.methods = frozenset(x.upper() for x in m.methods) if m.methods is not None else None
        self.headers: tuple[HeaderMatch, ...] = tuple(m.headers)


class Router:
    """Routes compiled once; `match` is a short linear scan in config order."""

    __slots__ = ("_compiled", "routes")

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self._compiled = tuple(_Compiled(r) for r in self.routes)

    def match(self, method: str, path: str, headers: HeaderLookup) -> Route | None:
        """The first route matching the request, or `None`."""
        for c in self._compiled:
            if c.prefix is not None and not path.startswith(c.prefix):
                continue
            if c.exact is not None and path != c.exact:
                continue
            if c.regex is not None and c.regex(path) is None:
                continue
            if c.methods is not None and method not in c.methods:
                continue
            if c.headers and not _headers_match(c.headers, headers):
                continue
            return c.route
        return None


def _headers_match(conditions: tuple[HeaderMatch, ...], headers: HeaderLookup) -> bool:
    for cond in conditions:
        value = headers.get(cond.name)
        if not cond.present:
            if value is not None:
                return False
            continue
        if value is None:
            return False
        if cond.value is not None and value != cond.value:
            return False
        if cond.regex is not None and cond.regex.match(value) is None:
            return False
    return True
