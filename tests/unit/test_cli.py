"""The ``mailvet`` command, run in-process with typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailvet.cli import app

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli.db"
    monkeypatch.setenv("MAILVET_DATABASE_URL", f"sqlite:///{path}")
    return path


def test_validate_offline_json_is_the_data_object() -> None:
    res = runner.invoke(app, ["validate", "--offline", "--json", "Jane@GMIAL.com", "NULL"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [d["email"] for d in lines] == ["Jane@gmial.com", "NULL"]
    assert lines[0]["did_you_mean"] == "Jane@gmail.com"
    assert lines[1]["result"] == "undeliverable" and lines[1]["reason"] == "invalid_format"
    assert list(lines[0]) == [
        "id", "email", "username", "domain", "did_you_mean", "mx_record", "provider", "score",
        "isv_format", "isv_domain", "isv_mx", "isv_noblock", "isv_nocatchall", "isv_nogeneric",
        "is_disposable", "is_free", "result", "reason",
    ]


def test_validate_reads_stdin_in_order() -> None:
    stdin = "a@example.com\n\n b@example.com \nnot-an-address\n"
    res = runner.invoke(app, ["validate", "--offline", "--json", "-"], input=stdin)
    assert res.exit_code == 0, res.output
    emails = [json.loads(line)["email"] for line in res.stdout.splitlines()]
    assert emails == ["a@example.com", "b@example.com", "not-an-address"]


def test_validate_table_says_offline() -> None:
    res = runner.invoke(app, ["validate", "--offline", "info@mailinator.com"])
    assert res.exit_code == 0, res.output
    assert "offline" in res.stdout and "disposable" in res.stdout


def test_validate_survives_nasty_input() -> None:
    nasty = ["\x00@example.com", "a" * 100_000 + "@example.com", "\udcff@example.com", "@", ""]
    res = runner.invoke(app, ["validate", "--offline", "--json", *nasty])
    assert res.exit_code == 0, res.output
    assert all(json.loads(x)["reason"] == "invalid_format" for x in res.stdout.splitlines())


def test_keys_lifecycle(db: Path) -> None:
    created = runner.invoke(app, ["keys", "create", "--name", "crm", "--plan", "free"])
    assert created.exit_code == 0, created.output
    secret = created.stdout.split()[0]
    assert secret.startswith("mv_")
    listed = runner.invoke(app, ["keys", "list"])
    assert "crm" in listed.stdout and "free" in listed.stdout
    assert secret not in listed.stdout and secret.encode() not in db.read_bytes()
    prefix = secret[:11]
    assert runner.invoke(app, ["keys", "revoke", prefix]).exit_code == 0
    again = runner.invoke(app, ["keys", "revoke", prefix])
    assert again.exit_code == 1


def test_keys_create_refuses_unknown_plan(db: Path) -> None:
    res = runner.invoke(app, ["keys", "create", "--name", "x", "--plan", "gold"])
    assert res.exit_code == 2


def test_db_upgrade(db: Path) -> None:
    res = runner.invoke(app, ["db", "upgrade"])
    assert res.exit_code == 0 and db.exists()


def test_keys_made_in_one_folder_are_listed_from_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILVET_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "a")
    created = runner.invoke(app, ["keys", "create", "--name", "made-in-a"])
    assert created.exit_code == 0, created.output
    monkeypatch.chdir(tmp_path / "b")
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0, listed.output
    assert "made-in-a" in listed.stdout
    assert (tmp_path / "data" / "mailvet" / "mailvet.db").is_file()
    assert not list((tmp_path / "a").iterdir()) and not list((tmp_path / "b").iterdir())


def test_a_broken_database_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    url = f"sqlite:///{tmp_path / 'not-a-folder' / 'mailvet.db'}"
    monkeypatch.setenv("MAILVET_DATABASE_URL", url)
    res = runner.invoke(app, ["keys", "list"])
    assert res.exit_code == 1
    assert res.output.startswith("error: database error") and "Traceback" not in res.output
    assert str(tmp_path / "not-a-folder" / "mailvet.db") in res.output  # says which database


def test_bad_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILVET_SMTP_PORT", "many")
    res = runner.invoke(app, ["validate", "--offline", "a@b.com"])
    assert res.exit_code == 2
    assert "smtp_port" in res.output


def test_sim_prints_a_load_command_that_runs_for_a_bare_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `. sim.env` makes a POSIX shell search $PATH, not the current folder: the printed
    # command must name the file with a slash (`. ./sim.env`), as the README does
    import re
    import subprocess

    from mailvet.cli import _sim_print, _sim_write_env

    monkeypatch.chdir(tmp_path)
    env = {"MAILVET_SMTP_PORT": "10025"}
    _sim_write_env(Path("sim.env"), env)
    _sim_print("127.0.0.1:10053", 10025, env, Path("sim.env"))
    m = re.search(r"set -a; (\. [^;]+); set \+a", capsys.readouterr().out)
    assert m is not None
    shell = f"set -a; {m[1]}; set +a; echo $MAILVET_SMTP_PORT"
    run = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=30)
    assert run.stdout.strip() == "10025", run.stderr
