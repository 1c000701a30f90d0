"""End-to-end offline benchmark: ``mailvet batch --offline`` and ``mailvet validate --offline``
over a file, against a small email-validator script over the same file, all as subprocesses.

    .venv/bin/python bench/cli_offline.py          # --n 200000,1000000 --repeats 3
    .venv/bin/python bench/cli_offline.py --instructions 100000   # + callgrind counts

Each contender is a fresh process that starts, reads the file of addresses (one a line,
bench/offline.py's generator and seed), checks every address and writes a result file:

- ``mailvet batch --offline IN -o OUT.csv`` (the input's line and the verdict's columns),
  with its default ``--jobs`` (one process on 2 CPUs; one worker per CPU but one, up to 4,
  on more) and with ``--jobs 2`` (two worker processes past the first 20,000 rows);
- ``mailvet validate --offline --json - < IN > OUT.jsonl`` (one data object a line), the same
  two ways;
- ``EV_SCRIPT`` below: email-validator 2.x ``validate_email(..., check_deliverability=False)``
  per line, a CSV row (input, valid, normalized, error) per address.

Figures are per contender the median over ``--repeats`` runs (contenders take turns in each
repeat) of the wall time and of the CPU time (user + system, from ``os.wait4``: the
process and the workers it waited for) of its process; the ratio is the median of the
per-repeat ratios email-validator / mailvet. One untimed run of each comes first (byte
code cached, as after ``pip install``; the file in the page cache). A one-address file
gives each command's start-up cost. No network: nothing here does DNS or SMTP.

On a shared host both times move with the other load; ``--instructions N`` also runs the
single-process contenders once under ``valgrind --tool=callgrind`` over N addresses and
prints the instructions each executed (the same count whatever else the host does: the
ratio of CPU work, process start included).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # as installed: byte code cached (pip compiles on install), so start-up is not compiling
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _run(argv: Sequence[str], stdin: Path | None, stdout: Path | None) -> tuple[float, float]:
    """Run ``argv``; (wall seconds, CPU seconds of the process)."""
    env = _env()
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
    batch = [py, "-m", "mailvet", "batch", "--offline", str(infile), "-o", str(work / "b.csv")]
    validate = [py, "-m", "mailvet", "validate", "--offline", "--json", "-"]
    return {
        "mailvet batch --offline": (batch, None, None),
        "mailvet batch --offline --jobs 2": ([*batch, "--jobs", "2"], None, None),
        "mailvet validate --offline --json": (validate, infile, work / "v.jsonl"),
        "mailvet validate ... --jobs 2": ([*validate, "--jobs", "2"], infile, work / "v.jsonl"),
        "email-validator script": ([py, str(ev), str(infile), str(work / "ev.csv")], None, None),
    }


def _write_list(work: Path, n: int, seed: int) -> Path:
    """bench/offline.py's mix of ``n`` addresses, one a line (0: one address)."""
    infile = work / f"in-{n}.txt"
    if n:
        addresses = generate(n, seed)
        # a line each: the generator's few addresses with a line break inside lose it
        infile.write_text(
            "".join(a.replace("\n", " ").replace("\r", " ") + "\n" for a in addresses)
        )
    else:
        infile.write_text("alice@example.com\n")
    return infile


def measure(work: Path, n: int, seed: int, repeats: int) -> None:
    infile = _write_list(work, n, seed)
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


def instructions(work: Path, n: int, seed: int) -> None:
    """Instructions each single-process contender executes over ``n`` addresses, counted
    by callgrind (process start included), and the ratios to email-validator's."""
    infile = _write_list(work, n, seed)
    counts: dict[str, int] = {}
    for name, (argv, stdin, stdout) in contenders(work, infile).items():
        if "--jobs" in argv:
            continue
        if name != "email-validator script":  # one process: callgrind counts it all
            argv = [*argv, "--jobs", "1"]
            name += " --jobs 1"
        _run(argv, stdin, stdout)  # byte code written first
        # callgrind replaces its output file: never /dev/null (it would become a file)
        dump = work / "callgrind.out"
        with open(stdin or os.devnull, "rb") as fin:
            done = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", *argv],
                stdin=fin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=_env(),
                check=True,
            )
        found = re.search(rb"Collected : (\d+)", done.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind for {name}")
        counts[name] = int(found.group(1))
    ev = counts.pop("email-validator script")
    print(f"{n:,} addresses, instructions (callgrind, process start included):")
    print(f"  {'email-validator script':<36} {ev:>15,}")
    for name, count in counts.items():
        print(f"  {name:<36} {count:>15,}   email-validator / this: {ev / count:5.1f}x")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--n", default="200000,1000000", help="file sizes, comma-separated (0: start-up only)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count instructions with callgrind over N addresses (needs valgrind)",
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(
        f"python {platform.python_version()}, email-validator {email_validator.__version__},"
        f" {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="mailvet-cli-bench-") as tmp:
        for n in [0, *(int(x) for x in args.n.split(",") if x.strip() and int(x))]:
            measure(Path(tmp), n, args.seed, args.repeats)
        if args.instructions:
            instructions(Path(tmp), args.instructions, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
