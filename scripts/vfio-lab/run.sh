#!/bin/busybox sh
# The vfio lab's checks, run inside the s390x guest by the `run` step of
# scripts/guest-init.sh (scripts/vfio-lab.sh appends this file, the
# binaries and the channel-program scripts to the guest kit's initramfs).
#
# Two subchannels are bound to vfio_ccw, each with an mdev served by
# vhost-user-ccw --device vfio:…, and driven with the frontend:
#   0.0.0005  a QEMU virtio-blk-ccw disk (QEMU runs a channel program to its
#             end inside START SUBCHANNEL);
#   0.0.0006  a vhost-user-subchannel whose backend on the host is a `sim`
#             buffer device with a latency per CCW: a program of 200 CCWs
#             runs for seconds, so HALT, CLEAR and a killed frontend meet a
#             program that is really running.
# Every check prints one line
#   VFIO-LAB-RESULT <name> pass|fail
# and the run ends with VFIO-LAB-DONE.
mkdir -p /run
echo "VFIO-LAB: kernel $(uname -r)"

UUID=f00dcafe-1234-4321-8765-0123456789ab
SLOW_UUID=f00dcafe-1234-4321-8765-0123456789ac
SOCK=/run/vuc.sock
SLOW_SOCK=/run/slow.sock
result() { echo "VFIO-LAB-RESULT $1 $2"; }
finish() {
    echo "=== backend logs"
    cat /tmp/backend.log /tmp/slow-backend.log 2>/dev/null
    echo "=== kernel log (vfio, cio)"
    dmesg | grep -iE 'vfio|cio|css|subchannel' | tail -40
    # Any kernel error or warning of vfio_ccw (or an oops anywhere) fails.
    if dmesg | grep -iE 'vfio[_-]ccw.*(err|fail|warn)|BUG:|WARNING:|Oops|Call Trace' > /tmp/bad; then
        echo "kernel complaints:"; cat /tmp/bad
        result kernel-log fail
    else
        result kernel-log pass
    fi
    echo "VFIO-LAB-DONE"
    exit 0
}

for m in vfio_iommu_type1 vfio_ccw; do
    modprobe $m || { echo "modprobe $m failed"; result setup fail; finish; }
done
# bind DEVNO UUID: bind the device's subchannel to vfio_ccw, create the mdev.
bind() {
    sch=""
    for d in /sys/bus/css/devices/*; do
        [ -d "$d/$1" ] && sch=$(basename "$d")
    done
    [ -n "$sch" ] || { echo "no subchannel with device $1"; return 1; }
    echo "subchannel of $1: $sch"
    echo "$sch" > /sys/bus/css/drivers/io_subchannel/unbind
    echo vfio_ccw > "/sys/bus/css/devices/$sch/driver_override"
    echo "$sch" > /sys/bus/css/drivers/vfio_ccw/bind
    type=$(ls -d /sys/bus/css/devices/"$sch"/mdev_supported_types/* 2>/dev/null | head -n 1)
    if [ -z "$type" ] || ! echo "$2" > "$type/create"; then
        echo "binding $sch to vfio_ccw or creating the mdev failed"
        return 1
    fi
    echo "mdev $2 on $sch, group $(basename "$(readlink /sys/bus/mdev/devices/$2/iommu_group)")"
}
if bind 0.0.0005 $UUID; then result setup pass; else result setup fail; finish; fi
virtio_type=$type

# start_backend SOCKET DEVICE LOG: start a backend, wait for its socket;
# its pid is in $started.
start_backend() {
    rm -f "$1"
    RUST_LOG=info,vhost_user_ccw::host::vfio=debug vhost-user-ccw --socket-path "$1" --device "vfio:$2" >> "$3" 2>&1 &
    started=$!
    i=0
    while [ ! -S "$1" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S "$1" ]
}
stop_backend() {
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
# run NAME SCRIPT [SOCKET]: one frontend session; its JSON report goes to
# the console and stays in /tmp/NAME.json.
run() {
    vhost-user-ccw-frontend --socket-path "${3:-$SOCK}" --timeout-ms 30000 "/lab/$2" > "/tmp/$1.json" 2> "/tmp/$1.err"
    rc=$?
    echo "=== report $1 (exit $rc)"
    cat "/tmp/$1.json" "/tmp/$1.err"
    if [ $rc -eq 0 ]; then result "$1" pass; else result "$1" fail; fi
    return $rc
}
# json_last KEY FILE: the value of the last "KEY": "…" in a report.
json_last() {
    sed -n "s/^ *\"$1\": \"\\([^\"]*\\)\".*/\\1/p" "$2" | tail -n 1
}

if start_backend $SOCK $UUID /tmp/backend.log; then
    backend=$started
    result backend-uuid pass
    run sense-id sense-id.ccw
    run virtio virtio.ccw
    run virtio-legacy virtio-legacy.ccw
    run halt-clear halt-clear.ccw
    stop_backend $backend
else
    result backend-uuid fail
fi

# --- The slow subchannel: HALT, CLEAR and a killed frontend while a
# program runs.
#
# check_partial NAME CPA: the report /tmp/NAME.json shows a program of 200
# SENSE ID CCWs (8 bytes each into its own slot of buffer `ids`, which
# starts as 0xaa) that ended early: some slots hold the buffer device's
# SENSE ID data, the rest are untouched, and the written ones are a prefix.
# With CPA=1 the SCSW's CPA must point just behind the last slot written
# (CCW list at 0x1000): the channel stopped at that CCW boundary.
check_partial() {
    ids=$(json_last ids "/tmp/$1.json")
    cpa=$(json_last cpa "/tmp/$1.json")
    echo "$ids" | awk -v cpa="$cpa" -v want_cpa="$2" '
    { done = 0; gap = 0; bad = 0
      for (i = 0; i < 200; i++) {
          slot = substr($0, 16 * i + 1, 16)
          if (slot ~ /^ff500001500101/) { if (gap) bad = 1; done++ }
          else if (slot == "aaaaaaaaaaaaaaaa") gap = 1
          else bad = 1
      }
      c = 0
      for (i = 3; i <= length(cpa); i++) c = c * 16 + index("0123456789abcdef", substr(cpa, i, 1)) - 1
      printf "slots written %d of 200, cpa %s\n", done, cpa
      if (length($0) != 3200 || bad || done == 0 || done == 200) exit 1
      if (want_cpa && c != 4096 + 8 * done) { print "the CPA is not behind the last slot written"; exit 1 }
    }'
}

if bind 0.0.0006 $SLOW_UUID; then result slow-setup pass; else result slow-setup fail; finish; fi
if start_backend $SLOW_SOCK $SLOW_UUID /tmp/slow-backend.log; then
    slow=$started
    result slow-backend pass
    run slow-sense-id slow-sense-id.ccw $SLOW_SOCK
    if run halt-running halt-running.ccw $SLOW_SOCK && check_partial halt-running 1; then
        result halt-partial pass
    else
        result halt-partial fail
    fi
    if run clear-running clear-running.ccw $SLOW_SOCK && check_partial clear-running 0; then
        result clear-partial pass
    else
        result clear-partial fail
    fi
    # Kill a frontend in the middle of its program: the backend must halt
    # it through the async region, disable the subchannel (close the
    # device), and a new session must find it idle and working.
    lines=$(wc -l < /tmp/slow-backend.log)
    vhost-user-ccw-frontend --socket-path $SLOW_SOCK --timeout-ms 30000 /lab/long.ccw > /tmp/long.json 2>&1 &
    long=$!
    sleep 2
    if kill -9 $long 2>/dev/null; then
        wait $long 2>/dev/null
        echo "frontend killed while its program was running"
        i=0
        while ! tail -n +$((lines + 1)) /tmp/slow-backend.log | grep -q "closed: subchannel disabled" && [ $i -lt 100 ]; do
            sleep 0.1; i=$((i + 1))
        done
        tail -n +$((lines + 1)) /tmp/slow-backend.log > /tmp/after-kill.log
        echo "backend after the kill:"; cat /tmp/after-kill.log
        # In order: the close found the program running (start function
        # only), the HALT went through the async region, the interruption
        # ending the halted program came through the eventfd (start and
        # halt functions, a CPA inside the program: 0x1000 + 200 * 8), and
        # only then was the device closed. Closing on the idle SCHIB alone,
        # before vfio-ccw's worker signalled that interruption, could leave
        # vfio-ccw refusing every later open (see await_final_interruption).
        if awk '
            /not closing yet, a function is in progress: fc=FunctionControl\(START\) / && !r { r = NR }
            /HALT through the async region: Ok/ && r && !h { h = NR }
            /vfio: interruption / && h && !i {
                i = NR; match($0, /cpa=0x[0-9a-f]+/); cpa = substr($0, RSTART + 6, RLENGTH - 6)
                n = 0; for (k = 1; k <= length(cpa); k++) n = n * 16 + index("0123456789abcdef", substr(cpa, k, 1)) - 1
                if ($0 !~ /fc=FunctionControl\(START \| HALT\)/ || n <= 4096 || n >= 4096 + 200 * 8) bad = 1
            }
            /closed: subchannel disabled/ && h && !c { c = NR }
            END { print "running line " r ", halt line " h ", interruption line " i " (cpa " cpa "), closed line " c
                  exit !(r && h && i && c && i < c && !bad) }' /tmp/after-kill.log; then
            result kill-mid-run pass
        else
            result kill-mid-run fail
        fi
    else
        echo "the frontend ended before it could be killed:"; cat /tmp/long.json
        result kill-mid-run fail
    fi
    run after-kill after-kill.ccw $SLOW_SOCK
    stop_backend $slow
    # A new backend process opens the subchannel again.
    if start_backend $SLOW_SOCK $SLOW_UUID /tmp/slow-backend.log; then
        run reopen slow-sense-id.ccw $SLOW_SOCK
        stop_backend $started
    else
        result reopen fail
    fi
else
    result slow-backend fail
fi

# The other form of the device argument, and a fresh process on the same
# mdev: the first one closed the device and the group on its way out.
if start_backend $SOCK "/sys/bus/mdev/devices/$UUID" /tmp/backend.log; then
    backend=$started
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
    stop_backend $backend
else
    result backend-path fail
fi

# --- seccomp (issue #9). Every backend above ran under the default filter
# (kill): a call outside the allow-list would have killed it and failed its
# steps. Here, on the virtio subchannel's mdev created again: the filter is
# really installed; full vfio sessions in log mode (including a frontend
# killed mid-program on the slow subchannel: the quiesce path) make no call
# outside the list (the kernel logs each one, type=1326, as audit=1 is on);
# and a call outside the list (the hidden --test-forbidden-syscall:
# personality, 136 on s390x) is logged in log mode and kills with SIGSYS in
# the default mode.
seccomp_records() { dmesg | grep -c 'type=1326'; }
seccomp_new_records() { dmesg | grep 'type=1326' | tail -n +"$(($1 + 1))"; }
# seccomp_backend SOCKET MDEV [ARGS...]: a backend ($started) whose filter
# is installed (it goes on after the socket listens).
seccomp_backend() {
    sock=$1
    mdev=$2
    shift 2
    rm -f "$sock"
    echo "=== vhost-user-ccw $*" >> /tmp/seccomp.log
    vhost-user-ccw --socket-path "$sock" --device "vfio:$mdev" "$@" >> /tmp/seccomp.log 2>&1 &
    started=$!
    i=0
    while [ ! -S "$sock" ] && [ $i -lt 200 ] && kill -0 $started 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    i=0
    while ! grep -q '^Seccomp:[[:space:]]*2' /proc/$started/status 2>/dev/null && [ $i -lt 50 ] \
        && kill -0 $started 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
}
# seccomp_session SOCKET SCRIPT: one quiet frontend session.
seccomp_session() {
    vhost-user-ccw-frontend --socket-path "$1" --timeout-ms 30000 "/lab/$2" > "/tmp/seccomp-$2.out" 2>&1
}
if echo "$UUID" > "$virtio_type/create"; then
    seccomp_backend $SOCK $UUID
    backend=$started
    grep '^Seccomp' /proc/$backend/status
    if grep -q '^Seccomp:[[:space:]]*2' /proc/$backend/status && seccomp_session $SOCK virtio.ccw \
        && seccomp_session $SOCK sense-id.ccw && kill -0 $backend; then
        result seccomp-default pass
    else
        result seccomp-default fail
    fi
    stop_backend $backend
    before=$(seccomp_records)
    ok=1
    seccomp_backend $SOCK $UUID --seccomp log
    backend=$started
    for s in sense-id.ccw virtio.ccw virtio-legacy.ccw halt-clear.ccw; do
        seccomp_session $SOCK $s || { echo "log mode: $s failed"; ok=0; }
    done
    stop_backend $backend
    seccomp_backend $SLOW_SOCK $SLOW_UUID --seccomp log
    slow=$started
    vhost-user-ccw-frontend --socket-path $SLOW_SOCK --timeout-ms 30000 /lab/long.ccw > /dev/null 2>&1 &
    long=$!
    sleep 2
    kill -9 $long 2>/dev/null
    wait $long 2>/dev/null
    sleep 1
    seccomp_session $SLOW_SOCK slow-sense-id.ccw || { echo "log mode: SENSE ID after the kill failed"; ok=0; }
    stop_backend $slow
    sleep 1
    echo "system calls outside the allow-list in log mode:"
    seccomp_new_records "$before"
    if [ $ok -eq 1 ] && [ "$(seccomp_records)" -eq "$before" ]; then
        result seccomp-log-clean pass
    else
        result seccomp-log-clean fail
    fi
    before=$(seccomp_records)
    seccomp_backend $SOCK $UUID --seccomp log --test-forbidden-syscall
    backend=$started
    sleep 1
    alive=0
    kill -0 $backend 2>/dev/null && alive=1
    stop_backend $backend
    sleep 1
    seccomp_new_records "$before"
    if [ $alive -eq 1 ] && seccomp_new_records "$before" | grep ' syscall=136 ' | grep -q 'code=0x7ffc0000'; then
        result seccomp-log-records pass
    else
        result seccomp-log-records fail
    fi
    before=$(seccomp_records)
    seccomp_backend $SOCK $UUID --test-forbidden-syscall
    wait $started
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
finish
