"""Token buckets: one per process (`TokenBucket`), and one in Redis shared by every worker and
replica that names the same key (`RedisBucket`).

`TokenBucket` is pure: every method takes `now` (monotonic seconds). Without Redis each worker
process gets an equal share of a rate (`share`), so N workers together stay within it.

The bucket (hash `tokens`, `ts`) is taken from atomically by a Lua script on the Redis clock, so
N processes together stay within one rate. An optional hold key (its TTL is the time left) holds
everything back while present. `RedisBucket.take` answers the seconds to wait (0: a token was
taken), or None when Redis did not answer: the caller falls back to its own per-process limit.
After a failure Redis is left alone for `retry_after` seconds (on the caller's clock), and no
call waits on it for longer than the client's socket timeout.

Used by publishing (`publishing.shared_flow`, per target) and the LLM classifier's call budget.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from cutover.core.clock import Clock


class Rate(Protocol):
    """`rate` tokens a second, at most `burst` saved up (e.g. a publishing target's limit)."""

    @property
    def rate(self) -> float: ...

    @property
    def burst(self) -> int: ...


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `pause` holds everything back."""

    __slots__ = ("burst", "paused_until", "rate", "tokens", "updated")

    def __init__(self, limit: Rate | None, now: float, *, share: int = 1) -> None:
        if limit is None:
            self.rate = 0.0  # unlimited
            self.burst = 0.0
        else:
            self.rate = limit.rate / max(1, share)
            self.burst = max(1.0, limit.burst / max(1, share))
        self.tokens = self.burst
        self.updated = now
        self.paused_until = 0.0

    def _refill(self, now: float) -> None:
        if self.rate and now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0: now)."""
        if now < self.paused_until:
            return self.paused_until - now
        if not self.rate:
            return 0.0
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def available(self, now: float) -> float:
        """Tokens there now (inf without a rate limit, 0 while paused)."""
        if now < self.paused_until:
            return 0.0
        if not self.rate:
            return float("inf")
        self._refill(now)
        return self.tokens

    def take(self, now: float) -> bool:
        if self.wait(now) > 0:
            return False
        if self.rate:
            self.tokens -= 1
        return True

    def pause(self, until: float) -> None:
        """The target said 429: nothing goes out before `until`."""
        self.paused_until = max(self.paused_until, until)


RETRY_AFTER_DOWN = 5.0  # seconds before Redis is tried again after a failure

# KEYS: bucket[, hold]. ARGV: rate (tokens/s, 0 = unlimited), burst.
# Returns the seconds to wait as a string ("0": go now, a token was taken).
TAKE = """
if #KEYS > 1 then
  local hold = redis.call('PTTL', KEYS[2])
  if hold > 0 then return tostring(hold / 1000) end
end
local rate = tonumber(ARGV[1])
if rate <= 0 then return '0' end
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
local wait = '0'
if tokens >= 1 then tokens = tokens - 1 else wait = tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class RedisBucket:
    """Token buckets in Redis through `client`, and whether Redis answered lately.

    `down` and `back` are logged when Redis stops and starts answering."""

    def __init__(
        self,
        client: Any,
        clock: Clock,
        *,
        log: logging.Logger,
        down: str,
        back: str,
        retry_after: float = RETRY_AFTER_DOWN,
    ) -> None:
        from redis import exceptions

        self.client = client
        self.clock = clock
        self.errors: tuple[type[BaseException], ...] = (exceptions.RedisError, OSError)
        self._take = client.register_script(TAKE)
        self._log = log
        self._down_message = down
        self._back_message = back
        self.retry_after = retry_after
        self._down_until = 0.0
        self.available = True

    def failed(self, exc: BaseException) -> None:
        if self.available:
            self._log.warning(self._down_message, type(exc).__name__)
        self.available = False
        self._down_until = self.clock.monotonic() + self.retry_after

    def skip(self) -> bool:
        """True while Redis failed lately: don't ask it yet."""
        return not self.available and self.clock.monotonic() < self._down_until

    def answered(self) -> None:
        if not self.available:
            self._log.info(self._back_message)
        self.available = True

    async def take(
        self, key: str, rate: float, burst: int, hold: str | None = None
    ) -> float | None:
        """Seconds to wait before going (0: a token was taken); None: no answer from Redis."""
        if self.skip():
            return None
        try:
            wait = await self._take(
                keys=[key] if hold is None else [key, hold],
                args=[repr(float(rate)), str(int(burst))],
            )
        except self.errors as exc:
            self.failed(exc)
            return None
        self.answered()
        return float(wait.decode() if isinstance(wait, bytes) else wait)
