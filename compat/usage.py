"""Legacy-usage accounting: who calls which rule, how often, first and last seen. Pure.

A caller is identified by a configured header (an API key, say), kept only as a hash, or
else by its User-Agent and client IP. `UsageBuffer` aggregates calls in memory between two
writes to the store, bounded in size: past `max_keys` distinct (rule, caller) pairs, further new
callers are counted under one `overflow` caller rather than growing the buffer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["OVERFLOW", "Caller", "UsageBuffer", "UsageDelta", "caller_of", "hash_key"]

CallerKind = Literal["key", "client", "overflow"]
MAX_AGENT = 200  # characters of User-Agent kept


@dataclass(frozen=True, slots=True)
class Caller:
    id: str  # "key:<16 hex>" or "client:<16 hex>"; the store's key
    kind: CallerKind
    user_agent: str  # as last seen (trimmed)
    client_ip: str


OVERFLOW = Caller("overflow", "overflow", "", "")


def hash_key(value: str) -> str:
    """How an API key is kept: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def caller_of(key: str | None, user_agent: str | None, client_ip: str) -> Caller:
    """The caller of one request: by `key` (the configured header) when present, else by
    User-Agent and client IP."""
    agent = (user_agent or "")[:MAX_AGENT]
    if key:
        return Caller(f"key:{hash_key(key)}", "key", agent, client_ip)
    digest = hashlib.sha256(f"{agent}\x00{client_ip}".encode("utf-8", "surrogateescape"))
    return Caller(f"client:{digest.hexdigest()[:16]}", "client", agent, client_ip)


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Calls of one rule by one caller since the last write."""

    rule: str
    caller: Caller
    count: int
    first_seen: float
    last_seen: float

    def plus(self, other: UsageDelta) -> UsageDelta:
        newer = other if other.last_seen >= self.last_seen else self
        return UsageDelta(
            self.rule,
            newer.caller,
            self.count + other.count,
            min(self.first_seen, other.first_seen),
            max(self.last_seen, other.last_seen),
        )


class UsageBuffer:
    """Calls aggregated per (rule, caller) until `drain`."""

    __slots__ = ("_items", "max_keys", "overflowed")

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._items: dict[tuple[str, str], UsageDelta] = {}
        self.overflowed = 0  # calls counted under OVERFLOW since start

    def __len__(self) -> int:
        return len(self._items)

    def record(self, rule: str, caller: Caller, now: float) -> None:
        key = (rule, caller.id)
        current = self._items.get(key)
        if current is None and len(self._items) >= self.max_keys:
            self.overflowed += 1
            caller = OVERFLOW
            key = (rule, caller.id)
            current = self._items.get(key)
            if current is None and len(self._items) >= self.max_keys + 64:
                return  # even the overflow slots are full (more rules than slots): drop
        if current is None:
            self._items[key] = UsageDelta(rule, caller, 1, now, now)
        else:
            self._items[key] = UsageDelta(
                rule,
                caller if now >= current.last_seen else current.caller,
                current.count + 1,
                min(current.first_seen, now),
                max(current.last_seen, now),
            )

    def drain(self) -> list[UsageDelta]:
        """Everything recorded so far; the buffer is empty afterwards."""
        items = list(self._items.values())
        self._items = {}
        return items

    def restore(self, deltas: list[UsageDelta]) -> None:
        """Put back deltas a failed write could not store (merged with newer calls)."""
        for delta in deltas:
            key = (delta.rule, delta.caller.id)
            current = self._items.get(key)
            self._items[key] = delta if current is None else delta.plus(current)

    def pending(self, also: Iterable[UsageDelta] = ()) -> list[UsageDelta]:
        """What is not stored yet: the buffer, merged with `also` (deltas a write holds)."""
        items = dict(self._items)
        for delta in also:
            key = (delta.rule, delta.caller.id)
            current = items.get(key)
            items[key] = delta if current is None else delta.plus(current)
        return list(items.values())
