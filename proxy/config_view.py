"""A config as JSON for `GET /admin/config`, with every secret redacted."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"
_SECRET_WORDS = frozenset(
    {"token", "tokens", "password", "passwd", "secret", "secrets", "authorization", "cookie"}
)


def is_secret(name: str) -> bool:
    """Whether a key names a secret: token, password, secret, authorization, or `*_key`."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    return bool(words) and (words[-1] == "key" or any(w in _SECRET_WORDS for w in words))


def _redact_url(text: str) -> str:
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:<redacted>@", text)


def to_json(value: Any, key: str = "") -> Any:
    """Plain JSON data for a config value (dataclasses, mappings, regexes, networks...)."""
    if key and is_secret(key) and value is not None:
        return REDACTED
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name), f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_json(v, str(k)) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(to_json(v) for v in value)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, str):
        return _redact_url(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


FEATURE_SECTIONS = ("canary", "compat", "alerts", "publishing", "parity")


def config_json(config: Any) -> dict[str, Any]:
    """`GET /admin/config`: the gateway's keys, then the feature sections present, under
    `sections` (the shape this endpoint has always had)."""
    data = to_json(config)
    sections = {name: data.pop(name) for name in FEATURE_SECTIONS}
    data["sections"] = {name: value for name, value in sections.items() if value is not None}
    return data
