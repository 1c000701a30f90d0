"""The offline bulk commands, run without typer or pydantic (``mailvet.entry``).

``mailvet validate --offline --json ADDRESS|-...`` and ``mailvet batch --offline FILE -o
OUT`` over a file are measured end to end, process start included (bench/cli_offline.py;
docs/BENCHMARKS.md, "Command line, offline, end to end"). Building the typer app (typer,
click: ~0.04 s) and ``Settings`` (pydantic and pydantic-settings: ~0.14 s) cost more than
checking 50,000 addresses, and neither is needed to run these two commands.

``mailvet.entry.main`` reads the command line first. When it is one of these two
commands, spelled only with options this module knows (``parse``), it runs it with the
functions here; any other command line, any option or spelling it does not know
(``--help``, ``--no-offline``, ``--``, an option given twice ...) and shell completion
go to the typer app (``mailvet.cli``), which gives the same result with its own
messages. The settings: with no ``MAILVET_*`` variable in the environment, ``Settings()``
would be every default, so none is built (``Engine(None)``); otherwise ``Settings()`` is
built as the typer app does (the same variables, the same validation, the same error).

The commands' bodies live here and the typer app calls them too (``run_validate_json``,
``run_batch_offline``): one implementation whichever way the command came in.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mailvet.batchfile import InputFile, OutputFile
    from mailvet.settings import Settings

__all__ = [
    "MAX_JOBS",
    "RESULT_STYLE",
    "BatchArgs",
    "BatchJob",
    "CommandError",
    "Progress",
    "ValidateJob",
    "batch_option_error",
    "load_settings",
    "open_files",
    "parse",
    "run_batch_offline",
    "run_validate_json",
    "say",
    "summary",
]

RESULT_STYLE = {
    "deliverable": "green",
    "undeliverable": "red",
    "risky": "yellow",
    "unknown": "blue",
}


class CommandError(Exception):
    """A command ends with ``message`` on stderr (none if empty) and exit status
    ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --jobs at most (each worker holds 4 pipes and a process)
MAX_JOBS = 64

# The exit status of a command whose reader went away (``mailvet ... | head``): what a
# shell reports for a process SIGPIPE ended, as `yes | head` does; said quietly.
_READER_GONE = 141


def _reader_gone() -> CommandError:
    """Stdout's reader closed the pipe: point stdout at /dev/null (so that Python's
    last flush does not fail again) and end quietly."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout
        pass
    return CommandError(_READER_GONE, "")


def say(message: str) -> None:
    """A line on stderr (what ``typer.echo(message, err=True)`` writes)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# ---- the command line --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidateJob:
    """``mailvet validate --offline --json ADDRESS...`` (``-``: stdin); ``jobs`` None:
    not given."""

    addresses: list[str]
    jobs: int | None = None


@dataclass(frozen=True, slots=True)
class BatchArgs:
    file: str
    output: str
    out_format: str | None
    input_format: str | None
    column: str | None
    encoding: str
    delimiter: str | None
    show: bool
    state_dir: Path | None
    jobs: int | None = None  # worker processes for --offline (None: default_jobs())


@dataclass(frozen=True, slots=True)
class BatchJob:
    """``mailvet batch --offline FILE -o OUT [options]``; ``progress`` None: not given."""

    file: str
    output: str
    out_format: str | None
    input_format: str | None
    column: str | None
    encoding: str
    delimiter: str | None
    progress: bool | None
    state_dir: Path | None
    jobs: int | None = None


# ``mailvet batch``'s options that take a value (the typer command's, by their names)
_BATCH_VALUES = {
    "--output": "output",
    "-o": "output",
    "--format": "out_format",
    "--input-format": "input_format",
    "--column": "column",
    "--encoding": "encoding",
    "--delimiter": "delimiter",
    "--state-dir": "state_dir",
    "--jobs": "jobs",
}
_BATCH_FLAGS = {"--offline": ("offline", True), "--progress": ("progress", True)}
_BATCH_FLAGS["--no-progress"] = ("progress", False)


def _is_argument(token: str) -> bool:
    """What click takes as an argument rather than an option."""
    return token == "-" or not token.startswith("-")


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> ValidateJob | BatchJob | None:
    """The job ``argv`` (without the program name) asks for, when this module runs it;
    ``None`` for everything else (the typer app's), including anything unusual."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in environ):
        return None  # click's shell completion
    if not argv:
        return None
    command, rest = argv[0], argv[1:]
    if command == "validate":
        return _parse_validate(rest)
    if command == "batch":
        return _parse_batch(rest)
    return None


def _jobs(value: str | None) -> int | Literal[False] | None:
    """``--jobs``'s value; False when it is not a whole number >= 1 (the typer app
    says so)."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_JOBS:
        return False
    return int(value)


def _parse_validate(rest: Sequence[str]) -> ValidateJob | None:
    addresses: list[str] = []
    seen: set[str] = set()
    jobs: str | None = None
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if _is_argument(token):
            addresses.append(token)
        elif token in ("--offline", "--json"):
            seen.add(token)
        elif token.startswith("--jobs") and jobs is None:
            name, eq, value = token.partition("=")
            if name != "--jobs":
                return None
            if not eq:
                if i >= len(rest):
                    return None
                value = rest[i]
                i += 1
            jobs = value
        else:
            return None
    n = _jobs(jobs)
    if len(seen) != 2 or not addresses or n is False:
        return None
    return ValidateJob(addresses, n)


def _parse_batch(rest: Sequence[str]) -> BatchJob | None:
    values: dict[str, str] = {}
    flags: dict[str, bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(rest):
        token = rest[i]
        i += 1
        if _is_argument(token):
            positional.append(token)
            continue
        if token.startswith("--"):
            name, eq, value = token.partition("=")
        elif token.startswith("-o") and len(token) > 2:  # -oOUT
            name, eq, value = "-o", "=", token[2:]
        else:
            name, eq, value = token, "", ""
        if name in _BATCH_FLAGS and not eq:
            flag, on = _BATCH_FLAGS[name]
            flags[flag] = on
            continue
        key = _BATCH_VALUES.get(name)
        if key is None or key in values:
            return None  # unknown, or given twice
        if not eq:
            if i >= len(rest):
                return None
            value = rest[i]
            i += 1
        if not _is_argument(value):
            return None
        values[key] = value
    jobs = _jobs(values.get("jobs"))
    if not flags.get("offline") or len(positional) != 1 or "output" not in values:
        return None
    if jobs is False:
        return None
    state = values.get("state_dir")
    return BatchJob(
        file=positional[0],
        output=values["output"],
        out_format=values.get("out_format"),
        input_format=values.get("input_format"),
        column=values.get("column"),
        encoding=values.get("encoding", "utf-8"),
        delimiter=values.get("delimiter"),
        progress=flags.get("progress"),
        state_dir=None if state is None else Path(state),
        jobs=jobs,
    )


def load_settings(environ: Mapping[str, str]) -> Settings | None:
    """``None`` (every default) when no ``MAILVET_*`` variable is set (pydantic-settings
    reads their names in any case), else ``Settings()``; a bad value is a
    ``CommandError``, as the typer app says it."""
    if not any(k.upper().startswith("MAILVET_") for k in environ):
        return None
    from mailvet.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # a bad MAILVET_* value: say which, no traceback
        raise CommandError(2, f"error: invalid settings: {exc}") from exc


# ---- mailvet validate --offline --json ---------------------------------------------


def _address_blocks(args: list[str]) -> Iterator[list[str]]:
    """The addresses, a block at a time, stdin read in blocks of bytes (the bulk path)."""
    from mailvet.batchfile import open_input

    for arg in args:
        if arg == "-":
            with open_input("-", fmt="plain") as source:
                yield from source.plain_blocks()
        else:
            yield [arg]


def run_validate_json(
    settings: Settings | None, addresses: list[str], jobs: int | None = None
) -> None:
    """One JSON data object a line on stdout: no event loop, no rich, rows written in
    blocks, a long input checked in ``jobs`` processes (None: ``default_jobs()``).
    Raises ``CommandError`` for input that cannot be read."""
    from mailvet.batchfile import BatchFileError, write_validate_json
    from mailvet.engine.pipeline import Engine
    from mailvet.parallel import WorkerDied, default_jobs

    out = sys.stdout.buffer
    try:
        write_validate_json(
            Engine(settings),
            _address_blocks(addresses),
            out,
            jobs=default_jobs() if jobs is None else jobs,
        )
        out.flush()
    except BatchFileError as exc:
        _flush(out)
        raise CommandError(2, f"error: {exc}") from exc
    except WorkerDied as exc:
        _flush(out)
        raise CommandError(1, f"error: {exc}") from exc
    except BrokenPipeError:
        raise _reader_gone() from None
    except OSError as exc:  # the output: a full disk, a file size limit ...
        raise CommandError(1, f"error: writing the output: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise CommandError(130, "interrupted") from None


def _flush(out: IO[bytes]) -> None:
    """What was written before an error, out (unless the reader is gone too)."""
    try:
        out.flush()
    except BrokenPipeError:
        raise _reader_gone() from None


# ---- mailvet batch --offline ---------------------------------------------------------


def batch_option_error(input_format: str | None, delimiter: str | None) -> str | None:
    """What is wrong with ``batch``'s --input-format / --delimiter, if anything."""
    if input_format is not None and input_format not in ("csv", "jsonl", "plain"):
        return "error: --input-format must be csv, jsonl or plain"
    if delimiter is not None and len(delimiter) != 1:
        return "error: --delimiter must be one character"
    return None


def open_files(args: BatchArgs) -> tuple[InputFile, OutputFile]:
    from mailvet.batchfile import INPUT_FORMATS, OutputFile, open_input, output_format

    source = open_input(
        args.file,
        fmt=INPUT_FORMATS.get(args.input_format or ""),
        column=args.column,
        encoding=args.encoding,
        delimiter=args.delimiter,
    )
    try:
        out = OutputFile(
            args.output, output_format(args.output, args.out_format, source.fmt), source
        )
    except BaseException:
        source.close()
        raise
    return source, out


def run_batch_offline(settings: Settings | None, args: BatchArgs) -> None:
    """Every row of the file with its offline verdict into OUT, then the summary line
    on stderr. Raises ``CommandError`` with the message and status to end with."""
    from mailvet.batchfile import BatchFileError, run_offline
    from mailvet.engine.pipeline import Engine
    from mailvet.parallel import WorkerDied, default_jobs

    problem = batch_option_error(args.input_format, args.delimiter)
    if problem is not None:
        raise CommandError(2, problem)
    try:
        engine = Engine(settings)
        source, out = open_files(args)
        bar = Progress(None, "offline") if args.show else None
        try:
            with source:
                counts = run_offline(
                    engine,
                    source,
                    out,
                    bar.update if bar else None,
                    jobs=default_jobs() if args.jobs is None else args.jobs,
                )
            out.commit()
        except BaseException:
            out.discard()
            raise
        finally:
            if bar is not None:
                bar.stop()
    except BatchFileError as exc:
        raise CommandError(2, f"error: {exc}") from exc
    except WorkerDied as exc:
        raise CommandError(1, f"error: {exc}") from exc
    except BrokenPipeError as exc:
        if args.output != "-":
            raise CommandError(2, f"error: {exc.strerror}: {args.output}") from exc
        raise _reader_gone() from None
    except OSError as exc:  # with no file name: writing the output (reads seldom fail)
        where = exc.filename or args.output
        raise CommandError(2, f"error: {exc.strerror or exc}: {where}") from exc
    except KeyboardInterrupt:
        raise CommandError(130, "interrupted") from None
    summary(counts.rows, counts.by_result, args.output, offline=True)


def summary(rows: int, by_result: dict[str, int], output: str, *, offline: bool) -> None:
    parts = ", ".join(
        f"{name} {n:,}" for name, n in sorted(by_result.items(), key=lambda kv: -kv[1])
    )
    where = "stdout" if output == "-" else output
    note = " (offline: syntax and lists only, no DNS or SMTP)" if offline else ""
    say(f"{rows:,} rows -> {where}: {parts or 'nothing'}{note}")


class Progress:
    """A rich progress bar on stderr: rows done (of ``total`` when known), rate, ETA and
    counts by result. Built only when shown, so rich is not imported otherwise."""

    def __init__(self, total: int | None, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        columns = [
            SpinnerColumn() if total is None else BarColumn(),
            MofNCompleteColumn() if total is not None else TextColumn("{task.completed:,} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn() if total is None else TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
        ]
        self._progress = Bar(
            TextColumn(label), *columns, console=Console(stderr=True), transient=False
        )
        self._task = self._progress.add_task(label, total=total, rate="", counts="")
        self._started = self._now()
        self._progress.start()

    @staticmethod
    def _now() -> float:
        import time

        return time.monotonic()

    def update(
        self, done: int, by_result: dict[str, int] | None = None, *, waiting: int = 0
    ) -> None:
        elapsed = max(self._now() - self._started, 1e-6)
        counts = ""
        if by_result:
            counts = " ".join(
                f"[{RESULT_STYLE.get(k, 'white')}]{k} {v:,}[/]"
                for k, v in sorted(by_result.items())
            )
        if waiting:
            counts += f" [dim]waiting for a retry {waiting:,}[/]"
        self._progress.update(
            self._task, completed=done, rate=f"{done / elapsed:,.0f}/s", counts=counts
        )

    def stop(self) -> None:
        self._progress.stop()
