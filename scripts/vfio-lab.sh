#!/usr/bin/env bash
# The vfio host subchannel against the real Linux vfio-ccw driver, inside an
# s390x guest under QEMU's TCG emulation:
#
#   * Debian's 6.12 s390x kernel (bookworm-backports) with mdev.ko and
#     vfio_ccw.ko built out of tree from Debian's linux-source-6.12 (Debian
#     ships the kernel with CONFIG_VFIO_CCW unset);
#   * vhost-user-ccw and vhost-user-ccw-frontend cross-built for s390x with
#     Debian's Rust 1.85 compiler and s390x standard library (apt-get
#     download, unpacked, nothing installed into the host toolchain), linked
#     statically, in a target directory of their own;
#   * a busybox initramfs whose /init binds the subchannel of a
#     virtio-blk-ccw disk to vfio_ccw, creates the mdev, starts the backend
#     on it and runs the scripts in scripts/vfio-lab/ with the frontend;
#   * one boot of the patched QEMU (scripts/build-qemu.sh); the console log
#     is checked for every step's marker.
#
# Everything downloaded or built is cached outside the repository in
#   ${VHOST_USER_CCW_CACHE:-~/.cache/vhost-user-ccw}/vfio-lab/
# Usage: scripts/vfio-lab.sh            prepare (cached), build, boot, check
#        VFIO_LAB_KEEP_LOG=PATH ...     also copy the console log there
# Exit status 0 only if every check in the guest passed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

cache=${VHOST_USER_CCW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-ccw}
lab="$cache/vfio-lab"
mkdir -p "$lab"
log() { echo "vfio-lab: $*" >&2; }

# Pinned package versions: the kernel the modules are built for, its
# source, and the compiler that matches the project's MSRV.
KVER=6.12.95+deb12
KPKG=6.12.95-1~bpo12+1
RUST=1.85.0+dfsg3-1~deb12u3

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# --- host packages (tools only; the s390x packages are downloaded, never
# installed)
if ! dpkg --print-foreign-architectures | grep -qx s390x; then
    log "adding the s390x architecture to dpkg"
    $sudo dpkg --add-architecture s390x
    rm -f "$lab/.apt-updated"
fi
need=()
for pkg in gcc-s390x-linux-gnu libc6-dev-s390x-cross gcc-12-s390x-linux-gnu kmod cpio \
    xz-utils bc make flex bison libelf-dev "linux-kbuild-$KVER" qemu-system-data; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    if [ ! -e "$lab/.apt-updated" ]; then
        $sudo apt-get update -qq
        touch "$lab/.apt-updated"
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports "${need[@]}" >&2
fi

# --- downloads
debs="$lab/debs"
mkdir -p "$debs"
if [ ! -e "$debs/.done" ]; then
    log "downloading the s390x kernel, its source, busybox and Rust $RUST"
    [ -e "$lab/.apt-updated" ] || { $sudo apt-get update -qq; touch "$lab/.apt-updated"; }
    (cd "$debs" && apt-get download \
        "linux-image-$KVER-s390x:s390x=$KPKG" "linux-headers-$KVER-s390x:s390x=$KPKG" \
        "linux-headers-$KVER-common=$KPKG" "linux-source-6.12=$KPKG" busybox-static:s390x \
        "rustc-web=$RUST" "libstd-rust-web-dev=$RUST" "libstd-rust-web-1.85:amd64=$RUST" \
        "libstd-rust-web-dev:s390x=$RUST" "libstd-rust-web-1.85:s390x=$RUST" libllvm19 >&2)
    touch "$debs/.done"
fi

# --- the s390x kernel, busybox and the out-of-tree vfio_ccw modules
if [ ! -e "$lab/ko/.done" ]; then
    log "building mdev.ko and vfio_ccw.ko for $KVER"
    rm -rf "$lab/kroot" "$lab/bbroot" "$lab/hdr" "$lab/oot" "$lab/ko"
    mkdir -p "$lab/kroot" "$lab/bbroot" "$lab/hdr/usr/lib" "$lab/oot/mdev" "$lab/oot/vfio_ccw" "$lab/ko"
    dpkg-deb -x "$debs"/linux-image-"$KVER"-s390x_*.deb "$lab/kroot"
    dpkg-deb -x "$debs"/busybox-static_*.deb "$lab/bbroot"
    dpkg-deb -x "$debs"/linux-headers-"$KVER"-s390x_*.deb "$lab/hdr"
    dpkg-deb -x "$debs"/linux-headers-"$KVER"-common_*.deb "$lab/hdr"
    ln -sfn "/usr/lib/linux-kbuild-$KVER" "$lab/hdr/usr/lib/linux-kbuild-$KVER"
    kdir="$lab/hdr/usr/src/linux-headers-$KVER-s390x"
    sed -i "s#include /usr/src/#include $lab/hdr/usr/src/#" "$kdir/Makefile"
    src="$lab/oot/src"
    mkdir -p "$src"
    dpkg-deb --fsys-tarfile "$debs"/linux-source-6.12_*.deb |
        tar -xO ./usr/src/linux-source-6.12.tar.xz |
        tar -xJ -C "$src" --wildcards 'linux-source-6.12/drivers/s390/cio/*' \
            'linux-source-6.12/drivers/vfio/mdev/*'
    cp "$src"/linux-source-6.12/drivers/vfio/mdev/*.[ch] "$lab/oot/mdev/"
    cp "$src"/linux-source-6.12/drivers/s390/cio/*.[ch] "$lab/oot/vfio_ccw/"
    printf 'mdev-y := mdev_core.o mdev_sysfs.o mdev_driver.o\nobj-m += mdev.o\n' \
        > "$lab/oot/mdev/Kbuild"
    printf '%s\n' 'CFLAGS_vfio_ccw_trace.o := -I$(src)' \
        'vfio_ccw-y := vfio_ccw_drv.o vfio_ccw_cp.o vfio_ccw_ops.o vfio_ccw_fsm.o vfio_ccw_async.o vfio_ccw_trace.o vfio_ccw_chp.o' \
        'obj-m += vfio_ccw.o' > "$lab/oot/vfio_ccw/Kbuild"
    make -s -C "$kdir" M="$lab/oot/mdev" -j"$(nproc)" modules >&2
    make -s -C "$kdir" M="$lab/oot/vfio_ccw" KBUILD_EXTRA_SYMBOLS="$lab/oot/mdev/Module.symvers" \
        -j"$(nproc)" modules >&2
    s390x-linux-gnu-strip --strip-debug -o "$lab/ko/mdev.ko" "$lab/oot/mdev/mdev.ko"
    s390x-linux-gnu-strip --strip-debug -o "$lab/ko/vfio_ccw.ko" "$lab/oot/vfio_ccw/vfio_ccw.ko"
    touch "$lab/ko/.done"
fi

# --- Rust 1.85 for s390x (Debian's compiler with its s390x std as sysroot)
rust="$lab/rust"
if [ ! -e "$rust/.done" ]; then
    log "unpacking Rust $RUST with the s390x standard library"
    rm -rf "$rust" && mkdir -p "$rust/root"
    for f in "$debs"/rustc-web_*.deb "$debs"/libstd-rust-web*.deb "$debs"/libllvm19_*.deb; do
        dpkg-deb -x "$f" "$rust/root"
    done
    printf '#!/bin/sh\nexec %s/root/usr/bin/rustc --sysroot %s/root/usr "$@"\n' "$rust" "$rust" \
        > "$rust/rustc" && chmod +x "$rust/rustc"
    touch "$rust/.done"
fi

if [ "${1:-}" = prepare ]; then
    exit 0
fi
