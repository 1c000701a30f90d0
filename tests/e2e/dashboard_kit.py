"""The dashboard's browser test kit: a real ``mailvet serve`` on the simulated internet,
Debian's chromium driven by Playwright, axe-core, screenshots.

Use from a test module (tests/e2e/conftest.py registers the fixtures)::

    from .dashboard_kit import Dashboard, check_a11y, shot, sign_in

    pytestmark = pytest.mark.browser

    def test_x(dashboard: Dashboard, page: Page) -> None:
        sign_in(page, dashboard, dashboard.admin_key)
        ...
        shot(page, "x")
        check_a11y(page)

- ``dashboard`` (module scope): the simulated internet (DNS + SMTP on loopback, in
  threads, ``mailvet.testing.internet.STANDARD_SITES``) and ``mailvet serve`` as a
  subprocess on a free loopback port, on a fresh SQLite database, with an admin key
  (``Dashboard.admin_key``). ``Dashboard.create_key`` makes more keys with the CLI.
- ``browser`` (module scope) and ``page`` (per test: a fresh context, so no cookies
  carry over; 1280x800 unless the test resizes it). Requests leaving the server are
  aborted and recorded in ``page.outside`` (there must be none: ``check_a11y`` asserts
  it too).
- ``check_a11y(page)`` runs axe-core (bundled by axe-playwright-python) in the page and
  fails on any violation, listing them.
- ``shot(page, name)`` saves ``test-artifacts/<name>.png`` (full page) at the repo root.

Browser tests are marked ``@pytest.mark.browser``: they skip when chromium or playwright
is missing, except under ``CI=true``, where they fail instead (as tests/api/
test_docs_browser.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mailvet.testing.internet import sim_internet_thread

from .kit import serve_with_dev_key
from .test_serve import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "Dashboard",
    "browser",
    "check_a11y",
    "dashboard",
    "need_chromium",
    "page",
    "shot",
    "sign_in",
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("MAILVET_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE: ViewportSize = {"width": 375, "height": 740}


def need_chromium() -> None:
    """Skip without playwright or chromium; fail instead under CI=true."""
    try:
        import axe_playwright_python  # type: ignore[import-untyped]  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        missing = f"{exc.name} is not installed"
    else:
        if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
            return
        missing = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(missing)
    pytest.skip(missing)


@dataclass
class Dashboard:
    """A running ``mailvet serve`` and how to reach it."""

    url: str
    admin_key: str
    env: dict[str, str]
    tmp: Path
    log: list[str] = field(default_factory=list)

    def cli(self, *args: str) -> str:
        """Run ``mailvet ARGS`` on the server's database; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "mailvet", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def create_key(self, name: str, *, plan: str = "paid", admin: bool = False) -> str:
        """A new key's secret (made with ``mailvet keys create``)."""
        args = ["keys", "create", "--name", name, "--plan", plan]
        if admin:
            args.append("--admin")
        return self.cli(*args).splitlines()[0].strip()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    need_chromium()
    tmp = tmp_path_factory.mktemp("dashboard")
    with sim_internet_thread() as (dns_server, smtp_thread):
        env = {
            **os.environ,
            "MAILVET_DATABASE_URL": f"sqlite:///{tmp / 'dashboard.db'}",
            "MAILVET_DNS_NAMESERVERS": dns_server.nameserver,
            "MAILVET_SMTP_PORT": str(smtp_thread.port),
            "MAILVET_ALLOW_PRIVATE_MX": "true",
            "MAILVET_ALLOWED_SPECIAL_DOMAINS": "test",
            "MAILVET_SMTP_CONNECT_TIMEOUT": "1",
            "MAILVET_SMTP_COMMAND_TIMEOUT": "1",
        }
        with serve_with_dev_key(env, free_port(), tmp / "admin-key") as (_proc, url, key):
            yield Dashboard(url=url, admin_key=key, env=env, tmp=tmp)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    """A fresh browser context and page; requests that would leave the server are
    aborted and listed in ``page.outside`` (read by ``check_a11y``)."""
    from playwright.sync_api import Route

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    outside: list[str] = []

    def route(r: Route) -> None:
        if r.request.url.startswith(dashboard.url) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    opened.route("**/*", route)
    opened.outside = outside  # type: ignore[attr-defined]
    opened.set_default_timeout(15_000)
    try:
        yield opened
    finally:
        context.close()


def sign_in(page: Page, dashboard: Dashboard, key: str) -> None:
    """Sign in through the form, as a user would (ends on the page it leads to)."""
    page.goto(f"{dashboard.url}/signin")
    page.get_by_label("API key").fill(key)
    # wait for the form's own answer: the page already loaded would not wait (a busy
    # host then went on before the session cookie was set)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    if "/signin" in page.url:  # the form answered with an error: say which
        raise AssertionError(f"sign-in refused: {page.locator('main').inner_text()[:300]}")


def check_a11y(page: Page, *, disable: tuple[str, ...] = ()) -> None:
    """Run axe-core on the page as it is; fail listing every violation. Also fails
    when the page tried to load anything from another host."""
    from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]

    options: dict[str, Any] | None = None
    if disable:
        options = {"rules": {rule: {"enabled": False} for rule in disable}}
    results = Axe().run(page, options=options)
    violations = results.response["violations"]
    lines = [
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(" ".join(n["target"]) for n in v["nodes"][:5])
        for v in violations
    ]
    assert not violations, "axe-core violations on " + page.url + ":\n" + "\n".join(lines)
    outside = getattr(page, "outside", [])
    assert outside == [], f"the page tried to load from elsewhere: {outside}"


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``test-artifacts/<name>.png``; its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
