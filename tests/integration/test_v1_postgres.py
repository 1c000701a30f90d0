"""The batch reads of api/v1.py on PostgreSQL: pages, filtered download, list, delete."""

from __future__ import annotations

import httpx

from mailvet.api.app import create_app
from mailvet.storage import open_store
from mailvet.storage.base import Plan
from mailvet.testing.engine import FakeEngine
from mailvet.verdict import Reason, Result, Verdict

from ..api.kit import HookRecorder, fake_resolver, make_settings

SIZE = 2500


def _verdict(i: int) -> dict[str, object]:
    ok = i % 4 != 0
    return Verdict.make(
        email=f"u{i}@example.test",
        score=100 if ok else 5,
        result=Result.DELIVERABLE if ok else Result.UNDELIVERABLE,
        reason=Reason.ACCEPTED_EMAIL if ok else Reason.REJECTED_EMAIL,
    ).as_dict()


async def test_batch_reads_on_postgres(pg_fresh_url: str) -> None:
    store = open_store(pg_fresh_url)
    await store.migrate()
    try:
        key, secret = await store.create_key("pg", Plan.PAID)
        submitted = [f"u{i}@example.test" for i in range(SIZE)]
        record = await store.create_batch(key.id, "pg", submitted)
        await store.save_results(record.id, [(e, _verdict(i)) for i, e in enumerate(submitted)])
        await store.finish_batch(record.id)
        hooks = HookRecorder()
        app = create_app(
            make_settings(),
            store=store,
            engine=FakeEngine(),
            resolver=fake_resolver,
            webhook_transport=hooks.transport,
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://mailvet.test",
                headers={"x-mails-api-key": secret},
            ) as client:
                url: str | None = f"/v1/batch/{record.id}"
                emails: list[str] = []
                while url is not None:
                    page = (await client.get(url)).json()
                    assert page["counts"]["undeliverable"] == SIZE // 4
                    assert page["counts_by_reason"]["accepted_email"] == SIZE - SIZE // 4
                    emails.extend(e["email"] for e in page["emails"])
                    url = page["next"]
                assert emails == submitted
                r = await client.get(
                    f"/v1/batch/{record.id}/download",
                    params={"format": "jsonl", "result": "undeliverable"},
                )
                assert len(r.content.splitlines()) == SIZE // 4
                listed = (await client.get("/v1/batches")).json()["data"]
                assert [b["id"] for b in listed] == [record.id]
                r = await client.delete(f"/v1/batch/{record.id}")
                assert r.json()["status"] == "deleted"
                page = (await client.get(f"/v1/batch/{record.id}")).json()
                assert page["emails"] == []
    finally:
        await store.close()
