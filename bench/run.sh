#!/usr/bin/env bash
# Benchmarks sessio side by side with tower-sessions, express-session and the raw store floor.
#
#   bench/run.sh                  # the full run: 3 x 10 s per cell, about 25 minutes
#   bench/run.sh --smoke          # 1 s per cell, once: checks the harness, measures nothing
#   bench/run.sh --modes bare,sessio-memory,tower-memory --duration 5
#
# Installs wrk, redis-server and Node.js if missing, starts Redis and a throwaway PostgreSQL
# on loopback pinned to core 0 with the server under test, drives it with `wrk -t1 -c32`
# pinned to core 1, prints the table (also written to $TMP and, for full runs, to
# bench/results/latest.md), and stops everything it started, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_NAME=bench
source scripts/servers.sh

apt_install wrk wrk
apt_install redis-server redis-server redis-tools
apt_install redis-cli redis-tools
apt_install taskset util-linux
apt_install node nodejs npm
apt_install npm npm

profile=release
for arg in "$@"; do [ "$arg" = "--smoke" ] && profile=debug; done
if [ "$profile" = release ]; then
  cargo build --release -p sessio-bench
else
  cargo build -p sessio-bench
fi
log "installing express-session and connect-redis"
(cd bench/express && npm install --no-audit --no-fund --silent)

start_redis taskset -c 0
start_postgres taskset -c 0

out="$TMP/benchmarks.md"
"target/$profile/sessio-bench-run" \
  --server "target/$profile/sessio-bench-server" \
  --express bench/express \
  --redis "$REDIS_URL" \
  --postgres "$POSTGRES_URL" \
  --scratch "$TMP" \
  --out "$out" \
  "$@"
if [ "$profile" = release ]; then
  mkdir -p bench/results
  { echo "<!-- $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) -->"; cat "$out"; } \
    > bench/results/latest.md
  log "table written to bench/results/latest.md"
fi
