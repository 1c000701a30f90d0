"""mailvet.parallel.run_blocks: blocks checked in forked workers that write in turn."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailvet.parallel import MAX_AUTO_JOBS, WorkerDied, default_jobs, run_blocks


def _blocks(n_blocks: int, size: int) -> list[list[str]]:
    return [[f"row {b}.{i}" for i in range(size)] for b in range(n_blocks)]


def _work(block: list[str]) -> tuple[int, bytes, dict[str, int]]:
    """Each row's text and which process wrote it (counted by pid)."""
    text = "".join(f"{row}\n" for row in block)
    return len(block), text.encode(), {f"pid {os.getpid()}": len(block)}


def _expected(blocks: list[list[str]]) -> bytes:
    return b"".join("\n".join(b).encode() + b"\n" for b in blocks)


def _run(
    path: Path, blocks: list[list[str]], *, jobs: int, start_after: int, work: object = _work
) -> tuple[int, dict[str, int]]:
    with open(path, "wb") as out:
        return run_blocks(
            work,  # type: ignore[arg-type]
            blocks,
            write=out.write,
            fd=out.fileno(),
            before_fork=out.flush,
            jobs=jobs,
            start_after=start_after,
        )


@pytest.mark.parametrize("jobs", [2, 3])
def test_workers_write_every_block_in_order(tmp_path: Path, jobs: int) -> None:
    blocks = _blocks(40, 50)
    out = tmp_path / "out"
    rows, counts = _run(out, blocks, jobs=jobs, start_after=100)
    assert out.read_bytes() == _expected(blocks)
    assert rows == 40 * 50
    assert sum(counts.values()) == rows
    # the first 100 rows here, the rest shared by `jobs` other processes
    assert counts[f"pid {os.getpid()}"] == 100
    assert len(counts) == jobs + 1


def test_a_short_input_never_forks(tmp_path: Path) -> None:
    blocks = _blocks(3, 10)
    rows, counts = _run(tmp_path / "out", blocks, jobs=4, start_after=1000)
    assert (tmp_path / "out").read_bytes() == _expected(blocks)
    assert (rows, counts) == (30, {f"pid {os.getpid()}": 30})


def test_one_job_or_no_file_descriptor_stays_in_this_process(tmp_path: Path) -> None:
    blocks = _blocks(10, 10)
    _, counts = _run(tmp_path / "out", blocks, jobs=1, start_after=0)
    assert list(counts) == [f"pid {os.getpid()}"]
    written: list[bytes] = []
    _, counts = run_blocks(
        _work,
        blocks,
        write=written.append,
        fd=None,
        before_fork=lambda: None,
        jobs=2,
        start_after=0,
    )
    assert b"".join(written) == _expected(blocks)
    assert list(counts) == [f"pid {os.getpid()}"]


def test_what_this_process_buffered_is_written_once_and_first(tmp_path: Path) -> None:
    blocks = _blocks(20, 5)
    path = tmp_path / "out"
    with open(path, "wb") as out:  # buffered: before_fork must flush it
        out.write(b"header\n")
        run_blocks(
            _work,
            blocks,
            write=out.write,
            fd=out.fileno(),
            before_fork=out.flush,
            jobs=2,
            start_after=5,
        )
    assert path.read_bytes() == b"header\n" + _expected(blocks)


def _fails_on_block_7(block: list[str]) -> tuple[int, bytes, dict[str, int]]:
    if block[0].startswith("row 7."):
        raise ValueError("block seven is bad")
    return _work(block)


def test_a_failing_block_stops_the_run_after_the_blocks_before_it(tmp_path: Path) -> None:
    blocks = _blocks(30, 4)
    out = tmp_path / "out"
    with pytest.raises(WorkerDied, match="ValueError: block seven is bad"):
        _run(out, blocks, jobs=2, start_after=4, work=_fails_on_block_7)
    assert out.read_bytes() == _expected(blocks[:7])


def test_an_input_error_comes_after_every_block_handed_out(tmp_path: Path) -> None:
    def blocks() -> Iterator[list[str]]:
        yield from _blocks(25, 4)
        raise ValueError("line 101 is not valid utf-8")

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="line 101"):
        _run(out, blocks(), jobs=3, start_after=8)  # type: ignore[arg-type]
    assert out.read_bytes() == _expected(_blocks(25, 4))


def _fails_long_on_block_5(block: list[str]) -> tuple[int, bytes, dict[str, int]]:
    if block[0].startswith("row 5."):
        raise ValueError("x" * 200_000)  # a report bigger than a pipe holds
    return _work(block)


@pytest.mark.timeout(60)
def test_a_worker_error_with_a_long_message_never_hangs(tmp_path: Path) -> None:
    blocks = [[f"row {b}.{i} " + "y" * 1000 for i in range(100)] for b in range(40)]
    out = tmp_path / "out"
    with pytest.raises(WorkerDied, match=r"ValueError: x{10}.*\.\.\.$"):
        _run(out, blocks, jobs=2, start_after=100, work=_fails_long_on_block_5)
    assert out.read_bytes() == _expected(blocks[:5])


def test_no_pipe_to_spare_means_the_rest_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pipe() -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pipe", no_pipe)
    blocks = _blocks(30, 10)
    rows, counts = _run(tmp_path / "out", blocks, jobs=3, start_after=10)
    assert (tmp_path / "out").read_bytes() == _expected(blocks)
    assert (rows, counts) == (300, {f"pid {os.getpid()}": 300})


def _dies_on_block_9(block: list[str]) -> tuple[int, bytes, dict[str, int]]:
    if block[0].startswith("row 9."):
        os.kill(os.getpid(), signal.SIGKILL)
    return _work(block)


@pytest.mark.timeout(60)
def test_a_killed_worker_ends_the_run_with_an_error_never_a_hang(tmp_path: Path) -> None:
    blocks = _blocks(200, 4)
    out = tmp_path / "out"
    with pytest.raises(WorkerDied, match=r"killed by signal 9|before taking its blocks"):
        _run(out, blocks, jobs=3, start_after=4, work=_dies_on_block_9)
    # blocks 0-8 whole; nothing after the last whole block
    assert out.read_bytes() == _expected(blocks[:9])


@pytest.mark.timeout(60)
def test_a_closed_output_pipe_is_an_os_error(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with pytest.raises(OSError) as info:
        run_blocks(
            _work,
            _blocks(50, 10),
            write=lambda data: os.write(write_end, data),
            fd=write_end,
            before_fork=lambda: None,
            jobs=2,
            start_after=0,
        )
    os.close(write_end)
    assert info.value.errno == 32  # EPIPE


@pytest.mark.timeout(60)
def test_an_interrupt_while_reading_stops_the_workers(tmp_path: Path) -> None:
    def blocks() -> Iterator[list[str]]:
        yield from _blocks(12, 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), open(tmp_path / "out", "wb") as out:
        run_blocks(
            _work,
            blocks(),
            write=out.write,
            fd=out.fileno(),
            before_fork=out.flush,
            jobs=2,
            start_after=10,
        )


@pytest.mark.parametrize(
    ("cpus", "jobs"), [(1, 1), (2, 1), (3, 2), (4, 3), (5, MAX_AUTO_JOBS), (64, MAX_AUTO_JOBS)]
)
def test_default_jobs_leaves_the_reader_a_cpu_and_stops_at_the_cap(
    monkeypatch: pytest.MonkeyPatch, cpus: int, jobs: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert default_jobs() == jobs


def _children() -> set[int]:
    """This process's children, zombies included (not yet waited for)."""
    me = os.getpid()
    pids: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == me:  # after ")": state, ppid
            pids.add(int(stat.parent.name))
    return pids


@pytest.fixture(autouse=True)
def _no_worker_left() -> Iterator[None]:
    """Every worker a test started was waited for: none left running, no zombie."""
    before = _children()
    yield
    assert _children() <= before
