"""Per-MX limits of the batch engine and the small interface that enforces them.

A *lane* is one MX host (``jobs/plan.py`` picks it). Each lane has :class:`LaneLimits`:
how many SMTP sessions may be open to it at once, how many recipients one session may
ask, how many RCPT commands a second and how many new connections a minute it may get.
:func:`limits_for` takes them from the provider table (``providers.json`` rows may carry
a ``limits`` object) and the ``MAILVET_MX_*`` settings, which give the values for every
other MX and cap the providers' own.

The scheduler asks a :class:`Limiter` before it connects (``session``: a session slot
*and* a connect token, held for the session's life) and before each RCPT or pipelined
group (``rcpt``); ``pause`` stops a lane that is backing off. ``InProcessLimiter`` keeps
the counters in this process (``mailvet serve``, ``mailvet batch``); the protocol is
kept small so a PostgreSQL one (caps across many workers) can implement it too.

The guarantees, per lane, of ``InProcessLimiter``:

- at most ``max_sessions`` ``session()`` blocks at once (and, over every lane, at most
  ``max_sessions_total``: ``MAILVET_BATCH_CONCURRENCY`` in the batch runner);
- at most ``connects_per_minute`` session starts in any 60 s window (a sliding log);
- RCPT: a token bucket of ``rcpt_burst(limits)`` tokens refilled at ``rcpt_per_second``,
  so any window of ``w`` seconds holds at most ``burst + rcpt_per_second * w`` RCPTs
  (``burst`` is the pipelining group: one token a RCPT, a group waits for all of its);
- nothing is granted while the lane is paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from mailvet.engine.providers import Provider
from mailvet.settings import Settings

__all__ = [
    "MAX_GROUP",
    "Backoff",
    "InProcessLimiter",
    "LaneBusy",
    "LaneLimits",
    "Limiter",
    "limits_for",
    "rcpt_burst",
]

MAX_GROUP = 20  # RCPT commands pipelined in one write at most
_WINDOW = 60.0  # seconds: connects_per_minute's window
_MAX_IDLE_LANES = 10_000  # past this many lanes, idle ones are forgotten


class LaneBusy(Exception):
    """Raised by a limiter that does not wait (``PgLimiter(wait=False)``, the cluster's)
    when a session to ``lane`` cannot start now: ``seconds`` until one might (a pause,
    the connect window, every slot held). The scheduler then hands its lane's work back
    (``Scheduler(on_wait=...)``) instead of holding a worker's job slot while it waits."""

    def __init__(self, lane: str, seconds: float) -> None:
        super().__init__(f"lane busy for {seconds:.1f} s")
        self.lane = lane
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class LaneLimits:
    max_sessions: int  # SMTP sessions open to the MX at once
    rcpt_per_session: int  # recipients asked in one session
    rcpt_per_second: float  # RCPT commands a second (all sessions of the lane)
    connects_per_minute: int  # new connections in any 60 s


def limits_for(provider: Provider | None, settings: Settings) -> LaneLimits:
    """The lane limits for an MX run by ``provider`` (None: not a known provider).

    A provider's own limits (``providers.json``) apply where given and never exceed the
    settings; everything else is the setting.
    """
    own = provider.limits if provider is not None else None
    sessions = settings.mx_max_sessions
    per_session = settings.mx_rcpt_per_session
    per_second = settings.mx_rcpt_per_second
    connects = settings.mx_connects_per_minute
    if own is not None:
        if own.max_sessions is not None:
            sessions = min(sessions, own.max_sessions)
        if own.rcpt_per_session is not None:
            per_session = min(per_session, own.rcpt_per_session)
        if own.rcpt_per_second is not None:
            per_second = min(per_second, own.rcpt_per_second)
        if own.connects_per_minute is not None:
            connects = min(connects, own.connects_per_minute)
    return LaneLimits(
        max_sessions=max(1, sessions),
        rcpt_per_session=max(1, per_session),
        rcpt_per_second=per_second,
        connects_per_minute=max(1, connects),
    )


def rcpt_burst(limits: LaneLimits) -> int:
    """The RCPT bucket's size: the largest group one ``rcpt`` call may ask for."""
    return max(1, min(MAX_GROUP, math.floor(limits.rcpt_per_second)))


class Limiter(Protocol):
    """Per-lane caps shared by every session of a lane (and every batch on its MX)."""

    def session(self, lane: str, limits: LaneLimits) -> AbstractAsyncContextManager[None]:
        """Hold a session slot for the block; entering also takes a connect token
        (waits while the lane is paused, its slots are full or its connects used)."""
        ...

    async def rcpt(self, lane: str, limits: LaneLimits, count: int = 1) -> None:
        """Wait until ``count`` RCPT commands (at most ``rcpt_burst(limits)``) may be
        sent to the lane now."""
        ...

    def pause(self, lane: str, seconds: float) -> None:
        """Grant nothing to the lane for ``seconds`` from now (a longer pause wins)."""
        ...

    def paused_until(self, lane: str) -> float:
        """The clock time the lane's pause ends (in the past: not paused)."""
        ...


@dataclass(slots=True)
class _Lane:
    sessions: int = 0  # open now
    waiting: int = 0  # session() callers waiting for a slot
    connects: deque[float] = field(default_factory=deque)  # start times within the window
    tokens: float = -1.0  # RCPT bucket; -1: not filled yet
    refilled: float = 0.0
    full_at: float = float("-inf")  # when the RCPT bucket is full again
    paused_until: float = float("-inf")
    changed: asyncio.Event = field(default_factory=asyncio.Event)


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class InProcessLimiter:
    """``Limiter`` on asyncio, for one process. ``clock``/``sleep`` are injectable so
    tests run on a fake time (``clock`` must be what ``sleep`` advances)."""

    def __init__(
        self,
        *,
        max_sessions_total: int | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lanes: dict[str, _Lane] = {}
        # every lane together: at most this many sessions at once (None: no such cap)
        self.max_sessions_total = max_sessions_total
        self._total = 0
        self._released = asyncio.Event()  # a session of any lane ended
        self._sweep_at = _MAX_IDLE_LANES

    def __len__(self) -> int:
        return len(self._lanes)

    def _lane(self, lane: str) -> _Lane:
        state = self._lanes.get(lane)
        if state is None:
            if len(self._lanes) >= self._sweep_at:
                self._sweep()
            state = self._lanes[lane] = _Lane()
        return state

    def sessions_open(self, lane: str | None = None) -> int:
        """Sessions open to ``lane`` now (None: to every lane)."""
        if lane is None:
            return self._total
        return self._lanes[lane].sessions if lane in self._lanes else 0

    def pause(self, lane: str, seconds: float) -> None:
        state = self._lane(lane)
        state.paused_until = max(state.paused_until, self._clock() + max(0.0, seconds))

    def paused_until(self, lane: str) -> float:
        state = self._lanes.get(lane)
        return state.paused_until if state is not None else float("-inf")

    async def _unpaused(self, state: _Lane) -> None:
        while (left := state.paused_until - self._clock()) > 0:
            await self._sleep(left)

    @contextlib.asynccontextmanager
    async def session(self, lane: str, limits: LaneLimits) -> AsyncIterator[None]:
        state = self._lane(lane)
        await self._acquire(state, limits)
        try:
            yield
        finally:
            state.sessions -= 1
            self._total -= 1
            state.changed.set()
            self._released.set()

    async def _acquire(self, state: _Lane, limits: LaneLimits) -> None:
        state.waiting += 1
        try:
            while True:
                await self._unpaused(state)
                if state.sessions >= max(1, limits.max_sessions):
                    state.changed.clear()
                    await state.changed.wait()
                    continue
                total = self.max_sessions_total
                if total is not None and self._total >= max(1, total):
                    self._released.clear()
                    await self._released.wait()
                    continue
                now = self._clock()
                while state.connects and state.connects[0] <= now - _WINDOW:
                    state.connects.popleft()
                if len(state.connects) >= max(1, limits.connects_per_minute):
                    await self._sleep(state.connects[0] + _WINDOW - now)
                    continue
                if state.paused_until > now:  # paused while we waited
                    continue
                state.sessions += 1
                self._total += 1
                state.connects.append(now)
                return
        finally:
            state.waiting -= 1

    async def rcpt(self, lane: str, limits: LaneLimits, count: int = 1) -> None:
        state = self._lane(lane)
        rate = limits.rcpt_per_second
        burst = float(rcpt_burst(limits))
        need = float(min(max(1, count), rcpt_burst(limits)))
        if not rate > 0:  # no RCPT cap (a non-positive or NaN rate means none)
            await self._unpaused(state)
            return
        while True:
            await self._unpaused(state)
            now = self._clock()
            if state.tokens < 0:
                state.tokens = burst
            else:
                state.tokens = min(burst, state.tokens + (now - state.refilled) * rate)
            state.refilled = now
            if state.tokens >= need and state.paused_until <= now:
                state.tokens -= need
                state.full_at = now + (burst - state.tokens) / rate
                return
            await self._sleep(max((need - state.tokens) / rate, 1e-6))

    def _sweep(self) -> None:
        """Drop the state of idle lanes that nothing depends on any more (not open, not
        paused, no connect in the window, a full bucket), so memory stays bounded over
        millions of small domains; runs when the lane count doubles."""
        now = self._clock()
        for name, state in list(self._lanes.items()):
            if (
                state.sessions == 0
                and state.waiting == 0
                and state.paused_until <= now
                and (not state.connects or state.connects[-1] <= now - _WINDOW)
                and state.full_at <= now
            ):
                del self._lanes[name]
        self._sweep_at = max(_MAX_IDLE_LANES, 2 * len(self._lanes))


@dataclass(slots=True)
class Backoff:
    """Exponential back-off with jitter ("equal jitter": half fixed, half random).

    ``delay(n)`` for the n-th failure in a row (1-based) is in
    ``[d / 2, d]`` where ``d = min(cap, base * 2 ** (n - 1))``."""

    base: float = 2.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        exponent = min(max(0, failures - 1), 60)
        full = min(self.cap, self.base * 2.0**exponent)
        return full / 2 + self.rng.uniform(0.0, full / 2)
