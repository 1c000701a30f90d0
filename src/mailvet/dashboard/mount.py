"""``install(app)``: the dashboard's routers, static files and error pages on the API app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_URL", "install"]

STATIC_URL = "/static/dashboard"


def install(app: FastAPI) -> None:
    """Mount the dashboard on ``app``: pages, static files, and the answers to
    "sign in first" (a redirect), a refused CSRF token and a non-admin key (403 pages)."""
    from urllib.parse import quote

    from mailvet.api.deps import service
    from mailvet.dashboard import auth
    from mailvet.dashboard.routes import router
    from mailvet.dashboard.templating import STATIC_NAME, render

    app.mount(STATIC_URL, StaticFiles(directory=Path(__file__).parent / "static"), name=STATIC_NAME)
    app.include_router(router)
    # more page routers (the batch pages) are included here, next to this one
    from mailvet.dashboard.batches import router as batches_router

    app.include_router(batches_router)

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, auth.SignInRequired)
        target = "/signin" if exc.next_path == "/" else f"/signin?next={quote(exc.next_path)}"
        return RedirectResponse(target, status_code=303)

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return render(
            request,
            "error.html",
            {
                "title": "This form has expired",
                "message": "The form was not sent from this page, or your session changed "
                "since it was shown. Go back, reload the page and try again.",
            },
            session=await auth.read_session(request, service(request)),
            status_code=403,
        )

    async def admin_required(request: Request, exc: Exception) -> Response:
        return render(
            request,
            "error.html",
            {
                "title": "Admin keys only",
                "message": "Managing keys needs an admin key. Sign in with one, or ask "
                "your administrator.",
            },
            session=await auth.read_session(request, service(request)),
            status_code=403,
        )

    app.add_exception_handler(auth.SignInRequired, sign_in_first)
    app.add_exception_handler(auth.CsrfRefused, csrf_refused)
    app.add_exception_handler(auth.AdminRequired, admin_required)
