"""Evidence collector: every DNS answer and SMTP exchange of one validation, timed."""

from __future__ import annotations

import time

from mailvet.engine.facts import TranscriptEntry

__all__ = ["Transcript"]

_MAX_TEXT = 512  # one entry never holds more than this; hostile servers send megabytes
_MAX_ENTRIES = 200


class Transcript:
    """Append-only, bounded list of ``TranscriptEntry``; cheap when nobody reads it."""

    __slots__ = ("_start", "entries")

    def __init__(self) -> None:
        self._start = time.monotonic()
        self.entries: list[TranscriptEntry] = []

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self._start) * 1000.0

    def add(self, kind: str, text: str, host: str | None = None) -> None:
        if len(self.entries) >= _MAX_ENTRIES:
            return
        if len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + f"... ({len(text)} chars)"
        self.entries.append(TranscriptEntry(round(self.elapsed_ms(), 2), kind, text, host))
