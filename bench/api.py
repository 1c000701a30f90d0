"""HTTP API benchmark: ``GET /v1/validate`` (cached) vs a bare FastAPI route, one run.

    .venv/bin/python bench/api.py [--rounds 15] [--duration 2] [--connections 32]

Starts two uvicorn servers in their own processes with the same settings (one
worker, loopback, no access log, the same HTTP and event-loop implementations):

- **mailvet**: ``create_app`` with a MemoryStore and a paid key, its engine pointed
  at the simulated internet (``mailvet.testing`` DNS and SMTP servers in threads of
  that process). The benchmarked address is validated once first, so every timed
  request is served from the result cache: authentication (cached), rate limit,
  result cache, JSON envelope, metrics middleware, body-limit middleware.
- **bare**: a trivial FastAPI route ``GET /v1/validate?email=`` returning a dict of
  the same shape and size (FastAPI's default JSON response).

Load comes from a separate process on loopback: ``wrk`` when installed (Debian
package ``wrk``), else a small keep-alive asyncio client (``--load python``). On
a machine with two or more CPUs the servers are pinned to CPU 0 and the load
generator to CPU 1. Each round measures both servers (alternating which goes
first); the figures are medians over rounds and the ratio is the median of the
per-round ratios. Prints a Markdown table for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EMAIL = "alice@shop.test"
PATH = f"/v1/validate?email={EMAIL}"
HOST = "127.0.0.1"


# --- the servers (run in child processes) ---


def bare_app() -> Any:
    from fastapi import FastAPI

    payload = {
        "data": {
            "id": "0b0c6a55-3a9e-4f53-9d4e-1d3c8f6b2a10",
            "email": EMAIL,
            "username": "alice",
            "domain": "shop.test",
            "did_you_mean": None,
            "mx_record": "mx.shop.test",
            "provider": None,
            "score": 100,
            "isv_format": True,
            "isv_domain": True,
            "isv_mx": True,
            "isv_noblock": True,
            "isv_nocatchall": True,
            "isv_nogeneric": True,
            "is_disposable": False,
            "is_free": False,
            "result": "deliverable",
            "reason": "accepted_email",
        },
        "error": None,
    }
    app = FastAPI()

    @app.get("/v1/validate")
    async def validate(email: str) -> dict[str, Any]:
        return payload

    return app


def serve(kind: str, port: int) -> None:
    import uvicorn

    key = ""
    stack = contextlib.ExitStack()
    if kind == "bare":
        app = bare_app()
    else:
        from mailvet.api.app import create_app
        from mailvet.settings import Settings
        from mailvet.storage.base import Plan
        from mailvet.storage.memory import MemoryStore
        from mailvet.testing.dns import Zone, run_dns_server_in_thread
        from mailvet.testing.smtp import SmtpSim, SmtpSimThread, mailboxes

        zone = Zone({"shop.test": {"MX": [(10, "mx.shop.test")]}, "mx.shop.test": {"A": [HOST]}})
        dns = stack.enter_context(run_dns_server_in_thread(zone))
        smtp = stack.enter_context(SmtpSimThread(SmtpSim(mailboxes("alice"))))
        settings = Settings(
            dns_nameservers=[dns.nameserver],
            smtp_port=smtp.port,
            allow_private_mx=True,
            database_url="memory://",
            rate_limit_per_minute=10**9,
            allowed_special_domains=["test"],  # shop.test is a special-use name (RFC 6761)
        )
        store = MemoryStore()
        _, key = asyncio.run(store.create_key("bench", Plan.PAID))
        app = create_app(settings, store=store)
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="on"
    )
    print(f"KEY {key}", flush=True)
    with stack:
        uvicorn.Server(config).run()


# --- load generation ---


def run_wrk(url: str, key: str, duration: float, connections: int) -> float:
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "-H",
        f"x-mails-api-key: {key}",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"non-2xx responses:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    return float(match.group(1))


async def _python_load(port: int, key: str, duration: float, connections: int) -> float:
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nx-mails-api-key: {key}\r\n\r\n"
    ).encode()
    done = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < stop:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return done / (time.perf_counter() - start)


def load(port: int, key: str, duration: float, connections: int) -> None:
    """Child process: the Python load generator; prints requests/s."""
    print(asyncio.run(_python_load(port, key, duration, connections)), flush=True)


def measure(method: str, port: int, key: str, duration: float, connections: int) -> float:
    if method == "wrk":
        return run_wrk(f"http://{HOST}:{port}{PATH}", key, duration, connections)
    cmd = [sys.executable, __file__, "--load-child", str(port), key, str(duration)]
    cmd.append(str(connections))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_env(1))
    return float(out.stdout.strip().splitlines()[-1])


# --- orchestration ---


def _env(cpu: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if cpu is not None:
        env["MAILVET_BENCH_CPU"] = str(cpu)
    return env


def _pin_from_env() -> None:
    cpu = os.environ.get("MAILVET_BENCH_CPU")
    if cpu is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {int(cpu)})


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(kind: str) -> Iterator[tuple[int, str, int]]:
    port = _free_port()
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env(0))
    try:
        assert proc.stdout is not None
        key = proc.stdout.readline().strip().removeprefix("KEY").strip()
        for _ in range(500):
            try:
                urllib.request.urlopen(f"http://{HOST}:{port}/docs", timeout=1).read()
                break
            except OSError:
                time.sleep(0.02)
        yield port, key, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--serve", choices=["mailvet", "bare"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--load-child", nargs=4, metavar=("PORT", "KEY", "SECONDS", "CONNS"))
    args = parser.parse_args()
    _pin_from_env()
    if args.serve:
        serve(args.serve, args.port)
        return
    if args.load_child:
        port, key, seconds, conns = args.load_child
        load(int(port), key, float(seconds), int(conns))
        return

    method = args.load
    if method == "auto":
        method = "wrk" if shutil.which("wrk") else "python"
    if method == "wrk" and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # wrk inherits the load generator's CPU

    with server("mailvet") as (mv_port, key, mv_pid), server("bare") as (bare_port, _, bare_pid):
        warm = urllib.request.Request(
            f"http://{HOST}:{mv_port}{PATH}&details=1", headers={"x-mails-api-key": key}
        )
        body = json.loads(urllib.request.urlopen(warm, timeout=10).read())
        assert body["data"]["result"] == "deliverable", body
        measure(method, mv_port, key, 1.0, args.connections)  # warm-up, untimed
        measure(method, bare_port, key, 1.0, args.connections)
        rps: dict[str, list[float]] = {"mailvet": [], "bare": []}
        cpu_us: dict[str, list[float]] = {"mailvet": [], "bare": []}
        for i in range(args.rounds):
            order = [("mailvet", mv_port, mv_pid), ("bare", bare_port, bare_pid)]
            if i % 2:
                order.reverse()
            for name, port, pid in order:
                cpu0 = cpu_seconds(pid)
                rate = measure(method, port, key, args.duration, args.connections)
                used = cpu_seconds(pid) - cpu0
                rps[name].append(rate)
                cpu_us[name].append(used / (rate * args.duration) * 1e6 if rate else 0.0)
            print(
                f"round {i + 1}: mailvet {rps['mailvet'][-1]:.0f} req/s "
                f"({cpu_us['mailvet'][-1]:.0f} us CPU/req), "
                f"bare {rps['bare'][-1]:.0f} req/s ({cpu_us['bare'][-1]:.0f} us CPU/req)"
            )

    mailvet, bare = rps["mailvet"], rps["bare"]
    ratios = [m / b for m, b in zip(mailvet, bare, strict=True)]
    cpu_ratios = [b / m for m, b in zip(cpu_us["mailvet"], cpu_us["bare"], strict=True) if m and b]
    print()
    print(f"load: {method}, {args.connections} connections, {args.duration:g} s x {args.rounds}")
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    print()
    print("| endpoint | requests/s (median) | server CPU per request (median) |")
    print("|---|---|---|")
    for label, name in (
        ("mailvet `GET /v1/validate` (cached)", "mailvet"),
        ("bare FastAPI route", "bare"),
    ):
        print(
            f"| {label} | {statistics.median(rps[name]):.0f} | "
            f"{statistics.median(cpu_us[name]):.0f} us |"
        )
    print()
    ratio = statistics.median(ratios)
    print(f"ratio mailvet / bare, requests/s (median of per-round ratios): {ratio:.2f}")
    if cpu_ratios:
        cpu_ratio = statistics.median(cpu_ratios)
        print(f"ratio mailvet / bare, requests per server CPU second: {cpu_ratio:.2f}")


if __name__ == "__main__":
    main()
