#!/usr/bin/env bash
# Runs pytest. Exit code 5 ("no tests collected") is never taken quietly: it means the
# suite is broken (a bad path, an import-time skip), so it fails loudly.
#
# The tests run in MAILVET_TEST_WORKERS pytest-xdist processes, 3 by default, one more
# than CI's 2 cores: the suite mostly waits (on subprocesses, sockets, PostgreSQL,
# simulated mail servers' delays), so with 3 workers it still used only about 1.3 of
# the 2 cores (user + system time / wall time) and ran in about 5 minutes, against 7.5
# with 2 workers and 13 in one process. Every fixture is safe in parallel: free ports,
# a PostgreSQL server and temporary folders per worker. --dist worksteal: an idle
# worker takes tests queued for another, so a few long tests at the end do not leave
# the others idle. MAILVET_TEST_WORKERS=0 runs everything in this one process (as
# plain pytest does).
set -uo pipefail
venv="${1:-.venv}"
shift || true
workers="${MAILVET_TEST_WORKERS:-3}"
parallel=()
if [ "$workers" != "0" ]; then
  parallel=(-n "$workers" --dist worksteal)
fi
"$venv/bin/pytest" "${parallel[@]}" --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_pytest: pytest collected NO tests: failing, because a suite that runs nothing proves nothing" >&2
  exit 1
fi
exit "$rc"
