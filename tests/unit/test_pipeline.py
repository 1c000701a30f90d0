"""engine/pipeline.py offline: the memoised ``verdict_offline`` equals ``decide(check_offline)``.

``Engine.verdict_offline`` answers plain ASCII addresses from a per-domain memo of
``decide``'s own output; these properties check, on generated addresses of every kind,
that it gives exactly the verdict of the full path except for the fresh ``id``.
"""

from __future__ import annotations

import collections
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailvet.engine import pipeline
from mailvet.engine.facts import Facts
from mailvet.engine.pipeline import Engine
from mailvet.engine.scoring import decide
from mailvet.engine.syntax import fast_local
from mailvet.settings import Settings
from mailvet.verdict import Reason, Result, Verdict

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ENGINES = {
    "default": Settings(),  # tests/conftest.py lets .test through
    "special-use refused": Settings(allowed_special_domains=[]),
    "special-use allowed": Settings(allowed_special_domains=["test", "home.arpa", "onion"]),
    "operator lists": Settings(
        allow_domains=["partner.biz", "gmial.com", "mailinator.com", "corp.internal"],
        deny_domains=["blocked.biz", "yahoo.com", "*.spam.test", "x.invalid"],
    ),
    "permissive syntax": Settings(
        allow_quoted_local=True, allow_address_literal=True, allow_single_label_domain=True
    ),
    "no smtputf8": Settings(allow_smtputf8=False),
}

LOCALS = [
    "john",
    "john.doe",
    "J.Doe+news",
    "first_last1985",
    "a",
    "x",
    "hi",
    "it",
    "info",
    "Info",
    "INFO+tag",
    "info+x",
    "no-reply",
    "No.Reply",
    "noreply",
    "no_reply",
    "sales",
    "sales.team",
    "sales+eu",
    "postmaster",
    "admin",
    "customer_service",
    "support-team",
    "o'brien",
    "a!#$%&'*+/=?^_`{|}~-z",
    "x" * 64,
    "x" * 65,
    "jörg",
    "josé.garcía",
    "zoë",
    '"quoted"',
    '"info"',
    "a..b",
    ".a",
    "a.",
    "",
    "a b",
]
DOMAINS = [
    "gmail.com",
    "GMAIL.COM",
    "Gmail.com",
    "yahoo.com",
    "hotmail.co.uk",
    "outlook.com",
    "gmial.com",
    "Gmial.com",
    "yaho.com",
    "gmail.con",
    "hotmial.com",
    "outlok.com",
    "icloud.co",
    "mailinator.com",
    "inbox.mailinator.com",
    "MAILINATOR.COM",
    "a.b.mailinator.com",
    "guerrillamail.com",
    "acmetech.io",
    "mail.acmetech.io",
    "ACMETECH-LABS.DE",
    "example.com",
    "partner.biz",
    "sub.partner.biz",
    "blocked.biz",
    "x.spam.test",
    "shop.test",
    "Shop.TEST",
    "x.invalid",
    "printer.local",
    "router.home.arpa",
    "nas.HOME.ARPA",
    "x.onion",
    "corp.internal",
    "www.example",
    "localhost.com",
    "\uff53\uff48\uff4f\uff50.\uff54\uff45\uff53\uff54",
    "bücher.test",
    "a.c0m",
    "a.xn--p1ai",
    "1a.xn--4dbc",
    "münchen-bau.de",
    "bücher.de",
    "xn--bcher-kva.de",
    "例子.中国",
    "gmail.com.",
    "gmail",
    "localhost",
    "iana.123",
    "[127.0.0.1]",
    "[IPv6:::1]",
    "-gmail.com",
    "gmail-.com",
    "gm--ail.com",
    "a_b.com",
    "1.2.3.4",
    "x" * 63 + ".com",
    "x" * 64 + ".com",
    ".".join(["abcdefghi"] * 25) + ".com",
]

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
atext = st.sampled_from(ATEXT)
atom = st.lists(atext, min_size=1, max_size=12).map("".join)
gen_local = st.one_of(
    st.sampled_from(LOCALS),
    st.lists(atom, min_size=1, max_size=4).map(".".join),
    st.integers(min_value=60, max_value=70).map(lambda n: "y" * n),
    st.text(alphabet='aé.+-_ "@x', max_size=10),
)
label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
gen_domain = st.one_of(
    st.sampled_from(DOMAINS),
    st.sampled_from(DOMAINS).map(str.upper),
    st.sampled_from(DOMAINS).map(lambda d: d + "."),
    st.lists(label, min_size=1, max_size=4).map(lambda ls: ".".join([*ls, "com"])),
    st.lists(label, min_size=2, max_size=4).map(".".join),
    st.integers(min_value=180, max_value=260).map(lambda n: ("a" * 60 + ".") * (n // 61) + "com"),
)
address = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", gen_local, gen_domain),
    st.sampled_from(["", "NULL", "null", "@", "a@", "@gmail.com", "a@@gmail.com", "a@b@c.com"]),
    st.builds(lambda a, b: f"{a}{b}", gen_local, st.sampled_from([" ", "\n", ",", ">"])).flatmap(
        lambda s: gen_domain.map(lambda d: f"{s}@{d}")
    ),
)


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    return Engine(ENGINES[request.param])


def _same(engine: Engine, raw: str) -> Verdict:
    fast = engine.verdict_offline(raw)
    slow = decide(engine.check_offline(raw))
    assert type(fast) is Verdict
    assert fast._replace(id="") == slow._replace(id=""), raw
    assert str(uuid.UUID(fast.id)) == fast.id and fast.id != slow.id
    assert type(fast.result) is Result and type(fast.reason) is Reason
    return fast


@SETTINGS
@given(raw=address)
def test_memoised_verdict_equals_the_full_path(engine: Engine, raw: str) -> None:
    _same(engine, raw)
    _same(engine, raw)  # the second time the domain's memo entry exists


@SETTINGS
@given(local=gen_local, domain=gen_domain)
def test_same_domain_different_local_parts(engine: Engine, local: str, domain: str) -> None:
    for other in ("x", "hi", "info", "Sales.Team", local):
        _same(engine, f"{other}@{domain}")
    _same(engine, f"{local}@{domain}")


def test_every_listed_pair(engine: Engine) -> None:
    for domain in DOMAINS:
        for local in LOCALS:
            _same(engine, f"{local}@{domain}")


def test_memo_is_used_and_keeps_typo_and_role_apart() -> None:
    engine = Engine(Settings())
    v = engine.verdict_offline("Info+x@Gmial.com")
    assert engine._memo.get("Gmial.com")
    assert v.email == "Info+x@gmial.com" and v.username == "Info+x"
    assert v.did_you_mean == "Info+x@gmail.com" and v.isv_nogeneric is False
    w = engine.verdict_offline("jane.doe@gmial.com")
    assert w.did_you_mean == "jane.doe@gmail.com" and w.isv_nogeneric is True
    assert w.email == "jane.doe@gmial.com"
    assert engine.verdict_offline("bob@gmail.com").did_you_mean is None


def test_domains_the_probes_cannot_take_use_the_full_path() -> None:
    engine = Engine(Settings())
    size = 254 - len(engine._role_probe)  # the role probe address is one octet too long
    assert size >= 192 + 2 and len(engine._role_probe) > 1
    domain = ".".join(["a" * 63] * 3 + ["b" * (size - 192)])
    assert len(domain) == size
    raw = f"x@{domain}"
    _same(engine, raw)
    entry = engine._memo[domain]
    assert entry and entry[7] is None, "the role probe runs for the first role address"
    assert engine.offline_role(domain) is None  # it cannot take the fast path here
    assert engine._memo[domain] == ()
    _same(engine, raw)


def test_the_role_probe_runs_for_the_first_role_address() -> None:
    engine = Engine(Settings())
    person = _same(engine, "jane@Example.com")
    before = engine._memo["Example.com"]
    assert before and before[7] is None
    role = _same(engine, "Info+x@Example.com")
    after = engine._memo["Example.com"]
    assert after and after[7] is not None and after[6] is before[6]
    assert person.isv_nogeneric is True and role.isv_nogeneric is False
    assert role.email == "Info+x@example.com"
    _same(engine, "sales@Example.com")
    assert engine.offline_template("info@Example.com") is not None


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_MEMO_SIZE", 3)
    engine = Engine(Settings())
    for i in range(10):
        _same(engine, f"user{i}@company{i}.com")
        assert len(engine._memo) <= 3
    _same(engine, "user@company0.com")


@pytest.mark.parametrize(
    "raw", ["alice@shop.test", "Info@Shop.TEST", "x@printer.local", "jörg@bücher.test"]
)
def test_special_use_domains_are_invalid_domain_offline(raw: str) -> None:
    engine = Engine(Settings(allowed_special_domains=[]))
    v = _same(engine, raw)
    assert (v.result, v.reason, v.score) == (Result.UNDELIVERABLE, Reason.INVALID_DOMAIN, 0)
    assert v.isv_format is True and v.isv_domain is False and v.isv_mx is False
    assert not engine._memo, "the fast path leaves special-use names to the full path"


def test_allowed_special_domains_are_ordinary_offline() -> None:
    engine = Engine(Settings(allowed_special_domains=["test"]))
    v = _same(engine, "alice@shop.test")
    assert (v.result, v.reason) == (Result.UNKNOWN, Reason.NOT_CHECKED)
    assert v.isv_domain is None
    assert _same(engine, "alice@x.invalid").reason is Reason.INVALID_DOMAIN


async def test_verify_refuses_special_use_without_the_network() -> None:
    # no nameserver answers on port 9: a DNS query would time out, not give this verdict
    settings = Settings(
        allowed_special_domains=[], dns_nameservers=["127.0.0.1:9"], dns_timeout=5.0
    )
    engine = Engine(settings)
    try:
        checked = await engine.verify("alice@shop.test", deadline=10.0)
    finally:
        await engine.close()
    assert (checked.verdict.result, checked.verdict.reason) == (
        Result.UNDELIVERABLE,
        Reason.INVALID_DOMAIN,
    )
    assert checked.facts.dns is None and checked.facts.smtp is None
    assert not checked.facts.deadline_hit
    [note] = checked.facts.transcript
    assert note.kind == "note" and "special-use name .test" in note.text


# --- the memo is structural: it writes the per-address fields by name ------------------

# Fields that no offline verdict on the memo's path sets differently: the network
# stages' fields are unset offline, and the memo only serves addresses that passed the
# syntax stage. Every other field must vary across MEMO_ADDRESSES, so the comparison
# below covers it; a new field goes here only if it is unset offline too.
UNVARIED_ON_THE_MEMO_PATH = {
    "mx_record",
    "provider",
    "isv_domain",
    "isv_mx",
    "isv_noblock",
    "isv_nocatchall",
    "isv_format",  # always true: the fast path's addresses are well-formed
}
MEMO_LOCALS = ["john", "Jane.Doe+news", "info", "No.Reply", "x", "sales"]
MEMO_DOMAINS = [
    "gmail.com",
    "Gmail.COM",
    "gmial.com",
    "hotmial.com",
    "mailinator.com",
    "inbox.mailinator.com",
    "acmetech.io",
    "blocked.biz",
    "partner.biz",
]
MEMO_ADDRESSES = [f"{local}@{domain}" for domain in MEMO_DOMAINS for local in MEMO_LOCALS]


def test_memo_equals_the_full_path_across_every_field() -> None:
    engine = Engine(ENGINES["operator lists"])
    seen: dict[str, set[object]] = {name: set() for name in Verdict._fields}
    for raw in MEMO_ADDRESSES:
        fast = engine.verdict_offline(raw)
        assert engine._memo[raw.partition("@")[2]]  # the memo answered
        slow = decide(engine.check_offline(raw))
        assert fast.as_dict() | {"id": ""} == slow.as_dict() | {"id": ""}, raw
        for name, value in fast.as_dict().items():
            seen[name].add(value)
    unvaried = {name for name, values in seen.items() if len(values) < 2}
    assert unvaried == UNVARIED_ON_THE_MEMO_PATH


@pytest.mark.parametrize("position", range(len(Verdict._fields) + 1))
def test_memo_follows_a_field_added_anywhere(
    monkeypatch: pytest.MonkeyPatch, position: int
) -> None:
    # decide grows a per-domain field at ``position``: the memo must still give exactly
    # decide's verdict, whatever the per-address fields' positions are then
    names = list(Verdict._fields)
    names.insert(position, "added")
    make_type: Any = collections.namedtuple
    wider: Any = make_type("Wider", names)

    def wider_decide(facts: Facts) -> Any:
        values: list[object] = list(decide(facts))
        domain = facts.syntax.ascii_domain
        values.insert(position, None if domain is None else f"per-domain {domain}")
        return wider(*values)

    monkeypatch.setattr(pipeline, "decide", wider_decide)
    engine = Engine(Settings())
    for raw in MEMO_ADDRESSES:
        fast = engine.verdict_offline(raw)
        assert engine._memo[raw.partition("@")[2]]  # the memo answered
        assert type(fast) is wider
        slow = wider_decide(engine.check_offline(raw))
        assert fast._asdict() | {"id": ""} == slow._asdict() | {"id": ""}, raw


# --- offline_template: the bulk writers' view of the memo ---

_ATEXT_DOT_AT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~.@"
)


def _template_agrees(engine: Engine, raw: str) -> None:
    parts = engine.offline_template(raw)
    full = engine.verdict_offline(raw)
    if parts is None:
        return
    template, email, username, did_you_mean = parts
    rebuilt = template._replace(
        id=full.id, email=email, username=username, did_you_mean=did_you_mean
    )
    assert rebuilt == full, raw
    assert set(raw) <= _ATEXT_DOT_AT, "only plain ASCII addresses get a template"
    again = engine.offline_template(raw)
    assert again is not None and again[0] is template  # one object per domain and kind


@SETTINGS
@given(raw=address)
def test_offline_template_is_verdict_offline(engine: Engine, raw: str) -> None:
    _template_agrees(engine, raw)


def test_offline_template_every_listed_pair(engine: Engine) -> None:
    for domain in DOMAINS:
        for local in LOCALS:
            _template_agrees(engine, f"{local}@{domain}")


def _domain_agrees(engine: Engine, raw: str) -> None:
    local, _, domain = raw.partition("@")
    found = engine.offline_domain(domain)
    full = engine.verdict_offline(raw)
    if found is None:
        assert engine.offline_template(raw) is None, raw
        return
    person, email_domain, suggestion = found
    if not fast_local(raw, local):
        assert engine.offline_template(raw) is None, raw
        return
    template = engine.offline_role(domain) if engine.is_role(local) else person
    if template is None:  # role addresses here take the full path
        assert engine.offline_template(raw) is None, raw
        return
    rebuilt = template._replace(
        id=full.id,
        email=f"{local}@{email_domain}",
        username=local,
        did_you_mean=None if suggestion is None else f"{local}@{suggestion}",
    )
    assert rebuilt == full, raw
    assert set(raw) <= _ATEXT_DOT_AT, "only plain ASCII addresses"
    again = engine.offline_domain(domain)
    assert again is not None and again[0] is person
    assert engine.offline_role(domain) is engine.offline_role(domain)


@SETTINGS
@given(raw=address)
def test_offline_domain_is_verdict_offline(engine: Engine, raw: str) -> None:
    _domain_agrees(engine, raw)


def test_offline_domain_every_listed_pair(engine: Engine) -> None:
    for domain in [*DOMAINS, "GMIAL.com", "Gmail.Com", "x." + "a" * 63 + ".com"]:
        for local in [*LOCALS, "Info", "x" * 65, "a..b"]:
            _domain_agrees(engine, f"{local}@{domain}")
    assert engine.offline_domain("a@b.com") is None and engine.offline_domain("") is None
    assert engine.offline_domain("b" * 250 + ".com") is None, "no address on it is short enough"


def test_offline_template_keeps_role_and_typo_apart() -> None:
    engine = Engine(Settings())
    person = engine.offline_template("jane.doe@gmial.com")
    role = engine.offline_template("info@gmial.com")
    assert person is not None and role is not None and person[0] is not role[0]
    assert person[3] == "jane.doe@gmail.com" and role[0].isv_nogeneric is False


def test_an_engine_without_settings_is_the_default_settings_engine() -> None:
    from mailvet.settings import default_settings

    lean = Engine(None)
    full = Engine(default_settings())
    assert lean._policy == full._policy
    assert (lean._lists._allow, lean._lists._deny) == (full._lists._allow, full._lists._deny)
    assert lean._lists.sizes == full._lists.sizes
    for raw in [*[f"{local}@{domain}" for domain in DOMAINS for local in LOCALS], "a@shop.test"]:
        assert lean.verdict_offline(raw)._replace(id="") == full.verdict_offline(raw)._replace(
            id=""
        ), raw
    assert lean.settings == default_settings(), "a network stage gets the defaults"
