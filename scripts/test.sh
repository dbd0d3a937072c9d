#!/usr/bin/env bash
# Sets up a fresh machine and runs every test of vhost-user-ccw: unit tests,
# the integration tests that drive the real backend binary over its socket,
# the functional tests through the patched QEMU (qtest), the real s390x
# Linux guests (Debian's 6.1 and 6.12 kernels under TCG), and a build of the
# benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The patched QEMU for the functional tests (built once, then cached).
VHOST_USER_CCW_QEMU=$(scripts/build-qemu.sh)
export VHOST_USER_CCW_QEMU
# Debian's s390x kernels with a test initramfs (fetched through apt once,
# then cached) for tests/guest_functional.rs.
VHOST_USER_CCW_GUEST_6_1=$(scripts/guest-kit.sh 6.1)
VHOST_USER_CCW_GUEST_6_12=$(scripts/guest-kit.sh 6.12)
export VHOST_USER_CCW_GUEST_6_1 VHOST_USER_CCW_GUEST_6_12
# The integration tests run the binaries from the target directory.
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# The vfio host against the real vfio-ccw driver in an s390x guest
# (scripts/vfio-lab.sh, on the 6.12 guest kit: about 5-6 minutes on a fresh
# machine, 15-30 seconds once its downloads and builds are cached).
# VHOST_USER_CCW_SKIP_VFIO_LAB=1 leaves it out.
if [ -z "${VHOST_USER_CCW_SKIP_VFIO_LAB:-}" ]; then
    cargo test -p vhost-user-ccw-tests --test vfio_lab -- --ignored 2>&1 | tee -a "$log"
fi
cargo bench --workspace --no-run
# One closing line for all test binaries together.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log" | tee "${VHOST_USER_CCW_TEST_SUMMARY:-/dev/null}"
