"""The ``mailvet`` command: validate, serve, keys, db, doctor, sim.

Settings are built once here (from the environment, ``MAILVET_*``) and passed down.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from mailvet.engine.facts import Facts
from mailvet.settings import Settings
from mailvet.storage.base import Store
from mailvet.verdict import Verdict

__all__ = ["app", "main"]

app = typer.Typer(help="mailvet: self-hosted email verification.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

_RESULT_STYLE = {
    "deliverable": "green",
    "undeliverable": "red",
    "risky": "yellow",
    "unknown": "blue",
}
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


@app.command()
def validate(
    ctx: typer.Context,
    addresses: Annotated[list[str], typer.Argument(help="Addresses; '-' reads stdin.")],
    offline: Annotated[bool, typer.Option(help="Syntax and lists only; no DNS/SMTP.")] = False,
    json: Annotated[bool, typer.Option("--json", help="One JSON data object a line.")] = False,
    details: Annotated[bool, typer.Option(help="Show the DNS/SMTP evidence.")] = False,
) -> None:
    """Validate addresses and print the verdicts."""
    settings = _settings(ctx)
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


async def _dev_key(settings: Settings, path: Path) -> str:
    """The key kept in ``path`` if it still works, else a new paid key saved there (0600)."""
    from mailvet.storage.base import Plan

    async with _store(settings) as store:
        if path.exists():
            secret = path.read_text().strip()
            if secret and await store.authenticate(secret) is not None:
                return secret
        _, secret = await store.create_key("make-run", Plan.PAID)
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
) -> None:
    """Create a key and print its secret (shown once, stored hashed)."""
    from mailvet.storage.base import Plan

    if plan not in ("paid", "free"):
        typer.echo("error: --plan must be 'paid' or 'free'", err=True)
        raise typer.Exit(2)

    async def run() -> str:
        async with _store(_settings(ctx)) as store:
            key, secret = await store.create_key(name, Plan(plan))
            return f"{secret}\n(id {key.id}, plan {key.plan.value}; the secret is not shown again)"

    typer.echo(asyncio.run(run()))


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """List keys (never their secrets)."""

    async def run() -> None:
        async with _store(_settings(ctx)) as store:
            table = Table("id", "name", "plan", "prefix", "created", "revoked")
            for k in await store.list_keys():
                table.add_row(
                    k.id,
                    k.name,
                    k.plan.value,
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
    """Apply database migrations."""

    async def run() -> None:
        async with _store(_settings(ctx)):
            pass

    asyncio.run(run())
    typer.echo("database is at the latest revision")


@app.command()
def doctor(
    ctx: typer.Context,
    probe_domain: Annotated[
        str, typer.Option(help="A domain whose MX is used to test outbound port 25.")
    ] = "gmail.com",
) -> None:
    """Check that this host can verify at all, and say what to fix."""
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
