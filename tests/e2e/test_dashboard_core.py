"""The dashboard in Debian's chromium against a real ``mailvet serve`` on the simulated
internet: sign in, check an address and read its explanation, keys, error cases, the
phone width. Each test saves a screenshot under test-artifacts/ and runs axe-core."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from mailvet.storage.common import PREFIX_LENGTH

from .dashboard_kit import PHONE, Dashboard, check_a11y, shot, sign_in
from .kit import wait_for

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
    expect(page.locator("#server-said")).to_contain_text(
        "The server said the mailbox does not exist: 550 5.1.1 The email account"
    )
    row = page.locator("#smtp li", has_text="550 5.1.1")
    expect(row.first.locator(".meaning")).to_have_text(
        "The server said the mailbox does not exist."
    )
    expect(page.locator("#dns li").first).to_contain_text("receives email through 1 mail server")
    shot(page, "dashboard-check")
    check_a11y(page)


def test_sign_in_errors_for_a_bad_and_a_revoked_key(dashboard: Dashboard, page: Page) -> None:
    page.goto(f"{dashboard.url}/")
    expect(page).to_have_url(f"{dashboard.url}/signin")  # no session: sign in first
    page.get_by_label("API key").fill("mv_this-is-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("This API key is not valid")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    shot(page, "dashboard-signin-bad-key")
    check_a11y(page)

    secret = dashboard.create_key("leaver")
    dashboard.cli("keys", "revoke", secret[:PREFIX_LENGTH])
    page.get_by_label("API key").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("This API key has been revoked")
    shot(page, "dashboard-signin-revoked-key")
    check_a11y(page)


def test_create_a_key_use_it_then_revoke_it(dashboard: Dashboard, page: Page) -> None:
    sign_in(page, dashboard, dashboard.admin_key)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Keys").click()
    page.get_by_label("Name").fill("CRM sync")
    page.get_by_label("Plan").select_option("free")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret for CRM sync").input_value()
    assert secret.startswith("mv_")
    row = page.locator("#keys tr", has_text="CRM sync")
    expect(row).to_contain_text("free")
    expect(row.locator(".badge")).to_have_text("live")
    shot(page, "dashboard-key-created")
    check_a11y(page)

    # the new key works for the API, and its verdicts show on its usage chart
    headers = {"x-mails-api-key": secret}
    params = {"email": "alice@deliverable.test"}
    got = httpx.get(f"{dashboard.url}/v1/validate", params=params, headers=headers, timeout=10)
    assert got.status_code == 200 and got.json()["data"]["result"] == "deliverable"
    row.get_by_role("link", name="CRM sync").click()
    expect(page.get_by_role("heading", name="Key CRM sync")).to_be_visible()

    def counted() -> bool:
        page.reload()
        return "1 verdicts" in page.locator("main").inner_text()

    wait_for(counted, 20, "the usage flush")
    chart = page.locator("svg#usage-key")
    expect(chart).to_have_attribute("role", "img")
    expect(chart.locator("desc")).to_contain_text("Totals: deliverable 1")
    page.get_by_text("The numbers as a table").click()
    expect(page.locator("table")).to_contain_text("1")
    shot(page, "dashboard-key-usage")
    check_a11y(page)

    page.get_by_role("link", name="All keys").click()
    page.locator("#keys tr", has_text="CRM sync").get_by_role(
        "button", name="Revoke CRM sync"
    ).click()
    expect(page.get_by_role("status")).to_contain_text("The key CRM sync is revoked")
    expect(page.locator("#keys tr", has_text="CRM sync").locator(".badge")).to_have_text("revoked")
    refused = httpx.get(f"{dashboard.url}/v1/validate", params=params, headers=headers)
    assert refused.status_code == 401
    shot(page, "dashboard-key-revoked")
    check_a11y(page)


def test_a_key_that_is_not_admin_cannot_manage_keys(dashboard: Dashboard, page: Page) -> None:
    sign_in(page, dashboard, dashboard.create_key("app"))
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Overview", "Check an address", "Lists", "Upload a list"]  # no "Keys"
    )
    response = page.goto(f"{dashboard.url}/keys")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Admin keys only")).to_be_visible()
    shot(page, "dashboard-keys-forbidden")
    check_a11y(page)


def test_sign_out_and_a_forged_form_is_refused(dashboard: Dashboard, page: Page) -> None:
    sign_in(page, dashboard, dashboard.admin_key)
    page.get_by_role("link", name="Check an address").first.click()
    # a form whose CSRF token is not the session's: as if posted from another site
    page.locator("main input[name=csrf]").evaluate("el => { el.value = 'forged' }")
    page.get_by_label("Email address").fill("alice@deliverable.test")
    page.get_by_role("button", name="Check").click()
    expect(page.get_by_role("heading", name="This form has expired")).to_be_visible()
    shot(page, "dashboard-csrf-refused")
    check_a11y(page)

    page.goto(f"{dashboard.url}/")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    assert not [c for c in page.context.cookies() if c["name"] == "mailvet_session"]
    page.goto(f"{dashboard.url}/check")
    expect(page).to_have_url(f"{dashboard.url}/signin?next=/check")
    shot(page, "dashboard-signed-out")
    check_a11y(page)


def test_phone_width_and_keyboard_only(dashboard: Dashboard, page: Page) -> None:
    page.set_viewport_size(PHONE)
    page.goto(f"{dashboard.url}/signin")
    # keyboard only: the skip link comes first and is visible when focused
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["y"] >= 0
    outline = skip.evaluate("el => getComputedStyle(el).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(dashboard.admin_key)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    page.goto(f"{dashboard.url}/check")
    page.get_by_label("Email address").focus()
    page.keyboard.type("anyone@catchall.test")
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_have_text("risky")
    expect(page.locator("#reason-text")).to_contain_text("catch-all")
    for path in ("/check", "/", "/keys"):
        if path != "/check":
            page.goto(f"{dashboard.url}{path}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} scrolls sideways at 375 px ({width})"
    page.goto(f"{dashboard.url}/keys")
    shot(page, "dashboard-phone-keys")
    check_a11y(page)


def test_dark_theme_reads_well(dashboard: Dashboard, page: Page) -> None:
    page.emulate_media(color_scheme="dark")
    sign_in(page, dashboard, dashboard.admin_key)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 23, 27)"  # the dark palette is in use
    page.goto(f"{dashboard.url}/check")
    page.get_by_label("Email address").fill("alice@greylist.test")
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#result")).to_have_text("unknown")
    expect(page.locator("#server-said")).to_contain_text("try again later")
    shot(page, "dashboard-dark-check")
    check_a11y(page)  # colour contrast included
    page.goto(f"{dashboard.url}/keys")
    shot(page, "dashboard-dark-keys")
    check_a11y(page)
