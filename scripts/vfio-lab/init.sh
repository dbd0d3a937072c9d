#!/bin/busybox sh
# /init of the vfio lab guest (scripts/vfio-lab.sh): binds the subchannel of
# the virtio-blk-ccw disk 0.0.0005 to vfio_ccw, creates an mdev, serves it
# with vhost-user-ccw --device vfio:… and runs the channel-program scripts
# in /lab with the frontend. Every check prints one line
#   VFIO-LAB-RESULT <name> pass|fail
# and the run ends with VFIO-LAB-DONE, then powers the guest off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "VFIO-LAB: init, kernel $(uname -r)"

DEVNO=0.0.0005
UUID=f00dcafe-1234-4321-8765-0123456789ab
SOCK=/run/vuc.sock
result() { echo "VFIO-LAB-RESULT $1 $2"; }
finish() { echo "VFIO-LAB-DONE"; poweroff -f; sleep 10; }

for m in vfio_iommu_type1 vfio_ccw; do
    modprobe $m || { echo "modprobe $m failed"; result setup fail; finish; }
done
SCH=""
for d in /sys/bus/css/devices/*; do
    [ -d "$d/$DEVNO" ] && SCH=$(basename "$d")
done
[ -n "$SCH" ] || { echo "no subchannel with device $DEVNO"; result setup fail; finish; }
echo "subchannel of $DEVNO: $SCH"
echo "$SCH" > /sys/bus/css/drivers/io_subchannel/unbind
echo vfio_ccw > "/sys/bus/css/devices/$SCH/driver_override"
echo "$SCH" > /sys/bus/css/drivers/vfio_ccw/bind
TYPE=$(ls -d /sys/bus/css/devices/"$SCH"/mdev_supported_types/* 2>/dev/null | head -n 1)
if [ -z "$TYPE" ] || ! echo "$UUID" > "$TYPE/create"; then
    echo "binding $SCH to vfio_ccw or creating the mdev failed"
    result setup fail
    finish
fi
echo "mdev $UUID on $SCH, group $(basename "$(readlink /sys/bus/mdev/devices/$UUID/iommu_group)")"
result setup pass

backend=""
start_backend() {
    rm -f $SOCK
    RUST_LOG=info,vhost_user_ccw::host::vfio=debug vhost-user-ccw --socket-path $SOCK --device "vfio:$1" >> /tmp/backend.log 2>&1 &
    backend=$!
    i=0
    while [ ! -S $SOCK ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S $SOCK ]
}
stop_backend() {
    kill "$backend" 2>/dev/null
    wait "$backend" 2>/dev/null
}
# run NAME SCRIPT: one frontend session; its JSON report goes to the console.
run() {
    vhost-user-ccw-frontend --socket-path $SOCK --timeout-ms 20000 "/lab/$2" > "/tmp/$1.json" 2> "/tmp/$1.err"
    rc=$?
    echo "=== report $1 (exit $rc)"
    cat "/tmp/$1.json" "/tmp/$1.err"
    if [ $rc -eq 0 ]; then result "$1" pass; else result "$1" fail; fi
}

if start_backend "$UUID"; then
    result backend-uuid pass
    run sense-id sense-id.ccw
    run virtio virtio.ccw
    run virtio-legacy virtio-legacy.ccw
    run halt-clear halt-clear.ccw
    # Kill a frontend in the middle of its I/O; the backend must quiesce
    # and disable the subchannel, and a new session must work.
    vhost-user-ccw-frontend --socket-path $SOCK --timeout-ms 20000 /lab/busy.ccw > /tmp/busy.json 2>&1 &
    busy=$!
    sleep 3
    if kill -9 $busy 2>/dev/null; then
        wait $busy 2>/dev/null
        echo "frontend killed while it was running"
        sleep 1
        # The end of the session quiesced and closed the device.
        last=$(grep 'vfio: ' /tmp/backend.log | tail -n 1)
        echo "backend after the kill: $last"
        case "$last" in
        *"closed: subchannel disabled"*) result kill-mid-run pass ;;
        *) result kill-mid-run fail ;;
        esac
    else
        echo "the busy frontend ended before it could be killed:"; tail -n 20 /tmp/busy.json
        result kill-mid-run fail
    fi
    sleep 1
    run after-kill sense-id.ccw
    run after-kill-virtio virtio.ccw
    stop_backend
else
    result backend-uuid fail
fi
# The other form of the device argument, and a fresh process on the same
# mdev: the first one closed the device and the group on its way out.
if start_backend "/sys/bus/mdev/devices/$UUID"; then
    result backend-path pass
    run path-sense-id sense-id.ccw
    # Remove the mdev under a waiting session (REQ interrupt).
    ( sleep 3; timeout 60 sh -c "echo 1 > /sys/bus/mdev/devices/$UUID/remove" \
        && echo "mdev removed" > /tmp/removed ) &
    remover=$!
    run device-gone gone.ccw
    wait $remover
    if [ -e /tmp/removed ] && [ ! -e "/sys/bus/mdev/devices/$UUID" ]; then
        result mdev-removed pass
    else
        result mdev-removed fail
    fi
    stop_backend
else
    result backend-path fail
fi
# --- seccomp (issue #9). Every backend above ran under the default filter
# (kill): a call outside the allow-list would have killed it and failed its
# steps. Here, on a fresh mdev: the filter is really installed; a full vfio
# session in log mode makes no call outside the list (the kernel logs each
# one, type=1326, as audit=1 is on); and a call outside the list (the
# hidden --test-forbidden-syscall: personality, 136 on s390x) is logged in
# log mode and kills with SIGSYS in the default mode.
seccomp_records() { dmesg | grep -c 'type=1326'; }
seccomp_new_records() { dmesg | grep 'type=1326' | tail -n +"$(($1 + 1))"; }
seccomp_backend() {
    rm -f $SOCK
    echo "=== vhost-user-ccw $*" >> /tmp/seccomp.log
    vhost-user-ccw --socket-path $SOCK --device "vfio:$UUID" "$@" >> /tmp/seccomp.log 2>&1 &
    backend=$!
    i=0
    while [ ! -S $SOCK ] && [ $i -lt 200 ] && kill -0 $backend 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    # The filter goes on after the socket listens.
    i=0
    while ! grep -q '^Seccomp:[[:space:]]*2' /proc/$backend/status 2>/dev/null && [ $i -lt 50 ] \
        && kill -0 $backend 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
}
seccomp_session() {
    vhost-user-ccw-frontend --socket-path $SOCK --timeout-ms 20000 "/lab/$1" > "/tmp/seccomp-$1.out" 2>&1
}
if echo "$UUID" > "$TYPE/create"; then
    seccomp_backend
    grep '^Seccomp' /proc/$backend/status
    if grep -q '^Seccomp:[[:space:]]*2' /proc/$backend/status && seccomp_session virtio.ccw \
        && seccomp_session sense-id.ccw && kill -0 $backend; then
        result seccomp-default pass
    else
        result seccomp-default fail
    fi
    stop_backend
    before=$(seccomp_records)
    seccomp_backend --seccomp log
    ok=1
    for s in sense-id.ccw virtio.ccw virtio-legacy.ccw halt-clear.ccw; do
        seccomp_session $s || { echo "log mode: $s failed"; ok=0; }
    done
    # A frontend killed mid-run: the quiesce path.
    vhost-user-ccw-frontend --socket-path $SOCK --timeout-ms 20000 /lab/busy.ccw > /dev/null 2>&1 &
    busy=$!
    sleep 3
    kill -9 $busy 2>/dev/null
    wait $busy 2>/dev/null
    sleep 1
    seccomp_session sense-id.ccw || { echo "log mode: sense-id after the kill failed"; ok=0; }
    stop_backend
    sleep 1
    echo "system calls outside the allow-list in log mode:"
    seccomp_new_records "$before"
    if [ $ok -eq 1 ] && [ "$(seccomp_records)" -eq "$before" ]; then
        result seccomp-log-clean pass
    else
        result seccomp-log-clean fail
    fi
    before=$(seccomp_records)
    seccomp_backend --seccomp log --test-forbidden-syscall
    sleep 1
    alive=0
    kill -0 $backend 2>/dev/null && alive=1
    stop_backend
    sleep 1
    seccomp_new_records "$before"
    if [ $alive -eq 1 ] && seccomp_new_records "$before" | grep ' syscall=136 ' | grep -q 'code=0x7ffc0000'; then
        result seccomp-log-records pass
    else
        result seccomp-log-records fail
    fi
    before=$(seccomp_records)
    seccomp_backend --test-forbidden-syscall
    wait $backend
    rc=$?
    echo "default mode with a forbidden call: exit status $rc (159 = SIGSYS)"
    sleep 1
    seccomp_new_records "$before"
    if [ $rc -eq 159 ] && seccomp_new_records "$before" | grep ' syscall=136 ' | grep -q 'code=0x80000000'; then
        result seccomp-kill pass
    else
        result seccomp-kill fail
    fi
    echo "=== seccomp backends' log"
    cat /tmp/seccomp.log
else
    echo "creating the mdev again failed"
    result seccomp-default fail
fi
echo "=== backend log"
cat /tmp/backend.log
echo "=== kernel log (vfio, cio)"
dmesg | grep -iE 'vfio|cio|css|subchannel' | tail -40
# Any kernel error or warning of vfio_ccw (or an oops anywhere) fails.
if dmesg | grep -iE 'vfio[_-]ccw.*(err|fail|warn)|BUG:|WARNING:|Oops|Call Trace' > /tmp/bad; then
    echo "kernel complaints:"; cat /tmp/bad
    result kernel-log fail
else
    result kernel-log pass
fi
finish
