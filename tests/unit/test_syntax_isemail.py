"""engine/syntax.py against Dominic Sayers' is_email suite (/work/shared/conformance/isemail).

- every ``valid: false`` row is rejected under every policy, except the rows whose only
  fault is a local part over 64 octets (listed below): RFC 5321 sets that limit but
  many servers take longer ones, so mailvet accepts them with a note and lets the SMTP
  stage decide (issue 7, section 4);
- with quoted local parts, address literals and single-label / numeric TLDs allowed,
  every ``valid: true`` row is accepted;
- under the default (sending) policy, the ``valid: true`` rows that are refused are
  listed below with the policy that refuses them; a row refused for any other reason,
  or a listed row that is accepted, fails the test.

The suite lives outside the repository (next to it, in ``shared/``). A missing file
is a failure, never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailvet.engine.syntax import (
    DEFAULT_POLICY,
    ERR_ADDRESS_LITERAL,
    ERR_NUMERIC_TLD,
    ERR_QUOTED_LOCAL,
    ERR_SINGLE_LABEL,
    ERR_TLD,
    SyntaxPolicy,
    check_syntax,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CASES = REPO_ROOT.parent / "shared" / "conformance" / "isemail" / "cases.jsonl"
EXPECTED_ROWS = 164

PERMISSIVE = SyntaxPolicy(
    allow_quoted_local=True, allow_address_literal=True, allow_single_label_domain=True
)
POLICIES = {"default": DEFAULT_POLICY, "permissive": PERMISSIVE}

# valid RFC 5321 rows the sending view refuses, by suite id, with the refusing policy
DEFAULT_REFUSED: dict[str, str] = {
    "5": ERR_SINGLE_LABEL,  # test@io
    "166": ERR_SINGLE_LABEL,  # test@org
    "33": ERR_TLD,  # test@iana.co-uk: a top-level label is alphabetic or an A-label
    "23": ERR_NUMERIC_TLD,  # test@iana.123
    "24": ERR_NUMERIC_TLD,  # test@255.255.255.255
    "42": ERR_QUOTED_LOCAL,  # "test"@iana.org
    "43": ERR_QUOTED_LOCAL,  # ""@iana.org
    "45": ERR_QUOTED_LOCAL,  # "\a"@iana.org
    "46": ERR_QUOTED_LOCAL,  # "\""@iana.org
    "48": ERR_QUOTED_LOCAL,  # "\\"@iana.org
    "55": ERR_QUOTED_LOCAL,  # "test\ test"@iana.org
    "61": ERR_ADDRESS_LITERAL,  # test@[255.255.255.255]
    "68": ERR_ADDRESS_LITERAL,  # test@[IPv6:1111:2222:3333:4444:5555:6666:7777:8888]
    "72": ERR_ADDRESS_LITERAL,  # test@[IPv6:1111:2222:3333:4444:5555::8888]
    "75": ERR_ADDRESS_LITERAL,  # test@[IPv6:::3333:4444:5555:6666:7777:8888]
    "77": ERR_ADDRESS_LITERAL,  # test@[IPv6:::]
    "79": ERR_ADDRESS_LITERAL,  # test@[IPv6:1111:2222:3333:4444:5555:6666:255.255.255.255]
    "81": ERR_ADDRESS_LITERAL,  # test@[IPv6:1111:2222:3333:4444::255.255.255.255]
}

# ``valid: false`` rows (ISEMAIL_RFC5322_LOCAL_TOOLONG) accepted on purpose, with the
# policy that still refuses them in the sending view (None: accepted there too)
LOCAL_TOOLONG_ACCEPTED: dict[str, str | None] = {
    "26": None,  # a 65-character dot-atom local part
    "59": ERR_QUOTED_LOCAL,  # "abc...z abc...z abcdefghj"@iana.org, 65 octets quoted
    "60": ERR_QUOTED_LOCAL,  # the same with a quoted pair
}


def _load() -> list[dict[str, Any]]:
    if not CASES.is_file():
        return []
    with CASES.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


ROWS = _load()
_MISSING = [pytest.param(None, id="cases.jsonl-missing")]


def _params(valid: bool) -> list[Any]:
    rows = [r for r in ROWS if r["valid"] is valid]
    return [pytest.param(r, id=f"{r['id']}-{r['diagnosis']}") for r in rows] or _MISSING


def _require(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:
        pytest.fail(f"conformance suite not found at {CASES}")
    return row


def test_suite_is_present_and_complete() -> None:
    assert CASES.is_file(), f"conformance suite not found at {CASES}"
    assert len(ROWS) == EXPECTED_ROWS
    by_id = {r["id"]: r for r in ROWS}
    for row_id in DEFAULT_REFUSED:
        assert by_id[row_id]["valid"] is True, f"row {row_id} is listed but not a valid row"
    for row_id in LOCAL_TOOLONG_ACCEPTED:
        row = by_id[row_id]
        assert (row["valid"], row["diagnosis"]) == (False, "ISEMAIL_RFC5322_LOCAL_TOOLONG")


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
@pytest.mark.parametrize("row", _params(False))
def test_invalid_rows_are_rejected_in_every_mode(
    row: dict[str, Any] | None, policy_name: str
) -> None:
    row = _require(row)
    facts = check_syntax(row["address"], POLICIES[policy_name])
    if row["id"] in LOCAL_TOOLONG_ACCEPTED:
        refused = LOCAL_TOOLONG_ACCEPTED[row["id"]] if policy_name == "default" else None
        if refused is not None:
            assert facts.error == refused
            return
        assert facts.ok, (row["address"], facts.error)
        # the note counts the normal form, as RCPT TO sends it: row 60's needless quoted
        # pair goes, and 64 octets are left
        octets = len((facts.local or "").encode())
        expected = (f"local part is {octets} octets, over RFC 5321's 64",) if octets > 64 else ()
        assert facts.notes == expected
        return
    assert not facts.ok, f"accepted {row['address']!r} ({row['diagnosis']}) as {facts.email!r}"
    assert facts.error


@pytest.mark.parametrize("row", _params(True))
def test_valid_rows_are_accepted_when_the_policy_allows_everything(
    row: dict[str, Any] | None,
) -> None:
    row = _require(row)
    facts = check_syntax(row["address"], PERMISSIVE)
    assert facts.ok, f"rejected {row['address']!r}: {facts.error}"
    again = check_syntax(facts.email, PERMISSIVE)
    assert again == facts, "normal form is stable"


@pytest.mark.parametrize("row", _params(True))
def test_valid_rows_in_the_sending_view(row: dict[str, Any] | None) -> None:
    row = _require(row)
    facts = check_syntax(row["address"], DEFAULT_POLICY)
    expected = DEFAULT_REFUSED.get(row["id"])
    if expected is None:
        assert facts.ok, f"rejected {row['address']!r} for an unlisted reason: {facts.error}"
    else:
        assert not facts.ok, f"listed row {row['id']} {row['address']!r} was accepted"
        assert facts.error == expected
