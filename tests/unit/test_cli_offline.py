"""mailvet.cli_offline: which command lines it runs without typer, the settings it loads,
and the command bodies the typer app shares with it (the end-to-end comparison of both
ways in: tests/e2e/test_cli_batch.py)."""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from mailvet import cli_offline
from mailvet.cli_offline import (
    BatchArgs,
    BatchJob,
    CommandError,
    ValidateJob,
    load_settings,
    parse,
    run_batch_offline,
)
from mailvet.settings import Settings

CLEAN: dict[str, str] = {"PATH": "/usr/bin", "HOME": "/home/x"}


_JOB = BatchJob("in.txt", "out.csv", None, None, None, "utf-8", None, None, None)


def _batch(**kw: Any) -> BatchJob:
    return replace(_JOB, **kw)


@pytest.mark.parametrize(
    ("argv", "job"),
    [
        (["validate", "--offline", "--json", "-"], ValidateJob(["-"])),
        (["validate", "a@x", "--json", "b@y", "--offline"], ValidateJob(["a@x", "b@y"])),
        (["validate", "--json", "--offline", "--json", "-"], ValidateJob(["-"])),
        (["batch", "--offline", "in.txt", "-o", "out.csv"], _batch()),
        (["batch", "in.txt", "--offline", "-oout.csv"], _batch()),
        (["batch", "--offline", "in.txt", "--output=-"], _batch(output="-")),
        (["batch", "--offline", "-", "-o", "-"], _batch(file="-", output="-")),
        (
            [
                "batch", "--offline", "in.csv", "--output", "o.jsonl", "--format", "jsonl",
                "--input-format=csv", "--column", "Mail", "--encoding", "cp1252",
                "--delimiter", ";", "--no-progress", "--state-dir", "/tmp/s",
            ],
            _batch(
                file="in.csv", output="o.jsonl", out_format="jsonl", input_format="csv",
                column="Mail", encoding="cp1252", delimiter=";", progress=False,
                state_dir=Path("/tmp/s"),
            ),
        ),
        (["batch", "--offline", "in.txt", "-o", "o.csv", "--no-progress", "--progress"],
         _batch(output="o.csv", progress=True)),
    ],
)  # fmt: skip
def test_the_offline_command_lines_it_runs(argv: list[str], job: ValidateJob | BatchJob) -> None:
    assert parse(argv, CLEAN) == job


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["validate", "--offline", "-"],  # the table: rich
        ["validate", "--json", "-"],  # the network
        ["validate", "--offline", "--json"],  # no address: typer says so
        ["validate", "--offline", "--json", "--details", "-"],
        ["validate", "--offline", "--json", "--help"],
        ["validate", "--offline", "--json", "--", "-x@y.com"],
        ["validate", "--offline", "--json", "-x"],
        ["validate", "--offline=yes", "--json", "-"],
        ["serve"],
        ["keys", "list"],
        ["batch", "in.txt", "-o", "out.csv"],  # stored batch
        ["batch", "--offline", "--no-offline", "in.txt", "-o", "out.csv"],
        ["batch", "--offline", "in.txt"],  # no -o: typer says so
        ["batch", "--offline", "in.txt", "-o"],
        ["batch", "--offline", "a.txt", "b.txt", "-o", "out.csv"],
        ["batch", "--offline", "in.txt", "-o", "a.csv", "-o", "b.csv"],  # twice
        ["batch", "--offline", "in.txt", "-o", "--column"],  # a value like an option
        ["batch", "--offline", "in.txt", "-o", "out.csv", "--progress=1"],
        ["batch", "--offline", "in.txt", "-o", "out.csv", "-x"],
        ["batch", "--offline", "in.txt", "-o", "out.csv", "--colum", "email"],
        ["batch", "--offline", "in.txt", "-o", "out.csv", "--help"],
        ["Validate", "--offline", "--json", "-"],
    ],
)
def test_anything_else_goes_to_the_typer_app(argv: list[str]) -> None:
    assert parse(argv, CLEAN) is None


def test_shell_completion_goes_to_the_typer_app() -> None:
    argv = ["validate", "--offline", "--json", "-"]
    assert parse(argv, {**CLEAN, "_MAILVET_COMPLETE": "bash_complete"}) is None


def test_settings_are_built_only_when_a_mailvet_variable_is_set() -> None:
    assert load_settings(CLEAN) is None
    got = load_settings({**CLEAN, "MAILVET_PORT": "1"})  # pydantic reads os.environ
    assert isinstance(got, Settings)


@pytest.mark.parametrize("name", ["MAILVET_SMTP_PORT", "mailvet_smtp_port"])
def test_a_bad_setting_is_the_typer_apps_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "not-a-port")
    with pytest.raises(CommandError) as caught:
        load_settings({name: "not-a-port"})
    assert caught.value.code == 2
    assert caught.value.message.startswith("error: invalid settings: ")
    assert "smtp_port" in caught.value.message


def _args(src: Path, out: Path, **kw: Any) -> BatchArgs:
    base = BatchArgs(str(src), str(out), None, None, None, "utf-8", None, False, None)
    return replace(base, **kw)


def test_batch_errors_are_command_errors(tmp_path: Path) -> None:
    src = tmp_path / "l.txt"
    src.write_bytes(b"ann@gmail.com\n\xff@x.com\n")
    out = tmp_path / "o.csv"
    cases = [
        (_args(src, out, input_format="xml"), "error: --input-format must be csv, jsonl or plain"),
        (_args(src, out, delimiter=";;"), "error: --delimiter must be one character"),
        (_args(tmp_path / "no.txt", out), f"error: No such file or directory: {tmp_path}/no.txt"),
    ]  # fmt: skip
    for args, message in cases:
        with pytest.raises(CommandError) as caught:
            run_batch_offline(None, args)
        assert (caught.value.code, caught.value.message) == (2, message)
    with pytest.raises(CommandError) as caught:
        run_batch_offline(None, _args(src, out))
    assert caught.value.code == 2 and "line 2 is not valid utf-8" in caught.value.message
    assert not out.exists() and list(tmp_path.iterdir()) == [src], "no partial output left"


def test_validate_json_default_engine_equals_the_settings_one(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    for name in [k for k in os.environ if k.upper().startswith("MAILVET_")]:
        monkeypatch.delenv(name)
    data = b"Jane@GMIAL.com\ninfo@mailinator.com\nbad@\nx@shop.test\n"
    got: list[list[dict[str, Any]]] = []
    for settings in (None, Settings()):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        cli_offline.run_validate_json(settings, ["-", "bob@gmail.com"])
        got.append([orjson.loads(x) for x in capsysbinary.readouterr().out.splitlines()])
    lean, full = got
    assert [d["email"] for d in lean] == [
        "Jane@gmial.com", "info@mailinator.com", "bad@", "x@shop.test", "bob@gmail.com",
    ]  # fmt: skip
    assert [{**d, "id": ""} for d in lean] == [{**d, "id": ""} for d in full]
