"""The dashboard's sign-in, session cookie, CSRF checks, admin-only keys pages, and the
escaping of what servers say, through the ASGI app (no browser)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, date, datetime

import httpx
import pytest

from mailvet.api.usage import flush
from mailvet.dashboard import auth
from mailvet.engine.facts import SmtpFacts, SmtpOutcome, TranscriptEntry
from mailvet.engine.protocol import Checked
from mailvet.storage.base import Plan
from mailvet.storage.memory import MemoryStore
from mailvet.testing.engine import FakeEngine
from mailvet.verdict import Reason, Result

from .kit import Api, make_settings, running_api

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, secret: str, next_path: str = "/") -> httpx.Response:
    page = await client.get("/signin", params={"next": next_path})
    assert page.status_code == 200
    return await client.post(
        "/signin", data={"csrf": csrf_of(page.text), "key": secret, "next": next_path}
    )


async def session_csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/check")
    assert page.status_code == 200
    return csrf_of(page.text)


@pytest.fixture
async def admin(api: Api) -> str:
    _, secret = await api.store.create_key("ops", Plan.PAID, admin=True)
    return secret


async def test_pages_send_a_visitor_without_a_session_to_sign_in(api: Api) -> None:
    for path, target in [
        ("/", "/signin"),
        ("/check", "/signin?next=/check"),
        ("/keys", "/signin?next=/keys"),
    ]:
        r = await api.client.get(path)
        assert (r.status_code, r.headers["location"]) == (303, target), path
    r = await api.client.post("/check", data={"email": "a@deliverable.test"})
    assert (r.status_code, r.headers["location"]) == (303, "/signin")
    assert api.engine.calls == []


async def test_the_usual_dashboard_addresses_lead_to_it(api: Api) -> None:
    for path in ("/dashboard", "/ui"):
        r = await api.client.get(path)
        assert (r.status_code, r.headers["location"]) == (308, "/"), path


async def test_sign_in_sets_a_signed_session_cookie_not_the_key(api: Api) -> None:
    r = await sign_in(api.client, api.paid, "/check")
    assert (r.status_code, r.headers["location"]) == (303, "/check")
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("mailvet_session="))
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert api.paid not in cookie and api.paid[3:20] not in value
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # served over http here
    page = await api.client.get("/")
    assert page.status_code == 200 and "Sign out" in page.text and "paid" in page.text


async def test_the_cookie_is_secure_over_https() -> None:
    async with running_api() as api:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://mailvet.test") as c:
            r = await sign_in(c, api.paid)
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("mailvet_session="))
    assert "; secure" in cookie.lower()


async def test_a_bad_key_and_a_revoked_key_get_their_own_messages(api: Api) -> None:
    r = await sign_in(api.client, "mv_not-a-key")
    assert r.status_code == 401 and "This API key is not valid" in r.text
    assert "mailvet_session" not in r.headers.get("set-cookie", "")
    assert await api.store.revoke_key(next(k.id for k in await api.store.list_keys()))
    r = await sign_in(api.client, api.paid)  # the first key is "paid"
    assert r.status_code == 401 and "This API key has been revoked" in r.text
    r = await sign_in(api.client, "   ")
    assert r.status_code == 400 and "Enter your API key" in r.text
    assert (await api.client.get("/")).status_code == 303


async def test_the_sign_in_form_needs_its_own_token(api: Api) -> None:
    r = await api.client.post("/signin", data={"key": api.paid})
    assert r.status_code == 403 and "This form has expired" in r.text
    await api.client.get("/signin")  # sets the sign-in cookie
    r = await api.client.post("/signin", data={"key": api.paid, "csrf": "guess"})
    assert r.status_code == 403
    assert "mailvet_session" not in r.headers.get("set-cookie", "")


async def test_every_form_needs_the_sessions_csrf_token(api: Api, admin: str) -> None:
    await sign_in(api.client, admin)
    token = await session_csrf(api.client)
    posts: list[tuple[str, dict[str, str]]] = [
        ("/check", {"email": "a@deliverable.test"}),
        ("/keys", {"name": "x", "plan": "paid"}),
        ("/signout", {}),
    ]
    for path, data in posts:
        assert (await api.client.post(path, data=data)).status_code == 403, path
        bad = {**data, "csrf": token[:-1] + ("0" if token[-1] != "0" else "1")}
        assert (await api.client.post(path, data=bad)).status_code == 403, path
    assert api.engine.calls == [] and len(await api.store.list_keys()) == 4

    # another session's token is refused too (tokens are per session)
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mailvet.test") as other:
        await sign_in(other, admin)
        theirs = await session_csrf(other)
    assert theirs != token
    r = await api.client.post("/check", data={"email": "a@deliverable.test", "csrf": theirs})
    assert r.status_code == 403
    r = await api.client.post("/check", data={"email": "a@deliverable.test", "csrf": token})
    assert r.status_code == 200 and api.engine.calls == ["a@deliverable.test"]


async def test_forged_expired_or_revoked_sessions_are_refused(api: Api) -> None:
    await sign_in(api.client, api.paid)
    good = api.client.cookies["mailvet_session"]
    key_id, expires, nonce, mac = good.split(".")
    forged = [
        f"{key_id}.{expires}.{nonce}.{'0' * len(mac)}",
        f"{key_id}.{int(expires) + 3600}.{nonce}.{mac}",  # a longer life is not signed
        f"{key_id}.{expires}.{nonce}",
        "x" * 300,
        f"{(await api.store.list_keys())[1].id}.{expires}.{nonce}.{mac}",  # another key
    ]
    for value in forged:
        api.client.cookies.set("mailvet_session", value)
        assert (await api.client.get("/")).status_code == 303, value
    key_hash = await api.store.key_hash(key_id)
    assert key_hash is not None
    api.client.cookies.set(
        "mailvet_session", auth.session_token(key_id, key_hash, now=time.time() - 13 * 3600)
    )
    assert (await api.client.get("/")).status_code == 303  # expired
    api.client.cookies.set("mailvet_session", good)
    assert (await api.client.get("/")).status_code == 200
    assert await api.store.revoke_key(key_id)
    assert (await api.client.get("/")).status_code == 303  # revoking ends the session


async def test_with_a_session_secret_the_database_alone_cannot_sign_a_session() -> None:
    settings = make_settings(session_secret="a server secret no database holds")
    async with running_api(settings) as api:
        await sign_in(api.client, api.paid)
        good = api.client.cookies["mailvet_session"]
        key_id = good.split(".")[0]
        key_hash = await api.store.key_hash(key_id)
        assert key_hash is not None
        # what someone with a copy of the database (the keys' hashes) could make
        api.client.cookies.set("mailvet_session", auth.session_token(key_id, key_hash))
        assert (await api.client.get("/")).status_code == 303
        api.client.cookies.set("mailvet_session", good)
        assert (await api.client.get("/")).status_code == 200
    # another server secret (or none) does not take this server's sessions
    async with running_api(make_settings(session_secret="another")) as other:
        key_hash = await other.store.key_hash((await other.store.list_keys())[0].id)
        assert key_hash is not None
        token = auth.session_token(
            (await other.store.list_keys())[0].id, key_hash, secret="a server secret"
        )
        other.client.cookies.set("mailvet_session", token)
        assert (await other.client.get("/")).status_code == 303


async def test_sign_out_clears_the_session(api: Api) -> None:
    await sign_in(api.client, api.paid)
    token = await session_csrf(api.client)
    r = await api.client.post("/signout", data={"csrf": token})
    assert (r.status_code, r.headers["location"]) == (303, "/signin?signed_out=1")
    assert "mailvet_session=" in r.headers["set-cookie"] and "max-age=0" in (
        r.headers["set-cookie"].lower()
    )
    assert (await api.client.get("/")).status_code == 303
    assert "You are signed out" in (await api.client.get("/signin?signed_out=1")).text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/check", "/check"),
        ("/keys?x=1", "/keys?x=1"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/a\r\nSet-Cookie: x=1", "/"),
        (None, "/"),
    ],
)
def test_safe_next_keeps_users_on_this_site(value: str | None, expected: str) -> None:
    assert auth.safe_next(value) == expected


async def test_sign_in_never_redirects_off_site(api: Api) -> None:
    r = await sign_in(api.client, api.paid, "//evil.example/")
    assert (r.status_code, r.headers["location"]) == (303, "/")


async def test_keys_pages_are_for_admin_keys_only(api: Api, admin: str) -> None:
    await sign_in(api.client, api.paid)
    r = await api.client.get("/keys")
    assert r.status_code == 403 and "Admin keys only" in r.text
    assert "Sign out" in r.text  # still signed in: the page keeps its navigation
    assert 'href="/keys"' not in (await api.client.get("/")).text  # not in the nav either
    token = await session_csrf(api.client)
    r = await api.client.post("/keys", data={"name": "x", "plan": "paid", "csrf": token})
    assert r.status_code == 403 and len(await api.store.list_keys()) == 4


async def test_an_admin_creates_a_key_sees_its_secret_once_and_revokes_it(
    api: Api, admin: str
) -> None:
    await sign_in(api.client, admin)
    token = await session_csrf(api.client)
    r = await api.client.post("/keys", data={"name": "CRM <sync>", "plan": "free", "csrf": token})
    assert r.status_code == 200
    secret = re.search(r'value="(mv_[^"]+)"', r.text)
    assert secret is not None
    created = next(k for k in await api.store.list_keys() if k.name == "CRM <sync>")
    assert created.plan is Plan.FREE and not created.admin
    assert "CRM &lt;sync&gt;" in r.text and "CRM <sync>" not in r.text
    assert secret.group(1) not in (await api.client.get("/keys")).text  # shown once
    h = {"x-mails-api-key": secret.group(1)}
    ok = await api.client.get("/v1/validate", params={"email": "a@deliverable.test"}, headers=h)
    assert ok.status_code == 200

    r = await api.client.post(f"/keys/{created.id}/revoke", data={"csrf": token})
    assert (r.status_code, r.headers["location"]) == (303, f"/keys?revoked={created.id}")
    assert "is revoked" in (await api.client.get(r.headers["location"])).text
    refused = await api.client.get(
        "/v1/validate", params={"email": "a@deliverable.test"}, headers=h
    )
    assert refused.status_code == 401  # at once: the API's key cache was cleared

    bad = await api.client.post("/keys", data={"name": " ", "plan": "paid", "csrf": token})
    assert bad.status_code == 400 and "Give the key a name" in bad.text
    bad = await api.client.post("/keys", data={"name": "x", "plan": "gold", "csrf": token})
    assert bad.status_code == 400
    own = next(k for k in await api.store.list_keys() if k.name == "ops")
    r = await api.client.post(f"/keys/{own.id}/revoke", data={"csrf": token})
    assert r.status_code == 400 and "signed in with" in r.text
    assert (await api.store.get_key(own.id)) is not None


class HostileEngine(FakeEngine):
    """An engine whose mail server answers with markup in its reply."""

    async def verify(
        self, raw: str, *, offline: bool = False, deadline: float | None = None
    ) -> Checked:
        checked = await super().verify(raw, offline=offline, deadline=deadline)
        evil = "550 5.1.1 <script>alert(1)</script><img src=x onerror=alert(2)> no such user"
        facts = checked.facts
        facts.transcript = [
            TranscriptEntry(1.0, "dns", "MX evil.test: 10 <b>mx</b>.evil.test (ttl 60)"),
            TranscriptEntry(2.0, "connect", "127.0.0.1:25", "mx.evil.test"),
            TranscriptEntry(3.0, "recv", '220 "><script>alert(3)</script>', "mx.evil.test"),
            TranscriptEntry(4.0, "send", "RCPT TO:<a@evil.test>", "mx.evil.test"),
            TranscriptEntry(5.0, "recv", evil, "mx.evil.test"),
        ]
        facts.smtp = SmtpFacts(SmtpOutcome.USER_UNKNOWN, "mx.evil.test", 550, "5.1.1", evil[10:])
        verdict = checked.verdict._replace(
            result=Result.UNDELIVERABLE, reason=Reason.REJECTED_EMAIL
        )
        return Checked(verdict, facts)


async def test_what_a_hostile_server_says_is_shown_as_text_never_markup() -> None:
    async with running_api(engine=HostileEngine()) as api:
        await sign_in(api.client, api.paid)
        token = await session_csrf(api.client)
        r = await api.client.post("/check", data={"email": "a@evil.test", "csrf": token})
    assert r.status_code == 200
    html = r.text
    assert "<script>" not in html and "<img" not in html and "<b>mx" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "The server said the mailbox does not exist." in html
    assert r.headers["content-security-policy"].startswith("default-src 'none'")


async def test_usage_counts_api_and_dashboard_verdicts_per_key(api: Api) -> None:
    params = {"email": "a@deliverable.test"}
    for _ in range(2):
        assert (await api.client.get("/v1/validate", params=params, headers=api.h())).is_success
    await sign_in(api.client, api.paid)
    token = await session_csrf(api.client)
    await api.client.post("/check", data={"email": "b@rejecting.test", "csrf": token})
    svc = api.app.state.service
    await flush(svc.usage, api.store)
    paid = next(k for k in await api.store.list_keys() if k.name == "paid")
    today = datetime.now(UTC).date()
    rows = await api.store.usage(since=today, key_id=paid.id)
    assert {r.result: r.count for r in rows} == {"deliverable": 2, "undeliverable": 1}
    page = await api.client.get("/")
    assert 'aria-labelledby="usage-own-title usage-own-desc"' in page.text
    assert "3 verdicts" in page.text


async def test_a_dashboard_check_shows_in_the_metrics(api: Api) -> None:
    # it is a probe as the API's are: operators watching /metrics see it too
    await sign_in(api.client, api.paid)
    token = await session_csrf(api.client)
    await api.client.post("/check", data={"email": "b@rejecting.test", "csrf": token})
    text = (await api.client.get("/metrics")).text
    line = next(
        (
            x
            for x in text.splitlines()
            if x.startswith("mailvet_verdicts_total{") and "dashboard" in x
        ),
        "",
    )
    assert 'result="undeliverable"' in line and line.endswith(" 1.0"), text


async def test_the_last_counts_are_written_when_the_app_stops() -> None:
    store = MemoryStore()
    async with running_api(store=store) as api:
        api.app.state.service.record_usage("k1", "risky")
        assert await store.usage(since=date(2000, 1, 1)) == []  # not yet: in memory
    rows = await store.usage(since=date(2000, 1, 1))
    assert [(r.key_id, r.result, r.count) for r in rows] == [("k1", "risky", 1)]


async def test_an_admin_changes_a_keys_plan_and_the_api_follows(api: Api, admin: str) -> None:
    free = next(k for k in await api.store.list_keys() if k.name == "free")
    batch = {"emails": ["a@deliverable.test"]}
    h = api.h(api.free)
    assert (await api.client.post("/v1/batch", json=batch, headers=h)).status_code == 401
    await sign_in(api.client, admin)
    page = await api.client.get(f"/keys/{free.id}")
    assert page.status_code == 200 and "Change plan" in page.text
    token = csrf_of(page.text)
    r = await api.client.post(f"/keys/{free.id}/plan", data={"plan": "paid", "csrf": token})
    assert (r.status_code, r.headers["location"]) == (303, f"/keys/{free.id}?plan=changed")
    assert "The plan is now paid" in (await api.client.get(r.headers["location"])).text
    assert (await api.client.post("/v1/batch", json=batch, headers=h)).status_code == 200
    r = await api.client.post(f"/keys/{free.id}/plan", data={"plan": "gold", "csrf": token})
    assert r.status_code == 400
    assert (
        await api.client.post(f"/keys/{free.id}/plan", data={"plan": "free"})
    ).status_code == 403
    await api.store.revoke_key(free.id)
    r = await api.client.post(f"/keys/{free.id}/plan", data={"plan": "free", "csrf": token})
    assert r.status_code == 400 and "live key" in r.text
    assert (await api.client.get("/keys/no-such-key")).status_code == 404


async def test_batch_verdicts_count_as_the_owners_usage(api: Api) -> None:
    emails = ["a@deliverable.test", "A@deliverable.test", "b@rejecting.test", "c@elsewhere.test"]
    r = await api.client.post("/v1/batch", json={"emails": emails}, headers=api.h())
    assert r.status_code == 200
    batch_id = r.json()["id"]
    for _ in range(500):
        got = await api.client.get(f"/v1/batch/{batch_id}", headers=api.h())
        if got.json()["finished_at"] is not None:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("batch did not finish")
    paid = next(k for k in await api.store.list_keys() if k.name == "paid")
    rows = await api.store.usage(since=datetime.now(UTC).date(), key_id=paid.id)
    # every position counts (the duplicate too), checked once
    assert {r.result: r.count for r in rows} == {
        "deliverable": 2,
        "undeliverable": 1,
        "unknown": 1,
    }


async def test_sign_in_attempts_are_limited_per_client_address(api: Api) -> None:
    from mailvet.api.deps import SIGNIN_ATTEMPTS_PER_MINUTE

    fine = []
    for _ in range(SIGNIN_ATTEMPTS_PER_MINUTE + 5):
        api.client.cookies.clear()
        fine.append((await sign_in(api.client, api.paid)).status_code)
    assert set(fine) == {303}  # signing in successfully is not counted: only failures are
    api.client.cookies.clear()
    answers = [
        (await sign_in(api.client, f"mv_wrong_{n}")).status_code
        for n in range(SIGNIN_ATTEMPTS_PER_MINUTE)
    ]
    assert set(answers) == {401}  # each guess read and refused
    refused = await sign_in(api.client, api.paid)  # even the right key, until the wait ends
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "Too many sign-in attempts" in refused.text
    assert "mailvet_session" not in api.client.cookies
