"""The one settings object (env prefix ``MAILVET_``), built once and passed down.

No other module reads the environment: everything that can be configured is a field
here, so tests and benchmarks point the engine at the simulated internet by building
a ``Settings`` with the loopback nameserver and SMTP port.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from platformdirs import user_data_path
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "default_database_url", "parse_nameserver", "uses_postgres"]


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_LITERAL = re.compile(r"\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]")
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def parse_nameserver(entry: str) -> tuple[str, int]:
    """``"host"``, ``"host:port"``, ``"v6"`` or ``"[v6]:port"`` -> (address, port)."""
    text = entry.strip()
    port = 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad nameserver {entry!r}")
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host = text
    ipaddress.ip_address(host)  # dnspython wants an address; ValueError otherwise
    if not 0 < port < 65536:
        raise ValueError(f"bad nameserver port in {entry!r}")
    return host, port


def default_database_url() -> str:
    """SQLite in the per-user data directory (platformdirs): the same database from any folder.

    Linux ``$XDG_DATA_HOME/mailvet`` (``~/.local/share/mailvet``), macOS
    ``~/Library/Application Support/mailvet``, Windows ``%LOCALAPPDATA%\\mailvet``.
    """
    return f"sqlite:///{user_data_path('mailvet', appauthor=False) / 'mailvet.db'}"


def uses_postgres(database_url: str) -> bool:
    """Whether a database URL names PostgreSQL (``postgres://``, ``postgresql+psycopg://`` ...)."""
    scheme = database_url.strip().partition("://")[0].lower()
    return scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+")


class Settings(BaseSettings):
    """Every knob mailvet has. Field ``foo_bar`` is env var ``MAILVET_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix="MAILVET_", extra="ignore", validate_default=True, frozen=True
    )

    # --- syntax policy (the default is the sending view of RFC 5321) ---
    allow_quoted_local: bool = False
    allow_address_literal: bool = False
    allow_single_label_domain: bool = False
    allow_smtputf8: bool = True
    # special-use names (RFC 6761: test, invalid, localhost ...) take no mail from the
    # internet and are refused without a DNS query; these suffixes are let through
    # (the simulated internet needs "test")
    allowed_special_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("allowed_special_domains", mode="before")
    @classmethod
    def _special_domains(cls, value: object) -> object:
        value = _split_csv(value)
        if not isinstance(value, list):
            return value
        out: list[str] = []
        for entry in value:
            if not isinstance(entry, str):
                return value  # pydantic reports the wrong type
            name = entry.strip().strip(".").lower()
            if not _HOSTNAME.fullmatch(name):
                raise ValueError(f"not a domain suffix: {entry!r}")
            out.append(name)
        return out

    # --- lists ---
    allow_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    deny_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_list_file: Path | None = None
    deny_list_file: Path | None = None

    # --- DNS ---
    dns_nameservers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dns_timeout: float = 1.0  # a whole lookup takes at most 3x: inside the deadline
    dns_cache_size: int = 100_000
    dns_blocklists: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- SMTP ---
    smtp_port: int = 25
    # under the deadline, so a dead or stalling MX still leaves time to try the next one
    smtp_connect_timeout: float = 1.5
    smtp_command_timeout: float = 2.0
    smtp_max_reply_bytes: int = 64 * 1024
    smtp_starttls: Literal["opportunistic", "never", "required"] = "opportunistic"
    smtp_max_mx_hosts: int = 3
    helo_name: str = "mailvet.localhost"
    mail_from: str = "verify@mailvet.localhost"
    socks_proxy: str | None = None
    allow_private_mx: bool = False
    catch_all_cache_ttl: float = 3600.0

    # --- single validation ---
    deadline: float = 3.0  # /v1/validate answers by 3.3 s: CleverTap waits 5 s in all
    result_cache_ttl: float = 600.0

    # --- batch: SMTP timeouts of list cleaning (not the real-time budget) ---
    # RFC 5321 4.5.3.2 asks for minutes per command; 30 s is a pragmatic cap
    batch_connect_timeout: float = 10.0
    batch_command_timeout: float = 30.0
    batch_session_timeout: float = 300.0  # one whole SMTP session, however many RCPTs

    @field_validator("batch_connect_timeout", "batch_command_timeout", "batch_session_timeout")
    @classmethod
    def _batch_timeout(cls, value: float) -> float:
        if not value > 0:  # NaN too
            raise ValueError("must be more than 0 seconds")
        return value

    # --- service ---
    # default: mailvet.db in the per-user data directory, wherever the command is typed
    database_url: str = Field(default_factory=default_database_url)
    host: str = "127.0.0.1"
    port: int = 8000
    rate_limit_per_minute: int = 600
    max_body_bytes: int = 10 * 1024 * 1024
    max_batch_size: int = 1_000_000
    batch_concurrency: int = 20
    log_level: str = "INFO"

    # --- batch: per-MX lanes and greylisting (jobs/limits.py, jobs/scheduler.py) ---
    mx_max_sessions: int = 2  # SMTP sessions open to one MX host at once
    mx_rcpt_per_session: int = 50  # recipients asked in one session
    mx_rcpt_per_second: float = 10.0  # RCPT commands a second to one MX host
    mx_connects_per_minute: int = 30  # new connections to one MX host a minute
    greylist_max_wait: float = 1800.0  # seconds from an address's first try
    # --- cluster (PostgreSQL): per-MX leases, worker liveness (jobs/limits_pg.py, status) ---
    mx_lease_seconds: float = 30.0  # a session's slot lives this long unless renewed
    worker_alive_seconds: float = 30.0  # a worker heartbeat older than this: shown dead
    greylist_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0]
    )

    @field_validator("mx_max_sessions", "mx_rcpt_per_session", "mx_connects_per_minute")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("mx_rcpt_per_second")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not value > 0 or value == float("inf"):  # NaN too
            raise ValueError("must be a positive number")
        return value

    @field_validator("mx_lease_seconds", "worker_alive_seconds")
    @classmethod
    def _cluster_seconds(cls, value: float) -> float:
        if not 1.0 <= value < float("inf"):  # NaN too
            raise ValueError("must be at least 1 second")
        return value

    @field_validator("greylist_max_wait")
    @classmethod
    def _wait(cls, value: float) -> float:
        if not value >= 0 or value == float("inf"):
            raise ValueError("must be 0 or more seconds")
        return value

    @field_validator("greylist_schedule", mode="before")
    @classmethod
    def _schedule_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("greylist_schedule")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if not value or not all(0 < step < float("inf") for step in value):
            raise ValueError("must be one or more positive delays in seconds")
        return value

    # --- service: server limits / logs ---
    max_connections: int = 1000
    header_timeout: float = 5.0
    body_timeout: float = 15.0
    keepalive_timeout: int = 5
    log_format: Literal["text", "json"] = "text"

    # --- batch: reads and webhooks (the batch API) ---
    batch_page_size: int = 1000  # GET /v1/batch/{id} pages past this many addresses
    webhook_timeout: float = 10.0  # seconds for one callback_url delivery
    webhook_max_attempts: int = 8  # deliveries tried, with exponential back-off
    allow_private_webhooks: bool = False  # callback_url may name loopback/private hosts

    # --- batch: workers on PostgreSQL (procrastinate; jobs/cluster.py, `mailvet worker`) ---
    # whether `mailvet serve` works batches itself; unset: yes on SQLite, no on PostgreSQL
    # (there the API only enqueues and `mailvet worker` processes take the jobs)
    inprocess_worker: bool | None = None
    worker_heartbeat_interval: float = 10.0  # seconds between a worker's heartbeats
    # a worker whose heartbeat is older than this is dead: its jobs are retried elsewhere
    worker_stalled_timeout: float = 30.0

    @field_validator("worker_heartbeat_interval", "worker_stalled_timeout")
    @classmethod
    def _worker_seconds(cls, value: float) -> float:
        if not value > 0 or value == float("inf"):  # NaN too
            raise ValueError("must be a positive number of seconds")
        return value

    def runs_batches_inprocess(self) -> bool:
        """Whether ``mailvet serve`` runs batch work itself (``inprocess_worker``, by default
        on for SQLite and off for PostgreSQL)."""
        if self.inprocess_worker is not None:
            return self.inprocess_worker
        return not uses_postgres(self.database_url)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator(
        "max_connections", "keepalive_timeout", "batch_page_size", "webhook_max_attempts"
    )
    @classmethod
    def _positive_int(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("header_timeout", "body_timeout", "webhook_timeout")
    @classmethod
    def _positive_float(cls, value: float) -> float:
        if not value > 0:  # NaN too
            raise ValueError("must be more than 0 seconds")
        return value

    @field_validator(
        "allow_domains", "deny_domains", "dns_nameservers", "dns_blocklists", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("helo_name")
    @classmethod
    def _helo(cls, value: str) -> str:
        # It goes on the wire verbatim: a CR/LF here would inject SMTP commands.
        if not (_HOSTNAME.fullmatch(value) or _LITERAL.fullmatch(value)):
            raise ValueError("must be a host name (mx.example.com) or an address literal")
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        local, at, domain = value.rpartition("@")
        if not (at and _LOCAL.fullmatch(local) and _HOSTNAME.fullmatch(domain)):
            raise ValueError("must be a plain address such as verify@example.com")
        return value

    @field_validator("dns_nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_nameserver(entry)  # a bad entry fails here, at start-up, not per lookup
        return value
