"""The files ``mailvet batch`` reads and writes: CSV, plain lists and JSON lines.

Everything streams: the input is read in blocks of lines, the output written in blocks
of rows, so a file of any length runs in bounded memory.

Input
    ``csv``   a header row, then rows; the address is in the column named by
              ``--column`` or found by its header (``email``, ``e-mail``, ``mail``,
              ``address`` ...); the delimiter is the one of ``, ; TAB |`` the header uses
              most (``.tsv``: TAB).
    ``jsonl`` one JSON object a line; the address is the field ``--column`` (default
              ``email``, else the first of the header names above the first object has).
    ``plain`` one address a line; blank lines are skipped.
    Chosen by ``--input-format``, else by extension (``.csv``, ``.tsv``, ``.jsonl``,
    ``.ndjson``), else by the first line (``{`` starts JSON lines; a delimiter or an
    email header name starts CSV; anything else is a plain list).

Output
    The input's own columns (fields), unchanged, then the verdict's fields (the
    ``data`` object of ``/v1/validate`` but its ``id``: a file row is its own
    identifier), in wire order; a verdict field whose name the input already uses is
    written as ``mailvet_<name>``. A plain list's column is ``input``. CSV cells a
    spreadsheet would read as a formula (starting with ``= + - @`` TAB or CR) get a
    leading ``'``, as the API's CSV download does (OWASP, CSV injection); JSON lines
    are written as they are. ``csv`` or ``jsonl`` by ``--format``, else by the
    output's extension, else the input's format (a plain list gives CSV).

Bad input never crashes: bytes that are not valid in the encoding, lines over
``MAX_LINE`` bytes, a JSON line that is not an object, a CSV without an email column end
the run with a ``BatchFileError`` naming the line; a NUL byte, an empty cell or a JSON
value that is not a string are addresses like any other (``invalid_format``).
"""

from __future__ import annotations

import csv
import operator
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson

from mailvet.verdict import Verdict, new_ids

if TYPE_CHECKING:
    from mailvet.engine.pipeline import Engine
    from mailvet.parallel import BlockWork

__all__ = [
    "EMAIL_HEADERS",
    "INPUT_FORMATS",
    "MAX_LINE",
    "VERDICT_COLUMNS",
    "BatchFileError",
    "InputFile",
    "NoEmailColumn",
    "NotInEncoding",
    "OfflineCounts",
    "OutputFile",
    "csv_cell",
    "file_fingerprint",
    "guess_email_column",
    "open_input",
    "output_format",
    "run_offline",
    "verdict_column_names",
    "write_validate_json",
]

InputFormat = Literal["csv", "jsonl", "plain"]
INPUT_FORMATS: dict[str, InputFormat] = {"csv": "csv", "jsonl": "jsonl", "plain": "plain"}
OutputFormat = Literal["csv", "jsonl"]
Row = str | list[str] | dict[str, Any]  # plain: the line; csv: the cells; jsonl: the object

MAX_LINE = 1 << 20  # bytes in one line (a CSV field may not exceed it either)
_BLOCK = 1 << 16  # bytes read at a time: under MAX_LINE, so only a block's first line,
# the one that carries the previous block's tail, can be over it
_FLUSH_ROWS = 4096  # rows gathered before one write
# addresses of a plain list checked in this process before worker processes take the
# rest (mailvet.parallel): a short list never starts one, and the workers, forked after
# these, start with the domains they filled the caches with
PARALLEL_AFTER = 20_000

# header names taken for the address column, in order of preference, compared after
# lower-casing and dropping everything but letters and digits
EMAIL_HEADERS = (
    "email",
    "emailaddress",
    "e-mail",
    "mail",
    "mailaddress",
    "address",
    "emails",
    "courriel",
    "correo",
)
_DELIMITERS = (",", ";", "\t", "|")
_EXTENSIONS: dict[str, InputFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "plain",
}

# the verdict's fields a file gets: all of the data object but its id
VERDICT_COLUMNS: tuple[str, ...] = tuple(f for f in Verdict._fields if f != "id")
_PREFIX = "mailvet_"


class BatchFileError(ValueError):
    """A file that cannot be read (or written) as asked; the message says where and why."""


class NotInEncoding(BatchFileError):
    """Bytes that are not valid in the file's encoding (``line``: 1-based; ``byte``: the
    first bad one)."""

    def __init__(self, message: str, *, line: int, byte: int, encoding: str) -> None:
        super().__init__(message)
        self.line, self.byte, self.encoding = line, byte, encoding


class NoEmailColumn(BatchFileError):
    """No column (field) of the header is named like an address's (``names``: them all)."""

    def __init__(self, message: str, names: Sequence[str]) -> None:
        super().__init__(message)
        self.names = list(names)


# ---- cells ----------------------------------------------------------------------------

# the API's CSV download guards the same starts (api/wire.py csv_cell); kept here so the
# command does not import the web stack
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One CSV cell's text, before quoting: formula-looking strings get a leading ``'``,
    booleans are ``true``/``false``, None is empty, other values their JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()  # a nested JSON value carried over from JSON lines


def _quote(text: str, delimiter: str) -> str:
    if '"' in text or delimiter in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _csv_line(cells: Iterable[Any], delimiter: str = ",") -> str:
    return delimiter.join(_quote(csv_cell(c), delimiter) for c in cells)


# ---- reading --------------------------------------------------------------------------


def _blocks(stream: IO[bytes], encoding: str, name: str) -> Iterator[list[str]]:
    """The lines of ``stream`` (without line ends), a block at a time.

    Raises ``BatchFileError`` for a line over ``MAX_LINE`` bytes or bytes that are not
    valid ``encoding``, with the line's number.
    """
    tail = b""
    line_no = 0  # lines yielded so far
    first = True
    while True:
        chunk = stream.read(_BLOCK)
        if not chunk:
            break
        data = tail + chunk if tail else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            tail = data
            if len(tail) > MAX_LINE:
                raise BatchFileError(f"{name}: line {line_no + 1} is over {MAX_LINE} bytes")
            continue
        tail = data[cut + 1 :]
        body = data[:cut]
        if first:
            body = body.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
            first = False
        lines = _decode(body, encoding, name, line_no).split("\n")
        if len(body) > MAX_LINE and len(lines[0].encode(encoding)) > MAX_LINE:
            raise BatchFileError(f"{name}: line {line_no + 1} is over {MAX_LINE} bytes")
        if len(tail) > MAX_LINE:
            raise BatchFileError(
                f"{name}: line {line_no + len(lines) + 1} is over {MAX_LINE} bytes"
            )
        line_no += len(lines)
        yield lines
    if tail:
        if first:
            tail = tail.removeprefix(b"\xef\xbb\xbf")
        yield _decode(tail, encoding, name, line_no).split("\n")


def _decode(body: bytes, encoding: str, name: str, before: int) -> str:
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        line = before + body.count(b"\n", 0, exc.start) + 1
        bad = body[exc.start : exc.start + 1].hex()
        raise NotInEncoding(
            f"{name}: line {line} is not valid {encoding} (byte 0x{bad}): save it as UTF-8"
            " or name its encoding (mailvet batch --encoding, e.g. --encoding cp1252)",
            line=line,
            byte=body[exc.start],
            encoding=encoding,
        ) from None
    except LookupError:
        raise BatchFileError(f"unknown encoding {encoding!r}") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


def _header_key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _find_column(names: Sequence[str], wanted: str | None, what: str) -> int:
    if wanted is not None:
        for exact in (True, False):
            for i, name in enumerate(names):
                if name == wanted if exact else name.strip().lower() == wanted.strip().lower():
                    return i
        raise BatchFileError(f"no {what} named {wanted!r} (there are: {_listed(names)})")
    found = guess_email_column(names)
    if found is not None:
        return found
    raise NoEmailColumn(
        f"no email {what} found (there are: {_listed(names)}); name it with --column", names
    )


def guess_email_column(names: Sequence[str]) -> int | None:
    """The index of the address's column, found by its header name (``EMAIL_HEADERS``,
    in order of preference); None when no name fits. The dashboard's upload asks too."""
    keys = [_header_key(n) for n in names]
    for candidate in EMAIL_HEADERS:
        key = _header_key(candidate)
        if key in keys:
            return keys.index(key)
    return None


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:20])
    return shown + (", ..." if len(names) > 20 else "") if names else "none"


@dataclass
class InputFile:
    """An opened input: its format, its columns and its rows, read once, in order."""

    name: str
    fmt: InputFormat
    columns: list[str]  # csv: the header; plain: ["input"]; jsonl: the first object's keys
    email_column: int | str  # csv: index; jsonl: field name; plain: 0
    delimiter: str
    _lines: _BlockLines
    _stream: IO[bytes]
    _pending: list[str] = field(default_factory=list)
    _line_no: int = 0

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def plain_blocks(self) -> Iterator[list[str]]:
        """Plain lists: the addresses (stripped, blank lines left out), a block at a time."""
        assert self.fmt == "plain"
        pending, self._pending = self._pending, []
        for block in _chain_blocks(pending, self._lines):
            out = [line.strip() for line in block]
            if "" in out:
                out = [line for line in out if line]
            if out:
                yield out

    def rows(self) -> Iterator[tuple[str, Row]]:
        """``(address, row)`` for every record, in file order; the address stripped."""
        if self.fmt == "plain":
            for block in self.plain_blocks():
                for raw in block:
                    yield raw, raw
        elif self.fmt == "csv":
            yield from self._csv_rows()
        else:
            yield from self._json_rows()

    def _csv_rows(self) -> Iterator[tuple[str, Row]]:
        index = self.email_column
        assert isinstance(index, int)
        width = len(self.columns)
        reader = csv.reader(
            (line + "\n" for line in _chain(self._pending, self._lines)),
            delimiter=self.delimiter,
        )
        self._pending = []
        try:
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # a blank line
                if len(cells) != width:
                    if len(cells) < width:
                        cells.extend([""] * (width - len(cells)))
                    elif any(c.strip() for c in cells[width:]):
                        raise BatchFileError(
                            f"{self.name}: line {reader.line_num + self._line_no} has"
                            f" {len(cells)} cells, the header {width}"
                        )
                    else:  # trailing empty cells ("a,b,c,,"): nothing is lost
                        del cells[width:]
                yield cells[index].strip(), cells
        except csv.Error as exc:
            line = reader.line_num + self._line_no
            raise BatchFileError(f"{self.name}: line {line}: {exc}") from None

    def _json_rows(self) -> Iterator[tuple[str, Row]]:
        key = self.email_column
        assert isinstance(key, str)
        line_no = self._line_no
        for line in _chain(self._pending, self._lines):
            line_no += 1
            if not line.strip():
                continue
            obj = _json_object(line, self.name, line_no)
            value = obj.get(key)
            if value is None:
                raw = ""
            elif isinstance(value, str):
                raw = value.strip()
            else:
                raw = orjson.dumps(value).decode()
            yield raw, obj
        self._pending = []


def _chain(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


def _chain_blocks(first: list[str], rest: _BlockLines) -> Iterator[list[str]]:
    if first:
        yield first
    yield from rest.rest()


class _BlockLines:
    """The lines of ``_blocks`` one by one, or (``rest``) block by block from where the
    line reader stopped."""

    def __init__(self, blocks: Iterator[list[str]]) -> None:
        self._blocks = blocks
        self._block: list[str] = []
        self._at = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while self._at >= len(self._block):
            self._block = next(self._blocks)
            self._at = 0
        self._at += 1
        return self._block[self._at - 1]

    def rest(self) -> Iterator[list[str]]:
        if self._at < len(self._block):
            yield self._block[self._at :]
        self._block, self._at = [], 0
        yield from self._blocks


def _json_object(line: str, name: str, line_no: int) -> dict[str, Any]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BatchFileError(f"{name}: line {line_no} is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BatchFileError(f"{name}: line {line_no} is not a JSON object")
    return obj


def _guess_format(path: str, first: str) -> InputFormat:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".csv", ".tsv", ".jsonl", ".ndjson"):
        return _EXTENSIONS[ext]
    text = first.strip()
    if text.startswith("{"):
        return "jsonl"
    if any(d in text for d in _DELIMITERS) or _header_key(text) in {
        _header_key(h) for h in EMAIL_HEADERS
    }:
        return "csv"
    return "plain"


def open_input(
    path: str,
    *,
    fmt: InputFormat | None = None,
    column: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    stdin: IO[bytes] | None = None,
) -> InputFile:
    """Open ``path`` (``-``: ``stdin``), find its format and its address column.

    Raises ``BatchFileError`` (or ``OSError`` for a file that cannot be opened)."""
    import sys

    stream: IO[bytes] = (stdin or sys.stdin.buffer) if path == "-" else open(path, "rb")
    name = "stdin" if path == "-" else path
    try:
        lines = _BlockLines(_blocks(stream, encoding, name))
        pending: list[str] = []
        first = ""
        for line in lines:  # the first non-blank line
            pending.append(line)
            if line.strip():
                first = line
                break
        chosen = fmt or _guess_format(path, first)
        if chosen == "plain":
            if column is not None:
                raise BatchFileError("--column applies to CSV and JSON lines, not plain lists")
            return InputFile(name, "plain", ["input"], 0, ",", lines, stream, pending)
        if chosen == "jsonl":
            keys: list[str] = []
            if first.strip():
                blank = len(pending) - 1
                keys = list(_json_object(first, name, blank + 1))
            if column is None:
                key = "email"
                if keys and key not in keys:
                    key = keys[_find_column(keys, None, "field")]
            else:
                key = column
            return InputFile(name, "jsonl", keys, key, ",", lines, stream, pending)
        # csv: the first non-blank line is the header
        if delimiter is None:
            if path.lower().endswith(".tsv"):
                delimiter = "\t"
            else:
                counts = [(first.count(d), -i, d) for i, d in enumerate(_DELIMITERS)]
                delimiter = max(counts)[2] if max(counts)[0] else ","
        try:
            header = next(csv.reader([first + "\n"], delimiter=delimiter)) if first else []
        except csv.Error as exc:
            raise BatchFileError(f"{name}: the header line: {exc}") from None
        if not header:
            raise BatchFileError(f"{name}: empty file: no header line")
        index = _find_column(header, column, "column")
        return InputFile(name, "csv", header, index, delimiter, lines, stream, [], len(pending))
    except BaseException:
        stream.close()
        raise


def file_fingerprint(path: str) -> str:
    """What names a stored batch: SHA-256 over the file's absolute path, its size and
    the SHA-256 of its content (hex, 32 digits). The same file, unchanged, gives the
    same name; an edited or moved one a new batch."""
    import hashlib

    content = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_BLOCK):
            content.update(chunk)
            size += len(chunk)
    whole = f"{os.path.abspath(path)}\0{size}\0{content.hexdigest()}"
    return hashlib.sha256(whole.encode("utf-8", "surrogateescape")).hexdigest()[:32]


# ---- writing --------------------------------------------------------------------------


def output_format(path: str, explicit: str | None, input_fmt: InputFormat) -> OutputFormat:
    """``--format``, else OUT's extension, else the input's (a plain list gives CSV)."""
    if explicit is not None:
        if explicit not in ("csv", "jsonl"):
            raise BatchFileError(f"--format must be csv or jsonl, not {explicit!r}")
        return "csv" if explicit == "csv" else "jsonl"
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if ext in (".csv", ".tsv", ".txt"):
        return "csv"
    return "jsonl" if input_fmt == "jsonl" else "csv"


def _not_a_file(path: str) -> bool:
    """Whether ``path`` exists and is not a regular file (a device, a FIFO ...), links
    followed."""
    import stat

    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # not there (yet): a new file
        return False


def verdict_column_names(taken: Iterable[str]) -> list[str]:
    """The verdict's column names after the input's ``taken`` ones: a name the input
    already uses gets ``mailvet_`` in front (the dashboard's downloads name them so too)."""
    used = set(taken)
    return [_PREFIX + f if f in used else f for f in VERDICT_COLUMNS]


_verdict_names = verdict_column_names


_VERDICT_SET = frozenset(VERDICT_COLUMNS)


class OutputFile:
    """Rows out, in blocks; written to a hidden ``.part`` file beside ``path`` and
    renamed over it by ``commit()``, so ``path`` only ever holds a whole result
    (``-``: stdout)."""

    def __init__(
        self, path: str, fmt: OutputFormat, source: InputFile, *, stdout: IO[bytes] | None = None
    ) -> None:
        import sys

        self.path = path
        self.fmt = fmt
        self.source = source
        if path.lower().endswith(".tsv"):
            self.delimiter = "\t"
        elif source.fmt == "csv":
            self.delimiter = source.delimiter
        else:
            self.delimiter = ","
        starts = re.escape("".join(_FORMULA_START))
        # (no "^" alternative: it would stop the regex engine's first-character scan)
        self._care = re.compile(f'["\r\n]|{re.escape(self.delimiter)}[{starts}]').search
        self._tmp: Path | None = None
        self._target = Path(path)
        if path == "-":
            self._out: IO[bytes] = stdout or sys.stdout.buffer
        elif _not_a_file(path):
            # /dev/null, a FIFO, a terminal: written to as it is (renaming a .part file
            # over it would put a regular file in its place, /dev/null included)
            self._out = open(path, "wb")
        else:
            # through a symbolic link (/dev/stdout, a link to a file), the file it names
            # is replaced, never the link
            target = Path(os.path.realpath(path))
            self._target = target
            self._tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
            self._out = open(self._tmp, "wb")
        self._buf: list[str] = []
        self.end = "\r\n" if fmt == "csv" else "\n"
        self.input_columns = list(source.columns)
        self.verdict_names = _verdict_names(self.input_columns)
        self._clash = _VERDICT_SET.intersection(self.input_columns)
        self.encoder = _Encoder(
            fmt, list(zip(VERDICT_COLUMNS, self.verdict_names, strict=True)), self.delimiter
        )
        if fmt == "csv":
            header = [*self.input_columns, *self.verdict_names]
            self._buf.append(_csv_line(header, self.delimiter) + "\r\n")

    def write(self, row: Row, verdict: Verdict | Mapping[str, Any] | None) -> None:
        """One row: the input's row with its verdict (a Verdict, a stored data dict, or
        None: empty verdict columns)."""
        self.append_line(self.line(row, verdict))

    def line(self, row: Row, verdict: Verdict | Mapping[str, Any] | None) -> str:
        """The row's text, with its line end."""
        return self.body(row, verdict) + self.end

    def body(self, row: Row, verdict: Verdict | Mapping[str, Any] | None) -> str:
        """The row's text, without its line end."""
        if self.fmt == "csv":
            part = (
                self.encoder.verdict_text(verdict)
                if isinstance(verdict, tuple)
                else self.encoder.full(verdict)
            )
            return self.user_cells(row) + self.delimiter + part
        if isinstance(row, dict) and not self._clash.issuperset(_VERDICT_SET.intersection(row)):
            # this object has its own field named like a verdict field the first had not
            names = _verdict_names(row)
            encoder = _Encoder("jsonl", list(zip(VERDICT_COLUMNS, names, strict=True)))
            return self._json_body(row, encoder.full(verdict))
        if isinstance(verdict, tuple):
            return self._json_body(row, self.encoder.verdict_text(verdict))
        return self._json_body(row, self.encoder.full(verdict))

    def fast_body(self, row: Row, verdict_part: str) -> str | None:
        """The row's text (no line end) with an encoded verdict part; None when this
        row needs the general path (a JSON object with its own verdict-named fields)."""
        if self.fmt == "csv":
            return self.user_cells(row) + self.delimiter + verdict_part
        if isinstance(row, dict) and not self._clash.issuperset(_VERDICT_SET.intersection(row)):
            return None
        return self._json_body(row, verdict_part)

    def _json_body(self, row: Row, part: str) -> str:
        members = self.user_members(row)
        return "{" + members + ("," if members else "") + part + "}"

    def user_cells(self, row: Row) -> str:
        """The input's columns as CSV text (no line end)."""
        if isinstance(row, str):
            return _quote(csv_cell(row), self.delimiter)
        if isinstance(row, list):
            d = self.delimiter
            line = d.join(row)
            # no cell holds the delimiter (the count says so), a quote or a line break, and
            # none starts like a formula: the cells go out as they came
            if (
                line.count(d) == len(row) - 1
                and self._care(line) is None
                and not line.startswith(_FORMULA_START)
            ):
                return line
            return _csv_line(row, d)
        return _csv_line((row.get(c) for c in self.input_columns), self.delimiter)

    def user_members(self, row: Row) -> str:
        """The input's columns as JSON object members (no braces)."""
        if isinstance(row, str):
            return '"input":' + orjson.dumps(row).decode()
        obj = dict(zip(self.input_columns, row, strict=False)) if isinstance(row, list) else row
        return orjson.dumps(obj).decode()[1:-1]

    def append_line(self, line: str) -> None:
        self._buf.append(line)
        if len(self._buf) >= _FLUSH_ROWS:
            self.flush()

    def write_encoded(self, data: bytes) -> None:
        """Text already encoded (after what ``write`` / ``append_line`` buffered)."""
        self.flush()
        self._out.write(data)

    def fileno(self) -> int | None:
        """The output's file descriptor (None when it has none: an in-memory stream)."""
        return _fileno(self._out)

    def flush_all(self) -> None:
        """Everything written so far out of this process's buffers (before a fork)."""
        self.flush()
        self._out.flush()

    def flush(self) -> None:
        if self._buf:
            self._out.write("".join(self._buf).encode("utf-8"))
            self._buf.clear()

    def commit(self) -> None:
        """Write what is left and put the file in place."""
        self.flush()
        if self._tmp is None:
            self._out.flush()
            if self.path != "-":
                self._out.close()
            return
        self._out.close()
        os.replace(self._tmp, self._target)
        self._tmp = None

    def discard(self) -> None:
        """Drop a partial output (after an error or an interruption)."""
        if self._tmp is None:
            if self.path != "-":
                self._out.close()
            return
        self._out.close()
        self._tmp.unlink(missing_ok=True)
        self._tmp = None


# ---- verdict encoding -----------------------------------------------------------------

# the verdict fields that differ between addresses sharing an offline template, and
# ``domain``: with it put in per row too, the text around them is the same for every
# domain with the same verdict, so a few cached texts serve a list of many domains
_PER_ADDRESS = ("id", "email", "username", "did_you_mean")
_PER_ROW = (*_PER_ADDRESS, "domain")
# stand-ins for them while a template's text is made: private-use characters, which
# neither CSV quoting nor JSON escaping touches
_MARKS = tuple(f"\ue000{i}\ue001" for i in range(len(_PER_ROW)))
_CACHE_SIZE = 1 << 17  # templates known by identity (the engine memo holds 100,000 domains)
_TEXT_CACHE_SIZE = 4096  # distinct texts
_SLOW_CACHE_SIZE = 1 << 16  # full-path rows kept by address


class _Encoder:
    """A verdict's part of a row (CSV cells or JSON object members), from a Verdict or
    a stored data dict; ``segments`` is the offline fast path's per-template cache."""

    def __init__(self, fmt: str, names: list[tuple[str, str]], delimiter: str = ",") -> None:
        self.csv = fmt == "csv"
        self.delimiter = delimiter
        self.fields = [f for f, _ in names]
        self.per_address = tuple(f for f in self.fields if f in _PER_ROW)
        self._keys = [orjson.dumps(out).decode() + ":" for _, out in names]
        self._cache: dict[int, tuple[Verdict, tuple[str, ...]]] = {}
        self._texts: dict[tuple[object, ...], tuple[str, ...]] = {}
        self._shared = [i for i, f in enumerate(Verdict._fields) if f not in _PER_ROW]
        self._shared_of = operator.itemgetter(*self._shared)
        self._per_address_at = [Verdict._fields.index(f) for f in self.per_address]
        self.cache_get = self._cache.get
        # the last text piece (it holds the result) -> the result, for counting rows
        self.result_of: dict[str, str] = {}

    def full(self, verdict: Verdict | Mapping[str, Any] | None) -> str:
        if verdict is None:
            values: list[Any] = [None] * len(self.fields)
        elif isinstance(verdict, tuple):
            data = verdict.as_dict()
            values = [data[f] for f in self.fields]
        else:
            values = [verdict.get(f) for f in self.fields]
        if self.csv:
            return _csv_line(values, self.delimiter)
        dumps = orjson.dumps
        return ",".join(k + dumps(v).decode() for k, v in zip(self._keys, values, strict=True))

    def verdict_text(self, verdict: Verdict) -> str:
        """``full(verdict)``, from the cached text of verdicts like it (the slow path's
        rows: malformed, quoted, non-ASCII addresses)."""
        shared = self._shared_of(verdict)
        segs = self._texts.get(shared)
        if segs is None:
            segs = self._segments(verdict)
            if len(self._texts) >= _TEXT_CACHE_SIZE:
                self._texts.clear()
            self._texts[shared] = segs
        pieces = [segs[0]]
        if self.csv:
            delimiter = self.delimiter
            for at, seg in zip(self._per_address_at, segs[1:], strict=True):
                pieces.append(_quote(csv_cell(verdict[at]), delimiter))
                pieces.append(seg)
        else:
            for at, seg in zip(self._per_address_at, segs[1:], strict=True):
                pieces.append(orjson.dumps(verdict[at]).decode())
                pieces.append(seg)
        return "".join(pieces)

    def segments(self, template: Verdict) -> tuple[str, ...]:
        """The text around the per-address fields (in ``per_address`` order) for
        ``template``'s other values: one piece more than there are such fields. The
        caller puts the fields in between, as they are (CSV) or in quotes (JSON)."""
        key = id(template)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is template:
            return hit[1]
        shared = self._shared_of(template)
        segs = self._texts.get(shared)
        if segs is None:
            segs = self._segments(template)
            if len(self._texts) >= _TEXT_CACHE_SIZE:
                self._texts.clear()
            self._texts[shared] = segs
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = (template, segs)
        return segs

    def _segments(self, template: Verdict) -> tuple[str, ...]:
        data = template.as_dict()
        for name, mark in zip(self.per_address, _MARKS, strict=False):
            data[name] = mark
        text = self.full(data)
        pieces: list[str] = []
        for mark in _MARKS[: len(self.per_address)]:
            before, found, text = text.partition(mark if self.csv else f'"{mark}"')
            assert found, "a template's text lost a field"
            pieces.append(before)
        pieces.append(text)
        self.result_of[text] = template.result.value  # few: offline verdicts vary little
        return tuple(pieces)


# ---- the offline run ------------------------------------------------------------------


@dataclass
class OfflineCounts:
    rows: int = 0
    by_result: dict[str, int] = field(default_factory=dict)


def run_offline(
    engine: Engine,
    source: InputFile,
    out: OutputFile,
    progress: Callable[[int], None] | None = None,
    *,
    jobs: int = 1,
) -> OfflineCounts:
    """Every row of ``source`` with its offline verdict into ``out`` (not committed).
    A long input is checked in ``jobs`` worker processes (``mailvet.parallel``), its
    rows written in order."""
    from mailvet.parallel import run_blocks

    work: BlockWork
    blocks: Iterable[list[Any]]
    if source.fmt == "plain" and _fast_writer(out):
        # the hot path of `mailvet batch --offline LIST` (bench/cli_offline.py)
        work, blocks = _OfflineRows(engine, out), source.plain_blocks()
    else:
        work, blocks = _RecordRows(engine, out), _record_blocks(source.rows())
    done, by_result = run_blocks(
        work,
        blocks,
        write=out.write_encoded,
        fd=out.fileno(),
        before_fork=out.flush_all,
        jobs=jobs,
        start_after=PARALLEL_AFTER,
        progress=progress,
    )
    return OfflineCounts(done, by_result)


def _fast_writer(out: OutputFile) -> bool:
    """Whether ``out``'s rows can be put together from cached text around the address:
    ``offline_template`` / ``offline_domain`` answer only addresses of ASCII atext, dots
    and an LDH domain, whose text needs no CSV quoting or JSON escaping, only the formula
    guard (a delimiter that is atext, "|", keeps them off this path)."""
    per_address = ("email", "username", "domain", "did_you_mean")
    return out.encoder.per_address == per_address and out.delimiter in ",;\t"


def _record_blocks(records: Iterator[tuple[str, Row]]) -> Iterator[list[tuple[str, Row]]]:
    block: list[tuple[str, Row]] = []
    for record in records:
        block.append(record)
        if len(block) >= _FLUSH_ROWS:
            yield block
            block = []
    if block:
        yield block


class _RecordRows:
    """``run_offline``'s rows for a block of ``(address, row)`` records of any input
    (CSV, JSON lines): ``(how many, their text, rows by result)``.

    The verdict part of the row for an address the engine answers from its per-domain
    memo (nearly all) is text cached per verdict template (``Engine.offline_template``)
    with the address's own fields put in; the rest goes through the full encoder."""

    def __init__(self, engine: Engine, out: OutputFile) -> None:
        self._out = out
        self._template_of = engine.offline_template
        self._verdict_of = engine.verdict_offline
        self._fast = _fast_writer(out)
        # Per template object: the text of its row part in four pieces around email,
        # username and did_you_mean (its domain written in), and how many rows of the
        # block used it.
        self._entries: dict[int, list[Any]] = {}

    def _entry(self, template: Verdict) -> list[Any]:
        entries = self._entries
        entries.pop(id(template), None)  # a template freed since, its id reused
        if len(entries) >= _CACHE_SIZE:
            entries.clear()
        s0, s1, s2, s3, s4 = self._out.encoder.segments(template)
        domain = template.domain
        if self._out.fmt == "csv":
            new = [template, s0, s1, f"{s2}{domain}{s3}", s4, 0, s4]
        else:
            new = [template, f'{s0}"', f'"{s1}"', f'"{s2}"{domain}"{s3}', s4, 0, s4]
        entries[id(template)] = new
        return new

    def __call__(self, block: list[tuple[str, Row]]) -> tuple[int, bytes, dict[str, int]]:
        out = self._out
        template_of = self._template_of if self._fast else None
        entry_of = self._entries.get
        csv_out = out.fmt == "csv"
        by_result: dict[str, int] = {}
        touched: list[list[Any]] = []  # the entries used in this block (count > 0)
        rows = _Pieces()
        end = out.end
        for raw, row in block:
            parts = template_of(raw) if template_of and raw and raw[0] not in "=+-" else None
            line = None
            if parts is not None:
                template, email, username, dym = parts
                ent = entry_of(id(template))
                if ent is None or ent[0] is not template:
                    ent = self._entry(template)
                if csv_out:
                    part = f"{ent[1]}{email}{ent[2]}{username}{ent[3]}{dym or ''}{ent[4]}"
                else:
                    d = "null" if dym is None else f'"{dym}"'
                    part = f"{ent[1]}{email}{ent[2]}{username}{ent[3]}{d}{ent[4]}"
                line = out.fast_body(row, part)
                if line is not None:
                    if not ent[5]:
                        touched.append(ent)
                    ent[5] += 1
            if line is None:
                verdict = self._verdict_of(raw)
                result = verdict.result.value
                by_result[result] = by_result.get(result, 0) + 1
                line = out.body(row, verdict)
            rows.row(line)
            rows.append(end)
        result_of = out.encoder.result_of
        for ent in touched:
            result = result_of[ent[6]]
            by_result[result] = by_result.get(result, 0) + ent[5]
            ent[5] = 0
        return len(block), rows.encoded(), by_result


def write_validate_json(
    engine: Engine, blocks: Iterable[list[str]], out: IO[bytes], *, jobs: int = 1
) -> int:
    """``mailvet validate --offline --json``: one data object a line (with its id) for
    every address of every block, a block written at a time; returns how many. A long
    input is checked in ``jobs`` worker processes (``mailvet.parallel``)."""
    from mailvet.parallel import run_blocks

    n, _ = run_blocks(
        _ValidateRows(engine),
        blocks,
        write=out.write,
        fd=_fileno(out),
        before_fork=out.flush,
        jobs=jobs,
        start_after=PARALLEL_AFTER,
    )
    return n


def _fileno(stream: IO[bytes]) -> int | None:
    """The stream's file descriptor; None for an in-memory one."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


class _ValidateRows:
    """``write_validate_json``'s rows for a block of addresses: ``(how many, their
    text, {})``, UTF-8, a line each, no line end after the last."""

    def __init__(self, engine: Engine) -> None:
        enc = _Encoder("jsonl", [(f, f) for f in Verdict._fields])
        self._fast = enc.per_address == ("id", "email", "username", "domain", "did_you_mean")
        self._verdict_of = engine.verdict_offline
        # the row's text per domain and kind of local part, in pieces around the id and
        # the address (_RowTexts; JSON needs no formula guard, these addresses no escaping)
        self._texts = _RowTexts(engine, enc, "validate", "", "\n")
        self._kinds = _LocalKinds(engine, guard=False)
        # the full path's rows (malformed, quoted, non-ASCII addresses) by address, in
        # two pieces around the id: lists repeat them ("NULL", "n/a", the same typo)
        self._slow: dict[str, tuple[str, str]] = {}

    def __call__(self, block: list[str]) -> tuple[int, bytes, dict[str, int]]:
        texts = self._texts
        text_of = texts.get if self._fast else _never
        kinds = self._kinds
        kind_of = kinds.get
        verdict_of = self._verdict_of
        slow_of = self._slow.get
        max_path = _MAX_PATH
        rows = _Pieces()
        extend = rows.extend
        for raw, new in zip(block, new_ids(len(block)), strict=True):
            local, _, domain = raw.partition("@")
            ent = text_of(domain)
            if ent is None:
                ent = texts.add(domain)
            if ent and len(raw) <= max_path:
                kind = kind_of(local)
                if kind is None:
                    kind = kinds.add(local)
                if kind:
                    t = ent[kind]
                    if t is None:
                        t = texts.role(domain, ent)
                    if t:
                        if ent[0]:
                            extend((t[8], new, t[0], local, t[3], local, t[4], local, t[5]))
                        else:
                            extend((t[8], new, t[0], local, t[3], local, t[2]))
                        continue
            known = slow_of(raw)
            if known is None:
                verdict = verdict_of(raw)
                text = orjson.dumps(verdict.as_dict()).decode()
                at = text.index(verdict.id)
                known = self._slow_add(raw, text[:at], f"{text[at + len(verdict.id) :]}\n")
            rows.row(f"{known[0]}{new}{known[1]}")
        return len(block), rows.encoded(), {}

    def _slow_add(self, raw: str, before: str, after: str) -> tuple[str, str]:
        if len(self._slow) >= _SLOW_CACHE_SIZE:
            self._slow.clear()
        known = self._slow[raw] = (before, after)
        return known


class _OfflineRows:
    """``run_offline``'s rows for a block of a plain list (``out``'s format, the
    verdict's text per domain and kind of local part, _RowTexts): ``(how many, their
    text, rows by result)``; the text has no line end after the last row."""

    def __init__(self, engine: Engine, out: OutputFile) -> None:
        enc = out.encoder
        self._csv = out.fmt == "csv"
        self._out = out
        self._result_of = enc.result_of
        self._verdict_of = engine.verdict_offline
        mode = "csv" if self._csv else "jsonl"
        self._texts = _RowTexts(engine, enc, mode, out.delimiter, out.end)
        self._kinds = _LocalKinds(engine, guard=True)
        # the full path's rows (malformed, quoted, non-ASCII addresses) and their
        # results by address: lists repeat them ("NULL", "n/a", the same typo)
        self._slow: dict[str, tuple[str, str]] = {}

    def __call__(self, block: list[str]) -> tuple[int, bytes, dict[str, int]]:
        texts = self._texts
        text_of = texts.get
        kinds = self._kinds
        kind_of = kinds.get
        verdict_of = self._verdict_of
        slow_of = self._slow.get
        max_path = _MAX_PATH
        body = self._out.body
        head = "" if self._csv else '{"input":"'
        by_result: dict[str, int] = {}
        touched: list[list[Any]] = []  # the row texts used in this block (count > 0)
        # the loop below does _ValidateRows' look-ups, inlined in both on purpose: a
        # shared call a row would cost ~5 % of the run (bench/cli_offline.py)
        rows = _Pieces()
        extend = rows.extend
        for raw in block:
            local, _, domain = raw.partition("@")
            ent = text_of(domain)
            if ent is None:
                ent = texts.add(domain)
            if ent and len(raw) <= max_path:
                kind = kind_of(local)
                if kind is None:
                    kind = kinds.add(local)
                if kind:
                    t = ent[kind]
                    if t is None:
                        t = texts.role(domain, ent)
                    if t:
                        if not t[6]:
                            touched.append(t)
                        t[6] += 1
                        if ent[0]:
                            extend((head, raw, t[0], local, t[3], local, t[4], local, t[5]))
                        else:
                            extend((head, raw, t[0], local, t[3], local, t[2]))
                        continue
            known = slow_of(raw)
            if known is None:
                verdict = verdict_of(raw)
                line = body(raw, verdict) + self._out.end
                known = self._slow_add(raw, line, verdict.result.value)
            line, result = known
            by_result[result] = by_result.get(result, 0) + 1
            rows.row(line)
        result_of = self._result_of
        for t in touched:
            result = result_of[t[7]]
            by_result[result] = by_result.get(result, 0) + t[6]
            t[6] = 0
        return len(block), rows.encoded(), by_result

    def _slow_add(self, raw: str, line: str, result: str) -> tuple[str, str]:
        if len(self._slow) >= _SLOW_CACHE_SIZE:
            self._slow.clear()
        known = self._slow[raw] = (line, result)
        return known


class _Pieces(list[str]):
    """A block's rows as the pieces they are made of (``extend``: an ASCII row's pieces,
    its line end included), joined and encoded once at the end: putting each row
    together first (an f-string a row) copied every row's text once more
    (bench/cli_offline.py). ``row`` takes a whole row that may not be ASCII: the pieces
    so far are encoded before it, so that no joined text is made wide (joining and
    encoding a block of ~400-byte rows holding one non-ASCII character: ~0.8 ms
    against ~0.25 ms; such a row is encoded on its own)."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        super().__init__()
        self._done: list[bytes] = []

    def row(self, line: str) -> None:
        if line.isascii():
            self.append(line)
        else:
            self._done.append("".join(self).encode("utf-8"))
            self.clear()
            self._done.append(line.encode("utf-8"))

    def encoded(self) -> bytes:
        """The rows, UTF-8."""
        text = "".join(self).encode("utf-8")  # ASCII: the same bytes, as fast
        if not self._done:
            return text
        self._done.append(text)
        return b"".join(self._done)


_MAX_PATH = 254  # syntax.MAX_PATH (tests/unit/test_batchfile.py checks they agree)


def _never(domain: str) -> Literal[False]:
    return False


class _LocalKinds:
    """Per local part, what the offline fast path makes of it: 0 when the engine's
    ``fast_local_part`` rule refuses it (or, with ``guard``, when it starts like a
    spreadsheet formula: such rows take the general writer), 1 for a personal and 2 for
    a role local part (``Engine.is_role``). Many addresses of a list share one (info,
    sales, first names), and the answer is a dict look-up; the caller checks the
    whole address's length (``fast_local`` is ``len(raw) <= MAX_PATH`` and this)."""

    def __init__(self, engine: Engine, *, guard: bool) -> None:
        from mailvet.engine.syntax import fast_local_part

        self._rule = fast_local_part
        self._is_role = engine.is_role
        self._guard = guard
        self._kinds: dict[str, int] = {}
        self.get = self._kinds.get

    def add(self, local: str) -> int:
        if len(self._kinds) >= _CACHE_SIZE:
            self._kinds.clear()
        if not self._rule(local) or (self._guard and local[0] in "=+-"):
            kind = 0
        else:
            kind = 2 if self._is_role(local) else 1
        self._kinds[local] = kind
        return kind


class _RowTexts:
    """Per typed domain, the text of a row for the addresses ``Engine.offline_domain``
    answers, in pieces around what differs from one address to the next.

    An entry is ``[suggested, person, role, email_domain, suggestion]`` (``suggested``:
    the domain has a typo suggestion; ``email_domain``: the domain as the email field
    writes it, the typed one or its normal form when that differs, upper case), or
    ``False`` for a domain the engine does not answer. ``role`` is None until the
    domain's first role address (``role()``), False when the engine does not answer role
    addresses there. ``person`` and ``role`` are ``[m, n, t, n2, t1, t2, count, last,
    head]``, and a row is (``X`` the id for ``validate``, whose rows start with ``head``;
    the input's cell for ``batch``, whose JSON rows start with ``{"input":"``):

    - ``X m local n2 local t``: no suggestion (``n2`` is ``@``, the email's domain and
      ``n``: ``local n2`` is the email, the address as typed when its domain is already
      in normal form);
    - ``X m local n2 local t1 local t2``: with a suggestion (``t2`` starts with its
      domain).

    The pieces are cut from ``_Encoder.segments`` of the engine's templates, so rows are
    the encoder's text (tests/unit/test_batchfile.py compares whole files with it);
    ``count`` counts the rows of a kind and ``last`` (the last segment) gives their
    result (``_Encoder.result_of``)."""

    def __init__(
        self, engine: Engine, enc: _Encoder, mode: str, delimiter: str, row_end: str
    ) -> None:
        self._domain_of = engine.offline_domain
        self._role_of = engine.offline_role
        self._enc = enc
        self._mode = mode  # "csv", "jsonl" (batch) or "validate"
        self._delimiter = delimiter
        self._row_end = row_end  # ends the last piece of a row
        self._entries: dict[str, list[Any] | Literal[False]] = {}
        self.get = self._entries.get

    def add(self, domain: str) -> list[Any] | Literal[False]:
        """The entry for ``domain``, made now."""
        if len(self._entries) >= _CACHE_SIZE:
            self._entries.clear()
        found = self._domain_of(domain)
        entry: list[Any] | Literal[False] = False
        if found is not None:
            person, email_domain, suggestion = found
            entry = [
                suggestion is not None,
                self._pieces(person, email_domain, suggestion),
                None,  # the role pieces, made for the domain's first role address
                email_domain,
                suggestion,
            ]
        self._entries[domain] = entry
        return entry

    def role(self, domain: str, entry: list[Any]) -> list[Any] | Literal[False]:
        """``entry``'s role pieces, made now (False: role addresses of this domain
        take the general writer)."""
        template = self._role_of(domain)
        pieces: list[Any] | Literal[False] = False
        if template is not None:
            pieces = self._pieces(template, entry[3], entry[4])
        entry[2] = pieces
        return pieces

    def _pieces(self, template: Verdict, email_domain: str, suggestion: str | None) -> list[Any]:
        segs = self._enc.segments(template)
        domain = template.domain
        head = ""
        if self._mode == "csv":  # segments around email, username, domain, did_you_mean
            s0, s1, s2, s3, last = segs
            m, n, middle, end = f"{self._delimiter}{s0}", s1, f"{s2}{domain}{s3}", last
            no_suggestion, quote = "", ""
        elif self._mode == "jsonl":  # the same, after {"input":"raw
            s0, s1, s2, s3, last = segs
            m, n, middle, end = f'",{s0}"', f'"{s1}"', f'"{s2}"{domain}"{s3}', f"{last}}}"
            no_suggestion, quote = "null", '"'
        else:  # validate: segments around id, email, username, domain, did_you_mean
            s0, s1, s2, s3, s4, last = segs
            head = f'{{{s0}"'
            m, n, middle, end = f'"{s1}"', f'"{s2}"', f'"{s3}"{domain}"{s4}', f"{last}}}"
            no_suggestion, quote = "null", '"'
        row_end = self._row_end
        t = f"{middle}{no_suggestion}{end}{row_end}"
        t1, t2 = t, ""
        if suggestion is not None:
            t1, t2 = f"{middle}{quote}", f"@{suggestion}{quote}{end}{row_end}"
        return [m, n, t, f"@{email_domain}{n}", t1, t2, 0, last, head]
