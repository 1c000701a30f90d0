"""Blocks of a long input checked in forked worker processes that write the output
themselves, in input order.

The offline bulk commands (``mailvet validate --offline --json -``, ``mailvet batch
--offline LIST``) are CPU-bound Python: one process checks ~400,000 addresses a second
(bench/cli_offline.py). ``run_blocks`` shares a long input's blocks among worker
processes. Written by hand, not with ``multiprocessing`` / ``ProcessPoolExecutor``,
because what makes it pay is what those do not do:

- the workers write their rows straight to the output, taking turns: a token (one
  byte on a pipe) goes round the ring of workers, so block k is written after block
  k-1 and the rows (~400 bytes each for ``validate``) are never pickled, sent back and
  copied by this process, which only reads the input and hands out blocks; a pool's
  result path cost more CPU than the second core saved (measured: +0.27 s CPU on
  200,000 addresses);
- small inputs never start a process: the first ``start_after`` rows are checked here,
  and the workers, forked after them, start with the caches those rows filled;
- the workers are forked: they inherit the imported modules and the built ``Engine``
  (nothing to import or build again), and blocks go to them pickled;
- at most one block waits in each worker's pipe (backpressure: memory stays bounded
  whatever the input's length);
- Ctrl-C: the workers ignore SIGINT; this process stops them and raises
  ``KeyboardInterrupt``. A worker that dies (killed, out of memory) ends the run with
  ``WorkerDied``, never a hang: its successor in the ring sees the token pipe close,
  and nothing after the last whole block is written.

Where there is no fork, or the output has no file descriptor, everything runs here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

# (pickle and signal are imported where workers start: every offline run imports this
# module, few fork; its start-up is measured, bench/cli_offline.py)

__all__ = ["MAX_AUTO_JOBS", "BlockWork", "WorkerDied", "default_jobs", "run_blocks"]

# A worker checks a row in ~2.5 us; this process reads, decodes and hands it out in
# ~0.5 us: past about four workers the reader is the bottleneck, so the default stops.
MAX_AUTO_JOBS = 4

# what a block gives: (rows, their text, line ends included, rows by result)
BlockWork = Callable[[list[Any]], tuple[int, bytes, dict[str, int]]]

_GO, _STOP = b"1", b"0"
_HEADER = 8  # bytes of a frame's length


class WorkerDied(RuntimeError):
    """A worker process ended before finishing its blocks."""


def default_jobs() -> int:
    """Workers when none is asked for: one per CPU this process may run on but one (the
    reader's), up to ``MAX_AUTO_JOBS``; 1 (everything in this process) on one or two
    CPUs. On two, two workers and the reader share them: measured on a shared 2-CPU
    host (bench/cli_offline.py), that was slower than one process as soon as anything
    else ran, and ~1.2x faster at best."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    workers = min(cpus - 1, MAX_AUTO_JOBS)
    return workers if workers >= 2 else 1


def run_blocks(
    work: BlockWork,
    blocks: Iterable[list[Any]],
    *,
    write: Callable[[bytes], object],
    fd: int | None,
    before_fork: Callable[[], None],
    jobs: int,
    start_after: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, dict[str, int]]:
    """``work`` every block and write its rows, in order; ``(rows, rows by result)``.

    Here, a block's text goes out through ``write``. Once
    ``start_after`` rows are done, with ``jobs`` > 1, fork available and ``fd`` (the
    file descriptor ``write`` ends up in) given, ``before_fork`` runs (it must flush
    what ``write`` buffered) and ``jobs`` forked workers take the remaining blocks and
    write to ``fd`` themselves. ``work`` must give a block the same text in any process,
    whatever came before it but for caches. ``progress`` gets the rows done so far (with
    workers: handed out)."""
    counts: dict[str, int] = {}
    it = iter(blocks)
    parallel = jobs > 1 and fd is not None and _can_fork()
    rows = _here(work, it, write, counts, progress, 0, start_after if parallel else None)
    first = next(it, None) if parallel else None
    if first is None:
        return rows, counts
    assert fd is not None
    before_fork()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: closed when Python started
            stream.flush()
    try:
        ring = _Ring(work, fd, jobs)
    except OSError:  # no file descriptor or process to spare: the rest here, then
        rows = _here(work, _chain(first, it), write, counts, progress, rows, None)
        return rows, counts
    handed = rows
    try:
        ring.release()
        try:
            k = 0
            for block in _chain(first, it):
                ring.send(k % jobs, block)
                k += 1
                handed += len(block)
                if progress is not None:
                    progress(handed)
        except Exception:
            # the input failed (a line not in its encoding...): the blocks handed out
            # are written first, as they would be here, then the error goes up
            ring.finish()
            raise
        done, more = ring.finish()
    except BaseException:  # Ctrl-C, or a worker's error: stop them all now
        ring.abort()
        raise
    _add(counts, more)
    return rows + done, counts


def _here(
    work: BlockWork,
    blocks: Iterator[list[Any]],
    write: Callable[[bytes], object],
    counts: dict[str, int],
    progress: Callable[[int], None] | None,
    rows: int,
    until: int | None,
) -> int:
    """Blocks worked and written in this process, until ``rows`` reaches ``until``
    (None: to the end); the rows done, counts added to ``counts``."""
    for block in blocks:
        n, data, c = work(block)
        if data:
            write(data)
        rows += n
        _add(counts, c)
        if progress is not None:
            progress(rows)
        if until is not None and rows >= until:
            break
    return rows


def _chain(first: list[Any], rest: Iterator[list[Any]]) -> Iterator[list[Any]]:
    yield first
    yield from rest


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for key, n in more.items():
        into[key] = into.get(key, 0) + n


def _can_fork() -> bool:
    return hasattr(os, "fork") and sys.platform != "win32"


class _Worker:
    __slots__ = ("frames", "pid", "report")

    def __init__(self, pid: int, frames: int, report: int) -> None:
        self.pid = pid
        self.frames = frames  # write end of its block pipe
        self.report = report  # read end of its report pipe


class _Ring:
    """``jobs`` forked workers in a ring; worker i takes blocks i, i + jobs, ..."""

    def __init__(self, work: BlockWork, fd: int, jobs: int) -> None:
        self.work = work
        self.fd = fd
        self.jobs = jobs
        self.workers: list[_Worker] = []
        # what the workers use, imported before they exist (no import in a child)
        import pickle  # noqa: F401
        import signal
        import warnings

        pipes: list[tuple[int, int]] = []
        try:
            for _ in range(3 * jobs):
                pipes.append(os.pipe())
        except OSError:  # out of file descriptors: none left open
            for r, w in pipes:
                os.close(r)
                os.close(w)
            raise
        tokens = pipes[:jobs]  # worker i reads tokens[i], writes tokens[i + 1]
        frames = pipes[jobs : 2 * jobs]
        reports = pipes[2 * jobs :]
        os.write(tokens[0][1], _GO)  # the first block's turn
        # Ctrl-C held back while forking: a child must not take it before it ignores it
        # (it would unwind into this process's error handling); ``release()`` lets it in
        held = self._held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for i in range(jobs):
                with warnings.catch_warnings():
                    # Python 3.12+ warns when a process with threads forks (a progress
                    # bar's refresh thread, say): the child runs only _worker, which
                    # takes no lock a thread may hold, imports nothing, writes with
                    # os.write and leaves by os._exit
                    warnings.simplefilter("ignore", DeprecationWarning)
                    pid = os.fork()
                if pid == 0:  # the worker: never returns
                    try:
                        signal.signal(signal.SIGINT, signal.SIG_IGN)
                        signal.pthread_sigmask(signal.SIG_SETMASK, held)
                        keep = {
                            tokens[i][0],
                            tokens[(i + 1) % jobs][1],
                            frames[i][0],
                            reports[i][1],
                            self.fd,
                        }
                        _close_all_but(keep, pipes)
                        _worker(
                            self.work,
                            frames[i][0],
                            tokens[i][0],
                            tokens[(i + 1) % jobs][1],
                            reports[i][1],
                            self.fd,
                        )
                    finally:
                        os._exit(1)
                self.workers.append(_Worker(pid, frames[i][1], reports[i][0]))
        finally:  # this process keeps only the block pipes' write ends, reports' read ends
            for r, w in tokens:
                os.close(r)
                os.close(w)
            for r, _ in frames:
                os.close(r)
            for _, w in reports:
                os.close(w)
            started = len(self.workers)
            if started < jobs:  # a fork failed: undo the others (abort closes their ends)
                self.abort()
                for _, frame_end in frames[started:]:
                    os.close(frame_end)
                for report_end, _ in reports[started:]:
                    os.close(report_end)
                self.release()

    def release(self) -> None:
        """Let Ctrl-C in again (held back while forking); one that came meanwhile is
        raised now, where the caller stops the workers."""
        import signal

        signal.pthread_sigmask(signal.SIG_SETMASK, self._held)

    def send(self, i: int, block: list[Any]) -> None:
        import pickle

        data = pickle.dumps(block, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            _write_all(self.workers[i].frames, [len(data).to_bytes(_HEADER, "little"), data])
        except BrokenPipeError:  # that worker is gone: finish() says why
            self.finish()
            raise WorkerDied("a worker process ended before taking its blocks") from None

    def finish(self) -> tuple[int, dict[str, int]]:
        """Close the block pipes, wait for every worker; rows and counts they wrote."""
        for w in self.workers:
            _close(w.frames)
            w.frames = -1
        import pickle

        rows = 0
        counts: dict[str, int] = {}
        failure: BaseException | None = None
        for w in self.workers:
            raw = _read_all(w.report)
            _close(w.report)
            w.report = -1
            _, status = os.waitpid(w.pid, 0)
            w.pid = 0
            report = pickle.loads(raw) if raw else None
            if isinstance(report, tuple) and report[0] == "ok":
                rows += report[1]
                _add(counts, report[2])
            elif isinstance(report, tuple) and report[0] == "oserror" and failure is None:
                failure = OSError(report[1], report[2])
            elif isinstance(report, tuple) and report[0] == "error" and failure is None:
                failure = WorkerDied(f"a worker process failed: {report[1]}")
            elif report is None and failure is None:
                how = (
                    f"killed by signal {os.WTERMSIG(status)}"
                    if os.WIFSIGNALED(status)
                    else f"exit status {os.waitstatus_to_exitcode(status)}"
                )
                failure = WorkerDied(f"a worker process ended before finishing its part ({how})")
        self.workers = []
        if failure is not None:
            raise failure
        return rows, counts

    def abort(self) -> None:
        """Stop every worker now (Ctrl-C, or an error here) and wait for them. SIGTERM
        first: a worker holds it back while it writes, so the output ends with a whole
        block; SIGKILL after 2 s (a reader that does not read)."""
        import signal
        import time

        for w in self.workers:
            _close(w.frames)
            _close(w.report)
            w.frames = w.report = -1
            if w.pid:
                try:
                    os.kill(w.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 2.0
        for w in self.workers:
            while w.pid:
                if os.waitpid(w.pid, os.WNOHANG)[0]:
                    w.pid = 0
                elif time.monotonic() > deadline:
                    os.kill(w.pid, signal.SIGKILL)
                    os.waitpid(w.pid, 0)
                    w.pid = 0
                else:
                    time.sleep(0.002)
        self.workers = []


def _worker(
    work: BlockWork, frames: int, token_in: int, token_out: int, report: int, fd: int
) -> None:
    """A worker's life: blocks in, rows out in their turn, a report at the end. Leaves
    by ``os._exit`` only (no cleanup of the parent's state, no buffers flushed twice)."""
    import pickle
    import signal

    code = 0
    message: tuple[Any, ...]
    try:
        rows = 0
        counts: dict[str, int] = {}
        message = ("ok", 0, counts)
        while True:
            header = _read_exactly(frames, _HEADER)
            if not header:
                break
            block = pickle.loads(_read_exactly(frames, int.from_bytes(header, "little")))
            failure: BaseException | None = None
            try:
                n, data, c = work(block)
            except Exception as exc:  # a bug: said after the blocks before it are out
                failure = exc
            if os.read(token_in, 1) != _GO:  # a worker before this one stopped or died
                _pass(token_out, _STOP)
                message = ("stopped",)
                break
            if failure is not None:
                _pass(token_out, _STOP)
                said = f"{type(failure).__name__}: {failure}"
                message = ("error", said if len(said) <= 500 else f"{said[:500]}...")
                code = 1
                break
            try:
                if data:
                    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                    try:
                        _write_all(fd, [data])
                    finally:
                        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            except OSError as exc:
                _pass(token_out, _STOP)
                message = ("oserror", exc.errno, exc.strerror)
                code = 1
                break
            _pass(token_out, _GO)
            rows += n
            _add(counts, c)
            message = ("ok", rows, counts)
        os.close(frames)  # no more blocks: the parent's next send fails, never waits
        _write_all(report, [pickle.dumps(message)])
    except BaseException:  # pragma: no cover - the report pipe itself failed
        code = 1
    finally:
        os._exit(code)


def _pass(token_out: int, token: bytes) -> None:
    """The turn to the next worker (gone already if it failed: then nobody waits)."""
    try:
        os.write(token_out, token)
    except BrokenPipeError:
        pass


def _close_all_but(keep: set[int], pipes: Sequence[tuple[int, int]]) -> None:
    for pair in pipes:
        for fd in pair:
            if fd not in keep:
                os.close(fd)


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _write_all(fd: int, parts: list[bytes]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def _read_exactly(fd: int, n: int) -> bytes:
    """``n`` bytes, or b"" at the end of the pipe (before the first byte)."""
    chunks: list[bytes] = []
    left = n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            if chunks:
                raise WorkerDied("a block arrived cut short")
            return b""
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
