"""The app factory: ``create_app(settings, *, store=None, engine=None) -> FastAPI``.

The lifespan opens the store (``open_store(settings.database_url)`` unless one is
given) and migrates it, builds the engine, and starts the in-process batch runner,
which first resumes every unfinished batch: batches survive a restart, and the
webhook sender (``jobs.webhook``), which calls finished batches' ``callback_url``.
With ``MAILVET_INPROCESS_WORKER`` off (the default on PostgreSQL) it starts neither:
it opens the workers' queue (``jobs.cluster.BatchQueue``) and only enqueues. On shutdown
it stops the runner and closes what it opened (a store or engine passed in belongs
to the caller and is left open).

Interactive docs (``/docs``, ``/redoc``) are served from assets shipped in a Python
package (``fastapi-offline``), so they work without any CDN.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

import mailvet
from mailvet.api import wire
from mailvet.api.bodylimit import BODY_TIMEOUT, BodyLimitMiddleware, BodyTimeout, BodyTooLarge
from mailvet.api.deps import Service
from mailvet.api.metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware
from mailvet.api.ratelimit import RateLimiter
from mailvet.api.v1 import router as v1_router
from mailvet.settings import Settings, uses_postgres
from mailvet.storage.base import Store
from mailvet.storage.common import StorageError

if TYPE_CHECKING:
    import httpx

    from mailvet.engine import Checked, Engine
    from mailvet.jobs.webhook import Resolver

__all__ = ["STATIC_URL", "create_app"]

log = logging.getLogger(__name__)

STORAGE_RETRY_AFTER = 5  # seconds a client is asked to wait after a storage fault
STATIC_URL = "/static/docs"
_DESCRIPTION = """\
A self-hosted, Mails.so-compatible email verification API.

Authenticate with the `x-mails-api-key` header (or `Authorization: Bearer <key>`).
Errors are `{"data": null, "error": "<message>"}`.
"""


def _docs_assets() -> Path | None:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if path.is_dir() else None


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    engine: Engine | None = None,
    resolver: Resolver | None = None,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The app. ``resolver`` resolves callback URLs' host names (default: the system's),
    ``webhook_transport`` carries the webhooks (default: the network); tests pass both."""
    metrics = Metrics()
    svc = Service(
        settings=settings,
        metrics=metrics,
        limiter=RateLimiter(settings.rate_limit_per_minute),
        resolver=resolver,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from mailvet.jobs.inprocess import BatchRunner
        from mailvet.jobs.webhook import WebhookSender, system_resolver

        own_store = store is None
        own_engine = engine is None
        if store is None:
            from mailvet.storage import open_store

            svc.store = open_store(settings.database_url)
        else:
            svc.store = store
        try:
            await svc.store.migrate()
            if engine is None:
                from mailvet.engine.pipeline import Engine

                svc.engine = Engine(settings)
            else:
                svc.engine = engine
            runner: BatchRunner | None = None
            webhooks: WebhookSender | None = None
            if settings.runs_batches_inprocess():
                runner = BatchRunner(
                    svc.store,
                    svc.engine,
                    settings,
                    on_checked=lambda checked: _observe_batch(metrics, checked),
                )
                svc.runner = runner
                runner.start()
                webhooks = WebhookSender(
                    svc.store,
                    settings,
                    transport=webhook_transport,
                    resolver=system_resolver if resolver is None else resolver,
                )
                svc.webhooks = webhooks
                webhooks.start()
            elif uses_postgres(settings.database_url):
                from mailvet.jobs.cluster import BatchQueue

                queue = BatchQueue(settings.database_url)
                await queue.open()
                svc.queue = queue
            else:
                log.warning(
                    "MAILVET_INPROCESS_WORKER is off and the database is not PostgreSQL: "
                    "batches are stored but nothing works on them"
                )
            try:
                yield
            finally:
                await svc.probes.close()
                if webhooks is not None:
                    await webhooks.stop()
                svc.webhooks = None
                if runner is not None:
                    await runner.stop()
                svc.runner = None
                if svc.queue is not None:
                    await svc.queue.close()
                svc.queue = None
                if own_engine and svc.engine is not None:
                    await svc.engine.close()
                svc.engine = None
        finally:
            if own_store:
                await svc.store.close()
            svc.store = None
            svc.results.clear()
            svc.keys.clear()

    app = FastAPI(
        title="mailvet",
        version=mailvet.__version__,
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = svc
    app.include_router(v1_router)
    _add_handlers(app)
    _add_service_routes(app, svc)
    _add_docs(app)
    _install_openapi(app, settings)
    # outermost first: metrics see every response, including the body-limit refusals
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _observe_batch(metrics: Metrics, checked: Checked) -> None:
    metrics.observe_verdict(checked.verdict, "batch")
    metrics.observe_facts(checked.facts)


def _add_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return wire.error_response(str(exc.detail), exc.status_code, exc.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        return wire.error_response(wire.BAD_FORMAT, 400)

    async def too_large(request: Request, exc: Exception) -> Response:
        return wire.error_response(wire.BODY_TOO_LARGE, 413, {"connection": "close"})

    async def storage_error(request: Request, exc: Exception) -> Response:
        # a fault of the database, not of the request: worth retrying. The text names the
        # failure only (StorageError never carries a statement's parameters).
        log.warning("storage fault on %s %s: %s", request.method, request.url.path, exc)
        return wire.error_response(
            wire.STORAGE_UNAVAILABLE, 503, {"retry-after": str(STORAGE_RETRY_AFTER)}
        )

    async def body_timeout(request: Request, exc: Exception) -> Response:
        return wire.error_response(BODY_TIMEOUT, 408, {"connection": "close"})

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return wire.error_response("Internal server error.", 500)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(StorageError, storage_error)
    app.add_exception_handler(BodyTimeout, body_timeout)
    app.add_exception_handler(Exception, server_error)


def _add_service_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/healthz", tags=["service"], summary="Liveness and readiness")
    async def healthz() -> dict[str, str]:
        ready = svc.store is not None and svc.engine is not None
        return {"status": "ok" if ready else "starting", "version": mailvet.__version__}

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        await svc.metrics.refresh_cluster(svc.store, svc.settings)  # PostgreSQL only
        return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _add_docs(app: FastAPI) -> None:
    assets = _docs_assets()
    if assets is None:  # pragma: no cover - fastapi-offline is a dependency
        log.warning("fastapi-offline is not installed: /docs is unavailable")
        return
    app.mount(STATIC_URL, StaticFiles(directory=assets), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="mailvet API",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title="mailvet API",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )


def _install_openapi(app: FastAPI, settings: Settings) -> None:
    """Security schemes, and no phantom 422s (this API answers malformed input with 400)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {
            "MailsApiKey": {"type": "apiKey", "in": "header", "name": "x-mails-api-key"},
            "BearerKey": {"type": "http", "scheme": "bearer"},
        }
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        batch = schema["paths"]["/v1/batch"]["post"]
        batch["requestBody"] = wire.batch_body(max(1, settings.max_batch_size))
        schemas = components.get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
