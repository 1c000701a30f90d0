"""The app factory: lifespan, service routes, OpenAPI, offline docs, body limit, restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from mailvet.api.app import STATIC_URL, create_app
from mailvet.settings import Settings
from mailvet.storage import open_store
from mailvet.storage.base import Plan

from .kit import Api, FakeEngine, make_settings, running_api


async def test_healthz(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_lifespan_closes_only_what_it_opened(tmp_path: Path) -> None:
    engine = FakeEngine()
    async with running_api(engine=engine) as api:
        assert api.app.state.service.runner.running
    assert not engine.closed  # passed in: the caller's to close
    assert api.app.state.service.store is None


async def test_openapi_describes_the_api(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert {"/v1/validate", "/v1/batch", "/v1/batch/{batch_id}", "/healthz", "/metrics"} <= set(
        paths
    )
    assert set(paths["/v1/validate"]) == {"get", "post"}
    for item in paths.values():
        for operation in item.values():
            assert "422" not in operation["responses"]
    schemes = schema["components"]["securitySchemes"]
    assert schemes["MailsApiKey"] == {"type": "apiKey", "in": "header", "name": "x-mails-api-key"}
    get = paths["/v1/validate"]["get"]
    assert [p["name"] for p in get["parameters"]] == ["email", "flat", "details"]
    assert set(get["responses"]) == {"200", "400", "401", "413", "429", "503"}


async def test_docs_are_served_without_a_cdn(api: Api) -> None:
    html = (await api.client.get("/docs")).text
    assert "cdn" not in html.lower()
    assert f"{STATIC_URL}/swagger-ui-bundle.js" in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = await api.client.get(f"{STATIC_URL}/{asset}")
        assert r.status_code == 200
        assert len(r.content) > 10_000
    redoc = (await api.client.get("/redoc")).text
    assert f"{STATIC_URL}/redoc.standalone.js" in redoc
    assert "fonts.googleapis" not in redoc


async def test_body_limit_by_content_length() -> None:
    async with running_api(make_settings(max_body_bytes=1000)) as api:
        emails = [f"user{i}@deliverable.test" for i in range(100)]
        r = await api.client.post("/v1/batch", json={"emails": emails}, headers=api.h())
        assert r.status_code == 413
        assert r.json() == {"data": None, "error": "The body provided is too large."}
        r = await api.client.post("/v1/batch", json={"emails": emails[:5]}, headers=api.h())
        assert r.status_code == 200


async def test_body_limit_while_streaming() -> None:
    chunks_sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        yield b'{"emails": ['
        while chunks_sent < 10_000:  # 10 MB if nothing stopped it
            chunks_sent += 1
            yield b'"a@b.test",' * 100

    async with running_api(make_settings(max_body_bytes=5000)) as api:
        r = await api.client.post(
            "/v1/batch",
            content=endless(),
            headers={**api.h(), "content-type": "application/json"},
        )
    assert r.status_code == 413
    assert r.json()["error"] == "The body provided is too large."
    assert "content-length" not in r.request.headers
    assert chunks_sent < 100  # refused as soon as the count passed the limit


async def test_bad_content_length_is_a_400() -> None:
    async with running_api() as api:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            request = client.build_request(
                "POST", "/v1/batch", content=b"{}", headers={**api.h(), "content-length": "x"}
            )
            r = await client.send(request)
    assert r.status_code == 400


async def test_batches_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailvet.db'}"
    settings: Settings = make_settings(database_url=url, batch_concurrency=2)
    store = open_store(url)
    await store.migrate()
    _, secret = await store.create_key("acme", Plan.PAID)
    await store.close()
    headers = {"x-mails-api-key": secret}
    emails = [f"u{i}@deliverable.test" for i in range(10)]

    stuck = FakeEngine()
    stuck.gate = asyncio.Event()  # never set: the first server never finishes anything
    app = create_app(settings, engine=stuck)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post("/v1/batch", json={"emails": emails}, headers=headers)
            assert r.status_code == 200
            batch_id = r.json()["id"]
            await asyncio.sleep(0.05)
            r = await client.get(f"/v1/batch/{batch_id}", headers=headers)
            assert r.json()["finished_at"] is None

    engine = FakeEngine()
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(500):
                body = (await client.get(f"/v1/batch/{batch_id}", headers=headers)).json()
                if body["finished_at"] is not None:
                    break
                await asyncio.sleep(0.02)
    assert body["finished_at"] is not None
    assert [e["email"] for e in body["emails"]] == emails
    assert body["counts"]["deliverable"] == 10
    assert sorted(engine.calls) == sorted(emails)


async def test_real_server_refuses_a_huge_declared_body_without_reading_it() -> None:
    from mailvet.storage.memory import MemoryStore

    from .kit import serve

    store = MemoryStore()
    _, secret = await store.create_key("k", Plan.PAID)
    app = create_app(make_settings(max_body_bytes=1024), store=store, engine=FakeEngine())
    async with serve(app) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/batch HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
            + f"x-mails-api-key: {secret}\r\ncontent-length: 10000000000\r\n\r\n".encode()
        )
        await writer.drain()
        # nothing of the declared 10 GB is sent: the answer must come anyway
        response = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert body == b'{"data":null,"error":"The body provided is too large."}'
