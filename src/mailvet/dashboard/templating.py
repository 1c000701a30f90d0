"""Rendering dashboard pages: Jinja2 templates (autoescaped), the navigation, and the
headers every page carries (a strict Content-Security-Policy: nothing is loaded from
anywhere but this server, so the dashboard works on a host with no internet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

import mailvet
from mailvet.dashboard.auth import Session

__all__ = ["NAV", "PAGE_HEADERS", "STATIC_NAME", "NavItem", "render", "templates"]

HERE = Path(__file__).parent
STATIC_NAME = "dashboard-static"  # the StaticFiles mount: url_for(STATIC_NAME, path=...)

templates = Jinja2Templates(directory=str(HERE / "templates"))


@dataclass(frozen=True, slots=True)
class NavItem:
    path: str
    label: str
    admin_only: bool = False


# The navigation, in order. A module adding pages appends its entries at import.
NAV: list[NavItem] = [
    NavItem("/", "Overview"),
    NavItem("/check", "Check an address"),
    NavItem("/keys", "Keys", admin_only=True),
]

PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    session: Session | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render template ``name``. Every template sees ``session`` (None when signed out),
    ``csrf`` (its token, for forms), ``nav`` (the entries this key may see, with
    ``current`` the one for this page) and ``version``."""
    path = request.url.path
    visible = [n for n in NAV if session is not None and (not n.admin_only or session.key.admin)]
    current = max(
        (n.path for n in visible if path == n.path or (n.path != "/" and path.startswith(n.path))),
        key=len,
        default=None,
    )
    ctx: dict[str, Any] = {
        "session": session,
        "csrf": session.csrf if session is not None else None,
        "nav": visible,
        "current": current,
        "version": mailvet.__version__,
        "static": STATIC_NAME,
    }
    ctx.update(context or {})
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    return response
