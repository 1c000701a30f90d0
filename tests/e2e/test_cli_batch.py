"""``mailvet batch FILE -o OUT`` as a user runs it: a real process on real files.

Offline: CSV columns kept, JSON lines, plain lists, stdin/stdout, bad input.
Network: the batch engine on the simulated internet (in this test process, on loopback),
the batch stored in a per-file SQLite database; a run killed with SIGKILL mid-way and
run again gives every row exactly once, and no address whose verdict was saved before
the kill is asked again (the simulator's own RCPT records say so).
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from mailvet.batchfile import MAX_LINE
from mailvet.testing import smtp as sim
from mailvet.testing.internet import sim_internet_thread

from .kit import wait_for

_TIMEOUT = 120


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILVET_")}
    env["MAILVET_ALLOWED_SPECIAL_DOMAINS"] = "test"
    return {**env, **(extra or {})}


def mailvet(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mailvet", *args],
        env=env or _env(),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=_TIMEOUT,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- offline ----


def test_offline_csv_keeps_the_columns(tmp_path: Path) -> None:
    src = tmp_path / "contacts.csv"
    src.write_text(
        'id,Full name,Email,signup\n1,"Doe, Jane",jane@gmail.com,2024-01-01\n'
        "2,Bob,bob@gmial.com,2024-02-02\n3,Eve,not-an-address,\n",
        encoding="utf-8",
    )
    out = tmp_path / "checked.csv"
    done = mailvet("batch", "--offline", str(src), "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    rows = read_csv(out)
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["Full name"] == "Doe, Jane" and rows[0]["signup"] == "2024-01-01"
    assert rows[0]["Email"] == "jane@gmail.com" and rows[0]["result"] == "unknown"
    assert rows[1]["did_you_mean"] == "bob@gmail.com"
    assert (rows[2]["result"], rows[2]["reason"]) == ("undeliverable", "invalid_format")
    assert b"3 rows" in done.stderr and b"offline" in done.stderr


def test_offline_jsonl_and_plain_lists(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"user": 1, "email": "ann@yahoo.com"}\n{"user": 2, "email": "x@y"}\n')
    out = tmp_path / "out.jsonl"
    done = mailvet("batch", "--offline", str(src), "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    objs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [o["user"] for o in objs] == [1, 2]
    assert objs[0]["mailvet_email"] == "ann@yahoo.com" and objs[0]["is_free"] is True
    assert objs[1]["reason"] == "invalid_format"

    # a plain list from stdin to stdout, as CSV
    piped = mailvet("batch", "--offline", "-", "-o", "-", stdin=b"ann@gmail.com\n\nbad@\n")
    assert piped.returncode == 0, piped.stderr.decode()
    rows = list(csv.DictReader(io.StringIO(piped.stdout.decode())))
    assert [(r["input"], r["reason"]) for r in rows] == [
        ("ann@gmail.com", "not_checked"),
        ("bad@", "invalid_format"),
    ]


def test_offline_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "latin1.txt"
    src.write_bytes(b"ann@gmail.com\nj\xf6rg@web.de\n")
    out = tmp_path / "out.csv"
    done = mailvet("batch", "--offline", str(src), "-o", str(out))
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "line 2 is not valid utf-8" in err and "--encoding" in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.csv*"))
    again = mailvet("batch", "--offline", "--encoding", "latin-1", str(src), "-o", str(out))
    assert again.returncode == 0 and read_csv(out)[1]["input"] == "jörg@web.de"
    missing = mailvet("batch", "--offline", str(tmp_path / "nope.csv"), "-o", str(out))
    assert missing.returncode == 2 and b"No such file" in missing.stderr


def test_validate_offline_json_over_a_file(tmp_path: Path) -> None:
    addresses = b"ann@gmail.com\ninfo@gmial.com\nbad@\n"
    done = mailvet("validate", "--offline", "--json", "-", stdin=addresses)
    assert done.returncode == 0, done.stderr.decode()
    got = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [d["email"] for d in got] == ["ann@gmail.com", "info@gmial.com", "bad@"]
    assert got[1]["did_you_mean"] == "info@gmail.com" and got[1]["isv_nogeneric"] is False
    assert got[2]["reason"] == "invalid_format" and len({d["id"] for d in got}) == 3


_LOADED = """
import sys
from {module} import main
try:
    main()
finally:
    sys.stderr.write("LOADED " + " ".join(sorted(sys.modules)) + "\\n")
"""


def modules_loaded(module: str, args: list[str], env: dict[str, str]) -> set[str]:
    """The modules imported by the end of a run of ``module``'s ``main()`` with ``args``
    (ann@gmail.com on stdin); the run must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", _LOADED.format(module=module), *args],
        env=env,
        input=b"ann@gmail.com\n",
        capture_output=True,
        timeout=_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr.decode()
    return set(done.stderr.decode().split("LOADED ", 1)[1].split())


def test_offline_runs_load_no_network_stack_rich_or_storage(tmp_path: Path) -> None:
    src = tmp_path / "l.txt"
    src.write_text("ann@gmail.com\n")
    for args in (
        ["batch", "--offline", str(src), "-o", str(tmp_path / "o.csv")],
        ["validate", "--offline", "--json", "-"],
    ):
        loaded = modules_loaded("mailvet.cli", args, _env())
        assert "mailvet.engine.pipeline" in loaded
        heavy = ("dns", "rich", "sqlalchemy", "mailvet.engine.smtp", "mailvet.engine.dns")
        for name in (*heavy, "mailvet.storage", "mailvet.api", "mailvet.jobs"):
            assert name not in loaded, (args[0], name)


# ---- the typer-free way in (mailvet.entry, mailvet.cli_offline) against the typer app ----

_TYPER = "import sys; from mailvet.cli import main; sys.argv[0] = 'mailvet'; main()"
_NASTY = (
    b"ann@gmail.com\r\nInfo@Gmial.com\r\n\r\n   \nbob@YAHOO.COM\n\x00@example.com\nNULL\n"
    b"a\x00b@gmail.com\n=cmd@gmail.com\n+x@gmail.com\n-x@gmail.com\n@x@gmail.com\n"
    b'"quoted"@gmail.com\n"a,b"@gmail.com\nz\xc3\xabe@b\xc3\xbccher.de\nx@shop.test\nx@localhost\n'
    b"x@[127.0.0.1]\nno-reply@mailinator.com\nsales@company.de\ta\n"
    + b"q" * 100_000
    + b"@gmail.com\n"
    + b"jane@gmail.com" * 3
    + b"\nlast@gmail.com"  # no final line break
)


def _both(
    args: list[str], env: dict[str, str], stdin: bytes | None = None, out: Path | None = None
) -> list[bytes]:
    """Status, stdout, stderr and the written file ``out`` of the command run through
    ``python -m mailvet`` and through the typer app; ids blanked (fresh each run)."""
    got: list[bytes] = []
    for argv in (["-m", "mailvet"], ["-c", _TYPER]):
        done = subprocess.run(
            [sys.executable, *argv, *args],
            env=env,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=_TIMEOUT,
        )
        written = b""
        if out is not None and out.exists():
            written = out.read_bytes()
            out.unlink()
        text = b"%d\n%s\n%s\n%s" % (done.returncode, done.stdout, done.stderr, written)
        got.append(re.sub(rb'"id":"[0-9a-f-]{36}"', b'"id":""', text))
    return got


def _lean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MAILVET_")}


def test_typer_free_way_in_gives_the_typer_apps_bytes(tmp_path: Path) -> None:
    lines = _NASTY.split(b"\n")
    csv_in = b"email;note\r\n" + b"".join(
        b'"%s";"n, %d"\r\n' % (line.replace(b'"', b'""'), i) for i, line in enumerate(lines)
    )
    files = {
        "nasty.txt": _NASTY,
        "nasty.csv": csv_in,
        "broken.txt": b"ann@gmail.com\nb\xffd@gmail.com\n",
        "huge.txt": b"ann@gmail.com\n" + b"x" * (MAX_LINE + 10) + b"\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for env in (_lean_env(), _env()):  # no MAILVET_* variable: no Settings built at all
        for name, data in files.items():
            src = str(tmp_path / name)
            for out in (tmp_path / "o.csv", tmp_path / "o.jsonl"):
                fast, typer_way = _both(["batch", "--offline", src, "-o", str(out)], env, out=out)
                assert fast == typer_way, (name, out.name)
                assert fast.startswith(b"2\n" if name in ("broken.txt", "huge.txt") else b"0\n")
            for args in (
                ["batch", "--offline", "-", "-o", "-"],
                ["validate", "--offline", "--json", "-"],
            ):
                fast, typer_way = _both(args, env, data)
                assert fast == typer_way, (name, args)
    argv = ["validate", "--json", "a@gmail.com", "--offline", "\x01x@y.com", "-"]
    fast, typer_way = _both(argv, _lean_env(), b"b@gmail.com\n")
    assert fast == typer_way and fast.count(b'"id":""') == 3
    bad = _both(["validate", "--offline", "--json", "-"], _env({"MAILVET_PORT": "x"}), b"a@b.c")
    assert bad[0] == bad[1] and bad[0].startswith(b"2\n\nerror: invalid settings: ")


def _long_list(n: int) -> bytes:
    """``n`` lines and more: personal, role, typo, disposable, upper-case, malformed and
    non-ASCII addresses, with _NASTY's lines (NUL, CRLF, a 100 kB line...) every few
    thousand: a list long enough for worker processes (batchfile.PARALLEL_AFTER)."""
    shapes = [
        "user{i}@example{d}.com",
        "Info@Company{d}.DE",
        "sales@gmial.com",
        "x{i}@mailinator.com",
        "u{i}@@gmail.com",
        "z\u00eb{i}@b\u00fccher{d}.de",
        "=cmd{i}@gmail.com",
        '"q{i}"@gmail.com',
        "first.last{i}@sub{d}.example.org",
    ]
    out = []
    for i in range(n):
        out.append(shapes[i % len(shapes)].format(i=i, d=i % 700).encode())
        if i % 5000 == 0:
            out.append(_NASTY.replace(b"last@gmail.com", b"last@gmail.com\n"))
    return b"\n".join(out) + b"\n"


_COUNT_FORKS = """
import os, sys
forks = 0
real_fork = os.fork
def counted_fork():
    global forks
    forks += 1
    return real_fork()
os.fork = counted_fork
from mailvet.entry import main
try:
    main()
finally:
    sys.stderr.write(f"FORKS {forks}\\n")
"""


def test_jobs_share_a_long_list_and_give_the_same_bytes(tmp_path: Path) -> None:
    data = _long_list(50_000)
    src = tmp_path / "long.txt"
    src.write_bytes(data)
    got: dict[tuple[str, str], bytes] = {}
    for jobs in ("1", "2", "3"):
        for name, args, stdin in (
            ("validate", ["validate", "--offline", "--json", "--jobs", jobs, "-"], data),
            ("csv", ["batch", "--offline", str(src), "-o", str(tmp_path / "o.csv")], None),
            ("jsonl", ["batch", "--offline", str(src), "-o", str(tmp_path / "o.jsonl")], None),
            ("stdout", ["batch", "--offline", "-", "-o", "-", f"--jobs={jobs}"], data),
        ):
            if name in ("csv", "jsonl"):
                args = [*args, "--jobs", jobs]
            done = subprocess.run(
                [sys.executable, "-c", _COUNT_FORKS, *args],
                env=_lean_env(),
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=_TIMEOUT,
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            err, _, forks = done.stderr.rpartition(b"FORKS ")
            # one process per job past the first rows, none with --jobs 1
            assert int(forks) == (0 if jobs == "1" else int(jobs)), (name, jobs)
            written = b""
            for out in (tmp_path / "o.csv", tmp_path / "o.jsonl"):
                if out.exists():
                    written = out.read_bytes()
                    out.unlink()
            text = b"%s\n%s\n%s" % (done.stdout, err, written)
            got[name, jobs] = re.sub(rb'"id":"[0-9a-f-]{36}"', b'"id":""', text)
            if name == "validate":  # every row has its own id
                ids = re.findall(rb'"id":"([0-9a-f-]{36})"', done.stdout)
                assert len(ids) == len(set(ids)) == done.stdout.count(b"\n") > 50_000
    for name in ("validate", "csv", "jsonl", "stdout"):
        assert got[name, "2"] == got[name, "1"], name
        assert got[name, "3"] == got[name, "1"], name
    assert b"50," in got["csv", "1"]  # the summary line counts every row


def test_jobs_give_the_same_bytes_for_csv_and_jsonl_and_a_bad_line_late_in_a_list(
    tmp_path: Path,
) -> None:
    lines = _long_list(45_000).split(b"\n")
    csv_in = tmp_path / "long.csv"
    csv_in.write_bytes(
        b"Name;E-mail;note\r\n"
        + b"".join(
            b'"n%d";"%s";"x, %d"\r\n' % (i, line.replace(b'"', b'""'), i)
            for i, line in enumerate(lines)
        )
    )
    jsonl_in = tmp_path / "long.jsonl"
    jsonl_in.write_bytes(
        b"".join(
            orjson.dumps({"id": i, "email": line.decode("utf-8", "replace"), "email_ok": None})
            + b"\n"
            for i, line in enumerate(lines)
        )
    )
    broken = b"\n".join(lines[:40_000]) + b"\nb\xffd@gmail.com\n" + b"\n".join(lines[40_000:])
    runs = {
        "csv": (["batch", "--offline", str(csv_in), "-o", "-"], None),
        "jsonl": (["batch", "--offline", str(jsonl_in), "-o", "-"], None),
        "broken validate": (["validate", "--offline", "--json", "-"], broken),
        "broken batch": (["batch", "--offline", "-", "-o", "-"], broken),
    }
    for name, (args, stdin) in runs.items():
        seen = []
        for jobs in ("1", "2"):
            done = mailvet(*args, "--jobs", jobs, env=_lean_env(), stdin=stdin)
            seen.append(
                (done.returncode, re.sub(rb'"id":"[0-9a-f-]{36}"', b"", done.stdout), done.stderr)
            )
        assert seen[0] == seen[1], name
        if name == "csv":
            assert seen[0][0] == 0 and seen[0][1].count(b"\r\n") > 45_000
        elif name == "jsonl":
            assert seen[0][0] == 0 and seen[0][1].count(b"\n") > 45_000
        else:  # every row before the bad line, then the error
            assert seen[0][0] == 2 and b"is not valid utf-8" in seen[0][2], seen[0][2]
            assert seen[0][1].count(b"\n") > 30_000


def test_jobs_through_the_typer_app_and_bad_values(tmp_path: Path) -> None:
    data = _long_list(30_000)
    for args in (
        ["validate", "--offline", "--json", "--jobs", "2", "-"],
        ["batch", "--offline", "-", "-o", "-", "--jobs", "2"],
    ):
        fast, typer_way = _both(args, _lean_env(), data)
        assert fast == typer_way and fast.startswith(b"0\n"), args
    for args in (
        ["validate", "--offline", "--json", "--jobs", "0", "-"],
        ["validate", "--offline", "--json", "--jobs", "two", "-"],
        ["batch", "--offline", "-", "-o", "-", "--jobs=-1"],
    ):
        done = mailvet(*args, stdin=b"a@gmail.com\n")
        assert done.returncode == 2 and b"--jobs" in done.stderr, args
        assert b"Traceback" not in done.stderr
    for args, says in (
        (["validate", "--jobs", "2", "a@gmail.com"], b"--jobs works with --offline --json"),
        (["batch", str(tmp_path / "x.csv"), "-o", "-", "--jobs", "2"], b"--jobs works with"),
    ):
        done = mailvet(*args)
        assert done.returncode == 2 and says in done.stderr, done.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    src = tmp_path / "long.txt"
    src.write_bytes(_long_list(80_000))
    # `| head -c N`: N past the first 20,000 rows' text (validate: ~420 bytes a row,
    # batch's CSV: ~130), so that the workers write too, and short of the end
    for args, n in (
        (["validate", "--offline", "--json", "-"], 10_000_000),
        (["batch", "--offline", "-", "-o", "-"], 4_000_000),
    ):
        for jobs in ("1", "2"):
            with (
                open(src, "rb") as stdin,
                subprocess.Popen(
                    [sys.executable, "-m", "mailvet", *args, "--jobs", jobs],
                    env=_lean_env(),
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                ) as proc,
            ):
                assert proc.stdout is not None and proc.stderr is not None
                assert len(proc.stdout.read(n)) == n
                proc.stdout.close()
                err = proc.stderr.read()
                proc.wait(timeout=_TIMEOUT)
            # what a shell reports for `yes | head`, and not a word (no traceback)
            assert (proc.returncode, err) == (141, b""), (args, jobs, err.decode())


def test_an_output_that_is_not_a_file_is_written_in_place(tmp_path: Path) -> None:
    """-o /dev/null, a FIFO ...: written to, never replaced by a renamed .part file (as
    root, `-o /dev/null` once turned /dev/null into a regular file)."""
    src = tmp_path / "list.txt"
    src.write_bytes(_long_list(30_000))
    for jobs in ("1", "2"):
        fifo = tmp_path / f"out-{jobs}.fifo"
        os.mkfifo(fifo)
        got: list[bytes] = []

        def read(path: Path = fifo, into: list[bytes] = got) -> None:
            with open(path, "rb") as reader:  # waits for a writer
                into.append(reader.read())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        argv = ["batch", "--offline", str(src), "-o", str(fifo), "--jobs", jobs]
        done = mailvet(*argv, env=_lean_env())
        assert done.returncode == 0, done.stderr.decode()
        reader.join(timeout=30)
        assert got, "nothing was written to the FIFO"
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the FIFO
        assert got[0].startswith(b"input,") and got[0].count(b"\r\n") > 30_000
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "list.txt",
            *(f"out-{j}.fifo" for j in ("1", "2") if j <= jobs),
        ]  # no .part file left beside it


def test_a_link_stays_a_link_and_closed_or_full_outputs_say_so(tmp_path: Path) -> None:
    src = tmp_path / "list.txt"
    src.write_bytes(_long_list(30_000))
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    done = mailvet("batch", "--offline", str(src), "-o", str(link), "--jobs", "2", env=_lean_env())
    assert done.returncode == 0, done.stderr.decode()
    assert link.is_symlink() and target.read_bytes().startswith(b"input,")
    # stdout closed when the command starts (cron, a daemon): workers start all the same
    out = tmp_path / "o.csv"
    argv = f"exec {sys.executable} -m mailvet batch --offline {src} -o {out} --jobs 2 >&-"
    closed = subprocess.run(["bash", "-c", argv], env=_lean_env(), capture_output=True)
    assert closed.returncode == 0, closed.stderr.decode()
    assert out.read_bytes() == target.read_bytes()
    # a full disk: a clear error, no traceback
    if Path("/dev/full").exists():
        for jobs in ("1", "2"):
            argv = f"exec {sys.executable} -m mailvet validate --offline --json --jobs {jobs}"
            with open(src, "rb") as stdin:
                full = subprocess.run(
                    ["bash", "-c", f"{argv} - > /dev/full"],
                    env=_lean_env(),
                    stdin=stdin,
                    capture_output=True,
                )
            assert full.returncode == 1, full.stderr.decode()
            assert full.stderr == b"error: writing the output: No space left on device\n"


def _children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat_file.parent.name))
    return found


def test_ctrl_c_with_workers_stops_them_all(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailvet", "batch", "--offline", "-", "-o", str(out), "--jobs", "2"],
        env=_lean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(_long_list(40_000))  # past PARALLEL_AFTER: the workers start
    proc.stdin.flush()
    wait_for(lambda: len(_children_of(proc.pid)) == 2, 60, "two workers started")
    workers = _children_of(proc.pid)
    proc.send_signal(signal.SIGINT)  # the input is still open: mid-run
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert err.strip().endswith(b"interrupted") and b"Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no partial result, no .part file left
    assert not [p for p in workers if Path(f"/proc/{p}").exists()]


def test_the_typer_free_way_in_loads_no_typer_pydantic_or_asyncio(tmp_path: Path) -> None:
    src = tmp_path / "l.txt"
    src.write_text("ann@gmail.com\n")
    for env, lean in ((_lean_env(), True), (_env(), False)):
        for args in (
            ["batch", "--offline", str(src), "-o", str(tmp_path / "o.csv")],
            ["validate", "--offline", "--json", "-"],
        ):
            loaded = modules_loaded("mailvet.entry", args, env)
            assert "mailvet.engine.pipeline" in loaded
            for name in ("typer", "click", "rich", "mailvet.cli", "mailvet.storage"):
                assert name not in loaded, (args[0], name)
            # MAILVET_* set: Settings() is built as the typer app builds it (pydantic-settings
            # imports asyncio and importlib.metadata)
            for name in ("pydantic", "mailvet.settings", "asyncio", "importlib.metadata"):
                assert (name in loaded) is not lean, (args[0], name, lean)


# ---- network: the batch engine on the simulated internet ----

N = 240
KNOWN = {f"user{i}" for i in range(N) if i % 5}


def _net_env(dns: str, port: int, state: Path, rate: int) -> dict[str, str]:
    return _env(
        {
            "MAILVET_DNS_NAMESERVERS": dns,
            "MAILVET_SMTP_PORT": str(port),
            "MAILVET_ALLOW_PRIVATE_MX": "true",
            "MAILVET_MX_MAX_SESSIONS": "2",
            "MAILVET_MX_RCPT_PER_SESSION": "50",
            "MAILVET_MX_RCPT_PER_SECOND": str(rate),
            "MAILVET_BATCH_CONNECT_TIMEOUT": "2",
            "MAILVET_BATCH_COMMAND_TIMEOUT": "2",
            "XDG_DATA_HOME": str(state),
        }
    )


def _contacts(path: Path, emails: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["n", "email", "note"])
        writer.writerows([i, e, f"row {i}, kept"] for i, e in enumerate(emails))


def _expected(email: str) -> tuple[str, str]:
    local, _, domain = email.partition("@")
    if domain.lower() != "slow.test":
        return ("undeliverable", "invalid_domain" if domain else "invalid_format")
    return (
        ("deliverable", "accepted_email") if local in KNOWN else ("undeliverable", "rejected_email")
    )


def _saved(state: Path) -> set[str]:
    """Addresses with a verdict in the stored batch (read straight from its SQLite file)."""
    found: set[str] = set()
    for db in (state / "mailvet" / "batches").glob("*.db"):
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            query = "SELECT email FROM batch_items WHERE verdict IS NOT NULL"
            found |= {row[0].lower() for row in conn.execute(query)}
        except sqlite3.OperationalError:  # not created yet
            pass
        finally:
            conn.close()
    return found


def test_network_batch_keeps_columns_and_reruns_from_the_store(tmp_path: Path) -> None:
    sites = {"slow.test": sim.mailboxes(*KNOWN, style="postfix")}
    emails = [f"user{i}@slow.test" for i in range(40)] + ["nobody@nxdomain.test", "bad@"]
    emails += ["user1@slow.test", "user2@SLOW.test"]  # repeats: checked once, written twice
    src, out = tmp_path / "list.csv", tmp_path / "out.csv"
    _contacts(src, emails)
    with sim_internet_thread(sites, {}) as (dns_server, smtp_thread):
        env = _net_env(dns_server.nameserver, smtp_thread.port, tmp_path / "state", 200)
        done = mailvet("batch", "--progress", str(src), "-o", str(out), env=env)
        assert done.returncode == 0, done.stderr.decode()
        # the progress bar (rich, on stderr): done of total, rate, counts by result
        bar = done.stderr.decode()
        assert f"{len(emails)}/{len(emails)}" in bar and "/s" in bar
        assert " deliverable 34" in bar and "undeliverable 10" in bar
        asked = smtp_thread.sim.rcpts_by_address()
        rows = read_csv(out)
        assert [r["email"] for r in rows] == emails
        assert [r["note"] for r in rows] == [f"row {i}, kept" for i in range(len(emails))]
        for row in rows:
            assert (row["result"], row["reason"]) == _expected(row["email"]), row
        assert asked["user1@slow.test"] == asked["user2@slow.test"] == 1  # asked once each
        # the same file again: the stored batch is found, nothing is asked again
        out.unlink()
        again = mailvet("batch", str(src), "-o", str(out), env=env)
        assert again.returncode == 0, again.stderr.decode()
        assert b"resuming" in again.stderr
        assert smtp_thread.sim.rcpts_by_address() == asked
        assert read_csv(out) == rows


def test_killed_mid_run_then_run_again_every_row_once(tmp_path: Path) -> None:
    sites = {"slow.test": sim.mailboxes(*KNOWN, style="postfix", latency_ms=20)}
    emails = [f"user{i}@slow.test" for i in range(N)]
    src, out, state = tmp_path / "list.csv", tmp_path / "out.csv", tmp_path / "state"
    _contacts(src, emails)
    with sim_internet_thread(sites, {}) as (dns_server, smtp_thread):
        smtp = smtp_thread.sim
        env = _net_env(dns_server.nameserver, smtp_thread.port, state, 40)
        argv = [sys.executable, "-m", "mailvet", "batch", str(src), "-o", str(out)]
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(lambda: len(_saved(state)) >= N // 4, 90, "a quarter of the verdicts saved")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()
        saved = _saved(state)
        # the simulator still answers RCPTs the killed process had pipelined: count them
        wait_for(lambda: all(x.closed for x in list(smtp.sessions)), 30, "the sessions to end")
        before = smtp.rcpts_by_address()
        assert 0 < len(saved) < N and not out.exists()

        done = mailvet("batch", str(src), "-o", str(out), env=env)
        assert done.returncode == 0, done.stderr.decode()
        after = smtp.rcpts_by_address()

    rows = read_csv(out)
    assert [r["email"] for r in rows] == emails  # every row, once, in order
    for row in rows:
        assert (row["result"], row["reason"]) == _expected(row["email"]), row
    assert all(after[e] >= 1 for e in emails)
    assert all(after[e] == before[e] for e in saved), "a saved verdict was asked again"
    twice = {e for e in emails if after[e] >= 2}
    assert twice <= {e for e in emails if before[e]}  # only what was in flight at the kill


def test_ctrl_c_saves_what_was_reached_and_a_second_run_waits_its_turn(tmp_path: Path) -> None:
    sites = {"slow.test": sim.mailboxes(*KNOWN, style="postfix", latency_ms=20)}
    emails = [f"user{i}@slow.test" for i in range(120)]
    src, out, state = tmp_path / "list.csv", tmp_path / "out.csv", tmp_path / "state"
    _contacts(src, emails)
    with sim_internet_thread(sites, {}) as (dns_server, smtp_thread):
        env = _net_env(dns_server.nameserver, smtp_thread.port, state, 40)
        argv = [sys.executable, "-m", "mailvet", "batch", str(src), "-o", str(out)]
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: len(_saved(state)) >= 10, 90, "some verdicts saved")
        # a second run on the same file while the first works: refused, nothing touched
        second = mailvet("batch", str(src), "-o", str(tmp_path / "other.csv"), env=env)
        assert second.returncode == 1
        assert f"another mailvet batch is working on {src}".encode() in second.stderr
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err.decode()
        assert b"interrupted; run the same command again to resume" in err
        assert b"Traceback" not in err and not out.exists()
        saved = _saved(state)
        assert 10 <= len(saved) < len(emails)
        before = smtp_thread.sim.rcpts_by_address()
        done = mailvet("batch", str(src), "-o", str(out), env=env)
        assert done.returncode == 0, done.stderr.decode()
        after = smtp_thread.sim.rcpts_by_address()
    assert [r["email"] for r in read_csv(out)] == emails
    assert all(after[e] == before[e] for e in saved)
