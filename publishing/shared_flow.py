"""Per-target flow control shared by every worker and replica through Redis (when configured).

Two keys per target, under `cutover:publishing:`:

- `rate:<target>`: a token bucket (hash `tokens`, `ts`) taken from atomically by a Lua script on
  the Redis clock (`core.buckets`), so N replicas together stay within the target's rate;
- `hold:<target>`: present while the target must not be sent to (a 429's Retry-After, or a
  circuit breaker that opened somewhere); its TTL is the time left.

Redis unavailable: every call answers None and the engine falls back to its own per-process
bucket (the target's rate split among the host's workers) and breaker; it tries Redis again
after a short pause. Nothing waits on Redis for longer than its socket timeout.
"""

from __future__ import annotations

import logging

from cutover.core.buckets import RETRY_AFTER_DOWN, RedisBucket
from cutover.core.clock import Clock
from cutover.publishing.targets import RateLimit

log = logging.getLogger("cutover.publishing")

PREFIX = "cutover:publishing:"
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

        self.prefix = prefix
        self.clock = clock
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._bucket = RedisBucket(
            self._redis,
            clock,
            log=log,
            down="publishing: Redis unavailable (%s); rate limits and breakers are per process "
            "until it is back",
            back="publishing: Redis is back; rate limits and breakers are shared again",
            retry_after=RETRY_AFTER_DOWN,
        )
        self._hold = self._redis.register_script(_HOLD)

    @property
    def available(self) -> bool:
        return self._bucket.available

    async def take(self, target: str, limit: RateLimit | None) -> float | None:
        """Seconds to wait before sending to `target` (0: a token was taken); None: no Redis."""
        rate, burst = (limit.rate, limit.burst) if limit else (0.0, 1)
        return await self._bucket.take(
            f"{self.prefix}rate:{target}", rate, burst, hold=f"{self.prefix}hold:{target}"
        )

    async def hold(self, target: str, seconds: float) -> None:
        """Nobody sends to `target` for `seconds` (a 429, or its breaker opened)."""
        if self._bucket.skip() or seconds <= 0:
            return
        try:
            await self._hold(keys=[f"{self.prefix}hold:{target}"], args=[int(seconds * 1000)])
        except self._bucket.errors as exc:
            self._bucket.failed(exc)

    async def close(self) -> None:
        await self._redis.aclose()
