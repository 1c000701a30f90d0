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
    MAX_INPUT,
    SyntaxPolicy,
    _fast,
    _slow,
    check_syntax,
    fast_domain,
    fast_local,
    fast_split,
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
    assert SyntaxPolicy.from_settings(Settings()) == DEFAULT_POLICY
    settings = Settings(
        allow_quoted_local=True,
        allow_address_literal=True,
        allow_single_label_domain=True,
        allow_smtputf8=False,
    )
    assert SyntaxPolicy.from_settings(settings) == SyntaxPolicy(True, True, True, False)


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
        ("x@1a.2b.c0m", "x@1a.2b.c0m", None, None, None),
        ("x@a.1b", "x@a.1b", None, None, None),  # mixed TLD is fine, all-numeric is not
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


def test_local_part_limit_is_64_octets() -> None:
    ok("a" * 64 + "@x.com")
    assert "64" in (bad("a" * 65 + "@x.com").error or "")
    ok("é" * 32 + "@x.com")  # 64 octets
    bad("é" * 32 + "a@x.com")  # 65 octets, 33 characters


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
        '"' + "a" * 63 + '"@x.com',  # 65 octets with the quotes
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
