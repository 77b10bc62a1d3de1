#!/usr/bin/env bash
# Debian's chromium (and its driver) for the chat app's browser tests. Idempotent: does nothing when
# /usr/bin/chromium is already there. Playwright's own browser download cannot work here (RESEARCH.md):
# the tests drive this executable through Playwright's executable_path.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "scripts/chromium.sh: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  command -v sudo >/dev/null 2>&1 || { echo "scripts/chromium.sh: need root or sudo for apt-get" >&2; exit 1; }
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null

# Seen once on these machines after a large install: /dev/null replaced by a regular file.
if [ ! -c /dev/null ]; then
  echo "scripts/chromium.sh: /dev/null is no longer a character device; restoring it" >&2
  $SUDO rm -f /dev/null && $SUDO mknod -m 666 /dev/null c 1 3
fi

/usr/bin/chromium --version
