"""The dashboard's list pages: upload a list, the batches with live progress, a batch's
charts, table, downloads and deletion.

Every page needs a session (``auth.SessionDep``) and shows the signed-in key's batches
only: another key's batch id is a 404, as an unknown one. Batches are created through
``Service.submit_batch``, as ``POST /v1/batch`` creates them, and need a paid-plan key
as that does.

Upload: ``POST /upload`` keeps the file on disk (``uploads.UploadStash``) and redirects to
its preview (``GET /upload/{token}``: size, rows, the columns and the one holding the
addresses, the first rows: read once, kept with the file); ``POST /upload/{token}``
starts the batch, once (``UploadStash.claim``: a double click starts one). The upload's
body has limits of its own (``MAILVET_MAX_UPLOAD_BYTES``, see ``api.bodylimit``).

Progress: the pages show it as they are rendered (no script needed; a reload refreshes
it) and ``static/batches.js`` polls ``/batches/progress`` or ``/batches/{id}/progress``
(small JSON) every few seconds while a batch runs.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from mailvet.api import wire
from mailvet.api.bodylimit import BodyTimeout, BodyTooLarge
from mailvet.api.deps import Service
from mailvet.dashboard import auth, charts
from mailvet.dashboard.auth import CsrfFormDep, ServiceDep, Session, SessionDep
from mailvet.dashboard.templating import NAV, NavItem, render
from mailvet.dashboard.uploads import (
    DOWNLOADS,
    ENCODINGS,
    UploadError,
    UploadStash,
    download_csv,
    download_disposition,
    read_preview,
    read_upload,
    too_big,
)
from mailvet.storage.base import BatchRecord, Plan
from mailvet.storage.common import utcnow
from mailvet.verdict import Result

__all__ = [
    "LIST_PAGE",
    "TABLE_PAGE",
    "UPLOAD_PATH",
    "UPLOAD_SLACK",
    "UPLOAD_TIMEOUT",
    "progress",
    "router",
    "stash",
]

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

UPLOAD_PATH = "/upload"
UPLOAD_SLACK = 64 * 1024  # bytes of a multipart body around the file (fields, boundaries)
UPLOAD_TIMEOUT = 600.0  # seconds an upload's body may take to arrive
LIST_PAGE = 25  # batches a page of /batches
TABLE_PAGE = 50  # addresses a page of a batch's table
MAX_PAGE = 10**6
RESULTS = tuple(r.value for r in Result)
PAID_ONLY = (
    "Lists need a paid-plan key: this key may check single addresses only. Ask your "
    "administrator for a paid-plan key."
)

NAV.append(NavItem("/batches", "Lists"))
NAV.append(NavItem(UPLOAD_PATH, "Upload a list"))

_stash: UploadStash | None = None


def stash() -> UploadStash:
    """The process's upload stash (a folder shared by the host's API processes)."""
    global _stash
    if _stash is None:
        _stash = UploadStash()
    return _stash


# --- helpers ---


def _page(request: Request, name: str = "page") -> int:
    raw = request.query_params.get(name, "1").strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 7:
        return 1
    return max(1, min(int(raw), MAX_PAGE))


def _valid_id(batch_id: str) -> bool:
    try:
        return str(uuid.UUID(batch_id)) == batch_id.lower()
    except ValueError:
        return False


async def _owned(svc: Service, session: Session, batch_id: str) -> BatchRecord | None:
    if not _valid_id(batch_id):
        return None
    return await svc.require_store().get_batch(session.key.id, batch_id)


def _not_found(request: Request, session: Session) -> Response:
    return render(
        request,
        "error.html",
        {
            "title": "No such list",
            "message": "There is no list with this address for your key. It may belong to "
            "another key.",
        },
        session=session,
        status_code=404,
    )


def progress(record: BatchRecord, now: datetime | None = None) -> dict[str, Any]:
    """What the pages and the progress JSON show of a batch: done / total, percent,
    status, the average rate since it started (addresses a second) and the time left
    at that rate, retries waiting (greylisting)."""
    now = now or utcnow()
    end = record.finished_at or record.deleted_at or now
    elapsed = max((end - record.created_at).total_seconds(), 0.001)
    rate = record.done / elapsed
    left = max(record.size - record.done, 0)
    status = wire.batch_status(record)
    eta = None
    waiting_only = 0 < left <= record.retry_waiting  # what is left waits for retries
    if status in ("queued", "running") and rate > 0 and left and not waiting_only:
        eta = left / rate
    return {
        "id": record.id,
        "status": status,
        "done": record.done,
        "total": record.size,
        "percent": 0 if record.size == 0 else int(100 * record.done / record.size),
        "rate": round(rate, 1),
        "rate_text": _rate_text(rate, status),
        "eta": None if eta is None else round(eta),
        "eta_text": "after the retries" if waiting_only else _eta_text(eta, status),
        "retry_waiting": record.retry_waiting,
    }


def _rate_text(rate: float, status: str) -> str:
    if status == "deleted":
        return "stopped"
    if status == "queued" or rate <= 0:
        return "not started"
    if rate >= 10:
        return f"{rate:,.0f} a second"
    if rate >= 1:
        return f"{rate:.1f} a second"
    return f"{rate * 60:.1f} a minute"


def _eta_text(eta: float | None, status: str) -> str:
    if status == "finished":
        return "done"
    if status == "deleted":
        return "stopped"
    if eta is None:
        return "working it out" if status == "running" else "waiting to start"
    seconds = int(eta)
    if seconds < 60:
        return f"about {max(seconds, 1)} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _json(data: Any, status: int = 200) -> JSONResponse:
    response = JSONResponse(data, status_code=status)
    response.headers.update({"cache-control": "no-store", "x-content-type-options": "nosniff"})
    return response


# --- the list of batches ---


@router.get("/batches")
async def batches_page(request: Request, session: SessionDep, svc: ServiceDep) -> Response:
    page = _page(request)
    records = await svc.require_store().list_batches(
        session.key.id, offset=(page - 1) * LIST_PAGE, limit=LIST_PAGE + 1
    )
    more = len(records) > LIST_PAGE
    rows = [(record, progress(record)) for record in records[:LIST_PAGE]]
    context = {
        "rows": rows,
        "page": page,
        "more": more,
        "deleted": request.query_params.get("deleted") == "1",
        "paid": session.key.plan is Plan.PAID,
        "running": any(p["status"] in ("queued", "running") for _, p in rows),
    }
    return render(request, "batches.html", context, session=session)


@router.get("/batches/progress")
async def batches_progress(request: Request, session: SessionDep, svc: ServiceDep) -> Response:
    """The progress of the batches on a page of /batches (``?page=``), as JSON."""
    page = _page(request)
    records = await svc.require_store().list_batches(
        session.key.id, offset=(page - 1) * LIST_PAGE, limit=LIST_PAGE
    )
    return _json({"batches": [progress(record) for record in records]})


# --- one batch ---


@router.get("/batches/{batch_id}/progress")
async def batch_progress(
    batch_id: str, request: Request, session: SessionDep, svc: ServiceDep
) -> Response:
    record = await _owned(svc, session, batch_id)
    if record is None:
        return _json({"error": "not found"}, 404)
    return _json(progress(record))


@router.get("/batches/{batch_id}")
async def batch_page(
    batch_id: str, request: Request, session: SessionDep, svc: ServiceDep
) -> Response:
    record = await _owned(svc, session, batch_id)
    if record is None:
        return _not_found(request, session)
    store = svc.require_store()
    counts = await store.counts(record.id)
    by_result = [(r, counts.by_result.get(r, 0)) for r in charts.RESULT_ORDER]
    by_reason = sorted(counts.by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    result = request.query_params.get("result") or None
    if result not in RESULTS:
        result = None
    reason = request.query_params.get("reason") or None
    if reason not in counts.by_reason:
        reason = None
    page = _page(request)
    items = []
    if record.deleted_at is None:
        items = [
            item
            async for item in store.iter_items(
                record.id,
                offset=(page - 1) * TABLE_PAGE,
                limit=TABLE_PAGE + 1,
                result=result,
                reason=reason,
            )
        ]
    more = len(items) > TABLE_PAGE
    filters = {k: v for k, v in (("result", result), ("reason", reason)) if v}
    shown: int | None = None  # rows the filter keeps, when the counts tell
    if result and not reason:
        shown = counts.by_result.get(result, 0)
    elif reason and not result:
        shown = counts.by_reason.get(reason, 0)
    context = {
        "batch": record,
        "progress": progress(record),
        "results_chart": charts.bar_chart(
            by_result,
            title="Results",
            chart_id="results-chart",
            categories=charts.RESULT_ORDER,
        ),
        "reasons_chart": charts.bar_chart(by_reason, title="Reasons", chart_id="reasons-chart"),
        "by_result": by_result,
        "by_reason": by_reason,
        "results": RESULTS,
        "items": items[:TABLE_PAGE],
        "first": (page - 1) * TABLE_PAGE + 1,
        "page": page,
        "more": more,
        "result": result,
        "reason": reason,
        "filters": filters,
        "shown": shown,
        "downloads": list(DOWNLOADS.values()),
        "columns": list(record.upload.columns) if record.upload else ["email"],
    }
    return render(request, "batches_detail.html", context, session=session)


@router.get("/batches/{batch_id}/download/{kind}")
async def batch_download(
    batch_id: str, kind: str, request: Request, session: SessionDep, svc: ServiceDep
) -> Response:
    chosen = DOWNLOADS.get(kind)
    record = await _owned(svc, session, batch_id)
    if record is None or chosen is None or record.deleted_at is not None:
        return _not_found(request, session)
    headers = {
        "content-disposition": download_disposition(record, chosen),
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
    }
    return StreamingResponse(
        download_csv(svc.require_store(), record, chosen),
        media_type="text/csv; charset=utf-8",
        headers=headers,
    )


@router.get("/batches/{batch_id}/delete")
async def delete_page(
    batch_id: str, request: Request, session: SessionDep, svc: ServiceDep
) -> Response:
    record = await _owned(svc, session, batch_id)
    if record is None:
        return _not_found(request, session)
    return render(request, "batches_delete.html", {"batch": record}, session=session)


@router.post("/batches/{batch_id}/delete")
async def delete_batch(
    batch_id: str, request: Request, session: SessionDep, form: CsrfFormDep, svc: ServiceDep
) -> Response:
    record = await _owned(svc, session, batch_id)
    if record is None:
        return _not_found(request, session)
    if record.deleted_at is None:
        await svc.require_store().delete_batch(session.key.id, record.id)
        await svc.batch_changed(record.id)  # drop its queued work now
    return RedirectResponse("/batches?deleted=1", status_code=303)


# --- upload ---


def _upload_form(
    request: Request,
    session: Session,
    svc: Service,
    *,
    error: str | None = None,
    status_code: int = 200,
    encoding: str = "utf-8",
    filename: str | None = None,
) -> Response:
    context = {
        "error": error,
        "error_file": filename,
        "paid": session.key.plan is Plan.PAID,
        "paid_only": PAID_ONLY,
        "max_bytes": svc.settings.max_upload_bytes,
        "max_bytes_text": too_big(svc.settings.max_upload_bytes),
        "max_rows": max(1, svc.settings.max_batch_size),
        "encodings": ENCODINGS,
        "encoding": encoding,
    }
    return render(request, "upload.html", context, session=session, status_code=status_code)


@router.get(UPLOAD_PATH)
async def upload_page(request: Request, session: SessionDep, svc: ServiceDep) -> Response:
    return _upload_form(request, session, svc)


class _KeyRevoked(Exception):
    """The session's key was revoked after it signed in."""


async def _upload_session(request: Request, svc: Service) -> Session:
    """The session of an upload's POST; a key revoked since signing in gets a page that
    says so (``_KeyRevoked``) rather than the bare sign-in form."""
    session = await auth.read_session(request, svc)
    if session is not None:
        return session
    if await auth.revoked_session(request, svc):
        raise _KeyRevoked
    raise auth.SignInRequired("/")


def _revoked_page(request: Request) -> Response:
    page = render(
        request,
        "error.html",
        {
            "title": "Your API key has been revoked",
            "message": "The key you signed in with was revoked, so the list was not "
            "uploaded. Sign in with a live key, or ask your administrator for one.",
        },
        status_code=401,
    )
    page.headers["connection"] = "close"
    return page


@router.post(UPLOAD_PATH)
async def upload(request: Request, svc: ServiceDep) -> Response:
    """Keep the file and show its preview. The form is parsed here, not by
    ``auth.csrf_form``: the body has its own size limit, and a file over it gets a page
    saying so (its CSRF token is checked as soon as the form is read)."""
    try:
        session = await _upload_session(request, svc)
    except _KeyRevoked:
        return _revoked_page(request)
    limit = svc.settings.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + UPLOAD_SLACK:
        page = _upload_form(request, session, svc, error=too_big(limit), status_code=413)
        page.headers["connection"] = "close"
        return page
    try:
        form = await request.form(max_files=1, max_fields=20)
    except (BodyTooLarge, BodyTimeout) as exc:
        message = too_big(limit) if isinstance(exc, BodyTooLarge) else "The upload stopped."
        page = _upload_form(request, session, svc, error=message, status_code=413)
        page.headers["connection"] = "close"
        return page
    try:
        auth.check_csrf(form, session)
        if session.key.plan is not Plan.PAID:
            return _upload_form(request, session, svc, error=PAID_ONLY, status_code=403)
        encoding = form.get("encoding")
        encoding = encoding if isinstance(encoding, str) and encoding in ENCODINGS else "utf-8"
        file = form.get("file")
        if not isinstance(file, UploadFile) or not (file.filename or "").strip():
            return _upload_form(
                request, session, svc, error="Choose a file to upload.", status_code=400
            )
        filename = _clean(file.filename or "", 200, keep_end=True) or "list"
        try:
            saved = await asyncio.to_thread(
                stash().save, file.file, filename, session.key.id, limit
            )
            try:
                preview = await asyncio.to_thread(
                    read_preview,
                    saved.path,
                    filename,
                    encoding=encoding,
                    max_rows=max(1, svc.settings.max_batch_size),
                )
            except BaseException:
                stash().discard(saved.token)
                raise
            stash().keep_preview(saved, preview)
        except UploadError as exc:
            if exc.encoding and encoding == "utf-8":
                encoding = "cp1252"  # offered next: what spreadsheets on Windows write
            return _upload_form(
                request,
                session,
                svc,
                error=str(exc),
                status_code=exc.status,
                encoding=encoding,
                filename=filename,
            )
    finally:
        await form.close()
    target = f"{UPLOAD_PATH}/{saved.token}"
    if encoding != "utf-8":
        target += f"?encoding={encoding}"
    return RedirectResponse(target, status_code=303)


def _clean(value: object, limit: int, *, keep_end: bool = False) -> str:
    """A name any store can hold: no control characters (NUL included) nor lone
    surrogates, trimmed, at most ``limit`` characters (a file's name keeps its end)."""
    if not isinstance(value, str):
        return ""
    text = "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cs")).strip()
    return text[-limit:] if keep_end else text[:limit]


def _encoding(value: object) -> str:
    return value if isinstance(value, str) and value in ENCODINGS else "utf-8"


def _gone(request: Request, session: Session) -> Response:
    return render(
        request,
        "error.html",
        {
            "title": "This upload is gone",
            "message": "The file is no longer kept (a list starts once, and an upload waits "
            "an hour at most). Upload it again.",
        },
        session=session,
        status_code=404,
    )


@router.get(UPLOAD_PATH + "/{token}")
async def preview_page(
    token: str, request: Request, session: SessionDep, svc: ServiceDep
) -> Response:
    encoding = _encoding(request.query_params.get("encoding"))
    return await _preview(request, session, svc, token, encoding)


@router.post(UPLOAD_PATH + "/{token}")
async def start(token: str, request: Request, svc: ServiceDep) -> Response:
    try:
        session = await _upload_session(request, svc)
    except _KeyRevoked:
        return _revoked_page(request)
    form = await request.form()
    auth.check_csrf(form, session)
    saved = stash().get(token, session.key.id)
    if saved is None:
        return _already_started(request, session, token)
    if session.key.plan is not Plan.PAID:
        return _upload_form(request, session, svc, error=PAID_ONLY, status_code=403)
    wait = svc.limiter.check(session.key.id)
    if wait > 0.0:  # the preview again (the file is kept), the wait above its form
        slow_down = UploadError(
            f"Too many requests for this key: wait {svc.limiter.retry_after(wait)} s "
            "and try again.",
            status=429,
        )
        return await _preview(
            request, session, svc, token, _encoding(form.get("encoding")), slow_down
        )
    raw_column = form.get("column")
    column = None
    if isinstance(raw_column, str) and raw_column.strip().isdigit():
        column = int(raw_column.strip()[:7])
    raw_name = form.get("name")
    name = _clean(raw_name, wire.MAX_NAME_CHARS) or _clean(saved.filename, wire.MAX_NAME_CHARS)
    claimed = stash().claim(token, session.key.id)
    if claimed is None:  # another request (a double click) took it first
        return _already_started(request, session, token)
    try:
        parsed = await asyncio.to_thread(
            read_upload,
            claimed.path,
            claimed.filename,
            column=column,
            encoding=_encoding(form.get("encoding")),
            max_rows=max(1, svc.settings.max_batch_size),
        )
        record = await svc.submit_batch(
            session.key, name, parsed.emails, upload=parsed.upload, cells=parsed.cells
        )
    except UploadError as exc:
        stash().release(claimed)
        encoding = _encoding(form.get("encoding"))
        return await _preview(request, session, svc, token, encoding, exc)
    except BaseException:
        stash().release(claimed)
        raise
    stash().finish(claimed, record.id)
    return RedirectResponse(f"/batches/{record.id}", status_code=303)


def _already_started(request: Request, session: Session, token: str) -> Response:
    """An upload another request started (or is starting): its list, else the lists."""
    batch_id = stash().started(token, session.key.id)
    if batch_id is None:
        return _gone(request, session)
    return RedirectResponse(f"/batches/{batch_id}" if batch_id else "/batches", status_code=303)


async def _preview(
    request: Request,
    session: Session,
    svc: Service,
    token: str,
    encoding: str,
    error: UploadError | None = None,
) -> Response:
    """The preview of a kept upload; with ``error`` (a column not chosen) above the form."""
    saved = stash().get(token, session.key.id)
    if saved is None:
        return _gone(request, session)
    preview = stash().kept_preview(saved, encoding)
    if preview is None:
        try:
            preview = await asyncio.to_thread(
                read_preview,
                saved.path,
                saved.filename,
                encoding=encoding,
                max_rows=max(1, svc.settings.max_batch_size),
            )
        except UploadError as exc:
            stash().discard(token)
            return _upload_form(request, session, svc, error=str(exc), status_code=exc.status)
        stash().keep_preview(saved, preview)
    context = {
        "preview": preview,
        "token": token,
        "error": None if error is None else str(error),
        "paid": session.key.plan is Plan.PAID,
        "paid_only": PAID_ONLY,
        "name": saved.filename,
    }
    status = 200 if error is None else error.status
    return render(request, "upload_preview.html", context, session=session, status_code=status)
