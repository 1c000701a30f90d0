"""Batch engine benchmark: a 100,000-address list on the simulated internet (loopback only).

    .venv/bin/python bench/batch.py                 # 100,000 addresses, default caps
    .venv/bin/python bench/batch.py --quick         # 5,000 addresses, 200 for the peer
    .venv/bin/python bench/batch.py --size 1000000 --py3ve-sample 0   # the RSS target
    .venv/bin/python bench/batch.py --workers 2 --py3ve-sample 0      # PostgreSQL, 2 workers

The world is :class:`mailvet.testing.bulk.BulkWorld`: ~40 % of the addresses on one big
provider's MX, 20 % and 10 % on two others, the rest over 2,000 small domains (each its
own MX on its own 127.x.y.z address); a few percent on catch-all, greylisting and tarpit
domains, 5 % unknown mailboxes, 1 % repeats; 20 ms before every reply. Every lane gets
the same fixed caps (the ``--max-sessions`` ... flags, passed as the ``mx_*`` settings).

Four processes, so each figure is its own: the simulated internet (DNS + SMTP) in one
child; the batch created in the store (SQLite in a temporary directory) by a second,
as the API or ``mailvet batch`` would; worked by a third, which runs the BatchRunner as
``mailvet serve`` does (start, then wait until idle) and reports its wall time, CPU time
and peak RSS (VmHWM: the engine's own memory, not the list's creation, not the
simulator's); then py3-validate-email checks a sample of the same world (every
``size / n``-th address) against a fresh simulator, one address after another as its
API goes, pointed at the simulated DNS (dnspython's default resolver) and SMTP port
(``smtplib.SMTP.default_port``), with the simulated host names resolved in-process.

``--workers N`` runs the same list on PostgreSQL instead (a throwaway server,
:mod:`mailvet.testing.postgres`): ``mailvet db upgrade``, N ``mailvet worker`` processes
and one ``mailvet serve`` (all real processes with the same ``MAILVET_*`` settings), the
list submitted through ``POST /v1/batch``; the wall time runs from the POST's answer to
the batch's ``finished_at``, CPU and peak RSS are the workers' (``--profile`` applies to
the in-process run only). The simulator's counts are over every worker: the per-MX caps
it reports are the cluster's.

Printed: the lower bound the caps allow (``mailvet.testing.bulk.lower_bound``, formula in
docs/BENCHMARKS.md) next to the wall time, SMTP sessions and RCPTs per address (counted
by the simulator), the most sessions open at once and RCPTs in any one second on the
busiest lanes, peak RSS, verdicts against the world's truth, and both rates.
``--profile FILE`` runs the batch process under cProfile and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing as mp
import os
import platform
import pstats
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

os.environ.setdefault("PY3VE_IGNORE_UPDATER", "1")  # it would fetch a list from GitHub

from mailvet.settings import Settings
from mailvet.testing import smtp as sim
from mailvet.testing.bulk import BulkSpec, BulkWorld, Caps, LaneLoad, lower_bound
from mailvet.testing.internet import simulated_getaddrinfo

QUICK_SIZE = 5_000
DEFAULT = BulkSpec()


def vm_hwm_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --- the simulated internet, in its own process -----------------------------------------


def most_in_window(times: list[float], window: float) -> int:
    """The most events in any ``window`` seconds."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def serve_world(spec: BulkSpec, conn: Connection) -> None:
    """Child: DNS + SMTP for the world until told to stop; answers "stats" requests."""
    from mailvet.testing.dns import run_dns_server_in_thread

    world = BulkWorld(spec)
    smtp = world.smtp_sim()
    with run_dns_server_in_thread(world.zone()) as dns_server, sim.SmtpSimThread(smtp):
        conn.send({"nameserver": dns_server.nameserver, "port": smtp.port})
        while (request := conn.recv()) != "stop":
            kind, timelines = request
            assert kind == "stats"
            per_lane = {}
            rcpts = 0
            for lane, ip in world.hosts().items():
                connects, rcpt_times = smtp.connects(ip), smtp.rcpt_times(ip)
                rcpts += len(rcpt_times)
                if connects:
                    per_lane[lane] = {
                        "sessions": len(connects),
                        "peak_sessions": smtp.max_concurrent(ip),
                        "connects_per_minute": most_in_window(connects, 60.0),
                        "rcpts": len(rcpt_times),
                        "rcpts_per_second": most_in_window(rcpt_times, 1.0),
                        "rcpts_per_10s": most_in_window(rcpt_times, 10.0),
                        "first_rcpt": rcpt_times[0] if rcpt_times else None,
                        "last_rcpt": rcpt_times[-1] if rcpt_times else None,
                        "times": rcpt_times if lane in timelines else None,
                    }
            conn.send(
                {
                    "sessions": len(smtp.sessions),
                    "rcpts": rcpts,
                    "lanes": per_lane,
                    "cpu": time.process_time(),
                }
            )
    conn.close()


@contextmanager
def world_process(spec: BulkSpec) -> Iterator[tuple[dict[str, Any], Connection]]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve_world, args=(spec, child), name="bench-world")
    proc.start()
    try:
        yield parent.recv(), parent
    finally:
        if proc.is_alive():
            parent.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def run_child(target: Any, *args: Any) -> dict[str, Any]:
    """Run ``target(*args, conn)`` in a fresh (spawned) process; return what it sends."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child))
    proc.start()
    result: dict[str, Any] = parent.recv()
    proc.join(60)
    if "error" in result:
        raise SystemExit(f"{target.__name__} failed:\n{result['error']}")
    return result


# --- mailvet: create the batch, then work it ----------------------------------------------


def settings_for(net: dict[str, Any], db_url: str, caps: Caps) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "dns_nameservers": [net["nameserver"]],
        "smtp_port": net["port"],
        "allow_private_mx": True,  # every simulated MX is on 127.0.0.0/8
        "allowed_special_domains": ["test"],  # and named under .test (RFC 6761)
        "max_batch_size": 10_000_000,
    }
    fields = Settings.model_fields
    for name, value in asdict(caps).items():
        if f"mx_{name}" in fields:
            values[f"mx_{name}"] = value
    if caps.total_sessions is not None:
        values["batch_concurrency"] = caps.total_sessions  # sessions over all lanes
    return Settings(**values)


def env_for(settings: Settings) -> dict[str, str]:
    """The ``MAILVET_*`` variables giving a ``mailvet`` process these settings (those the
    bench sets: where the simulated internet is, the caps, the database)."""
    env = {**os.environ}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"MAILVET_{name.upper()}"] = text
    return env


def _guard(conn: Connection, work: Any) -> None:
    import traceback

    try:
        conn.send(asyncio.run(work))
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


async def _create(spec: BulkSpec, db_url: str) -> dict[str, Any]:
    from mailvet.storage import open_store
    from mailvet.storage.base import Plan

    t0 = time.perf_counter()
    emails = BulkWorld(spec).addresses()
    generated = time.perf_counter() - t0
    store = open_store(db_url)
    try:
        await store.migrate()
        key, _ = await store.create_key("bench", Plan.PAID)
        t1 = time.perf_counter()
        record = await store.create_batch(key.id, "bench", emails)
        stored = time.perf_counter() - t1
    finally:
        await store.close()
    return {"batch_id": record.id, "user_id": key.id, "generate_s": generated,
            "store_s": stored, "rss_mb": vm_hwm_mb()}  # fmt: skip


def create_batch(spec: BulkSpec, db_url: str, conn: Connection) -> None:
    _guard(conn, _create(spec, db_url))


async def _work(settings: Settings, profile: str | None, timeout: float) -> dict[str, Any]:
    from mailvet.engine.pipeline import Engine
    from mailvet.jobs.inprocess import BatchRunner
    from mailvet.storage import open_store

    store = open_store(settings.database_url)
    await store.migrate()
    engine = Engine(settings)
    runner = BatchRunner(store, engine, settings)
    profiler = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    start = time.monotonic()  # the simulator's clock too (CLOCK_MONOTONIC is system-wide)
    if profiler:
        profiler.enable()
    runner.start()  # as `mailvet serve` does: resume what the store holds
    finished = True
    try:
        await asyncio.wait_for(runner.wait_idle(), timeout)
    except TimeoutError:
        finished = False
    wall = time.perf_counter() - t0
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu0
    await runner.stop()
    await engine.close()
    await store.close()
    if profiler and profile:
        profiler.dump_stats(profile)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_mb": vm_hwm_mb(),
        "finished": finished,
        "start": start,
    }


def work_batch(settings: Settings, profile: str | None, timeout: float, conn: Connection) -> None:
    _guard(conn, _work(settings, profile, timeout))


# --- PostgreSQL: `mailvet serve` takes the batch, N `mailvet worker` processes work it ----


def work_cluster(
    spec: BulkSpec,
    settings: Settings,
    workers: int,
    concurrency: int | None,
    timeout: float,
    logs: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``workers`` ``mailvet worker`` processes and one ``mailvet serve`` on the
    settings' PostgreSQL database (schema by ``mailvet db upgrade``), submit the world's
    list through ``POST /v1/batch`` as a client would, and wait for ``finished_at``.

    The wall time runs from the POST's answer (the batch stored and queued: what the
    in-process run has before ``start()``) to the batch's ``finished_at``. CPU is the
    workers' own (``/proc/<pid>/stat``) from that answer on; RSS their peaks (VmHWM).
    """
    import httpx

    from mailvet.testing.processes import MailvetProcess, free_port, run_mailvet

    env = env_for(settings)
    env["MAILVET_MAX_BODY_BYTES"] = str(1 << 30)  # the list goes in one request body
    run_mailvet(["db", "upgrade"], env)
    key = run_mailvet(["keys", "create", "--name", "bench"], env).stdout.splitlines()[0]
    body = json.dumps({"emails": BulkWorld(spec).addresses(), "name": "bench"}).encode()
    headers = {"x-mails-api-key": key}
    with ExitStack() as stack:
        procs = []
        for i in range(workers):
            proc = MailvetProcess.start_worker(
                env, logs / f"worker{i + 1}.log", concurrency=concurrency
            )
            stack.callback(proc.stop)
            procs.append(proc)
        port = free_port()
        api = stack.enter_context(MailvetProcess.serve(env, logs / "api.log", port))
        for proc in procs:
            proc.wait_ready(120)
        base = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        answer = httpx.post(
            f"{base}/v1/batch",
            content=body,
            headers={**headers, "content-type": "application/json"},
            timeout=600,
        )
        answer.raise_for_status()
        posted, start = time.time(), time.monotonic()
        post_s = time.perf_counter() - t0
        batch_id: str = answer.json()["id"]
        cpu0 = [proc.cpu_seconds() for proc in procs]
        api_cpu0 = api.cpu_seconds()
        finished_at: float | None = None
        while time.monotonic() - start < timeout:
            got = httpx.get(
                f"{base}/v1/batch/{batch_id}", params={"limit": 1}, headers=headers, timeout=60
            )
            got.raise_for_status()
            stamp = got.json().get("finished_at")
            if stamp:
                finished_at = datetime.fromisoformat(stamp).timestamp()
                break
            dead = [p.log.name for p in procs if not p.alive()]
            if dead:
                raise SystemExit(f"worker exited: {dead}\n{procs[0].output()[-4000:]}")
            time.sleep(0.5)
        wall = finished_at - posted if finished_at is not None else time.monotonic() - start
        cpu = [proc.cpu_seconds() - before for proc, before in zip(procs, cpu0, strict=True)]
        rss = [proc.peak_rss_mb() for proc in procs]
        api_cpu = api.cpu_seconds() - api_cpu0
    created = {"batch_id": batch_id, "post_s": post_s}
    worked = {
        "wall_s": wall,
        "cpu_s": sum(cpu),
        "cpu_per_worker": cpu,
        "rss_mb": max(rss),
        "rss_per_worker": rss,
        "api_cpu_s": api_cpu,
        "finished": finished_at is not None,
        "start": start,
    }
    return created, worked


async def read_results(
    spec: BulkSpec, db_url: str, batch_id: str
) -> tuple[Counter[tuple[str, str]], Counter[str], int]:
    """(expected, got) result pairs and reasons, read back from the store."""
    from mailvet.storage import open_store

    world = BulkWorld(spec)
    pairs: Counter[tuple[str, str]] = Counter()
    reasons: Counter[str] = Counter()
    missing = 0
    store = open_store(db_url)
    try:
        async for item in store.iter_items(batch_id):  # streamed: a million items fit
            if item.verdict is None:
                missing += 1
                continue
            got = str(item.verdict.get("result"))
            pairs[(world.truth(item.position).result, got)] += 1
            reasons[str(item.verdict.get("reason"))] += 1
    finally:
        await store.close()
    return pairs, reasons, missing


# --- py3-validate-email on a sample ---------------------------------------------------------


def py3ve_sample(spec: BulkSpec, n: int, net: dict[str, Any], conn: Connection) -> None:
    """Child: py3-validate-email over every (size / n)-th address, one after another."""
    import smtplib

    import dns.resolver

    from mailvet.settings import parse_nameserver

    world = BulkWorld(spec)
    sample = [world.address(k * spec.size // n) for k in range(n)]
    host, port = parse_nameserver(net["nameserver"])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    dns.resolver.default_resolver = resolver
    smtplib.SMTP.default_port = net["port"]
    try:
        conn.send(_py3ve(world, sample))
    except BaseException:
        import traceback

        conn.send({"error": traceback.format_exc()})
    conn.close()


def _py3ve(world: BulkWorld, sample: list[str]) -> dict[str, Any]:
    from validate_email import validate_email

    answers: Counter[str] = Counter()
    with simulated_getaddrinfo(world.hosts()):
        t0 = time.perf_counter()
        for email in sample:
            ok = validate_email(
                email, check_blacklist=False, check_dns=True, dns_timeout=10,
                check_smtp=True, smtp_timeout=10, smtp_helo_host="bench.localhost",
                smtp_from_address="b@bench.localhost", smtp_skip_tls=True,
            )  # fmt: skip
            answers[{True: "valid", False: "invalid", None: "ambiguous"}[ok]] += 1
        elapsed = time.perf_counter() - t0
    return {"n": len(sample), "seconds": elapsed, "answers": dict(answers)}


# --- main -------------------------------------------------------------------------------------


def print_lanes(
    world: BulkWorld,
    busiest: list[LaneLoad],
    smtp: dict[str, Any],
    cap: Caps,
    start: float,
    wall: float,
) -> None:
    """What the simulator saw per lane: caps kept, sessions per address, when each busy
    lane worked, and what came last (where the time beyond the bound went)."""
    lanes: dict[str, dict[str, Any]] = smtp["lanes"]
    big = {load.host for load in busiest}
    for load in busiest:
        lane = lanes.get(load.host)
        if lane is None or lane["first_rcpt"] is None:
            print(f"  {load.host}: no RCPT")
            continue
        first, last = lane["first_rcpt"] - start, lane["last_rcpt"] - start
        print(
            f"  {load.host}: {lane['sessions']:,} sessions for {load.addresses:,} addresses "
            f"({lane['sessions'] / load.addresses:.4f} per address), at most "
            f"{lane['peak_sessions']} at once (cap {cap.max_sessions}), "
            f"{lane['connects_per_minute']} connects in a minute (cap {cap.connects_per_minute})"
        )
        print(
            f"    {lane['rcpts']:,} RCPTs from +{first:.1f} s to +{last:.1f} s = "
            f"{lane['rcpts'] / max(1e-9, last - first):.0f}/s; most in any 1 s "
            f"{lane['rcpts_per_second']}, in any 10 s {lane['rcpts_per_10s']} "
            f"(cap {cap.rcpt_per_second:g}/s after a burst of {cap.rcpt_burst})"
        )
        times: list[float] | None = lane.get("times")
        if times:
            step = max(10.0, round(wall / 12 / 10) * 10)
            slices = Counter(int((t - start) // step) for t in times)
            print(
                f"    RCPT/s by {step:g} s slice: "
                + " ".join(f"{slices.get(k, 0) / step:.0f}" for k in range(int(wall // step) + 1))
            )
    kinds = {d.lane: d.kind.value for d in world.domains()}
    small = [v for k, v in lanes.items() if k not in big]
    if small:
        addresses = sum(v["rcpts"] for v in small)
        sessions = sum(v["sessions"] for v in small)
        print(
            f"  other {len(small):,} lanes: {sessions:,} sessions for {addresses:,} RCPTs, "
            f"at most {max(v['peak_sessions'] for v in small)} sessions at once, "
            f"{max(v['rcpts_per_second'] for v in small)} RCPTs in a second"
        )
    ended = sorted(
        ((v["last_rcpt"] - start, k) for k, v in lanes.items() if v["last_rcpt"] is not None),
        reverse=True,
    )
    if ended:
        tail = Counter(kinds.get(k, "?") for t, k in ended if t > ended[0][0] - 10)
        print(
            f"  last RCPT at +{ended[0][0]:.1f} s (wall {wall:.1f} s), on {ended[0][1]} "
            f"({kinds.get(ended[0][1], '?')}); lanes with a RCPT in the last 10 s of RCPTs: "
            f"{dict(tail)}"
        )


def print_profile(path: str) -> None:
    print(f"\nprofile of the batch process ({path}), top functions by own time:")
    stats = pstats.Stats(path, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="addresses in the batch")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_SIZE} addresses, a 200-address peer sample, 5 s greylist",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT.seed)
    caps = parser.add_argument_group("caps, per MX (lane), the same for every lane")
    caps.add_argument("--max-sessions", type=int, default=8)
    caps.add_argument("--rcpt-per-session", type=int, default=100)
    caps.add_argument("--rcpt-per-second", type=float, default=200.0)
    caps.add_argument("--connects-per-minute", type=int, default=120)
    caps.add_argument(
        "--total-sessions",
        type=int,
        default=100,
        help="sessions open at once over all lanes (MAILVET_BATCH_CONCURRENCY)",
    )
    world = parser.add_argument_group("world")
    world.add_argument("--latency-ms", type=float, default=DEFAULT.latency_ms)
    world.add_argument("--tarpit-latency-ms", type=float, default=DEFAULT.tarpit_latency_ms)
    world.add_argument(
        "--greylist-delay", type=float, default=None, help="seconds (default 30; 5 with --quick)"
    )
    parser.add_argument(
        "--py3ve-sample",
        type=int,
        default=None,
        help="addresses for py3-validate-email (default 1000; 200 with --quick; 0 skips it)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip reading every verdict back to compare with the truth",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="PostgreSQL (a throwaway server) and N `mailvet worker` processes, the list "
        "submitted through one `mailvet serve` (default 0: SQLite, worked in-process)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="with --workers: `mailvet worker --concurrency`, jobs (SMTP sessions) at once "
        "per worker (default: --total-sessions / N, so the cluster holds as many sessions "
        "as the in-process run)",
    )
    parser.add_argument("--profile", metavar="FILE", help="cProfile the batch process")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="give up on the batch after this many seconds (default: 5 x the bound, at least 300)",
    )
    args = parser.parse_args()  # fmt: skip
    # SIGTERM: unwind (stop the workers, the API and the throwaway PostgreSQL), as Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    size = QUICK_SIZE if args.quick else args.size
    grey = args.greylist_delay if args.greylist_delay is not None else (
        5.0 if args.quick else 30.0)  # fmt: skip
    sample = args.py3ve_sample if args.py3ve_sample is not None else (
        200 if args.quick else 1000)  # fmt: skip
    spec = BulkSpec(size=size, seed=args.seed, latency_ms=args.latency_ms,
                    tarpit_latency_ms=args.tarpit_latency_ms, greylist_delay=grey)  # fmt: skip
    cap = Caps(args.max_sessions, args.rcpt_per_session, args.rcpt_per_second,
               args.connects_per_minute, total_sessions=args.total_sessions)  # fmt: skip

    t0 = time.perf_counter()
    bulk = BulkWorld(spec)
    lanes = bulk.lanes()
    distinct = sum(load.addresses for load in lanes.values())
    bound = lower_bound(lanes, cap, greylist_delay=grey, latency_ms=spec.latency_ms)
    world_s = time.perf_counter() - t0
    busiest = sorted(lanes.values(), key=lambda load: -load.addresses)

    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"world: {size:,} addresses ({distinct:,} distinct), "
          f"{sum(1 for _ in bulk.domains()):,} domains, {len(lanes):,} MX lanes; "
          f"{spec.latency_ms:g} ms per reply (tarpits {spec.tarpit_latency_ms:g} ms), "
          f"greylist delay {grey:g} s; built in {world_s:.1f} s")  # fmt: skip
    print("  busiest lanes: " + ", ".join(
        f"{load.host} {load.addresses:,} ({load.addresses / max(1, distinct):.0%})"
        for load in busiest[:3]))  # fmt: skip
    print(
        f"caps per lane: {cap.max_sessions} sessions, {cap.rcpt_per_session} RCPT/session, "
        f"{cap.rcpt_per_second:g} RCPT/s, {cap.connects_per_minute} connects/min; "
        f"{cap.total_sessions} sessions over all lanes"
    )
    terms = ", ".join(f"{k} {v:.1f} s" for k, v in bound.terms.items())
    print(
        f"lower bound: {bound.seconds:.1f} s (set by {bound.lane}; slowest lane: {terms}; "
        f"greylist floor {bound.greylist_seconds:.1f} s; "
        f"total-sessions floor {bound.sessions_seconds:.1f} s)"
    )

    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="mailvet-bench-"))
        if args.workers:
            from mailvet.testing.postgres import postgres_server

            db_url = stack.enter_context(postgres_server("mailvet_bench")).url
        else:
            db_url = f"sqlite:///{tmp}/bench.db"
        with world_process(spec) as (net, conn):
            settings = settings_for(net, db_url, cap)
            timeout = args.timeout or max(300.0, 5 * bound.seconds)
            if args.workers:
                concurrency = args.concurrency or -(-(cap.total_sessions or 100) // args.workers)
                created, worked = work_cluster(
                    spec, settings, args.workers, concurrency, timeout, Path(tmp)
                )
                print(
                    f"batch submitted: POST /v1/batch of {size:,} addresses answered in "
                    f"{created['post_s']:.1f} s (stored and queued); {args.workers} "
                    f"`mailvet worker --concurrency {concurrency}` on PostgreSQL"
                )
            else:
                created = run_child(create_batch, spec, db_url)
                print(
                    f"batch created in the store: generated in {created['generate_s']:.1f} s,"
                    f" stored in {created['store_s']:.1f} s, peak RSS {created['rss_mb']:.0f} MB"
                )
                worked = run_child(work_batch, settings, args.profile, timeout)
            conn.send(("stats", [load.host for load in busiest[:3]]))
            smtp = conn.recv()
        wall = worked["wall_s"]
        if worked["finished"]:
            print(
                f"\nwall time: {wall:.1f} s = {wall / bound.seconds:.2f} x the bound "
                f"(target <= 1.3); {size / wall:,.0f} addresses/s"
            )
        else:
            print(f"\nTHE BATCH DID NOT FINISH within {wall:.0f} s (--timeout); so far:")
        if args.workers:
            per = ", ".join(f"{c:.1f}" for c in worked["cpu_per_worker"])
            rss = ", ".join(f"{r:.0f}" for r in worked["rss_per_worker"])
            print(
                f"workers: {worked['cpu_s']:.1f} s CPU in all ({per}), peak RSS {rss} MB; "
                f"API process: {worked['api_cpu_s']:.1f} s CPU; "
                f"simulator: {smtp['cpu']:.1f} s CPU"
            )
        else:
            print(
                f"batch process: {worked['cpu_s']:.1f} s CPU, peak RSS {worked['rss_mb']:.0f} MB"
                f"; simulator: {smtp['cpu']:.1f} s CPU"
            )
        print(
            f"SMTP sessions: {smtp['sessions']:,} = {smtp['sessions'] / size:.4f} per address"
            f"; RCPTs: {smtp['rcpts']:,} = {smtp['rcpts'] / size:.3f} per address"
        )
        print_lanes(bulk, busiest[:3], smtp, cap, worked["start"], wall)
        if not args.no_verify:
            pairs, reasons, missing = asyncio.run(read_results(spec, db_url, created["batch_id"]))
            right = sum(n for (want, got), n in pairs.items() if want == got)
            print(
                f"verdicts as the world says: {right:,}/{size:,}"
                + (f", {missing:,} without a verdict" if missing else "")
            )
            wrong = {f"{w}->{g}": n for (w, g), n in pairs.most_common() if w != g}
            if wrong:
                print(f"  expected->got: {wrong}")
            print(f"  reasons: {dict(reasons.most_common())}")

    if sample and worked["finished"]:
        with world_process(spec) as (net, _):
            peer = run_child(py3ve_sample, spec, sample, net)
        rate = peer["n"] / peer["seconds"]
        print(
            f"\npy3-validate-email: {peer['n']} addresses in {peer['seconds']:.1f} s = "
            f"{rate:.1f} addresses/s ({peer['answers']})"
        )
        print(f"mailvet / py3-validate-email: {size / wall / rate:.0f} x (target >= 100)")
    if args.profile:
        print_profile(args.profile)


if __name__ == "__main__":
    main()
