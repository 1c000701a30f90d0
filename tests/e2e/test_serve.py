"""What `make run` does: `mailvet serve --dev-key-file`, as a real process on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(tmp: Path, port: int, log: list[str] | None = None) -> Iterator[tuple[str, str]]:
    env = {
        **os.environ,
        "MAILVET_DATABASE_URL": f"sqlite:///{tmp / 'serve.db'}",
        "MAILVET_DNS_NAMESERVERS": "127.0.0.1:9",  # nothing there: never the real DNS
        "MAILVET_DNS_TIMEOUT": "0.2",
    }
    cmd = [sys.executable, "-m", "mailvet", "serve", "--port", str(port),
           "--dev-key-file", str(tmp / "dev-key")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]  # key, curl, docs, database
        assert lines[3] == f"Database: {tmp / 'serve.db'}\n", lines
        key = lines[0].removeprefix("API key:").strip()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            assert proc.poll() is None, "server exited"
            time.sleep(0.1)
        yield key, lines[1]
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            rest = proc.stdout.read()
            proc.stdout.close()
            if log is not None:
                log.append(rest)


def test_make_run_prints_a_working_key_and_curl_line(tmp_path: Path) -> None:
    (tmp_path / "dev-key").write_text("stale\n")
    (tmp_path / "dev-key").chmod(0o644)  # a looser file left behind is tightened
    port = free_port()
    log: list[str] = []
    with serve(tmp_path, port, log) as (key, curl_line):
        assert key.startswith("mv_")
        assert "curl" in curl_line and key in curl_line and f"127.0.0.1:{port}" in curl_line
        r = httpx.get(f"http://127.0.0.1:{port}/v1/validate", params={"email": "NULL"},
                      headers={"x-mails-api-key": key})
        assert r.status_code == 200
        assert r.json()["data"]["reason"] == "invalid_format"
        r = httpx.get(f"http://127.0.0.1:{port}/v1/validate", params={"email": "secret@x.test"},
                      headers={"x-mails-api-key": key})
        assert r.status_code == 200
    assert oct((tmp_path / "dev-key").stat().st_mode & 0o777) == "0o600"
    # what the server logged after start-up holds neither addresses nor the key
    assert "secret@x.test" not in log[0] and key not in log[0]
    # a second start reuses the same key instead of minting another
    with serve(tmp_path, free_port()) as (again, _):
        assert again == key
