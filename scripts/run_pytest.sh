#!/usr/bin/env bash
# Runs pytest. Exit code 5 ("no tests collected") is never taken quietly: it means the
# suite is broken (a bad path, an import-time skip), so it fails loudly.
set -uo pipefail
venv="${1:-.venv}"
shift || true
"$venv/bin/pytest" --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_pytest: pytest collected NO tests: failing, because a suite that runs nothing proves nothing" >&2
  exit 1
fi
exit "$rc"
