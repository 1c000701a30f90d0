"""jobs/cluster.py without a database: URLs, slices, the worker's refusals, the setting."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from mailvet.cli import app
from mailvet.engine.facts import Facts
from mailvet.engine.syntax import SyntaxPolicy, check_syntax
from mailvet.jobs.cluster import ClusterWorker, _slices, libpq_url
from mailvet.jobs.plan import LaneWork
from mailvet.settings import Settings


def work(email: str) -> LaneWork:
    syntax = check_syntax(email, SyntaxPolicy())
    assert syntax.ascii_domain is not None
    return LaneWork("b", email, email, syntax.ascii_domain, Facts(syntax))


def test_inprocess_worker_is_on_for_sqlite_and_off_for_postgres() -> None:
    assert Settings(database_url="sqlite:///x.db").runs_batches_inprocess()
    assert not Settings(database_url="postgresql://u@h/db").runs_batches_inprocess()
    assert not Settings(database_url="postgresql+psycopg://u@h/db").runs_batches_inprocess()
    assert Settings(
        database_url="postgres://u@h/db", inprocess_worker=True
    ).runs_batches_inprocess()
    assert not Settings(
        database_url="sqlite:///x.db", inprocess_worker=False
    ).runs_batches_inprocess()


def test_inprocess_worker_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILVET_INPROCESS_WORKER", "false")
    monkeypatch.setenv("MAILVET_WORKER_STALLED_TIMEOUT", "4")
    settings = Settings(database_url="sqlite:///x.db")
    assert settings.inprocess_worker is False and settings.worker_stalled_timeout == 4.0
    with pytest.raises(ValueError):
        Settings(worker_heartbeat_interval=0)


def test_libpq_url_drops_the_driver_and_keeps_the_rest() -> None:
    url = libpq_url("postgresql+psycopg://mv:s%40cret@db.example:5433/mailvet?sslmode=require")
    assert url == "postgresql://mv:s%40cret@db.example:5433/mailvet?sslmode=require"
    assert libpq_url("postgres://u@h/db") == "postgresql://u@h/db"


def test_slices_hold_one_session_each() -> None:
    """An address is one RCPT, a new domain of the slice one more (its catch-all check)."""
    works = [work(f"u{i}@a.test") for i in range(5)] + [work("x@b.test"), work("y@c.test")]
    nothing: Any = lambda domain: None  # noqa: E731
    slices = _slices(works, 3, nothing)
    assert slices == [
        ["u0@a.test", "u1@a.test"],
        ["u2@a.test", "u3@a.test"],
        ["u4@a.test"],
        ["x@b.test"],
        ["y@c.test"],
    ]
    assert [k for s in slices for k in s] == [w.key for w in works]
    known: Any = lambda domain: False  # noqa: E731 - every catch-all finding cached
    assert _slices(works, 3, known) == [
        ["u0@a.test", "u1@a.test", "u2@a.test"],
        ["u3@a.test", "u4@a.test", "x@b.test"],
        ["y@c.test"],
    ]
    assert _slices(works[:1], 1, nothing) == [["u0@a.test"]]  # never an empty slice


def test_a_worker_needs_postgresql() -> None:
    with pytest.raises(ValueError, match="postgresql:"):
        ClusterWorker(Settings(database_url="sqlite:///x.db"))
    result = CliRunner().invoke(app, ["worker"], env={"MAILVET_DATABASE_URL": "sqlite:///x.db"})
    assert result.exit_code == 2
    assert "mailvet worker needs PostgreSQL" in result.output


def test_worker_refuses_an_unknown_queue() -> None:
    env = {"MAILVET_DATABASE_URL": "postgresql://u@127.0.0.1:9/db"}
    result = CliRunner().invoke(app, ["worker", "--queues", "mailvet_smtp,nope"], env=env)
    assert result.exit_code == 2
    assert "unknown queue(s) nope" in result.output


def test_worker_without_its_database_says_so() -> None:
    env = {"MAILVET_DATABASE_URL": "postgresql://mailvet:secret@127.0.0.1:9/db"}
    result = CliRunner().invoke(app, ["worker"], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("error: database error")
    assert "secret" not in result.output  # the URL is shown with its password masked
