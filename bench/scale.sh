#!/usr/bin/env bash
# Builds the release server and runs the scale benchmark (see bench/scale.py). Needs `psql` and
# a PostgreSQL at SCALE_PG (default postgres://postgres@127.0.0.1:5432/test); SCALE_ROWS sets
# the number of usage records (default 5000000).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p aether-server
export AETHER_BIN="${AETHER_BIN:-$target/release/aether}"
exec python3 bench/scale.py "$@"
