#!/usr/bin/env bash
# Debian's PostgreSQL server binaries, for the tests that run promptship's store on PostgreSQL (the tests start
# and stop their own throw-away cluster on 127.0.0.1: promptship_sandbox.postgres). Idempotent: does nothing when
# a server binary is already installed. No cluster is created or started here.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "scripts/postgres.sh: $(ls -d /usr/lib/postgresql/*/bin/postgres | tail -1) already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  command -v sudo >/dev/null 2>&1 || { echo "scripts/postgres.sh: need root or sudo for apt-get" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# the server only; Debian's package would also create and start a cluster of its own, which we stop again
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
    $SUDO pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
  done
fi
ls -d /usr/lib/postgresql/*/bin/postgres
