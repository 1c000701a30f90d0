"""/docs in a real browser: Swagger UI renders the operations from local assets only.

Uses Debian's chromium through Playwright (no browser download). Every request the
page makes outside the test server is recorded: there must be none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvet.api.app import create_app

from .kit import FakeEngine, make_settings, serve

CHROMIUM = os.environ.get("MAILVET_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


def _need_chromium() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "playwright is not installed"
    else:
        if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
            return
        missing = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(missing)
    pytest.skip(missing)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    from mailvet.storage.memory import MemoryStore

    app = create_app(make_settings(), store=MemoryStore(), engine=FakeEngine())
    async with serve(app) as url:
        yield url


async def test_swagger_ui_renders_offline(server: str) -> None:
    _need_chromium()
    from playwright.async_api import Route, async_playwright

    outside: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()

            async def route(r: Route) -> None:
                if r.request.url.startswith(server):
                    await r.continue_()
                else:
                    outside.append(r.request.url)
                    await r.abort()

            await page.route("**/*", route)
            await page.goto(f"{server}/docs")
            await page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = await page.locator(".opblock-summary-path").all_inner_texts()
            title = await page.locator(".information-container .title").inner_text()
        finally:
            await browser.close()
    normalised = {p.replace("\u200b", "").strip() for p in paths}
    assert {"/v1/validate", "/v1/batch", "/v1/batch/{batch_id}"} <= normalised
    assert "mailvet" in title
    assert outside == []
