"""engine/typo.py: did-you-mean for mistyped popular mail domains, and nothing else."""

from __future__ import annotations

import pytest

from mailvet.engine.lists import disposable_domains, free_domains
from mailvet.engine.typo import osa_distance, popular_domains, suggest_domain

# (typed, expected suggestion): slips people really make.
TYPOS = [
    # gmail.com: name slips
    ("gmial.com", "gmail.com"),
    ("gmai.com", "gmail.com"),
    ("gamil.com", "gmail.com"),
    ("gmaill.com", "gmail.com"),
    ("gnail.com", "gmail.com"),
    ("gmal.com", "gmail.com"),
    ("gmaik.com", "gmail.com"),
    # gmail.com: suffix slips, real TLDs on the slip table and unreal ones
    ("gmail.con", "gmail.com"),
    ("gmail.co", "gmail.com"),
    ("gmail.cm", "gmail.com"),
    ("gmail.om", "gmail.com"),
    ("gmail.cmo", "gmail.com"),
    ("gmail.comm", "gmail.com"),
    ("gmail.cpm", "gmail.com"),
    ("gmail.vom", "gmail.com"),
    ("gmail.ocm", "gmail.com"),
    ("gmial.con", "gmail.com"),  # both wrong, unreal suffix
    # hotmail
    ("hotmial.com", "hotmail.com"),
    ("hotmal.com", "hotmail.com"),
    ("hotmai.com", "hotmail.com"),
    ("hotmaill.com", "hotmail.com"),
    ("homtail.com", "hotmail.com"),
    ("hotamil.com", "hotmail.com"),
    ("hotmail.co", "hotmail.com"),  # not hotmail.co.uk: .co is the classic .com slip
    ("hotmail.cm", "hotmail.com"),
    ("hotmial.co.uk", "hotmail.co.uk"),
    ("hotmail.co.ukk", "hotmail.co.uk"),
    ("hotmail.couk", "hotmail.co.uk"),
    # yahoo
    ("yaho.com", "yahoo.com"),
    ("yahooo.com", "yahoo.com"),
    ("yhoo.com", "yahoo.com"),
    ("yahho.com", "yahoo.com"),
    ("yahoo.co", "yahoo.com"),
    ("yahoo.con", "yahoo.com"),
    ("yaho.co.uk", "yahoo.co.uk"),
    # outlook, icloud
    ("outlok.com", "outlook.com"),
    ("outlook.cm", "outlook.com"),
    ("outllok.com", "outlook.com"),
    ("oulook.com", "outlook.com"),
    ("icloud.co", "icloud.com"),
    ("iclod.com", "icloud.com"),
    ("icluod.com", "icloud.com"),
    # others
    ("googlmail.com", "googlemail.com"),
    ("googlemial.com", "googlemail.com"),
    ("protonmial.com", "protonmail.com"),
    ("comcats.net", "comcast.net"),
    ("comcast.ne", "comcast.net"),
    ("sbcgloabl.net", "sbcglobal.net"),
    ("aol.con", "aol.com"),
    ("live.con", "live.com"),
    ("ymial.com", "ymail.com"),
    ("yandex.ri", "yandex.ru"),
    ("gmx.ne", "gmx.net"),
]

# Domains that must never get a suggestion: the popular domains themselves, real
# providers near them, regional variants, and ordinary company domains one slip away.
NEAR_MISSES = [
    "gmail.com",
    "yahoo.com",
    "hotmail.co.uk",
    "hotmail.ca",
    "yahoo.ca",
    "hotmail.de",
    "hotmail.cz",
    "yahoo.co.jp",
    "yahoo.cn",
    "ymail.com",
    "email.com",
    "mail.com",
    "gmx.com",
    "gmx.de",
    "live.co.uk",
    "live.net",
    "aol.de",
    "earthling.net",  # a real provider, not earthlink.net
    "y7mail.com",  # Yahoo's, not ymail.com
    "prontomail.com",
    "hanmail2.net",
    "acme.com",
    "example.com",
    "wahoo.com",  # first-letter slips are not corrected
    "cloud.com",
    "hotels.com",
    "rodgers.com",  # rogers.com is tld-only
    "never.com",  # naver.com is tld-only
    "libera.it",  # libero.it is tld-only
    "oranges.fr",
    "lime.com",  # live.com: four-letter names are never corrected
    "love.com",
    "unbox.com",
    "photon.me",
    "comcast.com",
    "verizon.com",
    "gmail.de",  # a real TLD that is not a classic slip is taken as meant
    "gmail.ca",
    "gmail.co.uk",
    "gmail.com.br",
    "mail.gmail.com",
    "gmailer.com",
    "yahoomail.com",
    "outlook.office.com",
    "protonvpn.com",
    "snail.com",
]


@pytest.mark.parametrize(("typed", "expected"), TYPOS)
def test_suggests_the_popular_domain(typed: str, expected: str) -> None:
    assert suggest_domain(typed) == expected


@pytest.mark.parametrize("domain", NEAR_MISSES)
def test_no_suggestion_for_a_legitimate_domain(domain: str) -> None:
    assert suggest_domain(domain) is None


def test_tables_are_big_enough() -> None:
    assert len(TYPOS) >= 40
    assert len(NEAR_MISSES) >= 40


def test_never_suggests_for_a_popular_domain() -> None:
    assert len(popular_domains()) > 90
    assert [d for d in popular_domains() if suggest_domain(d) is not None] == []


# Domains on the free / disposable lists that *are* one slip from a popular domain:
# typo-squats and typo-catchers, reviewed by hand. Everything else on those lists is
# taken as a provider in its own right and never gets a suggestion.
LISTED_TYPOS = {
    "hitmail.com": "hotmail.com",
    "hotmail.co": "hotmail.com",
    "outiook.com": "outlook.com",
    "sbcglbal.net": "sbcglobal.net",
    "yaho.com": "yahoo.com",
    "yahoo.co": "yahoo.com",
    "gmial.com": "gmail.com",
    "hotmai.com": "hotmail.com",
    "hotmial.com": "hotmail.com",
}


def test_listed_domains_get_suggestions_only_when_they_are_typo_squats() -> None:
    listed = free_domains() | disposable_domains()
    got = {d: s for d in listed if (s := suggest_domain(d)) is not None}
    assert got == LISTED_TYPOS


@pytest.mark.parametrize(
    "typed",
    ["GMIAL.COM", "Gmial.Com", "gmial.com.", " gmial.com"],
)
def test_case_and_trailing_dot_do_not_matter(typed: str) -> None:
    assert suggest_domain(typed) == "gmail.com"


@pytest.mark.parametrize(
    "domain",
    [
        "gm\u0430il.com",  # Cyrillic a: a homograph, not a typo we correct
        "gmäil.com",
        "xn--gmil-6na.com",
        "bücher.de",
        "",
        ".",
        "gmail",  # no suffix
        ".com",
        "g" * 63 + ".com",
        "a." * 120 + "com",
        "1.2.3.4",
        "[192.0.2.1]",
    ],
)
def test_odd_inputs_get_no_suggestion(domain: str) -> None:
    assert suggest_domain(domain) is None


def test_results_are_cached() -> None:
    suggest_domain("gmiall.com")
    before = suggest_domain.cache_info().hits
    assert suggest_domain("gmiall.com") == suggest_domain("gmiall.com")
    assert suggest_domain.cache_info().hits == before + 2


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("gmail", "gmail", 0),
        ("gmial", "gmail", 1),  # one transposition
        ("gmai", "gmail", 1),
        ("gmaill", "gmail", 1),
        ("gnail", "gmail", 1),
        ("ca", "abc", 3),  # OSA, not unrestricted Damerau-Levenshtein (which says 2)
        ("", "abc", 3),
        ("kitten", "sitting", 3),
    ],
)
def test_osa_distance(a: str, b: str, distance: int) -> None:
    assert osa_distance(a, b) == distance
    assert osa_distance(b, a) == distance


def test_osa_distance_stops_at_the_limit() -> None:
    assert osa_distance("abcdefgh", "zyxwvuts", 1) == 2
    assert osa_distance("a" * 200, "b", 2) == 3
