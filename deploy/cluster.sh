#!/usr/bin/env bash
# A three-node chatd cluster on this machine, behind nginx:
#
#   deploy/cluster.sh start    build chatd if needed, start nodes 1-3 and nginx
#   deploy/cluster.sh stop     stop nginx, then the nodes (SIGTERM; they kick their
#                              sessions with `shutdown` and exit)
#   deploy/cluster.sh status   what runs, and whether the front port answers
#
# Clients connect to 127.0.0.1:6000 (nginx, deploy/nginx.conf); the nodes listen on
# 127.0.0.1:6001-6003 and take the client's address from nginx's PROXY protocol header. PostgreSQL and Redis must be running already; the database is
# created if it does not exist. Nothing here needs root once nginx is installed: every
# file (logs, pids, nginx's prefix) is under the run directory.
#
# Environment:
#   CHATD_DB       PostgreSQL URL   (default postgres://postgres@127.0.0.1:5432/chatd)
#   CHATD_REDIS    Redis URL        (default redis://127.0.0.1:6379)
#   CHATD_RUN_DIR  run directory    (default deploy/run)
#   CHATD_BIN      chatd binary     (default target/release/chatd, built if missing)
#   NGINX          nginx binary     (default nginx from PATH, or /usr/sbin/nginx)
# Other CHATD_* variables (CHATD_REDIS_PREFIX, CHATD_IDLE_TIMEOUT, ...) reach the nodes as
# they are: every chatd flag is also an environment variable.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DB="${CHATD_DB:-postgres://postgres@127.0.0.1:5432/chatd}"
REDIS="${CHATD_REDIS:-redis://127.0.0.1:6379}"
RUN="${CHATD_RUN_DIR:-$ROOT/deploy/run}"
BIN="${CHATD_BIN:-$ROOT/target/release/chatd}"
CONF="$ROOT/deploy/nginx.conf"
FRONT_PORT=6000
NODES=(1 2 3)
# How long a node may take to stop: its --shutdown-grace (5 s by default) and a margin.
STOP_WAIT=15

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }

node_port() { echo $((FRONT_PORT + $1)); }

# The pid in file $1 if that process is alive.
live_pid() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

find_nginx() {
  if [[ -n "${NGINX:-}" ]]; then
    echo "$NGINX"
  elif command -v nginx >/dev/null 2>&1; then
    command -v nginx
  elif [[ -x /usr/sbin/nginx ]]; then
    echo /usr/sbin/nginx
  else
    die "nginx is not installed (apt-get install nginx libnginx-mod-stream)"
  fi
}

# Extra -g directives so that the stream module is there: nothing when nginx was built
# with it, a load_module when it is a dynamic module (Debian: libnginx-mod-stream).
nginx_globals() {
  local nginx="$1" info dir
  info="$("$nginx" -V 2>&1)"
  if grep -q -- '--with-stream=dynamic' <<<"$info"; then
    dir="$(grep -o -- '--modules-path=[^ ]*' <<<"$info" | cut -d= -f2)"
    dir="${dir:-/usr/lib/nginx/modules}"
    [[ -f "$dir/ngx_stream_module.so" ]] \
      || die "nginx's stream module is not installed ($dir/ngx_stream_module.so; apt-get install libnginx-mod-stream)"
    echo "load_module $dir/ngx_stream_module.so;"
  elif grep -q -- '--with-stream\b' <<<"$info"; then
    echo ""
  else
    die "this nginx has no stream module (see nginx -V)"
  fi
}

# Answers when a ping through host $1 port $2 gets an ok reply.
answers() {
  local line
  { exec 3<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
  printf '{"op":"ping","rid":1}\n' >&3 || { exec 3<&-; return 1; }
  IFS= read -r -t 2 line <&3 || line=""
  exec 3<&- 3>&-
  [[ "$line" == *'"ok":true'* ]]
}

check_services() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$DB" || pg_isready -q -d "${DB%/*}/postgres" \
      || die "PostgreSQL does not answer at $DB (start it, or set CHATD_DB)"
  fi
  command -v psql >/dev/null 2>&1 || die "psql is needed to check and create the database"
  if ! psql -qAt -d "$DB" -c 'select 1' >/dev/null 2>&1; then
    local base="${DB%%\?*}"
    local name="${base##*/}"
    [[ "$name" =~ ^[A-Za-z0-9_]+$ ]] || die "cannot create database '$name' from CHATD_DB=$DB"
    say "creating database $name"
    psql -qAt -d "${base%/*}/postgres" -c "CREATE DATABASE \"$name\"" >/dev/null \
      || die "cannot create database $name (is PostgreSQL running? CHATD_DB=$DB)"
  fi
  if command -v redis-cli >/dev/null 2>&1; then
    [[ "$(redis-cli -u "$REDIS" ping 2>/dev/null)" == PONG ]] \
      || die "Redis does not answer at $REDIS (start it, or set CHATD_REDIS)"
  fi
}

start_node() {
  local n="$1" port pid
  port="$(node_port "$n")"
  if pid="$(live_pid "$RUN/node$n.pid")"; then
    say "node$n already runs (pid $pid)"
    return
  fi
  # nginx sends a PROXY protocol header (deploy/nginx.conf) from 127.0.0.1; a direct
  # connection to a node from 127.0.0.1 must therefore send one too.
  "$BIN" --listen "127.0.0.1:$port" --db "$DB" --redis "$REDIS" --node-id "node$n" \
    --proxy-protocol --proxy-protocol-from 127.0.0.1 \
    >"$RUN/node$n.out" 2>"$RUN/node$n.log" </dev/null &
  pid=$!
  echo "$pid" >"$RUN/node$n.pid"
  # chatd prints one line on stdout once it listens (after migrations and joining Redis).
  for _ in $(seq 300); do
    if grep -q '^chatd listening on' "$RUN/node$n.out"; then
      say "node$n listens on 127.0.0.1:$port (pid $pid, log $RUN/node$n.log)"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$RUN/node$n.log" >&2 || true
  say "node$n did not start; see $RUN/node$n.log" >&2
  return 1
}

start() {
  mkdir -p "$RUN"
  local nginx globals pid
  nginx="$(find_nginx)"
  globals="$(nginx_globals "$nginx")"
  check_services
  if [[ ! -x "$BIN" ]]; then
    say "building $BIN"
    (cd "$ROOT" && cargo build --release -p chatd)
  fi
  for n in "${NODES[@]}"; do
    start_node "$n" || { stop; die "stopped what had started"; }
  done
  if pid="$(live_pid "$RUN/nginx.pid")"; then
    say "nginx already runs (pid $pid)"
  else
    local args=(-p "$RUN/" -c "$CONF" -e error.log)
    [[ -n "$globals" ]] && args+=(-g "$globals")
    "$nginx" "${args[@]}" || { stop; die "nginx did not start; see $RUN/error.log"; }
  fi
  for _ in $(seq 100); do
    if answers 127.0.0.1 "$FRONT_PORT"; then
      say "ready: clients connect to 127.0.0.1:$FRONT_PORT (nginx pid $(cat "$RUN/nginx.pid"))"
      return
    fi
    sleep 0.1
  done
  stop
  die "127.0.0.1:$FRONT_PORT does not answer; see $RUN/error.log"
}

# Sends SIGTERM to the process in pid file $1 and waits for it to exit.
stop_pid() {
  local file="$1" what="$2" pid
  if ! pid="$(live_pid "$file")"; then
    rm -f "$file"
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((STOP_WAIT * 10))); do
    kill -0 "$pid" 2>/dev/null || { say "$what stopped"; rm -f "$file"; return; }
    sleep 0.1
  done
  say "$what (pid $pid) did not stop within ${STOP_WAIT}s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
}

stop() {
  # nginx first, so that no new connection reaches a stopping node.
  stop_pid "$RUN/nginx.pid" nginx
  local pids=()
  for n in "${NODES[@]}"; do
    # The nodes stop in parallel: each drains its sessions within its shutdown grace.
    stop_pid "$RUN/node$n.pid" "node$n" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
}

status() {
  local pid bad=0
  for n in "${NODES[@]}"; do
    if pid="$(live_pid "$RUN/node$n.pid")"; then
      say "node$n: running (pid $pid) on 127.0.0.1:$(node_port "$n")"
    else
      say "node$n: stopped"
      bad=1
    fi
  done
  if pid="$(live_pid "$RUN/nginx.pid")"; then
    say "nginx: running (pid $pid) on 127.0.0.1:$FRONT_PORT"
  else
    say "nginx: stopped"
    bad=1
  fi
  if answers 127.0.0.1 "$FRONT_PORT"; then
    say "127.0.0.1:$FRONT_PORT answers"
  else
    say "127.0.0.1:$FRONT_PORT does not answer"
    bad=1
  fi
  return "$bad"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
