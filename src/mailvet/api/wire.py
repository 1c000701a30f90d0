"""The Mails.so wire shape: the only module that knows it.

Everything the HTTP API sends is built here, as plain dicts serialised with orjson
(fast, key order kept), and described for OpenAPI by the pydantic models below so
``/openapi.json`` tells the truth about the responses.

Shapes:

- single validation: ``{"data": <Verdict>, "error": null}``; with ``flat=1`` also
  ``result``, ``reason`` and ``score`` at the top level; with ``details=1`` also
  ``details`` (transcript and timings). Additive only.
- batch: the batch object at the top level (not enveloped), plus the additive
  progress fields ``done``, ``counts``, ``counts_by_reason``, ``status``, ``progress``
  and ``retry_waiting``; ``GET`` adds ``emails``, and past the page size (or when asked)
  ``offset``, ``limit`` and ``next``. Streamed: ``batch_stream`` writes the object
  piece by piece from the store's item iterator.
- errors: ``{"data": null, "error": "<exact string>"}`` everywhere.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, get_type_hints

import orjson
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo
from starlette.responses import Response

from mailvet.engine.facts import Facts
from mailvet.storage.base import ApiKey, BatchCounts, BatchItem, BatchRecord
from mailvet.verdict import Result, Verdict

__all__ = [
    "BAD_FORMAT",
    "BATCH_STATUSES",
    "BATCH_TOO_LARGE",
    "BODY_TOO_LARGE",
    "CALLBACK_REFUSED",
    "EMAIL_SCHEMA",
    "MAX_EMAIL_CHARS",
    "MAX_NAME_CHARS",
    "MAX_URL_CHARS",
    "NOT_FOUND",
    "PAID_ONLY",
    "RATE_LIMITED",
    "STORAGE_UNAVAILABLE",
    "TOO_SLOW",
    "UNAUTHORIZED",
    "UNAUTHORIZED_BATCH",
    "VERDICT_FIELDS",
    "VERDICT_FIELD_INFO",
    "BatchListOut",
    "BatchOut",
    "BatchSummaryOut",
    "BatchWithEmailsOut",
    "ErrorOut",
    "ValidateOut",
    "VerdictOut",
    "accepts_gzip",
    "batch_body",
    "batch_object",
    "batch_status",
    "batch_stream",
    "batch_summary",
    "csv_cell",
    "csv_rows",
    "csv_stream",
    "details_object",
    "error_response",
    "gzip_stream",
    "json_response",
    "jsonl_lines",
    "jsonl_stream",
    "order_verdict",
    "rfc3339",
    "smtp_seconds",
    "validate_body",
    "verdict_model",
]

# --- the exact error strings of the contract (and mailvet's additional ones) ---
UNAUTHORIZED = "Unauthorized"  # single validation
UNAUTHORIZED_BATCH = "Unauthorized."  # batch endpoints
BAD_FORMAT = "The body provided has an invalid format."
PAID_ONLY = "Paid subscription required to use list validations"
# mailvet's own (Mails.so's wording for these is not known)
NOT_FOUND = "Not found."
STORAGE_UNAVAILABLE = "The service is temporarily unavailable."  # the database failed
RATE_LIMITED = "Too many requests."
BODY_TOO_LARGE = "The body provided is too large."
BATCH_TOO_LARGE = "Too many emails: a batch holds at most {limit}."
TOO_SLOW = "The request could not be answered in time."
CALLBACK_REFUSED = (
    "The callback_url is refused: it must be an http or https URL of a host on a public address."
)
BATCH_STATUSES: tuple[str, ...] = ("queued", "running", "finished", "deleted")
STREAM_CHUNK = 64 * 1024  # bytes gathered before a streamed body is handed to the server

VERDICT_FIELDS: tuple[str, ...] = Verdict._fields
MAX_EMAIL_CHARS = 1024  # an address is at most 254; longer input is not an address at all
MAX_NAME_CHARS = 200
MAX_URL_CHARS = 2048
_NO_NUL = "^[^\\u0000]*$"
EMAIL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_EMAIL_CHARS,
    "pattern": _NO_NUL,
    "description": "the address as given; NUL characters and broken UTF-8 are a 400",
}
_JSON = "application/json"


# --- OpenAPI description of the responses (never used to serialise) ---


class ErrorOut(BaseModel):
    """Every error: the envelope with ``data`` null and the message in ``error``."""

    data: None = None
    error: str


class TranscriptEntryOut(BaseModel):
    at_ms: float
    kind: str
    text: str
    host: str | None = None


class DetailsOut(BaseModel):
    """``details=1``: the evidence behind the verdict."""

    cached: bool
    offline: bool
    deadline_hit: bool
    timings: dict[str, float]
    smtp: dict[str, Any] | None = None
    transcript: list[TranscriptEntryOut]


# What the schema says of a Verdict field beyond its type; names, types and order come
# from Verdict itself (verdict_model).
VERDICT_FIELD_INFO: dict[str, FieldInfo] = {
    "id": Field(description="uuid of this answer"),
    "score": Field(ge=0, le=100),
}


def verdict_model(name: str, info: Mapping[str, FieldInfo] = VERDICT_FIELD_INFO) -> type[BaseModel]:
    """A pydantic model of ``Verdict``: its fields, in its order, with its type hints, all
    required; ``info`` adds a field's description or bounds."""
    unknown = info.keys() - set(Verdict._fields)
    if unknown:
        raise ValueError(f"not Verdict fields: {', '.join(sorted(unknown))}")
    hints = get_type_hints(Verdict)
    definitions: dict[str, Any] = {f: (hints[f], info.get(f, ...)) for f in Verdict._fields}
    return create_model(
        name,
        __config__=ConfigDict(title="Verdict"),
        __doc__="The single-validate ``data`` object: ``mailvet.verdict.Verdict`` field for"
        " field, in the same order.",
        __module__=__name__,
        **definitions,
    )


if TYPE_CHECKING:
    VerdictOut = BaseModel  # to mypy, a pydantic model; its fields are Verdict's
else:
    VerdictOut = verdict_model("VerdictOut")


class ValidateOut(BaseModel):
    """``{"data": ..., "error": null}``; ``result``/``reason``/``score`` only with
    ``flat=1``; ``details`` only with ``details=1``."""

    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})

    data: VerdictOut
    error: None = None
    result: Result | None = Field(default=None, description="only with flat=1")
    reason: str | None = Field(default=None, description="only with flat=1")
    score: int | None = Field(default=None, description="only with flat=1")
    details: DetailsOut | None = Field(default=None, description="only with details=1")


class ProgressOut(BaseModel):
    done: int = Field(ge=0, description="submitted entries with a verdict")
    total: int = Field(ge=0, description="submitted entries (the batch's size)")


class BatchSummaryOut(BaseModel):
    """The Mails.so batch object (top level), plus mailvet's progress fields."""

    id: str
    name: str | None
    created_at: str
    updated_at: str
    deleted_at: str | None
    finished_at: str | None
    user: str | None
    user_id: str
    size: int
    done: int = Field(description="mailvet extension: items with a verdict")
    status: str = Field(
        description="mailvet extension: queued, running, finished or deleted",
        json_schema_extra={"enum": list(BATCH_STATUSES)},
    )
    progress: ProgressOut = Field(description="mailvet extension: done out of total")
    retry_waiting: int = Field(
        ge=0, description="mailvet extension: addresses waiting for a retry (greylisting)"
    )


class BatchOut(BatchSummaryOut):
    counts: dict[str, int] = Field(description="mailvet extension: done items by result")
    counts_by_reason: dict[str, int] = Field(description="mailvet extension: done items by reason")


class BatchWithEmailsOut(BatchOut):
    offset: int | None = Field(
        default=None, ge=0, description="only on a page: the first position it covers"
    )
    limit: int | None = Field(
        default=None, ge=1, description="only on a page: how many positions it covers"
    )
    next: str | None = Field(
        default=None,
        description="only on a page: the URL of the next page, null on the last one",
    )
    emails: list[VerdictOut] = Field(
        description="the verdicts known so far, in submitted order; an address appears "
        "once its verification is done (all of them once finished_at is set). On a page, "
        "the verdicts of the positions offset to offset + limit - 1"
    )


class BatchListOut(BaseModel):
    """``GET /v1/batches``: the key's batches, newest first."""

    model_config = ConfigDict(json_schema_extra={"additionalProperties": False})

    data: list[BatchSummaryOut]
    error: None = None
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)
    next: str | None = Field(description="the URL of the next page, null on the last one")


def validate_body() -> dict[str, Any]:
    """OpenAPI ``requestBody`` of ``POST /v1/validate`` (an ``email`` query parameter wins)."""
    schema = {
        "title": "ValidateBody",
        "type": "object",
        "required": ["email"],
        "properties": {"email": EMAIL_SCHEMA},
    }
    return {"required": True, "content": {_JSON: {"schema": schema}}}


def batch_body(max_batch_size: int | None = None) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of ``POST /v1/batch``."""
    emails: dict[str, Any] = {"type": "array", "minItems": 1, "items": EMAIL_SCHEMA}
    if max_batch_size is not None:
        emails["maxItems"] = max_batch_size
    schema = {
        "title": "BatchBody",
        "type": "object",
        "required": ["emails"],
        "properties": {
            "emails": emails,
            "name": {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_NAME_CHARS, "pattern": _NO_NUL},
                    {"type": "null"},
                ]
            },
            "callback_url": {
                "anyOf": [
                    {
                        "type": "string",
                        "maxLength": MAX_URL_CHARS,
                        "pattern": "^https?://",
                        "format": "uri",
                    },
                    {"type": "null"},
                ],
                "description": "mailvet extension: called with the batch object (POST, "
                "signed in X-Mailvet-Signature) once the batch is finished; http or https, "
                "on a public address",
            },
        },
    }
    return {"required": True, "content": {_JSON: {"schema": schema}}}


# --- serialisation ---


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, headers=headers, media_type=_JSON
    )


def error_response(
    message: str, status_code: int, headers: Mapping[str, str] | None = None
) -> Response:
    return json_response({"data": None, "error": message}, status_code, headers)


def rfc3339(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` and milliseconds: ``2026-01-31T12:00:00.123Z``."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def order_verdict(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """A stored verdict dict in Verdict's field order (JSONB does not keep key order)."""
    return {name: verdict.get(name) for name in VERDICT_FIELDS}


def batch_status(record: BatchRecord) -> str:
    """``deleted``, ``finished``, ``running`` (some verdicts, or retries, known) or ``queued``."""
    if record.deleted_at is not None:
        return "deleted"
    if record.finished_at is not None:
        return "finished"
    if record.done > 0 or record.retry_waiting > 0:
        return "running"
    return "queued"


def batch_summary(record: BatchRecord, key: ApiKey) -> dict[str, Any]:
    """The batch object without counts (``GET /v1/batches`` lists these)."""
    return {
        "id": record.id,
        "name": record.name,
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
        "deleted_at": rfc3339(record.deleted_at),
        "finished_at": rfc3339(record.finished_at),
        "user": key.name,
        "user_id": record.user_id,
        "size": record.size,
        "done": record.done,
        "status": batch_status(record),
        "progress": {"done": record.done, "total": record.size},
        "retry_waiting": record.retry_waiting,
    }


def _result_counts(by_result: Mapping[str, int] | None = None) -> dict[str, int]:
    counts = {result.value: 0 for result in Result}
    if by_result:
        counts.update(by_result)
    return counts


def batch_object(
    record: BatchRecord,
    key: ApiKey,
    items: Iterable[BatchItem] | None = None,
    *,
    counts: BatchCounts | None = None,
) -> dict[str, Any]:
    """The batch object: with ``counts`` (the store's) its counts; with ``items`` also
    ``emails`` (the done ones) and counts computed from them (``done`` too)."""
    out = batch_summary(record, key)
    if items is None:
        out["counts"] = _result_counts(None if counts is None else counts.by_result)
        out["counts_by_reason"] = {} if counts is None else dict(counts.by_reason)
        return out
    by_result = _result_counts()
    by_reason: dict[str, int] = {}
    emails: list[dict[str, Any]] = []
    for item in items:
        if item.verdict is None:
            continue
        verdict = order_verdict(item.verdict)
        emails.append(verdict)
        result, reason = verdict.get("result"), verdict.get("reason")
        if isinstance(result, str):
            by_result[result] = by_result.get(result, 0) + 1
        if isinstance(reason, str):
            by_reason[reason] = by_reason.get(reason, 0) + 1
    out["done"] = len(emails)
    out["progress"] = {"done": len(emails), "total": record.size}
    out["counts"] = by_result
    out["counts_by_reason"] = by_reason
    out["emails"] = emails
    return out


async def batch_stream(
    head: Mapping[str, Any], items: AsyncIterable[BatchItem]
) -> AsyncIterator[bytes]:
    """The JSON object ``head`` with ``"emails"`` appended last: the verdicts of ``items``
    (those done), written as they come, in pieces of about ``STREAM_CHUNK`` bytes."""
    opening = orjson.dumps(head)
    buffer = bytearray(opening[:-1])
    buffer += b',"emails":[' if len(opening) > 2 else b'"emails":['
    first = True
    async for item in items:
        if item.verdict is None:
            continue
        if not first:
            buffer += b","
        first = False
        buffer += orjson.dumps(order_verdict(item.verdict))
        if len(buffer) >= STREAM_CHUNK:
            yield bytes(buffer)
            buffer.clear()
    buffer += b"]}"
    yield bytes(buffer)


def details_object(facts: Facts, *, cached: bool, total_ms: float) -> dict[str, Any]:
    """``details=1``: transcript, timings and the SMTP facts behind a verdict."""
    transcript = [
        {"at_ms": e.at_ms, "kind": e.kind, "text": e.text, "host": e.host} for e in facts.transcript
    ]
    timings: dict[str, float] = {"total_ms": round(total_ms, 2)}
    dns_ms = _span_ms(facts, ("dns",))
    if dns_ms is not None:
        timings["dns_ms"] = dns_ms
    smtp_ms = _span_ms(facts, SMTP_KINDS)
    if smtp_ms is not None:
        timings["smtp_ms"] = smtp_ms
    smtp: dict[str, Any] | None = None
    if facts.smtp is not None:
        s = facts.smtp
        smtp = {
            "outcome": s.outcome.value,
            "mx_host": s.mx_host,
            "code": s.code,
            "enhanced": s.enhanced,
            "message": s.message,
            "catch_all": s.catch_all,
            "tls": s.tls,
        }
    return {
        "cached": cached,
        "offline": facts.offline,
        "deadline_hit": facts.deadline_hit,
        "timings": timings,
        "smtp": smtp,
        "transcript": transcript,
    }


SMTP_KINDS: tuple[str, ...] = ("connect", "send", "recv")


def smtp_seconds(facts: Facts) -> float | None:
    """How long the SMTP conversation took, from the transcript (None if none).

    The one computation behind both ``details.timings.smtp_ms`` and the
    ``mailvet_smtp_duration_seconds`` metric."""
    span = _span_ms(facts, SMTP_KINDS)
    return None if span is None else span / 1000.0


def _span_ms(facts: Facts, kinds: tuple[str, ...]) -> float | None:
    times = [e.at_ms for e in facts.transcript if e.kind in kinds]
    if not times:
        return None
    return round(max(times) - min(times), 2)


CSV_COLUMNS: tuple[str, ...] = ("position", "input", *VERDICT_FIELDS)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """One CSV cell; a string a spreadsheet would read as a formula gets a leading ``'``.

    OWASP's CSV injection guidance: a list collected from sign-up forms can carry
    ``=cmd|' /C calc'!A0``; prefixed, a spreadsheet shows it as text. Booleans are
    ``true``/``false``, None is empty, numbers are written as they are.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    return value


def _csv_row(item: BatchItem) -> list[Any]:
    verdict = item.verdict or {}
    row: list[Any] = [item.position, csv_cell(item.email)]
    row.extend(csv_cell(verdict.get(name)) for name in VERDICT_FIELDS)
    return row


def csv_rows(items: Iterable[BatchItem]) -> Iterable[str]:
    """CSV download, one row per submitted address (verdict columns empty until done)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for item in items:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(_csv_row(item))
        yield buffer.getvalue()


def _jsonl_line(item: BatchItem) -> bytes:
    data = None if item.verdict is None else order_verdict(item.verdict)
    return orjson.dumps({"position": item.position, "input": item.email, "data": data}) + b"\n"


def jsonl_lines(items: Iterable[BatchItem]) -> Iterable[bytes]:
    """JSONL download: ``{"position", "input", "data"}`` per line (data null until done)."""
    for item in items:
        yield _jsonl_line(item)


async def csv_stream(items: AsyncIterable[BatchItem]) -> AsyncIterator[bytes]:
    """``csv_rows`` over the store's item iterator, UTF-8, in pieces of ~``STREAM_CHUNK``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    async for item in items:
        writer.writerow(_csv_row(item))
        if buffer.tell() >= STREAM_CHUNK:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


async def jsonl_stream(items: AsyncIterable[BatchItem]) -> AsyncIterator[bytes]:
    """``jsonl_lines`` over the store's item iterator, in pieces of ~``STREAM_CHUNK``."""
    buffer = bytearray()
    async for item in items:
        buffer += _jsonl_line(item)
        if len(buffer) >= STREAM_CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` refuses it)."""
    if not accept_encoding:
        return False
    for part in accept_encoding.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0.0:
            return True
    return False


async def gzip_stream(chunks: AsyncIterable[bytes], level: int = 6) -> AsyncIterator[bytes]:
    """``chunks`` gzip-compressed as they come (one stream, never buffered whole)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    async for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()
