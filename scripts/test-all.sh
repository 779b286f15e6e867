#!/usr/bin/env bash
# Runs every test of the workspace against real servers.
#
# Installs what is missing (redis-server, chromium, chromium-driver through apt, cargo-fuzz
# through cargo; PostgreSQL binaries must be on the machine), starts a throwaway PostgreSQL
# cluster, a Redis server and a three-node Redis Cluster on free loopback ports in a
# temporary directory, runs the tests (the demo's browser test drives Chromium), fuzzes the
# cookie decoders for a bounded time, runs the benchmark harness in smoke mode, and stops
# every server again on exit, also when a test fails. Tests that kill their store start
# private servers under the same directory.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_NAME=test-all
source scripts/servers.sh

apt_install redis-server redis-server redis-tools
apt_install redis-cli redis-tools
apt_install chromium chromium
apt_install chromedriver chromium-driver

start_postgres
start_redis
start_redis_cluster
export SESSIO_TEST_POSTGRES_URL="$POSTGRES_URL"
export SESSIO_TEST_REDIS_URL="$REDIS_URL"
export SESSIO_TEST_REDIS_CLUSTER="$REDIS_CLUSTER_NODES"
export SESSIO_TEST_TMP="$TMP"

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

# The benchmark harness, one second per cell, so that it never rots; it asserts nothing
# about speed.
bench/run.sh --smoke
