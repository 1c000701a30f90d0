"""Take the README's dashboard screenshot (docs/dashboard.png).

Starts the simulated internet and `mailvet serve` on a fresh SQLite database (both on
loopback), signs in with the admin key in Debian's chromium, checks an address and
saves the page. Usage (from the repository root, with the dev dependencies):

    python scripts/dashboard_screenshot.py [--email ADDRESS] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
from playwright.sync_api import sync_playwright

from mailvet.testing.internet import sim_internet_thread

CHROMIUM = os.environ.get("MAILVET_TEST_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--email", default="nobody@deliverable.test")
    parser.add_argument("--out", default="docs/dashboard.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sim_internet_thread() as (dns, smtp):
        env = {
            **os.environ,
            "MAILVET_DATABASE_URL": f"sqlite:///{tmp}/shot.db",
            "MAILVET_DNS_NAMESERVERS": dns.nameserver,
            "MAILVET_SMTP_PORT": str(smtp.port),
            "MAILVET_ALLOW_PRIVATE_MX": "true",
            "MAILVET_ALLOWED_SPECIAL_DOMAINS": "test",
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "mailvet",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dev-key-file",
            f"{tmp}/key",
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            key = proc.stdout.readline().removeprefix("API key:").strip()
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).json()["status"] == "ok":
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.goto(f"{url}/signin")
                page.get_by_label("API key").fill(key)
                page.get_by_role("button", name="Sign in").click()
                page.goto(f"{url}/check")
                page.get_by_label("Email address").fill(args.email)
                page.get_by_role("button", name="Check").click()
                page.wait_for_selector("#result")
                page.screenshot(path=args.out)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
