"""The ``mailvet`` command's entry point (``python -m mailvet`` too).

The offline bulk commands, ``validate --offline --json`` and ``batch --offline``, run from
``mailvet.cli_offline`` without building the typer app or a pydantic ``Settings`` (their
start-up is most of a small file's time: bench/cli_offline.py); every other command line
goes to the typer app, ``mailvet.cli``.
"""

from __future__ import annotations

import gc
import os
import sys

from mailvet.cli_offline import (
    BatchArgs,
    CommandError,
    ValidateJob,
    load_settings,
    parse,
    run_batch_offline,
    run_validate_json,
    say,
)

__all__ = ["main"]


def main() -> None:
    """The ``mailvet`` command."""
    job = parse(sys.argv[1:], os.environ)
    if job is None:
        from mailvet.cli import main as typer_main

        typer_main()
        return
    # A bulk run allocates millions of short-lived tuples and strings and makes no
    # reference cycles worth hunting every 700 allocations (the default): collect less
    # often (bench/cli_offline.py; cycles are still collected, memory stays bounded).
    gc.set_threshold(50_000, 20, 100)
    try:
        settings = load_settings(os.environ)
        if isinstance(job, ValidateJob):
            run_validate_json(settings, job.addresses, job.jobs)
        else:
            show = sys.stderr.isatty() if job.progress is None else job.progress
            args = BatchArgs(
                job.file,
                job.output,
                job.out_format,
                job.input_format,
                job.column,
                job.encoding,
                job.delimiter,
                show,
                job.state_dir,
                job.jobs,
            )
            run_batch_offline(settings, args)
    except CommandError as exc:
        if exc.message:
            say(exc.message)
        sys.exit(exc.code)
    sys.exit(0)
