"""Uploaded columns in the stores (v0005): a batch's file header and each item's other
cells, on memory, SQLite and PostgreSQL; reads filtered by reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailvet.storage import MemoryStore, Plan, Store, UploadInfo, open_store
from mailvet.storage.common import dump_cells

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

UPLOAD = UploadInfo(
    filename="shop list.csv",
    fmt="csv",
    columns=("Name", "E-mail", "City", "Note"),
    email_column=1,
    delimiter=";",
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = open_store(store_url)
    await opened.migrate()
    yield opened
    await opened.close()


backends = pytest.mark.parametrize("store_url", BACKENDS, indirect=True)


@backends
async def test_uploaded_columns_round_trip(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    rows = [
        ("a@a.test", ["Ann", "Paris", "=1+1"]),
        ("b@b.test", ["Bob", "Zoë \u2603", ""]),
        ("c@c.test", ["Nul\x00l", "quote\"'", "line\nbreak"]),
    ]
    record = await store.create_batch(
        key.id,
        "shop list.csv",
        [email for email, _ in rows],
        upload=UPLOAD,
        cells=[dump_cells(cells) for _, cells in rows],
    )
    assert record.upload == UPLOAD
    found = await store.get_batch(key.id, record.id)
    assert found is not None and found.upload == UPLOAD
    listed = await store.list_batches(key.id)
    assert listed[0].upload == UPLOAD
    items = [item async for item in store.iter_items(record.id)]
    assert [(i.email, i.cells) for i in items] == [(e, tuple(c)) for e, c in rows]
    page = [item async for item in store.iter_items(record.id, offset=1, limit=1)]
    assert [i.cells for i in page] == [tuple(rows[1][1])]


@backends
async def test_a_batch_without_a_file_has_no_upload_nor_cells(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    record = await store.create_batch(key.id, None, ["a@a.test"])
    assert record.upload is None
    found = await store.get_batch(key.id, record.id)
    assert found is not None and found.upload is None
    assert [i.cells async for i in store.iter_items(record.id)] == [None]


@backends
async def test_upload_and_cells_are_checked(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    with pytest.raises(ValueError, match="together"):
        await store.create_batch(key.id, None, ["a@a.test"], upload=UPLOAD)
    with pytest.raises(ValueError, match="together"):
        await store.create_batch(key.id, None, ["a@a.test"], cells=["[]"])
    with pytest.raises(ValueError, match="2 rows of cells for 1 emails"):
        await store.create_batch(key.id, None, ["a@a.test"], upload=UPLOAD, cells=["[]", "[]"])
    bad = UploadInfo("f.csv", "csv", ("a", "b"), 5)
    with pytest.raises(ValueError, match="email_column"):
        await store.create_batch(key.id, None, ["a@a.test"], upload=bad, cells=["[]"])
    assert await store.list_batches(key.id) == []


@backends
async def test_deleting_a_batch_drops_its_cells(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    record = await store.create_batch(
        key.id, None, ["a@a.test"], upload=UPLOAD, cells=[dump_cells(["Ann", "Paris", ""])]
    )
    assert await store.delete_batch(key.id, record.id)
    assert [i async for i in store.iter_items(record.id)] == []


@backends
async def test_iter_items_filters_by_reason_and_result(store: Store) -> None:
    key, _ = await store.create_key("k", Plan.PAID)
    emails = [f"u{i}@a.test" for i in range(2500)]  # past one read chunk
    record = await store.create_batch(key.id, None, emails)
    verdicts = []
    for i in range(len(emails)):
        result, reason = [
            ("deliverable", "accepted_email"),
            ("undeliverable", "rejected_email"),
            ("risky", "catch_all"),
            ("undeliverable", "invalid_domain"),
        ][i % 4]
        verdicts.append((emails[i], {"result": result, "reason": reason}))
    await store.save_results(record.id, verdicts[:2400])  # the last 100 stay pending
    rejected = [i.position async for i in store.iter_items(record.id, reason="rejected_email")]
    assert rejected == list(range(1, 2400, 4))
    both = [
        i.position
        async for i in store.iter_items(record.id, result="undeliverable", reason="invalid_domain")
    ]
    assert both == list(range(3, 2400, 4))
    none = [i async for i in store.iter_items(record.id, result="deliverable", reason="catch_all")]
    assert none == []
    page = [
        i.position
        async for i in store.iter_items(record.id, reason="catch_all", offset=300, limit=5)
    ]
    assert page == [2 + 4 * n for n in range(300, 305)]


async def test_memory_store_copies_what_it_is_given() -> None:
    store = MemoryStore()
    key, _ = await store.create_key("k", Plan.PAID)
    cells = [dump_cells(["Ann", "Paris", ""])]
    record = await store.create_batch(key.id, None, ["a@a.test"], upload=UPLOAD, cells=cells)
    cells[0] = dump_cells(["changed", "", ""])
    assert [i.cells async for i in store.iter_items(record.id)] == [("Ann", "Paris", "")]
