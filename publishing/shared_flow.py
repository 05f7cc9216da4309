"""Per-target flow control shared by every worker and replica through Redis (when configured).

Two keys per target, under `cutover:publishing:`:

- `rate:<target>`: a token bucket (hash `tokens`, `ts`) taken from atomically by a Lua script on
  the Redis clock, so N replicas together stay within the target's rate;
- `hold:<target>`: present while the target must not be sent to (a 429's Retry-After, or a
  circuit breaker that opened somewhere); its TTL is the time left.

Redis unavailable: every call answers None and the engine falls back to its own per-process
bucket (the target's rate split among the host's workers) and breaker; it tries Redis again
after a short pause. Nothing waits on Redis for longer than its socket timeout.
"""

from __future__ import annotations

import logging

from proxy.clock import Clock
from publishing.targets import RateLimit

log = logging.getLogger("cutover.publishing")

PREFIX = "cutover:publishing:"
RETRY_AFTER_DOWN = 5.0  # seconds before Redis is tried again after a failure

# KEYS: bucket, hold. ARGV: rate (tokens/s, 0 = unlimited), burst.
# Returns the seconds to wait as a string ("0": go now, a token was taken).
_TAKE = """
local hold = redis.call('PTTL', KEYS[2])
if hold > 0 then return tostring(hold / 1000) end
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

# KEYS: hold. ARGV: milliseconds. Extends the hold, never shortens it.
_HOLD = """
local left = redis.call('PTTL', KEYS[1])
local want = tonumber(ARGV[1])
if left < want then redis.call('SET', KEYS[1], '1', 'PX', want) end
return 1
"""


class SharedFlow:
    def __init__(self, url: str, clock: Clock, prefix: str = PREFIX) -> None:
        import redis.asyncio as aioredis
        from redis import exceptions

        self.prefix = prefix
        self.clock = clock
        self._errors: tuple[type[BaseException], ...] = (exceptions.RedisError, OSError)
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._take = self._redis.register_script(_TAKE)
        self._hold = self._redis.register_script(_HOLD)
        self._down_until = 0.0
        self.available = True

    def _failed(self, exc: BaseException) -> None:
        if self.available:
            log.warning(
                "publishing: Redis unavailable (%s); rate limits and breakers are per process "
                "until it is back",
                type(exc).__name__,
            )
        self.available = False
        self._down_until = self.clock.monotonic() + RETRY_AFTER_DOWN

    def _skip(self) -> bool:
        return not self.available and self.clock.monotonic() < self._down_until

    async def take(self, target: str, limit: RateLimit | None) -> float | None:
        """Seconds to wait before sending to `target` (0: a token was taken); None: no Redis."""
        if self._skip():
            return None
        rate, burst = (limit.rate, limit.burst) if limit else (0.0, 1)
        try:
            wait = await self._take(
                keys=[f"{self.prefix}rate:{target}", f"{self.prefix}hold:{target}"],
                args=[repr(float(rate)), str(int(burst))],
            )
        except self._errors as exc:
            self._failed(exc)
            return None
        if not self.available:
            log.info("publishing: Redis is back; rate limits and breakers are shared again")
        self.available = True
        return float(wait.decode() if isinstance(wait, bytes) else wait)

    async def hold(self, target: str, seconds: float) -> None:
        """Nobody sends to `target` for `seconds` (a 429, or its breaker opened)."""
        if self._skip() or seconds <= 0:
            return
        try:
            await self._hold(keys=[f"{self.prefix}hold:{target}"], args=[int(seconds * 1000)])
        except self._errors as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self._redis.aclose()
