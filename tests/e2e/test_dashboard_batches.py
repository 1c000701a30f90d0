"""The dashboard's list pages in Debian's chromium against a real ``mailvet serve`` on the
simulated internet: upload a CSV with extra columns, its preview, start it, watch it
finish, read the chart, filter the table, download the three files and check their rows
and columns, delete it; live progress; drag and drop; the error cases (a bad file, an
empty one, over the limits, a revoked key); without JavaScript; the phone width. Each
test saves a screenshot under test-artifacts/ and runs axe-core."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect

from .dashboard_kit import Dashboard, check_a11y, shot, sign_in

pytestmark = pytest.mark.browser

MAX_ROWS = 40  # the server's MAILVET_MAX_BATCH_SIZE
MAX_BYTES = 20_000  # the server's MAILVET_MAX_UPLOAD_BYTES
FINISH = 90_000  # ms a small list may take on a busy machine

SHOP_CSV = (
    b"First name;Email;Company;Notes\r\n"
    b"Ann;alice@deliverable.test;Acme;=SUM(1+1)\r\n"
    b"Bob;nobody@deliverable.test;Bobcat;\r\n"
    b"Cid;cid@catchall.test;Cidre SA;likes lists\r\n"
    b"Dee;bob@deliverable.test;Dee & Co;\r\n"
    b'Eve;not-an-address;"Eve; Ltd";\r\n'
    b"Fay;fay@nomail.test;Fay GmbH;\r\n"
)


@pytest.fixture(scope="module", autouse=True)
def _server_limits() -> Iterator[None]:
    """Small limits for the module's server (the kit's ``dashboard`` copies os.environ),
    and a greylisting wait it accepts; set before it starts, restored after."""
    wanted = {
        "MAILVET_MAX_BATCH_SIZE": str(MAX_ROWS),
        "MAILVET_MAX_UPLOAD_BYTES": str(MAX_BYTES),
        # greylist.test says "try again in 3600 seconds": wait for it (a retry waiting)
        "MAILVET_GREYLIST_MAX_WAIT": "7200",
    }
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def lists_key(dashboard: Dashboard) -> str:
    return dashboard.create_key("lists", plan="paid")


def _file(name: str, data: bytes, mime: str = "text/csv") -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data}


def _upload(page: Page, dashboard: Dashboard, name: str, data: bytes) -> None:
    page.goto(f"{dashboard.url}/upload")
    page.get_by_label("File: CSV, plain text").set_input_files(_file(name, data))
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_load_state()


def _rows(path: Path, delimiter: str = ";") -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text("utf-8")), delimiter=delimiter))


def _download(page: Page, label: str, tmp_path: Path) -> Path:
    with page.expect_download() as info:
        page.get_by_role("link", name=label).click()
    download = info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    return target


def test_upload_watch_it_finish_chart_filter_download_and_delete(
    dashboard: Dashboard, page: Page, lists_key: str, tmp_path: Path
) -> None:
    sign_in(page, dashboard, lists_key)
    page.get_by_role("link", name="Upload a list").first.click()
    expect(page.get_by_role("heading", name="Upload a list")).to_be_visible()
    check_a11y(page)
    page.get_by_label("File: CSV, plain text").set_input_files(_file("shop list.csv", SHOP_CSV))
    expect(page.locator("#chosen")).to_contain_text("shop list.csv")
    page.get_by_role("button", name="Upload and preview").click()

    # the preview: size, rows and the column it will use, before anything starts
    expect(page.get_by_role("heading", name="Check the file before it starts")).to_be_visible()
    expect(page.locator("#file-size")).to_have_text(f"{len(SHOP_CSV):,} bytes")
    expect(page.locator("#file-rows")).to_have_text("6")
    expect(page.locator("#file-column")).to_have_text("column “Email”")
    expect(page.locator("#file-format")).to_contain_text("separated by “;”")
    expect(page.locator("#sample th.chosen-column")).to_have_text("Email")
    expect(page.locator("#sample tbody tr")).to_have_count(5)
    expect(page.get_by_label("Column holding the addresses")).to_have_value("1")
    shot(page, "dashboard-batches-preview")
    check_a11y(page)
    page.get_by_label("Name of the list").fill("Shop list")
    page.get_by_role("button", name="Start verifying 6 rows").click()

    # the list's page updates itself until it is finished
    expect(page.get_by_role("heading", name="Shop list")).to_be_visible()
    expect(page.locator('#progress [data-field="status"]')).to_have_text("finished", timeout=FINISH)
    expect(page.locator('#progress [data-field="done"]')).to_have_text("6")
    expect(page.locator('#progress [data-field="eta"]')).to_have_text("done")

    # the chart reads without colour: its labels and counts are text
    chart = page.locator("#results-chart")
    expect(chart).to_be_visible()
    expect(page.locator("#results-chart-desc")).to_contain_text("deliverable: 2")
    expect(page.locator("#results-chart-desc")).to_contain_text("undeliverable: 3")
    expect(page.locator("#results-chart-desc")).to_contain_text("risky: 1")
    expect(chart.locator("text.mv-count").first).to_have_text("2 (33%)")
    expect(page.locator("#reasons-chart-desc")).to_contain_text("catch_all: 1")
    shot(page, "dashboard-batches-finished")
    check_a11y(page)

    # filter the table (server-side)
    page.get_by_label("Result", exact=True).select_option("undeliverable")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#table-summary")).to_contain_text("Rows 1 to 3 of 3")
    addresses = page.locator("#addresses tbody tr td:nth-child(2)")
    expect(addresses).to_have_text(["nobody@deliverable.test", "not-an-address", "fay@nomail.test"])
    page.get_by_label("Reason", exact=True).select_option("invalid_format")
    page.get_by_role("button", name="Filter").click()
    expect(addresses).to_have_text(["not-an-address"])
    shot(page, "dashboard-batches-filtered")
    check_a11y(page)
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#addresses tbody tr")).to_have_count(6)

    # the three downloads keep the uploaded columns, in their order
    header = ["First name", "Email", "Company", "Notes"]
    deliverable = _download(page, "Deliverable only", tmp_path)
    assert deliverable.name == "shop list-deliverable.csv"
    assert _rows(deliverable) == [
        header,
        ["Ann", "alice@deliverable.test", "Acme", "'=SUM(1+1)"],
        ["Dee", "bob@deliverable.test", "Dee & Co", ""],
    ]
    cleaned = _rows(_download(page, "Deliverable and risky", tmp_path))
    assert cleaned[0] == header
    assert [row[1] for row in cleaned[1:]] == [
        "alice@deliverable.test",
        "cid@catchall.test",
        "bob@deliverable.test",
    ]
    assert cleaned[2] == ["Cid", "cid@catchall.test", "Cidre SA", "likes lists"]
    everything = _rows(_download(page, "Everything, with the verdict columns", tmp_path))
    assert everything[0][:4] == header
    verdict = everything[0][4:]
    assert {"email", "result", "reason", "score"} <= set(verdict)
    assert [row[:4] for row in everything[1:]][4] == ["Eve", "not-an-address", "Eve; Ltd", ""]
    result, reason = everything[0].index("result"), everything[0].index("reason")
    assert [(row[0], row[result], row[reason]) for row in everything[1:]] == [
        ("Ann", "deliverable", "accepted_email"),
        ("Bob", "undeliverable", "rejected_email"),
        ("Cid", "risky", "catch_all"),
        ("Dee", "deliverable", "accepted_email"),
        ("Eve", "undeliverable", "invalid_format"),
        ("Fay", "undeliverable", "invalid_domain"),
    ]

    # delete, with a confirmation
    page.get_by_role("link", name="Delete this list…").click()
    expect(page.get_by_role("heading", name="Delete “Shop list”?")).to_be_visible()
    check_a11y(page)
    page.get_by_role("button", name="Delete the list").click()
    expect(page.get_by_role("status")).to_contain_text("The list was deleted")
    row = page.locator("#batches tbody tr", has_text="Shop list")
    expect(row.locator('[data-field="status"]')).to_have_text("deleted")
    shot(page, "dashboard-batches-deleted")
    check_a11y(page)
    row.get_by_role("link", name="Shop list").click()
    expect(page.get_by_text("This list was deleted")).to_be_visible()
    expect(page.locator("#addresses")).to_have_count(0)


def test_the_lists_page_shows_live_progress_and_retries_waiting(
    dashboard: Dashboard, page: Page, lists_key: str
) -> None:
    sign_in(page, dashboard, lists_key)
    data = b"email\nalice@deliverable.test\nsomeone@greylist.test\nbob@deliverable.test\n"
    _upload(page, dashboard, "grey.csv", data)
    page.get_by_label("Name of the list").fill("Greylisted")
    page.get_by_role("button", name="Start verifying 3 rows").click()
    expect(page.get_by_role("heading", name="Greylisted")).to_be_visible()
    page.get_by_role("link", name="Lists", exact=True).click()
    row = page.locator("#batches tbody tr", has_text="Greylisted")
    # polled while the page stays open: two verdicts, one address waiting for a retry
    expect(row.locator('[data-field="done"]')).to_have_text("2", timeout=FINISH)
    expect(row.locator('[data-field="retry_waiting"]')).to_have_text("1", timeout=FINISH)
    expect(row.locator('[data-field="status"]')).to_have_text("running")
    expect(row.locator('[data-field="eta"]')).to_have_text("after the retries")
    expect(row.locator("progress")).to_have_attribute("value", "2")
    assert page.locator("#batches").get_attribute("data-progress-url") is not None
    shot(page, "dashboard-batches-progress")
    check_a11y(page)


def test_drag_and_drop_and_the_size_check_before_sending(
    dashboard: Dashboard, page: Page, lists_key: str
) -> None:
    sign_in(page, dashboard, lists_key)
    page.goto(f"{dashboard.url}/upload")
    drop = page.evaluate_handle(
        """() => {
            const dt = new DataTransfer();
            dt.items.add(new File(["email\\nalice@deliverable.test\\n"], "dropped.csv",
                                  {type: "text/csv"}));
            return dt;
        }"""
    )
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": drop})
    expect(page.locator("#dropzone")).to_have_class("dropzone over")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
    expect(page.locator("#chosen")).to_have_text("Chosen: dropped.csv (29 bytes)")
    shot(page, "dashboard-batches-dropped")
    check_a11y(page)
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.locator("#file-rows")).to_have_text("1")

    # a file over the limit is refused before it is sent
    page.goto(f"{dashboard.url}/upload")
    big = b"email\n" + b"someone@deliverable.test\n" * 1000
    page.get_by_label("File: CSV, plain text").set_input_files(_file("big.csv", big))
    expect(page.locator("#chosen")).to_contain_text("The file is over 19.5 kB")
    page.get_by_role("button", name="Upload and preview").click()
    expect(page).to_have_url(f"{dashboard.url}/upload")
    expect(page.get_by_label("File: CSV, plain text")).to_have_attribute("aria-invalid", "true")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n\x00\x01", "it is a PDF document"),
        ("empty.csv", b"", "The file is empty."),
        ("header.csv", b"email,name\n", "The file has a header and no rows"),
        ("latin.csv", b"email,name\na@deliverable.test,Ren\xe9\n", "Line 2 is not valid UTF-8"),
        (
            "long.txt",
            b"".join(b"u%d@deliverable.test\n" % i for i in range(MAX_ROWS + 1)),
            f"more than {MAX_ROWS} rows",
        ),
    ],
    ids=["bad-file", "empty", "header-only", "encoding", "too-many-rows"],
)
def test_upload_errors_say_what_to_do(
    dashboard: Dashboard, page: Page, lists_key: str, name: str, data: bytes, message: str
) -> None:
    sign_in(page, dashboard, lists_key)
    _upload(page, dashboard, name, data)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(message)
    expect(page.get_by_label("File: CSV, plain text")).to_have_attribute("aria-invalid", "true")
    shot(page, f"dashboard-batches-error-{name.split('.')[0]}")
    check_a11y(page)


def test_over_the_byte_limit_without_javascript(
    browser: Browser, dashboard: Dashboard, lists_key: str
) -> None:
    """No script: the plain file input uploads; the server refuses a file over the limit
    with a page, and takes a good one to its preview."""
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 800}
    )
    try:
        page = context.new_page()
        sign_in(page, dashboard, lists_key)
        big = b"email\n" + b"someone@deliverable.test\n" * 1000
        _upload(page, dashboard, "big.csv", big)
        expect(page.get_by_role("alert")).to_contain_text("The file is over 19.5 kB")
        expect(page.get_by_role("alert")).to_contain_text("MAILVET_MAX_UPLOAD_BYTES")
        shot(page, "dashboard-batches-error-too-big")  # (axe runs as a script: this
        # page is checked with scripts on in test_upload_errors_say_what_to_do)
        # a greylisted address keeps the list running (its page then says to reload it)
        _upload(page, dashboard, "small.txt", b"alice@deliverable.test\nsomeone@greylist.test\n")
        expect(page.locator("#file-format")).to_contain_text("plain text")
        expect(page.locator("#file-rows")).to_have_text("2")
        page.get_by_role("button", name="Start verifying 2 rows").click()
        expect(page.get_by_role("heading", name="small.txt")).to_be_visible()
        expect(page.locator("#progress-help")).to_contain_text("reload it")
    finally:
        context.close()


def test_a_key_revoked_after_signing_in(dashboard: Dashboard, page: Page) -> None:
    secret = dashboard.create_key("soon revoked", plan="paid")
    sign_in(page, dashboard, secret)
    page.goto(f"{dashboard.url}/upload")
    page.get_by_label("File: CSV, plain text").set_input_files(
        _file("list.csv", b"email\nalice@deliverable.test\n")
    )
    dashboard.cli("keys", "revoke", secret[:11])  # its prefix
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.get_by_role("heading", name="Your API key has been revoked")).to_be_visible()
    shot(page, "dashboard-batches-error-revoked")
    check_a11y(page)


def test_a_free_key_is_told_lists_need_a_paid_plan(dashboard: Dashboard, page: Page) -> None:
    secret = dashboard.create_key("free one", plan="free")
    sign_in(page, dashboard, secret)
    page.goto(f"{dashboard.url}/upload")
    expect(page.locator("#paid-only")).to_contain_text("Lists need a paid-plan key")
    expect(page.get_by_role("button", name="Upload and preview")).to_be_disabled()
    shot(page, "dashboard-batches-free-key")
    check_a11y(page)


def test_another_keys_list_is_not_found(dashboard: Dashboard, page: Page, lists_key: str) -> None:
    sign_in(page, dashboard, lists_key)
    _upload(page, dashboard, "mine.csv", b"email\nalice@deliverable.test\n")
    page.get_by_role("button", name="Start verifying 1 row").click()
    expect(page.get_by_role("heading", name="mine.csv")).to_be_visible()
    mine = page.url
    # leave the page first: its script reloads it when the list finishes, and that
    # reload, signed out, lands on the sign-in form too, racing the one below for the
    # form's cookie (a flaky "form has expired" once, with the suite in parallel)
    page.goto("about:blank")
    page.context.clear_cookies()
    sign_in(page, dashboard, dashboard.create_key("someone else", plan="paid"))
    response = page.goto(mine)
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="No such list")).to_be_visible()
    page.goto(f"{dashboard.url}/batches")
    expect(page.locator("#batches")).to_have_count(0)
    shot(page, "dashboard-batches-other-key")
    check_a11y(page)


def test_phone_width(dashboard: Dashboard, page: Page, lists_key: str) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    sign_in(page, dashboard, lists_key)
    _upload(page, dashboard, "phone.csv", SHOP_CSV)
    _no_sideways_scroll(page)
    page.get_by_role("button", name="Start verifying 6 rows").click()
    expect(page.locator('#progress [data-field="status"]')).to_have_text("finished", timeout=FINISH)
    expect(page.locator("#results-chart")).to_be_visible()
    _no_sideways_scroll(page)
    box = page.locator("#results-chart").bounding_box()
    assert box is not None and box["width"] <= 375
    shot(page, "dashboard-batches-phone")
    check_a11y(page)
    page.goto(f"{dashboard.url}/batches")
    _no_sideways_scroll(page)
    shot(page, "dashboard-batches-list-phone")
    check_a11y(page)


def _no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width} px wide at 375 px"


def test_an_xlsx_workbook_downloads_as_csv(
    dashboard: Dashboard, page: Page, lists_key: str, tmp_path: Path
) -> None:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Leads"
    for row in (
        ["Lead", "E-mail address", "Deal size"],
        ["Ann", "alice@deliverable.test", 1200],
        ["Bob", "nobody@deliverable.test", 99.5],
    ):
        sheet.append(row)
    path = tmp_path / "leads.xlsx"
    workbook.save(path)
    sign_in(page, dashboard, lists_key)
    page.goto(f"{dashboard.url}/upload")
    page.get_by_label("File: CSV, plain text").set_input_files(path)
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.locator("#file-format")).to_have_text("Excel workbook, sheet “Leads”")
    expect(page.locator("#file-column")).to_have_text("column “E-mail address”")
    page.get_by_role("button", name="Start verifying 2 rows").click()
    expect(page.locator('#progress [data-field="status"]')).to_have_text("finished", timeout=FINISH)
    everything = _rows(_download(page, "Everything, with the verdict columns", tmp_path), ",")
    result = everything[0].index("result")
    assert [[*row[:3], row[result]] for row in everything] == [
        ["Lead", "E-mail address", "Deal size", "result"],
        ["Ann", "alice@deliverable.test", "1200", "deliverable"],
        ["Bob", "nobody@deliverable.test", "99.5", "undeliverable"],
    ]
    shot(page, "dashboard-batches-xlsx")
    check_a11y(page)


def test_a_windows_1252_file_reads_once_its_encoding_is_chosen(
    dashboard: Dashboard, page: Page, lists_key: str
) -> None:
    sign_in(page, dashboard, lists_key)
    latin = b"email,name\nalice@deliverable.test,Ren\xe9\n"
    _upload(page, dashboard, "latin.csv", latin)
    expect(page.get_by_role("alert")).to_contain_text("latin.csv: Line 2 is not valid UTF-8")
    expect(page.get_by_label("Text encoding")).to_have_value("cp1252")  # offered
    page.get_by_label("File: CSV, plain text").set_input_files(_file("latin.csv", latin))
    page.get_by_role("button", name="Upload and preview").click()
    expect(page.locator("#sample tbody td").nth(1)).to_have_text("René")
    shot(page, "dashboard-batches-cp1252")
    check_a11y(page)


def test_the_progress_script_updates_the_rows_it_polls(
    dashboard: Dashboard, page: Page, lists_key: str
) -> None:
    """The script against the page, deterministically: the progress JSON is answered by
    the test (the real one is read in the test above), and the row shows what it says."""
    import json

    from playwright.sync_api import Route

    sign_in(page, dashboard, lists_key)
    data = b"email\nalice@deliverable.test\nsomeone@greylist.test\n"
    _upload(page, dashboard, "polled.csv", data)
    page.get_by_label("Name of the list").fill("Polled")
    page.get_by_role("button", name="Start verifying 2 rows").click()
    page.wait_for_url(re.compile(r".*/batches/[0-9a-f-]{36}$"))  # the list's own page
    batch_id = page.url.rsplit("/", 1)[1]
    answers: list[str] = []

    def progress(route: Route) -> None:
        body = {
            "id": batch_id,
            "status": "running",
            "done": 1,
            "total": 2,
            "percent": 50,
            "rate": 0.5,
            "rate_text": "30.0 a minute",
            "eta": None,
            "eta_text": "after the retries",
            "retry_waiting": 7,
        }
        answers.append(route.request.url)
        route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps({"batches": [body]}),
        )

    page.route("**/batches/progress*", progress)
    page.goto(f"{dashboard.url}/batches")
    row = page.locator(f'#batches tr[data-batch="{batch_id}"]')
    expect(row.locator('[data-field="retry_waiting"]')).to_have_text("7")
    expect(row.locator('[data-field="rate"]')).to_have_text("30.0 a minute")
    expect(row.locator("progress")).to_have_js_property("value", 1)
    assert answers and answers[0].endswith("/batches/progress?page=1")
    shot(page, "dashboard-batches-polled")
    check_a11y(page)


def test_a_lists_page_reloads_itself_once_the_list_is_finished(
    dashboard: Dashboard, page: Page, lists_key: str
) -> None:
    """While a list runs its page polls; told it is finished, it reloads to show the
    final charts and table (answered by the test: the real list waits for a retry)."""
    import json

    from playwright.sync_api import Route

    sign_in(page, dashboard, lists_key)
    _upload(page, dashboard, "waits.csv", b"email\nsomeone@greylist.test\n")
    page.get_by_role("button", name="Start verifying 1 row").click()
    expect(page.locator('#progress [data-field="retry_waiting"]')).to_have_text(
        "1", timeout=FINISH
    )  # a reload shows it: the list waits for its retry
    batch_url = page.url
    finished = {"status": "finished", "done": 1, "total": 1, "percent": 100}
    finished |= {"rate_text": "1 a second", "eta_text": "done", "retry_waiting": 0}

    def progress(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=json.dumps(finished))

    page.route("**/progress", progress)
    page.goto(batch_url)
    with page.expect_event("load", timeout=15_000):
        pass  # the script's reload
    expect(page.locator('#progress [data-field="status"]')).to_have_text("running")
    shot(page, "dashboard-batches-reloaded")
