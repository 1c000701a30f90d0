#!/usr/bin/env python3
"""Refresh the vendored list data of the lists stage (see docs/LISTS.md).

- Free providers: ``npm pack free-email-domains@VERSION`` (npm, no install, no scripts
  run), read its ``domains.json`` and rewrite ``src/mailvet/engine/data/free_domains.txt``
  with a header recording package, version and date. Prints what changed.
- Disposable domains come from the ``disposable-email-domains`` PyPI package, pinned in
  pyproject.toml: this script only reports the installed version; to update, bump the
  pin and reinstall (instructions are printed).
- Lists the listed domains the typo suggester would correct, to review against
  ``LISTED_TYPOS`` in tests/unit/test_typo.py (a new typo-squat, or a real provider to
  mark ``not-a-typo`` in data/popular_domains.txt).

Usage::

    .venv/bin/python scripts/refresh_lists.py                    # the pinned version
    .venv/bin/python scripts/refresh_lists.py --version latest   # newest on npm
    .venv/bin/python scripts/refresh_lists.py --dry-run          # show, do not write
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "mailvet" / "engine" / "data"
FREE_FILE = DATA / "free_domains.txt"
FREE_PACKAGE = "free-email-domains"
FREE_URL = "https://github.com/Kikobeats/free-email-domains"
DISPOSABLE_PACKAGE = "disposable-email-domains"


def current_free_version() -> str:
    header = FREE_FILE.read_text("utf-8").splitlines()[0].split()
    return header[2] if len(header) > 2 and header[1] == FREE_PACKAGE else "1.12.6"


def read_domains(path: Path) -> set[str]:
    out: set[str] = set()
    for raw in path.read_text("utf-8").splitlines():
        line = raw.split("#", 1)[0].strip().lower()
        if line:
            out.add(line)
    return out


def npm_pack(version: str) -> tuple[str, set[str]]:
    """(exact version, domains) of free-email-domains@version, via ``npm pack``."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is not installed: it is needed to fetch the free-email-domains package")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [npm, "pack", f"{FREE_PACKAGE}@{version}", "--json", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.exit(f"npm pack failed:\n{done.stderr.strip()}")
        packed = json.loads(done.stdout)[0]
        with tarfile.open(Path(tmp) / packed["filename"]) as tar:
            member = tar.extractfile("package/domains.json")
            if member is None:
                sys.exit("the package has no package/domains.json")
            data = json.load(member)
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        sys.exit("package/domains.json is not a list of strings")
    domains = {d.strip().lower().rstrip(".") for d in data if d.strip()}
    return str(packed["version"]), domains


def write_free(version: str, domains: set[str]) -> None:
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    lines = [
        f"# {FREE_PACKAGE} {version} (npm, MIT, {FREE_URL}) vendored {today};"
        f" {len(domains)} domains",
        "# Regenerate with scripts/refresh_lists.py; do not edit by hand. Domains that the",
        "# disposable-email-domains package lists are subtracted at load time (see docs/LISTS.md).",
        *sorted(domains),
    ]
    FREE_FILE.write_text("\n".join(lines) + "\n", "utf-8")


def pinned_disposable() -> str | None:
    text = (ROOT / "pyproject.toml").read_text("utf-8")
    m = re.search(rf'"{DISPOSABLE_PACKAGE}==([^"]+)"', text)
    return m.group(1) if m else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--version",
        default=None,
        help=f"{FREE_PACKAGE} version to vendor (default: the one vendored now; 'latest')",
    )
    parser.add_argument("--dry-run", action="store_true", help="report only, write nothing")
    args = parser.parse_args(argv)

    old_version = current_free_version()
    old = read_domains(FREE_FILE)
    version, new = npm_pack(args.version or old_version)
    added, removed = new - old, old - new
    print(f"{FREE_PACKAGE}: {old_version} ({len(old)} domains) -> {version} ({len(new)} domains)")
    print(f"  added {len(added)}, removed {len(removed)}, unchanged {len(old & new)}")
    for label, items in (("added", added), ("removed", removed)):
        sample = sorted(items)[:10]
        if sample:
            more = f" ... (+{len(items) - len(sample)})" if len(items) > len(sample) else ""
            print(f"  {label}: {', '.join(sample)}{more}")

    sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
    from mailvet.engine.lists import disposable_domains

    disposable = disposable_domains()
    print(
        f"  {len(new & disposable)} of them are on the disposable list and are subtracted"
        f" at load time: {len(new - disposable)} free providers"
    )

    installed = importlib.metadata.version(DISPOSABLE_PACKAGE)
    pinned = pinned_disposable()
    print(
        f"{DISPOSABLE_PACKAGE}: installed {installed}, pinned {pinned}: {len(disposable)} domains"
    )
    print(
        f"  to update it: bump '{DISPOSABLE_PACKAGE}==...' in pyproject.toml to the newest"
        f" release (https://pypi.org/project/{DISPOSABLE_PACKAGE}/),\n"
        "  then `.venv/bin/pip install -e '.[dev]'` and rerun this script and the tests."
    )

    if args.dry_run:
        print("dry run: nothing written")
    elif new == old and version == old_version:
        print(f"{FREE_FILE.relative_to(ROOT)} is up to date")
    else:
        write_free(version, new)
        print(f"wrote {FREE_FILE.relative_to(ROOT)}")

    from mailvet.engine.typo import suggest_domain

    typos = [(d, s) for d in sorted(new | disposable) if (s := suggest_domain(d)) is not None]
    print(f"listed domains the typo suggester corrects ({len(typos)}; review against")
    print("  LISTED_TYPOS in tests/unit/test_typo.py):")
    for domain, suggestion in typos:
        print(f"  {domain} -> {suggestion}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
