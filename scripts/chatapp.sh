#!/usr/bin/env bash
# The chat app's frontend: `deps` installs its npm dependencies (npm ci, with a cache directory) and builds
# it with Vite into examples/chat-app/frontend/dist. Idempotent: npm ci runs only when package-lock.json
# changed, the build only when a source file did.
set -euo pipefail
cd "$(dirname "$0")/.."
FRONTEND=examples/chat-app/frontend
CACHE="${PROMPTSHIP_CACHE:-$HOME/.cache/promptship}"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

deps() {
  command -v npm >/dev/null 2>&1 || { echo "scripts/chatapp.sh: npm is missing (apt-get install -y nodejs npm)" >&2; exit 1; }
  mkdir -p "$CACHE/npm"
  cd "$FRONTEND"
  local lock_hash; lock_hash="$(hash_of package.json package-lock.json)"
  if [ -f node_modules/.promptship-lock-hash ] && [ "$(cat node_modules/.promptship-lock-hash)" = "$lock_hash" ]; then
    echo "scripts/chatapp.sh: node_modules up to date"
  else
    npm ci --cache "$CACHE/npm" --prefer-offline --no-audit --no-fund --loglevel=error
    echo "$lock_hash" > node_modules/.promptship-lock-hash
  fi
  local src_hash; src_hash="$(hash_of package-lock.json index.html vite.config.js $(find src -type f | sort))"
  if [ -f dist/.promptship-src-hash ] && [ "$(cat dist/.promptship-src-hash)" = "$src_hash" ]; then
    echo "scripts/chatapp.sh: dist/ up to date"
  else
    npm run --silent build
    echo "$src_hash" > dist/.promptship-src-hash
  fi
  echo "scripts/chatapp.sh: frontend built in $FRONTEND/dist"
}

case "${1:-deps}" in
  deps) deps ;;
  *) echo "usage: scripts/chatapp.sh deps" >&2; exit 2 ;;
esac
