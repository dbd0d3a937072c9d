#!/usr/bin/env bash
# Runs the round-trip benchmark in both placements and prints the tables
# recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --workspace --bins
cargo bench -p vhost-user-ccw-tests --bench roundtrip --no-run
bench=$(cargo bench -p vhost-user-ccw-tests --bench roundtrip --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*roundtrip[^"]*\)".*/\1/p' | tail -n 1)

echo "## Frontend and backend on different CPUs (taskset -c 0 / -c 1)"
taskset -c 0 "$bench" --child-cpu 1
echo
echo "## Frontend and backend on the same CPU (taskset -c 0)"
taskset -c 0 "$bench"
