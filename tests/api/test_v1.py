"""The Mails.so-compatible routes: shapes, errors, auth, plan gate, key isolation."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import orjson
import pytest

from mailvet.api import v1, wire
from mailvet.api.app import create_app
from mailvet.settings import Settings
from mailvet.storage.base import ApiKey
from mailvet.storage.memory import MemoryStore
from mailvet.verdict import Verdict

from .kit import Api, FakeEngine, make_settings, running_api

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
BATCH_FIELDS = [
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


def error(body: dict[str, Any], message: str) -> None:
    assert body == {"data": None, "error": message}


# --- single validation ---


async def test_validate_get_envelope_and_field_order(api: Api) -> None:
    r = await api.client.get(
        "/v1/validate", params={"email": "ann@deliverable.test"}, headers=api.h()
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["data", "error"]
    assert body["error"] is None
    data = body["data"]
    assert list(data) == list(Verdict._fields)
    assert data["result"] == "deliverable"
    assert data["reason"] == "accepted_email"
    assert data["email"] == "ann@deliverable.test"
    uuid.UUID(data["id"])


async def test_validate_bearer_auth(api: Api) -> None:
    r = await api.client.get(
        "/v1/validate",
        params={"email": "ann@deliverable.test"},
        headers={"authorization": f"Bearer {api.paid}"},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-mails-api-key": "nope"},
        {"authorization": "Bearer nope"},
        {"authorization": "Basic x"},
    ],
)
async def test_validate_unauthorized(api: Api, headers: dict[str, str]) -> None:
    r = await api.client.get(
        "/v1/validate", params={"email": "a@deliverable.test"}, headers=headers
    )
    assert r.status_code == 401
    error(r.json(), "Unauthorized")


async def test_free_key_may_validate(api: Api) -> None:
    r = await api.client.get(
        "/v1/validate", params={"email": "a@deliverable.test"}, headers=api.h(api.free)
    )
    assert r.status_code == 200


async def test_validate_missing_email(api: Api) -> None:
    for r in (
        await api.client.get("/v1/validate", headers=api.h()),
        await api.client.post("/v1/validate", headers=api.h()),
        await api.client.post("/v1/validate", headers=api.h(), json={"mail": "a@b.test"}),
    ):
        assert r.status_code == 400
        error(r.json(), "The body provided has an invalid format.")


async def test_validate_post_query_and_body(api: Api) -> None:
    r = await api.client.post(
        "/v1/validate", params={"email": "a@deliverable.test"}, headers=api.h()
    )
    assert r.json()["data"]["result"] == "deliverable"
    r = await api.client.post("/v1/validate", json={"email": "b@rejecting.test"}, headers=api.h())
    assert r.status_code == 200
    assert r.json()["data"]["result"] == "undeliverable"


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'"a@b.test"',
        b'{"email": 5}',
        b'{"email": ["a@b.test"]}',
        b'{"email": "a@b.test", "email": "c@d.test"}',
        b'{"email": "a\\u0000@b.test"}',
        b'{"email": "\\ud800@b.test"}',
        b'{"email": "\xff\xfe@b.test"}',
        b"[" * 100_000,
        b'{"email": NaN}',
    ],
)
async def test_validate_post_bad_bodies(api: Api, body: bytes) -> None:
    r = await api.client.post(
        "/v1/validate", content=body, headers={**api.h(), "content-type": "application/json"}
    )
    assert r.status_code == 400
    error(r.json(), wire.BAD_FORMAT)


async def test_clevertap_null_is_invalid_format(api: Api) -> None:
    r = await api.client.get("/v1/validate", params={"email": "NULL"}, headers=api.h())
    assert r.status_code == 200
    data = r.json()["data"]
    assert (data["result"], data["reason"], data["score"]) == ("undeliverable", "invalid_format", 0)


async def test_validate_query_nul_broken_utf8_and_huge(api: Api) -> None:
    for query in ("email=a%00b%40c.test", "email=%ff%fe%40b.test", "email=" + "a" * 5000):
        r = await api.client.get(f"/v1/validate?{query}", headers=api.h())
        assert r.status_code == 400, query
        error(r.json(), wire.BAD_FORMAT)
    # a merely over-long address is an ordinary verdict
    r = await api.client.get("/v1/validate", params={"email": "a" * 300 + "@x"}, headers=api.h())
    assert r.status_code == 200
    assert r.json()["data"]["reason"] == "invalid_format"


async def test_flat_and_details(api: Api) -> None:
    params = {"email": "a@catchall.test", "flat": "1", "details": "1"}
    body = (await api.client.get("/v1/validate", params=params, headers=api.h())).json()
    assert list(body)[:2] == ["data", "error"]
    assert (body["result"], body["reason"], body["score"]) == ("risky", "catch_all", 80)
    details = body["details"]
    assert details["cached"] is False
    assert [e["kind"] for e in details["transcript"]] == ["dns", "connect", "recv"]
    assert details["timings"]["smtp_ms"] == 3.5
    assert "total_ms" in details["timings"]
    plain = (
        await api.client.get(
            "/v1/validate", params={"email": "a@catchall.test", "flat": "0"}, headers=api.h()
        )
    ).json()
    assert list(plain) == ["data", "error"]


async def test_result_cache(api: Api) -> None:
    first = (
        await api.client.get(
            "/v1/validate", params={"email": "c@deliverable.test"}, headers=api.h()
        )
    ).json()
    second = (
        await api.client.get(
            "/v1/validate",
            params={"email": "c@DELIVERABLE.test", "details": "1"},
            headers=api.h(),
        )
    ).json()
    assert api.engine.calls == ["c@deliverable.test"]
    assert second["details"]["cached"] is True
    assert first["data"]["id"] != second["data"]["id"]
    assert {k: v for k, v in first["data"].items() if k != "id"} == {
        k: v for k, v in second["data"].items() if k != "id"
    }


async def test_safety_net_answers_unknown_when_the_engine_ignores_its_deadline() -> None:
    # FakeEngine has no deadline of its own, so this exercises the API's outer safety
    # net (answer_within), not the engine's deadline (test_clevertap.py covers that)
    async with running_api(make_settings(deadline=0.2)) as api:
        r = await api.client.get(
            "/v1/validate", params={"email": "x@stall.test", "details": "1"}, headers=api.h()
        )
    assert r.status_code == 200
    body = r.json()
    data = body["data"]
    assert data["result"] == "unknown"
    assert data["reason"] == "timeout"
    assert set(data) == set(Verdict._fields)
    assert body["details"]["deadline_hit"] is True


def test_answer_within_stays_inside_clevertaps_five_seconds() -> None:
    assert make_settings().deadline == 1.0
    assert v1.answer_within(Settings().deadline) == 4.8  # the default deadline, 4.5 s
    assert v1.answer_within(1.0) == pytest.approx(1.3)
    assert v1.answer_within(4.7) == 4.8
    assert v1.answer_within(10.0) == pytest.approx(10.3)  # a deliberate longer deadline


class StallingStore(MemoryStore):
    """Key look-ups hang (a locked SQLite file, an overloaded database)."""

    async def authenticate(self, secret: str) -> ApiKey | None:
        await asyncio.sleep(3600)
        return None


async def test_a_stalled_key_lookup_is_inside_the_time_budget() -> None:
    app = create_app(make_settings(deadline=0.1), store=StallingStore(), engine=FakeEngine())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailvet.test") as client:
            r = await asyncio.wait_for(
                client.get(
                    "/v1/validate",
                    params={"email": "a@deliverable.test"},
                    headers={"x-mails-api-key": "mv_whatever"},
                ),
                30,  # a hang guard, not a timing assertion
            )
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    error(r.json(), wire.TOO_SLOW)


async def test_result_cache_keys_on_the_normalised_address_never_trimmed(api: Api) -> None:
    async def result(email: str) -> str:
        r = await api.client.get("/v1/validate", params={"email": email}, headers=api.h())
        assert r.status_code == 200
        return str(r.json()["data"]["reason"])

    assert await result("c@deliverable.test ") == "invalid_format"
    assert await result(" c@deliverable.test") == "invalid_format"
    assert await result("c@deliverable.test") == "accepted_email"
    assert await result("c@DELIVERABLE.test") == "accepted_email"  # same normalised address
    # once the valid address is cached, the malformed ones still get their own verdict
    assert await result("c@deliverable.test ") == "invalid_format"
    assert await result(" c@deliverable.test") == "invalid_format"
    assert await result("\tc@deliverable.test") == "invalid_format"
    assert api.engine.calls.count("c@deliverable.test") == 1


async def test_unknown_route_and_method_are_enveloped(api: Api) -> None:
    r = await api.client.get("/v2/nothing", headers=api.h())
    assert r.status_code == 404
    assert r.json()["data"] is None
    r = await api.client.delete("/v1/validate", headers=api.h())
    assert r.status_code == 405
    assert r.json()["data"] is None


# --- batches ---


async def test_batch_requires_key_and_paid_plan(api: Api) -> None:
    for method, path in (
        ("POST", "/v1/batch"),
        ("GET", f"/v1/batch/{uuid.uuid4()}"),
        ("GET", f"/v1/batch/{uuid.uuid4()}/download"),
    ):
        r = await api.client.request(method, path, json={"emails": ["a@b.test"]})
        assert r.status_code == 401
        error(r.json(), "Unauthorized.")
        r = await api.client.request(
            method, path, json={"emails": ["a@b.test"]}, headers=api.h("bad")
        )
        error(r.json(), "Unauthorized.")
        r = await api.client.request(
            method, path, json={"emails": ["a@b.test"]}, headers=api.h(api.free)
        )
        assert r.status_code == 401
        error(r.json(), "Paid subscription required to use list validations")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"{}",
        b'{"emails": []}',
        b'{"emails": "a@b.test"}',
        b'{"emails": ["a@b.test", 5]}',
        b'{"emails": ["a@b.test", null]}',
        b'{"emails": [["a@b.test"]]}',
        b'{"emails": ["a\\u0000@b.test"]}',
        b'{"emails": ["\\udfff@b.test"]}',
        b'{"emails": ["a@b.test"], "name": 5}',
        b'{"emails": ["a@b.test"], "emails": ["c@d.test"]}',
        b'{"emails": ["\xc3\x28@b.test"]}',
        b'{"emails": ["' + b"a" * 2000 + b'"]}',
        b'{"emails": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    ],
)
async def test_batch_bad_bodies(api: Api, body: bytes) -> None:
    r = await api.client.post(
        "/v1/batch", content=body, headers={**api.h(), "content-type": "application/json"}
    )
    assert r.status_code == 400
    error(r.json(), wire.BAD_FORMAT)


async def test_batch_size_limit() -> None:
    async with running_api(make_settings(max_batch_size=1000)) as api:
        emails = [f"u{i}@deliverable.test" for i in range(1000)]
        r = await api.client.post("/v1/batch", json={"emails": emails}, headers=api.h())
        assert r.status_code == 200
        assert r.json()["size"] == 1000
        r = await api.client.post(
            "/v1/batch", json={"emails": [*emails, "x@y.test"]}, headers=api.h()
        )
        assert r.status_code == 400
        error(r.json(), "Too many emails: a batch holds at most 1000.")


async def wait_finished(api: Api, batch_id: str, secret: str | None = None) -> dict[str, Any]:
    for _ in range(500):
        r = await api.client.get(f"/v1/batch/{batch_id}", headers=api.h(secret))
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        if body["finished_at"] is not None:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("batch did not finish")


async def test_batch_lifecycle(api: Api) -> None:
    emails = ["a@deliverable.test", "NULL", "b@rejecting.test", "c@catchall.test", "d@else.test"]
    r = await api.client.post("/v1/batch", json={"emails": emails, "name": "list"}, headers=api.h())
    assert r.status_code == 200
    created = r.json()
    assert list(created)[: len(BATCH_FIELDS)] == BATCH_FIELDS
    assert created["name"] == "list"
    assert created["size"] == 5
    assert created["user"] == "paid"
    assert created["finished_at"] is None
    assert created["deleted_at"] is None
    assert RFC3339_Z.match(created["created_at"])
    assert "emails" not in created

    done = await wait_finished(api, created["id"])
    assert RFC3339_Z.match(done["finished_at"])
    assert done["done"] == 5
    assert [e["email"] for e in done["emails"]] == [
        "a@deliverable.test",
        "NULL",
        "b@rejecting.test",
        "c@catchall.test",
        "d@else.test",
    ]
    assert [e["result"] for e in done["emails"]] == [
        "deliverable",
        "undeliverable",
        "undeliverable",
        "risky",
        "unknown",
    ]
    assert all(list(e) == list(Verdict._fields) for e in done["emails"])
    assert done["counts"] == {"deliverable": 1, "undeliverable": 2, "risky": 1, "unknown": 1}


async def test_batch_in_progress_lists_only_done_entries(api: Api) -> None:
    api.engine.gate = asyncio.Event()
    r = await api.client.post("/v1/batch", json={"emails": ["a@deliverable.test"]}, headers=api.h())
    batch_id = r.json()["id"]
    body = (await api.client.get(f"/v1/batch/{batch_id}", headers=api.h())).json()
    assert body["finished_at"] is None
    assert body["emails"] == []
    assert body["done"] == 0
    api.engine.gate.set()
    assert (await wait_finished(api, batch_id))["done"] == 1


async def test_batch_key_isolation_and_unknown_ids(api: Api) -> None:
    r = await api.client.post("/v1/batch", json={"emails": ["a@deliverable.test"]}, headers=api.h())
    batch_id = r.json()["id"]
    for path in (f"/v1/batch/{batch_id}", f"/v1/batch/{batch_id}/download"):
        r = await api.client.get(path, headers=api.h(api.other))
        assert r.status_code == 404
        error(r.json(), "Not found.")
    for bad in (str(uuid.uuid4()), "not-a-uuid", "1", "%00", "%ff"):
        r = await api.client.get(f"/v1/batch/{bad}", headers=api.h())
        assert r.status_code == 404
        error(r.json(), "Not found.")


async def test_batch_download(api: Api) -> None:
    emails = ["a@deliverable.test", "b@rejecting.test"]
    batch_id = (
        await api.client.post("/v1/batch", json={"emails": emails}, headers=api.h())
    ).json()["id"]
    await wait_finished(api, batch_id)
    r = await api.client.get(f"/v1/batch/{batch_id}/download", headers=api.h())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0].startswith("position,input,id,email")
    assert lines[1].startswith("0,a@deliverable.test,")
    assert ",deliverable,accepted_email" in lines[1]
    r = await api.client.get(
        f"/v1/batch/{batch_id}/download", params={"format": "jsonl"}, headers=api.h()
    )
    rows = [orjson.loads(line) for line in r.content.splitlines()]
    assert [row["input"] for row in rows] == emails
    assert rows[1]["data"]["result"] == "undeliverable"
    r = await api.client.get(
        f"/v1/batch/{batch_id}/download", params={"format": "xml"}, headers=api.h()
    )
    assert r.status_code == 400
    error(r.json(), wire.BAD_FORMAT)


async def test_batch_runs_with_bounded_concurrency() -> None:
    engine = FakeEngine(delay=0.01)
    async with running_api(make_settings(batch_concurrency=3), engine) as api:
        emails = [f"u{i}@deliverable.test" for i in range(20)]
        r = await api.client.post("/v1/batch", json={"emails": emails}, headers=api.h())
        body = await wait_finished(api, r.json()["id"])
    assert body["counts"]["deliverable"] == 20
    assert sorted(engine.calls) == sorted(emails)
    assert engine.max_in_flight == 3


async def test_the_api_applies_the_storage_text_rule(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one rule for "text a store can hold": the API calls storage.common.check_text
    def strict(value: str, what: str) -> str:
        if "forbidden" in value:
            raise ValueError(what)
        return value

    monkeypatch.setattr(v1, "check_text", strict)
    r = await api.client.get("/v1/validate", params={"email": "forbidden@x.test"}, headers=api.h())
    assert r.status_code == 400
    r = await api.client.post("/v1/batch", json={"emails": ["forbidden@x.test"]}, headers=api.h())
    assert r.status_code == 400
