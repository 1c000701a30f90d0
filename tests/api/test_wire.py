"""The wire shapes: timestamps, verdict order, batch object, downloads."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple, get_type_hints

import orjson
import pytest
from pydantic import Field, ValidationError

from mailvet.api import wire
from mailvet.storage.base import ApiKey, BatchItem, BatchRecord, Plan
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
