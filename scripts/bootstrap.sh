#!/usr/bin/env bash
# Creates the virtual environment and installs mailvet with its test extras.
# On a bare Debian 12 `python3 -m venv` needs the python3-venv package: install it if missing.
set -euo pipefail
venv="${1:-.venv}"
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "bootstrap: installing python3-venv (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q python3-venv python3-pip >/dev/null 2>&1 \
    || { apt-get update -q && apt-get install -y -q python3-venv python3-pip; }
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev,postgres]'
echo "bootstrap: $venv ready"
