"""The per-MX scheduler: lanes of SMTP sessions, each checking many recipients.

One ``Scheduler`` per process. Lanes are keyed by MX host and shared by every batch, so
two batches on one MX share its caps. Each lane runs up to ``max_sessions`` session
tasks; a task takes a session slot and a connect token from the ``Limiter``, opens a
session (``SmtpStage.open_session`` with the batch timeouts), and asks up to the lane's
current session size of queued addresses, a RCPT token (or a group's worth) before each
RCPT group, the catch-all check once per domain (the SMTP stage caches it). The session
size counts RCPT commands: a domain's catch-all check takes the room of one address. Lanes run
side by side: a big provider's caps never hold the small domains up.

What each answer becomes:

- accepted, user unknown, disabled, mailbox full, nonsense: the verdict, by
  ``scoring.decide`` over the item's facts with the SMTP answer added;
- a temporary refusal of the recipient (greylisting, other 4xx): a retry after the
  delay the reply gives ("try again in N seconds") or the next step of
  ``greylist_schedule``, as long as ``greylist_max_wait`` from the first try allows;
  then ``unknown`` / ``greylisted`` (``unavailable_smtp`` for other 4xx);
- a refusal about *us* (4.7.x / 5.7.x naming an IP, a block list or a rate, "unusual
  rate"), a burst of 4xx, connection refusals: the lane backs off (exponential with
  jitter, ``Limiter.pause``) and the address waits in the lane; only a lane that keeps
  failing ``max_lane_failures`` times in a row gives ``unknown`` with the quoted reply;
- the session ends (421, a hang-up, a timeout, too many errors): the unanswered
  addresses go back to the front of the lane, the lane halves its session size (min 1)
  and resumes in a new session. Nothing is undeliverable because a session ended; an
  address on which ``max_ends`` sessions ended gives ``unknown``.

Results leave through two callbacks (``on_final``, ``on_retry``); the batch runner
saves them. Nothing is logged with an address in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mailvet.engine.facts import SmtpFacts, SmtpOutcome
from mailvet.engine.replies import greylist_delay
from mailvet.engine.scoring import decide
from mailvet.engine.smtp import Pace, SessionEnded, SessionRefused
from mailvet.jobs.limits import Backoff, InProcessLimiter, Limiter, rcpt_burst
from mailvet.jobs.plan import LaneWork, Route
from mailvet.settings import Settings
from mailvet.verdict import Verdict

__all__ = ["OpenSession", "Scheduler", "Session"]

log = logging.getLogger(__name__)

_UNREACHABLE = (SmtpOutcome.NO_CONNECT, SmtpOutcome.TIMEOUT)
MAX_LANE_FAILURES = 8  # back-offs in a row before a lane's queue is given up as unknown
MAX_ENDS = 3  # sessions that may end on one address before it is unknown
BURST_4XX = 5  # temporary refusals in a row (not greylisting) that slow the lane


class Session(Protocol):
    """What the scheduler needs of an ``engine.smtp.SmtpSession``."""

    async def rcpt_many(
        self, addresses: Sequence[str], *, pace: Pace | None = None
    ) -> list[SmtpFacts]: ...
    async def catch_all(self, domain: str) -> bool | None: ...
    async def close(self) -> None: ...


OpenSession = Callable[[str, str], Awaitable[Session]]  # (host, ip) -> open session
OnFinal = Callable[[LaneWork, Verdict], None]
OnRetry = Callable[[LaneWork, datetime], None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- reading replies -----------------------------------------------------------------

_GREYLIST = re.compile(r"gr[ae]y-?list", re.IGNORECASE)
_ABOUT_US = re.compile(
    r"unusual|\brate\b|rate.?limit|too many|block|\blisted\b|spam|reputation|throttl"
    r"|\bip\b|client host",
    re.IGNORECASE,
)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


def is_greylisting(facts: SmtpFacts) -> bool:
    text = facts.message or ""
    return bool(_GREYLIST.search(text)) or (
        facts.code is not None and 400 <= facts.code < 500 and greylist_delay(facts) is not None
    )


def about_us(facts: SmtpFacts) -> bool:
    """A refusal aimed at our host (block list, rate, reputation), not at the mailbox."""
    text = facts.message or ""
    enhanced = facts.enhanced or ""
    if facts.outcome is SmtpOutcome.TEMPORARY:
        return enhanced.startswith("4.7.") or bool(_ABOUT_US.search(text))
    if facts.outcome is SmtpOutcome.BLOCKED:
        return bool(_ABOUT_US.search(text) or _IPV4.search(text))
    return False


# --- lanes ---------------------------------------------------------------------------


class _Queue:
    """A lane's waiting addresses: first in, first out within a batch, batches taken in
    turn (a small batch on a busy MX does not wait behind a big one)."""

    def __init__(self) -> None:
        self._batches: OrderedDict[str, deque[LaneWork]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, works: Sequence[LaneWork]) -> None:
        for work in works:
            queue = self._batches.get(work.batch_id)
            if queue is None:
                queue = self._batches[work.batch_id] = deque()
            queue.append(work)
        self._size += len(works)

    def appendleft(self, work: LaneWork) -> None:
        """Back to the front: the next one taken."""
        queue = self._batches.get(work.batch_id)
        if queue is None:
            queue = self._batches[work.batch_id] = deque()
        self._batches.move_to_end(work.batch_id, last=False)
        queue.appendleft(work)
        self._size += 1

    def extendleft(self, works: Sequence[LaneWork]) -> None:
        """``works`` back to the front, in their order."""
        for work in reversed(works):
            self.appendleft(work)

    def popleft(self) -> LaneWork:
        batch_id, queue = next(iter(self._batches.items()))
        work = queue.popleft()
        if queue:
            self._batches.move_to_end(batch_id)
        else:
            del self._batches[batch_id]
        self._size -= 1
        return work

    def drop(self, batch_id: str) -> int:
        queue = self._batches.pop(batch_id, None)
        dropped = len(queue) if queue is not None else 0
        self._size -= dropped
        return dropped


@dataclass(slots=True)
class _Lane:
    route: Route
    size: int  # current session size (recipients per session)
    queue: _Queue = field(default_factory=_Queue)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    failures: int = 0  # back-offs in a row
    turn: int = 0  # which of the route's addresses to dial next

    @property
    def key(self) -> str:
        return self.route.host


class _SessionOver(Exception):
    """This session should not go on: the lane backs off, or (``ended``) the server
    ended the session during the catch-all check."""

    def __init__(self, ended: SmtpFacts | None = None) -> None:
        super().__init__()
        self.ended = ended


class Scheduler:
    """Lanes keyed by MX host; ``submit`` work, results come out of the callbacks."""

    def __init__(
        self,
        open_session: OpenSession,
        settings: Settings,
        *,
        on_final: OnFinal,
        on_retry: OnRetry,
        limiter: Limiter | None = None,
        catch_all_cached: Callable[[str], bool | None] | None = None,
        now: Callable[[], datetime] = _utcnow,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        max_lane_failures: int = MAX_LANE_FAILURES,
        max_ends: int = MAX_ENDS,
    ) -> None:
        self.open_session = open_session
        self.settings = settings
        self.on_final = on_final
        self.on_retry = on_retry
        if limiter is None:
            limiter = InProcessLimiter(max_sessions_total=settings.batch_concurrency)
        self.limiter: Limiter = limiter
        self.catch_all_cached = catch_all_cached or (lambda domain: None)
        self.now = now
        self.clock = clock
        self.backoff = backoff if backoff is not None else Backoff()
        self.max_lane_failures = max(1, max_lane_failures)
        self.max_ends = max(1, max_ends)
        self._lanes: dict[str, _Lane] = {}
        self.sessions_opened = 0
        self.queued = 0  # addresses submitted and not yet out of a callback

    # --- public ---

    def submit(self, route: Route, works: Sequence[LaneWork]) -> None:
        """Queue ``works`` on the lane of ``route.host`` and make sure it runs."""
        if not works:
            return
        lane = self._lanes.get(route.host)
        if lane is None:
            lane = self._lanes[route.host] = _Lane(route, route.limits.rcpt_per_session)
        lane.queue.extend(works)
        self.queued += len(works)
        self._spawn(lane)

    def drop(self, batch_id: str) -> int:
        """Forget the queued work of a batch (deleted); what is in a session finishes."""
        dropped = sum(lane.queue.drop(batch_id) for lane in self._lanes.values())
        self.queued -= dropped
        return dropped

    def lane_size(self, host: str) -> int | None:
        lane = self._lanes.get(host)
        return lane.size if lane is not None else None

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    async def wait_sessions(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the lane tasks to end on their own (a lane
        whose queue is empty closes its session politely, QUIT answered, then releases its
        slot), so that ``stop()`` afterwards cancels nothing that is only saying goodbye."""
        tasks = [t for lane in self._lanes.values() for t in lane.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def stop(self) -> None:
        """Cancel every session (work in them is simply not reported: the store still
        has it pending)."""
        tasks = [t for lane in self._lanes.values() for t in lane.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._lanes.clear()
        self.queued = 0

    # --- lane tasks ---

    def _spawn(self, lane: _Lane) -> None:
        wanted = min(lane.route.limits.max_sessions, -(-len(lane.queue) // max(1, lane.size)))
        while len(lane.tasks) < wanted:
            task = asyncio.create_task(self._run(lane), name=f"mailvet-lane-{len(lane.tasks)}")
            lane.tasks.add(task)
            task.add_done_callback(functools.partial(self._done, lane))

    def _done(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        lane.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover
            log.error("lane task failed", exc_info=task.exception())
        if lane.queue and self._lanes.get(lane.key) is lane:
            self._spawn(lane)
        elif not lane.tasks and not lane.queue and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    async def _run(self, lane: _Lane) -> None:
        while lane.queue:
            try:
                await self._session(lane)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug: never a crash loop, the lane slows down
                log.exception("batch lane failed")
                self.limiter.pause(lane.key, self.backoff.delay(1))

    async def _session(self, lane: _Lane) -> None:
        limits = lane.route.limits
        async with self.limiter.session(lane.key, limits):
            if not lane.queue:
                return
            dials = lane.route.dials()
            host, ip = dials[lane.turn % len(dials)]
            try:
                session = await self.open_session(host, ip)
            except SessionRefused as refused:
                if refused.facts.outcome in _UNREACHABLE:
                    lane.turn += 1  # the next address or MX host, if there is one
                self._lane_failed(lane, refused.facts)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: counted as a refusal, never a crash loop
                log.exception("opening a batch session failed")
                facts = SmtpFacts(SmtpOutcome.INVALID_SMTP, message=f"internal error: {exc}")
                self._lane_failed(lane, facts)
                return
            self.sessions_opened += 1
            try:
                await self._serve(lane, session)
            finally:
                with contextlib.suppress(Exception):
                    await session.close()

    async def _serve(self, lane: _Lane, session: Session) -> None:
        limits = lane.route.limits
        size = lane.size
        asked = 0
        temporary_run = 0  # temporary refusals in a row (not greylisting)
        known: dict[str, bool | None] = {}  # catch-all findings of this session
        reserved: set[str] = set()  # domains whose catch-all check is counted in ``asked``

        async def pace(count: int) -> None:  # before each write of ``count`` RCPTs
            await self.limiter.rcpt(lane.key, limits, count)

        while lane.queue and asked < size:
            if self.limiter.paused_until(lane.key) > self.clock():
                return  # another session of the lane is backing off: give the slot back
            room = min(rcpt_burst(limits), size - asked)
            group, probes = self._take(lane, room, reserved, first=asked == 0)
            if not group:
                break  # the next address and its catch-all check would pass the cap
            asked += probes  # catch-all checks are RCPTs too: the session cap counts them
            try:
                answers = await session.rcpt_many([w.rcpt for w in group], pace=pace)
            except SessionEnded as ended:
                answered = list(ended.partial[: len(group)])
                with contextlib.suppress(_SessionOver):
                    await self._answers(
                        lane, session, group[: len(answered)], answered, None, known
                    )
                sent = asked - probes + len(answered)  # this group's checks never went
                self._ended(lane, group[len(answered) :], ended.facts, sent)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: only the end of this session
                log.exception("batch session failed")
                facts = SmtpFacts(SmtpOutcome.INVALID_SMTP, message=f"internal error: {exc}")
                self._ended(lane, group, facts, asked - probes)
                return
            asked += len(group)
            try:
                temporary_run = await self._answers(
                    lane, session, group, answers, temporary_run, known
                )
            except _SessionOver as over:
                if over.ended is not None:
                    self._ended(lane, [], over.ended, asked)
                return
        if asked >= size and lane.size == size:
            lane.size = min(limits.rcpt_per_session, size + max(1, size // 2))
        lane.failures = 0

    def _take(
        self, lane: _Lane, room: int, reserved: set[str], *, first: bool
    ) -> tuple[list[LaneWork], int]:
        """Up to ``room`` RCPTs' worth of queued work: each address, plus one catch-all
        check for a domain this session has not counted yet (none when cached). The
        session's ``first`` address is always taken. Returns the group and the checks
        counted."""
        group: list[LaneWork] = []
        domains: set[str] = set()
        while lane.queue and len(group) + len(domains) < room:
            work = lane.queue.popleft()
            new = (
                work.domain not in reserved
                and work.domain not in domains
                and self.catch_all_cached(work.domain) is None
            )
            if (group or not first) and len(group) + len(domains) + 1 + new > room:
                lane.queue.appendleft(work)
                break
            group.append(work)
            if new:
                domains.add(work.domain)
        reserved |= domains
        return group, len(domains)

    async def _answers(
        self,
        lane: _Lane,
        session: Session,
        group: Sequence[LaneWork],
        answers: Sequence[SmtpFacts],
        temporary_run: int | None,
        known: dict[str, bool | None],
    ) -> int:
        """Turn a group's answers into results; returns the run of temporary refusals.
        ``temporary_run`` None: the session is over (no catch-all check possible).
        Raises ``_SessionOver`` when the lane must back off."""
        unreliable = lane.route.provider is not None and lane.route.provider.unreliable_accept
        accepted: list[tuple[LaneWork, SmtpFacts]] = []
        blocked: SmtpFacts | None = None
        run = temporary_run or 0
        for work, facts in zip(group, answers, strict=False):
            if unreliable:
                facts = dataclasses.replace(facts, unreliable_accept=True)
            outcome = facts.outcome
            if outcome is SmtpOutcome.ACCEPTED:
                run = 0
                accepted.append((work, facts))
            elif outcome is SmtpOutcome.TEMPORARY and facts.code and is_greylisting(facts):
                run = 0
                self._temporary(work, facts, True)
            elif about_us(facts):
                blocked = facts
                lane.queue.appendleft(work)  # not its fault: ask again after the back-off
            elif outcome is SmtpOutcome.TEMPORARY and facts.code is not None:
                run += 1
                self._temporary(work, facts, False)
            else:
                run = 0
                self._final(work, facts)
        ended = await self._catch_all(lane, session, accepted, known, temporary_run is None)
        if blocked is not None:
            self._lane_failed(lane, blocked)
            raise _SessionOver
        if run >= BURST_4XX:
            lane.failures += 1
            self.limiter.pause(lane.key, self.backoff.delay(lane.failures))
            raise _SessionOver
        if ended is not None and temporary_run is not None:
            raise _SessionOver(ended)
        return run

    async def _catch_all(
        self,
        lane: _Lane,
        session: Session,
        accepted: list[tuple[LaneWork, SmtpFacts]],
        known: dict[str, bool | None],
        over: bool,
    ) -> SmtpFacts | None:
        """Finish the accepted answers with the domain's catch-all finding (asked once
        per domain and session unless cached; not asked when the session is ``over``).
        Returns what ended the session if it ended during a check."""
        ended: SmtpFacts | None = None
        for work, facts in accepted:
            if work.domain not in known:
                value = self.catch_all_cached(work.domain)
                if value is None and not over and ended is None:
                    await self.limiter.rcpt(lane.key, lane.route.limits)
                    try:
                        value = await session.catch_all(work.domain)
                    except SessionEnded as end:
                        ended = end.facts  # the answers stand; the catch-all stays unknown
                known[work.domain] = value
            self._final(work, dataclasses.replace(facts, catch_all=known[work.domain]))
        return ended

    # --- outcomes ---

    def _final(self, work: LaneWork, smtp: SmtpFacts, *, greylisted: bool = False) -> None:
        work.facts.smtp = smtp
        work.facts.greylisted = greylisted
        verdict = decide(work.facts)
        self.queued -= 1
        try:
            self.on_final(work, verdict)
        except Exception:  # the caller's bug must not cost the rest of the group
            log.exception("on_final failed")

    def _temporary(self, work: LaneWork, facts: SmtpFacts, greylisting: bool) -> None:
        """Retry later, or give up when the schedule or the max wait is used up."""
        schedule = self.settings.greylist_schedule
        now = self.now()
        first = work.first_try_at or now
        if work.attempts >= len(schedule):
            self._final(work, facts, greylisted=greylisting)
            return
        delay = greylist_delay(facts)
        if delay is None:
            delay = schedule[work.attempts]
        at = now + timedelta(seconds=max(1.0, delay))
        if (at - first).total_seconds() > self.settings.greylist_max_wait:
            self._final(work, facts, greylisted=greylisting)
            return
        self.queued -= 1
        try:
            self.on_retry(work, at)
        except Exception:
            log.exception("on_retry failed")

    def _lane_failed(self, lane: _Lane, facts: SmtpFacts) -> None:
        """Back off; past ``max_lane_failures`` in a row, give up the lane's queue."""
        lane.failures += 1
        if lane.failures >= self.max_lane_failures:
            log.warning(
                "lane %s gave up after %d failures in a row: %d addresses unknown (%s)",
                lane.key,
                lane.failures,
                len(lane.queue),
                facts.outcome.value,
            )
            lane.failures = 0
            while lane.queue:
                self._final(lane.queue.popleft(), facts)
            return
        delay = self.backoff.delay(lane.failures)
        self.limiter.pause(lane.key, delay)
        log.info(
            "lane %s backs off %.1f s (%d in a row: %s %s)",
            lane.key,
            delay,
            lane.failures,
            facts.outcome.value,
            facts.code if facts.code is not None else "-",
        )

    def _ended(
        self, lane: _Lane, unanswered: Sequence[LaneWork], facts: SmtpFacts, answered: int
    ) -> None:
        """The server ended the session: re-queue, shrink the lane's sessions."""
        lane.size = max(1, min(lane.size // 2, answered) if answered else lane.size // 2)
        rest = list(unanswered)
        if rest:
            first = rest[0]
            first.ends += 1
            if first.ends >= self.max_ends:  # this address keeps ending sessions
                self._final(first, facts)
                rest = rest[1:]
        lane.queue.extendleft(rest)
        if answered == 0:
            self._lane_failed(lane, facts)
