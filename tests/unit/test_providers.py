"""engine/providers.py: MX host suffix -> provider."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from mailvet.engine.providers import Provider, provider_for


def _entries() -> list[dict[str, Any]]:
    raw = resources.files("mailvet.engine").joinpath("data/providers.json").read_text("utf-8")
    entries: list[dict[str, Any]] = json.loads(raw)["providers"]
    return entries


@pytest.mark.parametrize(
    ("host", "name", "unreliable"),
    [
        # Mails.so's name for mail hosted by Google (Gmail and Google Workspace)
        ("aspmx.l.google.com", "gmail", False),
        ("alt4.aspmx.l.google.com.", "gmail", False),
        ("ASPMX.L.GOOGLE.COM", "gmail", False),
        ("smtp.google.com", "gmail", False),  # Workspace's single MX since 2023
        ("aspmx2.googlemail.com", "gmail", False),
        ("contoso-com.mail.protection.outlook.com", "microsoft365", True),
        ("contoso-com.l-v1.mx.microsoft", "microsoft365", True),
        ("hotmail-com.olc.protection.outlook.com", "outlook", False),
        ("outlook-com.olc.protection.outlook.com", "outlook", False),
        ("mta7.am0.yahoodns.net", "yahoo", True),
        ("mx-aol.mail.gm0.yahoodns.net", "aol", True),
        ("mx01.mail.icloud.com", "icloud", False),
        ("mx.zoho.eu", "zoho", False),
        ("mailsec.protonmail.ch", "proton", False),
        ("mx.yandex.net", "yandex", False),
        ("mxs.mail.ru", "mailru", False),
        ("mx00.gmx.net", "gmx", False),
        ("mx-ha03.web.de", "webde", False),
        ("in1-smtp.messagingengine.com", "fastmail", False),
        ("us-smtp-inbound-1.mimecast.com", "mimecast", False),
        ("mx0b-00123456.pphosted.com", "proofpoint", False),
        ("mx2-us1.ppe-hosted.com", "proofpoint", False),
        ("d123456a.ess.barracudanetworks.com", "barracuda", False),
        ("mx1.hc1234-56.iphmx.com", "cisco", False),
        ("smtp.secureserver.net", "godaddy", False),
        ("mx3.mail.ovh.net", "ovh", False),
        ("mx1.privateemail.com", "namecheap", False),
        ("eforward3.registrar-servers.com", "namecheap", False),
        ("inbound-smtp.us-east-1.amazonaws.com", "amazon", False),
        ("mx2.emailsrvr.com", "rackspace", False),
    ],
)
def test_known_hosts(host: str, name: str, unreliable: bool) -> None:
    assert provider_for([host]) == Provider(name, unreliable)


@pytest.mark.parametrize(
    "host",
    [
        "evilgoogle.com",
        "aspmx.l.evilgoogle.com",
        "google.com.evil.test",
        "notyahoodns.net",
        "ec2-1-2-3-4.compute-1.amazonaws.com",  # somebody's own server, not Amazon's service
        "mx.example.test",
        "",
        ".",
        "..google.com",
        "a." * 200 + "google.com",
    ],
)
def test_unknown_or_lookalike_hosts(host: str) -> None:
    assert provider_for([host]) is None


def test_suffix_itself_matches() -> None:
    assert provider_for(["google.com"]) == Provider("gmail", False)


def test_first_known_host_in_order_wins() -> None:
    hosts = ["mx.example.test", "us-smtp-inbound-1.mimecast.com", "aspmx.l.google.com"]
    assert provider_for(hosts) == Provider("mimecast", False)
    assert provider_for([]) is None


def test_provider_is_frozen_and_hashable() -> None:
    p = Provider("gmail", False)
    assert {p: 1}[Provider("gmail", False)] == 1
    with pytest.raises(AttributeError):
        p.name = "other"  # type: ignore[misc]


def test_every_example_maps_to_its_provider() -> None:
    for entry in _entries():
        assert entry["examples"], entry["name"]
        for host in entry["examples"]:
            found = provider_for([host])
            assert found is not None and found.name == entry["name"], host


def test_table_is_well_formed() -> None:
    entries = _entries()
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    suffixes = [s for e in entries for s in e["suffixes"]]
    assert len(suffixes) == len(set(suffixes))
    assert all(s == s.lower().strip(".") and "." in s for s in suffixes)
    required = {
        "gmail", "microsoft365", "outlook", "yahoo", "aol", "icloud", "zoho", "proton",
        "yandex", "mailru", "gmx", "webde", "fastmail", "mimecast", "proofpoint", "barracuda",
        "cisco", "godaddy", "ovh", "namecheap", "amazon", "rackspace",
    }  # fmt: skip
    assert required <= set(names)
    unreliable = {e["name"] for e in entries if e["unreliable_accept"]}
    assert {"yahoo", "microsoft365"} <= unreliable
    assert "outlook" not in unreliable and "gmail" not in unreliable


def test_api_md_lists_every_provider_as_the_table_has_it() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "API.md").read_text("utf-8")
    section = text.split("### Providers", 1)[1]
    rows = re.findall(r"^\| `([a-z0-9]+)` \| (.+) \| (yes|no) \|$", section, re.MULTILINE)
    documented = [
        (name, re.findall(r"`([^`]+)`", suffixes), flag == "yes") for name, suffixes, flag in rows
    ]
    table = [(e["name"], e["suffixes"], e["unreliable_accept"]) for e in _entries()]
    assert documented == table
