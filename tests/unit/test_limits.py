"""Per-MX lane limits (mailvet.jobs.limits): limits_for, InProcessLimiter, Backoff.

The limiter runs on a fake clock (``FakeTime``): sleeping tasks wake in time order and
the clock jumps to each wake-up, so caps are checked exactly and without waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable
from typing import Any

import pytest

from mailvet.engine.providers import Provider, ProviderLimits, _limits, provider_for
from mailvet.jobs import limits as limits_module
from mailvet.jobs.limits import Backoff, InProcessLimiter, LaneLimits, limits_for, rcpt_burst
from mailvet.settings import Settings


class FakeTime:
    """A virtual clock: ``sleep`` parks the task until the driver moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def run(self, *aws: Awaitable[Any]) -> list[Any]:
        """Run ``aws`` to completion, advancing the clock whenever all of them wait."""
        tasks = [asyncio.ensure_future(a) for a in aws]
        while not all(t.done() for t in tasks):
            for _ in range(50):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if all(t.done() for t in tasks):
                break
            if not self._sleepers:
                continue  # waiting on an event another task will set
            at, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            if not future.cancelled():
                future.set_result(None)
        return [t.result() for t in tasks]


def lane(
    sessions: int = 2, per_session: int = 50, per_second: float = 10.0, connects: int = 30
) -> LaneLimits:
    return LaneLimits(sessions, per_session, per_second, connects)


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- limits_for ---------------------------------------------------------------------


def test_limits_for_an_unknown_mx_are_the_settings() -> None:
    s = Settings(
        mx_max_sessions=3,
        mx_rcpt_per_session=40,
        mx_rcpt_per_second=7.5,
        mx_connects_per_minute=12,
    )
    assert limits_for(None, s) == LaneLimits(3, 40, 7.5, 12)
    assert limits_for(Provider("zoho", False), s) == LaneLimits(3, 40, 7.5, 12)


def test_limits_for_a_provider_use_its_row_capped_by_the_settings() -> None:
    gmail = provider_for(["aspmx.l.google.com"])
    assert gmail is not None and gmail.limits is not None
    own = gmail.limits
    roomy = Settings(
        mx_max_sessions=100,
        mx_rcpt_per_session=1000,
        mx_rcpt_per_second=1000.0,
        mx_connects_per_minute=1000,
    )
    assert limits_for(gmail, roomy) == LaneLimits(
        own.max_sessions or 0,
        own.rcpt_per_session or 0,
        own.rcpt_per_second or 0.0,
        own.connects_per_minute or 0,
    )
    tight = Settings(
        mx_max_sessions=1,
        mx_rcpt_per_session=3,
        mx_rcpt_per_second=0.5,
        mx_connects_per_minute=2,
    )
    assert limits_for(gmail, tight) == LaneLimits(1, 3, 0.5, 2)


def test_a_partial_limits_row_falls_back_to_the_settings() -> None:
    p = Provider("x", False, ProviderLimits(rcpt_per_second=2.0))
    assert limits_for(p, Settings()) == LaneLimits(2, 50, 2.0, 30)


@pytest.mark.parametrize("name", ["gmail", "microsoft365", "outlook", "yahoo", "aol", "icloud"])
def test_big_providers_have_limits_below_the_defaults(name: str) -> None:
    from mailvet.engine.providers import _table

    rows = {p.name: p for p in _table().values()}
    own = rows[name].limits
    assert own is not None
    got = limits_for(rows[name], Settings())
    assert got.rcpt_per_second <= Settings().mx_rcpt_per_second
    assert got.rcpt_per_second == own.rcpt_per_second


@pytest.mark.parametrize(
    "raw",
    [
        {"max_sessions": 0},
        {"rcpt_per_second": -1},
        {"rcpt_per_second": True},
        {"connects_per_minute": "5"},
        {"sessions": 2},
        [1, 2],
    ],
)
def test_bad_limits_rows_are_refused(raw: object) -> None:
    with pytest.raises(ValueError, match=r"providers\.json"):
        _limits("p", raw)


def test_limits_rows_parse() -> None:
    assert _limits("p", None) is None
    assert _limits("p", {"max_sessions": 2, "rcpt_per_second": 3}) == ProviderLimits(
        max_sessions=2, rcpt_per_second=3.0
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mx_max_sessions", 0),
        ("mx_rcpt_per_session", 0),
        ("mx_connects_per_minute", 0),
        ("mx_rcpt_per_second", 0),
        ("mx_rcpt_per_second", float("nan")),
        ("greylist_max_wait", -1),
        ("greylist_schedule", []),
        ("greylist_schedule", [60, 0]),
    ],
)
def test_lane_settings_refuse_nonsense(field: str, value: Any) -> None:
    with pytest.raises(ValueError):
        Settings(**{field: value})


def test_greylist_schedule_reads_a_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILVET_GREYLIST_SCHEDULE", "1, 2.5,30")
    assert Settings().greylist_schedule == [1.0, 2.5, 30.0]
    monkeypatch.delenv("MAILVET_GREYLIST_SCHEDULE")
    assert Settings().greylist_schedule == [60.0, 300.0, 900.0]


# --- InProcessLimiter ---------------------------------------------------------------


async def test_session_slots_are_never_exceeded() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    limits = lane(sessions=2, connects=1000)
    open_now = 0
    peak = 0
    starts: list[float] = []

    async def one() -> None:
        nonlocal open_now, peak
        async with limiter.session("mx.a", limits):
            open_now += 1
            peak = max(peak, open_now)
            starts.append(t.now)
            await t.sleep(1.0)
            open_now -= 1

    await t.run(*(one() for _ in range(6)))
    assert peak == 2
    assert sorted(starts) == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert limiter.sessions_open("mx.a") == 0


async def test_lanes_do_not_share_slots() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    starts: dict[str, list[float]] = {"a": [], "b": []}

    async def one(name: str) -> None:
        async with limiter.session(name, lane(sessions=1)):
            starts[name].append(t.now)
            await t.sleep(1.0)

    await t.run(one("a"), one("a"), one("b"), one("b"))
    assert starts == {"a": [0.0, 1.0], "b": [0.0, 1.0]}


async def test_the_total_cap_holds_over_every_lane() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(max_sessions_total=3, clock=t.clock, sleep=t.sleep)
    open_now = 0
    peak = 0
    per_lane: dict[str, int] = {}

    async def one(name: str) -> None:
        nonlocal open_now, peak
        async with limiter.session(name, lane(sessions=2, connects=1000)):
            open_now += 1
            per_lane[name] = per_lane.get(name, 0) + 1
            peak = max(peak, open_now)
            assert limiter.sessions_open() == open_now
            await t.sleep(1.0)
            open_now -= 1

    await t.run(*(one(name) for name in ["a", "b", "c"] * 3))
    assert peak == 3
    assert per_lane == {"a": 3, "b": 3, "c": 3}
    assert t.now == 3.0
    assert limiter.sessions_open() == 0


async def test_a_session_slot_is_released_when_the_block_raises() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)

    async def failing() -> None:
        async with limiter.session("mx.a", lane(sessions=1)):
            raise OSError("connect refused")

    for _ in range(3):
        with pytest.raises(OSError):
            await t.run(failing())
    assert limiter.sessions_open("mx.a") == 0


async def test_connects_per_minute_hold_in_every_60_s_window() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    limits = lane(sessions=5, connects=3)
    starts: list[float] = []

    async def one() -> None:
        async with limiter.session("mx.a", limits):
            starts.append(t.now)
            await t.sleep(0.5)

    await t.run(*(one() for _ in range(7)))
    assert len(starts) == 7
    assert max_in_window(starts, 60.0) == 3
    assert sorted(starts) == [0.0, 0.0, 0.0, 60.0, 60.0, 60.0, 120.0]


async def test_rcpt_rate_holds_in_every_window() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    limits = lane(per_second=10.0)
    burst = rcpt_burst(limits)
    assert burst == 10
    grants: list[float] = []

    async def sender(n: int) -> None:
        for _ in range(n):
            await limiter.rcpt("mx.a", limits)
            grants.append(t.now)

    await t.run(sender(40), sender(40))  # two sessions of one lane share the bucket
    assert len(grants) == 80
    for window in (0.5, 1.0, 3.0):
        assert max_in_window(grants, window) <= burst + 10.0 * window + 1e-9
    # and the rate is used, not wasted: 70 tokens past the first burst at 10/s
    assert max(grants) == pytest.approx(7.0)


async def test_rcpt_groups_take_one_token_per_recipient() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    limits = lane(per_second=4.0)
    assert rcpt_burst(limits) == 4
    grants: list[tuple[float, int]] = []

    async def groups() -> None:
        for size in (4, 4, 2, 9):  # 9 is more than the bucket holds: clamped to 4
            await limiter.rcpt("mx.a", limits, size)
            grants.append((t.now, size))

    await t.run(groups())
    assert [at for at, _ in grants] == pytest.approx([0.0, 1.0, 1.5, 2.5])


async def test_slow_rates_below_one_a_second_still_pass_one_at_a_time() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    limits = lane(per_second=0.5)
    grants: list[float] = []

    async def sender() -> None:
        for _ in range(3):
            await limiter.rcpt("mx.a", limits)
            grants.append(t.now)

    await t.run(sender())
    assert grants == pytest.approx([0.0, 2.0, 4.0])


async def test_pause_holds_sessions_and_rcpts_of_that_lane_only() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    limiter.pause("mx.a", 5.0)
    limiter.pause("mx.a", 2.0)  # a shorter pause does not cut a longer one short
    assert limiter.paused_until("mx.a") == 5.0
    assert limiter.paused_until("mx.b") == float("-inf")
    seen: dict[str, float] = {}

    async def session(name: str) -> None:
        async with limiter.session(name, lane()):
            seen[f"session {name}"] = t.now

    async def rcpt(name: str) -> None:
        await limiter.rcpt(name, lane())
        seen[f"rcpt {name}"] = t.now

    await t.run(session("mx.a"), rcpt("mx.a"), session("mx.b"), rcpt("mx.b"))
    assert seen == {"session mx.a": 5.0, "rcpt mx.a": 5.0, "session mx.b": 0.0, "rcpt mx.b": 0.0}


async def test_a_pause_during_a_wait_for_a_slot_is_honoured() -> None:
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    starts: list[float] = []

    async def holder() -> None:
        async with limiter.session("mx.a", lane(sessions=1)):
            starts.append(t.now)
            await t.sleep(1.0)
            limiter.pause("mx.a", 10.0)  # the server said "slow down" in this session

    await t.run(holder(), holder())
    assert starts == [0.0, 11.0]


async def test_idle_lanes_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits_module, "_MAX_IDLE_LANES", 5)
    t = FakeTime()
    limiter = InProcessLimiter(clock=t.clock, sleep=t.sleep)
    limiter._sweep_at = 5

    async def visit(name: str) -> None:
        async with limiter.session(name, lane()):
            await limiter.rcpt(name, lane())

    await t.run(*(visit(f"mx{i}") for i in range(5)))
    assert len(limiter) == 5
    t.now += 61.0  # the connect window and the buckets are all past
    limiter.pause("mx0", 100.0)  # a paused lane is kept
    await t.run(visit("new"))
    assert len(limiter) == 2  # mx0 (paused) and new


# --- Backoff ------------------------------------------------------------------------


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    backoff = Backoff(base=1.0, cap=30.0, rng=random.Random(7))
    for failures, full in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (100, 30.0)]:
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), failures
        assert len(set(delays)) > 100  # jittered: no two lanes retry in step
