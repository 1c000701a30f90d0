"""The wire shapes: timestamps, verdict order, batch object, downloads."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple, get_type_hints

import orjson
import pytest
from pydantic import Field, ValidationError

from mailvet.api import wire
from mailvet.storage.base import ApiKey, BatchCounts, BatchItem, BatchRecord, Plan
from mailvet.verdict import Reason, Result, Verdict


def test_rfc3339() -> None:
    moment = datetime(2026, 1, 31, 12, 0, 5, 123456, tzinfo=UTC)
    assert wire.rfc3339(moment) == "2026-01-31T12:00:05.123Z"
    other_zone = moment.astimezone(timezone(timedelta(hours=2)))
    assert wire.rfc3339(other_zone) == "2026-01-31T12:00:05.123Z"
    assert wire.rfc3339(moment.replace(tzinfo=None)) == "2026-01-31T12:00:05.123Z"
    assert wire.rfc3339(None) is None


def test_order_verdict_restores_field_order() -> None:
    verdict = Verdict.make(email="a@b.test", score=1, result=Result.UNKNOWN, reason=Reason.TIMEOUT)
    shuffled = dict(reversed(list(verdict.as_dict().items())))
    assert list(wire.order_verdict(shuffled)) == list(Verdict._fields)


def _record(done: int = 0) -> tuple[BatchRecord, ApiKey]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    key = ApiKey(id="k1", name="acme", plan=Plan.PAID, prefix="mv_x", created_at=now)
    record = BatchRecord(
        id="b1", user_id="k1", name=None, size=2, created_at=now, updated_at=now, done=done
    )
    return record, key


def test_batch_object_without_and_with_items() -> None:
    record, key = _record()
    out = wire.batch_object(record, key)
    assert out["user"] == "acme"
    assert out["counts"] == {"deliverable": 0, "undeliverable": 0, "risky": 0, "unknown": 0}
    assert "emails" not in out
    verdict = Verdict.make(
        email="a@b.test", score=100, result=Result.DELIVERABLE, reason=Reason.ACCEPTED_EMAIL
    )
    items = [
        BatchItem(0, "a@b.test", verdict.as_dict()),
        BatchItem(1, "c@d.test", None),
    ]
    out = wire.batch_object(record, key, items)
    assert out["done"] == 1
    assert out["counts"]["deliverable"] == 1
    assert [e["email"] for e in out["emails"]] == ["a@b.test"]


def test_downloads() -> None:
    verdict = Verdict.make(
        email="a@b.test",
        score=100,
        isv_format=True,
        result=Result.DELIVERABLE,
        reason=Reason.ACCEPTED_EMAIL,
    )
    items = [
        BatchItem(0, "a@b.test", verdict.as_dict()),
        BatchItem(1, 'q"x,y', None),
    ]
    csv_text = "".join(wire.csv_rows(items))
    lines = csv_text.split("\r\n")
    assert lines[0].split(",")[:3] == ["position", "input", "id"]
    assert ",true," in lines[1]
    assert lines[2].startswith('1,"q""x,y",')
    rows = [orjson.loads(x) for x in b"".join(wire.jsonl_lines(items)).splitlines()]
    assert rows[0]["data"]["result"] == "deliverable"
    assert rows[1] == {"position": 1, "input": 'q"x,y', "data": None}


def test_error_response() -> None:
    r = wire.error_response(wire.UNAUTHORIZED, 401)
    assert r.status_code == 401
    assert orjson.loads(r.body) == {"data": None, "error": "Unauthorized"}


def test_wire_verdict_model_mirrors_verdict() -> None:
    assert tuple(wire.VerdictOut.model_fields) == Verdict._fields
    verdict = Verdict.make(
        email="a@b.test", score=100, result=Result.DELIVERABLE, reason=Reason.ACCEPTED_EMAIL
    )
    assert wire.VerdictOut.model_validate(verdict.as_dict()).model_dump(mode="json") == (
        verdict.as_dict()
    )


def test_wire_verdict_model_is_built_from_verdict() -> None:
    hints = get_type_hints(Verdict)
    fields = wire.VerdictOut.model_fields
    assert [(name, f.annotation, f.is_required()) for name, f in fields.items()] == [
        (name, hints[name], True) for name in Verdict._fields
    ]
    schema = wire.VerdictOut.model_json_schema()
    assert schema["title"] == "Verdict"
    assert schema["properties"]["id"]["description"] == "uuid of this answer"
    score = schema["properties"]["score"]
    assert (score["minimum"], score["maximum"]) == (0, 100)
    verdict = Verdict.make(email="a@b.test", score=1, result="risky", reason="catch_all")
    with pytest.raises(ValidationError):
        wire.VerdictOut.model_validate(verdict.as_dict() | {"score": 101})


class Small(NamedTuple):
    id: str
    score: int
    flag: bool | None


def test_wire_verdict_model_follows_the_verdict_type(monkeypatch: pytest.MonkeyPatch) -> None:
    # a field added to (or dropped from) Verdict is in the wire model with no other edit
    monkeypatch.setattr(wire, "Verdict", Small)
    model = wire.verdict_model("SmallOut", {"score": Field(ge=0, le=100)})
    assert {name: f.annotation for name, f in model.model_fields.items()} == {
        "id": str,
        "score": int,
        "flag": bool | None,
    }
    with pytest.raises(ValueError, match="not Verdict fields: email"):
        wire.verdict_model("Bad", {"email": Field(description="x")})


def test_csv_download_neutralises_formulas() -> None:
    formula = "=cmd|' /C calc'!A0"
    verdict = Verdict.make(
        email=formula, score=0, result=Result.UNDELIVERABLE, reason=Reason.INVALID_FORMAT
    )
    items = [
        BatchItem(0, formula, verdict.as_dict()),
        BatchItem(1, "+1@x.test", None),
        BatchItem(2, "-2@x.test", None),
        BatchItem(3, "@SUM(A1)", None),
        BatchItem(4, "\tx@y.test", None),
        BatchItem(5, "\rx@y.test", None),
        BatchItem(6, "a=b@x.test", None),
    ]
    rows = list(csv.reader(io.StringIO("".join(wire.csv_rows(items)), newline="")))
    inputs = [row[1] for row in rows[1:]]
    assert inputs == [
        "'" + formula,
        "'+1@x.test",
        "'-2@x.test",
        "'@SUM(A1)",
        "'\tx@y.test",
        "'\rx@y.test",
        "a=b@x.test",  # only a leading character makes a formula
    ]
    email_column = rows[0].index("email")
    assert rows[1][email_column] == "'" + formula  # verdict fields too
    assert rows[1][rows[0].index("score")] == "0"
    # JSON lines carry the text as submitted: no spreadsheet reads them
    assert orjson.loads(next(iter(wire.jsonl_lines(items[:1]))))["input"] == formula


def test_metrics_and_details_share_one_smtp_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailvet.api import metrics as metrics_module
    from mailvet.engine.facts import Facts, SyntaxFacts, TranscriptEntry

    facts = Facts(syntax=SyntaxFacts(ok=False, email="x"), offline=False)
    facts.transcript = [
        TranscriptEntry(2.0, "connect", "mx:25", "mx"),
        TranscriptEntry(5.5, "recv", "250 ok", "mx"),
    ]
    assert wire.smtp_seconds(facts) == 0.0035
    assert wire.details_object(facts, cached=False, total_ms=1.0)["timings"]["smtp_ms"] == 3.5
    monkeypatch.setattr(metrics_module, "smtp_seconds", lambda _facts: 7.0)
    metrics = metrics_module.Metrics()
    metrics.observe_facts(facts)
    assert metrics.registry.get_sample_value("mailvet_smtp_duration_seconds_sum") == 7.0


async def _items(items: list[BatchItem]) -> AsyncIterator[BatchItem]:
    for item in items:
        yield item


async def _collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_batch_stream_writes_the_object_with_emails_last_in_bounded_pieces() -> None:
    record, key = _record(done=1)
    head = wire.batch_object(record, key)
    assert await _collect(wire.batch_stream(head, _items([]))) == [
        orjson.dumps({**head, "emails": []})
    ]
    verdict = Verdict.make(
        email="a@b.test", score=100, result=Result.DELIVERABLE, reason=Reason.ACCEPTED_EMAIL
    )
    shuffled = dict(reversed(list(verdict.as_dict().items())))
    many = [BatchItem(i, "a@b.test", shuffled if i % 3 else None) for i in range(3000)]
    chunks = await _collect(wire.batch_stream(head, _items(many)))
    assert len(chunks) > 3
    assert max(len(c) for c in chunks) < wire.STREAM_CHUNK + 1000
    out = orjson.loads(b"".join(chunks))
    assert list(out) == [*head, "emails"]
    assert len(out["emails"]) == 2000
    assert all(list(e) == list(Verdict._fields) for e in out["emails"])
    assert orjson.loads(b"".join(await _collect(wire.batch_stream({}, _items(many[:2]))))) == {
        "emails": [wire.order_verdict(shuffled)]
    }


async def test_streamed_downloads_match_the_plain_ones_and_gzip_round_trips() -> None:
    verdict = Verdict.make(
        email="a@b.test", score=100, result=Result.DELIVERABLE, reason=Reason.ACCEPTED_EMAIL
    )
    items = [
        BatchItem(i, f"=x{i}@b.test", verdict.as_dict() if i % 2 else None) for i in range(900)
    ]
    csv_bytes = b"".join(await _collect(wire.csv_stream(_items(items))))
    assert csv_bytes == "".join(wire.csv_rows(items)).encode()
    jsonl = b"".join(await _collect(wire.jsonl_stream(_items(items))))
    assert jsonl == b"".join(wire.jsonl_lines(items))
    packed = await _collect(wire.gzip_stream(wire.jsonl_stream(_items(items))))
    assert gzip.decompress(b"".join(packed)) == jsonl
    assert len(packed) > 1  # compressed as it comes, not in one piece at the end


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, br", False),
        ("*", True),
        ("br, identity", False),
        ("gzip;q=abc", False),
        ("x-gzip", True),
    ],
)
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    assert wire.accepts_gzip(header) is expected


def test_batch_status_and_progress() -> None:
    record, key = _record()
    assert wire.batch_status(record) == "queued"
    assert wire.batch_status(replace(record, retry_waiting=2)) == "running"
    assert wire.batch_status(replace(record, done=1)) == "running"
    now = record.created_at
    assert wire.batch_status(replace(record, done=2, finished_at=now)) == "finished"
    assert wire.batch_status(replace(record, finished_at=now, deleted_at=now)) == "deleted"
    out = wire.batch_object(
        replace(record, done=1, retry_waiting=1),
        key,
        counts=BatchCounts({"risky": 1}, {"catch_all": 1}),
    )
    assert out["progress"] == {"done": 1, "total": 2}
    assert out["retry_waiting"] == 1
    assert out["counts"] == {"deliverable": 0, "undeliverable": 0, "risky": 1, "unknown": 0}
    assert out["counts_by_reason"] == {"catch_all": 1}
