"""Helpers the end-to-end tests share."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["serve_with_dev_key", "wait_for"]


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms until it holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextmanager
def serve_with_dev_key(
    env: dict[str, str], port: int, key_file: Path
) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """A real ``mailvet serve`` on 127.0.0.1:``port`` with ``--dev-key-file``: yields the
    process, its base URL and the dev key it printed, once /healthz answers "ok"; stops
    it (terminate, then kill) on the way out."""
    cmd = [sys.executable, "-m", "mailvet", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--dev-key-file", str(key_file)]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        key = proc.stdout.readline().removeprefix("API key:").strip()
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, "mailvet serve exited"
            try:
                return bool(httpx.get(f"{url}/healthz", timeout=1).json()["status"] == "ok")
            except (httpx.TransportError, ValueError):
                return False

        wait_for(up, 30, "mailvet serve")
        yield proc, url, key
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
                proc.kill()
                proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
