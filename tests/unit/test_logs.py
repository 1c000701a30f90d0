"""Log lines (mailvet.logs): timestamp and level on every line, JSON as an option."""

from __future__ import annotations

import logging
import re
import sys

import orjson

from mailvet.logs import JsonFormatter, TextFormatter, logging_config
from mailvet.settings import Settings

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("disk full")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "mailvet.jobs.inprocess", logging.WARNING, __file__, 1, msg, args, exc_info
    )


def test_text_lines_carry_a_utc_timestamp_level_and_logger() -> None:
    line = TextFormatter().format(_record("batch %s finished", "b1"))
    assert re.fullmatch(rf"{STAMP} WARNING mailvet\.jobs\.inprocess: batch b1 finished", line)


def test_json_lines_are_one_object_each_with_the_traceback_inside() -> None:
    line = JsonFormatter().format(_record("batch %s: chunk failed", "b1", exc=True))
    assert "\n" not in line
    data = orjson.loads(line)
    assert re.fullmatch(STAMP, data["time"])
    assert data["level"] == "WARNING" and data["logger"] == "mailvet.jobs.inprocess"
    assert data["message"] == "batch b1: chunk failed"
    assert "RuntimeError: disk full" in data["exception"]


def test_config_applies_the_level_to_mailvet_and_uvicorn_and_keeps_access_off() -> None:
    config = logging_config(Settings(log_level="warning", log_format="json"))
    for name in ("mailvet", "uvicorn", "uvicorn.error"):
        assert config["loggers"][name]["level"] == "WARNING"
    assert config["loggers"]["uvicorn.access"] == {"handlers": [], "propagate": False}
    assert config["formatters"]["mailvet"]["()"] == "mailvet.logs.JsonFormatter"
    assert config["root"]["handlers"] == ["stderr"]
    text = logging_config(Settings())
    assert text["formatters"]["mailvet"]["()"] == "mailvet.logs.TextFormatter"
    assert text["loggers"]["mailvet"]["level"] == "INFO"
