"""Take the README's dashboard screenshot (docs/dashboard.png).

Starts the simulated internet and `mailvet serve` on a fresh SQLite database (both on
loopback), signs in with the admin key in Debian's chromium, and saves a page: with
``--list``, a list of addresses uploaded as CSV and verified (the list's page with its
charts and table, once finished); else one address checked. Usage (from the repository
root, with the dev dependencies):

    python scripts/dashboard_screenshot.py [--list | --email ADDRESS] [--out docs/dashboard.png]
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
from playwright.sync_api import Page, sync_playwright

from mailvet.testing.internet import sim_internet_thread

CHROMIUM = os.environ.get("MAILVET_TEST_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LIST = [
    ("Ann", "alice@deliverable.test"),
    ("Bob", "nobody@deliverable.test"),
    ("Cid", "anyone@catchall.test"),
    ("Dee", "alice@full.test"),
    ("Eve", "anyone@mailinator.com"),
    ("Fay", "alice@disabled.test"),
    ("Gus", "alice@nxdomain.test"),
    ("Hal", "alice@nullmx.test"),
    ("Ida", "alice.deliverable.test"),
    ("Jon", "info@deliverable.test"),
    ("Kim", "anyone@yahoo.test"),
    ("Lou", "alice@postfix.test"),
    ("Max", "bob@deliverable.test"),
    ("Oda", "alice@exim.test"),
    ("Pia", "carol@deliverable.test"),
    ("Ned", "sales@deliverable.test"),
]


def upload(page: Page, url: str) -> None:
    """Upload LIST as a CSV through the upload page, start it, wait until it is done."""
    data = "Name,Email,Company\n" + "".join(f"{n},{e},{n} Ltd\n" for n, e in LIST)
    page.goto(f"{url}/upload")
    page.get_by_label("File: CSV, plain text").set_input_files(
        {"name": "contacts.csv", "mimeType": "text/csv", "buffer": data.encode()}
    )
    page.get_by_role("button", name="Upload and preview").click()
    page.get_by_label("Name of the list").fill("Newsletter contacts")
    page.get_by_role("button", name=f"Start verifying {len(LIST)} rows").click()
    page.locator('#progress [data-field="status"]').get_by_text("finished").wait_for(
        timeout=120_000
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--email", default="nobody@deliverable.test")
    parser.add_argument("--list", action="store_true", help="upload a list (the batch pages)")
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
                page = browser.new_page(
                    viewport={"width": 1200, "height": 900 if not args.list else 1280}
                )
                page.goto(f"{url}/signin")
                page.get_by_label("API key").fill(key)
                page.get_by_role("button", name="Sign in").click()
                if args.list:
                    upload(page, url)
                    page.screenshot(
                        path=args.out, clip={"x": 0, "y": 0, "width": 1200, "height": 1280}
                    )
                else:
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
