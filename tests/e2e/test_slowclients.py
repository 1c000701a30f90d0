"""A real ``mailvet serve`` under slow clients (mailvet.api.server) and its logs.

Each test starts the command as a process on a loopback port with small bounds, and
talks to it over raw sockets the way an attacker would.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

HOST = "127.0.0.1"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Served:
    port: int
    key: str
    stderr: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"


@contextmanager
def serve(tmp: Path, **env: str) -> Iterator[Served]:
    """``mailvet serve`` with ``MAILVET_<NAME>=value`` for each keyword; stops it after."""
    port = _free_port()
    full_env = {
        **os.environ,
        "MAILVET_DATABASE_URL": f"sqlite:///{tmp / 'serve.db'}",
        "MAILVET_DNS_NAMESERVERS": "127.0.0.1:9",  # nothing there: never the real DNS
        "MAILVET_DNS_TIMEOUT": "0.2",
        **{f"MAILVET_{name.upper()}": value for name, value in env.items()},
    }
    key_file = tmp / "dev-key"
    stderr = tmp / "stderr.log"
    cmd = [sys.executable, "-m", "mailvet", "serve", "--port", str(port),
           "--dev-key-file", str(key_file)]  # fmt: skip
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            cmd, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            assert proc.poll() is None, stderr.read_text()
            time.sleep(0.1)
        yield Served(port, key_file.read_text().strip(), stderr)
    finally:
        proc.terminate()
        proc.wait(10)


async def _open(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    got = b""
    while True:
        try:
            chunk = await reader.read(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


async def _trickled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Send the rest of a body a byte every half second (about 50 s for all of it)."""
    closed = asyncio.ensure_future(_until_closed(reader))
    for _ in range(97):
        done, _ = await asyncio.wait({closed}, timeout=0.5)
        if done:
            break
        writer.write(b"x")
    return await closed


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _fill_until_refused(port: int) -> tuple[bytes, list[Conn]]:
    """Open kept-alive connections until the server refuses one; its answer, and them."""
    request = b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n"
    kept: list[Conn] = []
    for _ in range(20):
        reader, writer = await _open(port, request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if head.startswith(b"HTTP/1.1 503"):
            refusal = head + await asyncio.wait_for(_until_closed(reader), 10)
            writer.close()
            return refusal, kept
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(int(re.findall(rb"content-length: (\d+)", head)[0]))
        kept.append((reader, writer))
    raise AssertionError("no refusal past max_connections")


def _slow_requests(key: str) -> list[bytes]:
    body_head = (
        b"POST /v1/validate HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        + f"x-mails-api-key: {key}\r\ncontent-length: 100\r\n\r\n".encode()
    )
    return [
        b"GET /healthz HT",  # half a request line
        b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: ",  # half the headers
        body_head + b'{"email": "som',  # a stalled body the app is reading
        # a stalled body nobody reads: answered at once, then the client trickles on
        b"GET /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 100\r\n\r\nabc",
    ]


async def _attack(served: Served, slow: int) -> None:
    kinds = _slow_requests(served.key)
    held = [await _open(served.port, kinds[i % len(kinds)]) for i in range(slow)]

    # a real client is still served while they are held
    async with httpx.AsyncClient(base_url=served.base, timeout=5) as client:
        r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"

    # fill the cap with kept-alive connections; past it the answer is a clear 503
    refusal, kept = await _fill_until_refused(served.port)
    assert refusal.startswith(b"HTTP/1.1 503")
    assert b"retry-after: 1" in refusal.lower()
    envelope = orjson.loads(refusal.partition(b"\r\n\r\n")[2])
    assert envelope == {"data": None, "error": "Too many open connections; retry later."}

    # the bounds close every slow connection, and idle kept-alive ones (generous wait)
    waits = [
        _trickled(reader, writer) if i % len(kinds) == 3 else _until_closed(reader)
        for i, (reader, writer) in enumerate(held)
    ]
    answers = await asyncio.wait_for(asyncio.gather(*waits), 30)
    idle = await asyncio.wait_for(asyncio.gather(*(_until_closed(r) for r, _ in kept)), 30)
    for _, writer in held + kept:
        writer.close()
    assert idle == [b""] * len(kept)
    for i, answer in enumerate(answers):
        kind = i % len(kinds)
        if kind in (0, 1):  # the headers never completed
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
        elif kind == 2:  # the app read the body and gave up on it
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer
            assert orjson.loads(body)["error"] == "The body provided did not arrive in time."
        else:  # answered before the body came; closed when the body never did
            assert answer.startswith(b"HTTP/1.1 200"), answer

    # and the server takes new clients again
    async with httpx.AsyncClient(base_url=served.base, timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200


def test_slow_clients_are_bounded_and_capped_while_real_clients_are_served(
    tmp_path: Path,
) -> None:
    slow = 200
    with serve(
        tmp_path,
        max_connections=str(slow + 5),
        header_timeout="4",
        # below /v1/validate's own time budget (3.5 s at defaults, which answers 503), so
        # the stalled body it reads meets the body bound first
        body_timeout="2",
        keepalive_timeout="2",
    ) as served:
        asyncio.run(_attack(served, slow))
    log = served.stderr.read_text()
    assert "max_connections (205) reached" in log
    assert served.key not in log


async def _one_batch(served: Served, emails: list[str]) -> None:
    headers = {"x-mails-api-key": served.key}
    async with httpx.AsyncClient(base_url=served.base, headers=headers, timeout=10) as client:
        r = await client.post("/v1/batch", json={"emails": emails})
        assert r.status_code == 200
        batch_id = r.json()["id"]
        for _ in range(300):
            r = await client.get(f"/v1/batch/{batch_id}")
            if r.json()["finished_at"] is not None:
                return
            await asyncio.sleep(0.1)
    raise AssertionError("the batch did not finish")


def test_serve_logs_json_lines_with_batch_progress_and_no_addresses(tmp_path: Path) -> None:
    emails = ["first.person@example.test", "second.person@example.test"]
    with serve(tmp_path, log_format="json", log_level="info") as served:
        asyncio.run(_one_batch(served, emails))
    lines = [orjson.loads(line) for line in served.stderr.read_text().splitlines()]
    assert lines, "nothing was logged"
    for line in lines:
        assert re.fullmatch(STAMP, line["time"])
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        assert line["logger"] and line["message"]
        assert not any(email in line["message"] for email in emails)
    messages = [line["message"] for line in lines if line["logger"] == "mailvet.jobs.inprocess"]
    assert any(re.fullmatch(r"batch \S+ started", m) for m in messages)
    assert any(re.match(r"batch \S+ finished: 2 checked in ", m) for m in messages)
    assert any("Uvicorn running on" in line["message"] for line in lines)  # uvicorn's too


def test_log_level_warning_silences_info_lines(tmp_path: Path) -> None:
    with serve(tmp_path, log_level="WARNING", max_connections="3") as served:
        asyncio.run(_one_batch(served, ["someone@example.test"]))

        async def refused() -> bytes:
            refusal, kept = await _fill_until_refused(served.port)  # logs a warning
            for _, writer in kept:
                writer.close()
            return refusal

        assert asyncio.run(refused()).startswith(b"HTTP/1.1 503")
    log = served.stderr.read_text().splitlines()
    assert log, "the warning was not logged"
    for line in log:  # text lines: timestamp, level, logger
        assert re.match(rf"{STAMP} (WARNING|ERROR|CRITICAL) \S+: ", line), line
    assert any("max_connections (3) reached" in line for line in log)
