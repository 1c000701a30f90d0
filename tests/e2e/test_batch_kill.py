"""Durable batch progress: ``kill -9`` of ``mailvet serve`` mid-batch, then a restart.

The batch runs against a slow simulated MX (in this test process, on loopback). The
server is killed with SIGKILL while the batch is under way and started again on the
same database: every address ends in the results exactly once, and the simulator's own
RCPT counts show that only addresses in flight at the kill were asked twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from mailvet.testing import smtp as sim
from mailvet.testing.internet import sim_internet_thread

from .kit import serve_with_dev_key, wait_for
from .test_serve import free_port

N = 300
RATE = 40  # RCPT a second the MX accepts from us (MAILVET_MX_RCPT_PER_SECOND)
KNOWN = {f"user{i}" for i in range(N) if i % 7}


@contextmanager
def serve(env: dict[str, str], tmp: Path, port: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with serve_with_dev_key(env, port, tmp / "dev-key") as (proc, _url, key):
        yield proc, key


def test_kill_9_mid_batch_then_restart_every_address_exactly_once(tmp_path: Path) -> None:
    sites = {"slow.test": sim.mailboxes(*KNOWN, style="postfix", latency_ms=20)}
    emails = [f"user{i}@slow.test" for i in range(N)]
    with sim_internet_thread(sites, {}) as (dns_server, smtp_thread):
        smtp = smtp_thread.sim
        env = {
            **os.environ,
            "MAILVET_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
            "MAILVET_DNS_NAMESERVERS": dns_server.nameserver,
            "MAILVET_SMTP_PORT": str(smtp_thread.port),
            "MAILVET_ALLOW_PRIVATE_MX": "true",
            "MAILVET_ALLOWED_SPECIAL_DOMAINS": "test",
            "MAILVET_MX_MAX_SESSIONS": "2",
            "MAILVET_MX_RCPT_PER_SESSION": "50",
            "MAILVET_MX_RCPT_PER_SECOND": str(RATE),
            "MAILVET_BATCH_CONNECT_TIMEOUT": "2",
            "MAILVET_BATCH_COMMAND_TIMEOUT": "2",
        }
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with serve(env, tmp_path, port) as (proc, key):
            headers = {"x-mails-api-key": key}
            r = httpx.post(f"{base}/v1/batch", json={"emails": emails}, headers=headers)
            assert r.status_code == 200, r.text
            batch_id = r.json()["id"]
            wait_for(
                lambda: sum(smtp.rcpts_by_address().values()) >= N // 3, 60, "a third of the RCPTs"
            )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # the simulator may still be answering RCPTs the killed server had pipelined: count
        # once every session it had is closed
        wait_for(lambda: all(s.closed for s in list(smtp.sessions)), 30, "the sessions to end")
        before = smtp.rcpts_by_address()
        assert sum(before[e] for e in emails) < N  # the kill came mid-batch

        with serve(env, tmp_path, port) as (_proc, key2):
            assert key2 == key
            headers = {"x-mails-api-key": key}

            def finished() -> bool:
                got = httpx.get(f"{base}/v1/batch/{batch_id}", headers=headers, timeout=5)
                return got.json().get("finished_at") is not None

            wait_for(finished, 120, "the batch to finish after the restart")
            body = httpx.get(f"{base}/v1/batch/{batch_id}", headers=headers).json()
        after = smtp.rcpts_by_address()

    results = body["emails"]
    assert [row["email"] for row in results] == emails  # every address, once, in order
    for row in results:
        local = row["email"].split("@", 1)[0]
        expected = "deliverable" if local in KNOWN else "undeliverable"
        assert row["result"] == expected, row["email"]
    twice = {e for e in emails if after[e] >= 2}
    assert all(after[e] >= 1 for e in emails)
    assert all(after[e] <= 2 for e in emails)
    assert twice <= {e for e in emails if before[e]}  # only addresses asked before the kill
    # only what was answered but not yet saved (results are saved every second or 500)
    # is asked again: far fewer than what was asked before the kill
    asked_before = sum(1 for e in emails if before[e])
    assert len(twice) <= RATE * 2 < asked_before
