"""Uploaded lists for the dashboard: read, preview, keep, and give back with their columns.

Reading
    A file is kept on disk as it arrives (``UploadStash``: never held whole in memory)
    and read as a stream. ``xlsx`` workbooks (found by their content, not their name) are
    read with openpyxl in read-only mode, the first row with a value being the header;
    anything else must be text: CSV, a plain list or JSON lines, read by
    ``mailvet.batchfile`` as ``mailvet batch`` reads them (the address's column found by
    its header, or chosen; the delimiter guessed; a UTF-8 byte order mark dropped). UTF-8
    unless another encoding is chosen.

    Bad files get an ``UploadError`` whose message says what to do, never a stack trace:
    another format (PDF, images, archives, old ``.xls``, OpenDocument, UTF-16 text), bytes
    that are not in the encoding, NUL bytes, a line over ``batchfile.MAX_LINE`` bytes,
    a row wider than the header, no rows, more rows than ``max_rows``
    (``MAILVET_MAX_BATCH_SIZE``) or more bytes than ``MAILVET_MAX_UPLOAD_BYTES``.

Keeping
    The batch keeps the file's header and each row's other cells (``UploadInfo``,
    ``Store.create_batch``'s ``cells``), so that ``download_csv`` writes the rows back
    in their columns' order, the verdict's columns after them for the full download.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import os
import re
import secrets
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from mailvet.batchfile import (
    VERDICT_COLUMNS,
    BatchFileError,
    NoEmailColumn,
    NotInEncoding,
    csv_cell,
    guess_email_column,
    open_input,
    verdict_column_names,
)
from mailvet.storage.base import BatchItem, BatchRecord, Store, UploadInfo
from mailvet.storage.common import dump_cells

__all__ = [
    "DOWNLOADS",
    "ENCODINGS",
    "MAX_COLUMNS",
    "PREVIEW_ROWS",
    "Download",
    "ParsedUpload",
    "Preview",
    "UploadError",
    "UploadStash",
    "download_csv",
    "download_disposition",
    "download_filename",
    "read_preview",
    "read_upload",
    "sniff",
]

PREVIEW_ROWS = 5  # rows shown before the batch starts
MAX_COLUMNS = 1000  # columns a list may have (the preview shows them all)
SNIFF_BYTES = 8192  # bytes looked at to tell a file's kind
COPY_CHUNK = 1 << 16
STREAM_CHUNK = 64 * 1024  # bytes of CSV gathered before a download hands them on
STASH_TTL = 3600.0  # seconds an uploaded file waits for its batch to start
# A workbook is a zip of XML: bound what it may expand to before openpyxl opens it. In
# read-only mode the worksheets stream, but every other part it reads (the shared
# strings, the styles, the theme, relationships, properties, chartsheets ...) is read and
# parsed whole: a few hundred kB of zip can expand into a part that takes gigabytes.
XLSX_MAX_EXPANDED = 2 << 30
XLSX_MAX_SHARED_STRINGS = 128 << 20
XLSX_MAX_PART = 16 << 20  # any part but a worksheet and the shared strings
XLSX_MAX_DIRECTORY = 1 << 20  # bytes of the zip's list of members (some 10,000 of them)
_EOCD_SEARCH = 22 + 65535  # the zip's end record and its longest comment

# encodings the upload form offers: UTF-8, and what spreadsheets on Windows save
ENCODINGS: dict[str, str] = {
    "utf-8": "UTF-8",
    "cp1252": "Windows-1252 (Western Europe)",
    "latin-1": "ISO-8859-1 (Latin-1)",
}
_ENCODING_HINT = (
    'Save it as "CSV UTF-8" (Excel: File > Save As), or choose its encoding '
    "(Excel on Windows often writes Windows-1252)."
)
_UNSUPPORTED = "This is not a CSV, XLSX or plain text file"

# first bytes of kinds people upload by mistake, and what to say
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xd0\xcf\x11\xe0", "This is an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV."),
    (b"%PDF", f"{_UNSUPPORTED}: it is a PDF document."),
    (b"\x89PNG", f"{_UNSUPPORTED}: it is an image."),
    (b"GIF8", f"{_UNSUPPORTED}: it is an image."),
    (b"\xff\xd8\xff", f"{_UNSUPPORTED}: it is an image."),
    (b"\x1f\x8b", f"{_UNSUPPORTED}: it is a gzip archive; unpack it first."),
    (b"Rar!", f"{_UNSUPPORTED}: it is a RAR archive; unpack it first."),
    (b"7z\xbc\xaf", f"{_UNSUPPORTED}: it is a 7-Zip archive; unpack it first."),
    (b"\xff\xfe", "This is UTF-16 text: save it as CSV UTF-8."),
    (b"\xfe\xff", "This is UTF-16 text: save it as CSV UTF-8."),
)


class UploadError(ValueError):
    """An uploaded file the dashboard cannot take; ``str()`` tells the user why and what
    to do. ``status``: the HTTP status of the page that says so (400, or 413 for too
    big); ``encoding``: the error is about the text's encoding (another may work)."""

    def __init__(self, message: str, *, status: int = 400, encoding: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.encoding = encoding


# ---- what a file is -------------------------------------------------------------------


def sniff(head: bytes) -> str:
    """``xlsx`` or ``text`` from a file's first bytes; ``UploadError`` for an empty file
    or a kind the dashboard does not read."""
    if not head:
        raise UploadError("The file is empty.")
    for magic, message in _MAGIC:
        if head.startswith(magic):
            raise UploadError(message)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "xlsx"  # a zip: told apart from other zips by _check_workbook
    if b"\x00" in head:
        raise UploadError(f"{_UNSUPPORTED}: it holds NUL bytes, as binary files do.")
    return "text"


def _directory_size(path: Path) -> int | None:
    """The size of a zip's central directory as its end record states it (the bytes
    ``zipfile`` reads into one object per member); None without an end record."""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - _EOCD_SEARCH))
        tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    return int.from_bytes(tail[at + 12 : at + 16], "little")


def _check_workbook(path: Path) -> None:
    """A zip that is an XLSX workbook of bounded size, else ``UploadError``."""
    directory = _directory_size(path)
    if directory is not None and directory > XLSX_MAX_DIRECTORY:
        # hundreds of thousands of members (or a ZIP64 archive, 0xFFFFFFFF): a workbook
        # has a few dozen parts, and each member costs memory before any other check
        raise UploadError(f"{_UNSUPPORTED}: it is a zip archive of too many files.", status=413)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = {info.filename for info in members}
            if "mimetype" in names and "xl/workbook.xml" not in names:
                with archive.open("mimetype") as member:  # its head only: no zip bomb
                    kind = member.read(100).decode("ascii", "replace")
                if "opendocument" in kind:
                    raise UploadError(
                        "This is an OpenDocument spreadsheet: save it as .xlsx or CSV."
                    )
    except zipfile.BadZipFile:
        raise UploadError(f"{_UNSUPPORTED}: it is a damaged zip archive.") from None
    if "xl/workbook.xml" not in names:
        raise UploadError(f"{_UNSUPPORTED}: it is a zip archive; unpack it first.")
    refused = UploadError(
        "This workbook expands to more data than an upload may hold: save the sheet as CSV.",
        status=413,
    )
    if sum(info.file_size for info in members) > XLSX_MAX_EXPANDED:
        raise refused
    sizes = {info.filename: info.file_size for info in members}
    sheets, shared = _streamed_parts(path, sizes)
    for name, size in sizes.items():
        bound = XLSX_MAX_SHARED_STRINGS if name == shared else XLSX_MAX_PART
        if name not in sheets and size > bound:
            raise refused


def _streamed_parts(path: Path, sizes: dict[str, int]) -> tuple[set[str], str | None]:
    """The parts openpyxl streams in read-only mode (the worksheets the workbook's
    relationships name) and the shared strings part, found as openpyxl finds them (the
    content types, then the workbook's relationships). The files read to find them are
    bounded first; a part read whole by its fixed name never counts as a worksheet."""
    from openpyxl.packaging.manifest import Manifest
    from openpyxl.packaging.relationship import get_dependents, get_rels_path
    from openpyxl.reader.excel import _find_workbook_part
    from openpyxl.xml.constants import (
        ARC_APP,
        ARC_CONTENT_TYPES,
        ARC_CORE,
        ARC_CUSTOM,
        ARC_STYLE,
        ARC_THEME,
        SHARED_STRINGS,
    )
    from openpyxl.xml.functions import fromstring

    def bounded(name: str) -> bool:
        return name in sizes and sizes[name] <= XLSX_MAX_PART

    if not bounded(ARC_CONTENT_TYPES):
        return set(), None  # the check by size refuses it, or openpyxl cannot read it
    try:
        with zipfile.ZipFile(path) as archive:
            package = Manifest.from_tree(fromstring(archive.read(ARC_CONTENT_TYPES)))
            found = package.find(SHARED_STRINGS)
            shared = found.PartName[1:] if found is not None else None
            workbook = _find_workbook_part(package).PartName[1:]
            rels = get_rels_path(workbook)
            if not bounded(rels):
                return set(), shared
            targets = {
                rel.target
                for rel in get_dependents(archive, rels)
                if rel.Type.endswith("/worksheet") and rel.TargetMode != "External"
            }
    except Exception:  # a damaged workbook: openpyxl says so when it opens it
        return set(), None
    whole = {ARC_CONTENT_TYPES, ARC_CORE, ARC_APP, ARC_CUSTOM, ARC_STYLE, ARC_THEME, workbook}
    return {t for t in targets if t not in whole and t != shared and not t.endswith(".rels")}, (
        shared
    )


# ---- reading --------------------------------------------------------------------------


@dataclass
class _Source:
    """An opened upload: its format, header and address column, and its rows."""

    fmt: str  # csv, plain, jsonl or xlsx
    columns: list[str]
    email_column: int | None  # None: no header names an address's column
    delimiter: str
    rows: Iterator[tuple[str, list[str]]]  # (address, every cell in the header's order)
    sheet: str | None = None
    closers: list[IO[bytes]] = field(default_factory=list)

    def close(self) -> None:
        """Close the file (and a workbook: its rows generator's ``finally`` does)."""
        close = getattr(self.rows, "close", None)
        if close is not None:
            close()
        for stream in self.closers:
            stream.close()


def _open(path: Path, filename: str, encoding: str) -> _Source:
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if sniff(head) == "xlsx":
        _check_workbook(path)
        return _bounded(_open_xlsx(path))
    if head.startswith(b"\xef\xbb\xbf") and not head[3:].strip():
        raise UploadError("The file is empty.")
    if not head.strip():
        raise UploadError("The file is empty: it holds blank lines only.")
    if encoding not in ENCODINGS:
        raise UploadError(f"Unknown encoding {encoding!r}.")
    ext = os.path.splitext(filename)[1].lower()
    fmt: Any = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(ext)
    delimiter = "\t" if ext == ".tsv" else None
    stream = path.open("rb")
    try:
        try:
            opened = open_input("-", fmt=fmt, encoding=encoding, delimiter=delimiter, stdin=stream)
        except NoEmailColumn as exc:
            if not exc.names:
                raise
            # No header names the address's column: open it again on the first column
            # (the format is guessed the same way); the user chooses on the preview,
            # unless the first line holds an address (then it is a row, not a header).
            stream = path.open("rb")
            opened = open_input(
                "-",
                fmt=fmt,
                column=exc.names[0],
                encoding=encoding,
                delimiter=delimiter,
                stdin=stream,
            )
            email_column: int | None = None
        else:
            column = opened.email_column
            if isinstance(column, str):  # JSON lines: a field's name
                email_column = opened.columns.index(column) if column in opened.columns else None
            else:
                email_column = column
    except BatchFileError as exc:
        stream.close()
        raise _from_batchfile(exc) from None
    except BaseException:
        stream.close()
        raise
    if opened.fmt == "plain":
        columns = ["email"]
        email_column = 0
    else:
        columns = list(opened.columns)
    rows = _text_rows(opened.fmt, opened.rows(), columns)
    if email_column is None and opened.fmt == "csv":
        columns, email_column, rows = _headerless(columns, rows)
    return _bounded(
        _Source(
            fmt=opened.fmt,
            columns=columns,
            email_column=email_column,
            delimiter=opened.delimiter,
            rows=rows,
            closers=[stream],
        )
    )


def _bounded(source: _Source) -> _Source:
    """``source`` unless it has more than ``MAX_COLUMNS`` columns (then closed, and
    ``UploadError``): every page and download of the list shows or writes them all."""
    if len(source.columns) > MAX_COLUMNS:
        source.close()
        raise UploadError(
            f"The file has {len(source.columns):,} columns; a list may have at most "
            f"{MAX_COLUMNS:,}. Keep the address's column and the ones you need, and "
            "upload it again."
        )
    return source


_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _headerless(
    first: list[str], rows: Iterator[tuple[str, list[str]]]
) -> tuple[list[str], int | None, Iterator[tuple[str, list[str]]]]:
    """A first line no column of which is named like an address's: when one of its cells
    is an address, the file has no header (the line is a row; the columns are called
    ``column 1``, ``column 2`` ...); otherwise it stays the header."""
    found = next((i for i, cell in enumerate(first) if _ADDRESS.fullmatch(cell.strip())), None)
    if found is None:
        return first, None, rows
    names = [f"column {i + 1}" for i in range(len(first))]
    return names, found, _prepend(("", list(first)), rows)


def _prepend(
    row: tuple[str, list[str]], rows: Iterator[tuple[str, list[str]]]
) -> Iterator[tuple[str, list[str]]]:
    """``row`` then ``rows``; closing it closes ``rows`` (a workbook's reader) too."""
    yield row
    yield from rows


def _text_rows(
    fmt: str, rows: Iterator[tuple[str, Any]], columns: list[str]
) -> Iterator[tuple[str, list[str]]]:
    for address, row in rows:
        if fmt == "plain":
            yield address, [address]
        elif fmt == "jsonl":
            yield address, [_json_cell(row.get(name)) for name in columns]
        else:
            yield address, row


def _json_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _from_batchfile(exc: BatchFileError) -> UploadError:
    """The reader's error in the dashboard's words (no paths, no command-line flags)."""
    if isinstance(exc, NotInEncoding):
        name = ENCODINGS.get(exc.encoding, exc.encoding)
        return UploadError(
            f"Line {exc.line} is not valid {name} text (byte 0x{exc.byte:02x}). " + _ENCODING_HINT,
            encoding=True,
        )
    text = str(exc)
    text = text.removeprefix("stdin: ")
    if text.startswith("empty file"):
        return UploadError("The file is empty.")
    return UploadError(text[:1].upper() + text[1:] + ".")


def _open_xlsx(path: Path) -> _Source:
    import openpyxl

    # An open file, not the path: openpyxl judges a path by its extension, and a kept
    # upload has none of the user's (the content said it is a workbook).
    handle = path.open("rb")
    try:
        workbook = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        handle.close()
        raise UploadError(f"This XLSX workbook cannot be read ({type(exc).__name__}).") from None
    values: Iterator[tuple[Any, ...]] | None = None
    try:
        sheet = workbook.active
        if sheet is None:
            sheet = workbook.worksheets[0]
        # The <dimension> a sheet declares is the writer's word: "A1:XFD1048576" in a
        # file of a few kB would pad every row to 16,384 cells and add a million empty
        # rows. Without it, a row holds the cells the file has.
        reset = getattr(sheet, "reset_dimensions", None)
        if reset is not None:
            reset()
        values = sheet.iter_rows(values_only=True)
        header: list[str] = []
        header_row = 0
        for header_row, raw in enumerate(values, start=1):  # noqa: B007 - used after
            cells = [_xlsx_cell(v) for v in raw]
            if any(c.strip() for c in cells):
                while cells and not cells[-1].strip():
                    cells.pop()
                header = cells
                break
    except Exception as exc:
        _close_xlsx(workbook, values)
        handle.close()
        raise UploadError(f"This XLSX workbook cannot be read ({type(exc).__name__}).") from None
    if not header:
        _close_xlsx(workbook, values)
        handle.close()
        raise UploadError("The workbook's first sheet is empty.")
    title = str(sheet.title)
    columns: list[str] = header
    email_column = guess_email_column(header)
    rows = _xlsx_rows(workbook, values, len(header), header_row)
    if email_column is None:
        columns, email_column, rows = _headerless(header, rows)
    return _Source(
        fmt="xlsx",
        columns=columns,
        email_column=email_column,
        delimiter=",",
        rows=rows,
        sheet=title,
        closers=[handle],
    )


def _xlsx_rows(
    workbook: Any, values: Iterator[tuple[Any, ...]], width: int, row_no: int
) -> Iterator[tuple[str, list[str]]]:
    try:
        for raw in values:
            row_no += 1
            if len(raw) > width:
                # a row padded to a far cell (XFD: 16,384 columns) costs its distinct
                # values past the header, not one call per padded cell
                if any(_xlsx_cell(v).strip() for v in _distinct(raw[width:])):
                    raise UploadError(
                        f"Row {row_no} has a value right of the header's last column; "
                        "name that column in the header row."
                    )
                raw = raw[:width]
            cells = [_xlsx_cell(v) for v in raw]
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            yield "", cells
    except UploadError:
        raise
    except Exception as exc:
        raise UploadError(
            f"This XLSX workbook cannot be read past row {row_no} ({type(exc).__name__})."
        ) from None
    finally:
        _close_xlsx(workbook, values)


def _distinct(values: tuple[Any, ...]) -> list[Any]:
    """The values other than None, each once (a set, at C speed, when they hash)."""
    try:
        found = set(values)
    except TypeError:
        return [v for v in values if v is not None]
    found.discard(None)
    return list(found)


def _close_xlsx(workbook: Any, values: Iterator[Any] | None) -> None:
    """Close the sheet's row reader (it holds a file of the archive open), then the book."""
    close = getattr(values, "close", None)
    if close is not None:
        close()
    workbook.close()


def _xlsx_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ") if value.time() != dt.time() else str(value.date())
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _records(source: _Source, column: int | None, max_rows: int) -> Iterator[tuple[str, list[str]]]:
    """``(address, cells)`` of every row that is not blank; the address is the cells'
    ``column``, stripped. ``UploadError`` for NUL bytes and past ``max_rows`` rows."""
    count = 0
    for _, cells in source.rows:
        if not any(cell.strip() for cell in cells):
            continue  # a blank row ("", ",,,", an empty spreadsheet row)
        count += 1
        if count > max_rows:
            raise UploadError(
                f"The file has more than {max_rows:,} rows: a batch holds at most {max_rows:,} "
                "addresses (MAILVET_MAX_BATCH_SIZE). Split it into smaller files.",
                status=413,
            )
        if any("\x00" in cell for cell in cells):
            raise UploadError(
                f"Row {count} (not counting the header) holds a NUL byte: this is not a "
                "clean text file. Export the list again as CSV UTF-8."
            )
        address = cells[column].strip() if column is not None else ""
        yield address, cells


@dataclass(frozen=True)
class Preview:
    """What the preview page shows before a batch starts."""

    filename: str
    size: int  # bytes
    fmt: str  # csv, plain, jsonl or xlsx
    columns: list[str]
    email_column: int | None  # the column the batch will use; None: the user must choose
    found_column: int | None  # the column found by its header name, if any
    rows: int  # rows that are not blank (the header not counted)
    sample: list[list[str]]  # the first PREVIEW_ROWS of them
    delimiter: str
    encoding: str
    sheet: str | None = None  # an XLSX workbook's sheet read


def read_preview(
    path: Path,
    filename: str,
    *,
    column: int | None = None,
    encoding: str = "utf-8",
    max_rows: int,
) -> Preview:
    """Read the whole file once: its columns, the address's column (``column`` if given
    and valid, else found by its header), its row count and first rows. Blocking:
    call it in a thread."""
    source = _open(path, filename, encoding)
    try:
        chosen = _choose(source, column)
        sample: list[list[str]] = []
        rows = 0
        for _, cells in _records(source, chosen, max_rows):
            rows += 1
            if len(sample) < PREVIEW_ROWS:
                sample.append(cells)
    except BatchFileError as exc:
        raise _from_batchfile(exc) from None
    finally:
        source.close()
    if rows == 0:
        what = "a header and no rows" if source.fmt in ("csv", "xlsx") else "no addresses"
        raise UploadError(f"The file has {what}: there is nothing to verify.")
    return Preview(
        filename=filename,
        size=path.stat().st_size,
        fmt=source.fmt,
        columns=source.columns,
        email_column=chosen,
        found_column=source.email_column,
        rows=rows,
        sample=sample,
        delimiter=source.delimiter,
        encoding=encoding,
        sheet=source.sheet,
    )


def _choose(source: _Source, column: int | None) -> int | None:
    if column is not None:
        if not 0 <= column < len(source.columns):
            raise UploadError("Choose one of the file's columns for the addresses.")
        return column
    return source.email_column


@dataclass(frozen=True)
class ParsedUpload:
    """A file read for a batch: ``Service.submit_batch``'s emails, upload and cells."""

    emails: list[str]
    upload: UploadInfo
    cells: list[str]  # per row, the other cells (storage.common.dump_cells)


def read_upload(
    path: Path,
    filename: str,
    *,
    column: int | None = None,
    encoding: str = "utf-8",
    max_rows: int,
) -> ParsedUpload:
    """Every row of the file: the addresses of ``column`` (else the one found by its
    header; ``UploadError`` when none is) and the other cells. Blocking: call it in a
    thread."""
    source = _open(path, filename, encoding)
    try:
        chosen = _choose(source, column)
        if chosen is None:
            raise UploadError(
                "No column is named like an address (email, e-mail, mail ...): choose the "
                "column that holds them."
            )
        emails: list[str] = []
        cells: list[str] = []
        for address, row in _records(source, chosen, max_rows):
            emails.append(address)
            cells.append(dump_cells(row[:chosen] + row[chosen + 1 :]))
    except BatchFileError as exc:
        raise _from_batchfile(exc) from None
    finally:
        source.close()
    if not emails:
        raise UploadError("The file has no rows: there is nothing to verify.")
    upload = UploadInfo(
        filename=filename,
        fmt=source.fmt,
        columns=tuple(source.columns),
        email_column=chosen,
        delimiter=source.delimiter if source.fmt == "csv" else ",",
    )
    return ParsedUpload(emails, upload, cells)


# ---- keeping a file between the preview and the start --------------------------------

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")


def _stash_dir() -> Path:
    """A folder of this user's own under the temporary directory (0700), shared by every
    API process of the host (the preview and the start may reach different ones)."""
    base = Path(tempfile.gettempdir()) / f"mailvet-uploads-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        info = base.lstat()
        if base.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(f"{base} is not a private folder")
    except OSError:
        return Path(tempfile.mkdtemp(prefix="mailvet-uploads-"))
    return base


@dataclass(frozen=True)
class Stashed:
    token: str
    path: Path
    filename: str
    size: int
    owner: str  # the key id that uploaded it


class UploadStash:
    """Uploaded files on disk, by token, until their batch starts (or ``STASH_TTL``)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or _stash_dir()

    def save(self, source: IO[bytes], filename: str, owner: str, max_bytes: int) -> Stashed:
        """Copy ``source`` in; ``UploadError`` (413) past ``max_bytes``. Blocking."""
        self.sweep()
        token = secrets.token_urlsafe(24)
        path = self.directory / f"{token}.upload"
        size = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(COPY_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadError(too_big(max_bytes), status=413)
                    out.write(chunk)
            meta = {"filename": filename, "owner": owner, "size": size}
            (self.directory / f"{token}.json").write_text(json.dumps(meta))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return Stashed(token, path, filename, size, owner)

    def get(self, token: str, owner: str) -> Stashed | None:
        """The file of ``token`` if ``owner`` uploaded it (and it is still kept)."""
        if not _TOKEN.match(token):
            return None
        path = self.directory / f"{token}.upload"
        try:
            meta = json.loads((self.directory / f"{token}.json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("owner") != owner or not path.exists():
            return None
        return Stashed(token, path, str(meta["filename"]), int(meta["size"]), owner)

    def keep_preview(self, saved: Stashed, preview: Preview) -> None:
        """Keep the preview read from the file (by its encoding): showing the preview
        page again does not read a file of up to ``MAILVET_MAX_UPLOAD_BYTES`` again."""
        path = self.directory / f"{saved.token}.json"
        try:
            meta = json.loads(path.read_text())
            meta.setdefault("previews", {})[preview.encoding] = dataclasses.asdict(preview)
            path.write_text(json.dumps(meta))
        except (OSError, ValueError):
            pass  # the upload was discarded meanwhile

    def kept_preview(self, saved: Stashed, encoding: str) -> Preview | None:
        """The preview ``keep_preview`` kept for ``encoding``, if any."""
        try:
            meta = json.loads((self.directory / f"{saved.token}.json").read_text())
            return Preview(**meta["previews"][encoding])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def claim(self, token: str, owner: str) -> Stashed | None:
        """Take the file of ``token`` to start its batch: of requests racing for it (a
        double click, two API processes) one only gets it, by an atomic rename; the
        others get None (see ``started``). ``release`` gives it back when the start
        fails, ``finish`` records the batch it started."""
        saved = self.get(token, owner)
        if saved is None:
            return None
        claimed = self.directory / f"{token}.claimed"
        try:
            os.rename(saved.path, claimed)
        except FileNotFoundError:  # another request took it first
            return None
        return Stashed(token, claimed, saved.filename, saved.size, owner)

    def release(self, saved: Stashed) -> None:
        """Give back a claimed file (its batch did not start)."""
        try:
            os.rename(saved.path, self.directory / f"{saved.token}.upload")
        except FileNotFoundError:
            pass

    def finish(self, saved: Stashed, batch_id: str) -> None:
        """The claimed file started ``batch_id``: drop the file, keep a note of the batch
        (until ``STASH_TTL``) for a request that comes again with the same token."""
        meta = {"owner": saved.owner, "batch": batch_id}
        (self.directory / f"{saved.token}.json").write_text(json.dumps(meta))
        saved.path.unlink(missing_ok=True)

    def started(self, token: str, owner: str) -> str | None:
        """For an upload ``owner`` cannot claim: the id of the batch it started, ``""``
        while another request is starting it, None when it is not kept (or not theirs)."""
        if not _TOKEN.match(token):
            return None
        try:
            meta = json.loads((self.directory / f"{token}.json").read_text())
        except (OSError, ValueError):
            return None
        if meta.get("owner") != owner:
            return None
        if isinstance(meta.get("batch"), str):
            return str(meta["batch"])
        return "" if (self.directory / f"{token}.claimed").exists() else None

    def discard(self, token: str) -> None:
        if _TOKEN.match(token):
            for suffix in (".upload", ".claimed", ".json"):
                (self.directory / f"{token}{suffix}").unlink(missing_ok=True)

    def sweep(self, now: float | None = None) -> None:
        """Drop files older than ``STASH_TTL``."""
        limit = (time.time() if now is None else now) - STASH_TTL
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
            except OSError:
                pass


def too_big(max_bytes: int) -> str:
    return (
        f"The file is over {_size(max_bytes)}, the most an upload may hold "
        "(MAILVET_MAX_UPLOAD_BYTES). Split it into smaller files."
    )


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


# ---- downloads ------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    name: str  # in the URL and the file name
    label: str
    results: tuple[str, ...] | None  # the results kept; None: every row
    verdict_columns: bool


DOWNLOADS: dict[str, Download] = {
    d.name: d
    for d in (
        Download("deliverable", "Deliverable only", ("deliverable",), False),
        Download("deliverable-risky", "Deliverable and risky", ("deliverable", "risky"), False),
        Download("all", "Everything, with the verdict columns", None, True),
    )
}


def _stem(record: BatchRecord) -> str:
    """The uploaded file's name without its folders (``/`` or ``\\``) and extension."""
    if record.upload is None:
        return ""
    return os.path.splitext(record.upload.filename.replace("\\", "/").rsplit("/", 1)[-1])[0]


def download_filename(record: BatchRecord, kind: Download) -> str:
    """``<the uploaded file's stem>-<kind>.csv`` (a batch without a file: its id)."""
    stem = _stem(record) or record.id
    safe = re.sub(r"[^A-Za-z0-9._ -]+", "_", stem).strip(" .") or record.id
    return f"{safe[:100]}-{kind.name}.csv"


def download_disposition(record: BatchRecord, kind: Download) -> str:
    """The download's ``content-disposition``: the ASCII ``download_filename`` and, for
    a file named in other letters ("Контакты.csv"), its own name too (RFC 6266
    ``filename*``, which browsers prefer)."""
    ascii_name = download_filename(record, kind)
    value = f'attachment; filename="{ascii_name}"'
    stem = "".join(c for c in _stem(record) if c.isprintable() and c != '"').strip(" .")
    name = f"{stem[:100]}-{kind.name}.csv"
    if stem and name != ascii_name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


def _row(item: BatchItem, upload: UploadInfo | None) -> list[str]:
    if upload is None or item.cells is None:
        return [item.email]
    cells = list(item.cells)
    cells.insert(upload.email_column, item.email)
    return cells


async def download_csv(store: Store, record: BatchRecord, kind: Download) -> AsyncIterator[bytes]:
    """The batch's rows as CSV, streamed from the store a chunk at a time: the uploaded
    file's columns in their order (a batch without a file: ``email``), the rows whose
    result ``kind`` keeps, and with ``kind.verdict_columns`` the verdict's columns after
    them (a name the file uses gets ``mailvet_`` in front). Cells a spreadsheet would
    take for a formula get a leading ``'``."""
    upload = record.upload
    columns = list(upload.columns) if upload is not None else ["email"]
    delimiter = upload.delimiter if upload is not None else ","
    header = list(columns)
    if kind.verdict_columns:
        header.extend(verdict_column_names(columns))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([csv_cell(name) for name in header])
    # one result: the store filters; several: filtered here, still one pass in order
    single = kind.results[0] if kind.results is not None and len(kind.results) == 1 else None
    async for item in store.iter_items(record.id, result=single):
        verdict = item.verdict
        if kind.results is not None and (
            verdict is None or verdict.get("result") not in kind.results
        ):
            continue
        row: list[Any] = [csv_cell(cell) for cell in _row(item, upload)]
        if kind.verdict_columns:
            data = verdict or {}
            row.extend(csv_cell(data.get(name)) for name in VERDICT_COLUMNS)
        writer.writerow(row)
        if buffer.tell() >= STREAM_CHUNK:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")
