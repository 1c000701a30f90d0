"""engine/datasets.py: the list loaders the lists stage and the typo suggester share."""

from __future__ import annotations

import pytest

from mailvet.engine import datasets, lists, typo


def test_entries_strip_comments_and_blanks() -> None:
    lines = ["# header", "", "  gmail.com  # the big one", "yahoo.com", "   ", "#x"]
    assert list(datasets.entries(lines)) == ["gmail.com", "yahoo.com"]


@pytest.mark.parametrize(
    ("local", "key"),
    [("info", "info"), ("No.Reply+x", "noreply"), ("customer_service", "customerservice")],
)
def test_role_key(local: str, key: str) -> None:
    assert datasets.role_key(local) == key


def test_role_list_is_keyed_like_lookups() -> None:
    roles = datasets.role_local_parts()
    assert "noreply" in roles and "info" in roles
    assert all(datasets.role_key(role) == role for role in roles)


def test_popular_entries_keep_file_order_and_flags() -> None:
    entries = datasets.popular_entries()
    assert entries[0] == ("gmail.com", frozenset())
    flags = dict(entries)
    assert flags["rogers.com"] == frozenset({"tld-only"})
    assert "not-a-typo" in flags["y7mail.com"]
    # the typo targets are the entries that are not marked not-a-typo, in the same order
    assert datasets.popular_domains() == tuple(d for d, f in entries if "not-a-typo" not in f)
    assert "y7mail.com" not in datasets.popular_domains()


def test_lists_and_typo_read_the_one_loader() -> None:
    # one cached copy of each list, whichever module a caller imports it from
    assert lists.disposable_domains is datasets.disposable_domains
    assert lists.free_domains is datasets.free_domains
    assert lists.role_local_parts is datasets.role_local_parts
    assert lists.data_versions is datasets.data_versions
    assert typo.popular_domains is datasets.popular_domains
