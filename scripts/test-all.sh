#!/usr/bin/env bash
# Runs every test of the workspace. Store servers the tests need are started here, on
# loopback, and stopped again on exit, also when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-targets
cargo test --workspace --doc
