from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mailvet.settings import Settings


def test_env_prefix_and_csv_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILVET_DNS_NAMESERVERS", "127.0.0.1:5353, [::1]:5353")
    monkeypatch.setenv("MAILVET_SMTP_PORT", "2525")
    monkeypatch.setenv("MAILVET_ALLOW_PRIVATE_MX", "true")
    monkeypatch.setenv("MAILVET_DENY_DOMAINS", "a.test,b.test")
    s = Settings()
    assert s.dns_nameservers == ["127.0.0.1:5353", "[::1]:5353"]
    assert s.smtp_port == 2525
    assert s.allow_private_mx is True
    assert s.deny_domains == ["a.test", "b.test"]


def test_secure_defaults() -> None:
    s = Settings()
    assert s.allow_private_mx is False
    assert s.smtp_port == 25
    assert s.deadline < 5.0  # CleverTap waits 5 s and never retries
    assert s.database_url.startswith("sqlite")


def test_default_database_is_in_the_user_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MAILVET_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    expected = f"sqlite:///{tmp_path / 'data' / 'mailvet' / 'mailvet.db'}"
    assert Settings().database_url == expected
    monkeypatch.setenv("MAILVET_DATABASE_URL", "postgresql://u@db.internal/mailvet")
    assert Settings().database_url == "postgresql://u@db.internal/mailvet"  # still overrides


def test_bad_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILVET_SMTP_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="smtp_port"):
        Settings()


@pytest.mark.parametrize("bad", ["dns.google", "127.0.0.1:0", "[::1", "1.2.3.4:port"])
def test_bad_nameserver_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValidationError, match="dns_nameservers"):
        Settings(dns_nameservers=[bad])


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("helo_name", "mx.example.com\r\nRSET"),
        ("helo_name", "under_score.example.com"),
        ("helo_name", ""),
        ("mail_from", "verify@example.com\r\nRCPT TO:<x@y>"),
        ("mail_from", "no-at-sign"),
        ("mail_from", "a b@example.com"),
    ],
)
def test_what_goes_on_the_wire_is_validated(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: bad})


def test_good_wire_values() -> None:
    s = Settings(helo_name="[192.0.2.1]", mail_from="bounce+probe@mail.example.com")
    assert s.helo_name == "[192.0.2.1]"
    assert Settings(helo_name="mx1.example.com").helo_name == "mx1.example.com"


def test_server_limits_and_log_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILVET_LOG_LEVEL", "warning")
    monkeypatch.setenv("MAILVET_LOG_FORMAT", "json")
    monkeypatch.setenv("MAILVET_HEADER_TIMEOUT", "2.5")
    s = Settings()
    assert (s.log_level, s.log_format, s.header_timeout) == ("WARNING", "json", 2.5)
    defaults = Settings()
    assert 0 < defaults.header_timeout <= 10 and 0 < defaults.body_timeout <= 30


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("log_level", "LOUD"),
        ("log_format", "xml"),
        ("max_connections", 0),
        ("keepalive_timeout", 0),
        ("header_timeout", 0),
        ("body_timeout", -1),
        ("body_timeout", float("nan")),
    ],
)
def test_bad_server_limits_are_refused(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: bad})


def test_batch_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (
        defaults.batch_connect_timeout,
        defaults.batch_command_timeout,
        defaults.batch_session_timeout,
    ) == (10.0, 30.0, 300.0)
    # list cleaning waits longer than the real-time probe
    assert defaults.batch_command_timeout > defaults.smtp_command_timeout
    monkeypatch.setenv("MAILVET_BATCH_SESSION_TIMEOUT", "600")
    monkeypatch.setenv("MAILVET_BATCH_COMMAND_TIMEOUT", "45.5")
    s = Settings()
    assert (s.batch_session_timeout, s.batch_command_timeout) == (600.0, 45.5)


@pytest.mark.parametrize(
    "field", ["batch_connect_timeout", "batch_command_timeout", "batch_session_timeout"]
)
@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_bad_batch_timeouts_are_refused(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: bad})


def test_batch_api_settings() -> None:
    s = Settings()
    assert s.allow_private_webhooks is False  # a callback_url may not reach the local network
    assert (s.batch_page_size, s.webhook_timeout, s.webhook_max_attempts) == (1000, 10.0, 8)
    cases: list[tuple[str, Any]] = [
        ("batch_page_size", 0),
        ("webhook_max_attempts", 0),
        ("webhook_timeout", 0),
        ("webhook_timeout", float("nan")),
    ]
    for field, bad in cases:
        with pytest.raises(ValidationError):
            Settings(**{field: bad})


def test_cluster_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert (defaults.mx_lease_seconds, defaults.worker_alive_seconds) == (30.0, 30.0)
    monkeypatch.setenv("MAILVET_MX_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("MAILVET_WORKER_ALIVE_SECONDS", "90")
    s = Settings()
    assert (s.mx_lease_seconds, s.worker_alive_seconds) == (12.5, 90.0)


@pytest.mark.parametrize("field", ["mx_lease_seconds", "worker_alive_seconds"])
@pytest.mark.parametrize("bad", [0, 0.5, -1, float("nan"), float("inf")])
def test_bad_cluster_settings_are_refused(field: str, bad: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: bad})
