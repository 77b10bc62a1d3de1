#!/usr/bin/env bash
# The chat app's frontend: `deps` installs its npm dependencies (npm ci, with a cache directory) and builds
# it with Vite into examples/chat-app/frontend/dist. Idempotent: npm ci runs only when package-lock.json
# changed, the build only when a source file did. `nginx` (also run by `deps`) unpacks Debian's nginx into
# the cache without installing it (no service started, nothing bound): the tests run the frontend's real
# nginx config with it, on 127.0.0.1.
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

nginx_unpacked() {
  local dest="$CACHE/nginx"
  if [ -x "$dest/usr/sbin/nginx" ] && [ -f "$dest/etc/nginx/mime.types" ]; then
    echo "scripts/chatapp.sh: nginx already unpacked in $dest"
    return
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "scripts/chatapp.sh: apt-get missing (Debian expected)" >&2; exit 1; }
  local work; work="$(mktemp -d)"
  if ! (cd "$work" && apt-get download -qq nginx nginx-common >/dev/null 2>&1); then
    local sudo=""; [ "$(id -u)" = "0" ] || sudo="sudo"
    $sudo apt-get update -qq
    (cd "$work" && apt-get download -qq nginx nginx-common)
  fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest.tmp"; done
  rm -rf "$dest" && mv "$dest.tmp" "$dest" && rm -rf "$work"
  [ -c /dev/null ] || { echo "scripts/chatapp.sh: /dev/null is not a character device any more" >&2; exit 1; }
  "$dest/usr/sbin/nginx" -v
}

case "${1:-deps}" in
  deps) deps; (nginx_unpacked) ;;
  nginx) nginx_unpacked ;;
  *) echo "usage: scripts/chatapp.sh deps|nginx" >&2; exit 2 ;;
esac
