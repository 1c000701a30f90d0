"""The batch routes past Mails.so's shape: pages, streamed downloads, list, delete,
callback_url (v1.py's batch section)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from mailvet.api import wire
from mailvet.storage.base import BatchItem
from mailvet.verdict import Verdict

from .kit import PUBLIC_HOOK_HOST, PUBLIC_HOOK_IP, Api, api_on, make_settings

STORES = ["memory", "sqlite"]

MAILS_SO_FIELDS = [
    "id",
    "name",
    "created_at",
    "updated_at",
    "deleted_at",
    "finished_at",
    "user",
    "user_id",
    "size",
]
EXTENSION_FIELDS = [
    "done",
    "status",
    "progress",
    "retry_waiting",
    "counts",
    "counts_by_reason",
]
MIXED = ["a@deliverable.test", "b@rejecting.test", "c@catchall.test", "d@else.test"]


@pytest.fixture(params=STORES)
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """These routes on each store the embedded server uses."""
    async with api_on(request.param, tmp_path) as running:
        yield running


async def create(api: Api, emails: list[str], **extra: Any) -> dict[str, Any]:
    r = await api.client.post("/v1/batch", json={"emails": emails, **extra}, headers=api.h())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def finished(api: Api, batch_id: str) -> dict[str, Any]:
    for _ in range(500):
        r = await api.client.get(f"/v1/batch/{batch_id}", headers=api.h())
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        if body["finished_at"] is not None:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("batch did not finish")


async def test_a_small_batch_keeps_the_mails_so_shape_with_additive_fields(api: Api) -> None:
    created = await create(api, MIXED, name="list")
    assert list(created) == [*MAILS_SO_FIELDS, *EXTENSION_FIELDS]
    assert created["status"] == "queued"
    assert created["progress"] == {"done": 0, "total": 4}
    done = await finished(api, created["id"])
    # no page fields on a batch within the page size: a Mails.so client sees its object
    assert list(done) == [*MAILS_SO_FIELDS, *EXTENSION_FIELDS, "emails"]
    assert done["status"] == "finished"
    assert done["progress"] == {"done": 4, "total": 4}
    assert done["retry_waiting"] == 0
    assert done["counts"] == {"deliverable": 1, "undeliverable": 1, "risky": 1, "unknown": 1}
    assert done["counts_by_reason"] == {
        "accepted_email": 1,
        "rejected_email": 1,
        "catch_all": 1,
        "no_connect": 1,
    }
    assert [e["email"] for e in done["emails"]] == MIXED
    assert all(list(e) == list(Verdict._fields) for e in done["emails"])


async def test_spellings_of_one_address_are_asked_once_and_each_entry_gets_its_row(
    api: Api,
) -> None:
    # the domain is case-insensitive (and NFC-normalised): one address, asked once
    emails = ["Ann@DELIVERABLE.test", "ann@deliverable.test", "x@deliverable.test", "bad@"]
    emails.insert(2, "Ann@deliverable.TEST")
    created = await create(api, emails)
    done = await finished(api, created["id"])
    rows = done["emails"]
    assert [row["email"] for row in rows][:4] == [
        "Ann@deliverable.test",
        "ann@deliverable.test",
        "Ann@deliverable.test",
        "x@deliverable.test",
    ]
    assert len(rows) == 5 and rows[4]["reason"] == "invalid_format"
    assert rows[0]["result"] == rows[2]["result"] == "deliverable"
    asked = [raw for raw in api.engine.calls if raw.lower().startswith("ann@")]
    assert len(asked) == 2, asked  # "Ann@" once for three entries, "ann@" once


@pytest.mark.parametrize("kind", STORES)
async def test_a_batch_past_the_page_size_is_read_page_by_page(kind: str, tmp_path: Path) -> None:
    emails = [f"u{i}@deliverable.test" for i in range(25)]
    async with api_on(kind, tmp_path, make_settings(batch_page_size=10)) as api:
        batch_id = (await create(api, emails))["id"]
        await api.app.state.service.runner.wait_idle()
        url: str | None = f"/v1/batch/{batch_id}"
        seen: list[str] = []
        pages = []
        while url is not None:
            r = await api.client.get(url, headers=api.h())
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            page = r.json()
            pages.append((page["offset"], page["limit"], len(page["emails"])))
            assert list(page)[-4:] == ["offset", "limit", "next", "emails"]
            assert page["progress"] == {"done": 25, "total": 25}
            seen.extend(e["email"] for e in page["emails"])
            url = page["next"]
        assert pages == [(0, 10, 10), (10, 10, 10), (20, 10, 5)]
        assert seen == emails
        # offset/limit on any batch answer a page; a limit past the page size is cut to it
        r = await api.client.get(
            f"/v1/batch/{batch_id}", params={"offset": 22, "limit": 500}, headers=api.h()
        )
        page = r.json()
        assert (page["offset"], page["limit"], page["next"]) == (22, 10, None)
        assert [e["email"] for e in page["emails"]] == emails[22:]
        r = await api.client.get(f"/v1/batch/{batch_id}", params={"offset": 3}, headers=api.h())
        page = r.json()
        assert page["next"] == f"http://mailvet.test/v1/batch/{batch_id}?offset=13&limit=10"


async def test_deleting_a_running_batch_stops_its_work_at_once(api: Api) -> None:
    api.engine.gate = asyncio.Event()  # the first addresses hang in verify()
    emails = [f"u{i}@example.com" for i in range(60)]
    batch_id = (await create(api, emails))["id"]
    runner = api.app.state.service.runner
    async with asyncio.timeout(10):
        while api.engine.in_flight == 0:
            await asyncio.sleep(0.01)
    r = await api.client.delete(f"/v1/batch/{batch_id}", headers=api.h())
    assert r.status_code == 200
    # the runner hears of it now, not when a result of the batch next comes in
    await asyncio.wait_for(runner.wait_idle(), 10)
    assert runner.in_flight(batch_id) == 0
    asked = len(api.engine.calls)
    api.engine.gate.set()
    await asyncio.sleep(0.1)
    assert len(api.engine.calls) == asked < len(emails)  # nothing more of it was asked


@pytest.mark.parametrize(
    "query", ["offset=-1", "offset=x", "limit=0", "limit=1.5", "offset=%00", "offset=1e3"]
)
async def test_bad_page_parameters_are_a_400(api: Api, query: str) -> None:
    batch_id = (await create(api, MIXED))["id"]
    r = await api.client.get(f"/v1/batch/{batch_id}?{query}", headers=api.h())
    assert r.status_code == 400
    assert r.json() == {"data": None, "error": wire.BAD_FORMAT}


async def test_a_page_reads_only_its_own_rows(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    emails = [f"u{i}@deliverable.test" for i in range(5000)]
    batch_id = (await create(api, emails))["id"]
    await api.app.state.service.runner.wait_idle()
    read: list[int] = []
    iter_items = api.store.iter_items

    def counting(batch_id: str, **kwargs: Any) -> AsyncIterator[BatchItem]:
        async def items() -> AsyncIterator[BatchItem]:
            async for item in iter_items(batch_id, **kwargs):
                read.append(item.position)
                yield item

        return items()

    monkeypatch.setattr(api.store, "iter_items", counting)
    r = await api.client.get(
        f"/v1/batch/{batch_id}", params={"offset": 3000, "limit": 1000}, headers=api.h()
    )
    assert [e["email"] for e in r.json()["emails"]] == emails[3000:4000]
    assert read == list(range(3000, 4000))  # that page's rows, never the whole batch


async def test_download_filters_by_result_and_gzips_when_asked(api: Api) -> None:
    batch_id = (await create(api, MIXED * 50))["id"]
    await finished(api, batch_id)
    path = f"/v1/batch/{batch_id}/download"
    r = await api.client.get(path, params={"format": "jsonl", "result": "risky"}, headers=api.h())
    rows = [orjson.loads(line) for line in r.content.splitlines()]
    assert [row["input"] for row in rows] == ["c@catchall.test"] * 50
    assert [row["position"] for row in rows] == list(range(2, 200, 4))
    r = await api.client.get(path, params={"result": "deliverable"}, headers=api.h())
    assert r.text.count("\r\n") == 1 + 50
    r = await api.client.get(path, params={"result": "maybe"}, headers=api.h())
    assert r.status_code == 400

    plain = await api.client.get(path, headers={**api.h(), "accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    async with api.client.stream(
        "GET", path, headers={**api.h(), "accept-encoding": "gzip"}
    ) as streamed:
        assert streamed.headers["content-encoding"] == "gzip"
        assert streamed.headers["vary"] == "accept-encoding"
        raw = b"".join([chunk async for chunk in streamed.aiter_raw()])
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content) // 5
    refused = await api.client.get(path, headers={**api.h(), "accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


async def test_list_batches_newest_first_paged_and_per_key(api: Api) -> None:
    ids = [(await create(api, [f"{i}@deliverable.test"], name=f"b{i}"))["id"] for i in range(5)]
    r = await api.client.post("/v1/batch", json={"emails": MIXED}, headers=api.h(api.other))
    other_id = r.json()["id"]
    r = await api.client.get("/v1/batches", params={"limit": 2}, headers=api.h())
    assert r.status_code == 200
    first = r.json()
    assert first["error"] is None
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert list(first["data"][0]) == [*MAILS_SO_FIELDS, *EXTENSION_FIELDS[:4]]
    seen = [b["id"] for b in first["data"]]
    url = first["next"]
    while url is not None:
        page = (await api.client.get(url, headers=api.h())).json()
        seen.extend(b["id"] for b in page["data"])
        url = page["next"]
    assert seen == ids[::-1]
    assert other_id not in seen
    r = await api.client.get("/v1/batches", headers=api.h(api.free))
    assert r.status_code == 401
    r = await api.client.get("/v1/batches", params={"offset": "-2"}, headers=api.h())
    assert r.status_code == 400


async def test_delete_removes_the_addresses_and_keeps_the_object(api: Api) -> None:
    batch_id = (await create(api, MIXED))["id"]
    await finished(api, batch_id)
    r = await api.client.delete(f"/v1/batch/{batch_id}", headers=api.h(api.other))
    assert r.status_code == 404
    r = await api.client.delete(f"/v1/batch/{uuid.uuid4()}", headers=api.h())
    assert r.status_code == 404
    r = await api.client.delete(f"/v1/batch/{batch_id}", headers=api.h())
    assert r.status_code == 200
    deleted = r.json()
    assert deleted["status"] == "deleted"
    assert deleted["deleted_at"] is not None
    assert deleted["size"] == 4
    body = (await api.client.get(f"/v1/batch/{batch_id}", headers=api.h())).json()
    assert body["status"] == "deleted"
    assert body["emails"] == []
    r = await api.client.get(
        f"/v1/batch/{batch_id}/download", params={"format": "jsonl"}, headers=api.h()
    )
    assert r.content == b""
    again = await api.client.delete(f"/v1/batch/{batch_id}", headers=api.h())
    assert again.status_code == 200
    assert again.json()["deleted_at"] == deleted["deleted_at"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "https://",
        "http://127.0.0.1:9/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "https://private.example.com/hook",
        "https://nowhere.example.net/hook",
        "https://hooks.example.com:99999/hook",
        "https://hooks.example.com/a b",
        "javascript:alert(1)",
    ],
)
async def test_a_callback_url_to_a_private_or_bad_host_is_refused(api: Api, url: str) -> None:
    r = await api.client.post(
        "/v1/batch", json={"emails": MIXED, "callback_url": url}, headers=api.h()
    )
    assert r.status_code == 400
    assert r.json() == {"data": None, "error": wire.CALLBACK_REFUSED}
    listed = await api.client.get("/v1/batches", headers=api.h())
    assert listed.json()["data"] == []


@pytest.mark.parametrize("url", [123, ["x"], "x" * 3000])
async def test_a_callback_url_that_is_not_a_short_string_is_a_400(api: Api, url: object) -> None:
    r = await api.client.post(
        "/v1/batch", json={"emails": MIXED, "callback_url": url}, headers=api.h()
    )
    assert r.status_code == 400
    assert r.json() == {"data": None, "error": wire.BAD_FORMAT}


async def test_private_callbacks_are_accepted_when_the_operator_allows_them(
    tmp_path: Path,
) -> None:
    async with api_on("memory", tmp_path, make_settings(allow_private_webhooks=True)) as api:
        r = await api.client.post(
            "/v1/batch",
            json={"emails": MIXED, "callback_url": "http://127.0.0.1:9/hook"},
            headers=api.h(),
        )
        assert r.status_code == 200


async def test_the_callback_is_called_signed_once_the_batch_is_finished(api: Api) -> None:
    url = f"https://{PUBLIC_HOOK_HOST}/hooks/mailvet?token=abc"
    batch_id = (await create(api, MIXED, callback_url=url))["id"]
    await finished(api, batch_id)
    sender = api.app.state.service.webhooks
    for _ in range(200):
        if api.hooks.requests:
            break
        sender.wake()
        await asyncio.sleep(0.02)
    [request] = api.hooks.requests
    # sent to the address the host was checked at, under its name
    assert str(request.url) == url.replace(PUBLIC_HOOK_HOST, PUBLIC_HOOK_IP)
    assert request.headers["host"] == PUBLIC_HOOK_HOST
    body = request.content
    key = hashlib.sha256(api.paid.encode()).hexdigest().encode()
    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    assert request.headers["x-mailvet-signature"] == expected
    sent = orjson.loads(body)
    assert sent["id"] == batch_id
    assert sent["status"] == "finished"
    assert sent["counts"]["deliverable"] == 1
    assert "emails" not in sent


async def test_the_schema_describes_pages_filters_lists_and_callbacks(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]

    def params(path: str, method: str = "get") -> set[str]:
        return {p["name"] for p in paths[path][method].get("parameters", [])}

    assert {"offset", "limit"} <= params("/v1/batch/{batch_id}")
    assert {"format", "result"} <= params("/v1/batch/{batch_id}/download")
    assert {"offset", "limit"} <= params("/v1/batches")
    assert "delete" in paths["/v1/batch/{batch_id}"]
    body = paths["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "callback_url" in body["properties"]
    page = schema["components"]["schemas"]["BatchWithEmailsOut"]["properties"]
    assert {"status", "progress", "retry_waiting", "counts_by_reason", "next"} <= set(page)
