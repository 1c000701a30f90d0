"""Offline pipeline benchmark: mailvet's syntax + lists + typo + verdict vs email-validator.

    .venv/bin/python bench/offline.py [--n 200000] [--repeats 5] [--seed 20261122]

Generates a seeded, realistic list of addresses (big free providers, company domains,
typo domains, disposable domains, malformed input), then times, over the same list:

- ``Engine(settings).verdict_offline`` (the full offline pipeline, a ``Verdict`` each);
- ``Engine.check_offline`` (the same stages, stopping at the facts: no ``Verdict``);
- ``check_syntax`` alone, and its slow path alone (what the regex fast path buys);
- email-validator 2.x ``validate_email(addr, check_deliverability=False)``.

Each figure is the median of ``--repeats`` passes over the whole list, in addresses per
CPU second of this process (``time.process_time``), the contenders taking turns within
each repeat; the ratio is the median of the per-repeat ratios. The per-domain caches
of the lists stage are warmed by one untimed pass first, as in a running server. Also
prints how both validators score on the is_email conformance suite in their default
modes. No network: nothing here does DNS or SMTP.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import email_validator
from email_validator import EmailNotValidError, validate_email

from mailvet.engine.syntax import DEFAULT_POLICY, SyntaxPolicy, _slow, check_syntax
from mailvet.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ISEMAIL = REPO.parent / "shared" / "conformance" / "isemail" / "cases.jsonl"

FREE = [
    ("gmail.com", 30),
    ("yahoo.com", 9),
    ("outlook.com", 5),
    ("hotmail.com", 6),
    ("icloud.com", 3),
    ("aol.com", 1.5),
    ("live.com", 1),
    ("msn.com", 0.5),
    ("protonmail.com", 0.5),
    ("gmx.de", 0.5),
    ("web.de", 0.5),
    ("yahoo.co.uk", 0.5),
    ("hotmail.co.uk", 0.3),
    ("mail.ru", 0.4),
    ("yandex.ru", 0.3),
    ("qq.com", 0.3),
    ("orange.fr", 0.2),
    ("comcast.net", 0.2),
]
TYPOS = [
    "gmial.com",
    "gmai.com",
    "gnail.com",
    "gmail.con",
    "gmail.co",
    "gamil.com",
    "hotmial.com",
    "hotmai.com",
    "hotmail.con",
    "yaho.com",
    "yahooo.com",
    "yahoo.con",
    "outlok.com",
    "outloo.com",
    "iclod.com",
    "icloud.co",
]
MALFORMED = [
    "{l}",
    "{l}@",
    "@{d}",
    "{l}@@{d}",
    "{l}@{d}.",
    "{l}..x@{d}",
    ".{l}@{d}",
    "{l} @{d}",
    " {l}@{d}",
    "{l}@{d} ",
    "{l}@{d},",
    "{l}@{d};{l}@{d}",
    "{l}(at){d}",
    "{l}@-{d}",
    "{l}@{d}_x.com",
    "<{l}@{d}>",
    '"{l}"@{d}',
    "{l}@[127.0.0.1]",
    "{l}@localhost",
    "{l}@{d}\n",
    "NULL",
    "null",
    "",
    "{l}@gmail",
    "{l}\\@{d}",
]
FIRST = (
    "james mary john patricia robert jennifer michael linda william elizabeth david "
    "barbara richard susan joseph jessica thomas sarah charles karen maria anna lukas "
    "sophie mohammed fatima wei li yuki hiro olga ivan pierre camille jose lucia"
).split()
LAST = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez "
    "hernandez lopez gonzalez wilson anderson thomas taylor moore jackson martin lee "
    "muller schmidt dubois rossi tanaka wang kim novak ivanov silva oconnor"
).split()
SYLLABLES = "ac me bri ght lo gix ter ra nova tech sys data cloud soft ware net ly io ze".split()
COMPANY_TLDS = [
    ("com", 55),
    ("io", 6),
    ("co", 4),
    ("net", 5),
    ("org", 5),
    ("de", 6),
    ("co.uk", 5),
    ("fr", 3),
    ("nl", 2),
    ("com.au", 2),
    ("ca", 2),
    ("ai", 2),
    ("app", 1),
    ("tech", 1),
    ("eu", 1),
]
IDN_COMPANIES = ["münchen-bau.de", "bücher.de", "café-paris.fr", "例子.中国", "straße.at"]


def _weighted(rng: random.Random, pairs: Sequence[tuple[str, float]]) -> str:
    return rng.choices([p for p, _ in pairs], weights=[w for _, w in pairs])[0]


def _local(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    shape = rng.random()
    if shape < 0.30:
        local = f"{first}.{last}"
    elif shape < 0.45:
        local = f"{first}{last}{rng.randint(1, 99)}"
    elif shape < 0.55:
        local = f"{first[0]}{last}"
    elif shape < 0.65:
        local = f"{first}_{last}{rng.randint(1960, 2010)}"
    elif shape < 0.72:
        local = f"{first}{rng.randint(1, 9999)}"
    elif shape < 0.78:
        local = f"{first}.{last}+{rng.choice(['news', 'shop', 'x', 'promo'])}"
    elif shape < 0.85:
        local = "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(5, 14)))
    elif shape < 0.90:
        local = rng.choice(["info", "admin", "sales", "contact", "support", "hello", "office"])
    elif shape < 0.995:
        local = f"{first}-{last}"
    else:
        local = rng.choice(["jörg", "josé.garcía", "zoë", "françois"])  # SMTPUTF8: rare
    if rng.random() < 0.05:
        local = local.capitalize()
    return local


def _company_domains(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        name = "".join(rng.choices(SYLLABLES, k=rng.randint(2, 3)))
        if rng.random() < 0.1:
            name += "-" + rng.choice(["group", "labs", "partners", "consulting", "gmbh"])
        domain = f"{name}.{_weighted(rng, COMPANY_TLDS)}"
        if rng.random() < 0.05:
            domain = f"mail.{domain}"
        if rng.random() < 0.03:
            domain = domain.upper()
        out.append(domain)
    return out


def generate(n: int, seed: int) -> list[str]:
    """``n`` addresses: 60% free providers, 30% company, 5% typo, 3% disposable, 2% bad."""
    import disposable_email_domains

    rng = random.Random(seed)
    companies = _company_domains(rng, 5_000) + IDN_COMPANIES
    disposable = ["mailinator.com", *rng.sample(sorted(disposable_email_domains.blocklist), 300)]
    out: list[str] = []
    for _ in range(n):
        bucket = rng.random()
        local = _local(rng)
        if bucket < 0.60:
            domain = _weighted(rng, FREE)
            if rng.random() < 0.02:
                domain = domain.capitalize()
        elif bucket < 0.90:
            domain = rng.choice(companies)
        elif bucket < 0.95:
            domain = rng.choice(TYPOS)
        elif bucket < 0.98:
            domain = rng.choice(disposable)
        else:
            shape = rng.choice(MALFORMED)
            out.append(shape.format(l=local, d=_weighted(rng, FREE)))
            continue
        out.append(f"{local}@{domain}")
    rng.shuffle(out)
    return out


def _pass(fn: Callable[[str], object], addresses: Sequence[str]) -> float:
    """Addresses per CPU second for one pass (CPU time: other load on the host does
    not count against either side)."""
    start = time.process_time()
    for address in addresses:
        fn(address)
    return len(addresses) / (time.process_time() - start)


def measure(
    contenders: dict[str, Callable[[str], object]], addresses: Sequence[str], repeats: int
) -> dict[str, list[float]]:
    """Rates per pass; the contenders take turns within each repeat, so a slow spell
    on the host hits all of them alike."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            rates[name].append(_pass(fn, addresses))
    return rates


def _ev(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _pipeline(
    settings: Settings,
) -> tuple[Callable[[str], object], Callable[[str], object], str]:
    """``Engine.verdict_offline`` and ``check_offline`` (the stages without the verdict);
    until the pipeline imports, the same stages by hand."""
    try:
        from mailvet.engine.pipeline import Engine
    except ImportError as exc:  # the lead's pipeline not there yet
        from mailvet.engine.facts import Facts
        from mailvet.engine.lists import Lists
        from mailvet.engine.scoring import decide

        lists = Lists(settings)
        policy = SyntaxPolicy.from_settings(settings)

        def facts_by_hand(raw: str) -> Facts:
            syntax = check_syntax(raw, policy)
            if not syntax.ok:
                return Facts(syntax=syntax, offline=True)
            return Facts(syntax=syntax, lists=lists.check(syntax), offline=True)

        def by_hand(raw: str) -> object:
            return decide(facts_by_hand(raw))

        return by_hand, facts_by_hand, f"syntax + Lists.check + decide by hand ({exc})"
    engine = Engine(settings)
    return engine.verdict_offline, engine.check_offline, "Engine(settings).verdict_offline"


def _ev_permissive(address: str) -> bool:
    try:
        validate_email(
            address,
            check_deliverability=False,
            allow_quoted_local=True,
            allow_domain_literal=True,
            globally_deliverable=False,
        )
    except EmailNotValidError:
        return False
    return True


PERMISSIVE = SyntaxPolicy(
    allow_quoted_local=True, allow_address_literal=True, allow_single_label_domain=True
)


def conformance() -> dict[str, tuple[int, int]]:
    """Rows of the is_email suite where each validator agrees with the suite's ``valid``."""
    rows = [json.loads(line) for line in ISEMAIL.read_text("utf-8").splitlines() if line]

    def score(accepts: Callable[[str], bool]) -> tuple[int, int]:
        return sum(accepts(r["address"]) == r["valid"] for r in rows), len(rows)

    return {
        "mailvet, default policy": score(lambda a: check_syntax(a).ok),
        "email-validator, defaults": score(_ev),
        "mailvet, everything allowed": score(lambda a: check_syntax(a, PERMISSIVE).ok),
        "email-validator, everything allowed": score(_ev_permissive),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=200_000, help="addresses to generate")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the median is kept")
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args(argv)

    addresses = generate(args.n, args.seed)
    settings = Settings()
    pipeline, facts_only, label = _pipeline(settings)
    accepted = sum(check_syntax(a).ok for a in addresses)
    for address in addresses:  # warm-up: per-domain caches, typo index, imports
        pipeline(address)
    for address in addresses[:1000]:
        _ev(address)
    print(
        f"python {platform.python_version()} on {platform.machine()}, "
        f"email-validator {email_validator.__version__}"
    )
    print(f"{len(addresses)} addresses (seed {args.seed}), {accepted} pass syntax")
    print(f"pipeline under test: {label}")
    print(f"median of {args.repeats} passes each:")

    rates = measure(
        {
            "mailvet offline pipeline": pipeline,
            "mailvet check_offline (no Verdict)": facts_only,
            "mailvet check_syntax": check_syntax,
            "mailvet syntax, slow path only": lambda a: _slow(a, DEFAULT_POLICY),
            "email-validator validate_email": _ev,
        },
        addresses,
        args.repeats,
    )
    median = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in median.items():
        print(f"  {name:<36}{rate:>12,.0f} addresses/s")
    ev = rates["email-validator validate_email"]
    for name in list(rates)[:-1]:
        paired = statistics.median(a / b for a, b in zip(rates[name], ev, strict=True))
        print(f"  ratio {name} / email-validator: {paired:.1f}x (median of paired passes)")

    print("is_email suite, rows agreeing with the suite's `valid`:")
    for name, (agree, total) in conformance().items():
        print(f"  {name:<36}{agree:>4}/{total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
