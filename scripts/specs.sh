#!/usr/bin/env bash
# GitHub's own descriptions, from npm, for the tests of the local forge and the webhook receiver:
#   @octokit/openapi           generated/api.github.com.json  (REST API, OpenAPI 3.0.3)
#   @octokit/openapi-webhooks  generated/api.github.com.json  (webhook payloads and headers)
#   @octokit/webhooks-examples api.github.com/index.json      (real payloads of 58 events, unsigned)
# Installed once into ${PROMPTSHIP_CACHE:-$HOME/.cache/promptship}/npm; skipped when the pinned versions are
# already there. Python finds the files with promptship_sandbox.specs.
set -euo pipefail

CACHE="${PROMPTSHIP_CACHE:-$HOME/.cache/promptship}"
PREFIX="$CACHE/npm"
PACKAGES=(
  "@octokit/openapi@23.0.2"
  "@octokit/openapi-webhooks@12.1.0"
  "@octokit/webhooks-examples@7.6.1"
)

installed_version() {  # $1 = package name; prints its installed version or nothing
  local pj="$PREFIX/node_modules/$1/package.json"
  if [ -f "$pj" ]; then node -p "require(process.argv[1]).version" "$pj" 2>/dev/null || true; fi
}

if ! command -v npm >/dev/null 2>&1; then
  echo "scripts/specs.sh: npm missing; installing Debian's npm"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q npm
fi

missing=()
for spec in "${PACKAGES[@]}"; do
  name="${spec%@*}"
  want="${spec##*@}"
  if [ "$(installed_version "$name")" != "$want" ]; then
    missing+=("$spec")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "scripts/specs.sh: GitHub specs present in $PREFIX"
  exit 0
fi

mkdir -p "$PREFIX"
[ -f "$PREFIX/package.json" ] || echo '{"name": "promptship-specs", "private": true}' > "$PREFIX/package.json"
echo "scripts/specs.sh: installing ${PACKAGES[*]} into $PREFIX"
# All three at once, so that one npm install never removes another's package.
npm install --prefix "$PREFIX" --no-audit --no-fund --ignore-scripts --save-exact --loglevel=error "${PACKAGES[@]}"

for spec in "${PACKAGES[@]}"; do
  name="${spec%@*}"
  want="${spec##*@}"
  got="$(installed_version "$name")"
  if [ "$got" != "$want" ]; then
    echo "scripts/specs.sh: $name is '$got' after install, expected $want" >&2
    exit 1
  fi
done
echo "scripts/specs.sh: done"
