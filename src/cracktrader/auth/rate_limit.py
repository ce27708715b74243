"""Request rate limits per API key or user: a token bucket per key, refilled continuously."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["RateLimit", "RateLimiter"]


class RateLimit(Protocol):
    """What the request path needs of a rate limiter, wherever its counters live (this process, Redis, PostgreSQL)."""

    per_minute: int

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        ...

    async def take(self, key: str) -> int:
        """Spend one request of `key`'s allowance: 0 when allowed, else whole seconds until one is."""
        ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`per_minute` requests a minute per key, in bursts of up to `per_minute`; 0 turns the limit off."""

    def __init__(
        self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.per_minute > 0

    async def take(self, key: str) -> int:
        """`hit` for the shared interface: never suspends, so the one-process path stays as cheap as before."""
        return self.hit(key)

    def hit(self, key: str) -> int:
        """Take one request from `key`'s bucket: 0 when allowed, else whole seconds until one is allowed."""
        if not self.enabled:
            return 0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        else:
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - bucket.tokens) / self._rate))

    def _forget_full(self, now: float) -> None:
        """Drop keys whose bucket has refilled (they carry no state); all of them if none has."""
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self._rate >= self.per_minute]
        for key in full or list(self._buckets):
            del self._buckets[key]
