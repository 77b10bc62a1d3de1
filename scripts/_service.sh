# Process management shared by the scripts that start a long-running local server (openhands.sh,
# local-model.sh). Sourced, not run. Each caller sets PIDFILE and LOCK and passes its own command-line pattern.

log() { echo "$(basename "$0"): $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

lock_digest() { sha256sum "$LOCK" | cut -c1-16; }

# svc_running_pid PATTERN: the PID in $PIDFILE if it is still our live server — not a zombie, and not a PID the
# kernel reused for another program (its command line must contain PATTERN).
svc_running_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/stat" ]; then
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$1" || return 1
  fi
  echo "$pid"
}

# svc_stop PID: SIGTERM, up to 10 s of grace, then SIGKILL.
svc_stop() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$1" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null || true
}

# svc_wait TRIES INTERVAL HEALTHY_CMD PATTERN: poll HEALTHY_CMD until it succeeds (0), the server exits (1) or
# TRIES run out (2).
svc_wait() {
  local tries="$1" interval="$2" check="$3" pattern="$4" _
  for _ in $(seq 1 "$tries"); do
    if $check; then return 0; fi
    svc_running_pid "$pattern" >/dev/null || return 1
    sleep "$interval"
  done
  return 2
}
