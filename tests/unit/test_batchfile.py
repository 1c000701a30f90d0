"""mailvet.batchfile: reading CSV / JSON lines / plain lists, writing CSV / JSON lines,
and the offline run's cached-text path against the plain encoder."""

from __future__ import annotations

import csv
import io
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from mailvet import batchfile
from mailvet.batchfile import (
    MAX_LINE,
    VERDICT_COLUMNS,
    BatchFileError,
    OutputFile,
    open_input,
    output_format,
    run_offline,
    write_validate_json,
)
from mailvet.engine.pipeline import Engine
from mailvet.engine.scoring import decide
from mailvet.settings import Settings, default_settings


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(Settings())


def _run(
    engine: Engine, tmp_path: Path, name: str, data: bytes, out: str = "out.csv", **kw: Any
) -> Path:
    src = tmp_path / name
    src.write_bytes(data)
    dst = tmp_path / out
    with open_input(str(src), **kw) as source:
        sink = OutputFile(str(dst), output_format(str(dst), None, source.fmt), source)
        try:
            run_offline(engine, source, sink)
        except BaseException:
            sink.discard()
            raise
        sink.commit()
    return dst


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


# --- CSV in ---


def test_csv_keeps_every_column_and_adds_the_verdict(engine: Engine, tmp_path: Path) -> None:
    data = (
        b'Name,E-Mail Address,Note\r\n"Doe, Jane",jane.doe@gmail.com,"two\nlines"\r\n'
        b"Bob,info@gmial.com,x\r\nShort\r\n"
    )
    rows = _csv(_run(engine, tmp_path, "list.csv", data))
    assert list(rows[0])[:3] == ["Name", "E-Mail Address", "Note"]
    assert list(rows[0])[3:] == list(VERDICT_COLUMNS)
    assert rows[0]["Name"] == "Doe, Jane" and rows[0]["Note"] == "two\nlines"
    assert rows[0]["email"] == "jane.doe@gmail.com" and rows[0]["reason"] == "not_checked"
    assert rows[0]["is_free"] == "true" and rows[0]["isv_nogeneric"] == "true"
    assert rows[1]["did_you_mean"] == "info@gmail.com" and rows[1]["isv_nogeneric"] == "false"
    assert rows[2]["Name"] == "Short" and rows[2]["E-Mail Address"] == ""
    assert rows[2]["reason"] == "invalid_format"


def test_csv_delimiter_is_found_and_kept(engine: Engine, tmp_path: Path) -> None:
    out = _run(engine, tmp_path, "eu.txt", b"nom;courriel\nJean;jean@orange.fr\n")
    lines = out.read_text().splitlines()
    assert lines[0].startswith("nom;courriel;email;username;")
    assert lines[1].startswith("Jean;jean@orange.fr;jean@orange.fr;jean;orange.fr;")


def test_rows_wider_than_the_header(engine: Engine, tmp_path: Path) -> None:
    rows = _csv(_run(engine, tmp_path, "w.csv", b"email,n\nann@gmail.com,1,,\n"))
    assert rows[0]["n"] == "1" and rows[0]["result"] == "unknown"
    with pytest.raises(BatchFileError, match="line 3 has 3 cells, the header 2"):
        _run(engine, tmp_path, "w.csv", b"email,n\nann@gmail.com,1\nbob@gmail.com,2,x\n")


def test_column_option_and_clear_errors(engine: Engine, tmp_path: Path) -> None:
    data = b"id,primary,backup\n1,a@example.com,b@example.com\n"
    rows = _csv(_run(engine, tmp_path, "c.csv", data, column="backup"))
    assert rows[0]["email"] == "b@example.com"
    with pytest.raises(BatchFileError, match=r"no column named 'mail'.*'primary'"):
        _run(engine, tmp_path, "c.csv", data, column="mail")
    with pytest.raises(BatchFileError, match=r"no email column found.*--column"):
        _run(engine, tmp_path, "d.csv", b"id,who\n1,x@example.com\n")


def test_verdict_names_the_input_uses_get_a_prefix(engine: Engine, tmp_path: Path) -> None:
    rows = _csv(_run(engine, tmp_path, "r.csv", b"email,result\nann@gmail.com,old\n"))
    assert rows[0]["result"] == "old" and rows[0]["mailvet_result"] == "unknown"
    assert rows[0]["email"] == "ann@gmail.com" and rows[0]["mailvet_email"] == "ann@gmail.com"


# --- JSON lines and plain lists ---


def test_jsonl_keeps_fields_and_types(engine: Engine, tmp_path: Path) -> None:
    data = (
        b'{"id": 7, "email": "ann@gmail.com", "tags": ["a", {"b": null}]}\n\n'
        b'{"email": 42}\n{"name": "no address"}\n'
    )
    rows = _jsonl(_run(engine, tmp_path, "in.jsonl", data, out="out.jsonl"))
    assert rows[0]["id"] == 7 and rows[0]["tags"] == ["a", {"b": None}]
    assert rows[0]["email"] == "ann@gmail.com" and rows[0]["score"] == 50
    assert rows[0]["mailvet_email"] == "ann@gmail.com" and rows[0]["is_free"] is True
    assert rows[1]["reason"] == "invalid_format" and rows[1]["email"] == 42
    assert rows[2]["name"] == "no address" and rows[2]["reason"] == "invalid_format"
    assert len(rows) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"email": "a@b.com"}\n[1, 2]\n', "line 2 is not a JSON object"),
        (b'{"email": "a@b.com"}\n\n{"email": \n', "line 3 is not JSON"),
    ],
)
def test_jsonl_errors_name_the_line(
    engine: Engine, tmp_path: Path, data: bytes, message: str
) -> None:
    with pytest.raises(BatchFileError, match=message):
        _run(engine, tmp_path, "bad.jsonl", data, out="o.jsonl")
    assert not list(tmp_path.glob(".o.jsonl*")), "the partial output is removed"


def test_plain_list_to_csv_and_jsonl(engine: Engine, tmp_path: Path) -> None:
    data = b"\xef\xbb\xbfann@gmail.com\r\n\r\n  bob@Yahoo.COM \r\nnot an address\n"
    rows = _csv(_run(engine, tmp_path, "l.txt", data))
    assert [r["input"] for r in rows] == ["ann@gmail.com", "bob@Yahoo.COM", "not an address"]
    assert rows[1]["email"] == "bob@yahoo.com" and rows[1]["domain"] == "yahoo.com"
    assert rows[2]["reason"] == "invalid_format"
    objs = _jsonl(_run(engine, tmp_path, "l.txt", data, out="o.jsonl"))
    assert [o["input"] for o in objs] == [r["input"] for r in rows]
    assert objs[0]["isv_domain"] is None and objs[0]["is_free"] is True


def test_tsv_out_uses_tabs(engine: Engine, tmp_path: Path) -> None:
    out = _run(engine, tmp_path, "l.txt", b"ann@gmail.com\nbad,x\n", out="o.tsv")
    lines = out.read_text().splitlines()
    assert lines[0].startswith("input\temail\tusername\t")
    assert lines[1].startswith("ann@gmail.com\tann@gmail.com\tann\tgmail.com\t")
    assert lines[2].startswith("bad,x\t") and lines[2].endswith("\tundeliverable\tinvalid_format")


def test_output_format_rules() -> None:
    assert output_format("x.jsonl", None, "csv") == "jsonl"
    assert output_format("x.csv", None, "jsonl") == "csv"
    assert output_format("-", None, "jsonl") == "jsonl"
    assert output_format("-", None, "plain") == "csv"
    assert output_format("x.jsonl", "csv", "plain") == "csv"
    with pytest.raises(BatchFileError):
        output_format("x", "xml", "plain")


# --- bad bytes ---


def test_broken_utf8_names_the_line_and_encoding_option_reads_it(
    engine: Engine, tmp_path: Path
) -> None:
    data = b"ann@gmail.com\nbob@gmail.com\nj\xf6rg@web.de\n"
    with pytest.raises(BatchFileError, match=r"line 3 is not valid utf-8 .*--encoding"):
        _run(engine, tmp_path, "l.txt", data)
    rows = _csv(_run(engine, tmp_path, "l.txt", data, encoding="cp1252"))
    assert rows[2]["input"] == "jörg@web.de" and rows[2]["isv_format"] == "true"


def test_nul_byte_is_an_invalid_address_not_a_crash(engine: Engine, tmp_path: Path) -> None:
    rows = _csv(_run(engine, tmp_path, "n.csv", b"email,x\nann\x00@gmail.com,1\nbob@gmail.com,2\n"))
    assert rows[0]["reason"] == "invalid_format" and rows[1]["reason"] == "not_checked"
    plain = _csv(_run(engine, tmp_path, "n.txt", b"ann\x00@gmail.com\n"))
    assert plain[0]["reason"] == "invalid_format"


@pytest.mark.parametrize("newline", [b"\n", b""])
def test_a_huge_line_is_refused(engine: Engine, tmp_path: Path, newline: bytes) -> None:
    data = b"ann@gmail.com\n" + b"x" * (MAX_LINE + 10) + newline + b"bob@gmail.com\n"
    with pytest.raises(BatchFileError, match=f"line 2 is over {MAX_LINE} bytes"):
        _run(engine, tmp_path, "h.txt", data)


# --- formula guard ---


def test_csv_cells_that_look_like_formulas_are_defused(engine: Engine, tmp_path: Path) -> None:
    data = (
        b'email,name\n=1+1@x.com,"=HYPERLINK(""http://evil"")"\n-bob@gmail.com,+33 6\n'
        b"@ann@gmail.com,plain\n"
    )
    text = _run(engine, tmp_path, "f.csv", data).read_text()
    rows = _csv(tmp_path / "out.csv")
    assert rows[0]["email"] == "'=1+1@x.com" and rows[0]["name"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["mailvet_email"] == "'=1+1@x.com" and rows[0]["username"] == "'=1+1"
    assert rows[1]["email"] == "'-bob@gmail.com" and rows[1]["name"] == "'+33 6"
    assert rows[2]["email"] == "'@ann@gmail.com" and rows[2]["name"] == "plain"
    assert "\n=" not in text and ",=" not in text and ",-" not in text and ",+" not in text
    objs = _jsonl(_run(engine, tmp_path, "f.csv", data, out="o.jsonl"))
    assert objs[0]["email"] == "=1+1@x.com", "JSON is not a spreadsheet: written as it is"


# --- the cached-text path writes what the plain encoder writes ---

ADDRESSES = [
    "jane.doe@gmail.com",
    "Info@Gmail.com",
    "info+x@gmial.com",
    "sales@company.de",
    "no-reply@mailinator.com",
    "bob@YAHOO.COM",
    "x@gmail.con",
    "zoë@gixcloud.com",
    '"quoted"@gmail.com',
    "a..b@gmail.com",
    "=cmd@gmail.com",
    "+tag@gmail.com",
    "alice@shop.test",
    "alice@localhost",
    "user@[127.0.0.1]",
    "NULL",
    "jörg@bücher.de",
    "a" * 70 + "@gmail.com",
    "x@" + "b" * 63 + ".com",
    # a typo suggestion and a normalised domain at once, for a person and a role
    "Bob.Smith@GMIAL.com",
    "Sales@Gmial.Com",
    "x" * 64 + "@gmail.com",
    "a@" + "c" * 63 + "." + "d" * 63 + "." + "e" * 63 + "." + "f" * 57 + ".com",
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("shape", ["plain", "csv"])
def test_cached_text_equals_the_plain_encoder(
    engine: Engine, tmp_path: Path, fmt: str, shape: str
) -> None:
    addresses = ADDRESSES * 3
    if shape == "plain":
        data = "".join(a + "\n" for a in addresses).encode()
    else:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["email", "n"])
        writer.writerows([a, i] for i, a in enumerate(addresses))
        data = buf.getvalue().encode()
    fast = _run(engine, tmp_path, f"in.{shape}", data, out=f"fast.{fmt}")
    # the reference: every row through OutputFile.line with the full verdict
    ref_path = tmp_path / f"ref.{fmt}"
    with open_input(str(tmp_path / f"in.{shape}")) as source:
        sink = OutputFile(str(ref_path), "csv" if fmt == "csv" else "jsonl", source)
        for raw, row in source.rows():
            sink.write(row, engine.verdict_offline(raw).as_dict())
        sink.commit()
    assert fast.read_bytes() == ref_path.read_bytes()


def test_validate_json_equals_verdict_as_dict(engine: Engine) -> None:
    out = io.BytesIO()
    assert write_validate_json(engine, [ADDRESSES[:5], ADDRESSES[5:]], out) == len(ADDRESSES)
    got = [orjson.loads(line) for line in out.getvalue().splitlines()]
    for raw, data in zip(ADDRESSES, got, strict=True):
        want = engine.verdict_offline(raw).as_dict()
        assert list(data) == list(want)
        assert {**data, "id": ""} == {**want, "id": ""}
    assert len({d["id"] for d in got}) == len(got)


def test_counts_by_result(engine: Engine, tmp_path: Path) -> None:
    src = tmp_path / "l.txt"
    src.write_text("ann@gmail.com\nbad\nx@mailinator.com\nbob@gmail.com\n")
    with open_input(str(src)) as source:
        sink = OutputFile(str(tmp_path / "o.csv"), "csv", source)
        counts = run_offline(engine, source, sink)
        sink.commit()
    assert counts.rows == 4
    assert counts.by_result == {"unknown": 2, "undeliverable": 1, "risky": 1}


# --- streaming ---


def test_memory_stays_bounded_on_a_large_file(engine: Engine, tmp_path: Path) -> None:
    src = tmp_path / "big.txt"
    line = b"someone.with.a.long.name@example-company.com\n"
    src.write_bytes(line * 400_000)  # 18 MB in, ~60 MB out
    tracemalloc.start()
    try:
        with open_input(str(src)) as source:
            sink = OutputFile(str(tmp_path / "big.csv"), "csv", source)
            counts = run_offline(engine, source, sink)
            sink.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert counts.rows == 400_000
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_blocks_read_a_file_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batchfile, "_BLOCK", 64)
    src = tmp_path / "l.txt"
    src.write_text("".join(f"user{i}@example.com\n" for i in range(100)))
    with open_input(str(src)) as source:
        blocks = list(source.plain_blocks())
    assert len(blocks) > 10
    assert [a for b in blocks for a in b] == [f"user{i}@example.com" for i in range(100)]


def test_fingerprint_names_path_size_and_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"email\nann@gmail.com\n")
    b.write_bytes(b"email\nann@gmail.com\n")
    first = batchfile.file_fingerprint(str(a))
    assert first == batchfile.file_fingerprint(str(a)) and len(first) == 32
    assert first != batchfile.file_fingerprint(str(b))  # another path
    a.write_bytes(b"email\nbob@gmail.com\n")  # same size, other content
    assert first != batchfile.file_fingerprint(str(a))


# --- the optimised writers against the straightforward ones, on a nasty file ---

NASTY = (
    b"ann@gmail.com\r\nInfo@Gmial.com\r\n\r\n   \nbob@YAHOO.COM\n\x00@example.com\nNULL\n"
    b"a\x00b@gmail.com\n=cmd@gmail.com\n+x@gmail.com\n-x@gmail.com\n@x@gmail.com\n"
    b'"quoted"@gmail.com\n"a,b"@gmail.com\nz\xc3\xabe@b\xc3\xbccher.de\nx@shop.test\nx@localhost\n'
    b"x@[127.0.0.1]\nno-reply@mailinator.com\nSales@Company.DE\nsales@company.de\ta\n"
    b"Bob.Smith@GMIAL.com\ninfo@gmial.com\njane@gmial.com\nx@gmail.con\ninfo@Gmail.Con\n"
    + b"q" * 300_000
    + b"@gmail.com\n"
    + b"y" * 64
    + b"@gmail.com\n"
    + b"y" * 65
    + b"@gmail.com\n"
    + b"".join(b"user%d@company%d.com\ninfo@company%d.com\n" % (i, i % 7, i % 5) for i in range(50))
    + b"last@gmail.com"  # no final line break
)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_offline_run_equals_the_plain_encoder_on_a_nasty_file(
    engine: Engine, tmp_path: Path, fmt: str
) -> None:
    # Engine(None): as the command runs without MAILVET_* settings
    for eng, ref in ((engine, engine), (Engine(None), Engine(default_settings()))):
        fast = _run(eng, tmp_path, "nasty.txt", NASTY, out=f"fast.{fmt}")
        ref_path = tmp_path / f"ref.{fmt}"
        with open_input(str(tmp_path / "nasty.txt")) as source:
            sink = OutputFile(str(ref_path), "csv" if fmt == "csv" else "jsonl", source)
            for raw, row in source.rows():
                sink.write(row, decide(ref.check_offline(raw)).as_dict())
            sink.commit()
        assert fast.read_bytes() == ref_path.read_bytes()


def test_validate_json_equals_the_full_path_on_a_nasty_file(engine: Engine) -> None:
    blocks = [
        [x.strip() for x in block if x.strip()]
        for block in (NASTY.decode().replace("\r\n", "\n").split("\n")[i : i + 7] for i in (0, 7))
    ]
    blocks.append([x.strip() for x in NASTY.decode().split("\n")[14:] if x.strip()])
    for eng, ref in ((engine, engine), (Engine(None), Engine(default_settings()))):
        out = io.BytesIO()
        n = write_validate_json(eng, blocks, out)
        got = out.getvalue().splitlines()
        addresses = [a for block in blocks for a in block]
        assert n == len(addresses) == len(got)
        for raw, line in zip(addresses, got, strict=True):
            want = decide(ref.check_offline(raw)).as_dict()
            data = orjson.loads(line)
            assert line == orjson.dumps({**want, "id": data["id"]}), raw


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ann@gmail.com\nb\xffd@gmail.com\n", "line 2 is not valid utf-8"),
        (b"ann@gmail.com\n" + b"x" * (MAX_LINE + 10) + b"\n", f"line 2 is over {MAX_LINE} bytes"),
    ],
)
def test_unreadable_lines_end_the_offline_run(
    engine: Engine, tmp_path: Path, data: bytes, message: str
) -> None:
    with pytest.raises(BatchFileError, match=message):
        _run(engine, tmp_path, "bad.txt", data)


def test_max_path_is_the_syntax_stages() -> None:
    from mailvet.engine.syntax import MAX_PATH

    assert batchfile._MAX_PATH == MAX_PATH


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_counts_survive_the_row_text_cache_being_cleared(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    monkeypatch.setattr(batchfile, "_CACHE_SIZE", 3)  # cleared every few domains
    addresses = [
        f"{local}@{domain}"
        for domain in ("gmail.com", "mailinator.com", "a.de", "gmial.com", "b.de", "Gmail.Com")
        for local in ("ann", "info", "x.y", "=1", "bob")
    ] * 3
    src = tmp_path / "l.txt"
    src.write_text("\n".join(addresses) + "\n")
    with open_input(str(src)) as source:
        sink = OutputFile(str(tmp_path / f"o.{fmt}"), fmt, source)  # type: ignore[arg-type]
        counts = run_offline(engine, source, sink)
        sink.commit()
    want: dict[str, int] = {}
    for raw in addresses:
        result = engine.verdict_offline(raw).result.value
        want[result] = want.get(result, 0) + 1
    assert counts.rows == len(addresses) and counts.by_result == want
    monkeypatch.undo()
    _run(engine, tmp_path, "l.txt", src.read_bytes(), out=f"ref.{fmt}")
    assert (tmp_path / f"o.{fmt}").read_bytes() == (tmp_path / f"ref.{fmt}").read_bytes()
