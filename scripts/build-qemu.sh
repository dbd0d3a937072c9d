#!/usr/bin/env bash
# Builds qemu-system-s390x 10.0.2 with the qemu-patches/ series applied, and
# prints the path of the binary.
#
# The source is Debian's upstream tarball (qemu_10.0.2+ds.orig.tar.xz),
# fetched with `apt-get source --download-only` from bookworm-backports and
# checked against the SHA-256 pinned below (the same value Debian's signed
# Sources index lists). The result is cached outside the repository, keyed by
# QEMU version and a hash of the patch series:
#   ${VHOST_USER_CCW_CACHE:-~/.cache/vhost-user-ccw}/qemu-10.0.2-<series>/
# Installs its own build dependencies (Debian packages, meson in a venv).
# The s390-ccw firmware comes from Debian's qemu-system-data: run the binary
# with `-L /usr/share/qemu`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

QEMU_VERSION=10.0.2
DEBIAN_VERSION="1:10.0.2+ds-2+deb13u1~bpo12+1"
TARBALL="qemu_${QEMU_VERSION}+ds.orig.tar.xz"
TARBALL_SHA256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1

cache=${VHOST_USER_CCW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-ccw}
shopt -s nullglob
patches=("$repo"/qemu-patches/*.patch)
series=$(cat /dev/null "${patches[@]}" | sha256sum | cut -c1-16)
out="$cache/qemu-$QEMU_VERSION-$series"
binary="$out/qemu-system-s390x"
log() { echo "build-qemu: $*" >&2; }

if [ -x "$binary" ]; then
    echo "$binary"
    exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# bookworm-backports carries QEMU 10.0.2 (source and qemu-system-data).
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports (deb, deb-src) to apt's sources"
    $sudo tee /etc/apt/sources.list.d/vhost-user-ccw-backports.sources >/dev/null <<'EOF'
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
elif ! grep -rqs "deb-src" /etc/apt/sources.list.d/ /etc/apt/sources.list; then
    log "no deb-src entries: adding bookworm-backports sources"
    $sudo tee /etc/apt/sources.list.d/vhost-user-ccw-backports-src.sources >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

need=()
for pkg in ninja-build libglib2.0-dev libpixman-1-dev libfdt-dev flex bison pkg-config \
    python3-venv dpkg-dev xz-utils git; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
[ -e /usr/share/qemu/s390-ccw.img ] || need+=(qemu-system-data)
if [ ${#need[@]} -gt 0 ] || [ ! -e "$cache/.apt-updated" ]; then
    log "installing build dependencies: ${need[*]:-none}"
    $sudo apt-get update -qq
    mkdir -p "$cache" && touch "$cache/.apt-updated"
    if [ ${#need[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -t bookworm-backports "${need[@]}" >&2
    fi
fi

venv="$cache/meson-venv"
if [ ! -x "$venv/bin/meson" ]; then
    log "installing meson into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q meson pycotap==1.3.1 >&2
fi

src="$cache/src"
mkdir -p "$src"
if [ ! -f "$src/$TARBALL" ] || ! echo "$TARBALL_SHA256  $src/$TARBALL" | sha256sum -c --quiet 2>/dev/null; then
    log "fetching $TARBALL through apt"
    rm -f "$src/$TARBALL"
    # The Debian diff and .dsc of this backport are not always published;
    # the upstream tarball is what matters, so a partial failure is fine.
    (cd "$src" && apt-get source --download-only "qemu=$DEBIAN_VERSION" >&2) || true
fi
echo "$TARBALL_SHA256  $src/$TARBALL" | sha256sum -c --quiet || {
    log "checksum mismatch for $TARBALL"
    exit 1
}

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "unpacking"
tar --no-same-owner -xJf "$src/$TARBALL" -C "$work"
tree=$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -n 1)
cd "$tree"
g() { git -c 'safe.directory=*' -c user.name=build -c user.email=build@localhost "$@"; }
g init -q
g add -A >/dev/null
g commit -qm "QEMU $QEMU_VERSION (Debian +ds tarball)"
if [ ${#patches[@]} -gt 0 ]; then
    log "applying ${#patches[@]} patches"
    g am -q "${patches[@]}"
fi

log "configuring"
mkdir build && cd build
PATH="$venv/bin:$PATH" ../configure --target-list=s390x-softmmu --without-default-features \
    --disable-docs --disable-tools --disable-werror --disable-install-blobs >&2
log "building (about 3 minutes on 2 cores)"
PATH="$venv/bin:$PATH" ninja -j"$(nproc)" qemu-system-s390x >&2

mkdir -p "$out.tmp"
cp qemu-system-s390x "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
log "built $binary"
echo "$binary"
