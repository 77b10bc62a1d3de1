#!/usr/bin/env bash
# The OpenHands agent-server (openhands-agent-server, pinned in scripts/openhands.requirements.lock).
#
#   scripts/openhands.sh install   own Python >= 3.12 venv, cached under $PROMPTSHIP_CACHE (idempotent)
#   scripts/openhands.sh up        start it on 127.0.0.1:$OPENHANDS_PORT with a SCRUBBED environment
#   scripts/openhands.sh down      stop it (by the PID recorded by `up`)
#   scripts/openhands.sh status    print url/pid and whether it answers /health
#   scripts/openhands.sh python    print the venv's interpreter (installs first)
#
# Environment knobs (all optional):
#   PROMPTSHIP_CACHE           cache root (default ~/.cache/promptship)
#   OPENHANDS_PYTHON           a Python >= 3.12 interpreter to build the venv with
#   OPENHANDS_PORT             port of `up` (default 3000)
#   OPENHANDS_STATE_DIR        pid file, log, private HOME, conversations (default $PROMPTSHIP_HOME/openhands
#                              or ./.promptship/openhands)
#   OPENHANDS_SESSION_API_KEY  when set, the server requires it as X-Session-API-Key
#
# Why env -i: the agent's terminal inherits the server's environment. Nothing of ours (GitHub token,
# OpenRouter key, webhook secret, PROMPTSHIP_*) may be within its reach; it talks to models only through
# the gateway with a per-run key passed per conversation.
set -euo pipefail

VERSION=1.57.0
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="$HERE/openhands.requirements.lock"
CACHE="${PROMPTSHIP_CACHE:-$HOME/.cache/promptship}"
VENV="$CACHE/openhands-$VERSION"
PORT="${OPENHANDS_PORT:-3000}"
STATE="${OPENHANDS_STATE_DIR:-${PROMPTSHIP_HOME:-$PWD/.promptship}/openhands}"
PIDFILE="$STATE/agent-server.pid"
LOG="$STATE/agent-server.log"

# shellcheck source=scripts/_service.sh
. "$HERE/_service.sh"

is_py312() {  # $1 runs and is CPython >= 3.12
  [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local c
  local -a cands=()
  [ -n "${OPENHANDS_PYTHON:-}" ] && cands+=("$OPENHANDS_PYTHON")
  for c in python3.12 python3.13; do
    command -v "$c" >/dev/null 2>&1 && cands+=("$(command -v "$c")")
  done
  # pyenv shims fail unless the version is selected: look at the installed versions directly.
  local root="${PYENV_ROOT:-$HOME/.pyenv}"
  for c in "$root"/versions/3.12*/bin/python3.12 "$root"/versions/3.13*/bin/python3.13 \
           /root/.pyenv/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.13*/bin/python3.13 \
           /usr/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.13 /usr/local/bin/python3.13; do
    [ -x "$c" ] && cands+=("$c")
  done
  for c in "${cands[@]}"; do
    if is_py312 "$c"; then echo "$c"; return 0; fi
  done
  return 1
}

installed() {  # the venv exists, matches the lock and imports the server
  [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.lock-digest" 2>/dev/null)" = "$(lock_digest)" ] &&
    "$VENV/bin/python" -c 'import openhands.agent_server' >/dev/null 2>&1
}

install() {
  if installed; then
    log "openhands-agent-server $VERSION already installed in $VENV"
    return 0
  fi
  local py
  py="$(find_python)" || die "openhands-agent-server needs Python >= 3.12 and none was found (tried \
\$OPENHANDS_PYTHON, python3.12/3.13 on PATH, ~/.pyenv/versions/3.12*, /usr/bin/python3.12). Install one \
(e.g. 'pyenv install 3.12' or Debian trixie's python3.12) and set OPENHANDS_PYTHON=/path/to/python3.12."
  log "installing openhands-agent-server $VERSION with $py into $VENV (~1-3 min)"
  local t0=$SECONDS
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if command -v uv >/dev/null 2>&1; then
    uv venv -q --python "$py" "$VENV"
    VIRTUAL_ENV="$VENV" uv pip sync -q --python "$VENV/bin/python" "$LOCK"
  else  # slower, same pins
    log "uv not found: using pip"
    "$py" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --no-deps --disable-pip-version-check -r "$LOCK"
  fi
  # PYTHONDONTWRITEBYTECODE is set on these machines: compile once so the server starts fast.
  "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" >/dev/null 2>&1 || true
  "$VENV/bin/python" -c 'import openhands.agent_server' || die "installed, but openhands.agent_server does not import"
  lock_digest >"$VENV/.lock-digest"
  log "installed in $((SECONDS - t0)) s"
}

running_pid() { svc_running_pid "openhands.agent_server"; }

# Runs openhands.agent_server's own __main__ with export_session_api_key() switched off (see `up`).
LAUNCH='import runpy, sys
import openhands.agent_server.api as api
import openhands.agent_server.config as config
config.export_session_api_key = api.export_session_api_key = lambda *_a, **_k: None
sys.argv[0] = "openhands-agent-server"
runpy.run_module("openhands.agent_server", run_name="__main__", alter_sys=True)'

cleanup_terminals() {  # the agent's terminals are tmux servers under this directory; they outlive a killed server
  local tdir="${TMPDIR:-/tmp}/openhands-agent-server-$1" sock
  [ -n "$1" ] && [ -d "$tdir" ] || return 0
  for sock in "$tdir"/tmux-*/*; do
    if [ -S "$sock" ]; then tmux -S "$sock" kill-server 2>/dev/null || true; fi
  done
  rm -rf "$tdir"
}

healthy() { curl -fsS -m 5 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; }

up() {
  install
  if pid="$(running_pid)"; then
    log "already running (pid $pid) on http://127.0.0.1:$(cat "$STATE/port")"
    echo "http://127.0.0.1:$(cat "$STATE/port")"
    return 0
  fi
  cleanup_terminals "$(cat "$PIDFILE" 2>/dev/null || true)"  # left by a server that died without `down`
  if healthy; then die "port $PORT already answers /health but not from our pid file; pick OPENHANDS_PORT"; fi
  mkdir -p "$STATE/home" "$STATE/work"
  # A private HOME: no ~/.git-credentials, ~/.config/gh or ~/.kube of ours for the agent to read.
  cat >"$STATE/home/.gitconfig" <<'EOF'
[user]
	name = promptship-agent
	email = agent@promptship.invalid
[init]
	defaultBranch = main
EOF
  local -a envs=(
    "PATH=$VENV/bin:/usr/local/bin:/usr/bin:/bin"
    "HOME=$STATE/home"
    "LANG=${LANG:-C.UTF-8}"
    "LC_ALL=C.UTF-8"
    "TERM=xterm"
    "PYTHONUNBUFFERED=1"
    # The server's own LiteLLM must not fetch its price map from the internet.
    "LITELLM_LOCAL_MODEL_COST_MAP=True"
    "OH_ENABLE_VSCODE=false"
    "OH_ENABLE_VNC=false"
  )
  # The session key never goes into the environment: agent-server 1.57.0's terminal (tmux) inherits the
  # server's environment despite its own filter, so SESSION_API_KEY / OH_SESSION_API_KEYS_0 would be readable
  # by the agent. It goes into a 0600 config file that is removed once the server has read it, and the
  # server's re-export of the key into its own environment is switched off (LAUNCH below).
  local config="$STATE/work/workspace/openhands_agent_server_config.json"
  mkdir -p "$(dirname "$config")"
  rm -f "$config"
  if [ -n "${OPENHANDS_SESSION_API_KEY:-}" ]; then
    (umask 077 && printf '{"session_api_keys": ["%s"]}\n' "$OPENHANDS_SESSION_API_KEY" >"$config")
  fi
  echo "$PORT" >"$STATE/port"
  (cd "$STATE/work" && exec env -i "${envs[@]}" setsid "$VENV/bin/python" -c "$LAUNCH" \
      --host 127.0.0.1 --port "$PORT" </dev/null >"$LOG" 2>&1) &
  echo $! >"$PIDFILE"
  local rc=0
  svc_wait 240 0.5 healthy "openhands.agent_server" || rc=$?
  rm -f "$config"
  case "$rc" in
    0) log "up (pid $(cat "$PIDFILE")) on http://127.0.0.1:$PORT, log $LOG"
       echo "http://127.0.0.1:$PORT" ;;
    1) tail -n 30 "$LOG" >&2 || true; die "the agent-server exited during start" ;;
    *) tail -n 30 "$LOG" >&2 || true; down; die "the agent-server did not answer /health within 120 s" ;;
  esac
}

down() {
  local pid
  if pid="$(running_pid)"; then
    svc_stop "$pid"
    cleanup_terminals "$pid"
    log "stopped (pid $pid)"
  else
    log "not running"
  fi
  rm -f "$PIDFILE"
}

status() {
  if pid="$(running_pid)"; then
    local port
    port="$(cat "$STATE/port" 2>/dev/null || echo "$PORT")"
    PORT="$port"
    if healthy; then echo "running pid=$pid url=http://127.0.0.1:$port healthy"; else
      echo "running pid=$pid url=http://127.0.0.1:$port NOT answering /health"; fi
  else
    echo "stopped"
    return 3
  fi
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) status ;;
  python) install >&2 && echo "$VENV/bin/python" ;;
  *) echo "usage: $0 install|up|down|status|python" >&2; exit 2 ;;
esac
