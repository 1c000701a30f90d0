"""Logging for ``mailvet serve``: one stdlib ``dictConfig`` for mailvet's and uvicorn's loggers.

Every line carries a UTC timestamp (ISO 8601, milliseconds) and the level; with
``MAILVET_LOG_FORMAT=json`` each line is one JSON object (``time``, ``level``,
``logger``, ``message`` and ``exception`` when there is one), for log shippers.

The JSON formatter is written here rather than taken from python-json-logger: the
stdlib ``Formatter`` already does the work (message interpolation, timestamps,
tracebacks), what is left is putting five fields through orjson, which mailvet
already depends on. A library would add a runtime dependency for those few lines,
and python-json-logger's default of copying every ``extra`` attribute into the line
is not what we want from a service that must never log addresses.

``mailvet`` and ``uvicorn`` loggers take ``MAILVET_LOG_LEVEL``; everything else
(libraries) is shown from WARNING up. uvicorn's access log stays off: its request
lines carry ``?email=...``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from mailvet.settings import Settings

__all__ = ["JsonFormatter", "TextFormatter", "logging_config"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2026-11-30T06:49:51.123Z INFO mailvet.jobs.inprocess: batch ... finished``."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line).decode()


def logging_config(settings: Settings) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` dictionary; ``mailvet.api.server.run`` applies it
    before uvicorn starts (uvicorn gets ``log_config=None`` and leaves it in place)."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    level = settings.log_level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mailvet": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "mailvet",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            # propagate to the root handler, whatever an earlier configuration said
            "mailvet": {"level": level, "handlers": [], "propagate": True},
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
