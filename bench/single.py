"""Single-validation benchmark against the simulated internet (loopback only).

Two measurements, both for mailvet and for py3-validate-email on the same addresses in
the same run:

1. Per-verdict latency with no injected latency: p50 and p99 over N sequential
   validations (each address on its own domain, so every verdict does its own DNS).
2. Round trips per verdict: every SMTP reply is delayed by RTT (50 ms) on its way to
   the client by a small proxy (client->server is immediate), so a verdict's SMTP time
   divided by RTT is the number of sequential waits, i.e. round trips. A pipelined
   group of commands costs one RTT, as on a real network. The minimum for a full
   catch-all-aware check is 6: banner, EHLO, MAIL, RCPT, RCPT, QUIT.

py3-validate-email connects to port 25 by host name with smtplib and resolves MX with
dnspython's default resolver. Both are pointed at the simulated internet in-process:
the default resolver gets the simulated nameserver and ``socket.getaddrinfo`` maps the
simulated ``*.test`` host names to their loopback addresses (never the system resolver).
The SMTP simulator therefore listens on port 25 of 127.0.0.x: run as root.

Usage: .venv/bin/python bench/single.py [--n 200] [--rtt-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from typing import Any

os.environ.setdefault("PY3VE_IGNORE_UPDATER", "1")  # it would fetch a list from GitHub

import dns.resolver

from mailvet.engine.pipeline import Engine
from mailvet.settings import Settings, parse_nameserver
from mailvet.testing.dns import run_dns_server_in_thread
from mailvet.testing.internet import simulated_getaddrinfo
from mailvet.testing.smtp import SmtpSim, SmtpSimThread, mailboxes

FAST_IP, SIM_SLOW_IP, PROXY_IP = "127.0.0.10", "127.0.1.10", "127.0.2.10"


def build_zone(n: int) -> dict[str, dict[str, list[Any]]]:
    zone: dict[str, dict[str, list[Any]]] = {
        "mx.fast.test": {"A": [FAST_IP]},
        "mx.slow.test": {"A": [PROXY_IP]},
    }
    for i in range(n):
        zone[f"d{i}.fast.test"] = {"MX": [(10, "mx.fast.test")]}
        zone[f"d{i}.slow.test"] = {"MX": [(10, "mx.slow.test")]}
    return zone


def addresses(n: int, kind: str) -> list[str]:
    # alternate an existing and an unknown mailbox; each on its own domain
    return [f"{'alice' if i % 2 == 0 else 'zed'}@d{i}.{kind}.test" for i in range(n)]


class DelayProxy:
    """TCP proxy: server->client data is delivered ``delay`` seconds after it arrived."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], delay: float):
        self.listen, self.upstream, self.delay = listen, upstream, delay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    async def _pipe_delayed(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                w.write(data)
                await w.drain()
            w.close()

        task = asyncio.ensure_future(deliver())
        try:
            while data := await r.read(65536):
                await queue.put((time.monotonic() + self.delay, data))
        except ConnectionError:
            pass
        await queue.put((0.0, b""))
        await task

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection(*self.upstream)
            await asyncio.gather(self._pipe(cr, sw), self._pipe_delayed(sr, cw),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            # shutdown: asyncio's stream callback would log a cancelled handler as an error
            cw.transport.abort()

    def __enter__(self) -> DelayProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, *self.listen), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None

        async def shutdown() -> None:
            assert self.server is not None
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_mailvet(settings: Settings, emails: list[str]) -> tuple[list[float], list[str]]:
    engine = Engine(settings)
    times: list[float] = []
    results: list[str] = []
    try:
        for email in emails:
            t0 = time.perf_counter()
            checked = await engine.verify(email)
            times.append(time.perf_counter() - t0)
            results.append(checked.verdict.result.value)
    finally:
        await engine.close()
    return times, results


def run_py3ve(emails: list[str]) -> tuple[list[float], list[str]]:
    from validate_email import validate_email

    times: list[float] = []
    results: list[str] = []
    for email in emails:
        t0 = time.perf_counter()
        ok = validate_email(
            email, check_blacklist=False, check_dns=True, dns_timeout=5, check_smtp=True,
            smtp_timeout=5, smtp_helo_host="bench.localhost", smtp_from_address="b@bench.localhost",
            smtp_skip_tls=True,
        )
        times.append(time.perf_counter() - t0)
        results.append({True: "valid", False: "invalid", None: "ambiguous"}[ok])
    return times, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="addresses per measurement")
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    args = parser.parse_args()
    n, rtt = args.n, args.rtt_ms / 1000

    behaviour = mailboxes("alice", style="gmail")
    fast = SmtpSim(behaviour, hosts=(FAST_IP,), port=25)
    slow = SmtpSim(behaviour, hosts=(SIM_SLOW_IP,))
    with run_dns_server_in_thread(build_zone(n)) as dns_server, SmtpSimThread(fast), \
            SmtpSimThread(slow) as slow_thread, \
            DelayProxy((PROXY_IP, 25), (SIM_SLOW_IP, slow_thread.port), rtt), \
            simulated_getaddrinfo({"mx.fast.test": FAST_IP, "mx.slow.test": PROXY_IP}):
        host, port = parse_nameserver(dns_server.nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
        dns.resolver.default_resolver = resolver
        settings = Settings(dns_nameservers=[dns_server.nameserver], smtp_port=25,
                            allow_private_mx=True, deadline=10.0,
                            allowed_special_domains=["test"])  # special-use (RFC 6761)

        fast_emails, slow_emails = addresses(n, "fast"), addresses(max(20, n // 10), "slow")
        mv_t, mv_r = asyncio.run(run_mailvet(settings, fast_emails))
        ve_t, ve_r = run_py3ve(fast_emails)
        mv_rt_t, _ = asyncio.run(run_mailvet(settings, slow_emails))
        ve_rt_t, _ = run_py3ve(slow_emails)

    def row(name: str, t: list[float]) -> str:
        return f"{name:<20} p50 {pct(t, .5) * 1000:7.2f} ms   p99 {pct(t, .99) * 1000:7.2f} ms"

    print(f"latency, no injected latency, {n} addresses (half exist, half unknown):")
    print(row("mailvet", mv_t))
    print(row("py3-validate-email", ve_t))
    print(f"  p50 ratio py3-validate-email / mailvet: {pct(ve_t, .5) / pct(mv_t, .5):.2f}")
    print(f"  mailvet verdicts: {dict(sorted((r, mv_r.count(r)) for r in set(mv_r)))}")
    print(f"  py3-validate-email: {dict(sorted((r, ve_r.count(r)) for r in set(ve_r)))}")
    agree = sum((m == "deliverable") == (v == "valid") for m, v in zip(mv_r, ve_r, strict=True))
    print(f"  same answer (deliverable == valid) on {agree}/{len(mv_r)} addresses")
    print(f"round trips per verdict at {args.rtt_ms:g} ms RTT, {len(slow_emails)} addresses "
          "(minimum for a catch-all-aware check: 6):")
    mv_rt = statistics.median(t / rtt for t in mv_rt_t)
    ve_rt = statistics.median(t / rtt for t in ve_rt_t)
    print(f"mailvet              median {mv_rt:5.2f} round trips "
          f"({statistics.median(mv_rt_t) * 1000:.0f} ms), includes the catch-all RCPT")
    print(f"py3-validate-email   median {ve_rt:5.2f} round trips "
          f"({statistics.median(ve_rt_t) * 1000:.0f} ms), no catch-all check")


if __name__ == "__main__":
    main()
