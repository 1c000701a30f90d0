"""The batch engine on PostgreSQL: procrastinate jobs, taken by ``mailvet worker`` processes.

The same planner (jobs/plan.py), per-MX scheduler (jobs/scheduler.py) and SMTP session
as in-process; procrastinate underneath instead of a loop in ``mailvet serve``. The API
only stores a batch and enqueues its plan job (``BatchQueue``, from
``Service.batch_changed``); any number of workers on any hosts take the jobs.

Jobs (task name, arguments; never an address in them, procrastinate logs arguments):

- ``mailvet.plan(batch_id, after)``, queue ``mailvet_plan``, lock ``plan:<batch>`` (one
  at a time per batch): up to ``PLAN_CHUNK`` items past position ``after`` that no live
  job holds, read from at most ``SCAN_WINDOW`` chunks of positions (cluster_store).
  Offline verdicts (syntax, lists, DNS without mail) are saved at once; the rest are
  grouped into lanes by MX host and cut into *slices* of at most one session's
  recipients (``rcpt_per_session``, a catch-all check counted per new domain), one
  probe job each; while positions are left, the next plan job (``after`` = the last
  position read) is deferred in the same transaction. A 10M-address list is thus
  planned a chunk at a time, never in one job.
- ``mailvet.probe(batch_id, host)``, queue ``mailvet_smtp`` (the only jobs that need
  outbound port 25): asks the items it holds in one SMTP session through the
  ``Scheduler``. Greylisted or temporarily refused items are handed to a new probe job
  deferred to the retry time (``schedule_at``: no worker sleeps); if the lane is at its
  cap (``lane_wait``: the limiter's ``try_session``), the items go to a new probe job a
  moment later, without asking. The worker's limiter never waits either: a lane that
  filled up since that probe, or that backs off mid-job (a refused session), raises
  ``LaneBusy`` and its items go to a probe job deferred by the wait, its arguments
  carrying the lane's back-off state (``failures``, ``turn``: counts, no address) so
  that a lane that keeps failing still gives up after ``max_lane_failures``.
- ``mailvet.webhook(batch_id)``, queue ``mailvet_plan``: one delivery attempt of a
  finished batch's ``callback_url`` (jobs/webhook.py); deferred in the transaction
  that finishes the batch, again by the sweep while retries are due.
- ``mailvet.sweep``, every ``SWEEP_EVERY`` seconds (procrastinate's periodic tasks: one
  job per tick for the whole cluster): retries the jobs of dead workers (procrastinate's
  heartbeats: ``get_stalled_jobs`` + ``retry_job``), re-plans batches with items that no
  live job holds (a job failed for good), and defers due webhooks.

Exactly once: see jobs/cluster_store.py. Every item is held by one live job at a time,
handed from job to job in the transaction that defers the next, results are saved only
by the holder and only where none is; a job run twice asks only what its first run did
not settle.

A slice deferred for a busy lane ``n`` times in a row (``waited``, in its arguments)
waits at least ``2 ** n`` s, up to ``LANE_WAIT_MAX``, so slices waiting on a full lane
come back every few seconds, not every second.

Known limits: planning runs ahead of probing (nothing bounds the queued probe jobs), so
a huge list on one provider with few sessions keeps its waiting slices cycling through
the workers (a transaction each, about every ``LANE_WAIT_MAX`` s a slice) until they
get a slot: correct, but database round trips in proportion to the backlog. A RCPT
that meets a pause another worker stored waits in its session (``PgLimiter.rcpt``), at
most that pause. Items held by a job whose row was deleted by hand (not failed or
cancelled: deleted) are found only by a plan job running for another reason
(cluster_store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job
from procrastinate.worker import Worker

from mailvet.jobs.cluster_store import ClusterStore, Defer, Handover, Probe
from mailvet.jobs.limits import InProcessLimiter, LaneLimits, Limiter
from mailvet.jobs.plan import LaneWork, Planner, Resolver, Route
from mailvet.jobs.scheduler import OpenSession, Scheduler
from mailvet.settings import Settings, uses_postgres
from mailvet.storage.common import utcnow
from mailvet.verdict import Verdict

__all__ = [
    "PLAN_TASK",
    "PROBE_TASK",
    "QUEUES",
    "SWEEP_TASK",
    "WEBHOOK_TASK",
    "BatchQueue",
    "ClusterWorker",
    "lane_wait",
    "libpq_url",
    "make_app",
    "make_limiter",
    "new_worker_id",
]

log = logging.getLogger(__name__)

PLAN_TASK = "mailvet.plan"
PROBE_TASK = "mailvet.probe"
WEBHOOK_TASK = "mailvet.webhook"
SWEEP_TASK = "mailvet.sweep"
PLAN_QUEUE = "mailvet_plan"
PROBE_QUEUE = "mailvet_smtp"
QUEUES = (PLAN_QUEUE, PROBE_QUEUE)
PLAN_CHUNK = 2_000  # items read by one plan job
# plan, webhook and sweep jobs are fetched before probe jobs (procrastinate: priority
# first, then id): a batch's next plan chunk, deferred after its chunk's probe jobs,
# would otherwise wait behind every one of them and the lanes would run dry meanwhile
PLAN_PRIORITY = 1
SWEEP_EVERY = 5  # seconds between sweeps (a divisor of 60)
LANE_BUSY_DELAY = 1.0  # seconds a slice waits when its lane's sessions are all open
LANE_WAIT_MAX = 10.0  # seconds: a slice deferred n times in a row waits 2**n s, at most this
MAX_JOB_ATTEMPTS = 10  # a job that keeps raising (a database fault) is retried so often
FETCH_POLL = 1.0  # seconds: scheduled jobs are not notified when due; the workers poll
SESSION_END_WAIT = 6.0  # seconds a job waits for its sessions' QUIT (smtp: at most 5 s)
SHUTDOWN_GRACE = 10.0  # seconds running jobs get after SIGTERM, then they are re-queued
_PLANNERS = 64  # batches whose planner (DNS memo) a worker keeps


def libpq_url(database_url: str) -> str:
    """``postgresql://...`` for psycopg from a mailvet (SQLAlchemy) database URL."""
    from mailvet.jobs.limits_pg import pg_conninfo

    return pg_conninfo(database_url)


def new_worker_id() -> str:
    """host:pid:random, the holder of a worker's limiter leases and its name in logs."""
    from mailvet.jobs.limits_pg import default_holder

    return default_holder()


def make_limiter(settings: Settings, holder: str) -> Limiter:
    """The per-MX limiter of a worker: ``jobs/limits_pg.PgLimiter``, caps across the
    cluster (started and closed by ``ClusterWorker.run``). It never waits for a session
    (``wait=False``): a lane that cannot start one is handed to a deferred job."""
    from mailvet.jobs.limits_pg import PgLimiter

    return PgLimiter(settings.database_url, holder=holder, settings=settings, wait=False)


async def lane_wait(limiter: Limiter, lane: str, limits: LaneLimits) -> float:
    """Seconds before a session to ``lane`` could start (0: now), without waiting: the
    limiter's ``try_session`` where it has one, else what an ``InProcessLimiter`` knows
    (a pause, every session slot taken)."""
    probe = getattr(limiter, "try_session", None)
    if probe is not None:
        return max(0.0, float(await probe(lane, limits)))
    if isinstance(limiter, InProcessLimiter):
        paused = limiter.paused_until(lane) - time.monotonic()
        if paused > 0:
            return paused
        if limiter.sessions_open(lane) >= limits.max_sessions:
            return LANE_BUSY_DELAY
    return 0.0


# --- jobs ---------------------------------------------------------------------------


def _options(task: str, args: dict[str, Any]) -> dict[str, Any]:
    batch_id = args.get("batch_id")
    if task == PLAN_TASK:
        return {"queue": PLAN_QUEUE, "lock": f"plan:{batch_id}", "priority": PLAN_PRIORITY}
    if task == WEBHOOK_TASK:
        return {"queue": PLAN_QUEUE, "lock": f"webhook:{batch_id}", "priority": PLAN_PRIORITY}
    return {"queue": PROBE_QUEUE, "lock": None}


async def _enqueue(app: App, task: str, args: dict[str, Any], queueing_lock: str) -> bool:
    """Defer ``task`` unless one with ``queueing_lock`` already waits; whether it did."""
    try:
        await app.configure_task(
            task, queueing_lock=queueing_lock, **_options(task, args)
        ).defer_async(**args)
    except AlreadyEnqueued:
        return False
    return True


def _deferrer(app: App) -> Defer:
    async def defer(
        connection: Any, jobs: Sequence[tuple[str, dict[str, Any], datetime | None]]
    ) -> list[int]:
        if not jobs:
            return []
        built = [
            Job(
                id=None,
                task_name=task,
                task_kwargs=args,
                scheduled_at=at,
                queueing_lock=None,
                **_options(task, args),
            )
            for task, args, at in jobs
        ]
        deferred = await app.job_manager.batch_defer_jobs_async(built, connection=connection)
        return [int(job.id) for job in deferred if job.id is not None]

    return defer


class _Retry(BaseRetryStrategy):
    """A job that raised (a database fault) runs again after 1, 2, 4 ... s (up to 5
    minutes), ``MAX_JOB_ATTEMPTS`` times; one cut short by a worker's shutdown runs again
    at once elsewhere."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if job.attempts >= MAX_JOB_ATTEMPTS:
            return None
        if isinstance(exception, asyncio.CancelledError):
            return RetryDecision(retry_in={"seconds": 0})
        return RetryDecision(retry_in={"seconds": min(300, 2**job.attempts)})


def make_app(database_url: str, *, pool_size: int = 10) -> App:
    """The procrastinate app on mailvet's database, with mailvet's tasks registered."""
    connector = PsycopgConnector(
        conninfo=libpq_url(database_url), min_size=1, max_size=max(2, pool_size)
    )
    app = App(connector=connector)
    retry = _Retry()
    app.task(name=PLAN_TASK, pass_context=True, queue=PLAN_QUEUE, retry=retry)(_plan)
    app.task(name=PROBE_TASK, pass_context=True, queue=PROBE_QUEUE, retry=retry)(_probe)
    app.task(name=WEBHOOK_TASK, pass_context=True, queue=PLAN_QUEUE, retry=retry)(_webhook)
    sweep = app.task(
        name=SWEEP_TASK,
        pass_context=True,
        queue=PLAN_QUEUE,
        queueing_lock=SWEEP_TASK,
        priority=PLAN_PRIORITY,
    )(_sweep)
    app.periodic(cron=f"* * * * * */{SWEEP_EVERY}")(sweep)
    return app


def _context(context: JobContext) -> WorkerContext:
    ctx = context.additional_context.get("mailvet")
    if not isinstance(ctx, WorkerContext):
        raise RuntimeError("mailvet jobs run in `mailvet worker` (no worker context)")
    return ctx


def _job_id(context: JobContext) -> int:
    job_id = context.job.id
    if job_id is None:  # pragma: no cover - a fetched job always has its id
        raise RuntimeError("job without an id")
    return job_id


async def _plan(context: JobContext, batch_id: str, after: int = -1) -> None:
    ctx = _context(context)
    if not await ctx.cluster.batch_open(batch_id):
        return
    items, last, more = await ctx.cluster.candidates(batch_id, after, PLAN_CHUNK)
    probe = Probe()
    if items:
        planned = await ctx.planner(batch_id).plan(batch_id, items)
        probe.results = [(key, checked.verdict.as_dict()) for key, checked in planned.decided]
        for route, works in planned.lanes.values():
            for keys in _slices(works, route.limits.rcpt_per_session, ctx.catch_all_cached):
                args = {"batch_id": batch_id, "host": route.host}
                probe.handovers.append(Handover(PROBE_TASK, args, keys))
    if more:
        probe.handovers.append(Handover(PLAN_TASK, {"batch_id": batch_id, "after": last}, []))
    if await ctx.cluster.commit(batch_id, None, probe):
        log.info("batch %s finished", batch_id)


def _slices(
    works: Sequence[LaneWork], per_session: int, cached: Callable[[str], bool | None]
) -> list[list[str]]:
    """Keys cut into one session's worth each: an address is one RCPT, and a domain's
    first address in the slice one more for its catch-all check (unless known)."""
    slices: list[list[str]] = []
    keys: list[str] = []
    domains: set[str] = set()
    cost = 0
    for work in works:
        extra = 1 + (work.domain not in domains and cached(work.domain) is None)
        if keys and cost + extra > per_session:
            slices.append(keys)
            keys, domains, cost = [], set(), 0
            extra = 1 + (cached(work.domain) is None)
        keys.append(work.key)
        domains.add(work.domain)
        cost += extra
    if keys:
        slices.append(keys)
    return slices


def _lane_deferral(wait: float, waited: int) -> float:
    """Seconds a slice is deferred for a busy lane: the lane's own wait, and at least
    ``2 ** waited`` s (up to ``LANE_WAIT_MAX``) for a slice deferred ``waited`` times
    in a row, plus up to half again at random, so that slices waiting on a full lane
    do not cycle through the workers every second."""
    floor = min(LANE_WAIT_MAX, LANE_BUSY_DELAY * 2.0 ** min(max(0, waited), 16))
    wait = max(wait, floor)
    return wait + random.uniform(0, wait / 2)


async def _probe(
    context: JobContext,
    batch_id: str,
    host: str,
    failures: int = 0,
    turn: int = 0,
    waited: int = 0,
) -> None:
    ctx = _context(context)
    job_id = _job_id(context)
    items = await ctx.cluster.held(batch_id, job_id)
    if not items:
        return  # a run before this one settled everything (or the batch is gone)
    planned = await ctx.planner(batch_id).plan(batch_id, items)
    probe = Probe(results=[(key, checked.verdict.as_dict()) for key, checked in planned.decided])
    lanes: list[tuple[Route, list[LaneWork]]] = []
    for route, works in planned.lanes.values():
        wait = await lane_wait(ctx.limiter, route.host, route.limits)
        if wait > 0:  # the lane is at its cap: a new job a moment later, nobody waits
            mine = route.host == host
            wait = _lane_deferral(wait, waited if mine else 0)
            log.debug(
                "lane %s at its cap: %d addresses deferred %.1f s", route.host, len(works), wait
            )
            at = utcnow() + timedelta(seconds=wait)
            args: dict[str, Any] = {"batch_id": batch_id, "host": route.host}
            if mine:  # the lane's back-off state goes on with its work
                args.update((k, v) for k, v in (("failures", failures), ("turn", turn)) if v)
            args["waited"] = (waited if mine else 0) + 1
            probe.handovers.append(Handover(PROBE_TASK, args, [w.key for w in works], at=at))
        else:
            lanes.append((route, works))
    if lanes:
        asked = await ctx.ask(lanes, {host: {"failures": failures, "turn": turn}})
        probe.results.extend(asked.finals)
        _group(probe, batch_id, asked.retries, retry=True)
        now = utcnow()
        deferred: dict[str, datetime] = {}  # one time a lane: its slice stays one job
        for item in asked.waits:  # LaneBusy: filled up since lane_wait, or backing off
            if item.lane not in deferred:
                left = (item.at - now).total_seconds()
                deferred[item.lane] = now + timedelta(seconds=_lane_deferral(left, waited))
            item.at = deferred[item.lane]
            item.state["waited"] = waited + 1
        _group(probe, batch_id, asked.waits, retry=False)
    if await ctx.cluster.commit(batch_id, job_id, probe):
        log.info("batch %s finished", batch_id)


def _group(probe: Probe, batch_id: str, items: Sequence[_Later], *, retry: bool) -> None:
    """Hand ``items`` over to probe jobs: one per lane, second and lane state."""
    groups: dict[tuple[str, datetime, tuple[tuple[str, int], ...]], list[str]] = {}
    for item in items:
        at = item.at
        second = at.replace(microsecond=0) + timedelta(seconds=1 if at.microsecond else 0)
        state = tuple(sorted((k, v) for k, v in item.state.items() if v))
        groups.setdefault((item.lane, second, state), []).append(item.key)
    for (lane, at, state), keys in groups.items():
        args: dict[str, Any] = {"batch_id": batch_id, "host": lane, **dict(state)}
        probe.handovers.append(Handover(PROBE_TASK, args, keys, at=at, retry=retry))


async def _webhook(context: JobContext, batch_id: str) -> None:
    ctx = _context(context)
    due = [r for r in await ctx.store.webhooks_due(utcnow()) if r.id == batch_id]
    if due:
        await ctx.webhooks.deliver(due[0])


async def _sweep(context: JobContext, timestamp: int) -> None:
    ctx = _context(context)
    manager = context.app.job_manager
    stalled = await manager.get_stalled_jobs(
        seconds_since_heartbeat=ctx.settings.worker_stalled_timeout
    )
    for job in stalled:
        with contextlib.suppress(Exception):  # another sweep (or its worker) was first
            await manager.retry_job(job)
            log.info("job %s of a dead worker retried (%s)", job.id, job.task_name)
    for batch_id in await ctx.cluster.orphaned_batches():
        if await _enqueue(context.app, PLAN_TASK, {"batch_id": batch_id}, f"plan:{batch_id}"):
            log.info("batch %s: items no job holds are planned again", batch_id)
    for record in await ctx.store.webhooks_due(utcnow()):
        await _enqueue(context.app, WEBHOOK_TASK, {"batch_id": record.id}, f"webhook:{record.id}")


# --- a worker process ---------------------------------------------------------------


@dataclass(slots=True)
class _Later:
    """An address to ask again later: a greylist retry, or a lane that could not start a
    session (``state``: the lane's back-off state to resume with)."""

    key: str
    lane: str
    at: datetime
    state: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Asked:
    finals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    retries: list[_Later] = field(default_factory=list)
    waits: list[_Later] = field(default_factory=list)


@dataclass(eq=False)
class WorkerContext:
    """What the jobs of one worker process share (procrastinate's additional context)."""

    settings: Settings
    store: Any  # SqlStore
    cluster: ClusterStore
    limiter: Limiter
    open_session: OpenSession
    resolver: Resolver
    checker: Any  # the engine (check_offline)
    webhooks: Any  # WebhookSender
    catch_all_cached: Callable[[str], bool | None]
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    _planners: OrderedDict[str, Planner] = field(default_factory=OrderedDict)

    def planner(self, batch_id: str) -> Planner:
        """The batch's planner (its DNS memo: each domain looked up once per batch and
        worker), the least recently used dropped past ``_PLANNERS``."""
        planner = self._planners.get(batch_id)
        if planner is None:
            planner = self._planners[batch_id] = Planner(self.checker, self.resolver, self.settings)
            while len(self._planners) > _PLANNERS:
                self._planners.popitem(last=False)
        self._planners.move_to_end(batch_id)
        return planner

    async def ask(
        self,
        lanes: Sequence[tuple[Route, Sequence[LaneWork]]],
        states: dict[str, dict[str, int]] | None = None,
    ) -> _Asked:
        """Ask the lanes' addresses through a ``Scheduler`` (one session a slice): the
        verdicts, the greylist retries, and the addresses of lanes that could not start
        a session (backing off, at their cap: ``LaneBusy``), to be asked later.
        ``states``: a lane's back-off state (failures, turn) by host, from ``waits``."""
        asked = _Asked()
        lane_of = {id(work): route.host for route, works in lanes for work in works}
        total = len(lane_of)
        settled = asyncio.Event()

        def check() -> None:
            if len(asked.finals) + len(asked.retries) + len(asked.waits) >= total:
                settled.set()

        def on_final(work: LaneWork, verdict: Verdict) -> None:
            asked.finals.append((work.key, verdict.as_dict()))
            check()

        def on_retry(work: LaneWork, at: datetime) -> None:
            asked.retries.append(_Later(work.key, lane_of.get(id(work), ""), at))
            check()

        def on_wait(work: LaneWork, at: datetime, state: dict[str, int]) -> None:
            asked.waits.append(_Later(work.key, lane_of.get(id(work), ""), at, state))
            check()

        options: dict[str, Any] = {"catch_all_cached": self.catch_all_cached}
        options.update(self.scheduler_options)
        scheduler = Scheduler(
            self.open_session,
            self.settings,
            on_final=on_final,
            on_retry=on_retry,
            on_wait=on_wait,
            limiter=self.limiter,
            **options,
        )
        for route, works in lanes:
            scheduler.submit(route, list(works), **(states or {}).get(route.host, {}))
        try:
            await settled.wait()
            # every address is settled: let the sessions QUIT and release their slots
            # before the job ends; cancelled mid-goodbye, a session's slot would be free
            # while its MX still counts the connection (seen as 3 sessions for a cap of 2)
            await scheduler.wait_sessions(SESSION_END_WAIT)
        finally:
            await scheduler.stop()
        return asked


def _session_opener(smtp: Any, settings: Settings) -> OpenSession:
    from mailvet.engine.smtp import SessionTimeouts

    timeouts = SessionTimeouts.batch(settings)

    async def open_session(host: str, ip: str) -> Any:
        return await smtp.open_session(host, ip, timeouts=timeouts)

    return open_session


class ClusterWorker:
    """One ``mailvet worker``: a procrastinate worker with mailvet's tasks.

    ``await run(on_ready)``: migrates (mailvet's schema and procrastinate's), takes jobs
    until ``stop()``; ``on_ready(worker_id)`` is called once it takes jobs."""

    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int = 10,
        queues: Sequence[str] | None = None,
        worker_id: str | None = None,
        engine: Any | None = None,
        limiter: Limiter | None = None,
        scheduler_options: dict[str, Any] | None = None,
        webhook_options: dict[str, Any] | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
    ) -> None:
        if not uses_postgres(settings.database_url):
            raise ValueError("mailvet worker needs MAILVET_DATABASE_URL=postgresql://...")
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.queues = list(queues) if queues else None
        self.worker_id = worker_id or new_worker_id()
        self.engine = engine
        self.limiter = limiter or make_limiter(settings, self.worker_id)
        self.scheduler_options = dict(scheduler_options or {})
        self.webhook_options = dict(webhook_options or {})  # WebhookSender's (first_delay ...)
        self.shutdown_grace = shutdown_grace
        self._worker: Worker | None = None
        self._stopping = False

    def stop(self) -> None:
        """Stop taking jobs; running ones get ``shutdown_grace`` seconds, then go back
        to the queue for another worker."""
        self._stopping = True
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call]

    async def run(self, on_ready: Callable[[str], None] | None = None) -> None:
        from mailvet.engine.pipeline import Engine
        from mailvet.jobs.webhook import WebhookSender
        from mailvet.storage import open_store

        settings = self.settings
        store = open_store(settings.database_url)
        own_engine = self.engine is None
        engine = self.engine if self.engine is not None else Engine(settings)
        app = make_app(settings.database_url, pool_size=self.concurrency + 4)
        webhooks = WebhookSender(store, settings, **self.webhook_options)
        try:
            await store.migrate()
            cluster = ClusterStore(
                getattr(store, "engine"),  # noqa: B009 - the SqlStore's (PostgreSQL) engine
                _deferrer(app),
                plan_task=PLAN_TASK,
                webhook_task=WEBHOOK_TASK,
            )
            ctx = WorkerContext(
                settings=settings,
                store=store,
                cluster=cluster,
                limiter=self.limiter,
                open_session=_session_opener(engine.smtp, settings),
                resolver=engine.dns,
                checker=engine,
                webhooks=webhooks,
                catch_all_cached=getattr(engine.smtp, "catch_all_cached", lambda d: None),
                scheduler_options=self.scheduler_options,
            )
            start = getattr(self.limiter, "start", None)
            if start is not None:  # PgLimiter: its pool and lease renewal
                await start()
            async with app.open_async():
                worker = Worker(
                    app,
                    queues=self.queues,
                    name=self.worker_id,
                    concurrency=self.concurrency,
                    additional_context={"mailvet": ctx},
                    install_signal_handlers=False,
                    delete_jobs="successful",
                    fetch_job_polling_interval=FETCH_POLL,
                    update_heartbeat_interval=settings.worker_heartbeat_interval,
                    stalled_worker_timeout=settings.worker_stalled_timeout,
                    shutdown_graceful_timeout=self.shutdown_grace,
                )
                self._worker = worker
                if self._stopping:
                    return
                run = worker.run()  # type: ignore[no-untyped-call]
                task = asyncio.create_task(run, name="mailvet-worker")
                while worker.worker_id is None and not task.done():
                    await asyncio.sleep(0.02)
                if worker.worker_id is not None and on_ready is not None:
                    on_ready(self.worker_id)
                await task
        finally:
            self._worker = None
            close = getattr(self.limiter, "close", None)
            if close is not None:
                await close()
            await webhooks.stop()
            if own_engine:
                await engine.close()
            await store.close()


# --- the API side ---------------------------------------------------------------------


class BatchQueue:
    """What ``mailvet serve`` holds when it does not work batches itself: enqueues a
    batch's plan job when the batch is stored (or deleted: the job then does nothing)."""

    def __init__(self, database_url: str) -> None:
        self.app = make_app(database_url, pool_size=2)

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def batch_changed(self, batch_id: str) -> None:
        await _enqueue(self.app, PLAN_TASK, {"batch_id": batch_id}, f"plan:{batch_id}")
