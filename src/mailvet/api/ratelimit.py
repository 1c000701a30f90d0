"""Per-key rate limit: a token bucket in memory, keyed by API key id.

Each key may burst up to ``per_minute`` requests and refills at ``per_minute / 60``
tokens a second. In-memory means per process: behind a load balancer with N API
processes the effective limit is N times the setting (documented in docs/API.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``check(key)`` takes a token and returns 0.0, or the seconds to wait."""

    __slots__ = ("_buckets", "_capacity", "_clock", "_max_keys", "_rate")

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    @property
    def enabled(self) -> bool:
        return self._capacity > 0

    def check(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if allowed, else seconds until one is free."""
        if self._capacity <= 0:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            if key not in self._buckets and len(self._buckets) >= self._max_keys:
                self._evict(now)
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0.0: it has one now); takes nothing."""
        if self._capacity <= 0 or key not in self._buckets:
            return 0.0
        tokens, last = self._buckets[key]
        tokens = min(self._capacity, tokens + (self._clock() - last) * self._rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    @staticmethod
    def retry_after(wait: float) -> str:
        """The ``Retry-After`` header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))

    def _evict(self, now: float) -> None:
        """Forget buckets that have refilled completely (they are equivalent to new)."""
        full = [
            k
            for k, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self._rate >= self._capacity
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self._max_keys:  # still full: drop the oldest half
            for k in list(self._buckets)[: self._max_keys // 2]:
                del self._buckets[k]
