"""The per-MX scheduler (mailvet.jobs.scheduler) against a scripted fake SMTP session.

The fake stands for ``engine.smtp.SmtpSession``: per-address answers, a session that
ends after N recipients (Postfix's error limit, a 421), refused connections, and
counters (sessions opened, open at once, RCPTs per address). The integration tests
(tests/integration/test_scheduler.py) run the same scheduler on the simulated internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailvet.engine.facts import DnsFacts, DnsOutcome, MxHost, SmtpFacts, SmtpOutcome
from mailvet.engine.pipeline import Engine
from mailvet.engine.providers import provider_for
from mailvet.engine.smtp import Pace, SessionEnded, SessionRefused
from mailvet.jobs.limits import Backoff, InProcessLimiter, LaneBusy, LaneLimits
from mailvet.jobs.plan import LaneWork, Route
from mailvet.jobs.scheduler import Scheduler, about_us, is_greylisting
from mailvet.settings import Settings
from mailvet.verdict import Verdict

HOST = "mx.fake.test"
ACCEPT = SmtpFacts(SmtpOutcome.ACCEPTED, mx_host=HOST, code=250, enhanced="2.1.5", message="Ok")
UNKNOWN = SmtpFacts(
    SmtpOutcome.USER_UNKNOWN, mx_host=HOST, code=550, enhanced="5.1.1", message="User unknown"
)
GREY = SmtpFacts(
    SmtpOutcome.TEMPORARY,
    mx_host=HOST,
    code=450,
    enhanced="4.7.1",
    message="Recipient address rejected: Greylisted, try again in 30 seconds",
)
BUSY = SmtpFacts(
    SmtpOutcome.TEMPORARY, mx_host=HOST, code=451, enhanced="4.3.0", message="Mailbox busy"
)
SPAMHAUS = SmtpFacts(
    SmtpOutcome.BLOCKED,
    mx_host=HOST,
    code=554,
    enhanced="5.7.1",
    message="Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
)
YANDEX = SmtpFacts(
    SmtpOutcome.BLOCKED, mx_host=HOST, code=550, enhanced="5.7.1", message="No such user!"
)
DROPPED = SmtpFacts(
    SmtpOutcome.TEMPORARY, mx_host=HOST, code=421, enhanced="4.7.0", message="Too many errors"
)
NO_CONNECT = SmtpFacts(SmtpOutcome.NO_CONNECT, mx_host=HOST, message="connection refused")


class FakeMx:
    """Scripted answers and counters for one fake MX host."""

    def __init__(
        self,
        answers: dict[str, SmtpFacts] | None = None,
        *,
        default: SmtpFacts = ACCEPT,
        end_after: int | None = None,
        refuse: int = 0,
        catch_all: bool | None = False,
    ) -> None:
        self.answers = answers or {}
        self.default = default
        self.end_after = end_after  # the session ends after this many RCPTs
        self.refuse = refuse  # the first opens are refused
        self.catch_all_value = catch_all
        self.opened = 0
        self.open_now = 0
        self.peak = 0
        self.asked: Counter[str] = Counter()
        self.catch_all_asked: list[str] = []
        self.catch_all_cache: dict[str, bool] = {}  # as SmtpStage's
        self.poison: set[str] = set()  # addresses on which the session drops unanswered
        self.answer_fn: Callable[[str], SmtpFacts] | None = None
        self.dead_hosts: set[str] = set()  # connections to these are refused
        self.dialled: list[tuple[str, str]] = []
        self.paced = 0  # RCPTs the scheduler's limiter was asked for
        self.drop_on_catch_all = False  # the random RCPT is one error too many

    async def open(self, host: str, ip: str) -> FakeSession:
        await asyncio.sleep(0)
        self.dialled.append((host, ip))
        if host in self.dead_hosts:
            raise SessionRefused(NO_CONNECT)
        if self.refuse:
            self.refuse -= 1
            raise SessionRefused(NO_CONNECT)
        self.opened += 1
        self.open_now += 1
        self.peak = max(self.peak, self.open_now)
        return FakeSession(self)


class FakeSession:
    def __init__(self, mx: FakeMx) -> None:
        self.mx = mx
        self.rcpts = 0
        self.closed = False
        self.dead: SmtpFacts | None = None

    async def rcpt_many(
        self, addresses: Sequence[str], *, pace: Pace | None = None
    ) -> list[SmtpFacts]:
        await asyncio.sleep(0)
        if self.dead is not None:
            raise SessionEnded(self.dead)
        if pace is not None:
            await pace(len(addresses))
            self.mx.paced += len(addresses)
        out: list[SmtpFacts] = []
        for address in addresses:
            limit = self.mx.end_after
            if address in self.mx.poison or (limit is not None and self.rcpts >= limit):
                self.dead = DROPPED
                raise SessionEnded(DROPPED, len(out), out)
            self.rcpts += 1
            self.mx.asked[address] += 1
            if self.mx.answer_fn is not None:
                out.append(self.mx.answer_fn(address))
            else:
                out.append(self.mx.answers.get(address, self.mx.default))
        return out

    async def catch_all(self, domain: str) -> bool | None:
        if self.dead is not None:
            raise SessionEnded(self.dead)
        if self.mx.drop_on_catch_all:
            self.dead = DROPPED
            raise SessionEnded(DROPPED)
        self.mx.catch_all_asked.append(domain)
        if self.mx.catch_all_value is not None:
            self.mx.catch_all_cache[domain] = self.mx.catch_all_value
        return self.mx.catch_all_value

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.mx.open_now -= 1


class Results:
    def __init__(self) -> None:
        self.final: dict[str, dict[str, Any]] = {}
        self.retries: dict[str, datetime] = {}
        self.done = asyncio.Event()
        self.expected = 0

    def on_final(self, work: LaneWork, verdict: Verdict) -> None:
        assert work.key not in self.final, "an address got two verdicts"
        assert verdict.email == work.facts.syntax.email
        self.final[work.key] = verdict.as_dict()
        self._check()

    def on_retry(self, work: LaneWork, at: datetime) -> None:
        self.retries[work.key] = at
        self._check()

    def _check(self) -> None:
        if len(self.final) + len(self.retries) >= self.expected:
            self.done.set()

    def outcome(self, key: str) -> tuple[str, str]:
        v = self.final[key]
        return v["result"], v["reason"]


SETTINGS = Settings(allowed_special_domains=["test"], greylist_schedule=[60, 300, 900])
ENGINE = Engine(SETTINGS)
NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def works(addresses: Sequence[str], **fields: Any) -> list[LaneWork]:
    out = []
    for address in addresses:
        facts = ENGINE.check_offline(address)
        facts.offline = False
        facts.dns = DnsFacts(DnsOutcome.OK, (MxHost(10, HOST, ("127.0.0.1",)),))
        domain = address.rsplit("@", 1)[1]
        out.append(LaneWork("b1", address, address, domain, facts, **fields))
    return out


def route(
    sessions: int = 2, per_session: int = 10, per_second: float = 1000.0, host: str = HOST
) -> Route:
    return Route(host, ("127.0.0.1",), None, LaneLimits(sessions, per_session, per_second, 10_000))


def scheduler(mx: FakeMx, results: Results, **kwargs: Any) -> Scheduler:
    kwargs.setdefault("backoff", Backoff(base=0.001, cap=0.01))
    kwargs.setdefault("catch_all_cached", mx.catch_all_cache.get)
    return Scheduler(
        mx.open,
        kwargs.pop("settings", SETTINGS),
        on_final=results.on_final,
        on_retry=results.on_retry,
        now=lambda: NOW,
        **kwargs,
    )


async def run(
    mx: FakeMx, items: list[LaneWork], r: Route | None = None, **kwargs: Any
) -> tuple[Results, Scheduler]:
    results = Results()
    results.expected = len(items)
    s = scheduler(mx, results, **kwargs)
    s.submit(r or route(), items)
    await asyncio.wait_for(results.done.wait(), 10)
    await asyncio.sleep(0.01)
    await s.stop()
    return results, s


# --- the happy path -----------------------------------------------------------------


async def test_one_session_checks_many_recipients() -> None:
    addresses = [f"u{i}@a.test" for i in range(95)] + ["nobody@b.test"]
    mx = FakeMx({"nobody@b.test": UNKNOWN})
    results, s = await run(mx, works(addresses), route(sessions=2, per_session=50))
    assert len(results.final) == 96 and not results.retries
    assert results.outcome("u0@a.test") == ("deliverable", "accepted_email")
    assert results.outcome("nobody@b.test") == ("undeliverable", "rejected_email")
    assert mx.opened <= 3  # 96 addresses at 50 a session (the size may grow)
    assert mx.peak <= 2
    assert set(mx.asked.values()) == {1}
    assert mx.paced == 96  # every RCPT took a token
    assert s.queued == 0 and s.lanes == 0


async def test_catch_all_is_asked_once_per_domain_and_decides_the_verdict() -> None:
    mx = FakeMx(catch_all=True)
    results, _ = await run(mx, works([f"u{i}@a.test" for i in range(30)]), route(sessions=1))
    assert mx.catch_all_asked == ["a.test"]
    assert {results.outcome(k) for k in results.final} == {("risky", "catch_all")}


async def test_the_catch_all_cache_saves_the_random_rcpt() -> None:
    mx = FakeMx(catch_all=True)
    results, _ = await run(mx, works(["u@a.test", "v@b.test"]), catch_all_cached=lambda d: False)
    assert mx.catch_all_asked == []
    assert results.outcome("u@a.test") == ("deliverable", "accepted_email")
    assert results.final["u@a.test"]["isv_nocatchall"] is True


async def test_session_caps_hold_under_load() -> None:
    mx = FakeMx()
    results, _ = await run(mx, works([f"u{i}@a.test" for i in range(200)]), route(3, 5))
    assert len(results.final) == 200
    assert mx.peak == 3
    assert mx.opened >= 200 // 40  # sessions are short (5, growing by half): many


async def test_an_unreliable_provider_is_unverifiable_unless_unknowns_are_refused() -> None:
    yahoo = provider_for(["mta5.am0.yahoodns.net"])
    assert yahoo is not None
    r = Route("mta5.am0.yahoodns.net", ("127.0.0.1",), yahoo, LaneLimits(1, 10, 1000.0, 100))
    results, _ = await run(FakeMx(catch_all=None), works(["u@a.test"]), r)
    assert results.outcome("u@a.test") == ("unknown", "unverifiable")
    results, _ = await run(FakeMx(catch_all=False), works(["u@a.test"]), r)
    assert results.outcome("u@a.test") == ("deliverable", "accepted_email")


# --- sessions that end ---------------------------------------------------------------


async def test_a_server_that_ends_sessions_still_gets_every_address() -> None:
    mx = FakeMx({f"u{i}@a.test": UNKNOWN for i in range(0, 60, 3)}, end_after=7)
    addresses = [f"u{i}@a.test" for i in range(60)]
    results, _ = await run(mx, works(addresses), route(sessions=1, per_session=50))
    assert len(results.final) == 60
    for i, address in enumerate(addresses):
        expected = "undeliverable" if i % 3 == 0 else "deliverable"
        assert results.final[address]["result"] == expected, address
    assert set(mx.asked.values()) == {1}  # none asked twice: partial answers kept
    assert mx.opened >= 60 // 7


async def test_session_size_halves_on_an_early_end() -> None:
    mx = FakeMx(end_after=12)
    results = Results()
    results.expected = 200
    s = scheduler(mx, results)
    s.submit(route(sessions=1, per_session=40), works([f"u{i}@a.test" for i in range(200)]))
    sizes: set[int] = set()
    while not results.done.is_set():
        size = s.lane_size(HOST)
        if size is not None:
            sizes.add(size)
        await asyncio.sleep(0)
    await s.stop()
    assert 40 in sizes and 12 in sizes  # 40 ends at 12 answered: min(40 // 2, 12)
    assert max(sizes) == 40


async def test_a_session_ended_by_the_catch_all_check_keeps_the_answers() -> None:
    mx = FakeMx()
    mx.drop_on_catch_all = True
    addresses = [f"u{i}@d{i}.test" for i in range(6)]  # a catch-all check for each
    results, _ = await run(mx, works(addresses), route(sessions=1, per_session=2))
    assert all(results.outcome(a) == ("deliverable", "accepted_email") for a in addresses)
    assert all(results.final[a]["isv_nocatchall"] is None for a in addresses)
    assert set(mx.asked.values()) == {1}  # every answer kept, nobody asked again
    # an end like any other: one address and its catch-all check a session (the check
    # counts against the session's size of 2)
    assert mx.opened == 6


async def test_an_address_that_keeps_ending_sessions_is_unknown_not_undeliverable() -> None:
    mx = FakeMx()
    mx.poison = {"bad@a.test"}
    addresses = ["u1@a.test", "bad@a.test", "u2@a.test", "u3@a.test"]
    results, _ = await run(mx, works(addresses), route(sessions=1), max_ends=3)
    assert results.outcome("bad@a.test") == ("unknown", "unavailable_smtp")
    assert all(
        results.outcome(a) == ("deliverable", "accepted_email")
        for a in addresses
        if a != "bad@a.test"
    )


# --- greylisting and other temporary refusals --------------------------------------


async def test_greylisting_is_retried_after_the_delay_the_server_gives() -> None:
    mx = FakeMx({"g@a.test": GREY})
    results, _ = await run(mx, works(["g@a.test", "ok@a.test"]))
    assert results.retries == {"g@a.test": NOW + timedelta(seconds=30)}
    assert results.outcome("ok@a.test") == ("deliverable", "accepted_email")


async def test_without_a_delay_in_the_reply_the_schedule_is_followed() -> None:
    quiet = SmtpFacts(
        SmtpOutcome.TEMPORARY, mx_host=HOST, code=450, enhanced="4.2.0", message="Greylisted"
    )
    for attempts, delay in [(0, 60), (1, 300), (2, 900)]:
        mx = FakeMx({"g@a.test": quiet})
        results, _ = await run(mx, works(["g@a.test"], attempts=attempts, first_try_at=NOW))
        assert results.retries == {"g@a.test": NOW + timedelta(seconds=delay)}


async def test_greylisting_past_its_retries_or_max_wait_is_unknown_greylisted() -> None:
    mx = FakeMx({"g@a.test": GREY})
    results, _ = await run(mx, works(["g@a.test"], attempts=3, first_try_at=NOW))
    assert results.outcome("g@a.test") == ("unknown", "greylisted")
    late = NOW - timedelta(seconds=SETTINGS.greylist_max_wait - 10)  # 30 s more is too late
    results, _ = await run(mx, works(["g@a.test"], attempts=1, first_try_at=late))
    assert results.outcome("g@a.test") == ("unknown", "greylisted")
    assert not results.retries


async def test_other_4xx_are_retried_then_unavailable() -> None:
    mx = FakeMx({"b@a.test": BUSY})
    results, _ = await run(mx, works(["b@a.test"]))
    assert results.retries == {"b@a.test": NOW + timedelta(seconds=60)}
    results, _ = await run(mx, works(["b@a.test"], attempts=3))
    assert results.outcome("b@a.test") == ("unknown", "unavailable_smtp")


async def test_a_burst_of_4xx_slows_the_lane() -> None:
    mx = FakeMx(default=BUSY)
    limiter = InProcessLimiter()
    results, _ = await run(
        mx,
        works([f"u{i}@a.test" for i in range(12)]),
        route(sessions=1),
        limiter=limiter,
        backoff=Backoff(base=0.05, cap=0.05),
    )
    assert len(results.retries) == 12
    assert limiter.paused_until(HOST) > float("-inf")  # the lane was paused
    assert mx.opened >= 2  # the burst ended the first session


# --- back-off --------------------------------------------------------------------


async def test_a_block_naming_us_pauses_the_lane_and_the_address_is_asked_again() -> None:
    blocked = {"n": 2}

    def answer(address: str) -> SmtpFacts:
        if blocked["n"]:
            blocked["n"] -= 1
            return SPAMHAUS
        return ACCEPT

    mx = FakeMx()
    mx.answer_fn = answer
    limiter = InProcessLimiter()
    results, _ = await run(mx, works(["u@a.test"]), limiter=limiter)
    assert results.outcome("u@a.test") == ("deliverable", "accepted_email")
    assert mx.asked["u@a.test"] == 3
    assert limiter.paused_until(HOST) > float("-inf")


async def test_a_lane_that_keeps_failing_gives_unknown_with_the_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailvet")
    mx = FakeMx(default=SPAMHAUS)
    addresses = [f"u{i}@a.test" for i in range(5)]
    results, _ = await run(mx, works(addresses), max_lane_failures=4)
    for address in addresses:
        assert results.outcome(address) == ("unknown", "unavailable_smtp")
    assert mx.opened == 4
    messages = [r.getMessage() for r in caplog.records]
    assert sum("backs off" in m for m in messages) == 3
    assert any("gave up after 4 failures" in m for m in messages)
    assert not any("@" in m for m in messages)  # never an address in the log


async def test_a_per_address_policy_refusal_is_final_without_back_off() -> None:
    mx = FakeMx({"y@a.test": YANDEX})
    limiter = InProcessLimiter()
    results, _ = await run(mx, works(["y@a.test", "z@a.test"]), limiter=limiter)
    assert results.outcome("y@a.test") == ("unknown", "unavailable_smtp")
    assert limiter.paused_until(HOST) == float("-inf")
    assert mx.asked["y@a.test"] == 1


async def test_refused_connections_back_off_then_succeed() -> None:
    mx = FakeMx(refuse=3)
    limiter = InProcessLimiter()
    results, _ = await run(mx, works(["u@a.test", "v@a.test"]), limiter=limiter)
    assert results.outcome("u@a.test") == ("deliverable", "accepted_email")
    assert limiter.paused_until(HOST) > float("-inf")


async def test_a_dead_primary_mx_falls_back_to_the_next_one() -> None:
    mx = FakeMx()
    mx.dead_hosts = {HOST}
    r = Route(
        HOST,
        ("127.0.0.1",),
        None,
        LaneLimits(1, 10, 1000.0, 100),
        (("mx2.fake.test", "127.0.0.2"),),
    )
    results, _ = await run(mx, works(["u@a.test"]), r)
    assert results.outcome("u@a.test") == ("deliverable", "accepted_email")
    assert mx.dialled == [(HOST, "127.0.0.1"), ("mx2.fake.test", "127.0.0.2")]


class NoWaitLimiter(InProcessLimiter):
    """Like a cluster worker's ``PgLimiter(wait=False)``: a paused lane raises LaneBusy."""

    @contextlib.asynccontextmanager
    async def session(self, lane: str, limits: LaneLimits) -> AsyncIterator[None]:
        left = self.paused_until(lane) - self._clock()
        if left > 0:
            raise LaneBusy(lane, left)
        async with super().session(lane, limits):
            yield


async def test_a_lane_backing_off_hands_its_work_back_with_its_state() -> None:
    """With a limiter that does not wait, a lane that backs off (here for 15-30 s) gives
    its addresses to ``on_wait`` at once, with its failures and which MX address to dial
    next; a scheduler given that state resumes there (the second MX, the third failure
    is the last)."""
    mx = FakeMx()
    mx.dead_hosts = {HOST}
    r = Route(
        HOST,
        ("127.0.0.1",),
        None,
        LaneLimits(1, 10, 1000.0, 100),
        (("mx2.fake.test", "127.0.0.2"),),
    )
    items = works(["u@a.test", "v@a.test"])
    waits: list[tuple[str, datetime, dict[str, int]]] = []
    results = Results()
    results.expected = len(items)

    def on_wait(work: LaneWork, at: datetime, state: dict[str, int]) -> None:
        waits.append((work.key, at, state))
        if len(waits) == len(items):
            results.done.set()

    s = scheduler(mx, results, limiter=NoWaitLimiter(), backoff=Backoff(base=30.0, cap=30.0))
    s.on_wait = on_wait
    s.submit(r, items)
    await asyncio.wait_for(results.done.wait(), 10)  # not the 15-30 s back-off
    await s.stop()
    assert [k for k, _, _ in waits] == ["u@a.test", "v@a.test"] and not results.final
    assert all(
        NOW + timedelta(seconds=15) <= at <= NOW + timedelta(seconds=31) for _, at, _ in waits
    )
    assert all(state == {"failures": 1, "turn": 1} for _, _, state in waits)
    assert s.queued == 0

    resumed = Results()
    resumed.expected = len(items)
    again = scheduler(mx, resumed, limiter=NoWaitLimiter())
    again.on_wait = on_wait
    again.submit(r, works(["u@a.test", "v@a.test"]), failures=1, turn=1)
    await asyncio.wait_for(resumed.done.wait(), 10)
    await again.stop()
    assert resumed.outcome("u@a.test") == ("deliverable", "accepted_email")
    assert mx.dialled[-1] == ("mx2.fake.test", "127.0.0.2") and len(mx.dialled) == 2

    given_up = Results()
    given_up.expected = 1
    last = scheduler(FakeMx(refuse=1000), given_up, limiter=NoWaitLimiter(), max_lane_failures=3)
    last.on_wait = on_wait
    last.submit(route(), works(["w@a.test"]), failures=2)
    await asyncio.wait_for(given_up.done.wait(), 10)
    await last.stop()
    assert given_up.outcome("w@a.test") == ("unknown", "no_connect")


async def test_a_host_that_never_answers_ends_as_no_connect() -> None:
    mx = FakeMx(refuse=1000)
    results, _ = await run(mx, works(["u@a.test", "v@a.test"]), max_lane_failures=3)
    assert results.outcome("u@a.test") == ("unknown", "no_connect")
    assert results.outcome("v@a.test") == ("unknown", "no_connect")


async def test_a_failing_result_callback_costs_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mx = FakeMx()
    results = Results()
    results.expected = 9  # the first final is lost in the callback
    calls = 0

    def on_final(work: LaneWork, verdict: Verdict) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("sink bug")
        results.on_final(work, verdict)

    s = Scheduler(mx.open, SETTINGS, on_final=on_final, on_retry=results.on_retry, now=lambda: NOW)
    # ten addresses and a.test's catch-all check: one session
    s.submit(route(sessions=1, per_session=11), works([f"u{i}@a.test" for i in range(10)]))
    await asyncio.wait_for(results.done.wait(), 10)
    await s.stop()
    assert len(results.final) == 9 and mx.opened == 1
    assert any("on_final failed" in r.getMessage() for r in caplog.records)


async def test_two_batches_on_one_mx_share_its_lane() -> None:
    mx = FakeMx()
    results = Results()
    results.expected = 40
    s = scheduler(mx, results)
    first = works([f"a{i}@a.test" for i in range(20)])
    second = [LaneWork("b2", w.key.replace("a", "b", 1), w.rcpt, w.domain, w.facts) for w in first]
    s.submit(route(sessions=1, per_session=100), first)
    s.submit(route(sessions=1, per_session=100), second)
    assert s.lanes == 1
    await asyncio.wait_for(results.done.wait(), 10)
    await s.stop()
    assert mx.peak == 1


async def test_batches_on_one_lane_take_turns_and_a_dropped_batch_is_not_asked() -> None:
    mx = FakeMx()
    order: list[str] = []

    def answer(address: str) -> SmtpFacts:
        order.append(address)
        return ACCEPT

    mx.answer_fn = answer
    results = Results()
    results.expected = 13
    s = scheduler(mx, results)
    big = works([f"big{i}@a.test" for i in range(10)])
    small = [
        LaneWork("b2", w.key, w.rcpt, w.domain, w.facts)
        for w in works([f"small{i}@a.test" for i in range(3)])
    ]
    gone = [
        LaneWork("b3", w.key, w.rcpt, w.domain, w.facts)
        for w in works([f"gone{i}@a.test" for i in range(4)])
    ]
    s.submit(route(sessions=1), big)
    s.submit(route(sessions=1), small)
    s.submit(route(sessions=1), gone)
    assert s.drop("b3") == 4 and s.queued == 13
    await asyncio.wait_for(results.done.wait(), 10)
    await s.stop()
    assert not any(a.startswith("gone") for a in order)
    assert max(order.index(f"small{i}@a.test") for i in range(3)) < 6  # in turn, not last


# --- reading replies ----------------------------------------------------------------


def test_what_counts_as_greylisting_and_as_a_block_of_us() -> None:
    assert is_greylisting(GREY) and not is_greylisting(BUSY)
    assert about_us(SPAMHAUS) and not about_us(YANDEX)
    unusual = SmtpFacts(
        SmtpOutcome.TEMPORARY, code=450, enhanced="4.7.1", message="unusual rate of mail"
    )
    assert about_us(unusual) and not about_us(BUSY)
    assert not about_us(UNKNOWN)
