"""A cluster on one machine: real PostgreSQL, real `mailvet worker` / `mailvet serve`
processes, the simulated internet (DNS + SMTP) on loopback in this test process.

What is asserted comes from the simulated mail servers, not from mailvet's own
bookkeeping: how many times each address was asked (RCPT commands per recipient), the
most sessions open at once on each MX host (over every worker), when each RCPT came, and
which worker asked (each worker says its own EHLO name, ``w<i>.cluster.test``, as each
host of a real cluster would; the API processes say ``api.cluster.test``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailvet.testing import smtp as sim
from mailvet.testing.dns import DnsServer
from mailvet.testing.internet import build_zone, sim_internet_thread
from mailvet.testing.postgres import PostgresServer, find_postgres_bin, postgres_server
from mailvet.testing.processes import MailvetProcess, free_port, run_mailvet

from .kit import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LATENCY_MS = 10  # before every reply of every simulated server
MAX_SESSIONS = 2  # MAILVET_MX_MAX_SESSIONS: per MX host, over the whole cluster
RCPT_PER_SESSION = 8  # MAILVET_MX_RCPT_PER_SESSION: one job = one session of at most this
RCPT_PER_SECOND = 40.0  # MAILVET_MX_RCPT_PER_SECOND, per MX host, over the whole cluster
BURST = 20  # the RCPT bucket's size at that rate (jobs/limits.py: rcpt_burst)
API_HELO = "api.cluster.test"
KILL_RATE = 20.0  # RCPT/s in the kill -9 test: long enough a batch to kill a worker in


# --- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for this module (never skipped under CI=true)."""
    if find_postgres_bin() is None:
        message = "PostgreSQL server binaries not found; run scripts/ensure_postgres.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with postgres_server("mailvet_cluster") as server:
        yield server


@pytest.fixture
def db_url(pg: PostgresServer) -> Iterator[str]:
    """A new, empty database for one test."""
    with pg.fresh_database("c") as url:
        yield url


async def _create_key(db_url: str, name: str) -> str:
    from mailvet.storage import open_store
    from mailvet.storage.base import Plan

    store = open_store(db_url)
    try:
        _, secret = await store.create_key(name, Plan.PAID)
    finally:
        await store.close()
    return secret


# --- the simulated internet ----------------------------------------------------------------


@dataclass
class World:
    """Domains, their addresses and what each should come back as."""

    sites: dict[str, sim.Behaviour] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # address -> result

    def mailboxes(self, domain: str, n: int, **options: Any) -> list[str]:
        """``n`` addresses at ``domain``; every 5th mailbox does not exist."""
        known = [f"user{i}" for i in range(n) if i % 5]
        self.sites[domain] = sim.mailboxes(*known, style="postfix", **options)
        emails = [f"user{i}@{domain}" for i in range(n)]
        for i, email in enumerate(emails):
            self.expected[email] = "deliverable" if i % 5 else "undeliverable"
        return emails

    def catch_all(self, domain: str, n: int) -> list[str]:
        self.sites[domain] = sim.catch_all(latency_ms=LATENCY_MS)
        emails = [f"someone{i}@{domain}" for i in range(n)]
        self.expected.update(dict.fromkeys(emails, "risky"))
        return emails

    def ip(self, domain: str) -> str:
        """The listening address of ``domain``'s MX host (build_zone's numbering)."""
        _, by_ip = build_zone(self.sites, {})
        ips = list(by_ip)
        return ips[list(self.sites).index(domain)]


def helo(session: sim.Session) -> str | None:
    """The name the client gave in EHLO/HELO: which worker this session was."""
    for command in list(session.commands):
        verb, _, rest = command.partition(" ")
        if verb.upper() in ("EHLO", "HELO"):
            return rest.strip()
    return None


def rcpts_by_worker(smtp: sim.SmtpSim) -> dict[str, list[str | None]]:
    """address -> the EHLO name of the session of each of its RCPTs, in order."""
    asked: dict[str, list[str | None]] = defaultdict(list)
    for session in list(smtp.sessions):
        name = helo(session)
        for command in list(session.commands):
            if command.upper().startswith("RCPT TO:<"):
                asked[command[9:].split(">", 1)[0].lower()].append(name)
    return asked


def most_in_window(times: list[float], window: float) -> int:
    """The most events in any ``window`` seconds."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def assert_caps_kept(smtp: sim.SmtpSim, ips: list[str], rate: float = RCPT_PER_SECOND) -> None:
    """Per MX host, as the simulated servers saw it over every worker: at most
    MAX_SESSIONS sessions at once; RCPTs in any 2 s at most what the token bucket lets
    through (burst + rate x 2 s) plus one pipelined group per open session (sent before
    the window, answered in it: the simulator counts a RCPT when it answers it)."""
    for ip in ips:
        assert smtp.max_concurrent(ip) <= MAX_SESSIONS, (ip, smtp.max_concurrent(ip))
        most = most_in_window(smtp.rcpt_times(ip), 2.0)
        assert most <= BURST + rate * 2 + MAX_SESSIONS * BURST, (ip, most)


# --- the cluster ---------------------------------------------------------------------------


def cluster_env(db_url: str, dns: DnsServer, smtp_port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MAILVET_DATABASE_URL": db_url,
        "MAILVET_DNS_NAMESERVERS": dns.nameserver,
        "MAILVET_SMTP_PORT": str(smtp_port),
        "MAILVET_ALLOW_PRIVATE_MX": "true",  # every simulated MX is on 127.0.0.0/8
        "MAILVET_ALLOWED_SPECIAL_DOMAINS": "test",
        "MAILVET_MX_MAX_SESSIONS": str(MAX_SESSIONS),
        "MAILVET_MX_RCPT_PER_SESSION": str(RCPT_PER_SESSION),
        "MAILVET_MX_RCPT_PER_SECOND": str(RCPT_PER_SECOND),
        "MAILVET_MX_CONNECTS_PER_MINUTE": "600",
        "MAILVET_LOG_LEVEL": "INFO",
        **extra,
    }


@dataclass
class Cluster:
    env: dict[str, str]
    tmp: Path
    stack: ExitStack
    workers: dict[str, MailvetProcess] = field(default_factory=dict)  # EHLO name -> process
    apis: list[str] = field(default_factory=list)  # base URLs

    def create_key(self, name: str) -> str:
        """A paid key's secret (as `mailvet keys create` makes one)."""
        return asyncio.run(_create_key(self.env["MAILVET_DATABASE_URL"], name))

    def start(self, workers: Sequence[str] = (), apis: int = 0) -> None:
        """Start ``mailvet worker`` processes, each with its own EHLO name, and ``apis``
        ``mailvet serve`` processes, all at once (their start-ups overlap); return once
        every worker said it takes jobs and every API answers /healthz."""
        started = []
        for name in workers:
            env = {**self.env, "MAILVET_HELO_NAME": name}
            proc = MailvetProcess.start_worker(env, self.tmp / f"{name}.log")
            self.stack.callback(proc.stop)
            self.workers[name] = proc
            started.append(proc)
        env = {**self.env, "MAILVET_HELO_NAME": API_HELO}
        ports = [free_port() for _ in range(apis)]
        procs = [MailvetProcess(["serve", "--port", str(p)], env, self.tmp / f"api{p}.log")
                 for p in ports]  # fmt: skip
        for proc in procs:
            self.stack.callback(proc.stop)
        for proc in started:
            proc.wait_ready(90)
        for port, proc in zip(ports, procs, strict=True):
            base = f"http://127.0.0.1:{port}"

            def up(base: str = base) -> bool:
                try:
                    return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            proc._wait(up, 90, "/healthz")
            self.apis.append(base)

    def start_workers(self, *names: str) -> None:
        """Start ``mailvet worker`` processes (in parallel); see ``start``."""
        self.start(workers=names)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{proc.output()[-3000:]}" for name, proc in self.workers.items()
        )


@contextmanager
def cluster(
    tmp: Path, db_url: str, world: World, **extra: str
) -> Iterator[tuple[Cluster, sim.SmtpSim]]:
    """The simulated internet for ``world``, the database upgraded (`mailvet db
    upgrade`, as once per release); workers and APIs are started by the test."""
    with sim_internet_thread(world.sites, {}) as (dns, smtp_thread), ExitStack() as stack:
        env = cluster_env(db_url, dns, smtp_thread.port, **extra)
        run_mailvet(["db", "upgrade"], env)
        yield Cluster(env, tmp, stack), smtp_thread.sim


def submit(base: str, key: str, emails: list[str]) -> str:
    r = httpx.post(
        f"{base}/v1/batch", json={"emails": emails}, headers={"x-mails-api-key": key}, timeout=30
    )
    assert r.status_code == 200, r.text
    batch_id: str = r.json()["id"]
    return batch_id


def wait_finished(c: Cluster, base: str, key: str, batch_id: str, seconds: float) -> dict[str, Any]:
    """Poll GET /v1/batch/{id} until it is finished; its body."""
    body: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal body
        r = httpx.get(f"{base}/v1/batch/{batch_id}", headers={"x-mails-api-key": key}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        return body.get("finished_at") is not None

    try:
        wait_for(finished, seconds, "the batch to finish")
    except AssertionError:
        raise AssertionError(
            f"not finished: {body.get('done')}/{body.get('size')}, "
            f"retry_waiting {body.get('retry_waiting')}\n{c.logs()}"
        ) from None
    return body


def assert_results(body: dict[str, Any], emails: list[str], world: World) -> None:
    """Every address once, in order, with the verdict the world says."""
    rows = body["emails"]
    assert [row["email"] for row in rows] == emails
    wrong = {
        row["email"]: (row["result"], row.get("reason"))
        for row in rows
        if row["result"] != world.expected[row["email"]]
    }
    assert not wrong


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("n_workers", [2, 4])
def test_workers_share_one_batch_each_address_once_caps_kept(
    tmp_path: Path, db_url: str, n_workers: int
) -> None:
    world = World()
    emails = (
        world.mailboxes("big.test", 160, latency_ms=LATENCY_MS)
        + world.mailboxes("mid.test", 48, latency_ms=LATENCY_MS)
        + world.catch_all("catch.test", 16)
    )
    ips = [world.ip(d) for d in world.sites]
    with cluster(tmp_path, db_url, world) as (c, smtp):
        key = c.create_key("acme")
        names = [f"w{i}.cluster.test" for i in range(1, n_workers + 1)]
        c.start(workers=names, apis=1)
        batch_id = submit(c.apis[0], key, emails)
        body = wait_finished(c, c.apis[0], key, batch_id, 90)
        asked = smtp.rcpts_by_address()
        by_worker = rcpts_by_worker(smtp)
        sessions = Counter(helo(s) for s in smtp.sessions)

    assert_results(body, emails, world)
    assert {e: asked[e] for e in emails if asked[e] != 1} == {}  # each asked exactly once
    assert_caps_kept(smtp, ips)
    # the work was shared: every worker ran sessions; the API process ran none
    assert set(sessions) == set(names), sessions
    assert all(by_worker[e][0] in names for e in emails)


def test_kill_9_of_a_worker_mid_batch_the_batch_completes_exactly_once(
    tmp_path: Path, db_url: str
) -> None:
    world = World()
    emails = world.mailboxes("big.test", 200, latency_ms=20)
    ip = world.ip("big.test")
    settings = {
        "MAILVET_MX_RCPT_PER_SECOND": str(KILL_RATE),  # the batch lasts ~10 s
        # a dead worker is taken for dead after 4 s, its slots on the MX free after 3 s
        "MAILVET_WORKER_HEARTBEAT_INTERVAL": "1",
        "MAILVET_WORKER_STALLED_TIMEOUT": "4",
        "MAILVET_MX_LEASE_SECONDS": "3",
    }
    with cluster(tmp_path, db_url, world, **settings) as (c, smtp):
        key = c.create_key("acme")
        c.start(workers=["w1.cluster.test", "w2.cluster.test"], apis=1)
        batch_id = submit(c.apis[0], key, emails)

        def w1_mid_session() -> bool:
            open_w1 = [s for s in list(smtp.sessions) if not s.closed and s.rcpts
                       and helo(s) == "w1.cluster.test"]  # fmt: skip
            done_w1 = [s for s in list(smtp.sessions) if s.closed and s.rcpts
                       and helo(s) == "w1.cluster.test"]  # fmt: skip
            quarter = sum(smtp.rcpts_by_address().values()) >= len(emails) // 4
            return bool(open_w1) and bool(done_w1) and quarter

        wait_for(w1_mid_session, 60, "w1 mid-session after one of its own, a quarter asked")
        c.workers["w1.cluster.test"].kill()
        # the simulator may still answer what w1 had pipelined: count once w1's are closed
        wait_for(
            lambda: all(s.closed for s in list(smtp.sessions) if helo(s) == "w1.cluster.test"),
            30,
            "w1's sessions to end",
        )
        asked_by_w1 = {e for e, who in rcpts_by_worker(smtp).items() if "w1.cluster.test" in who}
        before = smtp.rcpts_by_address()
        assert sum(before[e] for e in emails) < len(emails)  # the kill came mid-batch
        saved = httpx.get(
            f"{c.apis[0]}/v1/batch/{batch_id}", headers={"x-mails-api-key": key}, timeout=10
        ).json()["emails"]
        saved_at_kill = {row["email"] for row in saved}

        body = wait_finished(c, c.apis[0], key, batch_id, 120)
        after = smtp.rcpts_by_address()

    assert_results(body, emails, world)  # every address in the results exactly once
    assert all(after[e] >= 1 for e in emails)
    twice = {e for e in emails if after[e] >= 2}
    assert all(after[e] <= 2 for e in emails)
    # asked again: only what w1 had asked and not saved; what was saved is never redone
    assert twice <= asked_by_w1
    assert not twice & saved_at_kill
    assert asked_by_w1 & saved_at_kill  # w1's finished jobs were kept, not redone
    assert_caps_kept(smtp, [ip], rate=KILL_RATE)


def test_a_greylisted_address_is_retried_by_whichever_worker_is_free(
    tmp_path: Path, db_url: str
) -> None:
    delay = 5.0  # the server's "try again in N seconds"; the retry is a job scheduled then
    world = World()
    known = [f"user{i}" for i in range(12) if i % 5]
    world.sites["grey.test"] = sim.greylist(
        delay, then=sim.mailboxes(*known, style="postfix"), latency_ms=LATENCY_MS
    )
    grey = [f"user{i}@grey.test" for i in range(12)]
    world.expected.update({e: "deliverable" if i % 5 else "undeliverable"
                           for i, e in enumerate(grey)})  # fmt: skip
    emails = grey + world.mailboxes("plain.test", 12, latency_ms=LATENCY_MS)
    with cluster(tmp_path, db_url, world) as (c, smtp):
        key = c.create_key("acme")
        c.start(workers=["w1.cluster.test"], apis=1)
        batch_id = submit(c.apis[0], key, emails)
        wait_for(
            lambda: all(smtp.rcpts_by_address()[e] >= 1 for e in emails), 60, "every first try"
        )
        # w1 asked every address once and was told to come back in 5 s about grey.test's.
        # It stops (SIGTERM: a clean stop, nothing running) and w2 starts: the retries are
        # jobs in the queue, not a worker sleeping, so w2 takes them when they are due.
        assert c.workers["w1.cluster.test"].stop() == 0
        stopped = time.monotonic()
        c.start_workers("w2.cluster.test")
        body = wait_finished(c, c.apis[0], key, batch_id, 60)
        by_worker = rcpts_by_worker(smtp)
        retry_times = smtp.rcpt_times(world.ip("grey.test"))

    assert_results(body, emails, world)
    for e in grey:
        assert by_worker[e] == ["w1.cluster.test", "w2.cluster.test"], (e, by_worker[e])
    for e in emails[len(grey) :]:
        assert by_worker[e] == ["w1.cluster.test"], (e, by_worker[e])
    assert max(retry_times) >= stopped  # retried after w1 had gone


def test_two_apis_two_keys_each_sees_only_its_own_batches(tmp_path: Path, db_url: str) -> None:
    world = World()
    a_emails = world.mailboxes("alpha.test", 24, latency_ms=LATENCY_MS)
    b_emails = world.mailboxes("beta.test", 24, latency_ms=LATENCY_MS)
    with cluster(tmp_path, db_url, world) as (c, smtp):
        key_a, key_b = c.create_key("tenant-a"), c.create_key("tenant-b")
        c.start(workers=["w1.cluster.test", "w2.cluster.test"], apis=2)
        api1, api2 = c.apis
        batch_a = submit(api1, key_a, a_emails)
        batch_b = submit(api2, key_b, b_emails)
        # stateless APIs: each batch is read through the other process than took it
        body_a = wait_finished(c, api2, key_a, batch_a, 60)
        body_b = wait_finished(c, api1, key_b, batch_b, 60)
        for base in (api1, api2):
            for key, other in ((key_a, batch_b), (key_b, batch_a)):
                headers = {"x-mails-api-key": key}
                assert httpx.get(f"{base}/v1/batch/{other}", headers=headers).status_code == 404
                download = httpx.get(f"{base}/v1/batch/{other}/download", headers=headers)
                assert download.status_code == 404
                assert httpx.delete(f"{base}/v1/batch/{other}", headers=headers).status_code == 404
            for key, own in ((key_a, batch_a), (key_b, batch_b)):
                listed = httpx.get(f"{base}/v1/batches", headers={"x-mails-api-key": key})
                assert listed.status_code == 200
                assert [b["id"] for b in listed.json()["data"]] == [own]
        # the other key's DELETE did nothing: both batches are still there, whole
        body_a = wait_finished(c, api1, key_a, batch_a, 10)
        body_b = wait_finished(c, api2, key_b, batch_b, 10)
        asked = smtp.rcpts_by_address()
        sessions = Counter(helo(s) for s in smtp.sessions)

    assert body_a["status"] == body_b["status"] == "finished"
    assert_results(body_a, a_emails, world)
    assert_results(body_b, b_emails, world)
    assert {e: asked[e] for e in a_emails + b_emails if asked[e] != 1} == {}
    assert API_HELO not in sessions  # neither API process worked a batch
