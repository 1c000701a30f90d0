"""Per-key token bucket and the 429 it produces."""

from __future__ import annotations

from mailvet.api.ratelimit import RateLimiter

from .kit import make_settings, running_api


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_bursts_then_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(60, clock=clock)  # one token a second, burst of 60
    assert all(limiter.check("k") == 0.0 for _ in range(60))
    wait = limiter.check("k")
    assert 0.99 <= wait <= 1.0
    clock.now += 1.0
    assert limiter.check("k") == 0.0
    assert limiter.check("k") > 0
    assert limiter.check("other") == 0.0  # keys are independent


def test_wait_tells_without_taking() -> None:
    clock = Clock()
    limiter = RateLimiter(2, clock=clock)  # a token every 30 s, burst of 2
    assert limiter.wait("k") == 0.0  # never seen
    assert limiter.check("k") == 0.0
    assert [limiter.wait("k") for _ in range(5)] == [0.0] * 5  # asking takes nothing
    assert limiter.check("k") == 0.0
    assert 29.9 <= limiter.wait("k") <= 30.0
    clock.now += 30.0
    assert limiter.wait("k") == 0.0
    assert RateLimiter(0).wait("k") == 0.0


def test_disabled_and_retry_after() -> None:
    limiter = RateLimiter(0)
    assert not limiter.enabled
    assert all(limiter.check("k") == 0.0 for _ in range(1000))
    assert RateLimiter.retry_after(0.01) == "1"
    assert RateLimiter.retry_after(2.3) == "3"


def test_eviction_keeps_memory_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock=clock, max_keys=100)
    for i in range(1000):
        limiter.check(f"k{i}")
    assert len(limiter._buckets) <= 100


async def test_api_answers_429_with_retry_after() -> None:
    async with running_api(make_settings(rate_limit_per_minute=3)) as api:
        params = {"email": "a@deliverable.test"}
        for _ in range(3):
            r = await api.client.get("/v1/validate", params=params, headers=api.h())
            assert r.status_code == 200
        r = await api.client.get("/v1/validate", params=params, headers=api.h())
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json() == {"data": None, "error": "Too many requests."}
        # batch endpoints share the key's bucket
        r = await api.client.post("/v1/batch", json={"emails": ["a@b.test"]}, headers=api.h())
        assert r.status_code == 429
        # another key is not affected
        r = await api.client.get("/v1/validate", params=params, headers=api.h(api.other))
        assert r.status_code == 200
