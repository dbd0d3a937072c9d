#!/usr/bin/env bash
# Prepares a real s390x Linux guest for the guest tests: Debian's s390x
# kernel and busybox-static, fetched through apt as a foreign architecture
# (`apt-get download`, `dpkg-deb -x`; nothing is installed into the host),
# and a small initramfs with the DASD / virtio-blk / ext2 module closure and
# scripts/guest-init.sh as /init.
#
#   scripts/guest-kit.sh KERNEL [EXTRA.ko | MODULE ...]
#
# KERNEL is 6.1 (bookworm's linux-image-s390x) or 6.12 (bookworm-backports').
# EXTRA.ko are further modules (built for that kernel, e.g. out of tree) to
# put in the initramfs; MODULE (a bare name) is a further module of the
# kernel package. Both come with their dependencies and are loaded by name
# like the others.
#
# Prints one directory, cached by the Debian package versions and a hash of
# this script, guest-init.sh and the extra modules:
#   ${VHOST_USER_CCW_CACHE:-~/.cache/vhost-user-ccw}/guest-KERNEL-<key>/
#     vmlinuz      the kernel image (boot with -kernel)
#     initrd.gz    the initramfs (boot with -initrd)
#     release      the kernel release (uname -r)
#     version      the Debian version of the kernel package (for headers
#                  or source of the same build)
#     modules      the modules in the initramfs, one name a line
#     kernel/      the unpacked kernel package (lib/modules/RELEASE/…, boot/config-…)
# The downloaded packages stay in …/guest-debs/.
#
# Files a setup needs beyond these (binaries, scripts) go into a second
# cpio archive appended to initrd.gz (the kernel unpacks both, the later
# one over the earlier; scripts/vfio-lab.sh does so), run by the `run` step
# of guest-init.sh.
#
# Runs as root (CI does) or with sudo for the apt steps: it adds the s390x
# foreign architecture and bookworm-backports to apt's sources if missing,
# and installs the host tools it needs (kmod, cpio, xz-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

kernel=${1:-}
shift || true
case "$kernel" in
6.1) suite=bookworm ;;
6.12) suite=bookworm-backports ;;
*)
    echo "usage: $0 6.1|6.12 [EXTRA.ko | MODULE ...]" >&2
    exit 2
    ;;
esac
extra=() named=()
for ko in "$@"; do
    case "$ko" in
    *.ko)
        [ -f "$ko" ] || {
            echo "guest-kit: no such module file: $ko" >&2
            exit 2
        }
        extra+=("$(realpath "$ko")")
        ;;
    *[!A-Za-z0-9_-]* | "")
        echo "guest-kit: neither a module file (.ko) nor a module name: $ko" >&2
        exit 2
        ;;
    *) named+=("$ko") ;;
    esac
done

cache=${VHOST_USER_CCW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-ccw}
debs="$cache/guest-debs"
log() { echo "guest-kit: $*" >&2; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Modules the initramfs carries (with their dependencies). crc32c_generic
# is what ext4's crc32c requests at run time (a crypto algorithm, not a
# module dependency).
MODULES=(dasd_mod dasd_eckd_mod dasd_fba_mod virtio_blk ext4 crc32c_generic)

need=()
command -v modinfo >/dev/null || need+=(kmod)
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
apt_updated=""
apt_update() {
    if [ -z "$apt_updated" ]; then
        $sudo apt-get update -qq >&2
        apt_updated=1
    fi
}
if [ ${#need[@]} -gt 0 ]; then
    log "installing host tools: ${need[*]}"
    apt_update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi

# The newest packages of the suite, resolved once and then remembered, so
# that later runs need neither the network nor apt's lists.
mkdir -p "$debs"
pin="$debs/$suite.pin"
apt_ready() { # foreign architecture, backports, fresh lists
    if ! dpkg --print-foreign-architectures | grep -qx s390x; then
        log "adding the s390x foreign architecture (for apt-get download only)"
        $sudo dpkg --add-architecture s390x
        apt_updated=""
    fi
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports to apt's sources"
        $sudo tee /etc/apt/sources.list.d/vhost-user-ccw-backports.sources >/dev/null <<'EOF'
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt_updated=""
    fi
    apt_update
}
if [ ! -s "$pin" ]; then
    apt_ready
    # The metapackage of the suite names the current kernel ABI package:
    # "Depends: linux-image-6.1.0-50-s390x (= 6.1.176-1)".
    read -r image image_version < <(apt-cache show "linux-image-s390x:s390x/$suite" 2>/dev/null |
        sed -n 's/^Depends: \(linux-image-[^ ,]*-s390x\) (= \([^)]*\)).*/\1 \2/p' | head -n 1) || true
    [ -n "${image:-}" ] && [ -n "${image_version:-}" ] || {
        log "cannot resolve linux-image-s390x:s390x in $suite"
        exit 1
    }
    busybox_version=$(apt-cache show busybox-static:s390x/bookworm | sed -n 's/^Version: //p' | head -n 1)
    printf '%s=%s\nbusybox-static=%s\n' "$image" "$image_version" "$busybox_version" >"$pin.tmp"
    mv "$pin.tmp" "$pin"
fi
image_pin=$(head -n 1 "$pin")
busybox_pin=$(sed -n 2p "$pin")

fetch() { # PACKAGE=VERSION -> path of the .deb in $debs
    local name=${1%%=*} version=${1#*=}
    local file
    file=$(find "$debs" -maxdepth 1 -name "${name}_*_s390x.deb" | grep -F "_${version/:/%3a}_" | head -n 1 || true)
    if [ -z "$file" ]; then
        log "downloading $name:s390x=$version"
        apt_ready
        # _apt cannot write to a root-only cache; apt then warns and downloads as root.
        (cd "$debs" && apt-get download -q "$name:s390x=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
        file=$(find "$debs" -maxdepth 1 -name "${name}_*_s390x.deb" | grep -F "_${version/:/%3a}_" | head -n 1 || true)
        [ -n "$file" ] || {
            # Debian may have dropped that version: resolve again next time.
            rm -f "$pin"
            log "apt-get download $name:s390x=$version failed (run again to pick the suite's current version)"
            exit 1
        }
    fi
    echo "$file"
}
image_deb=$(fetch "$image_pin")
busybox_deb=$(fetch "$busybox_pin")

key=$( (
    echo "$image_pin $busybox_pin ${MODULES[*]} ${named[*]:-}"
    cat "$repo/scripts/guest-kit.sh" "$repo/scripts/guest-init.sh"
    [ ${#extra[@]} -eq 0 ] || cat "${extra[@]}"
) | sha256sum | cut -c1-16)
out="$cache/guest-$kernel-$key"
if [ -s "$out/initrd.gz" ]; then
    echo "$out"
    exit 0
fi

tmp=$(mktemp -d "$cache/guest-kit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "unpacking $(basename "$image_deb")"
dpkg-deb -x "$image_deb" "$tmp/kernel"
dpkg-deb -x "$busybox_deb" "$tmp/busybox"
release=$(ls "$tmp/kernel/lib/modules")
[ "$(echo "$release" | wc -l)" -eq 1 ] || {
    log "expected one kernel release in $image_deb, found: $release"
    exit 1
}
modsrc="$tmp/kernel/lib/modules/$release"

root="$tmp/initramfs"
mkdir -p "$root/bin" "$root/lib/modules/$release"
cp "$tmp/busybox/bin/busybox" "$root/bin/busybox"
install -m 0755 "$repo/scripts/guest-init.sh" "$root/init"

# Module name (dashes as underscores) -> file (.ko or .ko.xz).
declare -A path
while read -r f; do
    n=$(basename "$f")
    n=${n%.xz}
    n=${n%.ko}
    path[${n//-/_}]=$f
done < <(find "$modsrc/kernel" -name '*.ko' -o -name '*.ko.xz')
for f in ${extra[@]+"${extra[@]}"}; do
    n=$(basename "$f" .ko)
    path[${n//-/_}]=$f
done
declare -A added
add_module() {
    local n=${1//-/_}
    [ -z "${added[$n]:-}" ] || return 0
    local f=${path[$n]:-}
    if [ -z "$f" ]; then
        # Built into this kernel, or a dependency spelled differently.
        grep -q "/${n//_/[-_]}\.ko" "$modsrc/modules.builtin" || {
            log "module $n is neither in $image_deb nor built in"
            exit 1
        }
        return 0
    fi
    added[$n]=1
    local rel=extra/$(basename "$f")
    [[ $f != "$modsrc"/* ]] || rel=${f#"$modsrc"/}
    mkdir -p "$root/lib/modules/$release/$(dirname "$rel")"
    case "$f" in
    *.xz) xz -dc "$f" >"$root/lib/modules/$release/${rel%.xz}" ;;
    *) cp "$f" "$root/lib/modules/$release/$rel" ;;
    esac
    echo "$n" >>"$tmp/modules"
    local dep
    for dep in $(modinfo -F depends "$f" | tr ',' ' '); do
        add_module "$dep"
    done
}
for m in "${MODULES[@]}" ${named[@]+"${named[@]}"}; do add_module "$m"; done
for f in ${extra[@]+"${extra[@]}"}; do add_module "$(basename "$f" .ko)"; done
cp "$modsrc"/modules.builtin* "$modsrc/modules.order" "$root/lib/modules/$release/"
depmod -b "$root" "$release"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) >"$tmp/initrd.gz"

mkdir -p "$tmp/out"
mv "$tmp/initrd.gz" "$tmp/modules" "$tmp/out/"
cp "$tmp/kernel/boot/vmlinuz-$release" "$tmp/out/vmlinuz"
echo "$release" >"$tmp/out/release"
echo "${image_pin#*=}" >"$tmp/out/version"
mv "$tmp/kernel" "$tmp/out/kernel"
rm -rf "$out"
mv "$tmp/out" "$out"
log "built $out ($(du -h "$out/initrd.gz" | cut -f1) initramfs, kernel $release)"
echo "$out"
