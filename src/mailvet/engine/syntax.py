"""Syntax stage: is this string a mailbox one can send to, and what is its normal form?

RFC 5321 ``Mailbox`` (section 4.1.2) with the RFC 6531 extension for UTF-8 local parts,
IDNA 2008 domains (the ``idna`` package, UTS 46 mapping for user-typed Unicode; every
A-label decoded and checked, the RFC 5893 bidi rule over the whole domain) and the
length limits (label 63, domain 253, path 254).

A local part over RFC 5321's 64 octets (4.5.3.1.1) is *not* refused: many servers take
longer ones, so the SMTP stage decides, and the facts carry a note for the transcript.

The default policy is the *sending* view: quoted local parts, address literals,
single-label domains and top-level labels that are neither alphabetic nor an A-label
(``iana.123``, ``a.c0m``) are valid RFC 5321 but nobody can usefully send to them, so
they are rejected unless ``SyntaxPolicy`` allows them.

Special-use domain names that no registry may ever delegate in the public DNS (``test``,
``invalid``, ``localhost``, ``onion`` ... see ``SPECIAL_USE_DOMAINS``) are valid syntax
but can never take mail from the internet: the facts name them in ``special_use`` (and
the verdict is ``invalid_domain``, with no DNS query) unless the policy's
``allowed_special_domains`` lets them through.

Normalisation of an accepted address (the whole input is NFC-normalised first, and
every rule checks the normalised form: ``e`` + U+0301 is ``é``, U+037E GREEK QUESTION
MARK is ``;`` and refused, a local part may not start with a combining mark):

- surrounding whitespace is **not** stripped: ``" a@b.com"`` is not a mailbox (the
  is_email suite agrees). Trimming user input is the job of the layer that reads it
  (form field, CSV cell), not of the validator;
- the local part is otherwise kept as typed (local parts are case-sensitive); a
  quoted local part is unquoted when its content is a dot-atom (RFC 5322 3.4.1 says
  the dot-atom form SHOULD be used), else re-quoted with the fewest escapes;
- the domain is lower-cased (UTS 46 mapping for Unicode input: full-width letters,
  ideographic full stops ...), given in Unicode form in ``domain`` and in A-label form
  in ``ascii_domain``;
- address literals keep their text, with ``IPv6:`` literals lower-cased.

``check_syntax`` never raises: every failure is a ``SyntaxFacts`` with ``ok=False``
and a short ``error``. Inputs longer than ``MAX_INPUT`` characters are rejected
before any other work, so a megabyte of junk costs nothing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

import idna

from mailvet.engine.facts import SyntaxFacts

if TYPE_CHECKING:
    from mailvet.settings import Settings

__all__ = [
    "DEFAULT_POLICY",
    "ERR_ADDRESS_LITERAL",
    "ERR_NUMERIC_TLD",
    "ERR_QUOTED_LOCAL",
    "ERR_SINGLE_LABEL",
    "ERR_SMTPUTF8",
    "ERR_TLD",
    "MAX_INPUT",
    "SPECIAL_USE_DOMAINS",
    "SyntaxPolicy",
    "check_syntax",
    "fast_domain",
    "fast_local",
    "fast_split",
    "special_use",
]

MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1, octets: longer is noted, not refused
MAX_LABEL = 63  # RFC 1035 2.3.4
MAX_DOMAIN = 253  # 255 octets on the wire = 253 characters written without the root dot
MAX_PATH = 254  # RFC 5321 4.5.3.1.3: 256 octets including "<" and ">"
# No accepted address is longer than 254 octets; normalisation (NFC, UTS 46) can
# shorten a string, so the up-front cut is generous, but it is a hard cut.
MAX_INPUT = 1024
_DISPLAY = 256  # how much of a rejected input is echoed back in ``email``

# Errors a caller (or a test) may want to tell apart: the policy refusals.
ERR_QUOTED_LOCAL = "quoted local part not allowed"
ERR_ADDRESS_LITERAL = "address literal not allowed"
ERR_SINGLE_LABEL = "single-label domain not allowed"
ERR_NUMERIC_TLD = "numeric top-level domain not allowed"
ERR_TLD = "top-level domain must be alphabetic or an A-label"
ERR_SMTPUTF8 = "internationalised local part not allowed"

# Special-use domain names (IANA's "Special-Use Domain Names" registry, RFC 6761 section
# 7) that can never take mail from the internet, by top-level label, with the document
# that reserves them. Each is a top-level name no registry may delegate in the public
# DNS, so no MX record for anything under it can exist there:
# - arpa: infrastructure only (RFC 3172), never a mail domain; it holds the registry's
#   home.arpa (RFC 8375), the private and link-local reverse zones (10.in-addr.arpa ...,
#   RFC 6761 6.1; 254.169.in-addr.arpa, 8.e.f.ip6.arpa ..., RFC 6762), ipv4only.arpa
#   (RFC 8880), resolver.arpa (RFC 9462), 6tisch.arpa (RFC 9031), eap-noob.arpa (RFC 9140).
# - example: RFC 6761 6.5 bars registries from delegating it. example.com, example.net
#   and example.org are in the registry too, but they are real zones in the public DNS
#   (IANA runs them), so the DNS stage asks them like any other domain.
# - internal: not in the IETF registry; the ICANN Board reserved it for private use in
#   July 2024 (SSAC advisory SAC113: it "must never be delegated").
SPECIAL_USE_DOMAINS: dict[str, str] = {
    "alt": "RFC 9476",
    "arpa": "RFC 3172",
    "example": "RFC 6761",
    "internal": "ICANN, SAC113",
    "invalid": "RFC 6761",
    "local": "RFC 6762",
    "localhost": "RFC 6761",
    "onion": "RFC 7686",
    "test": "RFC 6761",
}


@dataclass(frozen=True, slots=True)
class SyntaxPolicy:
    """What the syntax stage accepts beyond the sending view."""

    allow_quoted_local: bool = False
    allow_address_literal: bool = False
    # Also covers top-level labels that are neither alphabetic nor an A-label
    # (``a@iana.123``, ``a@1.2.3.4``, ``a@x.c0m``): domains no public DNS name can be.
    allow_single_label_domain: bool = False
    allow_smtputf8: bool = True
    # domain suffixes (lower-case, A-label form) under a special-use name that are let
    # through all the same: the simulated internet lives under "test"
    allowed_special_domains: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> SyntaxPolicy:
        return cls(
            allow_quoted_local=settings.allow_quoted_local,
            allow_address_literal=settings.allow_address_literal,
            allow_single_label_domain=settings.allow_single_label_domain,
            allow_smtputf8=settings.allow_smtputf8,
            allowed_special_domains=tuple(settings.allowed_special_domains),
        )


DEFAULT_POLICY = SyntaxPolicy()

# --- fast path ------------------------------------------------------------------
# Nearly every real address is plain ASCII: a dot-atom local part and a lower- or
# mixed-case LDH host name ending in a letter (97 % of the benchmark's mix). One compiled
# regex (~0.35 us) decides those, skipping NFC, per-character Unicode checks and IDNA:
# check_syntax runs 2.1x its slow path alone on that mix and ~10x email-validator
# (bench/offline.py, docs/BENCHMARKS.md "Offline pipeline"). It only ever *accepts*:
# anything it does not match (or that touches a rule it does not model: lengths, "--"
# anywhere in the domain, so A-labels and RFC 5891 reserved labels) goes to the slow
# path, which is the specification. It also leaves to the slow path every domain whose
# top-level label is not purely alphabetic (numeric ones depend on the policy) or is a
# special-use name (whether it is let through depends on the policy too), and every local
# part over 64 octets (accepted, with a note). tests/unit/test_syntax_properties.py checks
# that whenever the fast path answers, the slow path gives the identical answer.
#
# The same rule also comes in two halves, built from the same patterns: what concerns
# the local part and the whole length (``fast_local``), and what concerns the domain
# alone (``fast_domain``). Neither half admits "@", so an accepted address has exactly
# one, and ``fast_split(raw)`` accepts exactly when both halves accept the text either
# side of it (tests/unit/test_syntax.py checks this). ``Engine.verdict_offline`` keeps a
# per-domain memo whose keys all passed ``fast_domain``, so it needs only ``fast_local``.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# alphabetic, and not a special-use name (the alternation spells SPECIAL_USE_DOMAINS;
# tests/unit/test_syntax.py checks that they agree)
_SPECIAL_TLD = r"(?i:a(?:lt|rpa)|example|in(?:ternal|valid)|local(?:host)?|onion|test)"
_TLD = rf"(?!{_SPECIAL_TLD}\Z)[A-Za-z]{{1,63}}"
_LOCAL_PATTERN = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_DOMAIN_PATTERN = rf"(?:{_LABEL}\.)+{_TLD}"
_FAST_MATCH = re.compile(rf"({_LOCAL_PATTERN})@({_DOMAIN_PATTERN})").fullmatch
_FAST_LOCAL = re.compile(_LOCAL_PATTERN).fullmatch
_FAST_DOMAIN = re.compile(_DOMAIN_PATTERN).fullmatch


def fast_split(raw: str) -> tuple[str, str] | None:
    """``(local, domain as typed)`` when the fast path accepts ``raw``, else ``None``.

    Accepted means valid, with the normal form ``local@domain.lower()``, under every
    ``SyntaxPolicy``.
    """
    if len(raw) > MAX_PATH:
        return None
    m = _FAST_MATCH(raw)
    if m is None:
        return None
    local, domain = m.groups()
    if len(local) > MAX_LOCAL or "--" in domain:
        return None
    return local, domain


def fast_local(raw: str, local: str) -> bool:
    """The fast path's rule for the address ``raw`` whose text before its first "@" is
    ``local``, apart from the domain: a dot-atom of ASCII atext, within the limits.
    The same as ``len(raw) <= MAX_PATH and fast_local_part(local)``."""
    return len(raw) <= MAX_PATH and len(local) <= MAX_LOCAL and _FAST_LOCAL(local) is not None


def fast_local_part(local: str) -> bool:
    """``fast_local``'s rule on the local part alone (all of it but the whole address's
    length), for bulk writers that keep its answer per local part."""
    return len(local) <= MAX_LOCAL and _FAST_LOCAL(local) is not None


def fast_domain(domain: str) -> bool:
    """The fast path's rule for the domain as typed: an LDH host name whose last label
    is alphabetic and not a special-use name, with no "--" anywhere (A-labels and
    reserved labels)."""
    return "--" not in domain and _FAST_DOMAIN(domain) is not None


def _fast(raw: str) -> SyntaxFacts | None:
    """Accept a plain ASCII address, or return ``None`` to defer to the slow path."""
    split = fast_split(raw)
    if split is None:
        return None
    local, domain = split
    if domain.islower():
        email = raw
    else:
        domain = domain.lower()
        email = f"{local}@{domain}"
    return SyntaxFacts(ok=True, email=email, local=local, domain=domain, ascii_domain=domain)


# --- slow path ------------------------------------------------------------------
_ATEXT_ASCII = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_HEX4 = re.compile(r"[0-9A-Fa-f]{1,4}")
# Unicode categories never allowed in a local part: controls, format characters,
# surrogates, private use, unassigned, and every kind of space or line separator.
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


class _Invalid(Exception):
    """Internal: carries the reason out of the helpers. Never escapes the module."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _display(raw: str) -> str:
    """The rejected input as echoed back: bounded, and always encodable as UTF-8."""
    text = raw if len(raw) <= _DISPLAY else raw[:_DISPLAY] + "\u2026"
    return _SURROGATE.sub("\ufffd", text)


def _fail(raw: str, reason: str) -> SyntaxFacts:
    return SyntaxFacts(ok=False, email=_display(raw), error=reason)


def _check_non_ascii(ch: str) -> None:
    if unicodedata.category(ch) in _BAD_CATEGORIES:
        raise _Invalid(f"character U+{ord(ch):04X} not allowed in local part")


def _dot_atom_error(text: str) -> str | None:
    """Why ``text`` is not an RFC 5321 Dot-string (RFC 6531 UTF-8 atext), or None."""
    if not text:
        return "empty local part"
    for atom in text.split("."):
        if not atom:
            if text.startswith("."):
                return "local part starts with a dot"
            if text.endswith("."):
                return "local part ends with a dot"
            return "two dots in a row in local part"
        if unicodedata.category(atom[0]).startswith("M"):
            return "local part segment starts with a combining mark"
        for ch in atom:
            if ch in _ATEXT_ASCII:
                continue
            if ch < "\x80":
                return f"character {ch!r} not allowed in local part"
            if unicodedata.category(ch) in _BAD_CATEGORIES:
                return f"character U+{ord(ch):04X} not allowed in local part"
    return None


def _quoted_content(local: str) -> str:
    """Unescaped content of an RFC 5321 Quoted-string that spans all of ``local``."""
    out: list[str] = []
    i, n = 1, len(local)
    while i < n:
        ch = local[i]
        if ch == "\\":
            if i + 1 >= n:
                break
            nxt = local[i + 1]
            if not " " <= nxt <= "~":  # quoted-pairSMTP = %d92 %d32-126
                raise _Invalid("invalid escape in quoted local part")
            out.append(nxt)
            i += 2
            continue
        if ch == '"':
            if i != n - 1:
                raise _Invalid("text after the closing quote of the local part")
            return "".join(out)
        if ch >= "\x80":
            _check_non_ascii(ch)
        elif not " " <= ch <= "~":  # qtextSMTP: %d32-33 / %d35-91 / %d93-126
            raise _Invalid(f"character {ch!r} not allowed in quoted local part")
        out.append(ch)
        i += 1
    raise _Invalid("unterminated quoted local part")


def _local_part(local: str) -> tuple[str, bool]:
    """Validate and normalise the local part (already NFC): (normal form, was quoted).

    Its length is not checked here: the path limit bounds it, and over 64 octets is a
    note, not a refusal (``_slow``)."""
    if not local.startswith('"'):
        error = _dot_atom_error(local)
        if error is not None:
            raise _Invalid(error)
        return local, False
    content = _quoted_content(local)
    if content and unicodedata.category(content[0]).startswith("M"):
        # it would combine with the opening quote
        raise _Invalid("local part starts with a combining mark")
    if _dot_atom_error(content) is None:
        return content, True
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"', True


def _ipv4(text: str) -> bool:
    return _DOTTED_QUAD.fullmatch(text) is not None and all(
        int(part) <= 255 for part in text.split(".")
    )


def _hex_groups(text: str) -> int | None:
    """Number of 1-4 digit hex groups in ``text`` ("" is zero groups), or None."""
    if text == "":
        return 0
    parts = text.split(":")
    if all(_HEX4.fullmatch(p) for p in parts):
        return len(parts)
    return None


def _ipv6(text: str) -> bool:
    """RFC 5321 IPv6-addr: full, compressed (at most 6 groups), and the IPv4 forms."""
    head, sep, tail = text.rpartition(":")
    if sep and "." in tail:
        if not _ipv4(tail):
            return False
        full, comp = 6, 4  # IPv6v4-full / IPv6v4-comp
        text = head + ":"  # the hex part with the colon before the IPv4 part
        if not text.endswith("::"):
            text = text[:-1]
    else:
        full, comp = 8, 6  # IPv6-full / IPv6-comp
    if "::" in text:
        left, _, right = text.partition("::")
        nl, nr = _hex_groups(left), _hex_groups(right)
        return nl is not None and nr is not None and nl + nr <= comp
    return _hex_groups(text) == full


def _address_literal(domain: str) -> str:
    if not domain.endswith("]") or domain.count("[") != 1 or domain.count("]") != 1:
        raise _Invalid("malformed address literal")
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        if not _ipv6(inner[5:]):
            raise _Invalid("invalid IPv6 address literal")
        return "[IPv6:" + inner[5:].lower() + "]"
    if _ipv4(inner):
        return domain
    raise _Invalid("invalid address literal")


def _ulabel(label: str) -> str:
    """Decode an A-label, insisting that it is the canonical encoding of its U-label."""
    try:
        ulabel = idna.decode(label)
        canonical = idna.encode(ulabel).decode("ascii") == label
    except Exception as exc:  # idna raises IDNAError, UnicodeError, ValueError ...
        raise _Invalid(f"invalid A-label {label!r}") from exc
    if not canonical:
        raise _Invalid(f"non-canonical A-label {label!r}")
    return ulabel


def _ascii_domain(domain: str) -> str:
    """Validate a lower-case ASCII domain; return its Unicode form."""
    if len(domain) > MAX_DOMAIN:
        raise _Invalid("domain longer than 253 characters")
    unicode_labels: list[str] = []
    for label in domain.split("."):
        if not label:
            if domain.startswith("."):
                raise _Invalid("domain starts with a dot")
            if domain.endswith("."):
                raise _Invalid("domain ends with a dot")
            raise _Invalid("two dots in a row in domain")
        if len(label) > MAX_LABEL:
            raise _Invalid("domain label longer than 63 characters")
        if not _LDH.issuperset(label):
            bad = next(ch for ch in label if ch not in _LDH)
            raise _Invalid(f"character {bad!r} not allowed in domain")
        if label[0] == "-" or label[-1] == "-":
            raise _Invalid("domain label starts or ends with a hyphen")
        if label[2:4] == "--":
            if not label.startswith("xn--"):
                raise _Invalid("domain label has hyphens in 3rd and 4th position")
            unicode_labels.append(_ulabel(label))
        else:
            unicode_labels.append(label)
    if "xn--" in domain:  # only an A-label can bring a right-to-left character
        _check_bidi_domain(unicode_labels)
    return ".".join(unicode_labels)


_RTL = frozenset({"R", "AL", "AN"})


def _check_bidi_domain(labels: list[str]) -> None:
    """RFC 5893 section 2 over the whole domain: in a domain with a right-to-left
    character anywhere (a "Bidi domain name"), *every* label must satisfy the Bidi Rule,
    left-to-right and ASCII ones included (``1a.ישראל`` breaks rule 1 in ``1a``). The
    ``idna`` package applies the rule to one label at a time only."""
    if not any(unicodedata.bidirectional(ch) in _RTL for label in labels for ch in label):
        return
    for label in labels:
        try:
            idna.check_bidi(label, check_ltr=True)
        except Exception as exc:  # IDNABidiError, IDNAError
            raise _Invalid(f"label {label!r} breaks the bidi rule (RFC 5893)") from exc


def _domain(domain: str) -> tuple[str, str, bool]:
    """Validate and normalise the domain: (Unicode form, A-label form, is a literal)."""
    if not domain:
        raise _Invalid("missing domain")
    if domain.startswith("["):
        literal = _address_literal(domain)
        return literal, literal, True
    if domain.isascii():
        lower = domain.lower()
        return _ascii_domain(lower), lower, False
    try:
        ascii_domain = idna.encode(domain, uts46=True, std3_rules=True, transitional=False).decode(
            "ascii"
        )
    except Exception as exc:  # IDNAError, UnicodeError, ValueError ...
        detail = str(exc) or type(exc).__name__
        raise _Invalid(f"invalid internationalised domain: {detail[:80]}") from exc
    return _ascii_domain(ascii_domain), ascii_domain, False


def _policy_error(
    policy: SyntaxPolicy, *, quoted: bool, literal: bool, ascii_domain: str, smtputf8: bool
) -> str | None:
    """The sending-view refusals, applied once the address is known to be RFC-valid."""
    if quoted and not policy.allow_quoted_local:
        return ERR_QUOTED_LOCAL
    if smtputf8 and not policy.allow_smtputf8:
        return ERR_SMTPUTF8
    if literal:
        return None if policy.allow_address_literal else ERR_ADDRESS_LITERAL
    if not policy.allow_single_label_domain:
        if "." not in ascii_domain:
            return ERR_SINGLE_LABEL
        tld = ascii_domain.rpartition(".")[2]
        if tld.isdigit():
            return ERR_NUMERIC_TLD
        # RFC 1123 2.1 and RFC 3696 2: a top-level name is alphabetic; an IDN one is an
        # A-label (already checked as IDNA 2008 by _ascii_domain)
        if not (tld.isalpha() or tld.startswith("xn--")):
            return ERR_TLD
    return None


def special_use(ascii_domain: str, allowed: tuple[str, ...] = ()) -> str | None:
    """The special-use name (a key of ``SPECIAL_USE_DOMAINS``) that ``ascii_domain``
    (lower-case, A-label form) falls under, unless it is, or is under, one of the
    ``allowed`` suffixes; else ``None``."""
    name = ascii_domain.rpartition(".")[2]
    if name not in SPECIAL_USE_DOMAINS:
        return None
    for suffix in allowed:
        if ascii_domain == suffix or ascii_domain.endswith("." + suffix):
            return None
    return name


def _slow(raw: str, policy: SyntaxPolicy) -> SyntaxFacts:
    """The specification: every rule, every Unicode case. ``raw`` is at most MAX_INPUT."""
    if not raw:
        return _fail(raw, "empty address")
    if _SURROGATE.search(raw):
        return _fail(raw, "unpaired surrogate in input")
    # Every rule below checks the NFC form: what composes into a refused character is
    # refused, what composes into an allowed one is checked as that character.
    text = unicodedata.normalize("NFC", raw)
    if text[0].isspace() or text[-1].isspace():
        return _fail(raw, "whitespace around the address")
    at = text.rfind("@")
    if at < 0:
        return _fail(raw, "missing @")
    try:
        local, quoted = _local_part(text[:at])
        domain, ascii_domain, literal = _domain(text[at + 1 :])
    except _Invalid as exc:
        return _fail(raw, exc.reason)
    local_octets = len(local.encode("utf-8"))
    if local_octets + 1 + len(ascii_domain) > MAX_PATH:
        return _fail(raw, "address longer than 254 octets")
    smtputf8 = not local.isascii()
    error = _policy_error(
        policy, quoted=quoted, literal=literal, ascii_domain=ascii_domain, smtputf8=smtputf8
    )
    if error is not None:
        return _fail(raw, error)
    notes: tuple[str, ...] = ()
    if local_octets > MAX_LOCAL:
        # RFC 5321 4.5.3.1.1 sets 64, but many servers accept more: the SMTP stage decides
        notes = (f"local part is {local_octets} octets, over RFC 5321's {MAX_LOCAL}",)
    special = None if literal else special_use(ascii_domain, policy.allowed_special_domains)
    if special is not None:
        notes = (
            *notes,
            f"{ascii_domain} is under the special-use name .{special} "
            f"({SPECIAL_USE_DOMAINS[special]}): it takes no mail from the internet; "
            "no DNS query",
        )
    return SyntaxFacts(
        ok=True,
        email=f"{local}@{domain}",
        local=local,
        domain=domain,
        ascii_domain=ascii_domain,
        smtputf8=smtputf8,
        special_use=special,
        notes=notes,
    )


def check_syntax(raw: str, policy: SyntaxPolicy = DEFAULT_POLICY) -> SyntaxFacts:
    """Check and normalise one address. Never raises."""
    try:
        facts = _fast(raw)
        if facts is not None:
            return facts
        if len(raw) > MAX_INPUT:
            return _fail(raw, "input too long")
        if raw.strip().upper() == "NULL":
            # CleverTap sends the literal string NULL when the profile has no email.
            return _fail(raw, "missing address (NULL)")
        return _slow(raw, policy)
    except Exception as exc:  # pragma: no cover - a bug; still an answer, not a crash
        text = raw if isinstance(raw, str) else repr(raw)
        return _fail(text, f"internal error: {type(exc).__name__}")
