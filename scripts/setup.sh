#!/usr/bin/env bash
# Installs what building and testing vhost-user-ccw needs on a fresh Debian
# machine. Idempotent; run as root (CI is) or with sudo available.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v systemd-socket-activate >/dev/null 2>&1 || need_apt+=(systemd)
# The operations tests validate the libvirt example with libvirt's schema.
command -v virt-xml-validate >/dev/null 2>&1 || need_apt+=(libvirt-clients)
command -v xmllint >/dev/null 2>&1 || need_apt+=(libxml2-utils)
# e2fsck and debugfs check the guest's filesystem in an exported image.
command -v debugfs >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v sha256sum >/dev/null 2>&1 || need_apt+=(coreutils)
# The seccomp filter is compiled by libseccomp (the libseccomp crate links it).
[ -e /usr/include/seccomp.h ] || need_apt+=(libseccomp-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install the Rust toolchain (rustup, or Debian's cargo >= 1.85) and retry." >&2
    exit 1
fi
