"""`mailvet validate` with the network stages, against the simulated internet."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from mailvet.cli import app
from mailvet.testing.internet import sim_internet_thread

runner = CliRunner()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with sim_internet_thread() as (dns_server, smtp_thread):
        monkeypatch.setenv("MAILVET_DNS_NAMESERVERS", dns_server.nameserver)
        monkeypatch.setenv("MAILVET_SMTP_PORT", str(smtp_thread.port))
        monkeypatch.setenv("MAILVET_ALLOW_PRIVATE_MX", "true")
        monkeypatch.setenv("MAILVET_DEADLINE", "3")
        yield


def test_json_runs_the_whole_pipeline(world: None) -> None:
    res = runner.invoke(app, ["validate", "--json", "alice@deliverable.test", "zed@postfix.test",
                              "x@nxdomain.test"])
    assert res.exit_code == 0, res.output
    got = [(d["result"], d["reason"]) for d in map(json.loads, res.stdout.splitlines())]
    assert got == [("deliverable", "accepted_email"), ("undeliverable", "rejected_email"),
                   ("undeliverable", "invalid_domain")]


def test_details_prints_the_evidence(world: None) -> None:
    res = runner.invoke(app, ["validate", "--details", "alice@deliverable.test"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "deliverable" in out and "accepted_email" in out
    assert "MX deliverable.test" in out
    assert "RCPT TO:<alice@deliverable.test>" in out
    assert "250" in out


def test_details_in_json(world: None) -> None:
    res = runner.invoke(app, ["validate", "--json", "--details", "alice@catchall.test"])
    data = json.loads(res.stdout)
    assert data["reason"] == "catch_all"
    assert any("RCPT" in e["text"] for e in data["details"])
