"""The dashboard's uploads (mailvet.dashboard.uploads): nasty files, previews, downloads."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import openpyxl
import pytest

from mailvet.batchfile import MAX_LINE
from mailvet.dashboard.uploads import (
    DOWNLOADS,
    MAX_COLUMNS,
    PREVIEW_ROWS,
    SNIFF_BYTES,
    STASH_TTL,
    UploadError,
    UploadStash,
    download_csv,
    download_disposition,
    download_filename,
    read_preview,
    read_upload,
    sniff,
)
from mailvet.storage import MemoryStore, Plan
from mailvet.storage.base import BatchItem, BatchRecord, Store
from mailvet.storage.common import load_cells

MAX = 100_000


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _error(path: Path, name: str | None = None, **kwargs: Any) -> UploadError:
    with pytest.raises(UploadError) as caught:
        read_preview(path, name or path.name, max_rows=kwargs.pop("max_rows", MAX), **kwargs)
    return caught.value


# --- CSV ---


def test_csv_with_extra_columns_finds_the_email_column_by_its_header(tmp_path: Path) -> None:
    path = _file(
        tmp_path, "list.csv", b"Name,E-mail,City\nAnn,ann@a.test,Paris\nBob,bob@b.test,Lyon\n"
    )
    preview = read_preview(path, "list.csv", max_rows=MAX)
    assert preview.fmt == "csv"
    assert preview.columns == ["Name", "E-mail", "City"]
    assert preview.email_column == 1 == preview.found_column
    assert preview.rows == 2
    assert preview.size == path.stat().st_size
    assert preview.sample == [["Ann", "ann@a.test", "Paris"], ["Bob", "bob@b.test", "Lyon"]]

    parsed = read_upload(path, "list.csv", max_rows=MAX)
    assert parsed.emails == ["ann@a.test", "bob@b.test"]
    assert [load_cells(c) for c in parsed.cells] == [("Ann", "Paris"), ("Bob", "Lyon")]
    assert parsed.upload.columns == ("Name", "E-mail", "City")
    assert parsed.upload.email_column == 1
    assert parsed.upload.fmt == "csv"


def test_semicolon_csv_keeps_its_delimiter_and_quoted_cells(tmp_path: Path) -> None:
    data = b'nom;courriel;ville\nAnn;ann@a.test;"Lyon; FR"\n'
    path = _file(tmp_path, "liste.csv", data)
    parsed = read_upload(path, "liste.csv", max_rows=MAX)
    assert parsed.upload.delimiter == ";"
    assert parsed.emails == ["ann@a.test"]
    assert load_cells(parsed.cells[0]) == ("Ann", "Lyon; FR")


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = _file(tmp_path, "bom.csv", b"\xef\xbb\xbfemail,name\r\nx@a.test,X\r\n")
    preview = read_preview(path, "bom.csv", max_rows=MAX)
    assert preview.columns == ["email", "name"]
    assert preview.email_column == 0


def test_no_email_header_asks_for_the_column_and_takes_the_chosen_one(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"id,contact\n1,a@a.test\n2,b@b.test\n")
    preview = read_preview(path, "x.csv", max_rows=MAX)
    assert preview.email_column is None and preview.found_column is None
    assert preview.columns == ["id", "contact"]
    assert preview.rows == 2
    with pytest.raises(UploadError, match="choose the column"):
        read_upload(path, "x.csv", max_rows=MAX)
    parsed = read_upload(path, "x.csv", column=1, max_rows=MAX)
    assert parsed.emails == ["a@a.test", "b@b.test"]
    assert parsed.upload.email_column == 1
    assert [load_cells(c) for c in parsed.cells] == [("1",), ("2",)]
    with pytest.raises(UploadError, match="Choose one of the file's columns"):
        read_upload(path, "x.csv", column=2, max_rows=MAX)


def test_a_first_line_holding_an_address_is_a_row_not_a_header(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"Ann,ann@a.test\nBob,bob@b.test\n")
    preview = read_preview(path, "x.csv", max_rows=MAX)
    assert preview.columns == ["column 1", "column 2"]
    assert preview.email_column == 1 and preview.rows == 2
    parsed = read_upload(path, "x.csv", max_rows=MAX)
    assert parsed.emails == ["ann@a.test", "bob@b.test"]
    assert [load_cells(c) for c in parsed.cells] == [("Ann",), ("Bob",)]
    one = _file(tmp_path, "one.csv", b"ann@a.test\nbob@b.test\n")
    assert read_upload(one, "one.csv", max_rows=MAX).emails == ["ann@a.test", "bob@b.test"]
    book = _xlsx(tmp_path / "h.xlsx", [["ann@a.test", 1], ["bob@b.test", 2]])
    parsed = read_upload(book, "h.xlsx", max_rows=MAX)
    assert parsed.emails == ["ann@a.test", "bob@b.test"]
    assert parsed.upload.columns == ("column 1", "column 2")


def test_a_chosen_column_wins_over_the_header_guess(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email,work email\na@a.test,w@w.test\n")
    assert read_upload(path, "x.csv", column=1, max_rows=MAX).emails == ["w@w.test"]


def test_blank_rows_are_skipped_and_short_rows_padded(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email,a,b\n\nx@a.test\n,,\ny@a.test,1,2\n")
    parsed = read_upload(path, "x.csv", max_rows=MAX)
    assert parsed.emails == ["x@a.test", "y@a.test"]
    assert [load_cells(c) for c in parsed.cells] == [("", ""), ("1", "2")]


def test_a_row_wider_than_the_header_is_an_error(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email,a\nx@a.test,1,surprise\n")
    assert "3 cells, the header 2" in str(_error(path))


def test_preview_shows_the_first_rows_only(tmp_path: Path) -> None:
    rows = "".join(f"u{i}@a.test\n" for i in range(50))
    path = _file(tmp_path, "x.csv", ("email\n" + rows).encode())
    preview = read_preview(path, "x.csv", max_rows=MAX)
    assert preview.rows == 50
    assert len(preview.sample) == PREVIEW_ROWS


# --- plain text ---


def test_plain_text_is_one_address_a_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "list.txt", b"a@a.test\n\n  b@b.test  \r\nc@c.test")
    preview = read_preview(path, "list.txt", max_rows=MAX)
    assert preview.fmt == "plain"
    assert preview.columns == ["email"]
    assert preview.rows == 3
    parsed = read_upload(path, "list.txt", max_rows=MAX)
    assert parsed.emails == ["a@a.test", "b@b.test", "c@c.test"]
    assert parsed.upload.columns == ("email",)
    assert parsed.cells == ["[]"] * 3


def test_json_lines_keep_their_fields(tmp_path: Path) -> None:
    data = (
        b'{"name": "Ann", "email": "ann@a.test", "tags": ["x"]}\n'
        b'{"name": "Bob", "email": "b@b.test"}\n'
    )
    path = _file(tmp_path, "l.jsonl", data)
    preview = read_preview(path, "l.jsonl", max_rows=MAX)
    assert (preview.fmt, preview.columns, preview.email_column) == (
        "jsonl",
        ["name", "email", "tags"],
        1,
    )
    parsed = read_upload(path, "l.jsonl", max_rows=MAX)
    assert parsed.emails == ["ann@a.test", "b@b.test"]
    assert [load_cells(c) for c in parsed.cells] == [("Ann", '["x"]'), ("Bob", "")]


# --- nasty files ---


def test_nul_bytes_at_the_start_are_a_binary_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email\na\x00@a.test\n")
    assert "NUL" in str(_error(path))


def test_a_nul_byte_further_down_names_the_row(tmp_path: Path) -> None:
    rows = b"".join(b"u%d@a.test\n" % i for i in range(2000))
    assert len(rows) > SNIFF_BYTES
    path = _file(tmp_path, "x.csv", b"email\n" + rows + b"bad\x00@a.test\n")
    error = _error(path)
    assert "Row 2001" in str(error) and "NUL" in str(error)


def test_broken_utf8_names_the_line_and_another_encoding_reads_it(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email,name\na@a.test,Ren\xe9\nb@b.test,Zo\xe9\n")
    error = _error(path)
    assert error.encoding
    assert str(error).startswith("Line 2 is not valid UTF-8 text (byte 0xe9)")
    assert "CSV UTF-8" in str(error)
    parsed = read_upload(path, "x.csv", encoding="cp1252", max_rows=MAX)
    assert [load_cells(c) for c in parsed.cells] == [("René",), ("Zoé",)]


def test_an_unknown_encoding_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email\na@a.test\n")
    assert "Unknown encoding" in str(_error(path, encoding="rot13"))


def test_a_huge_line_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email,note\na@a.test," + b"x" * (MAX_LINE + 10) + b"\n")
    error = _error(path)
    assert f"is over {MAX_LINE} bytes" in str(error)
    assert "stdin" not in str(error) and str(tmp_path) not in str(error)


@pytest.mark.parametrize(
    "data",
    [b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"],
    ids=["0", "blank", "bom", "bomnl"],
)
def test_an_empty_file(tmp_path: Path, data: bytes) -> None:
    assert "empty" in str(_error(_file(tmp_path, "x.csv", data)))


def test_a_header_only_file(tmp_path: Path) -> None:
    error = _error(_file(tmp_path, "x.csv", b"email,name\n\n"))
    assert "a header and no rows" in str(error)


def test_over_the_row_limit(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.txt", b"".join(b"u%d@a.test\n" % i for i in range(11)))
    error = _error(path, max_rows=10)
    assert error.status == 413
    assert "more than 10 rows" in str(error) and "MAILVET_MAX_BATCH_SIZE" in str(error)
    assert read_preview(path, "x.txt", max_rows=11).rows == 11


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", "PDF"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ".xls"),
        (b"\xff\xfee\x00m\x00", "UTF-16"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "NUL"),
    ],
)
def test_other_kinds_of_file_are_named(tmp_path: Path, head: bytes, words: str) -> None:
    error = _error(_file(tmp_path, "list.csv", head + b"\x00" * 100))
    assert words in str(error)
    assert "not a CSV, XLSX or plain text" in str(error) or "save it as" in str(error)


def test_sniff() -> None:
    assert sniff(b"email\n") == "text"
    assert sniff(b"PK\x03\x04....") == "xlsx"
    with pytest.raises(UploadError, match="empty"):
        sniff(b"")


def test_too_many_columns_is_an_error_not_a_huge_page(tmp_path: Path) -> None:
    # 200,000 columns in a 2 MB file made a 24 MB preview page, rendered for 7 s on
    # the event loop at each view
    wide = b"email" + b",c" * MAX_COLUMNS + b"\n" + b"a@a.test" + b",x" * MAX_COLUMNS + b"\n"
    error = _error(_file(tmp_path, "wide.csv", wide))
    assert f"{MAX_COLUMNS + 1:,} columns" in str(error) and "at most" in str(error)
    fits = b"email" + b",c" * (MAX_COLUMNS - 1) + b"\n" + b"a@a.test" + b",x" * (MAX_COLUMNS - 1)
    assert len(
        read_preview(_file(tmp_path, "fits.csv", fits), "fits.csv", max_rows=MAX).columns
    ) == (MAX_COLUMNS)
    book = _xlsx(tmp_path / "wide.xlsx", [["email", *(["c"] * MAX_COLUMNS)], ["a@a.test"]])
    assert "columns" in str(_error(book))


# --- XLSX ---


def _xlsx(path: Path, rows: list[list[Any]], title: str = "Contacts") -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = title
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def test_xlsx_reads_the_first_sheet_with_typed_cells(tmp_path: Path) -> None:
    path = _xlsx(
        tmp_path / "kept.upload",  # as the stash names it: the content tells, not the name
        [
            [None],
            ["First name", "Email address", "Age", "Since", "Score"],
            ["Ann", "ann@a.test", 42, dt.datetime(2024, 5, 1), 0.5],
            [None, None, None],
            ["Bob", " bob@b.test ", 7.0, dt.datetime(2024, 5, 1, 9, 30), True],
        ],
    )
    preview = read_preview(path, "contacts.xlsx", max_rows=MAX)
    assert preview.fmt == "xlsx"
    assert preview.sheet == "Contacts"
    assert preview.columns == ["First name", "Email address", "Age", "Since", "Score"]
    assert preview.email_column == 1
    assert preview.rows == 2
    parsed = read_upload(path, "contacts.xlsx", max_rows=MAX)
    assert parsed.emails == ["ann@a.test", "bob@b.test"]
    assert [load_cells(c) for c in parsed.cells] == [
        ("Ann", "42", "2024-05-01", "0.5"),
        ("Bob", "7", "2024-05-01 09:30:00", "TRUE"),
    ]
    assert parsed.upload.fmt == "xlsx" and parsed.upload.delimiter == ","


def test_xlsx_header_only_and_empty_sheet(tmp_path: Path) -> None:
    header_only = _xlsx(tmp_path / "h.xlsx", [["email", "name"]])
    assert "a header and no rows" in str(_error(header_only))
    empty = _xlsx(tmp_path / "e.xlsx", [])
    assert "empty" in str(_error(empty))


def test_xlsx_value_right_of_the_header_is_an_error(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "w.xlsx", [["email"], ["a@a.test", "stray"]])
    assert "right of the header" in str(_error(path))


def test_xlsx_over_the_row_limit(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "w.xlsx", [["email"], *[[f"u{i}@a.test"] for i in range(6)]])
    assert _error(path, max_rows=5).status == 413


def _sheet_xml(path: Path, out: Path, dimension: str, extra_rows: bytes) -> Path:
    """``path`` with its sheet declaring ``dimension`` and ``extra_rows`` appended."""
    with zipfile.ZipFile(path) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml")
    sheet = re.sub(
        rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="%s"/>' % dimension.encode(), sheet
    )
    sheet = sheet.replace(b"</sheetData>", extra_rows + b"</sheetData>")
    return _rewrite(path, out, {"xl/worksheets/sheet1.xml": sheet}, {})


def _counting_cells(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    import mailvet.dashboard.uploads as uploads

    calls = [0]
    real = uploads._xlsx_cell

    def counted(value: Any) -> str:
        calls[0] += 1
        return real(value)

    monkeypatch.setattr(uploads, "_xlsx_cell", counted)
    return calls


def test_a_sheet_declaring_a_huge_dimension_costs_only_its_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # <dimension ref="A1:XFD..."> in a file of a few kB padded every row to 16,384 cells
    # (a million rows: hours of CPU); the cells the file holds are what is read
    path = _xlsx(tmp_path / "d.xlsx", [["email"], ["a@a.test"]])
    last = b'<row r="300"><c r="A300" t="inlineStr"><is><t>z@a.test</t></is></c></row>'
    bomb = _sheet_xml(path, tmp_path / "dim.xlsx", "A1:XFD300", last)
    calls = _counting_cells(monkeypatch)
    preview = read_preview(bomb, "dim.xlsx", max_rows=MAX)
    assert preview.rows == 2 and preview.columns == ["email"]
    assert calls[0] < 1000


def test_a_far_empty_cell_does_not_cost_the_columns_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _xlsx(tmp_path / "w.xlsx", [["email"]])
    rows = b"".join(
        b'<row r="%d"><c r="A%d" t="inlineStr"><is><t>u%d@a.test</t></is></c>'
        b'<c r="XFD%d" t="inlineStr"><is><t></t></is></c></row>' % (n, n, n, n)
        for n in range(2, 52)
    )
    wide = _sheet_xml(path, tmp_path / "wide.xlsx", "A1:XFD51", rows)
    calls = _counting_cells(monkeypatch)
    assert read_preview(wide, "wide.xlsx", max_rows=MAX).rows == 50
    assert calls[0] < 1000  # not 50 x 16,384
    stray = _sheet_xml(
        path,
        tmp_path / "stray.xlsx",
        "A1:XFD2",
        b'<row r="2"><c r="A2" t="inlineStr"><is><t>a@a.test</t></is></c>'
        b'<c r="XFD2" t="inlineStr"><is><t>x</t></is></c></row>',
    )
    assert "right of the header" in str(_error(stray))


def test_a_damaged_workbook_and_other_zips(tmp_path: Path) -> None:
    good = _xlsx(tmp_path / "g.xlsx", [["email"], ["a@a.test"]]).read_bytes()
    broken = _file(tmp_path, "b.xlsx", good[: len(good) // 2])
    assert "not a CSV, XLSX or plain text" in str(_error(broken)) or "cannot be read" in str(
        _error(broken)
    )
    archive = tmp_path / "z.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("list.csv", "email\na@a.test\n")
    assert "zip archive" in str(_error(archive))
    ods = tmp_path / "s.ods"
    with zipfile.ZipFile(ods, "w") as out:
        out.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        out.writestr("content.xml", "<x/>")
    assert "OpenDocument" in str(_error(ods))
    # a workbook whose XML is not XML
    fake = tmp_path / "f.xlsx"
    with zipfile.ZipFile(fake, "w") as out:
        out.writestr("xl/workbook.xml", "<<<not xml")
        out.writestr("[Content_Types].xml", "nope")
    assert "cannot be read" in str(_error(fake))


def test_a_workbook_that_expands_too_far_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailvet.dashboard.uploads as uploads

    path = _xlsx(tmp_path / "g.xlsx", [["email"], ["a@a.test"]])
    monkeypatch.setattr(uploads, "XLSX_MAX_EXPANDED", 100)
    assert _error(path).status == 413


def _rewrite(path: Path, out: Path, change: dict[str, bytes], rename: dict[str, str]) -> Path:
    """A copy of the workbook ``path`` with parts replaced (``change``, by their old
    name) and renamed (``rename``: old name -> new name)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = change.get(info.filename, src.read(info.filename))
            dst.writestr(rename.get(info.filename, info.filename), data)
    return out


def test_a_zip_of_too_many_members_is_refused_before_it_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailvet.dashboard.uploads as uploads

    crowd = tmp_path / "crowd.xlsx"
    with zipfile.ZipFile(crowd, "w") as out:
        out.writestr("xl/workbook.xml", b"")
        for n in range(2000):
            out.writestr(f"x/{n}", b"")
    listed: list[Path] = []
    monkeypatch.setattr(zipfile, "ZipFile", lambda p, *a: listed.append(p))
    monkeypatch.setattr(uploads, "XLSX_MAX_DIRECTORY", 50_000)  # 2,000 members: ~100 kB
    error = _error(crowd)
    assert error.status == 413 and "too many files" in str(error)
    assert listed == []  # refused from the end record, before zipfile read the list


def test_a_workbook_passes_the_member_list_bound(tmp_path: Path) -> None:
    import mailvet.dashboard.uploads as uploads

    path = _xlsx(tmp_path / "g.xlsx", [["email"], ["a@a.test"]])
    size = uploads._directory_size(path)
    assert size is not None and 0 < size < uploads.XLSX_MAX_DIRECTORY
    assert uploads._directory_size(_file(tmp_path, "t.csv", b"email\n")) is None


def test_a_zip_bomb_named_mimetype_is_not_read_whole(tmp_path: Path) -> None:
    import tracemalloc

    bomb = tmp_path / "bomb.ods"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("mimetype", b"application/vnd.oasis.opendocument" + bytes(32 << 20))
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        error = _error(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "OpenDocument" in str(error)
    assert peak < 8 << 20  # the 32 MiB member was not read whole


def test_a_part_read_whole_that_expands_too_far_is_refused(tmp_path: Path) -> None:
    # openpyxl parses xl/styles.xml whole even in read-only mode: a zip bomb there (a few
    # hundred kB of upload, gigabytes of memory) is refused before openpyxl opens it
    import mailvet.dashboard.uploads as uploads

    good = _xlsx(tmp_path / "g.xlsx", [["email"], ["a@a.test"]])
    with zipfile.ZipFile(good) as archive:
        styles = archive.read("xl/styles.xml")
    head, tail = styles.rsplit(b"</styleSheet>", 1)
    padded = head + b"<extLst>" + b"<ext uri='x'/>" * (uploads.XLSX_MAX_PART // 14 + 1)
    padded += b"</extLst></styleSheet>" + tail
    bomb = _rewrite(good, tmp_path / "bomb.xlsx", {"xl/styles.xml": padded}, {})
    assert bomb.stat().st_size < 1 << 20  # the upload is small; the part is not
    error = _error(bomb)
    assert error.status == 413 and "expands" in str(error)


def test_the_sheet_streams_past_the_part_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailvet.dashboard.uploads as uploads

    rows: list[list[Any]] = [["email", "n"], *[[f"u{i}@a.test", i] for i in range(3000)]]
    path = _xlsx(tmp_path / "big.xlsx", rows)
    with zipfile.ZipFile(path) as archive:
        sheet = archive.getinfo("xl/worksheets/sheet1.xml").file_size
    monkeypatch.setattr(uploads, "XLSX_MAX_PART", sheet // 2)
    assert read_preview(path, "big.xlsx", max_rows=MAX).rows == 3000


def test_shared_strings_under_another_name_keep_their_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # openpyxl reads the shared strings whole, found by the content types under any name
    import mailvet.dashboard.uploads as uploads

    path = _xlsx(tmp_path / "s.xlsx", [["email"], ["a@a.test"]])
    words = b"".join(b"<si><t>word %d</t></si>" % i for i in range(2000))
    sst = b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">%s</sst>'
    kind = b"application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
    with zipfile.ZipFile(path) as archive:
        types = archive.read("[Content_Types].xml")
    types = types.replace(
        b"</Types>", b'<Override PartName="/xl/words.xml" ContentType="%s" /></Types>' % kind
    )
    moved = _rewrite(
        path,
        tmp_path / "moved.xlsx",
        {"[Content_Types].xml": types, "xl/styles.xml": sst % words},
        {"xl/styles.xml": "xl/words.xml"},
    )
    assert read_preview(moved, "moved.xlsx", max_rows=MAX).rows == 1  # still a workbook
    monkeypatch.setattr(uploads, "XLSX_MAX_SHARED_STRINGS", len(words) // 2)
    assert _error(moved).status == 413


# --- the stash ---


def test_stash_keeps_a_file_for_its_owner_only(tmp_path: Path) -> None:
    stash = UploadStash(tmp_path)
    saved = stash.save(io.BytesIO(b"email\na@a.test\n"), "l.csv", "key-1", 1000)
    assert saved.size == 15 and saved.path.read_bytes() == b"email\na@a.test\n"
    assert saved.path.stat().st_mode & 0o777 == 0o600
    found = stash.get(saved.token, "key-1")
    assert found is not None and found.filename == "l.csv" and found.path == saved.path
    assert stash.get(saved.token, "key-2") is None
    assert stash.get("../../etc/passwd", "key-1") is None
    stash.discard(saved.token)
    assert stash.get(saved.token, "key-1") is None


def test_stash_refuses_a_file_over_the_byte_limit(tmp_path: Path) -> None:
    stash = UploadStash(tmp_path)
    with pytest.raises(UploadError) as caught:
        stash.save(io.BytesIO(b"x" * 2000), "l.csv", "key-1", 1000)
    assert caught.value.status == 413 and "MAILVET_MAX_UPLOAD_BYTES" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_stash_sweeps_old_files(tmp_path: Path) -> None:
    import time

    stash = UploadStash(tmp_path)
    saved = stash.save(io.BytesIO(b"email\n"), "l.csv", "k", 1000)
    stash.sweep(now=time.time() + STASH_TTL + 1)
    assert stash.get(saved.token, "k") is None and list(tmp_path.iterdir()) == []


# --- downloads ---


async def _batch(store: Store, path: Path, name: str, column: int | None = None) -> BatchRecord:
    key, _ = await store.create_key("k", Plan.PAID)
    parsed = read_upload(path, name, column=column, max_rows=MAX)
    record = await store.create_batch(
        key.id, name, parsed.emails, upload=parsed.upload, cells=parsed.cells
    )
    results = ["deliverable", "risky", "undeliverable", "deliverable"]
    await store.save_results(
        record.id,
        [
            (e, {"email": e, "result": results[i % 4], "reason": "r", "score": 1, "id": "x"})
            for i, e in enumerate(parsed.emails)
        ],
    )
    found = await store.get_batch(key.id, record.id)
    assert found is not None
    return found


async def _download(store: Store, record: BatchRecord, kind: str) -> list[list[str]]:
    chunks = [c async for c in download_csv(store, record, DOWNLOADS[kind])]
    text = b"".join(chunks).decode("utf-8")
    delimiter = record.upload.delimiter if record.upload else ","
    return list(csv.reader(io.StringIO(text), delimiter=delimiter))


async def test_downloads_keep_the_uploaded_columns_in_their_order(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "shop list.csv",
        b"Name;City;Mail;Note\nAnn;Paris;a@a.test;=1+1\nBob;Lyon;b@b.test;x\n"
        b"Cid;Nice;c@c.test;\nDee;Metz;d@d.test;y\n",
    )
    store = MemoryStore()
    record = await _batch(store, path, "shop list.csv")
    deliverable = await _download(store, record, "deliverable")
    assert deliverable == [
        ["Name", "City", "Mail", "Note"],
        ["Ann", "Paris", "a@a.test", "'=1+1"],
        ["Dee", "Metz", "d@d.test", "y"],
    ]
    cleaned = await _download(store, record, "deliverable-risky")
    assert [row[2] for row in cleaned] == ["Mail", "a@a.test", "b@b.test", "d@d.test"]
    everything = await _download(store, record, "all")
    assert everything[0][:4] == ["Name", "City", "Mail", "Note"]
    assert everything[0][4:7] == ["email", "username", "domain"] or "result" in everything[0]
    result_at = everything[0].index("result")
    assert [row[result_at] for row in everything[1:]] == [
        "deliverable",
        "risky",
        "undeliverable",
        "deliverable",
    ]
    assert [row[:4] for row in everything[1:]][2] == ["Cid", "Nice", "c@c.test", ""]
    assert download_filename(record, DOWNLOADS["all"]) == "shop list-all.csv"


async def test_a_verdict_column_named_like_an_uploaded_one_is_prefixed(tmp_path: Path) -> None:
    path = _file(tmp_path, "x.csv", b"email,result\na@a.test,old\n")
    store = MemoryStore()
    record = await _batch(store, path, "x.csv")
    header = (await _download(store, record, "all"))[0]
    assert header[:2] == ["email", "result"]
    assert "mailvet_email" in header and "mailvet_result" in header


async def test_a_batch_without_a_file_downloads_an_email_column(tmp_path: Path) -> None:
    store = MemoryStore()
    key, _ = await store.create_key("k", Plan.PAID)
    record = await store.create_batch(key.id, None, ["a@a.test", "b@b.test"])
    await store.save_results(record.id, [("a@a.test", {"result": "deliverable"})])
    assert await _download(store, record, "deliverable") == [["email"], ["a@a.test"]]
    assert download_filename(record, DOWNLOADS["deliverable"]) == f"{record.id}-deliverable.csv"
    assert download_disposition(record, DOWNLOADS["deliverable"]) == (
        f'attachment; filename="{record.id}-deliverable.csv"'
    )


async def test_a_file_named_in_other_letters_keeps_its_name(tmp_path: Path) -> None:
    path = _file(tmp_path, "k.csv", b"email\na@a.test\n")
    store = MemoryStore()
    record = await _batch(store, path, 'C:\\Users\\me\\Контакты "мая".csv')
    assert download_filename(record, DOWNLOADS["all"]) == "_ _-all.csv"  # the ASCII fallback
    value = download_disposition(record, DOWNLOADS["all"])
    assert value.startswith("attachment; filename=\"_ _-all.csv\"; filename*=UTF-8''")
    encoded = value.split("UTF-8''", 1)[1]
    assert unquote(encoded) == "Контакты мая-all.csv"
    assert encoded.isascii() and ";" not in encoded and " " not in encoded
    plain = await _batch(store, path, "shop.csv")
    assert download_disposition(plain, DOWNLOADS["all"]) == 'attachment; filename="shop-all.csv"'


class _CountingStore(MemoryStore):
    """Counts the items handed out by iter_items."""

    handed = 0

    async def iter_items(self, batch_id: str, **kwargs: Any) -> AsyncIterator[BatchItem]:
        async for item in super().iter_items(batch_id, **kwargs):
            self.handed += 1
            yield item


async def test_a_download_streams_rather_than_reading_the_whole_batch(tmp_path: Path) -> None:
    rows = "".join(f"Name {i},u{i}@a.test,{'x' * 40}\n" for i in range(20_000))
    path = _file(tmp_path, "big.csv", ("name,email,note\n" + rows).encode())
    store = _CountingStore()
    record = await _batch(store, path, "big.csv")
    stream = download_csv(store, record, DOWNLOADS["all"])
    first = await stream.__anext__()
    assert first.startswith(b"name,email,note,")
    assert 0 < store.handed < 20_000  # the first chunk left before the batch was read
    rest = [chunk async for chunk in stream]
    assert store.handed == 20_000
    assert sum(c.count(b"\r\n") for c in [first, *rest]) == 20_001


def test_the_stash_gives_a_file_to_one_claim(tmp_path: Path) -> None:
    stash = UploadStash(tmp_path)
    saved = stash.save(io.BytesIO(b"email\na@a.test\n"), "l.csv", "key-1", 1000)
    assert stash.claim(saved.token, "key-2") is None  # not theirs
    claimed = stash.claim(saved.token, "key-1")
    assert claimed is not None and claimed.path.read_bytes() == b"email\na@a.test\n"
    assert stash.claim(saved.token, "key-1") is None
    assert stash.started(saved.token, "key-1") == ""  # being started
    assert stash.started(saved.token, "key-2") is None
    stash.release(claimed)  # the start failed: it can be claimed again
    claimed = stash.claim(saved.token, "key-1")
    assert claimed is not None
    stash.finish(claimed, "batch-1")
    assert stash.get(saved.token, "key-1") is None
    assert stash.started(saved.token, "key-1") == "batch-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{saved.token}.json"]
    stash.discard(saved.token)
    assert list(tmp_path.iterdir()) == []
