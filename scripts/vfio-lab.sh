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

# Pinned package versions: the kernel the modules are built for (with its
# headers, kbuild and source of the same version), and the compiler that
# matches the project's MSRV. bookworm-backports keeps only its newest
# kernel: should the pinned one be gone, the newest 6.12 there is used.
KVER=6.12.95+deb12
KPKG=6.12.95-1~bpo12+1
RUST=1.85.0+dfsg3-1~deb12u3

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The patched QEMU comes first: it also puts bookworm-backports into apt's
# sources (the kernel packages come from there) and installs
# qemu-system-data (the s390-ccw firmware).
scripts/build-qemu.sh > /dev/null

# --- host packages (tools only; the s390x packages are downloaded, never
# installed)
if ! dpkg --print-foreign-architectures | grep -qx s390x; then
    log "adding the s390x architecture to dpkg"
    $sudo dpkg --add-architecture s390x
    rm -f "$lab/.apt-updated"
fi
apt_update() {
    if [ ! -e "$lab/.apt-updated" ]; then
        $sudo apt-get update -qq
        touch "$lab/.apt-updated"
    fi
}
if ! apt-cache show "linux-image-$KVER-s390x:s390x=$KPKG" > /dev/null 2>&1; then
    rm -f "$lab/.apt-updated"
    apt_update
fi
if ! apt-cache show "linux-image-$KVER-s390x:s390x=$KPKG" > /dev/null 2>&1; then
    KVER=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-s390x$' |
        sed -E 's/^linux-image-(\S+)-s390x .*/\1/' | sort -V | tail -n 1)
    KPKG=$(apt-cache show "linux-image-$KVER-s390x:s390x" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
    [ -n "$KVER" ] && [ -n "$KPKG" ] || { log "no Debian 6.12 s390x kernel in apt's sources"; exit 1; }
    log "the pinned kernel is gone from the archive: using $KVER ($KPKG)"
fi
need=()
for pkg in gcc-s390x-linux-gnu libc6-dev-s390x-cross gcc-12-s390x-linux-gnu kmod cpio \
    xz-utils bc make flex bison libelf-dev "linux-kbuild-$KVER" qemu-system-data; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports "${need[@]}" >&2
fi

# --- downloads
debs="$lab/debs"
mkdir -p "$debs"
# Stamps hold what they were made for: another kernel or compiler version
# redoes the step.
stamp="$KPKG $RUST"
if [ "$(cat "$debs/.done" 2>/dev/null)" != "$stamp" ]; then
    log "downloading the s390x kernel $KPKG, its source, busybox and Rust $RUST"
    apt_update
    rm -f "$debs"/*.deb
    (cd "$debs" && apt-get download \
        "linux-image-$KVER-s390x:s390x=$KPKG" "linux-headers-$KVER-s390x:s390x=$KPKG" \
        "linux-headers-$KVER-common=$KPKG" "linux-source-6.12=$KPKG" busybox-static:s390x \
        "rustc-web=$RUST" "libstd-rust-web-dev=$RUST" "libstd-rust-web-1.85:amd64=$RUST" \
        "libstd-rust-web-dev:s390x=$RUST" "libstd-rust-web-1.85:s390x=$RUST" libllvm19 >&2)
    echo "$stamp" > "$debs/.done"
fi

# --- the s390x kernel, busybox and the out-of-tree vfio_ccw modules
if [ "$(cat "$lab/ko/.done" 2>/dev/null)" != "$KPKG" ]; then
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
    echo "$KPKG" > "$lab/ko/.done"
fi

# --- Rust 1.85 for s390x (Debian's compiler with its s390x std as sysroot)
rust="$lab/rust"
if [ "$(cat "$rust/.done" 2>/dev/null)" != "$RUST" ]; then
    log "unpacking Rust $RUST with the s390x standard library"
    rm -rf "$rust" && mkdir -p "$rust/root"
    for f in "$debs"/rustc-web_*.deb "$debs"/libstd-rust-web*.deb "$debs"/libllvm19_*.deb; do
        dpkg-deb -x "$f" "$rust/root"
    done
    printf '#!/bin/sh\nexec %s/root/usr/bin/rustc --sysroot %s/root/usr "$@"\n' "$rust" "$rust" \
        > "$rust/rustc" && chmod +x "$rust/rustc"
    echo "$RUST" > "$rust/.done"
fi

# --- libseccomp for s390x: the backend's seccomp filter is compiled by
# libseccomp, linked statically here from Debian's s390x libseccomp-dev
# (downloaded and unpacked, never installed)
seccomp_lib="$lab/libseccomp/usr/lib/s390x-linux-gnu"
seccomp_ver=$(apt-cache show libseccomp-dev:s390x 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
if [ -z "$seccomp_ver" ] || [ "$(cat "$lab/libseccomp/.done" 2>/dev/null)" != "$seccomp_ver" ]; then
    log "downloading libseccomp-dev:s390x"
    [ -n "$seccomp_ver" ] || rm -f "$lab/.apt-updated"
    apt_update
    rm -rf "$lab/libseccomp" && mkdir -p "$lab/libseccomp"
    (cd "$lab/libseccomp" && apt-get download libseccomp-dev:s390x >&2 &&
        dpkg-deb -x libseccomp-dev_*_s390x.deb . && rm libseccomp-dev_*_s390x.deb)
    [ -e "$seccomp_lib/libseccomp.a" ] || { log "no libseccomp.a in libseccomp-dev:s390x"; exit 1; }
    apt-cache show libseccomp-dev:s390x | sed -n 's/^Version: //p' | head -n 1 > "$lab/libseccomp/.done"
fi

if [ "${1:-}" = prepare ]; then
    exit 0
fi

# --- vhost-user-ccw and the frontend for s390x, in a target directory of
# their own (the host build is not touched)
log "cross-building vhost-user-ccw and vhost-user-ccw-frontend for s390x"
LD_LIBRARY_PATH="$rust/root/usr/lib/x86_64-linux-gnu:$rust/root/usr/lib" \
    RUSTC="$rust/rustc" CARGO_TARGET_DIR="$lab/target" \
    CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER=s390x-linux-gnu-gcc \
    RUSTFLAGS="-C target-feature=+crt-static" \
    LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_lib" \
    cargo build --release --target s390x-unknown-linux-gnu \
    -p vhost-user-ccw -p vhost-user-ccw-frontend --bins >&2
bin="$lab/target/s390x-unknown-linux-gnu/release"

# --- initramfs: busybox, the vfio_ccw module closure, the binaries, /init
log "building the initramfs"
root=$(mktemp -d "$lab/initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
kv=$(ls "$lab/kroot/lib/modules")
moddir="$lab/kroot/lib/modules/$kv"
mkdir -p "$root/bin" "$root/lab" "$root/lib/modules/$kv/extra"
cp "$lab/bbroot/bin/busybox" "$root/bin/busybox"
for b in vhost-user-ccw vhost-user-ccw-frontend; do
    s390x-linux-gnu-strip -o "$root/bin/$b" "$bin/$b"
done
cp scripts/vfio-lab/init.sh "$root/init" && chmod 755 "$root/init"
cp scripts/vfio-lab/*.ccw "$root/lab/"
# busy.ccw: 3000 programs back to back, each waited for; the guest kills
# the frontend running it (SIGKILL) in the middle.
{
    echo "# Generated by scripts/vfio-lab.sh: READ FEATURES + READ CONFIGURATION, 3000 times."
    echo "memory size=1M"
    echo 'buffer feat at=0x2000 hex="aa aa aa aa 00"'
    echo "buffer conf at=0x3000 len=8"
    echo "ccws main at=0x1000"
    echo "ccw 0x12 flags=CC count=5 data=feat"
    echo "ccw 0x22 count=8 data=conf"
    for _ in $(seq 3000); do printf 'start\nwait timeout-ms=10000\n'; done
} > "$root/lab/busy.ccw"
cp "$lab/ko/mdev.ko" "$lab/ko/vfio_ccw.ko" "$root/lib/modules/$kv/extra/"
# The modules the two need, from the kernel package (with dependencies).
declare -A module_path=() copied=()
while read -r f; do
    n=$(basename "$f"); n=${n%.xz}; n=${n%.ko}; module_path[${n//-/_}]=$f
done < <(find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz')
add_module() {
    local n=${1//-/_} f rel d
    [ -n "${copied[$n]:-}" ] && return 0
    copied[$n]=1
    f=${module_path[$n]:-}
    if [ -z "$f" ]; then
        [ -e "$root/lib/modules/$kv/extra/$n.ko" ] && f="$root/lib/modules/$kv/extra/$n.ko"
    else
        rel=${f#"$moddir"/}
        mkdir -p "$root/lib/modules/$kv/$(dirname "$rel")"
        if [[ $f == *.xz ]]; then
            xz -dc "$f" > "$root/lib/modules/$kv/${rel%.xz}"
        else
            cp "$f" "$root/lib/modules/$kv/$rel"
        fi
    fi
    [ -n "$f" ] || { log "module $n not found"; exit 1; }
    for d in $(modinfo -F depends "$f" | tr ',' ' '); do add_module "$d"; done
}
add_module vfio_ccw
add_module vfio_iommu_type1
cp "$moddir/modules.builtin" "$moddir/modules.order" "$root/lib/modules/$kv/" 2>/dev/null || true
depmod -b "$root" "$kv"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$lab/initrd.gz"

# --- boot: a 64 MiB virtio-blk-ccw disk at 0.0.0005, the lab runs as /init
qemu=$(scripts/build-qemu.sh)
truncate -s 64M "$lab/disk.raw"
console="$lab/console.log"
log "booting the s390x guest (TCG) with $qemu"
set +e
timeout 900 "$qemu" -L /usr/share/qemu -M s390-ccw-virtio -cpu max -accel tcg -m 1024 -smp 1 \
    -nographic -no-reboot -kernel "$lab/kroot/boot/vmlinuz-$kv" -initrd "$lab/initrd.gz" \
    -append "console=ttysclp0 panic=-1 quiet audit=1" -nic none \
    -drive "file=$lab/disk.raw,if=none,id=d0,format=raw" \
    -device virtio-blk-ccw,drive=d0,devno=fe.0.0005 < /dev/null > "$console" 2>&1
qemu_rc=$?
set -e
[ -n "${VFIO_LAB_KEEP_LOG:-}" ] && cp "$console" "$VFIO_LAB_KEEP_LOG"

# --- verdict
expected=(setup backend-uuid sense-id virtio virtio-legacy halt-clear kill-mid-run after-kill after-kill-virtio
    backend-path path-sense-id device-gone mdev-removed seccomp-default seccomp-log-clean
    seccomp-log-records seccomp-kill kernel-log)
failed=0
for check in "${expected[@]}"; do
    if grep -q "^VFIO-LAB-RESULT $check pass" "$console"; then
        log "pass: $check"
    else
        log "FAIL: $check"
        failed=1
    fi
done
if ! grep -q '^VFIO-LAB-DONE' "$console"; then
    log "FAIL: the guest did not finish (qemu exit $qemu_rc)"
    failed=1
fi
if [ $failed -ne 0 ]; then
    log "console log: $console"
    tail -n 80 "$console" >&2
    exit 1
fi
log "all checks passed (console log: $console)"
