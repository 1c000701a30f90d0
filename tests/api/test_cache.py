"""The API's bounded caches, the result cache's key with the real syntax stage, and what
an entry is counted at."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from mailvet.api.cache import CachedResult, TTLCache, cache_key, result_cost
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
