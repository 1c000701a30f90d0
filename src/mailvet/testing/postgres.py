"""A throwaway PostgreSQL server for tests and benchmarks.

``postgres_server()`` runs Debian's ``initdb`` into a temporary directory, starts the
cluster on 127.0.0.1 with a free port (unix socket inside the temporary directory,
trust authentication, durability off: the data is thrown away), creates a
database, yields its URL and removes everything on exit. As root it runs the
server as the ``postgres`` system user (``initdb`` refuses to run as root).

Install the binaries with ``scripts/ensure_postgres.sh``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PostgresServer",
    "PostgresUnavailableError",
    "find_postgres_bin",
    "postgres_server",
]

_SERVER_USER = "postgres"
_START_ATTEMPTS = 3


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server binaries on this host (run scripts/ensure_postgres.sh)."""


@dataclass(frozen=True, slots=True)
class PostgresServer:
    url: str  # postgresql+psycopg://postgres@127.0.0.1:PORT/DATABASE
    host: str
    port: int
    database: str
    user: str
    socket_dir: Path
    data_dir: Path

    def url_for(self, database: str) -> str:
        """The URL of another database on the same server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str) -> str:
        """A new, empty database named ``<prefix>_<random hex>`` on this server; its URL."""
        import uuid

        name = f"{prefix}_{uuid.uuid4().hex}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (one of ``create_database``'s), connections and
        all."""
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def fresh_database(self, prefix: str) -> Iterator[str]:
        """``create_database``'s URL, the database dropped afterwards."""
        url = self.create_database(prefix)
        try:
            yield url
        finally:
            self.drop_database(url)

    def _admin(self, statement: str) -> None:
        import psycopg

        admin = f"host={self.host} port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(statement)  # a name made here, never user input


def find_postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding ``initdb`` and ``pg_ctl``."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    for initdb in candidates:
        bindir = Path(initdb).parent
        if os.access(initdb, os.X_OK) and os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Runner:
    """Runs server-side commands as the right user (``postgres`` when we are root)."""

    def __init__(self) -> None:
        self.as_root = os.geteuid() == 0
        self.uid: int | None = None
        self.gid: int | None = None
        if self.as_root:
            try:
                entry = pwd.getpwnam(_SERVER_USER)
            except KeyError:
                raise PostgresUnavailableError(
                    f"running as root but there is no {_SERVER_USER!r} system user to run "
                    "PostgreSQL as (install Debian's postgresql package)"
                ) from None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def own(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def run(self, argv: Sequence[str], *, timeout: float = 120.0) -> None:
        command = list(argv)
        if self.as_root:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailableError("running as root and runuser is missing")
            command = [runuser, "-u", _SERVER_USER, "--", *command]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )


@contextmanager
def postgres_server(database: str = "mailvet_test") -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL cluster; yield it; stop and delete it on exit.

    Raises ``PostgresUnavailableError`` when the server binaries are missing.
    """
    bindir = find_postgres_bin()
    if bindir is None:
        raise PostgresUnavailableError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; run scripts/ensure_postgres.sh"
        )
    runner = _Runner()
    # As root, use /tmp: TMPDIR may sit under a directory the postgres user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="mailvet-pg-", dir="/tmp" if runner.as_root else None))
    data_dir = base / "data"
    socket_dir = base / "run"
    log_file = base / "server.log"
    started = False
    try:
        os.chmod(base, 0o700)
        runner.own(base)
        for path in (data_dir, socket_dir):
            path.mkdir(mode=0o700)
            runner.own(path)
        runner.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        port = 0
        for attempt in range(_START_ATTEMPTS):
            port = _free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {port}",
                    f"-k {socket_dir}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=200",
                ]
            )
            try:
                runner.run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data_dir),
                        "-l",
                        str(log_file),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                )
            except RuntimeError:
                if attempt + 1 == _START_ATTEMPTS:  # the port may have been taken meanwhile
                    raise RuntimeError(_with_log("PostgreSQL did not start", log_file)) from None
                continue
            started = True
            break
        runner.run(
            [
                str(bindir / "psql"),
                "-h",
                str(socket_dir),
                "-p",
                str(port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                f'CREATE DATABASE "{database}"',
            ]
        )
        yield PostgresServer(
            url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}",
            host="127.0.0.1",
            port=port,
            database=database,
            user="postgres",
            socket_dir=socket_dir,
            data_dir=data_dir,
        )
    finally:
        try:
            if started:
                runner.run(
                    [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]
                )
        finally:
            shutil.rmtree(base, ignore_errors=True)


def _with_log(message: str, log_file: Path) -> str:
    try:
        log = log_file.read_text(errors="replace")[-4000:]
    except OSError:
        log = "(no server log)"
    return f"{message}:\n{log}"
