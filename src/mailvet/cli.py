"""The ``mailvet`` command: validate, batch, serve, worker, keys, db, status, doctor, sim.

Settings are built once here (from the environment, ``MAILVET_*``) and passed down.
Start-up time counts for ``validate --offline`` and ``batch --offline`` over a file
(bench/cli_offline.py): this module imports only what every command needs; rich, the
storage layer and the network stages are imported where they are used.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from mailvet.cli_offline import (
    MAX_JOBS,
    CommandError,
    batch_option_error,
    run_batch_offline,
    run_validate_json,
)
from mailvet.cli_offline import RESULT_STYLE as _RESULT_STYLE
from mailvet.cli_offline import BatchArgs as _BatchArgs
from mailvet.cli_offline import Progress as _Progress
from mailvet.cli_offline import open_files as _open_files
from mailvet.cli_offline import summary as _summary
from mailvet.parallel import MAX_AUTO_JOBS
from mailvet.settings import Settings

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console

    from mailvet.engine.facts import Facts
    from mailvet.jobs.status import ClusterStatus
    from mailvet.storage.base import BatchRecord, Store
    from mailvet.verdict import Verdict

__all__ = ["app", "main"]

app = typer.Typer(help="mailvet: self-hosted email verification.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

_VALIDATE_CONCURRENCY = 32


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@app.callback()
def _root(ctx: typer.Context) -> None:
    try:
        ctx.obj = Settings()
    except Exception as exc:  # a bad MAILVET_* value: say which, no traceback
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


def _addresses(args: list[str]) -> Iterator[str]:
    for arg in args:
        if arg == "-":
            for line in sys.stdin:
                line = line.strip()
                if line:
                    yield line
        else:
            yield arg


async def _verify_all(
    settings: Settings, addresses: Iterable[str], offline: bool
) -> AsyncIterator[tuple[Verdict, Facts | None]]:
    """Verify with bounded concurrency, yielding results in input order."""
    from mailvet.engine.pipeline import Engine

    engine = Engine(settings)
    if offline:
        # no I/O to overlap: the engine's bulk path (per-domain memo of the verdict
        # function's output), the one bench/offline.py measures
        for raw in addresses:
            yield engine.verdict_offline(raw), None
        return
    sem = asyncio.Semaphore(_VALIDATE_CONCURRENCY)

    async def one(raw: str) -> tuple[Verdict, Facts]:
        async with sem:
            checked = await engine.verify(raw, offline=offline)
            return checked.verdict, checked.facts

    try:
        window: list[asyncio.Task[tuple[Verdict, Facts]]] = []
        for raw in addresses:
            window.append(asyncio.ensure_future(one(raw)))
            if len(window) >= _VALIDATE_CONCURRENCY * 4:
                yield await window.pop(0)
        for task in window:
            yield await task
    finally:
        await engine.close()


def _print_details(console: Console, facts: Facts) -> None:
    for entry in facts.transcript:
        host = f" {entry.host}" if entry.host else ""
        console.print(f"    {entry.at_ms:8.1f} ms {entry.kind:<7}{host} {entry.text}", markup=False)


_JOBS_HELP = (
    "Processes that check a long input offline (default: one per CPU but one, up to"
    f" {MAX_AUTO_JOBS}, with 3 CPUs or more; 1: all in this process)."
)


@app.command()
def validate(
    ctx: typer.Context,
    addresses: Annotated[list[str], typer.Argument(help="Addresses; '-' reads stdin.")],
    offline: Annotated[bool, typer.Option(help="Syntax and lists only; no DNS/SMTP.")] = False,
    json: Annotated[bool, typer.Option("--json", help="One JSON data object a line.")] = False,
    details: Annotated[bool, typer.Option(help="Show the DNS/SMTP evidence.")] = False,
    jobs: Annotated[int | None, typer.Option(min=1, max=MAX_JOBS, help=_JOBS_HELP)] = None,
) -> None:
    """Validate addresses and print the verdicts."""
    settings = _settings(ctx)
    if jobs is not None and not (offline and json and not details):
        typer.echo("error: --jobs works with --offline --json (without --details)", err=True)
        raise typer.Exit(2)
    if offline and json and not details:
        # the bulk path (mailvet.cli_offline, which also runs it without typer)
        try:
            run_validate_json(settings, addresses, jobs)
        except CommandError as exc:
            if exc.message:
                typer.echo(exc.message, err=True)
            raise typer.Exit(exc.code) from exc
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    rows: list[Verdict] = []
    if offline and not json:
        console.print("[dim]offline: syntax and lists only, no DNS or SMTP checks[/dim]")

    async def run() -> None:
        out = sys.stdout.buffer
        async for verdict, facts in _verify_all(settings, _addresses(addresses), offline):
            if json:
                data = verdict.as_dict()
                if details:
                    data["details"] = [
                        {"at_ms": e.at_ms, "kind": e.kind, "host": e.host, "text": e.text}
                        for e in (facts.transcript if facts is not None else [])
                    ]
                out.write(orjson.dumps(data) + b"\n")
                out.flush()
            elif details:
                _print_row(console, verdict)
                if facts is not None:
                    _print_details(console, facts)
            else:
                rows.append(verdict)

    asyncio.run(run())
    if rows:
        table = Table("email", "result", "reason", "score", "did you mean", "mx", "provider")
        for v in rows:
            style = _RESULT_STYLE[v.result.value]
            table.add_row(
                v.email,
                f"[{style}]{v.result.value}[/{style}]",
                v.reason.value,
                str(v.score),
                v.did_you_mean or "",
                v.mx_record or "",
                v.provider or "",
            )
        console.print(table)


def _print_row(console: Console, v: Verdict) -> None:
    style = _RESULT_STYLE[v.result.value]
    console.print(
        f"[bold]{v.email}[/bold]  [{style}]{v.result.value}[/{style}]  {v.reason.value}"
        f"  score={v.score}  mx={v.mx_record or '-'}  provider={v.provider or '-'}"
    )


# ---- mailvet batch: a file in, the same file with verdicts out ----


_BATCH_HELP = (
    "Verify every address of a file; write its rows with the verdict columns added.\n\n"
    "The input's own columns are kept. Without --offline the batch is stored (SQLite, one"
    " database per input file, named after its path, size and SHA-256) and checked by the"
    " batch engine: per-mail-server lanes, polite limits, greylisting retries. Run the same"
    " command again after an interruption and it resumes where it stopped; addresses with a"
    " saved verdict are not asked again."
)


@app.command(help=_BATCH_HELP)
def batch(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(help="CSV, JSON lines or a plain list ('-': stdin, with --offline)."),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Where the results go ('-': stdout).")
    ],
    offline: Annotated[
        bool, typer.Option(help="Syntax and lists only: no DNS/SMTP, no database.")
    ] = False,
    out_format: Annotated[
        str | None,
        typer.Option("--format", help="csv or jsonl (default: OUT's extension, else the input's)."),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(help="csv, jsonl or plain (default: the extension, else the first line)."),
    ] = None,
    column: Annotated[
        str | None,
        typer.Option(help="The address column (CSV header name) or field (JSON lines)."),
    ] = None,
    encoding: Annotated[str, typer.Option(help="The input's text encoding.")] = "utf-8",
    delimiter: Annotated[
        str | None, typer.Option(help="CSV delimiter (default: guessed from the header).")
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(help="Show a progress bar (default: when stderr is a terminal)."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where stored batches live, one SQLite file per input file"
            " (default: the per-user data directory's batches/)."
        ),
    ] = None,
    jobs: Annotated[int | None, typer.Option(min=1, max=MAX_JOBS, help=_JOBS_HELP)] = None,
) -> None:
    """Verify every address of a file; write its rows with the verdict columns added."""
    from mailvet.batchfile import BatchFileError

    settings = _settings(ctx)
    show = sys.stderr.isatty() if progress is None else progress
    args = _BatchArgs(
        file, output, out_format, input_format, column, encoding, delimiter, show, state_dir, jobs
    )
    if jobs is not None and not offline:
        typer.echo("error: --jobs works with --offline", err=True)
        raise typer.Exit(2)
    if offline:  # mailvet.cli_offline, which also runs it without typer
        try:
            run_batch_offline(settings, args)
        except CommandError as exc:
            if exc.message:
                typer.echo(exc.message, err=True)
            raise typer.Exit(exc.code) from exc
        return
    from mailvet.storage.common import StorageError

    failures = (StorageError, RuntimeError)  # the database or the runner failing
    problem = batch_option_error(input_format, delimiter)
    if problem is not None:
        typer.echo(problem, err=True)
        raise typer.Exit(2)
    if file == "-":
        typer.echo(
            "error: reading stdin needs --offline (a stored batch resumes from its file)",
            err=True,
        )
        raise typer.Exit(2)
    try:
        asyncio.run(_batch_network(settings, args))
    except BatchFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"error: {exc.strerror or exc}: {exc.filename or file}", err=True)
        raise typer.Exit(2) from exc
    except _Busy as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except failures as exc:
        typer.echo(f"error: {exc}; run the same command again to resume", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        typer.echo("interrupted; run the same command again to resume", err=True)
        raise typer.Exit(130) from None


_CLI_KEY = "mailvet batch"  # the key that owns the stored batch (its database holds one)
_POLL = 0.5  # seconds between progress reads from the store
_SAY_EVERY = 30.0  # seconds between progress lines when no bar is shown
_COUNTS_EVERY = 2.0  # seconds, at least, between counts by result for the bar


async def _batch_network(settings: Settings, args: _BatchArgs) -> None:
    """Store the file's addresses as a batch (once), run it in-process, write OUT from
    the store next to the file's own rows."""
    from platformdirs import user_data_path

    from mailvet.batchfile import file_fingerprint

    if args.output != "-" and Path(args.output).resolve() == Path(args.file).resolve():
        raise OSError(17, "OUT would overwrite the input", args.output)
    fingerprint = file_fingerprint(args.file)
    state = args.state_dir or user_data_path("mailvet", appauthor=False) / "batches"
    state.mkdir(parents=True, exist_ok=True)
    with _exclusive(state / f"{fingerprint}.lock", args.file):
        await _batch_stored(settings, args, state / f"{fingerprint}.db", fingerprint)


class _Busy(Exception):
    """Another process holds the input file's batch."""


@contextmanager
def _exclusive(path: Path, file: str) -> Iterator[None]:
    """One ``mailvet batch`` at a time per input file (two would ask the same addresses)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Busy(f"another mailvet batch is working on {file}") from None
        yield
    finally:
        os.close(fd)  # releases the lock


async def _batch_stored(settings: Settings, args: _BatchArgs, db: Path, fingerprint: str) -> None:
    from mailvet.storage import open_store
    from mailvet.storage.base import Plan

    store = open_store(f"sqlite:///{db}")
    try:
        await store.migrate()
        key = next((k for k in await store.list_keys() if k.name == _CLI_KEY), None)
        if key is None:
            key, _ = await store.create_key(_CLI_KEY, Plan.PAID)
        found = await store.list_batches(key.id, limit=1)
        if found:
            record = found[0]
            typer.echo(
                f"resuming: {record.done:,} of {record.size:,} addresses already checked", err=True
            )
        else:
            record = await _store_batch(settings, store, key.id, fingerprint, args)
        if record.finished_at is None:
            await _run_batch(settings, store, key.id, record.id, record.size, args.show)
        rows, by_result = await _write_from_store(store, record.id, args)
    finally:
        await store.close()
    _summary(rows, by_result, args.output, offline=False)


async def _store_batch(
    settings: Settings, store: Store, user_id: str, name: str, args: _BatchArgs
) -> BatchRecord:
    """Read the file's addresses (with their de-duplication keys) and store the batch."""
    from mailvet.batchfile import INPUT_FORMATS, BatchFileError, open_input
    from mailvet.engine.syntax import SyntaxPolicy
    from mailvet.jobs.plan import dedupe_keys

    emails: list[str] = []
    with open_input(
        args.file,
        fmt=INPUT_FORMATS.get(args.input_format or ""),
        column=args.column,
        encoding=args.encoding,
        delimiter=args.delimiter,
    ) as source:
        for raw, _ in source.rows():
            emails.append(raw)
    if len(emails) > settings.max_batch_size:
        raise BatchFileError(
            f"{args.file}: {len(emails):,} addresses, over max_batch_size"
            f" ({settings.max_batch_size:,}; MAILVET_MAX_BATCH_SIZE)"
        )
    # the same keys as POST /v1/batch: spellings of one address are asked once
    keys = dedupe_keys(emails, SyntaxPolicy.from_settings(settings))
    record = await store.create_batch(user_id, name, emails, keys=keys)
    typer.echo(f"stored {record.size:,} addresses ({len(set(keys)):,} distinct)", err=True)
    return record


async def _run_batch(
    settings: Settings, store: Store, user_id: str, batch_id: str, size: int, show: bool
) -> None:
    """The batch engine in this process until the batch is finished."""
    from mailvet.engine.pipeline import Engine
    from mailvet.jobs.inprocess import BatchRunner

    engine = Engine(settings)
    runner = BatchRunner(store, engine, settings)
    bar = _Progress(size, "checking") if show else None
    loop = asyncio.get_running_loop()
    said = counts_at = loop.time()
    by_result: dict[str, int] = {}
    runner.start()
    try:
        while True:
            record = await store.get_batch(user_id, batch_id)
            if record is None:  # pragma: no cover - nothing deletes it here
                raise RuntimeError("the stored batch is gone")
            if bar is not None:
                # counts group the whole batch: asked now and then, never more than a
                # tenth of the time (a million rows take a while on SQLite)
                now = loop.time()
                if now >= counts_at or record.finished_at is not None:
                    by_result = (await store.counts(batch_id)).by_result
                    counts_at = now + max(_COUNTS_EVERY, 10 * (loop.time() - now))
                bar.update(record.done, by_result, waiting=record.retry_waiting)
            elif loop.time() - said >= _SAY_EVERY:  # no terminal: a line now and then
                said = loop.time()
                waiting = f", {record.retry_waiting:,} waiting for a retry"
                typer.echo(
                    f"checked {record.done:,} of {size:,}{waiting if record.retry_waiting else ''}",
                    err=True,
                )
            if record.finished_at is not None:
                break
            if not runner.running:  # the runner's loop died: say so rather than wait
                raise RuntimeError("the batch runner stopped (its log says why)")
            await asyncio.sleep(_POLL)
    finally:
        if bar is not None:
            bar.stop()
        await runner.stop()  # saves what was reached; the rest stays pending
        await engine.close()


async def _write_from_store(
    store: Store, batch_id: str, args: _BatchArgs
) -> tuple[int, dict[str, int]]:
    """OUT: the file's rows, in order, each with its stored verdict."""
    from mailvet.batchfile import BatchFileError

    source, out = _open_files(args)
    by_result: dict[str, int] = {}
    rows = 0
    try:
        with source:
            records = source.rows()
            async for item in store.iter_items(batch_id):
                _, row = next(records)
                verdict = item.verdict
                if verdict is not None:
                    result = str(verdict.get("result"))
                    by_result[result] = by_result.get(result, 0) + 1
                out.write(row, verdict)
                rows += 1
            if next(records, None) is not None:
                raise BatchFileError(f"{args.file} changed while it was being checked")
        out.commit()
    except BaseException:
        out.discard()
        raise
    return rows, by_result


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    dev_key_file: Annotated[
        Path | None,
        typer.Option(help="Create a key if this file holds no live one, and print it."),
    ] = None,
) -> None:
    """Run the HTTP API (migrations are applied on start)."""
    from mailvet.api import server
    from mailvet.api.app import create_app

    settings = _settings(ctx)
    host = host or settings.host
    port = port or settings.port
    if dev_key_file is not None:
        secret = asyncio.run(_dev_key(settings, dev_key_file))
        url = f"http://{host}:{port}"
        typer.echo(f"API key: {secret}")
        typer.echo(
            f"Try:     curl -s -H 'x-mails-api-key: {secret}' "
            f"'{url}/v1/validate?email=someone@example.com'"
        )
        typer.echo(f"Docs:    {url}/docs")
    from mailvet.storage import describe_url

    typer.echo(f"Database: {describe_url(settings.database_url)}")
    # slow clients bounded, connections capped, logs configured: see mailvet.api.server
    server.run(create_app(settings), settings, host, port)


@app.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Jobs run at once (each probe job: one SMTP session).")
    ] = 10,
    queues: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated queues to take jobs from: mailvet_plan (planning, webhooks),"
            " mailvet_smtp (SMTP sessions; needs outbound port 25). Default: both."
        ),
    ] = None,
) -> None:
    """Work batches from PostgreSQL (procrastinate jobs) until SIGTERM or Ctrl-C."""
    import logging.config
    import signal

    from mailvet.logs import logging_config
    from mailvet.settings import uses_postgres

    settings = _settings(ctx)
    if not uses_postgres(settings.database_url):
        typer.echo(
            "error: mailvet worker needs PostgreSQL: set MAILVET_DATABASE_URL=postgresql://..."
            " (with SQLite, `mailvet serve` works batches itself)",
            err=True,
        )
        raise typer.Exit(2)
    chosen = [q.strip() for q in (queues or "").split(",") if q.strip()] or None
    from mailvet.jobs.cluster import QUEUES, ClusterWorker

    unknown = sorted(set(chosen or ()) - set(QUEUES))
    if unknown:
        typer.echo(
            f"error: unknown queue(s) {', '.join(unknown)}; use {', '.join(QUEUES)}", err=True
        )
        raise typer.Exit(2)
    logging.config.dictConfig(logging_config(settings))
    runner = ClusterWorker(settings, concurrency=concurrency, queues=chosen)

    def ready(worker_id: str) -> None:
        sys.stderr.write(f"mailvet worker ready: {worker_id}\n")
        sys.stderr.flush()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.stop)
        try:
            await runner.run(ready)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    from mailvet.storage import StorageError, describe_url

    try:
        asyncio.run(run())
    except (StorageError, OSError) as exc:
        typer.echo(f"error: {exc} ({describe_url(settings.database_url)})", err=True)
        raise typer.Exit(1) from exc
    except Exception as exc:  # procrastinate's loop failed (the database went away ...)
        logging.getLogger("mailvet.jobs.cluster").exception("the worker stopped")
        typer.echo(f"error: the worker stopped: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from exc
    typer.echo("mailvet worker: stopped", err=True)


async def _dev_key(settings: Settings, path: Path) -> str:
    """The key kept in ``path`` if it still works, else a new paid key saved there (0600)."""
    from mailvet.storage.base import Plan

    async with _store(settings) as store:
        if path.exists():
            secret = path.read_text().strip()
            if secret and await store.authenticate(secret) is not None:
                return secret
        # the operator's own key: an admin one (it manages keys in the dashboard)
        _, secret = await store.create_key("make-run", Plan.PAID, admin=True)
        # owner-only from the first byte, even if the file existed with looser modes
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(secret + "\n")
        return secret


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A label for the key.")],
    plan: Annotated[str, typer.Option(help="paid or free (free cannot use batches).")] = "paid",
    admin: Annotated[
        bool, typer.Option("--admin", help="May manage keys in the dashboard.")
    ] = False,
) -> None:
    """Create a key and print its secret (shown once, stored hashed)."""
    from mailvet.storage.base import Plan

    if plan not in ("paid", "free"):
        typer.echo("error: --plan must be 'paid' or 'free'", err=True)
        raise typer.Exit(2)

    async def run() -> str:
        async with _store(_settings(ctx)) as store:
            key, secret = await store.create_key(name, Plan(plan), admin=admin)
            role = ", admin" if key.admin else ""
            return (
                f"{secret}\n(id {key.id}, plan {key.plan.value}{role}; "
                "the secret is not shown again)"
            )

    typer.echo(asyncio.run(run()))


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """List keys (never their secrets)."""
    from rich.console import Console
    from rich.table import Table

    async def run() -> None:
        async with _store(_settings(ctx)) as store:
            table = Table("id", "name", "plan", "admin", "prefix", "created", "revoked")
            for k in await store.list_keys():
                table.add_row(
                    k.id,
                    k.name,
                    k.plan.value,
                    "yes" if k.admin else "",
                    k.prefix,
                    k.created_at.isoformat(timespec="seconds"),
                    k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
                )
            Console().print(table)

    asyncio.run(run())


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context, key: Annotated[str, typer.Argument(help="Key id or prefix.")]
) -> None:
    """Revoke a key by id or unique prefix."""

    async def run() -> bool:
        async with _store(_settings(ctx)) as store:
            return await store.revoke_key(key)

    if not asyncio.run(run()):
        typer.echo(f"error: no single live key matches {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply database migrations (on PostgreSQL, procrastinate's job queue schema too)."""

    async def run() -> None:
        async with _store(_settings(ctx)):
            pass

    asyncio.run(run())
    typer.echo("database is at the latest revision")


# ---- mailvet status: the batch machinery, from the database ----


@app.command("status")
def status_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """Show queued / scheduled / running / failed jobs, workers, busy MX lanes, batches."""
    from mailvet.jobs.status import read_status
    from mailvet.storage.sql import SqlStore

    settings = _settings(ctx)

    async def run() -> ClusterStatus | None:
        from sqlalchemy.exc import SQLAlchemyError

        from mailvet.storage import StorageError

        async with _store(settings) as store:
            if not isinstance(store, SqlStore):
                return None
            try:
                return await read_status(store.engine, settings)
            except SQLAlchemyError as exc:  # one line (the driver's), not a traceback
                cause = str(getattr(exc, "orig", None) or type(exc).__name__)
                line = cause.strip().splitlines()[0] if cause.strip() else type(exc).__name__
                raise StorageError(f"database error: {line}") from None

    found = asyncio.run(run())
    if found is None:
        typer.echo("error: an in-memory database keeps nothing to show", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(orjson.dumps(found.to_json()).decode())
        return
    _print_status(found)


def _print_status(found: ClusterStatus) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)

    def when(value: datetime | None) -> str:
        return value.isoformat(timespec="seconds") if value is not None else ""

    console.print(f"database: {found.backend}, at {when(found.now)}")
    if found.note:
        console.print(found.note)
    if found.jobs is not None:
        jobs = Table("queued", "scheduled (retries)", "running", "failed", title="Jobs")
        j = found.jobs
        jobs.add_row(str(j.queued), str(j.scheduled), str(j.running), str(j.failed))
        console.print(jobs)
        workers = Table(
            "worker", "last heartbeat", "seconds ago", "running", "alive",
            title=f"Workers ({found.workers_alive} alive)",
        )  # fmt: skip
        for w in found.workers:
            workers.add_row(
                str(w.id),
                when(w.last_heartbeat),
                f"{w.seconds_since_heartbeat:.0f}",
                str(w.running),
                "yes" if w.alive else "[red]no[/red]",
            )
        console.print(workers)
    if found.backend == "postgresql":
        lanes = Table(
            "mx", "sessions", "paused until", "RCPT/s", title=f"MX lanes busy ({found.lanes_busy})"
        )
        for lane in found.lanes:
            rate = lane.rcpt_per_second
            lanes.add_row(
                escape(lane.mx),
                str(lane.sessions),
                when(lane.paused_until),
                "" if rate is None else str(rate),
            )
        console.print(lanes)
    batches = Table(
        "batch", "name", "done", "size", "retry waiting", "created",
        title=f"Unfinished batches ({found.batches_unfinished})",
    )  # fmt: skip
    for b in found.batches:
        batches.add_row(
            b.id,
            escape(b.name or ""),
            str(b.done),
            str(b.size),
            str(b.retry_waiting),
            when(b.created_at),
        )
    console.print(batches)


@app.command()
def doctor(
    ctx: typer.Context,
    probe_domain: Annotated[
        str, typer.Option(help="A domain whose MX is used to test outbound port 25.")
    ] = "gmail.com",
) -> None:
    """Check that this host can verify at all, and say what to fix."""
    from rich.console import Console

    from mailvet.doctor import run_doctor

    ok = asyncio.run(run_doctor(_settings(ctx), probe_domain, Console(highlight=False)))
    raise typer.Exit(0 if ok else 1)


# ---- mailvet sim: the simulated internet, for trying mailvet without port 25 ----

_SIM_TRIM_EVERY = 30.0  # seconds between trims of the simulator's query/session records


@app.command()
def sim(
    dns_port: Annotated[
        int, typer.Option(min=0, max=65535, help="DNS port on 127.0.0.1 (0: a free one).")
    ] = 10053,
    smtp_port: Annotated[
        int, typer.Option(min=0, max=65535, help="SMTP port of every MX (0: a free one).")
    ] = 10025,
    export_file: Annotated[
        Path | None,
        typer.Option(help="Also write the MAILVET_* lines here once up (removed on exit)."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
) -> None:
    """Run a simulated internet on loopback (DNS + mail servers) until Ctrl-C.

    Prints the MAILVET_* settings that point `mailvet validate` / `serve` at it, and
    example addresses showing every verdict. Nothing leaves this machine.
    """
    import contextlib
    import signal

    from mailvet.testing.world import EXAMPLES, ordinary_domains, sim_world

    net = sim_world(dns_port=dns_port, smtp_port=smtp_port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await net.__aenter__()
        except OSError as exc:
            typer.echo(f"error: the simulated internet could not start: {exc}", err=True)
            typer.echo(
                "Another `mailvet sim` may hold the ports (--dns-port 0 --smtp-port 0 pick"
                " free ones). It listens on 127.0.0.1, 127.0.0.10-33 and 127.0.1.1-4: all"
                " loopback on Linux; on macOS add them with `ifconfig lo0 alias`.",
                err=True,
            )
            raise typer.Exit(1) from exc
        written: str | None = None
        try:
            env = net.env()
            if export_file is not None:
                written = _sim_write_env(export_file, env)
            if json:
                info = {
                    "dns": net.dns.nameserver,
                    "smtp_port": net.smtp.port,
                    "env": env,
                    "domains": len(ordinary_domains()),
                    "examples": [
                        {"email": e.email, "result": e.result, "reason": e.reason, "shows": e.shows}
                        for e in EXAMPLES
                    ],
                }
                typer.echo(orjson.dumps(info).decode())
            else:
                _sim_print(net.dns.nameserver, net.smtp.port, env, export_file)
            sys.stdout.flush()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _SIM_TRIM_EVERY)
                net.forget()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            await net.__aexit__(None, None, None)
            if export_file is not None and written is not None:
                with contextlib.suppress(OSError):
                    if export_file.read_text() == written:  # still ours: take it back
                        export_file.unlink()
        typer.echo("mailvet sim: stopped", err=True)

    asyncio.run(run())


def _sim_write_env(path: Path, env: dict[str, str]) -> str:
    """Write ``KEY=value`` lines to ``path`` in one step (readers never see half a file)."""
    import shlex

    text = (
        "# mailvet sim: load with  set -a; . ./FILE; set +a  (removed when the sim stops)\n"
        + "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


def _sim_print(nameserver: str, smtp_port: int, env: dict[str, str], file: Path | None) -> None:
    import shlex

    from mailvet.testing.world import EXAMPLES, ordinary_domains

    echo = typer.echo
    echo(f"mailvet sim: a simulated internet on loopback, DNS {nameserver}, SMTP port {smtp_port}")
    echo(
        f"{len(ordinary_domains())} ordinary *.test domains plus the scripted sites below;"
        " nothing leaves this machine. Stop with Ctrl-C."
    )
    echo("")
    where = ""
    if file is not None:
        # `. NAME` without a slash searches $PATH, not the current folder (POSIX sh)
        name = str(file) if "/" in str(file) else f"./{file}"
        where = f" (also in {file}: set -a; . {shlex.quote(name)}; set +a)"
    echo(f"Point mailvet at it{where}:")
    for key, value in env.items():
        echo(f"export {key}={shlex.quote(value)}")
    echo("")
    echo("Then try `mailvet validate ADDRESS...` (or /v1/validate on `mailvet serve`):")
    width = max(len(e.email) for e in EXAMPLES)
    for e in EXAMPLES:
        echo(f"  {e.email:<{width}}  {e.result:<13} {e.reason:<16} {e.shows}")


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[Store]:
    """Open the configured store with migrations applied; close it after.

    A database fault ends the command with its one-line cause, not a traceback.
    """
    from mailvet.storage import StorageError, describe_url, open_store

    store = open_store(settings.database_url)
    try:
        await store.migrate()
        yield store
    except StorageError as exc:
        typer.echo(f"error: {exc} ({describe_url(settings.database_url)})", err=True)
        raise typer.Exit(1) from exc
    finally:
        await store.close()


def main() -> None:
    app()
