#!/usr/bin/env bash
# The local Kubernetes control plane (issue 6).
#   build   build kube-apiserver, kube-controller-manager and kube-scheduler once per machine from Debian
#           bookworm's *source* package `kubernetes` (RESEARCH.md) and cache them under
#           $PROMPTSHIP_CACHE/kube/<debian-version>/; installs etcd-server, golang-go, openssl with apt.
#   up      start etcd + kube-apiserver + controller-manager + scheduler + the sandbox kubelet on
#           127.0.0.1 (state under $PROMPTSHIP_HOME/cluster); prints the kubeconfig path when ready.
#   down    stop everything `up` started, by PID.
#   status  print what runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE="${PROMPTSHIP_CACHE:-$HOME/.cache/promptship}"
KUBE_CACHE="$CACHE/kube"
PY="${PROMPTSHIP_PYTHON:-$ROOT/.venv/bin/python}"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)
# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, which crashes ("fatal error: fault" in mapiterinit)
# when built with Go >= 1.18 as soon as the API server encodes a custom resource. The build swaps in
# Debian's reflect2 1.0.2 (a fix release, same API); only builds carrying this marker are used.
BUILD_MARKER=".reflect2-1.0.2"

log() { echo "cluster.sh: $*" >&2; }

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get -o DPkg::Lock::Timeout=600 -qq update
  sudo_if_needed apt-get -o DPkg::Lock::Timeout=600 -qq install -y --no-install-recommends "${missing[@]}" >/dev/null
}

# The mirror apt already uses (deb822 or one-line format), for the private deb-src list.
debian_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' \
        | grep -v security | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# apt options for a private deb-src list and private list state, so /etc/apt and the machine's own
# package lists stay untouched.
APT_SRC_DIR="$KUBE_CACHE/apt-src"
apt_src_opts() {
  echo "-o Dir::Etc::sourcelist=$APT_SRC_DIR/sources.list -o Dir::Etc::sourceparts=- \
-o Dir::State::Lists=$APT_SRC_DIR/lists -o Dir::Cache=$APT_SRC_DIR/cache -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root"
}
apt_src_update() {
  mkdir -p "$APT_SRC_DIR/lists/partial" "$APT_SRC_DIR/cache/archives/partial"
  local mirror
  mirror=$(debian_mirror)
  {
    echo "deb-src $mirror bookworm main"
    echo "deb-src $mirror bookworm-updates main"
    echo "deb-src ${mirror%/debian}/debian-security bookworm-security main"
  } >"$APT_SRC_DIR/sources.list"
  # shellcheck disable=SC2046
  apt-get $(apt_src_opts) -qq update >/dev/null
}

debian_version() {
  # shellcheck disable=SC2046
  apt-cache $(apt_src_opts) showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2}' | sort -V | tail -n1
}

cached_bin_dir() {
  # the newest cached build, whatever its version (no network needed once built)
  local d
  for d in $(ls -1d "$KUBE_CACHE"/*/ 2>/dev/null | sort -V -r); do
    if [ -x "$d/kube-apiserver" ] && [ -x "$d/kube-controller-manager" ] && [ -x "$d/kube-scheduler" ] \
       && [ -e "$d/$BUILD_MARKER" ]; then
      echo "${d%/}"
      return 0
    fi
  done
  return 1
}

check_dev_null() {
  if [ ! -c /dev/null ]; then
    log "ERROR: /dev/null is no longer a character device (seen once after a build; RESEARCH.md)."
    log "       fix it as root: rm -f /dev/null && mknod -m 666 /dev/null c 1 3"
    exit 1
  fi
}

cmd_build() {
  apt_install etcd-server openssl
  if dir=$(cached_bin_dir); then
    log "control-plane binaries cached in $dir"
    return 0
  fi
  apt_install golang-go dpkg-dev ca-certificates rsync golang-github-modern-go-reflect2-dev
  mkdir -p "$KUBE_CACHE"
  exec 9>"$KUBE_CACHE/.build.lock"
  log "waiting for the build lock (another build may run)"
  flock 9
  if dir=$(cached_bin_dir); then log "built meanwhile: $dir"; return 0; fi
  apt_src_update
  local version
  version=$(debian_version)
  [ -n "$version" ] || { log "ERROR: no source package 'kubernetes' found on $(debian_mirror)"; exit 1; }
  local work="$KUBE_CACHE/build-$version"
  rm -rf "$work"
  mkdir -p "$work"
  log "building kubernetes $version from source in $work (~4 min, 1.4 GB RAM, 2.3 GB disk)"
  (
    cd "$work"
    # shellcheck disable=SC2046
    apt-get $(apt_src_opts) -qq source --download-only "kubernetes=$version" >/dev/null
    dpkg-source --no-check -x ./*.dsc tree >/dev/null
    rm -rf tree/vendor/github.com/modern-go/reflect2
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 tree/vendor/github.com/modern-go/reflect2
    mkdir -p .go/src/k8s.io
    ln -s "$work/tree" .go/src/k8s.io/kubernetes
    cd .go/src/k8s.io/kubernetes
    export GOPATH="$work/.go" GO111MODULE=off GOCACHE="$work/.gocache" \
           CGO_ENABLED=0 GOPROXY=off KUBE_BUILD_PLATFORMS=linux/amd64
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" GOLDFLAGS="-s -w" >build.log 2>&1 \
      || { tail -n 40 build.log >&2; exit 1; }
  )
  local out="$KUBE_CACHE/$version"
  mkdir -p "$out.tmp"
  for b in "${BINARIES[@]}"; do
    cp "$(find "$work/tree/_output" -type f -name "$b" -perm -u+x | head -n1)" "$out.tmp/$b"
  done
  touch "$out.tmp/$BUILD_MARKER"
  rm -rf "$out" && mv "$out.tmp" "$out"
  rm -rf "$work"
  check_dev_null
  log "built $(ls "$out" | tr '\n' ' ')in $out"
}

cmd_up() {
  local dir
  dir=$(cached_bin_dir) || { log "ERROR: no control-plane binaries; run: make cluster-build"; exit 1; }
  exec "$PY" -m promptship_sandbox.cluster up --bin-dir "$dir"
}

cmd_down() { exec "$PY" -m promptship_sandbox.cluster down; }
cmd_status() { exec "$PY" -m promptship_sandbox.cluster status; }

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  bin-dir) cached_bin_dir ;;
  *) echo "usage: $0 build|up|down|status|bin-dir" >&2; exit 2 ;;
esac
