"""The API's bounded caches, and the result cache's key with the real syntax stage."""

from __future__ import annotations

from mailvet.api.cache import TTLCache, cache_key
from mailvet.engine.pipeline import Engine
from mailvet.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_count_bound_and_expiry() -> None:
    clock = Clock()
    cache: TTLCache[int] = TTLCache(3, clock=clock)
    for i in range(5):
        cache.set(str(i), i, ttl=10)
    assert len(cache) <= 3 and cache.get("4") == 4
    clock.now = 11
    assert cache.get("4") is None


def test_cost_bound_evicts_oldest_first() -> None:
    cache: TTLCache[str] = TTLCache(100, cost=len, max_cost=10)
    cache.set("a", "xxxx", ttl=10)
    cache.set("b", "xxxx", ttl=10)
    cache.set("c", "xxxx", ttl=10)  # 12 > 10: "a" goes
    assert cache.get("a") is None and cache.get("b") == "xxxx" and cache.get("c") == "xxxx"
    assert cache.total_cost == 8
    cache.set("huge", "x" * 11, ttl=10)  # over the whole budget: not kept, nothing evicted
    assert cache.get("huge") is None and cache.total_cost == 8
    cache.set("b", "xx", ttl=10)  # replacing an entry replaces its cost
    assert cache.total_cost == 6


def test_expired_entries_give_their_cost_back() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(100, clock=clock, cost=len, max_cost=100)
    cache.set("a", "x" * 40, ttl=1)
    clock.now = 2
    assert cache.get("a") is None and cache.total_cost == 0


def test_cache_key_follows_the_real_syntax_stage() -> None:
    engine = Engine(Settings())

    def key(raw: str) -> str:
        return cache_key(raw, engine.check_offline(raw))

    assert key("Jane@Example.COM") == key("Jane@example.com")
    assert key("jane@example.com ") != key("jane@example.com")  # rejected, never trimmed
    assert key("Jane@example.com") != key("jane@example.com")  # local parts keep case
