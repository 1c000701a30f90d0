"""engine/syntax.py, by property: never raises, idempotent, fast path == slow path."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from mailvet.engine.facts import Facts
from mailvet.engine.scoring import decide
from mailvet.engine.syntax import (
    DEFAULT_POLICY,
    SPECIAL_USE_DOMAINS,
    SyntaxPolicy,
    _fast,
    _slow,
    check_syntax,
)
from mailvet.verdict import Reason, Result

if TYPE_CHECKING:
    from hypothesis.internal.charmap import CategoryName

PERMISSIVE = SyntaxPolicy(
    allow_quoted_local=True, allow_address_literal=True, allow_single_label_domain=True
)
NO_UTF8 = SyntaxPolicy(allow_smtputf8=False)
ALLOW_TEST = SyntaxPolicy(allowed_special_domains=("test", "home.arpa"))
POLICIES = [DEFAULT_POLICY, PERMISSIVE, NO_UTF8, ALLOW_TEST]

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)

# Every code point, surrogates included (the default alphabet leaves out "Cs").
ANY_CHAR = st.characters(codec=None, exclude_categories=())
ANY_TEXT = st.text(alphabet=ANY_CHAR, max_size=300)
SURROGATE = st.characters(categories=["Cs"])
ALL_CATEGORIES = sorted({unicodedata.category(chr(cp)) for cp in range(0x110000)} | {"Cn"})

# Structured inputs that are often valid, so that the idempotence and agreement
# properties see plenty of accepted addresses, not only rejections: each part is
# either clean (mostly valid) or dirty (anything near the grammar).
ASCII_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
UNICODE_LETTERS = ["é", "ü", "Ö", "用", "ß", "e\u0301", "\uff4a", "\u0301", "\u200d"]
LDH = "abcdefghijXYZ0123456789-"


def _parts(ascii_only: bool) -> tuple[st.SearchStrategy[str], st.SearchStrategy[str]]:
    atext = list(ASCII_ATEXT) + ([] if ascii_only else UNICODE_LETTERS)
    atom = st.lists(st.sampled_from(atext), min_size=1, max_size=12).map("".join)
    clean_local = st.lists(atom, min_size=1, max_size=4).map(".".join)
    qchars = st.sampled_from([*atext, " ", "(", "@", ".", '\\"', "\\\\", "\\a", "\\ "])
    quoted = st.lists(qchars, max_size=20).map(lambda cs: '"' + "".join(cs) + '"')
    dirty_chars = [*atext, ".", ".", '"', "\\", " ", "@", "(", ")", "[", "]", "\x00", "\t"]
    dirty_local = st.lists(st.sampled_from(dirty_chars), max_size=70).map("".join)
    local = st.one_of(clean_local, clean_local, quoted, dirty_local)

    ldh = list(LDH) + ([] if ascii_only else ["ü", "例", "ß", "\uff27", "\u00ad"])
    clean_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", fullmatch=True)
    if not ascii_only:
        clean_label = st.one_of(
            clean_label,
            st.sampled_from(["bücher", "例子", "straße", "\uff47\uff4d\uff41\uff49\uff4c"]),
        )
    dirty_label = st.lists(st.sampled_from([*ldh, "_", " ", "-", "."]), max_size=12).map("".join)
    labels = st.lists(st.one_of(clean_label, clean_label, dirty_label), min_size=1, max_size=4)
    tld = st.sampled_from(
        [
            *("com", "de", "org", "Com", "123", "co-uk", "c0m", "xn--p1ai", "xn--zz", ""),
            *("test", "TEST", "invalid", "home.arpa", "localhost", "xn--4dbc"),
        ]
    )
    name = st.tuples(labels, tld).map(
        lambda lt: ".".join([*lt[0], lt[1]]) if lt[1] else ".".join(lt[0])
    )
    literal = st.sampled_from(
        ["[1.2.3.4]", "[IPv6:::1]", "[IPv6:1:2::3]", "[1.2.3]", "[IPv6:A::1.2.3.4]"]
    )
    domain = st.one_of(name, name, name, literal)
    return local, domain


def _addresses(ascii_only: bool) -> st.SearchStrategy[str]:
    local, domain = _parts(ascii_only)
    return st.tuples(local, domain).map(lambda ld: f"{ld[0]}@{ld[1]}")


VALIDISH = _addresses(ascii_only=False)
ASCII_VALIDISH = _addresses(ascii_only=True)
ASCII_TEXT = st.text(alphabet=st.characters(codec="ascii"), max_size=80)


def _check_rejection(raw: str, policy: SyntaxPolicy) -> None:
    facts = check_syntax(raw, policy)
    assert isinstance(facts.ok, bool)
    if facts.ok:
        assert facts.error is None
        assert facts.local is not None and facts.domain is not None
        assert facts.ascii_domain is not None and facts.ascii_domain.isascii()
        assert len(facts.local.encode()) + 1 + len(facts.ascii_domain) <= 254
        assert facts.special_use in (None, *SPECIAL_USE_DOMAINS)
        if facts.special_use is not None:
            verdict = decide(Facts(syntax=facts))
            assert (verdict.result, verdict.reason) == (Result.UNDELIVERABLE, Reason.INVALID_DOMAIN)
    else:
        assert facts.error
        facts.email.encode("utf-8")  # the echo is always encodable
        verdict = decide(Facts(syntax=facts))
        assert verdict.reason is Reason.INVALID_FORMAT
        assert verdict.result is Result.UNDELIVERABLE
        assert verdict.score == 0


# --- never raises ------------------------------------------------------------------------


def test_the_alphabet_really_contains_surrogates() -> None:
    found = find(ANY_TEXT, lambda s: any("\ud800" <= ch <= "\udfff" for ch in s))
    assert any("\ud800" <= ch <= "\udfff" for ch in found)


@SETTINGS
@given(raw=ANY_TEXT, policy=st.sampled_from(POLICIES))
def test_never_raises_on_any_text(raw: str, policy: SyntaxPolicy) -> None:
    _check_rejection(raw, policy)


@SETTINGS
@given(
    before=ANY_TEXT,
    surrogate=SURROGATE,
    after=ANY_TEXT,
    domain=st.sampled_from(["", "@x.com", "@\udcff.com"]),
)
def test_never_raises_with_lone_surrogates(
    before: str, surrogate: str, after: str, domain: str
) -> None:
    raw = before + surrogate + after + domain
    facts = check_syntax(raw)
    assert not facts.ok
    _check_rejection(raw, DEFAULT_POLICY)


@SETTINGS
@given(raw=VALIDISH, policy=st.sampled_from(POLICIES))
def test_never_raises_on_address_shaped_text(raw: str, policy: SyntaxPolicy) -> None:
    _check_rejection(raw, policy)


@pytest.mark.parametrize("category", ALL_CATEGORIES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_never_raises_in_any_unicode_category(category: CategoryName, data: st.DataObject) -> None:
    chars = st.characters(categories=[category]) if category != "Cn" else st.just("\U000e0fff")
    text = data.draw(st.text(alphabet=chars, min_size=1, max_size=20))
    for raw in (text, f"{text}@x.com", f"a@{text}.com", f"a@x.{text}", f'"{text}"@x.com'):
        for policy in POLICIES:
            _check_rejection(raw, policy)


@settings(max_examples=20, deadline=None)
@given(
    char=ANY_CHAR,
    size=st.integers(min_value=1_000_000, max_value=1_100_000),
    shape=st.sampled_from(["{big}", "{big}@x.com", "a@{big}", "{big}@{big}", '"{big}"@x.com']),
)
def test_never_raises_on_a_megabyte(char: str, size: int, shape: str) -> None:
    raw = shape.format(big=char * size)
    facts = check_syntax(raw)
    assert not facts.ok
    assert len(facts.email) <= 300


# --- normal form -----------------------------------------------------------------------------


@SETTINGS
@given(raw=VALIDISH, policy=st.sampled_from(POLICIES))
def test_normalisation_is_idempotent(raw: str, policy: SyntaxPolicy) -> None:
    facts = check_syntax(raw, policy)
    if facts.ok:
        again = check_syntax(facts.email, policy)
        assert again.ok, (facts.email, again.error)
        assert again.email == facts.email
        assert again == facts


@SETTINGS
@given(raw=VALIDISH)
def test_what_the_sending_view_accepts_every_policy_accepts(raw: str) -> None:
    facts = check_syntax(raw)
    if facts.ok:
        assert check_syntax(raw, PERMISSIVE) == facts


# --- fast path and slow path agree -----------------------------------------------------------


@SETTINGS
@given(raw=st.one_of(ASCII_VALIDISH, ASCII_TEXT), policy=st.sampled_from(POLICIES))
def test_fast_path_agrees_with_slow_path(raw: str, policy: SyntaxPolicy) -> None:
    fast = _fast(raw)
    if fast is not None:
        assert fast == _slow(raw, policy)
    if raw.strip().upper() != "NULL":  # the one input check_syntax answers before both
        assert check_syntax(raw, policy) == (fast or _slow(raw, policy))


@SETTINGS
@given(
    local=st.from_regex(r"[A-Za-z0-9_+-]{1,20}(\.[A-Za-z0-9_+-]{1,10}){0,2}", fullmatch=True),
    labels=st.lists(
        st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True),
        min_size=1,
        max_size=3,
    ),
    tld=st.one_of(
        st.from_regex(r"[A-Za-z]{1,6}", fullmatch=True),
        st.sampled_from(sorted(SPECIAL_USE_DOMAINS)).map(str.upper),
    ),
)
def test_fast_path_takes_plain_addresses(local: str, labels: list[str], tld: str) -> None:
    raw = f"{local}@{'.'.join([*labels, tld])}"
    fast = _fast(raw)
    special = tld.lower() in SPECIAL_USE_DOMAINS  # whether they pass depends on the policy
    if "--" not in raw.split("@")[1] and not special:
        assert fast is not None, raw
    slow = _slow(raw, DEFAULT_POLICY)
    # IDNA 2008 (RFC 5891 4.2.3.1) reserves "--" in the 3rd and 4th positions of a label
    reserved = any(label[2:4] == "--" for label in [*labels, tld])
    assert slow.ok is not reserved
    assert (slow.special_use is not None) is (special and not reserved)
    assert fast is None or fast == slow
