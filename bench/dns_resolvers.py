"""DNS resolver benchmark: dnspython's async resolver vs aiodns (c-ares), same run.

    .venv/bin/pip install aiodns     # bench only; mailvet does not depend on it
    .venv/bin/python bench/dns_resolvers.py [--n 4000] [--concurrency 1,64] [--rounds 3]

The simulated authoritative server (``mailvet.testing.dns``) runs in a child process
(so it does not share the client's GIL) on loopback, serving a wildcard zone
``*.bench.test`` with an MX record. Every lookup asks for the MX of a fresh name, so
nothing is answered from any cache (c-ares 1.23+ has a query cache of its own). Each
client runs ``--n`` lookups at each concurrency level; rounds alternate the clients and
the best round counts. Also timed: ``DnsStage.lookup`` (mailvet's whole DNS stage: MX of
a fresh domain, the MX host's A/AAAA already cached) and the same lookups fully cached.
The server's query count is checked against what the clients sent. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.nameserver
import dns.version

from mailvet.engine.dns import DnsStage
from mailvet.engine.facts import DnsOutcome
from mailvet.settings import Settings
from mailvet.testing.dns import DnsServer, Zone

ZONE: dict[str, dict[str, list[Any]]] = {
    "*.bench.test": {"MX": [(10, "mx.bench.test")]},
    "mx.bench.test": {"A": ["127.0.0.1"], "AAAA": ["::1"]},
}
Lookup = Callable[[str], Awaitable[None]]


def _serve(conn: Connection) -> None:
    async def main() -> None:
        async with DnsServer(Zone(ZONE)) as server:
            conn.send(server.port)
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            conn.send(server.queries)

    asyncio.run(main())


async def run(lookup: Lookup, names: list[str], concurrency: int) -> tuple[float, float]:
    """(lookups/s, client CPU microseconds per lookup) with ``concurrency`` in flight."""
    queue = iter(names)

    async def worker() -> None:
        for name in queue:
            await lookup(name)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu
    return len(names) / (time.perf_counter() - start), cpu / len(names) * 1e6


def dnspython_client(port: int) -> Lookup:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]
    resolver.cache = None
    resolver.timeout, resolver.lifetime = 2.0, 4.0

    async def lookup(name: str) -> None:
        answer = await resolver.resolve(name, "MX", search=False)
        assert answer.rrset is not None and len(answer.rrset) == 1

    return lookup


def aiodns_client(port: int, resolv_conf: Path) -> Lookup | None:
    try:
        import aiodns
    except ImportError:
        return None
    # explicit loopback server and resolv.conf: c-ares must never see the host's resolvers
    resolver = aiodns.DNSResolver(
        nameservers=[f"127.0.0.1:{port}"], timeout=2.0, tries=2, resolvconf_path=str(resolv_conf)
    )

    async def lookup(name: str) -> None:
        result = await resolver.query_dns(name, "MX")
        assert len(result.answer) == 1

    return lookup


def stage_client(port: int) -> tuple[Lookup, DnsStage]:
    stage = DnsStage(Settings(dns_nameservers=[f"127.0.0.1:{port}"], dns_timeout=2.0))

    async def lookup(name: str) -> None:
        facts = await stage.lookup(name)
        assert facts.outcome is DnsOutcome.OK, facts

    return lookup, stage


async def bench(port: int, n: int, levels: list[int], rounds: int, resolv_conf: Path) -> int:
    clients: dict[str, Lookup] = {"dnspython": dnspython_client(port)}
    aio = aiodns_client(port, resolv_conf)
    if aio is not None:
        clients["aiodns"] = aio
    else:
        print("aiodns not installed: `.venv/bin/pip install aiodns` to compare", file=sys.stderr)
    stage_lookup, stage = stage_client(port)
    clients["DnsStage (cold MX)"] = stage_lookup
    best: dict[tuple[str, int], tuple[float, float]] = {}
    sent = serial = 0
    warm: list[str] = []

    def keep(key: tuple[str, int], figures: tuple[float, float]) -> None:
        old = best.get(key, (0.0, float("inf")))
        best[key] = (max(old[0], figures[0]), min(old[1], figures[1]))

    for _ in range(rounds):
        for level in levels:
            for label, lookup in clients.items():
                names = [f"d{serial}-{i}.bench.test" for i in range(n)]
                serial += 1
                keep((label, level), await run(lookup, names, level))
                sent += n
                if lookup is stage_lookup:
                    warm = names
    for level in levels:  # the stage's last cold names: everything is in its cache now
        for _ in range(rounds):
            keep(("DnsStage (all cached)", level), await run(stage_lookup, warm, level))
    await stage.close()
    labels = list(dict.fromkeys(label for label, _ in best))
    print(f"\n{n} MX lookups per client and level, best of {rounds} rounds")
    head = "".join(f"{f'c={lv} /s':>12}{f'c={lv} cpu us':>14}" for lv in levels)
    print(f"{'client':24}{head}")
    for label in labels:
        row = "".join(
            f"{best[(label, lv)][0]:>12,.0f}{best[(label, lv)][1]:>14,.0f}" for lv in levels
        )
        print(f"{label:24}{row}")
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    port = int(parent.recv())
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"dnspython {dns.version.version}, server in pid {proc.pid} port {port}")  # fmt: skip
    try:
        import aiodns
        import pycares

        print(f"aiodns {aiodns.__version__}, pycares {pycares.__version__}")
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        resolv_conf = Path(tmp) / "resolv.conf"
        resolv_conf.write_text("nameserver 127.0.0.1\noptions ndots:0\n")
        sent = asyncio.run(bench(port, args.n, levels, args.rounds, resolv_conf))
    parent.send("stop")
    served = int(parent.recv())
    proc.join(5)
    # every lookup is one MX query (a retry would add more); the stage adds A/AAAA once
    print(f"\nserver answered {served} queries for {sent} client lookups (+2 A/AAAA, + retries)")


if __name__ == "__main__":
    main()
