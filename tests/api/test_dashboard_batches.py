"""The dashboard's list pages (mailvet.dashboard.batches) over ASGI: upload, preview,
start, progress, table, downloads and deletion; one key's lists only; errors.

(The same in a real browser against ``mailvet serve``: tests/e2e/test_dashboard_batches.py.)
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailvet.dashboard import auth, batches
from mailvet.dashboard.batches import progress
from mailvet.dashboard.uploads import UploadStash
from mailvet.storage.base import BatchRecord, Plan

from .kit import Api, make_settings, running_api

CSV = (
    b"First name;Email;Company\n"
    b"Ann;alice@deliverable.test;=HYPERLINK(1)\n"
    b"Bob;bob@rejecting.test;Acme\n"
    b"Cid;cid@catchall.test;\n"
    b"Dee;dee@deliverable.test;Dee & Co\n"
    b"Eve;not an address;\n"
)


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    monkeypatch.setattr(batches, "_stash", UploadStash(tmp_path))  # not the shared folder
    settings = make_settings(max_upload_bytes=4096, max_batch_size=60)
    async with running_api(settings) as running:
        yield running


async def signed_in(api: Api, secret: str) -> httpx.AsyncClient:
    """A client of the same app with a session cookie for ``secret``'s key."""
    key = await api.store.authenticate(secret)
    assert key is not None
    key_hash = await api.store.key_hash(key.id)
    assert key_hash is not None
    client = httpx.AsyncClient(transport=api.client._transport, base_url="http://mailvet.test")
    client.cookies.set(auth.SESSION_COOKIE, auth.session_token(key.id, key_hash))
    return client


async def csrf_of(client: httpx.AsyncClient, path: str = "/upload") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def upload(
    client: httpx.AsyncClient, data: bytes, name: str = "shop.csv", **fields: str
) -> httpx.Response:
    token = await csrf_of(client)
    return await client.post(
        "/upload",
        data={"csrf": token, **fields},
        files={"file": (name, data, "text/csv")},
    )


async def start(client: httpx.AsyncClient, preview_url: str, **fields: str) -> httpx.Response:
    token = await csrf_of(client, preview_url)
    return await client.post(preview_url, data={"csrf": token, **fields})


async def finished(client: httpx.AsyncClient, batch_url: str) -> dict[str, Any]:
    for _ in range(500):
        r = await client.get(batch_url + "/progress")
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        if body["status"] == "finished":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("the list did not finish")


async def uploaded_batch(api: Api, client: httpx.AsyncClient) -> str:
    r = await upload(client, CSV)
    assert r.status_code == 303, r.text
    r = await start(client, r.headers["location"], name="Shop")
    assert r.status_code == 303, r.text
    batch_url: str = r.headers["location"]
    await finished(client, batch_url)
    return batch_url


def rows_of(text: str, delimiter: str = ";") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text), delimiter=delimiter))


async def test_upload_preview_start_and_the_three_downloads(api: Api) -> None:
    client = await signed_in(api, api.paid)
    r = await upload(client, CSV)
    assert r.status_code == 303
    preview_url = r.headers["location"]
    assert preview_url.startswith("/upload/")
    page = await client.get(preview_url)
    assert page.status_code == 200
    text = page.text
    assert f"{len(CSV):,} bytes" in text
    assert 'id="file-rows">5<' in text
    assert "column “Email”" in text
    assert "separated by “;”" in text
    assert "=HYPERLINK(1)" in text  # the sample, escaped by the template

    r = await start(client, preview_url, name="Shop")
    assert r.status_code == 303
    batch_url = r.headers["location"]
    done = await finished(client, batch_url)
    assert done["done"] == done["total"] == 5
    # the stashed file is gone once the list started
    assert (await client.get(preview_url)).status_code == 404

    page = await client.get(batch_url)
    assert page.status_code == 200
    assert 'id="results-chart"' in page.text and 'id="reasons-chart"' in page.text
    assert "deliverable: 2" in page.text  # the chart's text, readable without colour

    deliverable = await client.get(batch_url + "/download/deliverable")
    assert deliverable.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="shop-deliverable.csv"' in deliverable.headers["content-disposition"]
    assert rows_of(deliverable.text) == [
        ["First name", "Email", "Company"],
        ["Ann", "alice@deliverable.test", "'=HYPERLINK(1)"],
        ["Dee", "dee@deliverable.test", "Dee & Co"],
    ]
    cleaned = rows_of((await client.get(batch_url + "/download/deliverable-risky")).text)
    assert [row[0] for row in cleaned] == ["First name", "Ann", "Cid", "Dee"]
    everything = rows_of((await client.get(batch_url + "/download/all")).text)
    header = everything[0]
    assert header[:3] == ["First name", "Email", "Company"]
    assert header[3] == "email" and "result" in header and "reason" in header
    at = header.index("result")
    assert [(row[0], row[at]) for row in everything[1:]] == [
        ("Ann", "deliverable"),
        ("Bob", "undeliverable"),
        ("Cid", "risky"),
        ("Dee", "deliverable"),
        ("Eve", "undeliverable"),
    ]
    assert (await client.get(batch_url + "/download/nope")).status_code == 404


async def test_the_table_filters_and_pages_server_side(api: Api) -> None:
    client = await signed_in(api, api.paid)
    batch_url = await uploaded_batch(api, client)
    page = await client.get(batch_url, params={"result": "deliverable"})
    table = page.text[page.text.index('id="addresses"') :]
    assert "alice@deliverable.test" in table and "dee@deliverable.test" in table
    assert "bob@rejecting.test" not in table
    assert "Rows 1 to 2 of 2, result deliverable." in page.text
    page = await client.get(batch_url, params={"reason": "rejected_email"})
    table = page.text[page.text.index('id="addresses"') :]
    assert "bob@rejecting.test" in table and "alice@" not in table
    # unknown filters are ignored, not errors
    page = await client.get(batch_url, params={"result": "<script>", "reason": "x", "page": "x"})
    assert page.status_code == 200 and "<script>" not in page.text


async def test_the_table_pages(api: Api) -> None:
    client = await signed_in(api, api.paid)
    data = b"email\n" + b"".join(b"u%d@deliverable.test\n" % i for i in range(49))
    data += b"last@deliverable.test\n"
    r = await upload(client, data, "many.csv")
    r = await start(client, r.headers["location"])
    batch_url = r.headers["location"]
    await finished(client, batch_url)
    first = await client.get(batch_url)
    assert "Next page" not in first.text  # 50 rows: one page
    r = await upload(client, data + b"one.more@deliverable.test\n", "more.csv")
    r = await start(client, r.headers["location"])
    batch_url = r.headers["location"]
    await finished(client, batch_url)
    first = await client.get(batch_url)
    assert "Next page" in first.text and "one.more@" not in first.text
    second = await client.get(batch_url, params={"page": "2"})
    assert "one.more@deliverable.test" in second.text
    assert "Rows 51 to 51" in second.text


async def test_the_lists_page_shows_progress(api: Api) -> None:
    client = await signed_in(api, api.paid)
    api.engine.gate = asyncio.Event()  # hold the list back
    r = await upload(client, CSV)
    r = await start(client, r.headers["location"], name="Held")
    batch_url = r.headers["location"]
    page = await client.get("/batches")
    assert page.status_code == 200
    assert "Held" in page.text and 'data-progress-url="/batches/progress?page=1"' in page.text
    assert "/ 5" in page.text
    data = (await client.get("/batches/progress")).json()
    assert data["batches"][0]["total"] == 5
    assert data["batches"][0]["status"] in ("queued", "running")
    api.engine.gate.set()
    await finished(client, batch_url)
    page = await client.get("/batches")
    assert "data-progress-url" not in page.text  # nothing runs: nothing to poll


async def test_another_keys_list_is_a_404(api: Api) -> None:
    mine = await signed_in(api, api.paid)
    batch_url = await uploaded_batch(api, mine)
    theirs = await signed_in(api, api.other)
    for path in ("", "/progress", "/download/all", "/delete"):
        r = await theirs.get(batch_url + path)
        assert r.status_code == 404, path
        assert "alice@" not in r.text
    token = await csrf_of(theirs, "/batches")
    r = await theirs.post(batch_url + "/delete", data={"csrf": token})
    assert r.status_code == 404
    assert "Shop" not in (await theirs.get("/batches")).text
    assert (await mine.get(batch_url)).status_code == 200  # still there
    assert (await mine.get("/batches/not-a-uuid")).status_code == 404
    assert (
        await mine.get("/batches/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12)
    ).status_code == 404


async def test_delete_needs_the_csrf_token_and_removes_the_rows(api: Api) -> None:
    client = await signed_in(api, api.paid)
    batch_url = await uploaded_batch(api, client)
    confirm = await client.get(batch_url + "/delete")
    assert "Delete the list" in confirm.text
    r = await client.post(batch_url + "/delete", data={"csrf": "forged"})
    assert r.status_code == 403
    assert (await client.get(batch_url + "/download/all")).status_code == 200
    token = await csrf_of(client, batch_url + "/delete")
    r = await client.post(batch_url + "/delete", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/batches?deleted=1"
    page = await client.get(batch_url)
    assert "This list was deleted" in page.text and "alice@" not in page.text
    assert (await client.get(batch_url + "/download/all")).status_code == 404
    batch_id = batch_url.rsplit("/", 1)[1]
    assert [i async for i in api.store.iter_items(batch_id)] == []


async def test_upload_errors_are_pages_that_say_what_to_do(api: Api) -> None:
    client = await signed_in(api, api.paid)
    cases = [
        (b"", "a.csv", 400, "The file is empty."),
        (b"email,name\n", "a.csv", 400, "a header and no rows"),
        (b"%PDF-1.4\n\x00\x01", "a.pdf", 400, "it is a PDF document"),
        (b"email\nb\xe9@x.test\n", "a.csv", 400, "Line 2 is not valid UTF-8 text"),
        (b"email\n" + b"a@b.test\n" * 61, "a.csv", 413, "more than 60 rows"),
    ]
    for data, name, status, words in cases:
        r = await upload(client, data, name)
        assert r.status_code == status, (words, r.text)
        assert words in r.text
        assert 'role="alert"' in r.text and 'aria-invalid="true"' in r.text
    r = await upload(client, b"email\nb\xe9@x.test\n", "latin.csv")
    assert "<strong>latin.csv</strong>: Line 2" in r.text
    assert '<option value="cp1252" selected>' in r.text  # offered for the next try
    r = await upload(client, b"email\nb\xe9@x.test\n", "a.csv", encoding="cp1252")
    assert r.status_code == 303 and r.headers["location"].endswith("?encoding=cp1252")


async def test_a_file_over_the_byte_limit(api: Api) -> None:
    client = await signed_in(api, api.paid)
    big = b"email\n" + b"someone@deliverable.test\n" * 200  # 5 kB, the limit is 4 kB
    r = await upload(client, big)
    assert r.status_code == 413
    assert "The file is over 4 kB" in r.text and "MAILVET_MAX_UPLOAD_BYTES" in r.text
    # far over: refused from its Content-Length, before the body is read
    huge = b"x" * (5 * 4096 + 70_000)
    r = await upload(client, huge)
    assert r.status_code == 413 and "The file is over 4 kB" in r.text
    assert r.headers["connection"] == "close"


async def test_a_file_over_the_byte_limit_without_a_length(api: Api) -> None:
    client = await signed_in(api, api.paid)
    token = await csrf_of(client)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(200):
            yield b"x" * 1024  # 200 kB: the limit is 4 kB (+ 64 kB for the form)

    r = await client.post(
        "/upload",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413 and "The file is over 4 kB" in r.text


async def test_an_api_call_keeps_the_smaller_body_limit(api: Api) -> None:
    body = b'{"emails": ["' + b"a" * 11_000_000 + b'"]}'
    r = await api.client.post("/v1/batch", content=body, headers=api.h())
    assert r.status_code == 413


async def test_no_column_named_like_an_address_asks_for_one(api: Api) -> None:
    client = await signed_in(api, api.paid)
    r = await upload(client, b"id,contact\n1,alice@deliverable.test\n", "x.csv")
    preview_url = r.headers["location"]
    page = await client.get(preview_url)
    assert "no column is named like an address" in page.text
    r = await start(client, preview_url)
    assert r.status_code == 400 and "choose the column" in r.text
    r = await start(client, preview_url, column="1")
    assert r.status_code == 303
    done = await finished(client, r.headers["location"])
    assert done["total"] == 1


async def test_names_with_control_characters_are_cleaned(api: Api) -> None:
    client = await signed_in(api, api.paid)
    token = await csrf_of(client)
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{token}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="bad\x07\x1bname.csv"\r\nContent-Type: text/csv\r\n\r\n'
        "email\r\nalice@deliverable.test\r\n"
        f"\r\n--{boundary}--\r\n"
    ).encode()
    r = await client.post(
        "/upload",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 303, r.text
    r = await start(client, r.headers["location"], name="")
    assert r.status_code == 303
    batch_id = r.headers["location"].rsplit("/", 1)[1]
    key = await api.store.authenticate(api.paid)
    assert key is not None
    record = await api.store.get_batch(key.id, batch_id)
    assert record is not None and record.name == "badname.csv"
    assert record.upload is not None and record.upload.filename == "badname.csv"


async def test_csrf_is_checked_on_upload_and_start(api: Api) -> None:
    client = await signed_in(api, api.paid)
    r = await client.post("/upload", files={"file": ("a.csv", b"email\na@b.test\n", "text/csv")})
    assert r.status_code == 403
    r = await upload(client, b"email\nalice@deliverable.test\n")
    r2 = await client.post(r.headers["location"], data={"csrf": "nope"})
    assert r2.status_code == 403
    assert (await client.get("/batches")).text.count("data-batch=") == 0


async def test_a_free_key_cannot_upload(api: Api) -> None:
    client = await signed_in(api, api.free)
    page = await client.get("/upload")
    assert "Lists need a paid-plan key" in page.text
    r = await upload(client, b"email\nalice@deliverable.test\n")
    assert r.status_code == 403 and "Lists need a paid-plan key" in r.text


async def test_a_key_revoked_after_signing_in_is_told_so(api: Api) -> None:
    client = await signed_in(api, api.paid)
    token = await csrf_of(client)
    key = await api.store.authenticate(api.paid)
    assert key is not None
    await api.store.revoke_key(key.id)
    r = await client.post(
        "/upload",
        data={"csrf": token},
        files={"file": ("a.csv", b"email\nalice@deliverable.test\n", "text/csv")},
    )
    assert r.status_code == 401
    assert "Your API key has been revoked" in r.text
    # a forged cookie naming that key is not told anything
    forged = httpx.AsyncClient(transport=api.client._transport, base_url="http://mailvet.test")
    forged.cookies.set(auth.SESSION_COOKIE, f"{key.id}.9999999999.nonce.{'0' * 64}")
    r = await forged.post("/upload", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    # nor is an expired one: auth.revoked_session checks the cookie as read_session does
    key_hash = await api.store.key_hash(key.id)
    assert key_hash is not None
    expired = auth.session_token(key.id, key_hash, now=0.0)
    forged.cookies.set(auth.SESSION_COOKIE, expired)
    r = await forged.post("/upload", data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin")


async def test_signed_out_pages_go_to_the_sign_in(api: Api) -> None:
    for path in ("/batches", "/upload", "/batches/progress"):
        r = await api.client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), path


def test_progress_numbers() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record = BatchRecord(
        id="b",
        user_id="k",
        name="n",
        size=1000,
        created_at=t0,
        updated_at=t0,
        done=250,
        retry_waiting=3,
    )
    p = progress(record, now=t0 + timedelta(seconds=50))
    assert (p["status"], p["done"], p["total"], p["percent"]) == ("running", 250, 1000, 25)
    assert p["rate"] == 5.0 and p["rate_text"] == "5.0 a second"
    assert p["eta"] == 150 and p["eta_text"] == "about 2 min"
    assert p["retry_waiting"] == 3
    greylisted = BatchRecord("b", "k", None, 10, t0, t0, done=8, retry_waiting=2)
    waiting = progress(greylisted, now=t0 + timedelta(seconds=4))
    assert waiting["eta"] is None and waiting["eta_text"] == "after the retries"
    queued = progress(BatchRecord("b", "k", None, 10, t0, t0), now=t0 + timedelta(seconds=5))
    assert queued["status"] == "queued" and queued["eta_text"] == "waiting to start"
    done = progress(
        BatchRecord("b", "k", None, 10, t0, t0, finished_at=t0 + timedelta(seconds=2), done=10)
    )
    assert done["eta_text"] == "done" and done["rate"] == 5.0


async def test_the_preview_counts_one_row_as_a_row(api: Api) -> None:
    client = await signed_in(api, api.paid)
    r = await upload(client, b"email\nalice@deliverable.test\n", "one.csv")
    page = await client.get(r.headers["location"])
    assert "Start verifying 1 row</button>" in page.text
    assert "The first row</caption>" in page.text
    r = await upload(client, b"email\nalice@deliverable.test\nbob@rejecting.test\n", "two.csv")
    page = await client.get(r.headers["location"])
    assert "Start verifying 2 rows</button>" in page.text


async def test_a_double_click_on_start_starts_one_list(api: Api) -> None:
    client = await signed_in(api, api.paid)
    r = await upload(client, CSV)
    preview_url = r.headers["location"]
    token = await csrf_of(client, preview_url)
    first, second = await asyncio.gather(
        client.post(preview_url, data={"csrf": token, "name": "Twice"}),
        client.post(preview_url, data={"csrf": token, "name": "Twice"}),
    )
    key = await api.store.authenticate(api.paid)
    assert key is not None
    listed = await api.store.list_batches(key.id, offset=0, limit=10)
    assert [b.name for b in listed] == ["Twice"]
    batch_url = f"/batches/{listed[0].id}"
    assert {first.status_code, second.status_code} == {303}
    assert {first.headers["location"], second.headers["location"]} <= {batch_url, "/batches"}
    # the form sent again later (the back button) goes to the list it started
    again = await client.post(preview_url, data={"csrf": token, "name": "Twice"})
    assert (again.status_code, again.headers["location"]) == (303, batch_url)
    assert len(await api.store.list_batches(key.id, offset=0, limit=10)) == 1
    assert (await client.get(preview_url)).status_code == 404  # the file is gone


async def test_the_preview_page_reads_the_file_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file of up to MAILVET_MAX_UPLOAD_BYTES is read when it arrives; showing (or
    # reloading, or hammering) its preview does not read it again
    client = await signed_in(api, api.paid)
    reads: list[str] = []
    from mailvet.dashboard.uploads import read_preview as real

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("encoding", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(batches, "read_preview", counted)
    r = await upload(client, CSV)
    preview_url = r.headers["location"]
    for _ in range(3):
        page = await client.get(preview_url)
        assert page.status_code == 200 and 'id="file-rows">5<' in page.text
    assert reads == ["utf-8"]
    page = await client.get(preview_url, params={"encoding": "latin-1"})  # another reading
    assert page.status_code == 200
    assert reads == ["utf-8", "latin-1"]
    await client.get(preview_url, params={"encoding": "latin-1"})
    assert reads == ["utf-8", "latin-1"]


async def test_every_dashboard_post_needs_the_csrf_token(api: Api) -> None:
    """Every POST route of the dashboard's routers (listed from them, so a new one is
    covered too) refuses a form without the session's token, and changes nothing."""
    from fastapi.routing import APIRoute

    _, admin_secret = await api.store.create_key("ops", Plan.PAID, admin=True)
    client = await signed_in(api, admin_secret)
    batch_url = await uploaded_batch(api, client)
    preview = (await upload(client, CSV)).headers["location"]
    other = next(k for k in await api.store.list_keys() if k.name == "other")
    values = {
        "key_id": other.id,
        "batch_id": batch_url.rsplit("/", 1)[1],
        "token": preview.rsplit("/", 1)[1],
    }
    from mailvet.dashboard.routes import router

    routes = [
        route
        for route in [*router.routes, *batches.router.routes]  # every dashboard router
        if isinstance(route, APIRoute) and "POST" in (route.methods or set())
    ]
    paths = {route.path for route in routes}
    assert {"/signin", "/signout", "/check", "/keys", "/upload"} <= paths
    assert {"/keys/{key_id}/revoke", "/keys/{key_id}/plan", "/upload/{token}"} <= paths
    assert "/batches/{batch_id}/delete" in paths
    before = (await api.store.list_keys(), await api.store.get_batch(other.id, values["batch_id"]))
    for path in sorted(paths):
        url = path.format(**values)
        data = {"name": "x", "plan": "free", "email": "a@deliverable.test", "key": api.paid}
        r = await client.post(url, data=data)
        assert r.status_code == 403, (url, r.status_code)
        r = await client.post(url, data={**data, "csrf": "forged"})
        assert r.status_code == 403, (url, r.status_code)
    after = (await api.store.list_keys(), await api.store.get_batch(other.id, values["batch_id"]))
    assert after == before
    assert (await client.get(batch_url)).status_code == 200  # not deleted
    assert (await client.get(preview)).status_code == 200  # not started


async def test_a_start_over_the_rate_limit_keeps_the_preview(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await signed_in(api, api.paid)
    preview_url = (await upload(client, CSV)).headers["location"]
    token = await csrf_of(client, preview_url)
    from mailvet.api.ratelimit import RateLimiter

    key = await api.store.authenticate(api.paid)
    assert key is not None
    spent = RateLimiter(1, clock=lambda: 1000.0)  # one a minute, and the clock stands still
    assert spent.check(key.id) == 0.0  # the one is taken
    kept = api.app.state.service.limiter
    monkeypatch.setattr(api.app.state.service, "limiter", spent)
    r = await client.post(preview_url, data={"csrf": token, "name": "Later"})
    assert r.status_code == 429
    assert "Too many requests for this key: wait" in r.text
    assert 'id="file-rows">5<' in r.text  # the preview, not the upload form
    assert f'action="{preview_url}"' in r.text
    monkeypatch.setattr(api.app.state.service, "limiter", kept)
    r = await client.post(preview_url, data={"csrf": token, "name": "Later"})
    assert r.status_code == 303 and r.headers["location"].startswith("/batches/")
