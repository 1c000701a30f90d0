#!/usr/bin/env bash
# Installs Debian's chromium (for the browser tests) when it is missing. Idempotent.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "ensure_chromium: /usr/bin/chromium present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_chromium: chromium missing and not root; install it with: apt-get install chromium" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "ensure_chromium: installing chromium (apt-get)"
apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
echo "ensure_chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
