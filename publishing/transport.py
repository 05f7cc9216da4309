"""One POST to a target and what its answer means for delivery (done, retry, give up).

    2xx                     done
    429                     retry, after Retry-After when given (flow control, not a fault)
    408, 5xx, no answer     retry with backoff
    other 4xx               give up: dead-letter with the reason

Formatters build payloads; senders (one per target type) call `post_json` with the one shared
`aiohttp.ClientSession` and hand back a `SendOutcome`.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from cutover.core.clock import Clock

USER_AGENT = "cutover-publisher/1"
_BODY_KEPT = 500  # characters of a target's answer kept for the API and the DLQ
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    status: int | None  # HTTP status; None when no answer came
    retry: bool = False  # a failure worth trying again
    retry_after: float | None = None  # seconds the target asked us to wait
    error: str = ""
    body: str = ""  # the start of the target's answer
    throttled: bool = False  # 429: slow down, the target is fine
    data: Any = None  # the parsed JSON answer, when there was one

    @classmethod
    def done(cls, status: int | None = None, note: str = "", data: Any = None) -> SendOutcome:
        return cls(True, status, error=note, data=data)


@dataclass(frozen=True, slots=True)
class SendContext:
    """What a sender may use: the shared session, the clock, the reference store."""

    session: aiohttp.ClientSession
    clock: Clock
    get_ref: Callable[[str], Awaitable[str | None]]  # fingerprint -> remembered id
    put_ref: Callable[[str, str], Awaitable[None]]
    drop_ref: Callable[[str], Awaitable[None]]


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER)


def judge(status: int, body: str, retry_after: float | None, data: Any = None) -> SendOutcome:
    """The delivery verdict for an HTTP answer."""
    if 200 <= status < 300:
        return SendOutcome(True, status, body=body, data=data)
    if status == 429:
        return SendOutcome(
            False,
            status,
            retry=True,
            retry_after=retry_after,
            error="429 rate limited",
            body=body,
            throttled=True,
        )
    if status == 408 or status >= 500:
        return SendOutcome(
            False, status, retry=True, retry_after=retry_after, error=f"HTTP {status}", body=body
        )
    return SendOutcome(False, status, retry=False, error=f"HTTP {status} (not retried)", body=body)


async def post_json(
    ctx: SendContext,
    url: str,
    body: object,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    method: str = "POST",
    content_type: str = "application/json",
) -> SendOutcome:
    """Send `body` as JSON; network trouble is a retryable SendOutcome, never an exception."""
    sent = {"Content-Type": content_type, "User-Agent": USER_AGENT, **(headers or {})}
    try:
        async with ctx.session.request(
            method,
            url,
            data=orjson.dumps(body),
            headers=sent,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            raw = await resp.content.read(64 * 1024)
            text = raw.decode("utf-8", "replace")
            data = None
            if raw[:1] in (b"{", b"["):
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    data = None
            wait = retry_after_seconds(resp.headers.get("Retry-After"), ctx.clock.now())
            return judge(resp.status, text[:_BODY_KEPT], wait, data)
    except TimeoutError:
        return SendOutcome(False, None, retry=True, error=f"timed out after {timeout:g}s")
    except aiohttp.ClientConnectorError as exc:
        return SendOutcome(
            False, None, retry=True, error=f"connect failed ({exc.os_error.strerror})"
        )
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
        return SendOutcome(False, None, retry=True, error=f"network error ({type(exc).__name__})")
