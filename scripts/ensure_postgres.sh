#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries (initdb, pg_ctl) are installed.
# Idempotent: does nothing when they are already there. Used by `make test`.
# Only installs the package; never starts a cluster (tests start throwaway ones
# through mailvet.testing.postgres).
set -euo pipefail

find_initdb() {
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        if [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if initdb_path="$(find_initdb)"; then
    echo "ensure_postgres: PostgreSQL already installed ($initdb_path); nothing to do"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "ensure_postgres: initdb missing and not root (no sudo); install Debian's" \
         "'postgresql' package by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends postgresql
}

echo "ensure_postgres: installing Debian's postgresql package"
if ! apt_install; then
    echo "ensure_postgres: install failed; running apt-get update and retrying"
    "${SUDO[@]}" apt-get update -q
    apt_install
fi

if initdb_path="$(find_initdb)"; then
    echo "ensure_postgres: installed PostgreSQL ($initdb_path)"
else
    echo "ensure_postgres: postgresql installed but no initdb under /usr/lib/postgresql" >&2
    exit 1
fi
