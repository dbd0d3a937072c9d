#!/usr/bin/env bash
# Installs vhost-user-ccw for an administrator:
#
#   scripts/install.sh [PREFIX]        (PREFIX defaults to /usr/local)
#
#   PREFIX/bin/vhost-user-ccw                         the backend (release build)
#   PREFIX/share/man/man1/vhost-user-ccw.1            man page, generated from the binary's CLI
#   PREFIX/lib/systemd/system/vhost-user-ccw@.socket  per-VM socket (systemd template)
#   PREFIX/lib/systemd/system/vhost-user-ccw@.service per-VM backend, reads /etc/vhost-user-ccw/VM.conf
#   PREFIX/lib/sysusers.d/vhost-user-ccw.conf         the unprivileged user the service runs as
#   PREFIX/share/qemu/vhost-user/50-vhost-user-ccw.json  QEMU vhost-user backend descriptor
#   PREFIX/share/doc/vhost-user-ccw/                  example instance file, libvirt domain
#
# DESTDIR=DIR stages everything under DIR (packaging); paths written into
# the files stay PREFIX-based. VHOST_USER_CCW_BIN=PATH installs that binary
# instead of building one. Then, as root: systemd-sysusers; systemctl
# daemon-reload; write /etc/vhost-user-ccw/VM.conf; systemctl enable --now
# vhost-user-ccw@VM.socket. docs/operations.md walks through it.
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${1:-/usr/local}
case $prefix in
/*) ;;
*) echo "install: PREFIX must be an absolute path, not '$prefix'" >&2; exit 2 ;;
esac
dest=${DESTDIR:-}
bin=${VHOST_USER_CCW_BIN:-}
if [ -z "$bin" ]; then
    # The seccomp filter is compiled by libseccomp, linked from the system.
    if [ ! -e /usr/include/seccomp.h ]; then
        echo "install: building needs libseccomp's headers and library: apt-get install libseccomp-dev (or run scripts/setup.sh)" >&2
        exit 1
    fi
    cargo build --release --locked -p vhost-user-ccw
    bin=target/release/vhost-user-ccw
fi
installed=$prefix/bin/vhost-user-ccw

install -D -m 0755 "$bin" "$dest$prefix/bin/vhost-user-ccw"
man=$(mktemp)
trap 'rm -f "$man"' EXIT
"$bin" man > "$man"
install -D -m 0644 "$man" "$dest$prefix/share/man/man1/vhost-user-ccw.1"

# The shipped files name /usr/local/bin/vhost-user-ccw; point them at PREFIX.
for unit in vhost-user-ccw@.socket vhost-user-ccw@.service; do
    sed "s|/usr/local/bin/vhost-user-ccw|$installed|g" "contrib/systemd/$unit" > "$man"
    install -D -m 0644 "$man" "$dest$prefix/lib/systemd/system/$unit"
done
install -D -m 0644 contrib/systemd/vhost-user-ccw.sysusers "$dest$prefix/lib/sysusers.d/vhost-user-ccw.conf"
sed "s|/usr/local/bin/vhost-user-ccw|$installed|g" contrib/qemu/50-vhost-user-ccw.json > "$man"
install -D -m 0644 "$man" "$dest$prefix/share/qemu/vhost-user/50-vhost-user-ccw.json"
install -D -m 0644 contrib/etc/vm1.conf "$dest$prefix/share/doc/vhost-user-ccw/vm1.conf.example"
install -D -m 0644 contrib/libvirt/vm1-s390x.xml "$dest$prefix/share/doc/vhost-user-ccw/vm1-s390x.xml"
install -d -m 0755 "$dest/etc/vhost-user-ccw"
echo "installed vhost-user-ccw under $dest$prefix"
