#!/usr/bin/env bash
# The main job on the embedded default: build, start the backend with a
# `sim` subchannel (an emulated 3390 DASD on a scratch image) on a temporary
# socket, run examples/demo.ccw through the frontend tool, print its JSON
# report, stop the backend.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --workspace --bins

dir=$(mktemp -d)
socket="$dir/vhost-user-ccw.sock"
RUST_LOG=${RUST_LOG:-warn} target/release/vhost-user-ccw --socket-path "$socket" --device sim &
backend=$!
stop() {
    kill "$backend" 2>/dev/null || true
    wait "$backend" 2>/dev/null || true
    rm -rf "$dir"
}
trap stop EXIT

for _ in $(seq 100); do
    [ -S "$socket" ] && break
    sleep 0.05
done

status=0
target/release/vhost-user-ccw-frontend --socket-path "$socket" "${1:-examples/demo.ccw}" || status=$?
exit "$status"
