"""A production install: the wheel with its declared dependencies only, in a fresh venv.

The wheel is built from a copy of the sources (so no stale ``build/`` leaks in and the
work tree stays clean), installed without extras into a new virtual environment (pip
as configured on the machine), and its ``mailvet`` command is run from folders outside
the repository, with an environment that holds none of the test run's (no PYTHONPATH,
no ``MAILVET_*``): what a user gets from ``pip install mailvet``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass(frozen=True)
class Install:
    mailvet: Path  # the console script in the fresh venv
    data_home: Path  # XDG_DATA_HOME of the runs: the per-user data directory's parent
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MAILVET_")
            and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "XDG_DATA_HOME")
        }
        env.update(HOME=str(self.home), XDG_DATA_HOME=str(self.data_home))
        env.update(extra)
        return env

    def run(self, *args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        cwd.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [str(self.mailvet), *args],
            cwd=cwd,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"mailvet {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done


def _pip(python: Path, *args: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, f"pip {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    wheels = base / "wheels"
    _pip(Path(sys.executable), "wheel", "--no-deps", "-q", "-w", str(wheels), str(source), cwd=base)
    (wheel,) = wheels.glob("mailvet-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv / "bin" / "python", "install", "-q", str(wheel), cwd=base)  # no extras
    yield Install(venv / "bin" / "mailvet", base / "data", base / "home")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_keys_live_in_the_user_data_dir_whatever_the_folder(installed: Install) -> None:
    base = installed.data_home.parent
    made = installed.run("keys", "create", "--name", "from-a", cwd=base / "a")
    secret = made.stdout.splitlines()[0].strip()
    assert secret.startswith("mv_")
    listed = installed.run("keys", "list", cwd=base / "b")
    assert "from-a" in listed.stdout
    assert secret not in listed.stdout  # never the secret
    database = installed.data_home / "mailvet" / "mailvet.db"
    assert database.is_file()
    assert oct(database.stat().st_mode & 0o777) == "0o600"
    assert not (base / "a" / "mailvet.db").exists()
    assert not (base / "b" / "mailvet.db").exists()


def test_serve_answers_health_and_a_validation(installed: Install) -> None:
    base = installed.data_home.parent
    secret = installed.run("keys", "create", "--name", "serve", cwd=base / "c").stdout.split()[0]
    port = _free_port()
    elsewhere = base / "d"
    elsewhere.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [str(installed.mailvet), "serve", "--port", str(port)],
        cwd=elsewhere,
        env=installed.env(
            MAILVET_DNS_NAMESERVERS="127.0.0.1:9",  # nothing there: never the real DNS
            MAILVET_DNS_TIMEOUT="0.2",
            PYTHONUNBUFFERED="1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "mailvet serve exited"
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
                if health.status_code == 200 and health.json()["status"] == "ok":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mailvet serve did not come up"
            time.sleep(0.1)
        r = httpx.get(
            f"{url}/v1/validate", params={"email": "NULL"}, headers={"x-mails-api-key": secret}
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["reason"] == "invalid_format"
        r = httpx.get(f"{url}/v1/validate", params={"email": "NULL"})
        assert r.status_code == 401
        # the dashboard's templates and static files are in the wheel
        page = httpx.get(f"{url}/signin")
        assert page.status_code == 200 and "API key" in page.text, page.text[:300]
        css = httpx.get(f"{url}/static/dashboard/dashboard.css")
        assert css.status_code == 200 and "prefers-color-scheme" in css.text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    database = installed.data_home / "mailvet" / "mailvet.db"
    assert f"Database: {database}" in out, out


def test_validate_offline(installed: Install) -> None:
    done = installed.run(
        "validate", "--offline", "--json", "jane@gmial.com", cwd=installed.data_home.parent / "e"
    )
    data = json.loads(done.stdout.splitlines()[0])
    assert data["email"] == "jane@gmial.com"
    assert data["did_you_mean"] == "jane@gmail.com"
