"""Alert classification through any OpenAI-compatible server, with the rules as the fallback.

`Classifier.classify(alert)` answers from the cache (memory, then Redis under
`cutover:classification:<fingerprint>:<status>`; the originals' `classification:<fingerprint>` is
never written), else asks the LLM through the `openai` SDK (`AsyncOpenAI` with the configured
`base_url`, model and key) for structured output with a strict JSON schema. Each call is bounded
by a timeout; failed calls (timeout, connection, 429, 5xx) are retried a bounded number of times;
a circuit breaker stops calling a failing server for a while (with Redis, a breaker that opens
tells every worker and replica through `cutover:llm:breaker`, so N workers do not each spend
their own run of failures on a server that is down); a per-minute budget caps the calls (with
Redis, one budget for every worker and replica under `cutover:llm:budget`).
Any failure, a malformed answer or a confidence under `min_confidence` gives the rules' answer.
Every LLM call, and every answer the rules gave instead of a call (breaker open, over budget), is
reported to `audit` (model, latency, prompt digest, outcome, result).

Label and annotation values that look like secrets are replaced before the prompt is built
(`alerts.classify.build_prompt`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from cutover.alerts.classify import LLM_SCHEMA, build_prompt, classify_by_rules, parse_llm_answer
from cutover.alerts.config import ClassificationConfig, OpenAIConfig
from cutover.alerts.model import Alert, Classification
from cutover.core.breaker import CircuitBreaker
from cutover.core.buckets import RedisBucket
from cutover.core.clock import Clock

if TYPE_CHECKING:
    import openai

log = logging.getLogger("cutover.alerts")

REDIS_PREFIX = "cutover:classification:"
BUDGET_KEY = "cutover:llm:budget"  # the shared calls-per-minute token bucket
BREAKER_KEY = "cutover:llm:breaker"  # set while some worker's breaker is open (expires with it)
MEMORY_ENTRIES = 50_000
Outcome = Literal[
    "ok", "low_confidence", "malformed", "timeout", "error", "breaker_open", "over_budget"
]


@dataclass(frozen=True, slots=True)
class Result:
    classification: Classification
    cached: bool
    llm_outcome: Outcome | None  # None: no LLM involved (rules engine or a cache hit)
    processing_time: float  # seconds


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: float  # wall time
    fingerprint: str
    status: str
    model: str
    latency: float  # seconds, all attempts
    prompt_digest: str
    outcome: Outcome
    result: dict[str, object] | None  # the LLM's classification, when it gave a valid one
    error: str | None
    attempts: int


class CallBudget:
    """`per_minute` LLM calls a minute.

    With Redis (`redis`, a client): one token bucket under `key`, shared by every worker and
    replica, refilled at `per_minute / 60` a second and holding at most `per_minute`.
    Without Redis, or while it does not answer: this process's share, at most
    `per_minute // workers` calls (at least 1) in any 60 s, so the host's workers together stay
    within `per_minute`. `used` counts this process's calls in the last 60 s either way."""

    def __init__(
        self,
        per_minute: int,
        clock: Clock,
        *,
        workers: int = 1,
        redis: Any = None,
        key: str = BUDGET_KEY,
    ) -> None:
        self.per_minute = per_minute
        self.workers = max(1, workers)
        self.local_limit = max(1, per_minute // self.workers)
        self.clock = clock
        self.key = key
        self._calls: collections.deque[float] = collections.deque()
        self.redis: RedisBucket | None = None
        if redis is not None:
            self.redis = RedisBucket(
                redis,
                clock,
                log=log,
                down="LLM call budget: Redis unavailable (%s); each worker keeps to its share "
                "until it is back",
                back="LLM call budget: Redis is back; the budget is shared again",
            )

    @property
    def shared(self) -> bool:
        """True while the budget is the one shared through Redis."""
        return self.redis is not None and self.redis.available

    def _trim(self) -> float:
        now = self.clock.monotonic()
        while self._calls and now - self._calls[0] >= 60.0:
            self._calls.popleft()
        return now

    async def take(self) -> bool:
        """True: one call may be made now. Waits on Redis no longer than its socket timeout."""
        if self.redis is not None:
            wait = await self.redis.take(self.key, self.per_minute / 60.0, self.per_minute)
            if wait is not None:
                if wait > 0:
                    return False
                self._calls.append(self._trim())
                return True
        now = self._trim()
        if len(self._calls) >= self.local_limit:
            return False
        self._calls.append(now)
        return True

    @property
    def used(self) -> int:
        self._trim()
        return len(self._calls)

    def snapshot(self) -> dict[str, object]:
        return {
            "calls_per_minute": self.per_minute,
            "used": self.used,
            "shared": self.shared,
            "per_process_limit": None if self.shared else self.local_limit,
        }


class _Retryable(Exception):
    pass


class Classifier:
    """Rules, or the LLM with the rules as fallback; one per worker.

    `workers`: how many worker processes on this host share the call budget when Redis does not
    (`redis` is None or down); `budget_key`, `breaker_key`: the Redis keys of the shared budget
    and of the shared open breaker."""

    def __init__(
        self,
        config: ClassificationConfig,
        clock: Clock,
        *,
        redis: Any = None,
        audit: Callable[[AuditRecord], Awaitable[None]] | None = None,
        workers: int = 1,
        budget_key: str = BUDGET_KEY,
        breaker_key: str = BREAKER_KEY,
    ) -> None:
        self.config = config
        self.llm: OpenAIConfig | None = config.openai if config.engine == "openai" else None
        self.clock = clock
        self.redis = redis
        self.breaker_key = breaker_key
        self.audit = audit
        self._memory: collections.OrderedDict[str, tuple[float, Classification]] = (
            collections.OrderedDict()
        )
        self.client: openai.AsyncOpenAI | None = None
        self.breaker: CircuitBreaker | None = None
        self.budget: CallBudget | None = None
        if self.llm is not None:
            import openai  # only when it is asked: the SDK takes a second to import

            self.client = openai.AsyncOpenAI(
                base_url=self.llm.base_url,
                api_key=self.llm.api_key or "unused",
                timeout=self.llm.timeout,
                max_retries=0,  # retries are ours: bounded, and counted by the breaker
            )
            self.breaker = CircuitBreaker(self.llm.breaker.failures, self.llm.breaker.reset)
            self.budget = CallBudget(
                self.llm.calls_per_minute, clock, workers=workers, redis=redis, key=budget_key
            )
        self.stats: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self._redis_warned = False

    @property
    def model(self) -> str | None:
        return self.llm.model if self.llm is not None else None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    # -- cache -----------------------------------------------------------------------------

    @staticmethod
    def _key(alert: Alert) -> str:
        return f"{alert.fingerprint}:{alert.status}"

    def cached(self, alert: Alert) -> Classification | None:
        """The in-memory cached answer for this fingerprint and status (no I/O)."""
        if self.llm is None:
            return None
        entry = self._memory.get(self._key(alert))
        if entry is None:
            return None
        expires, classification = entry
        if self.clock.monotonic() >= expires:
            del self._memory[self._key(alert)]
            return None
        return dataclasses.replace(classification, cached=True)

    def _remember(self, alert: Alert, classification: Classification) -> None:
        assert self.llm is not None
        if self.llm.cache_ttl <= 0:
            return
        key = self._key(alert)
        self._memory[key] = (self.clock.monotonic() + self.llm.cache_ttl, classification)
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_ENTRIES:
            self._memory.popitem(last=False)

    async def _redis_get(self, alert: Alert) -> Classification | None:
        if self.redis is None:
            return None
        try:
            raw = await self.redis.get(REDIS_PREFIX + self._key(alert))
        except Exception as exc:  # Redis down: fail static, memory only
            self._redis_down(exc)
            return None
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            return Classification(
                severity=data["severity"],
                category=str(data["category"]),
                confidence=float(data["confidence"]),
                reasoning=str(data.get("reasoning") or ""),
                recommendations=tuple(data.get("recommendations") or ()),
                source=data.get("source") or "llm",
                model=data.get("model"),
                cached=True,
            )
        except (ValueError, KeyError, TypeError):
            return None

    async def _redis_put(self, alert: Alert, classification: Classification) -> None:
        assert self.llm is not None
        if self.redis is None or self.llm.cache_ttl <= 0:
            return
        try:
            await self.redis.set(
                REDIS_PREFIX + self._key(alert),
                orjson.dumps(classification.as_dict()),
                ex=max(1, int(self.llm.cache_ttl)),
            )
        except Exception as exc:
            self._redis_down(exc)

    async def _shared_open(self) -> bool:
        """Has another worker's breaker opened (and not yet reset)? False without Redis."""
        if self.redis is None:
            return False
        try:
            return bool(await self.redis.exists(self.breaker_key))
        except Exception as exc:  # Redis down: each worker's own breaker decides
            self._redis_down(exc)
            return False

    async def _share_breaker(self, opened: bool) -> None:
        """Tell every worker the breaker opened (for `reset` seconds) or closed again."""
        assert self.llm is not None
        if self.redis is None:
            return
        try:
            if opened:
                reset_ms = max(1, int(self.llm.breaker.reset * 1000))
                await self.redis.set(self.breaker_key, b"open", px=reset_ms)
            else:
                await self.redis.delete(self.breaker_key)
        except Exception as exc:
            self._redis_down(exc)

    def _redis_down(self, exc: Exception) -> None:
        self.stats["redis_errors"] += 1
        if not self._redis_warned:
            self._redis_warned = True
            log.warning(
                "classification: Redis unavailable (%s); cache in memory only, breaker per worker",
                type(exc).__name__,
            )

    # -- classify --------------------------------------------------------------------------

    def by_rules(self, alert: Alert) -> Classification:
        return classify_by_rules(alert, self.config.rules)

    async def classify(self, alert: Alert, *, force: bool = False) -> Result:
        """The classification of `alert` (never raises; the rules answer whatever happens)."""
        started = self.clock.monotonic()
        self.stats["total_requests"] += 1
        if self.llm is None:
            self.stats["rules"] += 1
            return Result(self.by_rules(alert), False, None, self.clock.monotonic() - started)
        if not force:
            hit = self.cached(alert)
            if hit is None:
                hit = await self._redis_get(alert)
                if hit is not None:
                    self._remember(alert, hit)
                    self.stats["redis_hits"] += 1
            if hit is not None:
                self.stats["cache_hits"] += 1
                return Result(hit, True, None, self.clock.monotonic() - started)
        classification, outcome = await self._ask(alert)
        if outcome in ("ok", "low_confidence"):
            self._remember(alert, classification)
            await self._redis_put(alert, classification)
        if outcome != "ok":
            self.stats["fallback_used"] += 1
            self.stats[f"fallback_{outcome}"] += 1
        return Result(classification, False, outcome, self.clock.monotonic() - started)

    async def _ask(self, alert: Alert) -> tuple[Classification, Outcome]:
        llm, breaker, budget, client = self.llm, self.breaker, self.budget, self.client
        assert llm is not None and breaker is not None and budget is not None and client
        rules = self.by_rules(alert)
        now = self.clock.monotonic
        if breaker.state(now()) == "closed" and await self._shared_open():
            self.stats["breaker_open_elsewhere"] += 1
            error = "the circuit breaker is open (another worker opened it)"
            return await self._not_asked(alert, rules, "breaker_open", error)
        if not breaker.allow(now()):
            error = f"the circuit breaker is open (for {breaker.open_for:g}s after failures)"
            return await self._not_asked(alert, rules, "breaker_open", error)
        if not await budget.take():
            breaker.abandon()
            error = f"over the budget of {llm.calls_per_minute} calls a minute"
            return await self._not_asked(alert, rules, "over_budget", error)
        prompt = build_prompt(alert, llm.secret_patterns)
        started = self.clock.monotonic()
        outcome: Outcome = "error"
        error: str | None = None
        answer: Classification | None = None
        attempts = 0
        import openai

        for attempt in range(llm.retries + 1):
            if attempt and not breaker.allow(now()):
                break
            attempts += 1
            self.stats["llm_requests"] += 1
            try:
                text = await self._call(prompt.messages)
            except TimeoutError:
                outcome, error = "timeout", f"no answer within {llm.timeout:g}s"
            except _Retryable as exc:
                outcome, error = "error", str(exc)
            except openai.APIStatusError as exc:  # 4xx other than 429: asking again won't help
                breaker.record(True, now())  # the server is up and answering
                outcome, error = "error", f"HTTP {exc.status_code}"
                self.stats["llm_failures"] += 1
                break
            except Exception as exc:
                outcome, error = "error", type(exc).__name__
                log.warning("LLM call failed: %s", type(exc).__name__)
            else:
                if breaker.state(now()) != "closed":
                    await self._share_breaker(False)  # the probe got through: tell the others
                breaker.record(True, now())
                parsed = parse_llm_answer(text, llm.model)
                if isinstance(parsed, str):
                    outcome, error = "malformed", parsed
                    self.stats["llm_malformed"] += 1
                elif parsed.confidence < llm.min_confidence:
                    outcome, answer = "low_confidence", parsed
                    error = f"confidence {parsed.confidence:g} < {llm.min_confidence:g}"
                    self.stats["llm_success"] += 1
                else:
                    outcome, answer = "ok", parsed
                    self.stats["llm_success"] += 1
                break
            was_open = breaker.opened_at
            breaker.record(False, now())
            if breaker.opened_at is not None and breaker.opened_at != was_open:
                await self._share_breaker(True)  # just opened (or a probe failed)
            self.stats["llm_failures"] += 1
            if attempt < llm.retries and llm.retry_backoff > 0:
                await asyncio.sleep(llm.retry_backoff * (2**attempt))
        latency = self.clock.monotonic() - started
        self.latencies.append(latency)
        await self._keep(alert, outcome, latency, prompt.digest, answer, error, attempts)
        if outcome == "ok" and answer is not None:
            return answer, outcome
        reason = f"rules (LLM {outcome}: {error})" if error else f"rules (LLM {outcome})"
        return _with_reason(rules, reason), outcome

    async def _not_asked(
        self, alert: Alert, rules: Classification, outcome: Outcome, error: str
    ) -> tuple[Classification, Outcome]:
        """No call made (breaker open, over budget): audited like a call (no prompt was sent:
        an empty digest, 0 attempts), and the rules' reasoning says why they answered."""
        await self._keep(alert, outcome, 0.0, "", None, error, 0)
        return _with_reason(rules, f"rules (LLM {outcome}: {error})"), outcome

    async def _keep(
        self,
        alert: Alert,
        outcome: Outcome,
        latency: float,
        digest: str,
        answer: Classification | None,
        error: str | None,
        attempts: int,
    ) -> None:
        """One row of the audit trail (`cutover_llm_audit`); never fails the classification."""
        if self.audit is None or self.llm is None:
            return
        record = AuditRecord(
            at=self.clock.now(),
            fingerprint=alert.fingerprint,
            status=alert.status,
            model=self.llm.model,
            latency=latency,
            prompt_digest=digest,
            outcome=outcome,
            result=answer.as_dict() if answer is not None else None,
            error=error,
            attempts=attempts,
        )
        try:
            await self.audit(record)
        except Exception:
            log.exception("could not keep the LLM audit record")

    async def _call(self, messages: tuple[dict[str, str], ...]) -> str | None:
        import openai

        llm, client = self.llm, self.client
        assert llm is not None and client is not None
        try:
            async with asyncio.timeout(llm.timeout):
                response = await client.chat.completions.create(
                    model=llm.model,
                    messages=list(messages),  # type: ignore[arg-type]
                    temperature=llm.temperature,
                    max_tokens=llm.max_tokens,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {
                            "name": "alert_classification",
                            "strict": True,
                            "schema": LLM_SCHEMA,
                        },
                    },
                    timeout=llm.timeout,
                )
        except openai.APITimeoutError as exc:
            raise TimeoutError from exc
        except openai.APIConnectionError as exc:
            raise _Retryable("connection failed") from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise _Retryable(f"HTTP {exc.status_code}") from exc
            raise
        choices = getattr(response, "choices", None)
        if not choices:
            return None
        return choices[0].message.content

    # -- reporting ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        s = self.stats
        total = s["total_requests"]
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 3)

        return {
            "engine": self.config.engine,
            "model": self.model,
            "total_requests": total,
            "cache_hits": s["cache_hits"],
            "cache_hit_rate": round(s["cache_hits"] / total, 4) if total else 0.0,
            "redis_cache_hits": s["redis_hits"],
            "llm_requests": s["llm_requests"],
            "llm_success": s["llm_success"],
            "llm_failures": s["llm_failures"],
            "llm_malformed": s["llm_malformed"],
            "fallback_used": s["fallback_used"],
            "fallback_rate": round(s["fallback_used"] / total, 4) if total else 0.0,
            "fallbacks": {
                k.removeprefix("fallback_"): v
                for k, v in sorted(s.items())
                if k.startswith("fallback_") and k != "fallback_used"
            },
            "rules_only": s["rules"],
            "llm_latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "samples": len(lat)},
            "breaker": (
                {
                    **self.breaker.snapshot(self.clock.monotonic()),
                    "shared": self.redis is not None,
                    "open_elsewhere_skips": s["breaker_open_elsewhere"],
                }
                if self.breaker is not None
                else None
            ),
            "budget": self.budget.snapshot() if self.budget is not None else None,
        }

    async def models(self) -> dict[str, object]:
        """The configured model, and what the server lists when it answers quickly."""
        if self.client is None or self.llm is None:
            return {"engine": "rules", "models": [], "default": None}
        listed: list[str] | None = None
        try:
            async with asyncio.timeout(min(self.llm.timeout, 3.0)):
                page = await self.client.models.list()
            listed = [m.id for m in page.data]
        except Exception as exc:
            log.info("model list unavailable: %s", type(exc).__name__)
        return {
            "engine": "openai",
            "default": self.llm.model,
            "models": [{"id": self.llm.model, "active": True}],
            "server_models": listed,
        }


def _with_reason(c: Classification, reason: str) -> Classification:
    return Classification(
        severity=c.severity,
        category=c.category,
        confidence=c.confidence,
        reasoning=f"{c.reasoning}; {reason}" if c.reasoning else reason,
        recommendations=c.recommendations,
        source=c.source,
        model=c.model,
    )
