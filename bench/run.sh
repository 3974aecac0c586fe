#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark (see bench/run.py). Needs wrk; nginx is
# used as the reference proxy when installed (apt-get install wrk nginx-light).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p aether-server -p aether-testkit
exec python3 bench/run.py "$@"
