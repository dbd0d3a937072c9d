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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# The vfio host against the real vfio-ccw driver in an s390x guest
# (scripts/vfio-lab.sh: about 3-4 minutes on a fresh machine, 15 seconds
# once its downloads and builds are cached). VHOST_USER_CCW_SKIP_VFIO_LAB=1
# leaves it out.
if [ -z "${VHOST_USER_CCW_SKIP_VFIO_LAB:-}" ]; then
    cargo test -p vhost-user-ccw-tests --test vfio_lab -- --ignored 2>&1 | tee -a "$log"
fi
cargo bench --workspace --no-run
# One closing line for all test binaries together.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log" | tee "${VHOST_USER_CCW_TEST_SUMMARY:-/dev/null}"
