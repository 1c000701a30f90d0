"""`mailvet sim` as a newcomer runs it: a real process, its printed settings, then
`mailvet validate` in another process pointed at it by those settings alone."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailvet.testing.world import EXAMPLES, ordinary_domains

_STOP_WITHIN = 10.0  # seconds: "ends cleanly within a few seconds", generous on a busy host


def _clean_env() -> dict[str, str]:
    """This environment without any MAILVET_* of the test run: only what sim prints counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILVET_")}


@contextmanager
def run_sim(*args: str) -> Iterator[subprocess.Popen[str]]:
    cmd = [sys.executable, "-m", "mailvet", "sim", "--dns-port", "0", "--smtp-port", "0", *args]
    proc = subprocess.Popen(
        cmd,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=_STOP_WITHIN)


def _stop(proc: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=_STOP_WITHIN)  # raises TimeoutExpired if it hangs
    return proc.returncode, err


def _validate(env: dict[str, str], tmp: Path, *emails: str) -> dict[str, tuple[str, str]]:
    full = {**_clean_env(), **env, "MAILVET_DATABASE_URL": f"sqlite:///{tmp / 'v.db'}"}
    out = subprocess.run(
        [sys.executable, "-m", "mailvet", "validate", "--json", *emails],
        env=full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    return {r["email"]: (r["result"], r["reason"]) for r in rows}


def test_printed_settings_show_every_verdict_and_sigterm_stops_it(tmp_path: Path) -> None:
    env_file = tmp_path / "sim.env"
    with run_sim("--export-file", str(env_file)) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not lines[-1].startswith("  anyone@yahoo.test"):  # the last example
            line = proc.stdout.readline()
            assert line, f"sim ended early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.rstrip("\n"))
        exported = {m[1]: m[2] for ln in lines if (m := re.fullmatch(r"export (\w+)=(.*)", ln))}
        assert {
            "MAILVET_DNS_NAMESERVERS",
            "MAILVET_SMTP_PORT",
            "MAILVET_ALLOW_PRIVATE_MX",
            "MAILVET_ALLOWED_SPECIAL_DOMAINS",
        } <= exported.keys()
        assert exported["MAILVET_ALLOWED_SPECIAL_DOMAINS"] == "test"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", exported["MAILVET_DNS_NAMESERVERS"])
        # the file holds the same settings, in KEY=value form for `set -a; . FILE`
        from_file = dict(
            line.split("=", 1)
            for line in env_file.read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert from_file == exported

        # the printed examples, as a newcomer would copy them
        printed: dict[str, tuple[str, str]] = {}
        for ln in lines:
            parts = ln.split()
            if (
                ln.startswith("  ")
                and len(parts) >= 3
                and parts[1] in ("deliverable", "undeliverable", "risky", "unknown")
            ):
                printed[parts[0]] = (parts[1], parts[2])
        assert printed == {e.email: (e.result, e.reason) for e in EXAMPLES}
        ordinary = next(e for e in printed if e.endswith("@" + ordinary_domains(1)[0].name))
        chosen = [
            "alice@deliverable.test",
            ordinary,
            "nobody@deliverable.test",
            "anyone@catchall.test",
            "alice@greylist.test",
            "alice@nullmx.test",
            "anyone@mailinator.com",
        ]
        got = _validate(from_file, tmp_path, *chosen)
        assert got == {e: printed[e] for e in chosen}
        assert got["alice@deliverable.test"] == ("deliverable", "accepted_email")
        assert got[ordinary] == ("deliverable", "accepted_email")
        assert got["nobody@deliverable.test"] == ("undeliverable", "rejected_email")
        assert got["anyone@catchall.test"] == ("risky", "catch_all")
        assert got["alice@greylist.test"] == ("unknown", "unavailable_smtp")
        assert got["alice@nullmx.test"] == ("undeliverable", "invalid_domain")
        assert got["anyone@mailinator.com"] == ("risky", "disposable")

        code, err = _stop(proc, signal.SIGTERM)
        assert code == 0, err
        assert "Traceback" not in err and "stopped" in err
        assert not env_file.exists()  # taken back: a left-over file would point at nothing


def test_json_and_ctrl_c(tmp_path: Path) -> None:
    with run_sim("--json") as proc:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["env"]["MAILVET_SMTP_PORT"] == str(info["smtp_port"])
        assert info["env"]["MAILVET_DNS_NAMESERVERS"] == info["dns"]
        assert info["domains"] >= 200
        examples = {e["email"]: (e["result"], e["reason"]) for e in info["examples"]}
        assert examples["alice@disabled.test"] == ("undeliverable", "rejected_email")
        got = _validate(info["env"], tmp_path, "alice@disabled.test", "alice@full.test")
        assert got == {e: examples[e] for e in got}
        code, err = _stop(proc, signal.SIGINT)
        assert code == 0, err
        assert "Traceback" not in err


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "mailvet", "sim", "--dns-port", str(port)],
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert "could not start" in proc.stderr and "--dns-port 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_port_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mailvet", "sim", "--smtp-port", "65536"],
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
