#!/usr/bin/env bash
# Runs a benchmark and prints the tables recorded in docs/benchmarks.md.
#   scripts/bench.sh            the round-trip benchmark, in both placements
#   scripts/bench.sh guest      DASD vs virtio-blk-ccw throughput in a real
#                               s390x guest (VHOST_USER_CCW_BENCH_KERNEL=6.1
#                               or 6.12, the default)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --workspace --bins

bench_binary() {
    cargo bench -p vhost-user-ccw-tests --bench "$1" --no-run >&2
    cargo bench -p vhost-user-ccw-tests --bench "$1" --no-run --message-format=json 2>/dev/null |
        sed -n "s/.*\"executable\":\"\([^\"]*$1[^\"]*\)\".*/\1/p" | tail -n 1
}

case "${1:-roundtrip}" in
roundtrip)
    bench=$(bench_binary roundtrip)
    echo "## Frontend and backend on different CPUs (taskset -c 0 / -c 1)"
    taskset -c 0 "$bench" --child-cpu 1
    echo
    echo "## Frontend and backend on the same CPU (taskset -c 0)"
    taskset -c 0 "$bench"
    ;;
guest)
    kernel=${VHOST_USER_CCW_BENCH_KERNEL:-6.12}
    VHOST_USER_CCW_QEMU=$(scripts/build-qemu.sh)
    guest=$(scripts/guest-kit.sh "$kernel")
    export VHOST_USER_CCW_QEMU VHOST_USER_CCW_BENCH_KERNEL=$kernel
    export "VHOST_USER_CCW_GUEST_${kernel/./_}=$guest"
    bench=$(bench_binary guest_throughput)
    "$bench"
    ;;
*)
    echo "usage: $0 [roundtrip|guest]" >&2
    exit 2
    ;;
esac
