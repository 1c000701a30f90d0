"""End-to-end offline benchmark: ``mailvet batch --offline`` and ``mailvet validate --offline``
over a file, against a small email-validator script over the same file, all as subprocesses.

    .venv/bin/python bench/cli_offline.py          # --n 200000,1000000 --repeats 3

Each contender is a fresh process that starts, reads the file of addresses (one a line,
bench/offline.py's generator and seed), checks every address and writes a result file:

- ``mailvet batch --offline IN -o OUT.csv`` (the input's line and the verdict's columns);
- ``mailvet validate --offline --json - < IN > OUT.jsonl`` (one data object a line);
- ``EV_SCRIPT`` below: email-validator 2.x ``validate_email(..., check_deliverability=False)``
  per line, a CSV row (input, valid, normalized, error) per address.

Figures are per contender the median over ``--repeats`` runs (contenders take turns in each
repeat) of the wall time and of the CPU time (user + system, from ``os.wait4``) of its
process; the ratio is the median of the per-repeat ratios email-validator / mailvet. CPU
time is the steadier figure on a shared host. One untimed run of each comes first (byte
code cached, as after ``pip install``; the file in the page cache). A one-address file
gives each command's start-up cost. No network: nothing here does DNS or SMTP.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import email_validator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offline import generate

REPO = Path(__file__).resolve().parents[1]

EV_SCRIPT = """\
import csv, sys
from email_validator import EmailNotValidError, validate_email

with open(sys.argv[1], encoding="utf-8") as src, open(sys.argv[2], "w", encoding="utf-8") as dst:
    out = csv.writer(dst)
    out.writerow(["input", "valid", "normalized", "error"])
    for line in src:
        address = line.strip()
        if not address:
            continue
        try:
            found = validate_email(address, check_deliverability=False)
            out.writerow([address, "true", found.normalized, ""])
        except EmailNotValidError as exc:
            out.writerow([address, "false", "", str(exc)])
"""


def _run(argv: Sequence[str], stdin: Path | None, stdout: Path | None) -> tuple[float, float]:
    """Run ``argv``; (wall seconds, CPU seconds of the process)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # as installed: byte code cached (pip compiles on install), so start-up is not compiling
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with (
        open(stdin or os.devnull, "rb") as fin,
        open(stdout or os.devnull, "wb") as fout,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        err = proc.stderr.read() if proc.stderr else b""
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def contenders(work: Path, infile: Path) -> dict[str, tuple[list[str], Path | None, Path | None]]:
    py = sys.executable
    ev = work / "ev.py"
    ev.write_text(EV_SCRIPT)
    return {
        "mailvet batch --offline": (
            [py, "-m", "mailvet", "batch", "--offline", str(infile), "-o", str(work / "b.csv")],
            None,
            None,
        ),
        "mailvet validate --offline --json": (
            [py, "-m", "mailvet", "validate", "--offline", "--json", "-"],
            infile,
            work / "v.jsonl",
        ),
        "email-validator script": ([py, str(ev), str(infile), str(work / "ev.csv")], None, None),
    }


def measure(work: Path, n: int, seed: int, repeats: int) -> None:
    infile = work / f"in-{n}.txt"
    if n:
        addresses = generate(n, seed)
        # a line each: the generator's few addresses with a line break inside lose it
        infile.write_text(
            "".join(a.replace("\n", " ").replace("\r", " ") + "\n" for a in addresses)
        )
    else:
        infile.write_text("alice@example.com\n")
    runs = contenders(work, infile)
    for argv, stdin, stdout in runs.values():  # untimed: byte code written, files cached
        _run(argv, stdin, stdout)
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (argv, stdin, stdout) in runs.items():
            wall, cpu = _run(argv, stdin, stdout)
            walls[name].append(wall)
            cpus[name].append(cpu)
    label = f"{n:,} addresses" if n else "1 address (start-up)"
    print(f"{label}, median of {repeats}:")
    ev = "email-validator script"
    for name in runs:
        line = f"  {name:<36} wall {statistics.median(walls[name]):7.3f} s"
        line += f"   cpu {statistics.median(cpus[name]):7.3f} s"
        if name != ev:
            by_wall = statistics.median(e / m for e, m in zip(walls[ev], walls[name], strict=True))
            by_cpu = statistics.median(e / m for e, m in zip(cpus[ev], cpus[name], strict=True))
            line += f"   email-validator / this: {by_wall:5.1f}x wall, {by_cpu:5.1f}x cpu"
        print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--n", default="200000,1000000", help="file sizes, comma-separated (0: start-up only)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(
        f"python {platform.python_version()}, email-validator {email_validator.__version__},"
        f" {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="mailvet-cli-bench-") as tmp:
        for n in [0, *(int(x) for x in args.n.split(",") if x.strip())]:
            measure(Path(tmp), n, args.seed, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
