#!/usr/bin/env bash
# Starts, stops or reports on the reference server (o3-refserver on upstream llama.cpp).
#
#   bash harness/refserver.sh start    # set up the backend if needed, build, start, wait until it answers
#   bash harness/refserver.sh stop     # stop it (its llama-server runners die with it)
#   bash harness/refserver.sh status
#   bash harness/refserver.sh env      # print OLLAMA_HOST=... for the running server
#
# Listens on 127.0.0.1:${O3_REFSERVER_PORT:-11435} (not 11434, so a real Ollama is never shadowed).
# State (pid, log) lives under ${O3_CACHE:-~/.cache/o3-suite}/refserver/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE="${O3_CACHE:-$HOME/.cache/o3-suite}"
PORT="${O3_REFSERVER_PORT:-11435}"
STATE="$CACHE/refserver"
PIDFILE="$STATE/pid-$PORT"
LOG="$STATE/server-$PORT.log"
mkdir -p "$STATE"

log() { printf '[refserver] %s\n' "$*" >&2; }
die() { printf '[refserver] error: %s\n' "$*" >&2; exit 1; }

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null || return 1
  grep -q o3-refserver "/proc/$pid/cmdline" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

answers() {
  curl -fsS --max-time 2 "http://127.0.0.1:$PORT/api/version" >/dev/null 2>&1
}

start() {
  if pid=$(running_pid) && answers; then
    log "already running (pid $pid) on 127.0.0.1:$PORT"
    return 0
  fi
  bash "$ROOT/harness/setup-backend.sh"
  # shellcheck disable=SC1091
  . "$CACHE/backend.env"
  log "building o3-refserver (release)"
  (cd "$ROOT" && cargo build --release --quiet -p o3-refserver)
  local bin
  bin="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/o3-refserver"
  [ -x "$bin" ] || die "no binary at $bin"
  if curl -fsS --max-time 2 "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then
    die "something else already answers on 127.0.0.1:$PORT; set O3_REFSERVER_PORT to a free port"
  fi
  log "starting on 127.0.0.1:$PORT (log: $LOG)"
  nohup "$bin" --listen "127.0.0.1:$PORT" --models-dir "$O3_MODELS_DIR" \
    --llama-server "$O3_LLAMA_BIN_DIR/llama-server" --log-dir "$STATE/runners" \
    >"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 120); do
    if answers; then
      log "ready (pid $(cat "$PIDFILE")): OLLAMA_HOST=127.0.0.1:$PORT"
      return 0
    fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "o3-refserver exited"; }
    sleep 0.5
  done
  tail -n 20 "$LOG" >&2
  die "o3-refserver did not answer within 60 s"
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    log "stopped (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid=$(running_pid) && answers; then echo "running (pid $pid) on 127.0.0.1:$PORT"; else echo "not running"; exit 1; fi ;;
  env) echo "OLLAMA_HOST=127.0.0.1:$PORT" ;;
  *) die "usage: $0 start|stop|status|env" ;;
esac
