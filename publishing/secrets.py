"""Kubernetes secrets -> publishing targets, for the three layouts in use (spec digest §5.2).

- `kebab-case` (Python/Helm): one data key per field: `target-name`, `webhook-url`|`url`,
  `enabled`, `format`, `type`|`target-type`, `auth-header` | `api-key` | `token`,
  `header-<Name>`, `routing-key`, `channel`, `bot-token`, `timeout`, `rate-limit`.
- `snake_case` (Go infra): `name`, `type`, `url`, `enabled`, `format`, `headers` (`k=v,k=v`),
  `api_key` | `auth_token`, `routing_key`, `channel`, `bot_token`, `timeout`, `rate_limit`.
- `config` (Go TN-047): one key `config` (or `target.json`) holding JSON, raw or base64:
  `{name, type, url, enabled, format, headers{}, filter_config{}, routing_key, ...}`.

Pure: takes the secret's decoded data, returns a `TargetSpec` or an `InvalidTarget` naming
the field at fault. Values never appear in a reason.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from cutover.publishing.config import LAYOUTS, parse_rate_limit
from cutover.publishing.targets import (
    DEFAULT_RATE_LIMITS,
    DEFAULT_TIMEOUT,
    DEFAULT_URLS,
    SLACK_API_URL,
    InvalidTarget,
    TargetError,
    TargetSpec,
    check_header,
    check_name,
    check_type_format,
    check_url,
    complete,
)

# A format names its type when the secret gives no type (Python secrets carry only `format`).
_TYPE_OF_FORMAT = {
    "pagerduty": "pagerduty",
    "slack": "slack",
    "rootly": "rootly",
    "alertmanager": "webhook",
    "webhook": "webhook",
}
_CONFIG_KEYS = ("config", "target.json")
_SNAKE_MARKERS = frozenset({"api_key", "auth_token", "routing_key", "bot_token", "rate_limit"})
_KEBAB_MARKERS = frozenset({"target-name", "webhook-url", "auth-header", "api-key", "routing-key"})
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def decode_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """A secret's `data` (base64 values) as text; raises TargetError naming a bad key."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value or "", validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise TargetError(key, "base64-encoded UTF-8 text") from None
    return out


def layout_of(data: Mapping[str, str]) -> str:
    if any(k in data for k in _CONFIG_KEYS):
        return "config"
    keys = set(data)
    if keys & _KEBAB_MARKERS or any(k.startswith("header-") for k in keys):
        return "kebab-case"
    if keys & _SNAKE_MARKERS or "type" in keys or "name" in keys:
        return "snake_case"
    return "kebab-case"


def parse_secret(
    namespace: str,
    secret_name: str,
    data: Mapping[str, str] | None,
    *,
    string_data: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    layouts: tuple[str, ...] = LAYOUTS,
) -> TargetSpec | InvalidTarget:
    """One secret (data still base64, as the API gives it) -> a target or why not."""
    origin = f"{namespace}/{secret_name}"
    try:
        decoded = decode_data(data)
        decoded.update(string_data or {})
        layout = layout_of(decoded)
        if layout not in layouts:
            raise TargetError("", f"a secret in one of the layouts {', '.join(layouts)}")
        fields = _FIELDS[layout](decoded)
        return _build(fields, secret_name, origin, labels or {})
    except TargetError as exc:
        return InvalidTarget(secret_name, origin, exc.field, exc.expected)


# -- the three layouts to one field dict ----------------------------------------------------------


def _kebab(d: Mapping[str, str]) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for key, value in d.items():
        if key.startswith("header-"):
            headers[key[len("header-") :]] = value.strip()
    auth_field = None
    if "auth-header" in d:
        headers["Authorization"], auth_field = d["auth-header"].strip(), "auth-header"
    elif "api-key" in d:
        headers["Authorization"], auth_field = f"Bearer {d['api-key'].strip()}", "api-key"
    elif "token" in d:
        headers["Authorization"], auth_field = f"Token {d['token'].strip()}", "token"
    return {
        "name": d.get("target-name"),
        "type": d.get("type") or d.get("target-type"),
        "url": d.get("webhook-url") or d.get("url"),
        "url_field": "webhook-url" if "webhook-url" in d else "url",
        "enabled": d.get("enabled"),
        "format": d.get("format"),
        "headers": headers,
        "auth_field": auth_field,
        "routing_key": d.get("routing-key"),
        "channel": d.get("channel"),
        "bot_token": d.get("bot-token"),
        "timeout": d.get("timeout"),
        "rate_limit": d.get("rate-limit"),
        "names": {
            "routing_key": "routing-key",
            "bot_token": "bot-token",
            "rate_limit": "rate-limit",
        },
    }


def _snake(d: Mapping[str, str]) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for item in (d.get("headers") or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise TargetError("headers", "headers as name=value,name=value")
        headers[name.strip()] = value.strip()
    auth_field = None
    for key in ("api_key", "auth_token"):
        if key in d:
            headers["Authorization"], auth_field = f"Bearer {d[key].strip()}", key
            break
    if "type" not in d:
        raise TargetError("type", "the target type (pagerduty, slack, rootly or webhook)")
    return {
        "name": d.get("name"),
        "type": d.get("type"),
        "url": d.get("url"),
        "url_field": "url",
        "enabled": d.get("enabled"),
        "format": d.get("format"),
        "headers": headers,
        "auth_field": auth_field,
        "routing_key": d.get("routing_key"),
        "channel": d.get("channel"),
        "bot_token": d.get("bot_token"),
        "timeout": d.get("timeout"),
        "rate_limit": d.get("rate_limit"),
        "names": {},
    }


def _config(d: Mapping[str, str]) -> dict[str, Any]:
    key = next(k for k in _CONFIG_KEYS if k in d)
    raw = d[key].strip()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            doc = orjson.loads(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError):
            raise TargetError(key, "a JSON object (raw or base64)") from None
    if not isinstance(doc, dict):
        raise TargetError(key, "a JSON object")
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict):
        raise TargetError(f"{key}.headers", "an object of header name to value")
    enabled = doc.get("enabled")
    if enabled is None and not any(k in doc for k in ("headers", "filter_config")):
        enabled = True  # Go TN-047: absent means enabled
    for field in ("name", "type", "url", "format", "routing_key", "channel", "bot_token"):
        if doc.get(field) is not None and not isinstance(doc[field], str):
            raise TargetError(f"{key}.{field}", "a string")
    return {
        "name": doc.get("name"),
        "type": doc.get("type"),
        "url": doc.get("url"),
        "url_field": f"{key}.url",
        "enabled": enabled,
        "format": doc.get("format"),
        "headers": {str(k): v for k, v in headers.items()},
        "auth_field": None,
        "routing_key": doc.get("routing_key"),
        "channel": doc.get("channel"),
        "bot_token": doc.get("bot_token"),
        "timeout": doc.get("timeout"),
        "rate_limit": doc.get("rate_limit"),
        "names": {f: f"{key}.{f}" for f in ("name", "type", "format", "headers", "enabled")},
        "prefix": f"{key}.",
    }


_FIELDS = {"kebab-case": _kebab, "snake_case": _snake, "config": _config}


def _bool(value: object, field: str) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise TargetError(field, "true or false")


def _seconds(value: object, field: str) -> float:
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    text = str(value).strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    try:
        seconds = float(text) * scale
    except ValueError:
        raise TargetError(field, "a timeout such as 10s or 10") from None
    if not 0 < seconds <= 300:
        raise TargetError(field, "a timeout above 0 and at most 300 seconds")
    return seconds


def _build(
    f: dict[str, Any], secret_name: str, origin: str, labels: Mapping[str, str]
) -> TargetSpec:
    names: dict[str, str] = f["names"]
    prefix = f.get("prefix", "")

    def field(key: str) -> str:
        return names.get(key, prefix + key)

    name = (f["name"] or labels.get("alert-history.io/target-name") or secret_name).strip()
    check_name(name, field("name"))
    fmt = (f["format"] or labels.get("alert-history.io/format") or "").strip() or None
    ttype = (f["type"] or labels.get("alert-history.io/target-type") or "").strip()
    if not ttype:
        ttype = _TYPE_OF_FORMAT.get(fmt or "alertmanager", "")
        if not ttype:
            raise TargetError(field("format"), "alertmanager, webhook, pagerduty, slack or rootly")
    try:
        ttype, fmt = check_type_format(ttype, fmt)
    except TargetError as exc:
        raise TargetError(field(exc.field), exc.expected) from None
    url = (f["url"] or "").strip() or DEFAULT_URLS.get(ttype)
    if not url:
        raise TargetError(f["url_field"], "the target URL (this key is required)")
    url = check_url(url, f["url_field"])
    headers = []
    for hname, hvalue in f["headers"].items():
        where = f["auth_field"] if hname == "Authorization" and f["auth_field"] else None
        headers.append(check_header(hname, hvalue, where or f"header-{hname}"))
    routing_key = (f["routing_key"] or "").strip() or None
    token: str | None = None
    auth = dict(headers).get("Authorization")
    if ttype == "pagerduty" and routing_key is None:
        # Go publisher: a `routing_key` header, else Authorization without "Bearer ".
        routing_key = dict(headers).get("routing_key") or (auth.split(" ", 1)[-1] if auth else None)
        headers = [(k, v) for k, v in headers if k not in ("routing_key", "Authorization")]
    if ttype == "rootly" and auth:
        token = auth.split(" ", 1)[-1]
        headers = [(k, v) for k, v in headers if k != "Authorization"]
    try:
        rate = (
            parse_rate_limit(f["rate_limit"], ttype)
            if f["rate_limit"] not in (None, "")
            else DEFAULT_RATE_LIMITS[ttype]
        )
    except ValueError as exc:
        raise TargetError(field("rate_limit"), str(exc)) from None
    spec = TargetSpec(
        name=name,
        type=ttype,
        url=url,
        format=fmt,
        enabled=_bool(f["enabled"], field("enabled")),
        headers=tuple(headers),
        routing_key=routing_key,
        token=token,
        bot_token=(f["bot_token"] or "").strip() or None,
        channel=(f["channel"] or "").strip() or None,
        api_url=SLACK_API_URL,
        rate_limit=rate,
        timeout=_seconds(f["timeout"], field("timeout")),
        source="kubernetes",
        origin=origin,
    )
    try:
        return complete(spec)
    except TargetError as exc:
        raise TargetError(field(exc.field), exc.expected) from None
