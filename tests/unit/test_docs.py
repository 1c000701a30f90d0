"""The docs stay true to the code: every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailvet.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_configuration_md() -> None:
    text = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    missing = [n for n in Settings.model_fields if f"`MAILVET_{n.upper()}`" not in text]
    assert not missing
    documented = set(re.findall(r"`MAILVET_([A-Z0-9_]+)`", text))
    assert documented == {n.upper() for n in Settings.model_fields}  # nothing stale either


def test_readme_opens_with_the_two_setup_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```")]
    assert [line.split()[:2] for line in block] == [["make", "run"], ["make", "test"]]


def test_api_md_reason_table_matches_the_scores() -> None:
    from mailvet.engine.scoring import SCORES
    from mailvet.verdict import Reason

    text = (ROOT / "docs" / "API.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| (\w+) \| `(\w+)` \| (\d+)", text, re.MULTILINE)
    assert len(rows) >= 15
    score_key = {"accepted_email": "deliverable", "timeout": "timeout_sound"}
    for _result, reason, score in rows:
        Reason(reason)  # a real reason
        assert int(score) == SCORES[score_key.get(reason, reason)], (reason, score)
    documented = {reason for _, reason, _ in rows}
    assert documented == {r.value for r in Reason}


# --- docs/DEPLOY.md and deploy/: the multi-host deployment stays runnable ---------------


def _deploy_commands() -> list[list[str]]:
    """Every command line of the ```sh blocks of docs/DEPLOY.md, split, comments and
    ``sudo`` / ``sudo -u USER`` dropped."""
    import shlex

    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["sudo", "-u"]:
                words = words[3:]
            elif words[:1] == ["sudo"]:
                words = words[1:]
            if words:
                commands.append(words)
    return commands


def _mailvet_parses(args: list[str]) -> None:
    """``mailvet ARGS`` names a real command with real options (values not checked)."""
    import typer.main

    from mailvet.cli import app

    command = typer.main.get_command(app)
    # --help stops before running anything, after every command and option was resolved
    assert command.main([*args, "--help"], prog_name="mailvet", standalone_mode=False) in (0, None)


def test_deploy_md_commands_and_units_run_real_mailvet_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = _deploy_commands()
    units = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
    assert units
    mailvet = [c[1:] for c in commands if c[0].split("/")[-1] == "mailvet"]
    for unit in units:
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = line.removeprefix("ExecStart=").split()
                assert argv[0] == "/opt/mailvet/bin/mailvet"  # where DEPLOY.md installs it
                mailvet.append(argv[1:])
            if line.startswith("EnvironmentFile="):
                name = Path(line.removeprefix("EnvironmentFile=")).name
                assert (ROOT / "deploy" / name).is_file(), name  # shipped, to be installed
    for args in mailvet:
        _mailvet_parses(args)
    assert {"serve", "worker", "status", "db"} <= {args[0] for args in mailvet}
    for words in commands:  # the files it installs or starts are the ones shipped
        if words[0] in ("install", "cp"):
            for word in words:
                if word.startswith("deploy/"):
                    assert list(ROOT.glob(word)), word
        if words[0] == "systemctl" and words[1] in ("start", "enable"):
            assert (ROOT / "deploy" / "systemd" / f"{words[-1]}.service").is_file(), words


def test_deploy_env_files_are_valid_settings() -> None:
    names = {n.upper() for n in Settings.model_fields}
    deploy = ROOT / "deploy"
    texts = [(ROOT / "docs" / "DEPLOY.md").read_text()]
    texts += [p.read_text() for p in [*deploy.glob("*.env"), *deploy.glob("systemd/*")]]
    used = {name for text in texts for name in re.findall(r"MAILVET_([A-Z0-9_]+)", text)}
    assert used and used <= names, used - names  # only settings that exist
    for env in deploy.glob("*.env"):
        Settings(_env_file=env)  # type: ignore[call-arg]  # every value valid as written
