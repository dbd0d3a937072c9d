#!/usr/bin/env bash
# The vfio host subchannel against the real Linux vfio-ccw driver, inside an
# s390x guest under QEMU's TCG emulation:
#
#   * the guest kit of the guest tests (scripts/guest-kit.sh 6.12: Debian's
#     6.12 s390x kernel from bookworm-backports, busybox, guest-init.sh as
#     /init) with mdev.ko and vfio_ccw.ko, built out of tree here from
#     Debian's linux-source-6.12 for that same kernel (Debian ships it with
#     CONFIG_VFIO_CCW unset), and vfio_iommu_type1;
#   * vhost-user-ccw and vhost-user-ccw-frontend cross-built for s390x with
#     Debian's Rust 1.85 compiler and s390x standard library (apt-get
#     download, unpacked, nothing installed into the host toolchain), linked
#     statically, in a target directory of their own;
#   * a second cpio archive appended to the kit's initramfs: the two
#     binaries, scripts/vfio-lab/run.sh (run by guest-init.sh's `run` step)
#     and the channel-program scripts of scripts/vfio-lab/;
#   * one boot of the patched QEMU (scripts/build-qemu.sh) with two
#     subchannels: a virtio-blk-ccw disk at 0.0.0005, and at 0.0.0006 a
#     vhost-user-subchannel served by the host's own vhost-user-ccw (the
#     x86 build) as a `sim` buffer device that takes SLOW_LATENCY_US per
#     CCW, so that programs really run while HALT, CLEAR and a killed
#     frontend meet them. The guest binds both to vfio_ccw; the console log
#     is checked for every step's marker.
#
# Downloads and builds are cached outside the repository in
#   ${VHOST_USER_CCW_CACHE:-~/.cache/vhost-user-ccw}/vfio-lab/
# (the kernel and busybox in the guest kit's cache); each run works in a
# temporary directory of its own.
# Usage: scripts/vfio-lab.sh            prepare (cached), build, boot, check
#        scripts/vfio-lab.sh prepare    only the cached preparation
#        VFIO_LAB_KEEP_LOG=PATH ...     also copy the console log there
#        VHOST_USER_CCW_BIN_DIR=DIR     the host's vhost-user-ccw from DIR
#                                       (default: cargo build, target/debug)
# Exit status 0 only if every check in the guest passed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

cache=${VHOST_USER_CCW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-ccw}
lab="$cache/vfio-lab"
mkdir -p "$lab"
log() { echo "vfio-lab: $*" >&2; }

# The compiler that matches the project's MSRV (pinned); the kernel is the
# guest kit's.
RUST=1.85.0+dfsg3-1~deb12u3
# Time the slow subchannel's device takes per CCW: the 200-CCW programs of
# scripts/vfio-lab/*.ccw.in run for 6 s (a margin of seconds for a slow guest).
SLOW_LATENCY_US=30000

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The patched QEMU comes first: it also puts bookworm-backports into apt's
# sources (the kernel packages come from there) and installs
# qemu-system-data (the s390-ccw firmware).
scripts/build-qemu.sh > /dev/null

# --- the guest kernel: the guest kit's 6.12 (it also sets up the s390x
# foreign architecture and bookworm-backports). The modules are built for
# its release and package version.
plain_kit=$(scripts/guest-kit.sh 6.12)
KVER=$(sed 's/-s390x$//' "$plain_kit/release")
KPKG=$(cat "$plain_kit/version")
# The kit's kernel is pinned until its packages leave the archive; the
# headers, source and kbuild of that same version are needed here. When
# they are gone, drop the kit's pin so that the next run takes the suite's
# current kernel (as guest-kit.sh does when its own download fails).
kernel_gone() {
    rm -f "$cache/guest-debs/bookworm-backports.pin"
    log "the packages of kernel $KPKG could not be fetched (no longer in bookworm-backports, or the download failed): its pin is dropped; run again to use bookworm-backports' current kernel"
    exit 1
}

# --- host packages (tools only; the s390x packages are downloaded, never
# installed)
# Package lists are refreshed at most once per run, and only when
# something has to be installed or downloaded.
apt_updated=""
apt_update() {
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
}
need=()
for pkg in gcc-s390x-linux-gnu libc6-dev-s390x-cross gcc-12-s390x-linux-gnu \
    bc make flex bison libelf-dev "linux-kbuild-$KVER" qemu-system-data; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_update
    if ! apt-cache show "linux-kbuild-$KVER" > /dev/null 2>&1; then
        kernel_gone
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        -t bookworm-backports "${need[@]}" >&2
fi

# --- downloads: the kernel's headers and source, Rust
debs="$lab/debs"
mkdir -p "$debs"
# Stamps hold what they were made for: another kernel or compiler version
# redoes the step.
stamp="$KPKG $RUST"
if [ "$(cat "$debs/.done" 2>/dev/null)" != "$stamp" ]; then
    log "downloading the headers and source of the s390x kernel $KPKG and Rust $RUST"
    apt_update
    rm -f "$debs"/*.deb
    (cd "$debs" && apt-get download \
        "linux-headers-$KVER-s390x:s390x=$KPKG" "linux-headers-$KVER-common=$KPKG" \
        "linux-source-6.12=$KPKG" >&2) || kernel_gone
    (cd "$debs" && apt-get download \
        "rustc-web=$RUST" "libstd-rust-web-dev=$RUST" "libstd-rust-web-1.85:amd64=$RUST" \
        "libstd-rust-web-dev:s390x=$RUST" "libstd-rust-web-1.85:s390x=$RUST" libllvm19 >&2)
    echo "$stamp" > "$debs/.done"
fi

# --- the out-of-tree vfio_ccw modules
ko="$lab/ko-$KPKG"
if [ ! -e "$ko/.done" ]; then
    log "building mdev.ko and vfio_ccw.ko for $KVER"
    build=$(mktemp -d "$lab/ko-build.XXXXXX")
    # A failed build leaves nothing in the cache (cleanup replaces this
    # trap below).
    trap 'rm -rf "$build"' EXIT
    mkdir -p "$build/hdr/usr/lib" "$build/oot/mdev" "$build/oot/vfio_ccw" "$build/ko"
    dpkg-deb -x "$debs"/linux-headers-"$KVER"-s390x_*.deb "$build/hdr"
    dpkg-deb -x "$debs"/linux-headers-"$KVER"-common_*.deb "$build/hdr"
    ln -sfn "/usr/lib/linux-kbuild-$KVER" "$build/hdr/usr/lib/linux-kbuild-$KVER"
    kdir="$build/hdr/usr/src/linux-headers-$KVER-s390x"
    sed -i "s#include /usr/src/#include $build/hdr/usr/src/#" "$kdir/Makefile"
    src="$build/oot/src"
    mkdir -p "$src"
    dpkg-deb --fsys-tarfile "$debs"/linux-source-6.12_*.deb |
        tar -xO ./usr/src/linux-source-6.12.tar.xz |
        tar -xJ -C "$src" --wildcards 'linux-source-6.12/drivers/s390/cio/*' \
            'linux-source-6.12/drivers/vfio/mdev/*'
    cp "$src"/linux-source-6.12/drivers/vfio/mdev/*.[ch] "$build/oot/mdev/"
    cp "$src"/linux-source-6.12/drivers/s390/cio/*.[ch] "$build/oot/vfio_ccw/"
    printf 'mdev-y := mdev_core.o mdev_sysfs.o mdev_driver.o\nobj-m += mdev.o\n' \
        > "$build/oot/mdev/Kbuild"
    printf '%s\n' 'CFLAGS_vfio_ccw_trace.o := -I$(src)' \
        'vfio_ccw-y := vfio_ccw_drv.o vfio_ccw_cp.o vfio_ccw_ops.o vfio_ccw_fsm.o vfio_ccw_async.o vfio_ccw_trace.o vfio_ccw_chp.o' \
        'obj-m += vfio_ccw.o' > "$build/oot/vfio_ccw/Kbuild"
    make -s -C "$kdir" M="$build/oot/mdev" -j"$(nproc)" modules >&2
    make -s -C "$kdir" M="$build/oot/vfio_ccw" KBUILD_EXTRA_SYMBOLS="$build/oot/mdev/Module.symvers" \
        -j"$(nproc)" modules >&2
    s390x-linux-gnu-strip --strip-debug -o "$build/ko/mdev.ko" "$build/oot/mdev/mdev.ko"
    s390x-linux-gnu-strip --strip-debug -o "$build/ko/vfio_ccw.ko" "$build/oot/vfio_ccw/vfio_ccw.ko"
    touch "$build/ko/.done"
    rm -rf "$ko"
    mv "$build/ko" "$ko"
    rm -rf "$build"
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
    apt_update
    rm -rf "$lab/libseccomp" && mkdir -p "$lab/libseccomp"
    (cd "$lab/libseccomp" && apt-get download libseccomp-dev:s390x >&2 &&
        dpkg-deb -x libseccomp-dev_*_s390x.deb . && rm libseccomp-dev_*_s390x.deb)
    [ -e "$seccomp_lib/libseccomp.a" ] || { log "no libseccomp.a in libseccomp-dev:s390x"; exit 1; }
    apt-cache show libseccomp-dev:s390x | sed -n 's/^Version: //p' | head -n 1 > "$lab/libseccomp/.done"
fi

# --- the guest kit with the vfio modules (cached by the kit)
kit=$(scripts/guest-kit.sh 6.12 "$ko/mdev.ko" "$ko/vfio_ccw.ko" vfio_iommu_type1)

if [ "${1:-}" = prepare ]; then
    exit 0
fi

# --- vhost-user-ccw and the frontend for s390x, in a target directory of
# their own (the host build is not touched); the host's vhost-user-ccw for
# the slow subchannel
log "cross-building vhost-user-ccw and vhost-user-ccw-frontend for s390x"
LD_LIBRARY_PATH="$rust/root/usr/lib/x86_64-linux-gnu:$rust/root/usr/lib" \
    RUSTC="$rust/rustc" CARGO_TARGET_DIR="$lab/target" \
    CARGO_TARGET_S390X_UNKNOWN_LINUX_GNU_LINKER=s390x-linux-gnu-gcc \
    RUSTFLAGS="-C target-feature=+crt-static" \
    LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_lib" \
    cargo build --release --target s390x-unknown-linux-gnu \
    -p vhost-user-ccw -p vhost-user-ccw-frontend --bins >&2
bin="$lab/target/s390x-unknown-linux-gnu/release"
if [ -n "${VHOST_USER_CCW_BIN_DIR:-}" ]; then
    host_backend="$VHOST_USER_CCW_BIN_DIR/vhost-user-ccw"
else
    cargo build -p vhost-user-ccw --bin vhost-user-ccw >&2
    host_backend="${CARGO_TARGET_DIR:-$repo/target}/debug/vhost-user-ccw"
fi
[ -x "$host_backend" ] || { log "no host backend at $host_backend"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vfio-lab.XXXXXX")
slow_backend=""
cleanup() {
    [ -z "$slow_backend" ] || kill "$slow_backend" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- the lab's archive, appended to the kit's initramfs: the binaries,
# run.sh and the channel-program scripts (*.ccw.in with the slow program
# expanded)
log "building the initramfs"
root="$work/overlay"
mkdir -p "$root/bin" "$root/lab"
for b in vhost-user-ccw vhost-user-ccw-frontend; do
    s390x-linux-gnu-strip -o "$root/bin/$b" "$bin/$b"
done
cp scripts/vfio-lab/run.sh scripts/vfio-lab/*.ccw "$root/lab/"
{
    echo "buffer ids at=0x10000 len=1600 fill=0xaa"
    echo "ccws main at=0x1000"
    for i in $(seq 0 198); do echo "ccw sense-id flags=CC|SLI count=8 data=ids+$((8 * i))"; done
    echo "ccw sense-id flags=SLI count=8 data=ids+1592"
} > "$work/slow-program"
for f in scripts/vfio-lab/*.ccw.in; do
    sed -e "/^@SLOW-PROGRAM@\$/{r $work/slow-program" -e 'd}' "$f" > "$root/lab/$(basename "$f" .in)"
done
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$work/overlay.gz"
cat "$kit/initrd.gz" "$work/overlay.gz" > "$work/initrd.gz"

# --- the slow subchannel's backend on the host
"$host_backend" --socket-path "$work/slow.sock" \
    --device "sim,device=buffer,devno=0x0006,latency-us=$SLOW_LATENCY_US" \
    > "$work/slow-backend.log" 2>&1 &
slow_backend=$!
for _ in $(seq 100); do [ -S "$work/slow.sock" ] && break; sleep 0.1; done
[ -S "$work/slow.sock" ] || { log "the host backend did not start"; cat "$work/slow-backend.log" >&2; exit 1; }

# --- boot: the virtio-blk-ccw disk at 0.0.0005, the slow subchannel at
# 0.0.0006; guest-init.sh's run step runs /lab/run.sh
qemu=$(scripts/build-qemu.sh)
truncate -s 64M "$work/disk.raw"
console="$work/console.log"
log "booting the s390x guest (TCG) with $qemu"
set +e
timeout 900 "$qemu" -L /usr/share/qemu -nodefaults -no-reboot -display none \
    -serial stdio -monitor none -accel tcg -cpu max -smp 1 \
    -machine s390-ccw-virtio,memory-backend=mem \
    -object memory-backend-memfd,id=mem,size=1G,share=on -m 1G \
    -kernel "$kit/vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttysclp0 panic=-1 loglevel=1 audit=1 vuc.steps=run vuc.run=/lab/run.sh" \
    -drive "file=$work/disk.raw,if=none,id=d0,format=raw" \
    -device virtio-blk-ccw,drive=d0,devno=fe.0.0005 \
    -chardev "socket,id=cs0,path=$work/slow.sock,reconnect-ms=100" \
    -device vhost-user-subchannel,chardev=cs0,devno=fe.0.0006 < /dev/null > "$console" 2>&1
qemu_rc=$?
set -e
{
    echo "=== host backend of the slow subchannel"
    cat "$work/slow-backend.log"
} >> "$console"
[ -n "${VFIO_LAB_KEEP_LOG:-}" ] && cp "$console" "$VFIO_LAB_KEEP_LOG"

# --- verdict
expected=(setup backend-uuid sense-id virtio virtio-legacy halt-clear
    slow-setup slow-backend slow-sense-id halt-running halt-partial clear-running clear-partial
    kill-mid-run after-kill reopen backend-path path-sense-id device-gone mdev-removed
    seccomp-default seccomp-log-clean seccomp-log-records seccomp-kill kernel-log)
failed=0
for check in "${expected[@]}"; do
    if grep -q "^VFIO-LAB-RESULT $check pass" "$console"; then
        log "pass: $check"
    else
        log "FAIL: $check"
        failed=1
    fi
done
if ! grep -q '^VFIO-LAB-DONE' "$console" || ! grep -q '^@@VUC-END ok' "$console"; then
    log "FAIL: the guest did not finish (qemu exit $qemu_rc)"
    failed=1
fi
if [ $failed -ne 0 ]; then
    keep="$lab/console.log"
    cp "$console" "$keep"
    log "console log: $keep"
    tail -n 80 "$console" >&2
    exit 1
fi
log "all checks passed"
