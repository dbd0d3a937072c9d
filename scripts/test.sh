#!/usr/bin/env bash
# Sets up a fresh machine and runs every test of vhost-user-ccw: unit tests,
# the integration tests that drive the real backend binary over its socket,
# the functional tests through the patched QEMU (qtest), and a build of the
# benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The patched QEMU for the functional tests (built once, then cached).
VHOST_USER_CCW_QEMU=$(scripts/build-qemu.sh)
export VHOST_USER_CCW_QEMU
# The integration tests run the binaries from the target directory.
cargo build --workspace --bins
cargo test --workspace
cargo bench --workspace --no-run
