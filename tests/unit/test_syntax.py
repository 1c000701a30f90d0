"""engine/syntax.py: the rules one by one, the normal form, the policy knobs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailvet.engine.facts import SyntaxFacts
from mailvet.engine.syntax import (
    DEFAULT_POLICY,
    ERR_ADDRESS_LITERAL,
    ERR_NUMERIC_TLD,
    ERR_QUOTED_LOCAL,
    ERR_SINGLE_LABEL,
    ERR_SMTPUTF8,
    ERR_TLD,
    MAX_INPUT,
    SPECIAL_USE_DOMAINS,
    SyntaxPolicy,
    _fast,
    _slow,
    check_syntax,
    fast_domain,
    fast_local,
    fast_split,
    special_use,
)
from mailvet.settings import Settings

PERMISSIVE = SyntaxPolicy(
    allow_quoted_local=True, allow_address_literal=True, allow_single_label_domain=True
)
NO_UTF8 = SyntaxPolicy(allow_smtputf8=False)


def ok(raw: str, policy: SyntaxPolicy = DEFAULT_POLICY) -> SyntaxFacts:
    facts = check_syntax(raw, policy)
    assert facts.ok, (raw, facts.error)
    assert facts.error is None
    return facts


def bad(raw: str, policy: SyntaxPolicy = DEFAULT_POLICY) -> SyntaxFacts:
    facts = check_syntax(raw, policy)
    assert not facts.ok, (raw, facts)
    assert facts.error, "a rejection carries a reason"
    assert facts.local is None and facts.domain is None and facts.ascii_domain is None
    return facts


# --- policy ---------------------------------------------------------------------


def test_default_policy_is_the_sending_view() -> None:
    assert DEFAULT_POLICY == SyntaxPolicy()
    assert not DEFAULT_POLICY.allow_quoted_local
    assert not DEFAULT_POLICY.allow_address_literal
    assert not DEFAULT_POLICY.allow_single_label_domain
    assert DEFAULT_POLICY.allow_smtputf8


def test_policy_from_settings_reads_the_same_named_fields() -> None:
    # tests/conftest.py lets "test" through for the whole session: the default is empty
    assert SyntaxPolicy.from_settings(Settings(allowed_special_domains=[])) == DEFAULT_POLICY
    settings = Settings(
        allow_quoted_local=True,
        allow_address_literal=True,
        allow_single_label_domain=True,
        allow_smtputf8=False,
        allowed_special_domains=["test", "Home.Arpa."],
    )
    assert SyntaxPolicy.from_settings(settings) == SyntaxPolicy(
        True, True, True, False, ("test", "home.arpa")
    )


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_POLICY.allow_quoted_local = True  # type: ignore[misc]


# --- accepted, and their normal form -----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "email", "local", "domain", "ascii_domain"),
    [
        ("john.doe@gmail.com", "john.doe@gmail.com", "john.doe", "gmail.com", "gmail.com"),
        ("John.Doe@GMail.COM", "John.Doe@gmail.com", "John.Doe", "gmail.com", "gmail.com"),
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk", "a+tag", None, None),
        ("!#$%&'*+-/=?^_`{|}~@x.org", "!#$%&'*+-/=?^_`{|}~@x.org", None, None, None),
        ("x@c--n.com", "x@c--n.com", None, None, None),
        ("x@1a.2b.com", "x@1a.2b.com", None, None, None),
        ("x@x.xn--p1ai", "x@x.рф", "x", "x.рф", "x.xn--p1ai"),  # an A-label TLD
        ("x@пример.РФ", "x@пример.рф", "x", "пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("jörg@bücher.de", "jörg@bücher.de", "jörg", "bücher.de", "xn--bcher-kva.de"),
        ("Jörg@BÜCHER.DE", "Jörg@bücher.de", "Jörg", "bücher.de", "xn--bcher-kva.de"),
        ("x@xn--bcher-kva.de", "x@bücher.de", "x", "bücher.de", "xn--bcher-kva.de"),
        ("x@XN--BCHER-KVA.DE", "x@bücher.de", "x", "bücher.de", "xn--bcher-kva.de"),
        ("用户@例子.广告", "用户@例子.广告", "用户", "例子.广告", "xn--fsqu00a.xn--4rr70v"),
        (
            "x@\uff47\uff4d\uff41\uff49\uff4c\u3002\uff43\uff4f\uff4d",
            "x@gmail.com",
            "x",
            "gmail.com",
            "gmail.com",
        ),  # UTS 46
        ("x@straße.de", "x@straße.de", None, "straße.de", "xn--strae-oqa.de"),  # no ß->ss
        ("e\u0301@x.com", "\u00e9@x.com", "\u00e9", None, None),  # NFC local part
        ("xn--test@iana.org", "xn--test@iana.org", None, None, None),
    ],
)
def test_accepted_normal_form(
    raw: str, email: str, local: str | None, domain: str | None, ascii_domain: str | None
) -> None:
    facts = ok(raw)
    assert facts.email == email
    if local is not None:
        assert facts.local == local
    if domain is not None:
        assert facts.domain == domain
    if ascii_domain is not None:
        assert facts.ascii_domain == ascii_domain
    assert facts.email == f"{facts.local}@{facts.domain}"
    assert check_syntax(facts.email) == facts, "normalisation is idempotent"


def test_smtputf8_flag_is_about_the_local_part_only() -> None:
    assert ok("jörg@example.com").smtputf8
    assert not ok("joerg@bücher.de").smtputf8
    assert not ok("joerg@example.com").smtputf8


def test_smtputf8_can_be_turned_off() -> None:
    assert bad("jörg@example.com", NO_UTF8).error == ERR_SMTPUTF8
    # an IDN domain still works: the A-label form needs no SMTPUTF8
    assert ok("joerg@bücher.de", NO_UTF8).ascii_domain == "xn--bcher-kva.de"


# --- whitespace is not stripped -----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        " a@x.com",
        "a@x.com ",
        "\ta@x.com",
        "a@x.com\n",
        "a@x.com\r\n",
        "\u00a0a@x.com",
        "a@x.com\u3000",
    ],
)
def test_surrounding_whitespace_is_rejected_not_stripped(raw: str) -> None:
    bad(raw)


# --- the missing-address cases ------------------------------------------------------


@pytest.mark.parametrize("raw", ["NULL", "null", "Null", ""])
def test_null_and_empty(raw: str) -> None:
    facts = bad(raw)
    assert facts.email == raw


# --- lengths --------------------------------------------------------------------------


def _domain_of_length(n: int) -> str:
    labels, left = [], n
    while left > 0:
        size = min(63, left)
        if left - size == 1:  # never leave a 0-character label after the last dot
            size -= 1
        labels.append("a" * size)
        left -= size + 1
    domain = ".".join(labels)
    assert len(domain) == n
    return domain[:-3] + "com" if n >= 10 else domain


def test_local_part_over_64_octets_is_noted_not_refused() -> None:
    # RFC 5321 4.5.3.1.1 says 64, but many servers take more: the SMTP stage decides
    assert ok("a" * 64 + "@x.com").notes == ()
    assert ok("a" * 65 + "@x.com").notes == ("local part is 65 octets, over RFC 5321's 64",)
    assert ok("é" * 32 + "@x.com").notes == ()  # 64 octets
    facts = ok("é" * 32 + "a@x.com")  # 65 octets, 33 characters
    assert facts.notes == ("local part is 65 octets, over RFC 5321's 64",)
    assert facts.smtputf8
    assert ok("a" * 200 + "@x.com").notes == ("local part is 200 octets, over RFC 5321's 64",)
    # the octets counted are those of the normal form, as RCPT TO sends it
    assert ok('"' + "a" * 63 + '"@x.com', PERMISSIVE).notes == ()
    quoted = ok('"' + "a " * 33 + '"@x.com', PERMISSIVE)
    assert quoted.notes == ("local part is 68 octets, over RFC 5321's 64",)


def test_the_path_limit_still_bounds_a_long_local_part() -> None:
    ok("a" * 248 + "@x.com")  # 254 octets
    assert "254" in (bad("a" * 249 + "@x.com").error or "")


def test_label_limit_is_63() -> None:
    ok("a@" + "b" * 63 + ".com")
    bad("a@" + "b" * 64 + ".com")


def test_domain_limit_is_253() -> None:
    # With a one-letter local part the path limit (254) is not what bites.
    domain = _domain_of_length(253)
    assert len("a@" + domain) == 255
    bad("a@" + domain)  # path 255 > 254
    facts = bad("a@" + _domain_of_length(254))
    assert "253" in (facts.error or "")


def test_path_limit_is_254_octets() -> None:
    local = "a" * 64
    ok(f"{local}@{_domain_of_length(189)}")  # 254
    facts = bad(f"{local}@{_domain_of_length(190)}")  # 255
    assert "254" in (facts.error or "")


def test_path_limit_counts_the_a_label_domain() -> None:
    # 'ü' is 1 character but the A-label is longer: the limit applies to what goes on the wire.
    unicode_label = "ü" * 20
    facts = ok(f"a@{unicode_label}.com")
    assert facts.ascii_domain is not None and facts.ascii_domain.startswith("xn--")


def test_huge_input_is_rejected_up_front() -> None:
    for raw in ["a" * 1_000_000 + "@x.com", "@" * 1_000_000, "é" * (MAX_INPUT + 1)]:
        facts = bad(raw)
        assert facts.error == "input too long"
        assert len(facts.email) <= 300, "the echo is bounded"


# --- local part -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("@x.com", "empty local part"),
        (".a@x.com", "starts with a dot"),
        ("a.@x.com", "ends with a dot"),
        ("a..b@x.com", "two dots"),
        ("a b@x.com", "' '"),
        ("a(b)@x.com", "'('"),
        ("a\\b@x.com", "'\\\\'"),
        ("a\x00b@x.com", "'\\x00'"),
        ("a\x7fb@x.com", "'\\x7f'"),
        ("a\u200db@x.com", "U+200D"),  # zero-width joiner (Cf)
        ("a\u2028b@x.com", "U+2028"),  # line separator (Zl)
        ("a\ue000b@x.com", "U+E000"),  # private use (Co)
        ("\u0301a@x.com", "combining mark"),
        ("a.\u0301b@x.com", "combining mark"),
        ("missing.at.sign", "missing @"),
    ],
)
def test_local_part_errors(raw: str, fragment: str) -> None:
    assert fragment in (bad(raw).error or "")


def test_quoted_local_part_is_a_policy_choice() -> None:
    assert bad('"a b"@x.com').error == ERR_QUOTED_LOCAL
    facts = ok('"a b"@x.com', PERMISSIVE)
    assert facts.email == '"a b"@x.com' and facts.local == '"a b"'


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ('"test"@x.com', "test@x.com"),  # RFC 5322 3.4.1: use the dot-atom form if possible
        ('"\\a"@x.com', "a@x.com"),
        ('"a.b"@x.com', "a.b@x.com"),
        ('"a..b"@x.com', '"a..b"@x.com'),
        ('""@x.com', '""@x.com'),
        ('"a\\ b"@x.com', '"a b"@x.com'),  # needless escape dropped
        ('"\\""@x.com', '"\\""@x.com'),
        ('"\\\\"@x.com', '"\\\\"@x.com'),
        ('"a@b"@x.com', '"a@b"@x.com'),
        ('"jörg q"@x.com', '"jörg q"@x.com'),
    ],
)
def test_quoted_local_part_normal_form(raw: str, email: str) -> None:
    facts = ok(raw, PERMISSIVE)
    assert facts.email == email
    assert check_syntax(facts.email, PERMISSIVE) == facts


@pytest.mark.parametrize(
    "raw",
    [
        '"a@x.com',
        '"a\\"@x.com',
        '"a"b@x.com',
        'a"b"@x.com',
        '"a"."b"@x.com',
        '"a\x00"@x.com',
        '"a\\\x00"@x.com',
        '"\\©"@x.com',
        '"\r"@x.com',
        '"\x7f"@x.com',
        '"\u0301a"@x.com',  # the mark would combine with the opening quote
    ],
)
def test_bad_quoted_local_parts_are_rejected_in_every_mode(raw: str) -> None:
    bad(raw)
    bad(raw, PERMISSIVE)


# --- domain -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("a@", "missing domain"),
        ("a@.x.com", "starts with a dot"),
        ("a@x.com.", "ends with a dot"),
        ("a@x..com", "two dots"),
        ("a@-x.com", "hyphen"),
        ("a@x-.com", "hyphen"),
        ("a@x_y.com", "'_'"),
        ("a@x/y.com", "'/'"),
        ("a@ab--cd.com", "3rd and 4th"),
        ("a@xn--zz.com", "A-label"),  # not valid punycode / not a valid U-label
        ("a@xn--ls8h.la", "A-label"),  # U+1F4A9 is DISALLOWED in IDNA 2008
        ("a@b\u00a0c.com", "internationalised domain"),
        ("a@x\u200d.com", "internationalised domain"),
    ],
)
def test_domain_errors(raw: str, fragment: str) -> None:
    assert fragment in (bad(raw).error or ""), bad(raw).error
    bad(raw, PERMISSIVE)


def test_single_label_and_numeric_tld_are_policy_choices() -> None:
    assert bad("a@localhost").error == ERR_SINGLE_LABEL
    assert bad("a@iana.123").error == ERR_NUMERIC_TLD
    assert bad("a@1.2.3.4").error == ERR_NUMERIC_TLD
    assert ok("a@localhost", PERMISSIVE).ascii_domain == "localhost"
    assert ok("a@iana.123", PERMISSIVE).domain == "iana.123"


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("a@[1.2.3.4]", "[1.2.3.4]"),
        ("a@[IPv6:::1]", "[IPv6:::1]"),
        ("a@[ipv6:2001:DB8::1]", "[IPv6:2001:db8::1]"),
        ("a@[IPv6:::ffff:192.0.2.1]", "[IPv6:::ffff:192.0.2.1]"),
        ("a@[IPv6:1:2:3:4:5:6:7:8]", "[IPv6:1:2:3:4:5:6:7:8]"),
        ("a@[IPv6:1:2:3:4:5:6:1.2.3.4]", "[IPv6:1:2:3:4:5:6:1.2.3.4]"),
    ],
)
def test_address_literals_are_a_policy_choice(raw: str, domain: str) -> None:
    assert bad(raw).error == ERR_ADDRESS_LITERAL
    facts = ok(raw, PERMISSIVE)
    assert facts.domain == facts.ascii_domain == domain
    assert check_syntax(facts.email, PERMISSIVE) == facts


@pytest.mark.parametrize(
    "raw",
    [
        "a@[1.2.3]",
        "a@[1.2.3.256]",
        "a@[1.2.3.4",
        "a@[1.2.3.4]x",
        "a@x[1.2.3.4]",
        "a@[1.2.3.4]]",
        "a@[]",
        "a@[IPv6:1:2:3:4:5:6:7]",
        "a@[IPv6:1:2:3:4:5:6:7:8:9]",
        "a@[IPv6:1:2:3:4:5:6::8]",  # RFC 5321: at most 6 groups around "::"
        "a@[IPv6:1::2::3]",
        "a@[IPv6:1::2:]",
        "a@[IPv6::1:2]",
        "a@[IPv6:::::]",
        "a@[IPv6:12345::]",
        "a@[IPv6:1:2:3:4:5::1.2.3.4]",  # at most 4 groups around "::" before IPv4
        "a@[IPv6:1:2:3:4:5:1.2.3.4]",
        "a@[IPv6:1:2:3:4:::1.2.3.4]",
        "a@[IPv6::1.2.3.4]",
        "a@[IPv6:1.2.3.4]",
        "a@[1:2:3:4:5:6:7:8]",  # the IPv6: tag is required
        "a@[general:literal]",
    ],
)
def test_bad_address_literals_are_rejected_in_every_mode(raw: str) -> None:
    bad(raw)
    bad(raw, PERMISSIVE)


# --- never raises, never echoes something unencodable ---------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["\ud800", "a\udfff@x.com", "a@x\udc80.com", "\x00", "\x00@\x00", "@", "@@", "a@b@c.com"],
)
def test_garbage_is_an_answer(raw: str) -> None:
    facts = bad(raw)
    facts.email.encode("utf-8")  # lone surrogates are replaced in the echo


# --- the fast path --------------------------------------------------------------------------


def test_the_fast_path_takes_the_common_case() -> None:
    assert _fast("John.Doe+x@Mail.Example.COM") == _slow(
        "John.Doe+x@Mail.Example.COM", DEFAULT_POLICY
    )
    assert _fast("john@gmail.com") is not None


@pytest.mark.parametrize(
    "raw",
    [
        "x@xn--bcher-kva.de",  # A-labels are checked by IDNA
        "x@ab--cd.com",  # reserved labels
        "x@iana.123",  # numeric TLD depends on the policy
        "x@localhost",
        '"x"@x.com',
        "x@[1.2.3.4]",
        "jörg@x.com",
        "a" * 65 + "@x.com",
        "a@x.com\n",  # "$" would match before the newline; fullmatch does not
        "a@b@x.com",
        "a@x.com@",
        "@x.com",
        "a@",
        "a@x.com.",
        "a." + "b" * 63 + "@x.com",  # 65 octets
        "a@" + "b" * 64 + ".com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 61,  # 255 octets
    ],
)
def test_the_fast_path_defers_what_it_does_not_model(raw: str) -> None:
    assert _fast(raw) is None
    assert fast_split(raw) is None


def test_fast_split_gives_the_parts_as_typed() -> None:
    assert fast_split("John.Doe+x@Mail.Example.COM") == ("John.Doe+x", "Mail.Example.COM")
    longest = "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60  # 254
    assert fast_split(longest) == ("a", longest[2:])


def _halves(raw: str) -> tuple[str, str] | None:
    """The fast-path rule in two halves, split at the first "@"."""
    local, _, domain = raw.partition("@")
    return (local, domain) if fast_local(raw, local) and fast_domain(domain) else None


_PIECES = st.sampled_from(
    ["a", "Z", "0", ".", "..", "@", "-", "--", "+", "_", "'", "é", " ", "\n", "com", "x" * 30]
)


@settings(max_examples=2_000, deadline=None)
@given(raw=st.lists(_PIECES, max_size=30).map("".join))
def test_fast_split_is_its_two_halves(raw: str) -> None:
    """Local and domain rules apart (what Engine.verdict_offline uses) == the one regex."""
    assert fast_split(raw) == _halves(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "john@gmail.com",
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 60,
        "a@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "." + "e" * 61,
        "x" * 64 + "@a.co",
        "x" * 65 + "@a.co",
        "a@b@c.com",
        "a@x--y.com",
    ],
)
def test_fast_split_is_its_two_halves_at_the_edges(raw: str) -> None:
    assert fast_split(raw) == _halves(raw)


# --- the top-level label ------------------------------------------------------------------


def _alabel(ulabel: str) -> str:
    """The A-label spelling of ``ulabel`` by raw Punycode, with no IDNA validation."""
    return "xn--" + ulabel.encode("punycode").decode("ascii")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("x@iana.123", ERR_NUMERIC_TLD),
        ("x@a.1b", ERR_TLD),
        ("x@a.c0m", ERR_TLD),
        ("x@a.co-uk", ERR_TLD),
        ("x@A.C0M", ERR_TLD),
    ],
)
def test_the_top_level_label_is_alphabetic_or_an_a_label(raw: str, error: str) -> None:
    assert bad(raw).error == error
    assert _fast(raw) is None
    ok(raw, PERMISSIVE)  # RFC 5321 itself allows them: the sending view does not


@pytest.mark.parametrize(
    "raw",
    [
        "x@a.xn--p1ai",  # .рф
        "x@a.XN--P1AI",
        "x@a.xn--mgbcd4a2b0d2b",  # .العربية (a right-to-left TLD)
        "x@例子.广告",  # typed in Unicode: the A-label is what is checked
    ],
)
def test_a_valid_a_label_is_a_top_level_label(raw: str) -> None:
    facts = ok(raw)
    assert facts.ascii_domain is not None
    assert facts.ascii_domain.rpartition(".")[2].startswith("xn--")


@pytest.mark.parametrize(
    "tld",
    ["xn--zz", "xn--ls8h", _alabel("a\u200db"), "xn--p1ai-", "xn--"],
)
def test_an_invalid_a_label_is_no_top_level_label(tld: str) -> None:
    bad(f"x@a.{tld}")
    bad(f"x@a.{tld}", PERMISSIVE)


# --- A-labels in any position: IDNA 2008 ---------------------------------------------------


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("xn--zz", "not Punycode"),
        ("xn--a", "not Punycode"),
        ("xn---bbk", "not the canonical encoding (RFC 5891 5.3)"),
        ("xn--ls8h", "U+1F4A9 is DISALLOWED"),
        (_alabel("\u2260x"), "U+2260 NOT EQUAL TO is DISALLOWED"),
        (_alabel("bu\u0308cher"), "not NFC"),
        (_alabel("\u0301a"), "starts with a combining mark"),
        (_alabel("a\u200db"), "ZERO WIDTH JOINER not after a virama (CONTEXTJ)"),
        (_alabel("a\u00b7b"), "MIDDLE DOT not between two l (CONTEXTO)"),
        (_alabel("\u30fb"), "KATAKANA MIDDLE DOT without kana or han (CONTEXTO)"),
        (_alabel("\u0375a"), "GREEK KERAIA not before Greek (CONTEXTO)"),
        (_alabel("a\u05f3"), "HEBREW GERESH not after Hebrew (CONTEXTO)"),
        (_alabel("\u0661\u06f1"), "Arabic-Indic digits of both kinds (CONTEXTO)"),
        (_alabel("\u05d0a"), "bidi rule 2: L in a right-to-left label"),
        (_alabel("1\u05d0"), "bidi rule 1: a label starts with a digit"),
        (_alabel("a\u05d0"), "bidi rule 5: R in a left-to-right label"),
    ],
)
@pytest.mark.parametrize("position", ["{}.example.com", "mail.{}.com", "a.b.{}"])
def test_every_a_label_is_valid_idna_2008(label: str, why: str, position: str) -> None:
    raw = "x@" + position.format(label)
    assert "A-label" in (bad(raw).error or ""), why
    bad(raw, PERMISSIVE)


@pytest.mark.parametrize(
    "ulabel",
    ["l\u00b7l", "\u0915\u094d\u200d\u0937", "\u30a2\u30fb\u30a2", "\u05d0\u05f3", "\u0375\u03b1"],
)
def test_contextual_rules_let_the_right_contexts_through(ulabel: str) -> None:
    facts = ok(f"x@{_alabel(ulabel)}.com")
    assert facts.domain == f"{ulabel}.com"


@pytest.mark.parametrize(
    "domain",
    [
        "1a.xn--4dbc",  # "1a" starts with a digit: bidi rule 1, in a right-to-left domain
        "xn--4dbc.1a.com",
        "1a.אב",  # the same typed in Unicode
        "a.b.9lives.xn--4dbc",  # "9lives" is fine alone; rule 1 binds in a bidi domain
        "1.xn--mgbcd4a2b0d2b",
    ],
)
def test_the_bidi_rule_binds_every_label_of_a_right_to_left_domain(domain: str) -> None:
    assert "bidi" in (bad(f"x@{domain}").error or "")
    bad(f"x@{domain}", PERMISSIVE)
    # the same left-to-right labels are fine in a left-to-right domain
    ok(
        "x@"
        + domain.replace("xn--4dbc", "com").replace("אב", "com").replace("xn--mgbcd4a2b0d2b", "com")
    )


@pytest.mark.parametrize(
    "domain", ["a1.xn--4dbc", "xn--4dbc.com", "xn--1-zhc.com", "sub.xn--mgb0j.com"]
)
def test_right_to_left_domains_that_keep_the_bidi_rule(domain: str) -> None:
    ok(f"x@{domain}")


# --- NFC: the normalised form is what is checked ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("jo\u0308rg@bu\u0308cher.de", "jörg@bücher.de"),  # decomposed in both parts
        ("\u212a@x.com", "K@x.com"),  # KELVIN SIGN is K after NFC: ASCII, no SMTPUTF8
        ("a\u0341@x.com", "\u00e1@x.com"),  # U+0341 is U+0301 after NFC: "á"
        ("x@a\u0341.com", "x@\u00e1.com"),  # ... and composes in a domain
    ],
)
def test_addresses_are_checked_in_nfc(raw: str, email: str) -> None:
    facts = ok(raw)
    assert facts.email == email
    assert check_syntax(email) == facts


def test_the_nfc_form_decides_smtputf8() -> None:
    assert ok("\u212a@x.com", NO_UTF8).local == "K"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("a\u037eb@x.com", "';'"),  # GREEK QUESTION MARK is ";" after NFC
        ('"a\u037e"@x.com', None),  # ... and ";" needs the quotes it has: accepted below
        ("\u0301a@x.com", "combining mark"),
        ("a.\u0301b@x.com", "combining mark"),
        ('"\u0301a"@x.com', "combining mark"),
        ('"\u0301"@x.com', "combining mark"),
        ("x@a\u037eb.com", None),
    ],
)
def test_what_nfc_makes_refused_is_refused(raw: str, fragment: str | None) -> None:
    if raw.startswith('"a'):
        assert ok(raw, PERMISSIVE).email == '"a;"@x.com'
        assert bad(raw).error == ERR_QUOTED_LOCAL
        return
    facts = bad(raw, PERMISSIVE)
    if fragment is not None:
        assert fragment in (facts.error or "")


# --- special-use domain names (RFC 6761) ---------------------------------------------------------


ALLOW_TEST = SyntaxPolicy(allowed_special_domains=("test",))


def test_the_fast_path_pattern_spells_the_special_use_table() -> None:
    for name in SPECIAL_USE_DOMAINS:
        for spelling in (name, name.upper(), name.capitalize()):
            assert not fast_domain(f"a.{spelling}"), spelling
            assert fast_domain(f"a.{spelling}x"), spelling  # only the whole label
            assert fast_domain(f"{spelling}.com"), spelling  # only the top level
    assert set(SPECIAL_USE_DOMAINS) == {
        "alt",
        "arpa",
        "example",
        "internal",
        "invalid",
        "local",
        "localhost",
        "onion",
        "test",
    }


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("a@shop.test", "test"),
        ("a@Shop.TEST", "test"),
        ("a@x.invalid", "invalid"),
        ("a@printer.local", "local"),
        ("a@app.localhost", "localhost"),
        ("a@duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion", "onion"),
        ("a@router.home.arpa", "arpa"),  # RFC 8375
        ("a@1.10.in-addr.arpa", "arpa"),  # RFC 6761 6.1
        ("a@ipv4only.arpa", "arpa"),  # RFC 8880
        ("a@x.alt", "alt"),  # RFC 9476
        ("a@www.example", "example"),
        ("a@corp.internal", "internal"),
        ("a@\uff53\uff48\uff4f\uff50.\uff54\uff45\uff53\uff54", "test"),  # full-width: UTS 46
        ("jörg@bücher.test", "test"),
    ],
)
def test_special_use_names_are_valid_syntax_that_takes_no_mail(raw: str, name: str) -> None:
    facts = ok(raw)
    assert facts.special_use == name
    assert any(f".{name}" in note and "no DNS query" in note for note in facts.notes)
    assert _fast(raw) is None, "the fast path leaves them to the policy"
    assert ok(raw, PERMISSIVE).special_use == name, "no syntax knob lets them through"


@pytest.mark.parametrize(
    "raw",
    [
        "a@example.com",  # real zones in the public DNS (IANA's): the DNS stage asks them
        "a@example.org",
        "a@test.com",
        "a@testing.org",
        "a@local.de",
        "a@localhost.com",
        "a@arpa.net",
        "a@x.onions",
    ],
)
def test_names_that_only_look_special_are_not(raw: str) -> None:
    assert ok(raw).special_use is None


def test_single_label_special_names_need_both_knobs() -> None:
    assert bad("a@localhost").error == ERR_SINGLE_LABEL
    assert ok("a@localhost", PERMISSIVE).special_use == "localhost"
    both = SyntaxPolicy(allow_single_label_domain=True, allowed_special_domains=("localhost",))
    assert ok("a@localhost", both).special_use is None


def test_an_address_literal_is_no_special_use_name() -> None:
    assert ok("a@[127.0.0.1]", PERMISSIVE).special_use is None


@pytest.mark.parametrize(
    ("allowed", "raw", "name"),
    [
        (("test",), "a@shop.test", None),
        (("test",), "a@TEST", "test"),  # a single label is refused by the policy first
        (("test",), "a@shop.invalid", "invalid"),
        (("shop.test",), "a@shop.test", None),
        (("shop.test",), "a@mx.shop.test", None),
        (("shop.test",), "a@other.test", "test"),
        (("shop.test",), "a@xshop.test", "test"),  # a suffix is a whole label
        (("home.arpa", "local"), "a@nas.home.arpa", None),
        (("home.arpa", "local"), "a@1.10.in-addr.arpa", "arpa"),
        (("home.arpa", "local"), "a@printer.local", None),
    ],
)
def test_allowed_special_domains_are_suffixes(
    allowed: tuple[str, ...], raw: str, name: str | None
) -> None:
    policy = SyntaxPolicy(allowed_special_domains=allowed)
    facts = check_syntax(raw, policy)
    if raw == "a@TEST":
        assert facts.error == ERR_SINGLE_LABEL
        return
    assert facts.ok and facts.special_use == name
    assert special_use(facts.ascii_domain or "", allowed) == name
    assert (name is None) == (not facts.notes)


def test_an_allowed_special_name_is_an_ordinary_domain() -> None:
    facts = ok("Alice@Shop.TEST", ALLOW_TEST)
    assert facts == SyntaxFacts(
        ok=True,
        email="Alice@shop.test",
        local="Alice",
        domain="shop.test",
        ascii_domain="shop.test",
    )
