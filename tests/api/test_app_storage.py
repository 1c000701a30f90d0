"""The app over a failing database: 503 with Retry-After, never a 500, never an address."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from mailvet.api import wire
from mailvet.api.app import create_app
from mailvet.storage import Plan, open_store

from .kit import FakeEngine, make_settings


async def test_a_storage_fault_on_batch_create_is_a_503_with_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    path = tmp_path / "broken.db"
    store = open_store(f"sqlite:///{path}")
    await store.migrate()
    _, secret = await store.create_key("acme", Plan.PAID)
    sync = create_engine(f"sqlite:///{path}")
    with sync.begin() as conn:  # the store breaks under the running service
        conn.execute(text("DROP TABLE batch_items"))
    sync.dispose()
    emails = ["hidden.person@private.test", "other.person@private.test"]
    app = create_app(make_settings(), store=store, engine=FakeEngine())
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.post(
                    "/v1/batch", json={"emails": emails}, headers={"x-mails-api-key": secret}
                )
                assert r.status_code == 503
                assert r.headers["retry-after"] == "5"
                assert r.json() == {"data": None, "error": wire.STORAGE_UNAVAILABLE}
                # the store still answers what it can: the key works, nothing was half-made
                r = await client.get(
                    "/v1/validate", params={"email": "NULL"}, headers={"x-mails-api-key": secret}
                )
                assert r.status_code == 200
    finally:
        await store.close()
    assert "storage fault on POST /v1/batch" in caplog.text
    assert "private.test" not in caplog.text
    assert await _unfinished(path) == 0


async def _unfinished(path: Path) -> int:
    store = open_store(f"sqlite:///{path}")
    try:
        return len(await store.unfinished_batches())
    finally:
        await store.close()
