"""SimInternet's knobs for `mailvet sim`: fixed ports, its MAILVET_* lines, bounded records."""

from __future__ import annotations

import socket

import pytest

from mailvet.settings import Settings
from mailvet.testing import smtp as sim
from mailvet.testing.dns import Query
from mailvet.testing.internet import SimInternet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_env_points_a_mailvet_process_at_the_world(monkeypatch: pytest.MonkeyPatch) -> None:
    async with SimInternet() as net:
        env = net.env()
        assert env["MAILVET_ALLOWED_SPECIAL_DOMAINS"] == "test"
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.dns_nameservers == [net.dns.nameserver]
        assert settings.smtp_port == net.smtp.port != 25
        assert settings.allow_private_mx is True
        assert settings.deadline == Settings.model_fields["deadline"].default  # as shipped


async def test_fixed_ports_are_used() -> None:
    dns_port, smtp_port = _free_port(), _free_port()
    async with SimInternet({}, {}, dns_port=dns_port, smtp_port=smtp_port) as net:
        assert (net.dns.port, net.smtp.port) == (dns_port, smtp_port)
        assert net.env()["MAILVET_DNS_NAMESERVERS"] == f"127.0.0.1:{dns_port}"


async def test_by_ip_and_by_domain_reach_the_smtp_simulator() -> None:
    world = SimInternet(
        {}, {}, by_ip={"127.0.1.1": sim.accept()}, by_domain={"corp.test": sim.mailboxes("alice")}
    )
    assert "127.0.1.1" in world.smtp.hosts and "corp.test" in world.smtp.by_domain


def test_forget_keeps_only_the_latest_records() -> None:
    net = SimInternet({}, {})
    net.dns.log.extend(Query(f"n{i}.test", "MX", "udp") for i in range(5))
    net.smtp.sessions.extend(sim.Session("127.0.0.1", f"127.0.0.{i}") for i in range(5))
    net.forget(keep=2)
    assert [q.name for q in net.dns.log] == ["n3.test", "n4.test"]
    assert [s.peer for s in net.smtp.sessions] == ["127.0.0.3", "127.0.0.4"]
    net.forget(keep=10)  # fewer than keep: nothing dropped
    assert len(net.dns.log) == 2
