"""Real ``mailvet`` processes for end-to-end tests and benchmarks of a cluster.

:class:`MailvetProcess` runs ``python -m mailvet <args>`` with the environment it is
given (``MAILVET_*`` pointing at the simulated internet and a database), its output
going to a log file (never a pipe nobody reads: a chatty process would block on it).
``worker()`` waits for ``mailvet worker``'s ``mailvet worker ready: <id>`` line,
``serve()`` for ``/healthz``; ``kill()`` is ``kill -9``; ``stop()`` is SIGTERM, then
SIGKILL if it does not exit. ``cpu_seconds()`` and ``peak_rss_mb()`` read
``/proc/<pid>`` while it runs (for benchmarks).

    with MailvetProcess.worker(env, tmp / "w1.log") as w1, MailvetProcess.serve(
        env, tmp / "api.log", port
    ) as api:
        ...
        w1.kill()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["WORKER_READY", "MailvetProcess", "free_port", "run_mailvet"]

WORKER_READY = "mailvet worker ready: "  # the line `mailvet worker` prints when it takes jobs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_mailvet(
    args: Sequence[str], env: Mapping[str, str], *, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run ``mailvet <args>`` to completion; raise with its output when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "mailvet", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"mailvet {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


class MailvetProcess:
    """One ``mailvet`` subprocess writing to ``log``. Use as a context manager."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.log = log
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailvet", *self.args],
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def worker(
        cls,
        env: Mapping[str, str],
        log: Path,
        *,
        concurrency: int | None = None,
        timeout: float = 60.0,
    ) -> MailvetProcess:
        """``mailvet worker``, once it said it takes jobs."""
        proc = cls.start_worker(env, log, concurrency=concurrency)
        try:
            proc.wait_ready(timeout)
        except BaseException:
            proc.stop()
            raise
        return proc

    @classmethod
    def start_worker(
        cls, env: Mapping[str, str], log: Path, *, concurrency: int | None = None
    ) -> MailvetProcess:
        """``mailvet worker``, started (start several, then ``wait_ready`` each)."""
        args = ["worker"]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        return cls(args, env, log)

    def wait_ready(self, timeout: float = 60.0) -> str:
        """The worker's id, from its ``mailvet worker ready: <id>`` line."""
        line = self.wait_for_output(WORKER_READY, timeout)
        return line.split(WORKER_READY, 1)[1].strip()

    @classmethod
    def serve(
        cls, env: Mapping[str, str], log: Path, port: int, *, timeout: float = 60.0
    ) -> MailvetProcess:
        """``mailvet serve --port PORT``, once ``/healthz`` answers 200."""
        proc = cls(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
        try:
            proc._wait(lambda: _healthy(f"http://127.0.0.1:{port}/healthz"), timeout, "/healthz")
        except BaseException:
            proc.stop()
            raise
        return proc

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> str:
        """The first line of the output holding ``text``; fail if the process exits first."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self.output().splitlines() if text in line][:1]
            return bool(found)

        self._wait(seen, timeout, repr(text))
        return found[0]

    def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mailvet {' '.join(self.args)} exited {self.proc.returncode} before "
                    f"{what}:\n{self.output()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"mailvet {' '.join(self.args)}: no {what} after {timeout:g} s:\n"
                    f"{self.output()[-4000:]}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU time of the running process (``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def peak_rss_mb(self) -> float:
        """Peak resident set size of the running process (VmHWM), in MB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM in /proc/{self.pid}/status")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:  # loopback only
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False
