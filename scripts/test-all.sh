#!/usr/bin/env bash
# Runs every test of the workspace against real servers.
#
# Installs what is missing (redis-server, chromium and chromium-driver through apt;
# PostgreSQL binaries must be on the machine), starts a throwaway PostgreSQL cluster, a Redis
# server and a three-node Redis Cluster on free loopback ports in a temporary directory, runs
# the tests (the demo's browser test drives Chromium), fuzzes the cookie decoders for a bounded
# time, and stops every server again on exit, also when a test fails. Tests that kill their store start private
# servers under the same directory.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test-all] %s\n' "$*" >&2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sessio-test.XXXXXX")
chmod 755 "$TMP"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  # Private servers started by tests live under $TMP too.
  pkill -9 -f "$TMP" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

missing=()
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server redis-tools)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

pg_bindir() {
  if [ -n "${SESSIO_PG_BINDIR:-}" ]; then echo "$SESSIO_PG_BINDIR"; return; fi
  if command -v initdb >/dev/null; then
    local dir
    dir=$(dirname "$(readlink -f "$(command -v initdb)")")
    if [ -x "$dir/postgres" ]; then echo "$dir"; return; fi
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
PG_BIN=$(pg_bindir)
[ -x "$PG_BIN/postgres" ] || { log "PostgreSQL binaries not found; set SESSIO_PG_BINDIR"; exit 1; }

# A port nothing listens on, below 45536 and with its +10000 cluster bus port free too
# (Redis Cluster needs both): try random ones until connections are refused.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 25000))
    if ! listening "$port" && ! listening $((port + 10000)); then echo "$port"; return; fi
  done
}

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "$what did not start"; return 1
}

# PostgreSQL refuses to run as root: run it as nobody then.
PG_AS=()
if [ "$(id -u)" -eq 0 ]; then PG_AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups); fi
PG_PORT=$(free_port)
mkdir -p "$TMP/postgres"
[ "$(id -u)" -eq 0 ] && chown nobody:nogroup "$TMP/postgres"
"${PG_AS[@]}" "$PG_BIN/initdb" -D "$TMP/postgres/data" -U postgres --auth=trust -E UTF8 --no-sync >"$TMP/initdb.log" 2>&1 \
  || { cat "$TMP/initdb.log" >&2; exit 1; }
"${PG_AS[@]}" "$PG_BIN/postgres" -D "$TMP/postgres/data" -p "$PG_PORT" -k "$TMP/postgres" \
  -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=400 \
  >"$TMP/postgres.log" 2>&1 &
PIDS+=($!); disown
wait_for PostgreSQL "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
export SESSIO_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
log "PostgreSQL on 127.0.0.1:$PG_PORT"

REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP/redis" \
  >"$TMP/redis.log" 2>&1 &
PIDS+=($!); disown
wait_for Redis redis-cli -p "$REDIS_PORT" ping
export SESSIO_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/"
log "Redis on 127.0.0.1:$REDIS_PORT"

CLUSTER_NODES=()
for i in 1 2 3; do
  port=$(free_port)
  mkdir -p "$TMP/cluster-$i"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$TMP/cluster-$i/nodes.conf" --cluster-node-timeout 5000 \
    --save '' --appendonly no --dir "$TMP/cluster-$i" >"$TMP/cluster-$i.log" 2>&1 &
  PIDS+=($!); disown
  wait_for "Redis Cluster node $i" redis-cli -p "$port" ping
  CLUSTER_NODES+=("127.0.0.1:$port")
done
redis-cli --cluster create "${CLUSTER_NODES[@]}" --cluster-yes >"$TMP/cluster-create.log" 2>&1 \
  || { cat "$TMP/cluster-create.log" >&2; exit 1; }
first_port=${CLUSTER_NODES[0]##*:}
wait_for "Redis Cluster" bash -c "redis-cli -p $first_port cluster info | grep -q cluster_state:ok"
SESSIO_TEST_REDIS_CLUSTER=$(IFS=,; echo "${CLUSTER_NODES[*]/#/redis://}")
export SESSIO_TEST_REDIS_CLUSTER
log "Redis Cluster on ${CLUSTER_NODES[*]}"

export SESSIO_TEST_TMP="$TMP" SESSIO_PG_BINDIR="$PG_BIN"

cargo test --workspace --all-targets
cargo test --workspace --doc

# The cookie decoders under libFuzzer for a bounded time. Without a sanitizer, which needs a
# nightly compiler: the decoders are safe Rust, so what fuzzing looks for is a panic or a
# cookie that opens when it must not.
command -v cargo-fuzz >/dev/null || { log "installing cargo-fuzz"; cargo install cargo-fuzz --locked --quiet; }
for target in open_cookie decode_payload; do
  mkdir -p "$TMP/fuzz/$target"
  cp fuzz/seeds/"$target"/* "$TMP/fuzz/$target/"
  log "fuzzing $target for ${SESSIO_FUZZ_SECONDS:-20}s"
  if ! (cd fuzz && cargo fuzz run --sanitizer none "$target" "$TMP/fuzz/$target" -- \
        -max_total_time="${SESSIO_FUZZ_SECONDS:-20}" >"$TMP/fuzz-$target.log" 2>&1); then
    tail -n 40 "$TMP/fuzz-$target.log" >&2
    log "fuzzing $target failed; the crashing input is under fuzz/artifacts/$target"
    exit 1
  fi
  grep -E "^Done" "$TMP/fuzz-$target.log" >&2
done
