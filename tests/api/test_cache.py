"""The API's bounded caches, the result cache's key with the real syntax stage, what an
entry is counted at, and the single flight of identical validations."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import pytest

from mailvet.api.cache import CachedResult, SingleFlight, TTLCache, cache_key, result_cost
from mailvet.engine.facts import (
    DnsFacts,
    DnsOutcome,
    Facts,
    ListFacts,
    MxHost,
    SmtpFacts,
    SmtpOutcome,
    SyntaxFacts,
    TranscriptEntry,
)
from mailvet.engine.pipeline import Engine
from mailvet.settings import Settings
from mailvet.verdict import Reason, Result, Verdict


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


# --- what an entry is counted at ---

REPLY_TEXTS = {
    "ascii": "550 5.1.1 The email account that you tried to reach does not exist ",
    "cyrillic": "550 5.1.1 Адресат не найден, почтовый ящик не существует ",
    "cjk": "550 5.1.1 メールボックスが見つかりません。宛先を確認してください ",
    "emoji": "550 5.1.1 📫🚫 no such mailbox 📪 ",
}


def entry_for(i: int, text: str) -> CachedResult:
    """A result as the API caches it: an internationalised address whose mail server
    answered in ``text``, with a transcript of 20 long replies (every string built
    here, none shared with another entry)."""
    reply = (text * 20)[:500]
    local = f"ünï{i}"
    domain = f"例え{i}.テスト"
    email = f"{local}@{domain}"
    mx = f"mx{i}.{domain}"
    facts = Facts(
        syntax=SyntaxFacts(
            ok=True,
            email=email,
            local=local,
            domain=domain,
            ascii_domain=f"xn--r8jz45g{i}.xn--zckzah",
            smtputf8=True,
        ),
        lists=ListFacts(),
        dns=DnsFacts(DnsOutcome.OK, (MxHost(10, mx, (f"192.0.2.{i % 250}",)),)),
        smtp=SmtpFacts(
            SmtpOutcome.USER_UNKNOWN, mx_host=mx, code=550, enhanced="5.1.1", message=reply[:300]
        ),
        offline=False,
        transcript=[TranscriptEntry(j + 0.25, "recv", f"{j} {reply}", mx) for j in range(20)],
    )
    verdict = Verdict.make(
        email=email,
        username=local,
        domain=domain,
        mx_record=mx,
        score=10,
        isv_format=True,
        result=Result.UNDELIVERABLE,
        reason=Reason.REJECTED_EMAIL,
    )
    return CachedResult(verdict.as_dict(), facts, f"key-{i}")


@pytest.mark.parametrize("script", list(REPLY_TEXTS))
def test_an_entry_is_counted_at_the_memory_it_holds(script: str) -> None:
    # tracemalloc is the oracle: the bytes CPython allocated for the entries. The old
    # count (characters + a constant) undercounted 4-byte-per-character text about 3.5x.
    count = 200
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = [entry_for(i, REPLY_TEXTS[script]) for i in range(count)]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = sum(result_cost(e) for e in entries)
    assert 0.8 * held <= counted <= 1.5 * held, (script, counted / held)


def test_the_result_cache_byte_bound_holds_for_non_ascii_entries() -> None:
    # 1 MB of budget: the entries kept must really hold no more than that
    entries = [entry_for(i, REPLY_TEXTS["emoji"]) for i in range(100)]
    cache: TTLCache[CachedResult] = TTLCache(10_000, cost=result_cost, max_cost=1_000_000)
    for i, entry in enumerate(entries):
        cache.set(str(i), entry, ttl=60)
    kept = [e for i, e in enumerate(entries) if cache.get(str(i)) is not None]
    assert kept and cache.total_cost <= 1_000_000
    one_text = sum(len(t.text.encode("utf-32-le")) for t in kept[0].facts.transcript)
    assert len(kept) * one_text <= 1_000_000  # the transcripts alone fit the budget


# --- single flight ---


async def test_single_flight_shares_one_task_per_key_until_it_ends() -> None:
    flights: SingleFlight[str] = SingleFlight(10)
    gate = asyncio.Event()
    started: list[str] = []

    async def work(tag: str) -> str:
        started.append(tag)
        await gate.wait()
        return tag

    first, own_first = flights.join("k", lambda: work("first"))
    second, own_second = flights.join("k", lambda: work("second"))
    other, own_other = flights.join("other", lambda: work("other"))
    assert (own_first, own_second, own_other) == (True, False, True)
    assert second is first and other is not first
    gate.set()
    assert await asyncio.shield(first) == "first"
    await other
    assert started == ["first", "other"]
    assert len(flights) == 0  # forgotten once done: the next join starts afresh
    again, own_again = flights.join("k", lambda: work("again"))
    assert own_again and await again == "again"


async def test_single_flight_survives_a_waiter_that_is_cancelled() -> None:
    flights: SingleFlight[int] = SingleFlight(10)
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 7

    async def wait() -> int:  # as a request does
        task, _ = flights.join("k", work)
        return await asyncio.shield(task)

    leader = asyncio.create_task(wait())
    follower = asyncio.create_task(wait())
    await asyncio.sleep(0)
    leader.cancel()
    gate.set()
    assert await follower == 7
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_single_flight_errors_reach_every_waiter_and_are_never_left_unretrieved() -> None:
    flights: SingleFlight[int] = SingleFlight(10)
    gate = asyncio.Event()
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))

    async def broken() -> int:
        await gate.wait()
        raise RuntimeError("boom")

    try:
        task, _ = flights.join("k", broken)
        waiters = [asyncio.shield(flights.join("k", broken)[0]) for _ in range(3)]
        gate.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert len(flights) == 0
        # nobody waits for this one: its error must still count as retrieved
        orphan, _ = flights.join("lonely", broken)
        await asyncio.sleep(0)
        del orphan, task, waiters
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        assert unretrieved == []
    finally:
        loop.set_exception_handler(None)


async def test_single_flight_is_bounded_and_close_cancels_what_runs() -> None:
    flights: SingleFlight[None] = SingleFlight(1)
    gate = asyncio.Event()

    async def work() -> None:
        await gate.wait()

    a, _ = flights.join("a", work)
    b1, own1 = flights.join("b", work)
    b2, own2 = flights.join("b", work)
    assert own1 and own2 and b1 is not b2  # past the bound: unshared, never unbounded
    assert len(flights) == 1
    await flights.close()
    assert a.cancelled() and b1.cancelled() and b2.cancelled()
    assert len(flights) == 0
