"""The dashboard in Debian's chromium against a real ``mailvet serve`` on the simulated
internet: sign in, check an address and read its explanation, keys, error cases, the
phone width. Each test saves a screenshot under test-artifacts/ and runs axe-core."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .dashboard_kit import Dashboard, check_a11y, shot, sign_in

pytestmark = pytest.mark.browser


def test_sign_in_then_check_an_unknown_mailbox_reads_the_servers_words(
    dashboard: Dashboard, page: Page
) -> None:
    sign_in(page, dashboard, dashboard.admin_key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("link", name="Check an address").first.click()
    page.get_by_label("Email address").fill("nobody@deliverable.test")
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#result")).to_have_text("undeliverable")
    expect(page.locator("#reason")).to_have_text("rejected_email")
    expect(page.locator("#reason-text")).to_contain_text("does not exist")
    row = page.locator("#smtp li", has_text="550 5.1.1")
    expect(row.first.locator(".meaning")).to_have_text(
        "The server said the mailbox does not exist."
    )
    expect(page.locator("#dns li").first).to_contain_text("receives email through 1 mail server")
    shot(page, "dashboard-check")
    check_a11y(page)
