"""The docs stay true to the code: every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

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
