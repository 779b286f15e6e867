# Shared by scripts/test-all.sh and bench/run.sh: install what is missing, start throwaway
# PostgreSQL and Redis servers on free loopback ports under $TMP, stop them all on exit.
# Source it after setting LOG_NAME; it sets TMP and a cleanup trap.

log() { printf '[%s] %s\n' "${LOG_NAME:-servers}" "$*" >&2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sessio.XXXXXX")
chmod 755 "$TMP"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  # Whatever else was started under $TMP (private servers of tests, benchmark servers).
  pkill -9 -f "$TMP" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# apt_install COMMAND PACKAGE...: installs the packages unless COMMAND is already there.
apt_install() {
  local command=$1; shift
  command -v "$command" >/dev/null && return 0
  log "installing $*"
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() {
  if [ -n "${SESSIO_PG_BINDIR:-}" ]; then echo "$SESSIO_PG_BINDIR"; return; fi
  if command -v initdb >/dev/null; then
    local dir
    dir=$(dirname "$(readlink -f "$(command -v initdb)")")
    if [ -x "$dir/postgres" ]; then echo "$dir"; return; fi
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

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

# start_postgres [PREFIX...]: a throwaway cluster; PREFIX (like `taskset -c 0`) wraps the
# server process. Sets POSTGRES_URL and SESSIO_PG_BINDIR.
start_postgres() {
  local bin port as=()
  bin=$(pg_bindir)
  [ -x "$bin/postgres" ] || { log "PostgreSQL binaries not found; set SESSIO_PG_BINDIR"; return 1; }
  # PostgreSQL refuses to run as root: run it as nobody then.
  if [ "$(id -u)" -eq 0 ]; then as=(setpriv --reuid=nobody --regid=nogroup --clear-groups); fi
  port=$(free_port)
  mkdir -p "$TMP/postgres"
  [ "$(id -u)" -ne 0 ] || chown nobody:nogroup "$TMP/postgres"
  "${as[@]}" "$bin/initdb" -D "$TMP/postgres/data" -U postgres --auth=trust -E UTF8 --no-sync \
    >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log" >&2; return 1; }
  "$@" "${as[@]}" "$bin/postgres" -D "$TMP/postgres/data" -p "$port" -k "$TMP/postgres" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=400 \
    >"$TMP/postgres.log" 2>&1 &
  PIDS+=($!); disown
  wait_for PostgreSQL "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"
  POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  export SESSIO_PG_BINDIR="$bin"
  log "PostgreSQL on 127.0.0.1:$port"
}

# start_redis [PREFIX...]: sets REDIS_URL.
start_redis() {
  local port
  port=$(free_port)
  mkdir -p "$TMP/redis"
  "$@" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP/redis" \
    >"$TMP/redis.log" 2>&1 &
  PIDS+=($!); disown
  wait_for Redis redis-cli -p "$port" ping
  REDIS_URL="redis://127.0.0.1:$port/"
  log "Redis on 127.0.0.1:$port"
}

# start_redis_cluster: three nodes joined into one cluster; sets REDIS_CLUSTER_NODES
# (comma-separated redis:// URLs).
start_redis_cluster() {
  local nodes=() port first
  for i in 1 2 3; do
    port=$(free_port)
    mkdir -p "$TMP/cluster-$i"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$TMP/cluster-$i/nodes.conf" --cluster-node-timeout 5000 \
      --save '' --appendonly no --dir "$TMP/cluster-$i" >"$TMP/cluster-$i.log" 2>&1 &
    PIDS+=($!); disown
    wait_for "Redis Cluster node $i" redis-cli -p "$port" ping
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$TMP/cluster-create.log" 2>&1 \
    || { cat "$TMP/cluster-create.log" >&2; return 1; }
  first=${nodes[0]##*:}
  wait_for "Redis Cluster" bash -c "redis-cli -p $first cluster info | grep -q cluster_state:ok"
  REDIS_CLUSTER_NODES=$(IFS=,; echo "${nodes[*]/#/redis://}")
  log "Redis Cluster on ${nodes[*]}"
}
