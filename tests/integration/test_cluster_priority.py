"""jobs/cluster.py on real PostgreSQL: a batch's planning is never queued behind its
own probe jobs (procrastinate fetches by priority, then by id).

bench/batch.py --workers showed why it matters: each plan job (2,000 addresses) defers
its chunk's probe jobs and then the next plan job, which then waited behind hundreds of
probe jobs; the lanes ran dry between chunks and the batch went at the planning's pace
(about 135 addresses/s, 3.7 x the bound, with 1, 2 or 4 workers alike).
"""

from __future__ import annotations

import pytest

from mailvet.jobs.cluster import PLAN_TASK, PROBE_TASK, BatchQueue, make_app
from mailvet.storage import open_store

pytestmark = pytest.mark.postgres


async def test_a_plan_job_is_fetched_before_probe_jobs_queued_earlier(pg_fresh_url: str) -> None:
    store = open_store(pg_fresh_url)
    try:
        await store.migrate()  # mailvet's schema and procrastinate's (revision 0004)
    finally:
        await store.close()
    app = make_app(pg_fresh_url)
    queue = BatchQueue(pg_fresh_url)
    async with app.open_async():
        await queue.open()
        try:
            for host in ("mx1.a.test", "mx2.a.test", "mx3.a.test"):  # as a plan job defers
                await app.configure_task(PROBE_TASK).defer_async(batch_id="b1", host=host)
            await queue.batch_changed("b2")  # what POST /v1/batch does: the plan job
        finally:
            await queue.close()
        manager = app.job_manager
        worker = await manager.register_worker()
        fetched = [await manager.fetch_job(queues=None, worker_id=worker) for _ in range(4)]
    assert [job.task_name if job else None for job in fetched] == [
        PLAN_TASK,
        PROBE_TASK,
        PROBE_TASK,
        PROBE_TASK,
    ]
