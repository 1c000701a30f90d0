"""The only module that knows the order of the stages.

syntax -> lists (+ typo) -> dns -> smtp -> verdict. Each stage returns facts; the
verdict is decided once, by ``scoring.decide``. A single validation is bounded by
``settings.deadline``: whatever is known when it passes becomes the verdict, with the
DNS facts filled in and ``deadline_hit`` set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailvet.engine.facts import DnsFacts, DnsOutcome, Facts, MxHost, SmtpFacts
from mailvet.engine.lists import Lists, role_local_parts
from mailvet.engine.protocol import Checked
from mailvet.engine.scoring import decide
from mailvet.engine.syntax import (
    SyntaxPolicy,
    check_syntax,
    fast_domain,
    fast_local,
    fast_split,
)
from mailvet.engine.transcript import Transcript
from mailvet.verdict import Verdict, new_id

if TYPE_CHECKING:  # imported when first used: the offline path never loads dnspython, ssl,
    # asyncio or pydantic (the offline commands' start-up, bench/cli_offline.py)
    from mailvet.engine.dns import DnsStage
    from mailvet.engine.smtp import SmtpStage
    from mailvet.settings import Settings

__all__ = ["Checked", "Engine"]

# The verdict fields verdict_offline writes for each address, found by name in the type
# decide returns; every other field is the same for all personal (or all role) local
# parts on a domain and is copied from decide's verdict for a probe address.
_PER_ADDRESS = ("id", "email", "username", "did_you_mean")
# When a domain has no typo suggestion and these lead the verdict, in this order, the
# verdict is one concatenation: (id, email, username) + the probe's other fields.
_LEADING = ("id", "email", "username")
# Where the _PER_ADDRESS fields sit; None for the concatenation.
_Slots = tuple[int, int, int, int] | None
# verdict_offline's memo entry for a typed domain: the normalised domain for ``email`` when
# it differs from the typed one, the typo suggestion, the field values of decide's
# verdicts for a personal and a role probe address (after the _LEADING fields when
# slots is None), the verdict type, the slots, and the two probe verdicts themselves
# (offline_template hands them out). The role probe runs when the domain's first role
# address comes (None until then): most domains of a list have none.
_MemoEntry = tuple[
    str | None,
    str | None,
    tuple[object, ...],
    tuple[object, ...] | None,
    type[Verdict],
    _Slots,
    Verdict,
    Verdict | None,
]
_MEMO_SIZE = 100_000  # domains; cleared when full (the lists stage's cache does the same)
_PERSON_PROBE = "x"
_tuple_new = tuple.__new__


def _literal_host(literal: str) -> DnsFacts:
    """The mail host an address literal names (RFC 5321 4.1.3): the address itself.

    The SMTP stage applies the same private-address policy as to any MX.
    """
    ip = literal[1:-1]
    if ip[:5].lower() == "ipv6:":
        ip = ip[5:]
    else:  # RFC 5321 Snum is decimal: "010" is ten, never octal as inet_aton would read it
        ip = ".".join(str(int(octet)) for octet in ip.split("."))
    return DnsFacts(DnsOutcome.OK, (MxHost(0, literal, (ip,)),))


# per verdict type: whether it has the _PER_ADDRESS fields, whether _LEADING starts it,
# and where those fields sit (asked once per type, not once per domain)
_SHAPES: dict[type, tuple[bool, bool, tuple[int, int, int, int]]] = {}


def _shape(cls: type[Verdict]) -> tuple[bool, bool, tuple[int, int, int, int]]:
    fields = cls._fields
    if not set(_PER_ADDRESS) <= set(fields):
        return False, False, (0, 0, 0, 0)
    at_id, at_email, at_username, at_did_you_mean = (fields.index(f) for f in _PER_ADDRESS)
    leading = fields[: len(_LEADING)] == _LEADING
    return True, leading, (at_id, at_email, at_username, at_did_you_mean)


class Engine:
    """Runs the pipeline; built once per process from the settings and reused.

    Implements the ``mailvet.engine.Engine`` protocol (what the API and the batch runner
    use)."""

    def __init__(
        self,
        settings: Settings | None,
        *,
        dns: DnsStage | None = None,
        smtp: SmtpStage | None = None,
    ) -> None:
        """``settings`` None: every setting at its default, without building a
        ``Settings`` (importing pydantic) until a network stage asks for one; the
        offline commands start this way when no ``MAILVET_*`` variable is set
        (``mailvet.cli_offline``)."""
        self._settings = settings
        self._policy = SyntaxPolicy() if settings is None else SyntaxPolicy.from_settings(settings)
        self._lists = Lists(settings)
        self._memo: dict[str, _MemoEntry | tuple[()]] = {}  # () = no memo for this domain
        self._memo_get = self._memo.get
        self._is_role = self._lists.is_role
        # whether a local part is a role one (the rule verdict_offline applies; for
        # bulk writers with offline_domain)
        self.is_role = self._lists.is_role
        # probes: the shortest role local part the fast path accepts, and a personal one
        self._role_probe = min(
            (r for r in sorted(role_local_parts()) if fast_split(f"{r}@a.com")),
            key=len,
        )
        if not self._lists.is_role(self._role_probe) or self._lists.is_role(_PERSON_PROBE):
            raise AssertionError("verdict_offline probes: role list changed")  # pragma: no cover
        self._dns = dns
        self._smtp = smtp

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from mailvet.settings import default_settings

            self._settings = default_settings()
        return self._settings

    @property
    def dns(self) -> DnsStage:
        if self._dns is None:
            from mailvet.engine.dns import DnsStage

            self._dns = DnsStage(self.settings)
        return self._dns

    @property
    def smtp(self) -> SmtpStage:
        if self._smtp is None:
            from mailvet.engine.smtp import SmtpStage

            self._smtp = SmtpStage(self.settings)
        return self._smtp

    def check_offline(self, raw: str) -> Facts:
        """Syntax, lists and typo suggestion: no I/O."""
        syntax = check_syntax(raw, self._policy)
        if not syntax.ok:
            return Facts(syntax=syntax, offline=True)
        return Facts(syntax=syntax, lists=self._lists.check(syntax), offline=True)

    def verdict_offline(self, raw: str) -> Verdict:
        """``decide(self.check_offline(raw))``, memoised per domain (a fresh ``id`` each).

        Where the syntax stage's fast path accepts ``raw`` (a plain ASCII dot-atom
        address within the length limits: nearly every real one), the offline verdict
        depends on the address only through its domain, whether the local part is a
        role one, and the local part itself in ``email``, ``username`` and
        ``did_you_mean``. So the verdict is ``decide``'s own output for a probe address
        on the same domain (one for a personal, one for a role local part), with those
        three fields and the id (``_PER_ADDRESS``) written in by name, wherever they sit
        in the verdict. The verdict logic stays in ``decide``; anything else takes the
        full path. tests/unit/test_pipeline.py checks that both paths agree, for every
        field and for a verdict type with a field added anywhere.
        """
        local, _, typed_domain = raw.partition("@")
        entry = self._memo_get(typed_domain)
        if entry is None:
            entry = self._memo_entry(raw)
        # Every key of the memo passed the fast path's domain rule (it is the domain of an
        # address the fast path accepted), so the local part's rule completes it here.
        if entry and fast_local(raw, local):
            if self._is_role(local):
                if entry[3] is None:
                    entry = self._role_entry(typed_domain, entry)
                    if entry is None:
                        return decide(self.check_offline(raw))
                template = entry[3]
            else:
                template = entry[2]
            email_domain, suggestion, _, _, cls, slots, _, _ = entry
            assert template is not None
            email = raw if email_domain is None else f"{local}@{email_domain}"
            if slots is None:  # the common case, and the cheapest
                return _tuple_new(cls, (new_id(), email, local) + template)  # noqa: RUF005
            values = list(template)
            at_id, at_email, at_username, at_did_you_mean = slots
            values[at_id] = new_id()
            values[at_email] = email
            values[at_username] = local
            if suggestion is not None:
                values[at_did_you_mean] = f"{local}@{suggestion}"
            return _tuple_new(cls, values)
        return decide(self.check_offline(raw))

    def offline_template(self, raw: str) -> tuple[Verdict, str, str, str | None] | None:
        """For bulk writers: where ``verdict_offline`` answers ``raw`` from its memo,
        ``(template, email, username, did_you_mean)``; else ``None`` (call
        ``verdict_offline``).

        ``verdict_offline(raw)`` is ``template`` with a fresh ``id`` and these three
        fields written in (``_PER_ADDRESS``). ``template`` is one object for every address
        of the same typed domain and the same kind of local part (personal or role) while
        the memo keeps the domain, so a writer can cache what it derives from its other
        fields by the object's identity (check with ``is``: a cleared memo makes new
        ones). Only addresses the syntax stage's fast path accepts get one: an ASCII
        dot-atom local part and an LDH domain, so their text holds no quote, comma,
        backslash, space or control character.
        """
        local, _, typed_domain = raw.partition("@")
        entry = self._memo_get(typed_domain)
        if entry is None:
            entry = self._memo_entry(raw)
        if entry and fast_local(raw, local):
            template: Verdict | None = entry[6]
            if self._is_role(local):
                if entry[7] is None:
                    entry = self._role_entry(typed_domain, entry)
                    if entry is None:
                        return None
                template = entry[7]
            assert template is not None
            email_domain = entry[0]
            suggestion = entry[1]
            return (
                template,
                raw if email_domain is None else f"{local}@{email_domain}",
                local,
                None if suggestion is None else f"{local}@{suggestion}",
            )
        return None

    def offline_domain(self, typed_domain: str) -> tuple[Verdict, str, str | None] | None:
        """For bulk writers, per domain: ``(person, email_domain, suggestion)`` where
        ``verdict_offline`` answers the addresses on ``typed_domain`` from its memo,
        else ``None`` (call ``verdict_offline`` for each of them).

        For an address ``raw`` with local part ``local`` (the text before its first
        "@") and this domain, when ``fast_local(raw, local)`` holds and ``local`` is not
        a role one (``is_role``), ``verdict_offline(raw)`` is ``person`` with a fresh
        ``id``, ``email`` ``f"{local}@{email_domain}"``, ``username`` ``local`` and
        ``did_you_mean`` ``f"{local}@{suggestion}"`` (None without a suggestion); for a
        role local part, the same with ``offline_role(typed_domain)``; otherwise
        ``verdict_offline(raw)`` takes the full path. Only domains the syntax stage's
        fast path accepts get one (LDH, ASCII), so with a ``fast_local`` local part the
        text needs no quoting or escaping.
        """
        entry = self._memo_get(typed_domain)
        if entry is None:
            if not fast_domain(typed_domain):
                return None
            entry = self._memo_entry(f"{_PERSON_PROBE}@{typed_domain}")
        if not entry:
            return None
        email_domain, suggestion = entry[0], entry[1]
        return entry[6], typed_domain if email_domain is None else email_domain, suggestion

    def offline_role(self, typed_domain: str) -> Verdict | None:
        """``offline_domain``'s template for role local parts (the role probe runs now if
        it has not); None: role addresses on this domain take the full path."""
        entry = self._memo_get(typed_domain)
        if not entry:
            return None
        if entry[7] is None:
            entry = self._role_entry(typed_domain, entry)
        return None if entry is None else entry[7]

    def _memo_entry(self, raw: str) -> _MemoEntry | tuple[()] | None:
        """The memo entry for the domain of ``raw``, made now; ``None`` when the fast
        path does not accept ``raw`` (nothing is stored then)."""
        split = fast_split(raw)
        if split is None:
            return None
        typed_domain = split[1]
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        entry = self._probe(typed_domain) or ()
        self._memo[typed_domain] = entry
        return entry

    def _probe(self, typed_domain: str) -> _MemoEntry | None:
        """Run a personal probe address on ``typed_domain`` through the full path and
        keep what does not depend on the local part (the role probe: ``_role_entry``);
        ``None`` (the full path for every address on this domain) when the probe does
        not take the fast path or the output does not have the expected shape."""
        address = f"{_PERSON_PROBE}@{typed_domain}"
        if fast_split(address) is None:
            return None
        person = decide(self.check_offline(address))
        email_domain = person.email.partition("@")[2]
        suggestion = None
        if person.did_you_mean is not None:
            suggestion = person.did_you_mean.partition("@")[2]
        if not self._shaped(person, _PERSON_PROBE, person, email_domain, suggestion):
            return None  # pragma: no cover - defensive: decide changed shape
        email_domain_or_none = None if email_domain == typed_domain else email_domain
        cls = type(person)
        shape = _SHAPES.get(cls)
        if shape is None:
            shape = _SHAPES[cls] = _shape(cls)
        has_fields, leading, slots = shape
        if not has_fields:
            return None  # pragma: no cover - defensive: decide changed shape
        if suggestion is None and leading:
            cut = len(_LEADING)
            return (email_domain_or_none, None, person[cut:], None, cls, None, person, None)
        return (email_domain_or_none, suggestion, tuple(person), None, cls, slots, person, None)

    def _role_entry(self, typed_domain: str, entry: _MemoEntry) -> _MemoEntry | None:
        """``entry`` with the role probe's template, stored; ``None`` when the role probe
        does not fit (then every address on the domain takes the full path)."""
        email_domain_or_none, suggestion, person_values, _, cls, slots, person, _ = entry
        address = f"{self._role_probe}@{typed_domain}"
        role = None
        if fast_split(address) is not None:
            role = decide(self.check_offline(address))
        email_domain = email_domain_or_none or typed_domain
        if role is None or not self._shaped(
            role, self._role_probe, person, email_domain, suggestion
        ):
            self._memo[typed_domain] = ()
            return None
        values = role[len(_LEADING) :] if slots is None else tuple(role)
        new = (email_domain_or_none, suggestion, person_values, values, cls, slots, person, role)
        self._memo[typed_domain] = new
        return new

    @staticmethod
    def _shaped(
        verdict: Verdict, probe: str, person: Verdict, email_domain: str, suggestion: str | None
    ) -> bool:
        """Whether a probe's verdict has the fields the memo writes in where expected."""
        expected = None if suggestion is None else f"{probe}@{suggestion}"
        return (
            type(verdict) is type(person)
            and verdict.username == probe
            and verdict.domain == person.domain
            and verdict.email == f"{probe}@{email_domain}"
            and verdict.did_you_mean == expected
        )

    async def verify(
        self, raw: str, *, offline: bool = False, deadline: float | None = None
    ) -> Checked:
        """The whole pipeline for one address, within ``deadline`` seconds (default
        ``settings.deadline``); what is known by then becomes the verdict."""
        facts = self.check_offline(raw)
        if offline or not facts.syntax.ok or (facts.lists is not None and facts.lists.denied):
            return Checked(decide(facts), facts)
        transcript = Transcript()
        for note in facts.syntax.notes:  # a local part over 64 octets, a special-use name
            transcript.add("note", note)
        if facts.syntax.special_use is not None:  # takes no mail: no DNS query, no probe
            facts.transcript = transcript.entries
            return Checked(decide(facts), facts)
        facts.offline = False
        import asyncio

        limit = self.settings.deadline if deadline is None else max(0.0, deadline)
        try:
            async with asyncio.timeout(limit):
                await self._network(facts, transcript)
        except TimeoutError:
            facts.deadline_hit = True
            transcript.add("note", f"deadline of {limit:.3g} s reached")
        facts.transcript = transcript.entries
        return Checked(decide(facts), facts)

    async def _network(self, facts: Facts, transcript: Transcript) -> None:
        """DNS then SMTP; fills ``facts`` as it goes so a deadline keeps what is known."""
        syntax = facts.syntax
        assert syntax.ascii_domain is not None and syntax.domain is not None
        if syntax.ascii_domain.startswith("["):
            dns = _literal_host(syntax.ascii_domain)  # user@[192.0.2.1]: no DNS to ask
            transcript.add("note", f"address literal: mail host {dns.mx_hosts[0].addresses[0]}")
        else:
            dns = await self.dns.lookup(syntax.ascii_domain, transcript)
        facts.dns = dns
        if dns.outcome is not DnsOutcome.OK:
            return
        # by preference, then name: not the random order of equal preferences the hosts
        # are tried in, so a domain's provider does not change from one check to the next
        ranked = sorted(dns.mx_hosts, key=lambda mx: (mx.preference, mx.host))
        from mailvet.engine.providers import provider_for  # here: not an offline import

        provider = provider_for([mx.host for mx in ranked])
        facts.provider = provider.name if provider is not None else None
        # RCPT TO uses the A-label domain: every server understands it, SMTPUTF8 or not.
        rcpt = f"{syntax.local}@{syntax.ascii_domain}"

        def keep(answer: SmtpFacts) -> None:
            # the real RCPT's answer, kept if the deadline cuts the catch-all check short
            facts.smtp = answer

        facts.smtp = await self.smtp.probe(
            rcpt, syntax.ascii_domain, dns, transcript, provider=provider, on_answer=keep
        )

    async def close(self) -> None:
        if self._smtp is not None:
            await self._smtp.close()
        if self._dns is not None:
            await self._dns.close()
