"""The Mails.so-compatible routes: shapes, errors, auth, plan gate, key isolation."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from mailvet.api import v1, wire
from mailvet.api.app import create_app
from mailvet.engine import Checked
from mailvet.settings import Settings
from mailvet.storage.base import ApiKey, Plan
from mailvet.storage.memory import MemoryStore
from mailvet.testing.dns import DnsServer, Zone
from mailvet.testing.smtp import SmtpSim, mailboxes, tarpit
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


def test_answer_within_leaves_clevertap_a_second_for_the_network() -> None:
    assert make_settings().deadline == 1.0
    assert v1.ANSWER_CAP <= v1.ANSWER_BOUND - 0.5 and v1.ANSWER_BOUND == 4.0
    assert v1.answer_within(Settings().deadline) == pytest.approx(3.3)  # default 3.0 s
    assert v1.answer_within(1.0) == pytest.approx(1.3)
    assert v1.answer_within(3.4) == v1.ANSWER_CAP
    assert v1.answer_within(10.0) == pytest.approx(10.3)  # a deliberate longer deadline


def test_default_timeouts_fit_inside_the_default_deadline() -> None:
    s = Settings()
    assert v1.answer_within(s.deadline) <= v1.ANSWER_CAP
    assert 3 * s.dns_timeout <= s.deadline  # a whole DNS lookup ends as `timeout` in time
    assert s.smtp_connect_timeout <= s.deadline / 2  # a dead first MX leaves time for the next
    assert s.smtp_command_timeout < s.deadline  # a stalling reply ends as `timeout`


async def test_the_safety_net_at_default_settings_answers_within_four_seconds() -> None:
    # an engine that ignores its deadline: the outer safety net alone bounds the answer
    async with running_api(make_settings(deadline=Settings().deadline)) as api:
        started = asyncio.get_running_loop().time()
        r = await api.client.get("/v1/validate", params={"email": "x@stall.test"}, headers=api.h())
        elapsed = asyncio.get_running_loop().time() - started
    assert r.status_code == 200
    assert r.json()["data"]["reason"] == "timeout"
    assert elapsed < 4.0


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


# --- what the result cache keeps, and whose evidence it shows ---


async def test_an_unknown_the_safety_net_gave_is_not_cached_but_a_concluded_one_is() -> None:
    async with running_api(make_settings(deadline=0.2)) as api:
        for _ in range(2):
            r = await api.client.get(
                "/v1/validate", params={"email": "x@stall.test"}, headers=api.h()
            )
            assert r.json()["data"]["reason"] == "timeout"
        assert api.engine.calls == ["x@stall.test"] * 2  # probed again
        for _ in range(2):  # unknown / no_connect is the server's doing: cached briefly
            r = await api.client.get(
                "/v1/validate", params={"email": "x@else.test"}, headers=api.h()
            )
            assert r.json()["data"]["result"] == "unknown"
        assert api.engine.calls.count("x@else.test") == 1


async def test_another_key_gets_the_cached_verdict_without_the_evidence(api: Api) -> None:
    async def ask(secret: str) -> dict[str, Any]:
        r = await api.client.get(
            "/v1/validate",
            params={"email": "ann@catchall.test", "details": "1"},
            headers=api.h(secret),
        )
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body

    paid = await ask(api.paid)
    assert paid["details"]["cached"] is False and paid["details"]["transcript"]
    other = await ask(api.other)
    assert api.engine.calls == ["ann@catchall.test"]  # the verdict was reused ...
    verdict = {k: v for k, v in paid["data"].items() if k != "id"}
    assert {k: v for k, v in other["data"].items() if k != "id"} == verdict
    details = other["details"]  # ... but not key A's transcript and timings
    assert details["cached"] is True
    assert details["transcript"] == [] and details["smtp"] is None
    assert set(details["timings"]) == {"total_ms"}
    again = await ask(api.paid)  # the key that paid for the probe still sees its evidence
    assert again["details"]["cached"] is True
    assert again["details"]["transcript"] == paid["details"]["transcript"]
    assert again["details"]["timings"]["smtp_ms"] == paid["details"]["timings"]["smtp_ms"]


async def test_a_shared_probe_shows_its_evidence_to_its_own_key_only(api: Api) -> None:
    api.engine.gate = asyncio.Event()

    async def ask(secret: str) -> dict[str, Any]:
        r = await api.client.get(
            "/v1/validate",
            params={"email": "bo@deliverable.test", "details": "1"},
            headers=api.h(secret),
        )
        body: dict[str, Any] = r.json()
        return body

    first = asyncio.create_task(ask(api.paid))
    while not api.engine.calls:  # the probe is running
        await asyncio.sleep(0.01)
    second = asyncio.create_task(ask(api.other))
    await asyncio.sleep(0.05)
    api.engine.gate.set()
    paid, other = await first, await second
    assert api.engine.calls == ["bo@deliverable.test"]
    assert paid["details"]["cached"] is False and paid["details"]["transcript"]
    assert other["details"]["cached"] is True and other["details"]["transcript"] == []
    assert paid["data"]["id"] != other["data"]["id"]


# --- single flight, with the real engine on the simulated internet ---

ZONE: dict[str, dict[str, list[Any]]] = {
    "shop.test": {"MX": [(10, "mx.shop.test")]},
    "mx.shop.test": {"A": ["127.0.0.1"]},
    "slow.test": {"MX": [(10, "mx.slow.test")]},
    "mx.slow.test": {"A": ["127.0.0.2"]},
}


@dataclass
class RealApi:
    client: httpx.AsyncClient
    sim: SmtpSim
    key: str

    async def validate(self, email: str) -> httpx.Response:
        return await self.client.get(
            "/v1/validate", params={"email": email}, headers={"x-mails-api-key": self.key}
        )

    def rcpts(self) -> int:
        return sum(s.count("RCPT") for s in self.sim.sessions)


class SlowKeyStore(MemoryStore):
    """The first look-up of a key takes its time (the API caches it afterwards)."""

    async def authenticate(self, secret: str) -> ApiKey | None:
        await asyncio.sleep(0.5)
        return await super().authenticate(secret)


@asynccontextmanager
async def real_api(store: MemoryStore | None = None, **overrides: Any) -> AsyncIterator[RealApi]:
    """The app with its own engine: ``shop.test`` answers after 0.1 s a reply, the MX of
    ``slow.test`` is a tarpit."""
    sim = SmtpSim(mailboxes("alice").with_options(latency_ms=100), by_ip={"127.0.0.2": tarpit()})
    async with DnsServer(Zone(ZONE)) as dns, sim:
        settings = Settings(
            **{
                "dns_nameservers": [dns.nameserver],
                "smtp_port": sim.port,
                "allow_private_mx": True,
                "database_url": "memory://",
                "deadline": 4.0,  # generous: the deadline is not under test here
                **overrides,
            }
        )
        store = store or MemoryStore()
        _, key = await store.create_key("k", Plan.PAID)
        app = create_app(settings, store=store)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://mailvet.test"
            ) as client:
                yield RealApi(client, sim, key)


async def test_identical_concurrent_requests_share_one_probe() -> None:
    async with real_api() as api:
        spellings = ["alice@shop.test", "alice@SHOP.test", "alice@Shop.Test"] * 4
        responses = await asyncio.gather(*(api.validate(e) for e in spellings))
        assert len(api.sim.sessions) == 1  # one SMTP session for twelve requests
        assert api.rcpts() == 2  # the address and the catch-all probe, once
        bodies = [r.json() for r in responses]
        assert {b["data"]["result"] for b in bodies} == {"deliverable"}
        assert len({b["data"]["id"] for b in bodies}) == len(spellings)
        await api.validate("alice@shop.test")  # cached by now
        assert len(api.sim.sessions) == 1


async def test_a_client_going_away_leaves_the_shared_probe_to_the_others() -> None:
    async with real_api() as api:
        leader = asyncio.create_task(api.validate("alice@shop.test"))
        while not api.sim.sessions:  # the leader's probe has reached the mail server
            await asyncio.sleep(0.01)
        followers = [asyncio.create_task(api.validate("alice@shop.test")) for _ in range(3)]
        await asyncio.sleep(0.05)
        leader.cancel()
        responses = await asyncio.gather(*followers)
        assert [r.json()["data"]["result"] for r in responses] == ["deliverable"] * 3
        assert leader.cancelled()
        assert len(api.sim.sessions) == 1


class BrokenEngine(FakeEngine):
    """Its first verification fails with a bug, after the gate opens."""

    async def verify(
        self, raw: str, *, offline: bool = False, deadline: float | None = None
    ) -> Checked:
        checked = await super().verify(raw, offline=offline, deadline=deadline)
        if len(self.calls) == 1:
            raise RuntimeError("engine bug")
        return checked


async def test_an_error_in_a_shared_probe_reaches_every_request_and_is_not_kept() -> None:
    engine = BrokenEngine()
    engine.gate = asyncio.Event()
    async with running_api(engine=engine) as api:
        transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailvet.test") as c:

            async def ask() -> httpx.Response:
                return await c.get(
                    "/v1/validate", params={"email": "a@deliverable.test"}, headers=api.h()
                )

            tasks = [asyncio.create_task(ask()) for _ in range(3)]
            while not engine.calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            engine.gate.set()
            responses = await asyncio.gather(*tasks)
            assert [r.status_code for r in responses] == [500] * 3
            assert engine.calls == ["a@deliverable.test"]  # one probe, one error for all
            r = await ask()  # the failed probe is forgotten: the next request probes again
            assert r.status_code == 200 and r.json()["data"]["result"] == "deliverable"
            assert len(engine.calls) == 2


@pytest.mark.parametrize("slow_key", [False, True])
async def test_an_unknown_cut_by_our_deadline_is_probed_again(slow_key: bool) -> None:
    # the tarpit would answer one byte a second; our own deadline ends the check (a
    # slow key look-up leaves the engine less of it). The next request may conclude.
    store = SlowKeyStore() if slow_key else None
    async with real_api(store, deadline=1.0, smtp_command_timeout=30.0) as api:
        for _ in range(2):
            r = await api.validate("anyone@slow.test")
            data = r.json()["data"]
            assert (data["result"], data["reason"]) == ("unknown", "timeout")
        assert len(api.sim.sessions) == 2
