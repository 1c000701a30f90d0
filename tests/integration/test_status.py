"""``mailvet status`` (jobs/status.py, cli.py): the batch machinery as the database has it.

On PostgreSQL the jobs are made through procrastinate's own API (its schema installed
by mailvet's migrations), the workers are procrastinate's rows, the sessions are PgLimiter
leases; the command runs as a subprocess. On SQLite it says there is no cluster queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Status
from typer.testing import CliRunner

from mailvet.cli import app as cli_app
from mailvet.jobs.limits import LaneLimits
from mailvet.jobs.limits_pg import PgLimiter, pg_conninfo
from mailvet.jobs.status import read_status
from mailvet.settings import Settings
from mailvet.storage import open_store
from mailvet.storage.base import Plan
from mailvet.storage.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]
LIMITS = LaneLimits(
    max_sessions=3, rcpt_per_session=50, rcpt_per_second=100.0, connects_per_minute=100
)


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        MAILVET_DATABASE_URL=url,
        PYTHONPATH=str(ROOT / "src"),
        COLUMNS="200",
    )
    return subprocess.run(
        [sys.executable, "-m", "mailvet", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def make_batches(url: str) -> str:
    """Two batches, one finished; returns the unfinished one's id."""
    store = open_store(url)
    try:
        await store.migrate()
        key, _ = await store.create_key("status", Plan.PAID)
        done = await store.create_batch(key.id, "done", ["a@x.test"])
        await store.finish_batch(done.id)
        pending = await store.create_batch(key.id, "[bold]list[/bold]", ["b@x.test", "c@x.test"])
        return pending.id
    finally:
        await store.close()


@pytest.fixture
async def cluster(pg_fresh_url: str) -> AsyncIterator[dict[str, Any]]:
    """A database with procrastinate jobs in every state, two workers (one dead),
    sessions held on one lane, a paused lane and an unfinished batch."""
    url = pg_fresh_url
    batch_id = await make_batches(url)
    queue = App(connector=PsycopgConnector(conninfo=pg_conninfo(url)))

    @queue.task(name="lane_slice", queue="lanes")
    def lane_slice(n: int) -> None:  # never run: the test only needs the jobs' rows
        return None

    async with queue.open_async():  # its schema: installed by store.migrate (revision 0004)
        for n in range(4):
            await lane_slice.defer_async(n=n)
        for n in range(2):  # retries: due in an hour
            await lane_slice.configure(schedule_in={"hours": 1}).defer_async(n=10 + n)
        alive = await queue.job_manager.register_worker()
        dead = await queue.job_manager.register_worker()
        running = await queue.job_manager.fetch_job(queues=None, worker_id=alive)
        failed = await queue.job_manager.fetch_job(queues=None, worker_id=alive)
        assert running is not None and failed is not None
        await queue.job_manager.finish_job(failed, status=Status.FAILED, delete_job=False)
        async with await psycopg.AsyncConnection.connect(pg_conninfo(url)) as conn:
            await conn.execute(
                "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '10 minutes' "
                "WHERE id = %s",
                (dead,),
            )
    settings = Settings(mx_lease_seconds=30.0)
    first = PgLimiter(url, holder="w1", settings=settings)
    second = PgLimiter(url, holder="w2", settings=settings)
    async with first, second:
        async with first.session("mx.busy.test", LIMITS), second.session("mx.busy.test", LIMITS):
            await first.rcpt("mx.busy.test", LIMITS, 10)
            first.pause("mx.paused.test", 600.0)
            await first.flush()
            yield {"url": url, "batch": batch_id, "alive": alive, "dead": dead}


@pytest.mark.postgres
async def test_status_json_from_a_subprocess(cluster: dict[str, Any]) -> None:
    done = await asyncio.to_thread(run_cli, cluster["url"], "--json")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["backend"] == "postgresql"
    assert got["cluster"] is True
    assert got["jobs"] == {"queued": 2, "scheduled": 2, "running": 1, "failed": 1}
    workers = {w["id"]: w for w in got["workers"]}
    assert set(workers) == {cluster["alive"], cluster["dead"]}
    assert workers[cluster["alive"]]["alive"] is True
    assert workers[cluster["alive"]]["running"] == 1
    assert workers[cluster["dead"]]["alive"] is False
    assert workers[cluster["dead"]]["seconds_since_heartbeat"] >= 590
    assert got["workers_alive"] == 1
    lanes = {lane["mx"]: lane for lane in got["lanes"]}
    assert set(lanes) == {"mx.busy.test", "mx.paused.test"}
    assert got["lanes_busy"] == 2
    assert got["lanes_paused"] == 1
    assert got["sessions_total"] == 2
    assert lanes["mx.busy.test"]["sessions"] == 2
    assert lanes["mx.busy.test"]["rcpt_per_second"] > 0
    assert lanes["mx.busy.test"]["paused_until"] is None
    assert lanes["mx.paused.test"]["sessions"] == 0
    paused_until = datetime.fromisoformat(lanes["mx.paused.test"]["paused_until"])
    assert 500 < (paused_until - datetime.now(UTC)).total_seconds() <= 600
    assert got["batches_unfinished"] == 1
    assert [b["id"] for b in got["batches"]] == [cluster["batch"]]
    assert got["batches"][0]["size"] == 2
    assert got["batches"][0]["done"] == 0


@pytest.mark.postgres
async def test_status_tables_for_humans(cluster: dict[str, Any]) -> None:
    done = await asyncio.to_thread(run_cli, cluster["url"])
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for title in ("Jobs", "Workers (1 alive)", "MX lanes busy (2)", "Unfinished batches (1)"):
        assert title in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "queued" in line and "running" in line)
    counts = next(line for line in lines[header + 1 :] if any(c.isdigit() for c in line))
    assert [int(x) for x in counts.replace("│", " ").split()] == [2, 2, 1, 1]
    busy = next(line for line in lines if "mx.busy.test" in line)
    assert busy.replace("│", " ").split()[:2] == ["mx.busy.test", "2"]
    assert cluster["batch"] in out
    assert "[bold]list[/bold]" in out  # a batch name is shown as it is, never as markup


@pytest.mark.postgres
async def test_status_without_procrastinate_schema(pg_fresh_url: str) -> None:
    await make_batches(pg_fresh_url)
    # a database at 0003: before the revision that installs procrastinate's schema
    from alembic import command
    from sqlalchemy import create_engine

    from mailvet.storage.migrations_runner import alembic_config

    engine = create_engine(pg_fresh_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0003")
    finally:
        engine.dispose()
    store = open_store(pg_fresh_url)
    assert isinstance(store, SqlStore)
    try:
        found = await read_status(store.engine, Settings())
    finally:
        await store.close()
    assert found.cluster is False
    assert found.jobs is None
    assert found.note is not None and "mailvet db upgrade" in found.note
    assert found.batches_unfinished == 1


def test_status_on_sqlite_says_there_is_no_cluster_queue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    batch_id = asyncio.run(make_batches(url))
    runner = CliRunner()
    done = runner.invoke(cli_app, ["status", "--json"], env={"MAILVET_DATABASE_URL": url})
    assert done.exit_code == 0, done.output
    got = json.loads(done.stdout)
    assert got["backend"] == "sqlite"
    assert got["cluster"] is False
    assert "no cluster queue" in got["note"]
    assert got["jobs"] is None
    assert [b["id"] for b in got["batches"]] == [batch_id]
    human = runner.invoke(cli_app, ["status"], env={"MAILVET_DATABASE_URL": url})
    assert human.exit_code == 0
    assert "no cluster queue" in human.stdout
    assert batch_id[:8] in human.stdout


def test_status_on_memory_is_an_error() -> None:
    done = CliRunner().invoke(cli_app, ["status"], env={"MAILVET_DATABASE_URL": "memory://"})
    assert done.exit_code == 1
    assert "keeps nothing" in done.stderr
