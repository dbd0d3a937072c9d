#!/bin/busybox sh
# /init of the guest test initramfs (scripts/guest-kit.sh puts it there).
# Everything it runs is busybox-static; the kernel command line says what to
# do, so that one initramfs serves every scenario:
#
#   vuc.steps=STEP[,STEP...]  the steps, in order (below)
#   vuc.devno=0.0.XXXX        the DASD's ccw device (bus id)
#   vuc.virtio=0.0.XXXX[,…]   virtio-blk-ccw disks (for bench)
#   vuc.dasd=0.0.XXXX[,…]     more DASDs of the same size (for bench),
#                             set online there
#   vuc.mib=N                 MiB that fault-io writes (default 16)
#   vuc.run=PATH              the script of the run step (default /lab/run.sh)
#   vuc.rounds=N              rounds of bench (default 3)
#
# Steps:
#   probe     list the ccw devices (bus id, cutype, devtype, online, driver)
#   modules   load dasd_mod, dasd_eckd_mod, ext4 (and virtio_blk for bench)
#   online    set vuc.devno online, wait for its block device and partition
#   pattern   write a pattern over the whole partition, drop the caches,
#             read it back and compare; report its sha256
#   mkfs      mke2fs on the partition, mount, write files, sync, unmount
#   verify    mount read-only and report the files' sha256
#   hold      report the DASD's state, wait for a line on the console
#             (the host restarts the backend meanwhile), then write,
#             read back and compare a MiB
#   fault-io  write vuc.mib MiB one at a time with O_DIRECT; after the
#             first MiB ask the host to restart the backend; then read
#             back every MiB whose write succeeded and compare
#   bench     sequential read and write throughput (dd bs=1M, O_DIRECT,
#             4 passes each) of the DASD partition, of each vuc.dasd
#             partition and of each virtio disk, alternating, vuc.rounds
#             rounds
#   run       run vuc.run, a script from an archive appended to the
#             initramfs (scripts/vfio-lab.sh's /lab/run.sh), with busybox sh;
#             its console output is its own, its exit status the step's
#
# Output on the console, one line each (console=ttysclp0 loglevel=1 keeps
# kernel messages off it):
#   @@VUC <fact...>            a fact for the host to check
#   @@VUC-WAIT <what>          the guest waits for one console line
#   @@VUC-STEP <step> ok|FAIL <why>
#   @@VUC-DMESG <line>         kernel messages about the DASD, at the end
#   @@VUC-END ok|FAIL          last line before power off
# The first failing step ends the run.

/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

say() { echo "@@VUC $*"; }
uptime_cs() { # uptime in hundredths of a second
    read -r up _ </proc/uptime
    echo "${up%.*}${up#*.}" | sed 's/^0*//;s/^$/0/'
}

steps="" devno="" virtio="" dasds="" mib=16 rounds=3 run=/lab/run.sh
for word in $(cat /proc/cmdline); do
    case "$word" in
    vuc.steps=*) steps=$(echo "${word#*=}" | tr , ' ') ;;
    vuc.devno=*) devno=${word#*=} ;;
    vuc.virtio=*) virtio=${word#*=} ;;
    vuc.dasd=*) dasds=${word#*=} ;;
    vuc.mib=*) mib=${word#*=} ;;
    vuc.run=*) run=${word#*=} ;;
    vuc.rounds=*) rounds=${word#*=} ;;
    esac
done
say "kernel $(uname -r)"
say "init uptime_cs=$(uptime_cs)"

fail() {
    echo "@@VUC-STEP $step FAIL $*"
    finish FAIL
}

finish() {
    dmesg | grep -iE 'dasd|cio|ccw|I/O error|EXT[24]' | while IFS= read -r line; do
        echo "@@VUC-DMESG $line"
    done
    echo "@@VUC-END $1"
    sync
    poweroff -f
}

# Waits up to $1 seconds for the file or directory $2.
wait_for() {
    n=0
    while [ ! -e "$2" ]; do
        [ $n -lt $(($1 * 10)) ] || return 1
        sleep 0.1
        n=$((n + 1))
    done
}

# One MiB whose first 16 bytes name its index: "VUC-MIB-00000042".
# The rest is one random MiB per boot.
head -c 1048576 /dev/urandom >/tmp/chunk
mib_block() {
    printf 'VUC-MIB-%08d' "$1"
    tail -c +17 /tmp/chunk
}

block="" part=""
dasd_block() {
    [ -n "$devno" ] || fail "no vuc.devno"
    dev=/sys/bus/ccw/devices/$devno
    b=$(ls -d "$dev"/block/dasd* 2>/dev/null | head -n 1)
    [ -n "$b" ] || fail "$devno has no block device"
    block=${b##*/}
    part=${block}1
}

step_probe() {
    for d in /sys/bus/ccw/devices/*; do
        [ -e "$d" ] || continue
        drv=$(readlink "$d/driver")
        say "ccw ${d##*/} cutype=$(cat "$d/cutype") devtype=$(cat "$d/devtype") online=$(cat "$d/online") driver=${drv##*/}"
    done
}

step_modules() {
    mods="dasd_mod dasd_eckd_mod ext4"
    [ -z "$virtio" ] || mods="$mods virtio_blk"
    for m in $mods; do
        modprobe "$m" 2>/tmp/err || fail "modprobe $m: $(cat /tmp/err)"
        say "modprobe $m ok"
    done
}

step_online() {
    [ -n "$devno" ] || fail "no vuc.devno"
    dev=/sys/bus/ccw/devices/$devno
    [ -e "$dev" ] || fail "no ccw device $devno"
    drv=$(readlink "$dev/driver")
    say "driver $devno ${drv##*/}"
    echo 1 >"$dev/online" 2>/tmp/err || fail "set online: $(cat /tmp/err)"
    say "online $devno $(cat "$dev/online")"
    wait_for 60 "$dev/block" || fail "no block device after 60 s"
    b=$(ls -d "$dev"/block/dasd* | head -n 1)
    wait_for 60 "$b/${b##*/}1" || fail "no partition on ${b##*/} after 60 s"
    dasd_block
    wait_for 10 "/dev/$part" || fail "no /dev/$part"
    say "dasd $devno block=$block sectors=$(cat /sys/block/$block/size) part=$part part_sectors=$(cat /sys/block/$block/$part/size) status=$(cat "$dev/status")"
    say "proc-dasd $(grep "$devno" /proc/dasd/devices)"
}

step_pattern() {
    dasd_block
    bytes=$(($(cat /sys/block/$block/$part/size) * 512))
    full=$((bytes / 1048576))
    rest=$((bytes % 1048576))
    i=0
    while [ $i -lt $full ]; do
        mib_block $i
        i=$((i + 1))
    done >/tmp/pattern
    [ $rest -eq 0 ] || mib_block $full | head -c $rest >>/tmp/pattern
    start=$(uptime_cs)
    dd if=/tmp/pattern of=/dev/$part bs=1M conv=fsync 2>/tmp/err || fail "dd write: $(cat /tmp/err)"
    written=$(uptime_cs)
    echo 3 >/proc/sys/vm/drop_caches
    cmp /tmp/pattern /dev/$part >/tmp/err 2>&1 || fail "read back differs: $(cat /tmp/err)"
    read_back=$(uptime_cs)
    say "pattern bytes=$bytes sha256=$(sha256sum </tmp/pattern | cut -d' ' -f1) write_cs=$((written - start)) read_cs=$((read_back - written))"
    rm -f /tmp/pattern
}

FILES="hello.txt data.bin dir/nested.txt"
step_mkfs() {
    dasd_block
    mke2fs -b 4096 -L vuc /dev/$part >/tmp/err 2>&1 || fail "mke2fs: $(cat /tmp/err)"
    mount -t ext2 /dev/$part /mnt 2>/tmp/err || fail "mount: $(cat /tmp/err)"
    echo "written by the s390x guest, kernel $(uname -r)" >/mnt/hello.txt
    head -c 3145728 /dev/urandom >/mnt/data.bin
    mkdir /mnt/dir
    mib_block 7 | head -c 10000 >/mnt/dir/nested.txt
    sync
    report_files
    umount /mnt || fail "umount"
}

report_files() {
    for f in $FILES; do
        [ -f "/mnt/$f" ] || fail "/mnt/$f missing"
        say "file $f size=$(wc -c <"/mnt/$f") sha256=$(sha256sum <"/mnt/$f" | cut -d' ' -f1)"
    done
}

step_verify() {
    dasd_block
    mount -t ext2 -o ro /dev/$part /mnt 2>/tmp/err || fail "mount: $(cat /tmp/err)"
    report_files
    umount /mnt || fail "umount"
}

# Writes MiB $1 at MiB offset $1 of the partition with O_DIRECT.
write_mib() {
    mib_block "$1" | dd of=/dev/$part bs=1M seek="$1" count=1 iflag=fullblock oflag=direct 2>/tmp/err
}
# Reads MiB $1 back with O_DIRECT and compares.
check_mib() {
    mib_block "$1" >/tmp/expect
    dd if=/dev/$part of=/tmp/got bs=1M skip="$1" count=1 iflag=direct 2>/tmp/err &&
        cmp /tmp/expect /tmp/got >/dev/null 2>&1
}

step_hold() {
    dasd_block
    write_mib 0 || fail "write before the restart: $(cat /tmp/err)"
    say "hold status=$(cat /sys/bus/ccw/devices/$devno/status) acked=0"
    echo "@@VUC-WAIT restart"
    read -r _line
    # The first I/O after the restart: a MiB written before it must be there.
    check_mib 0 || fail "MiB 0 (acknowledged before the restart) differs or cannot be read: $(cat /tmp/err)"
    write_mib 1 || fail "write after the restart: $(cat /tmp/err)"
    check_mib 1 || fail "MiB 1 differs after the restart"
    say "resumed status=$(cat /sys/bus/ccw/devices/$devno/status)"
}

step_fault_io() {
    dasd_block
    acked="" failed=0 i=0
    while [ $i -lt "$mib" ]; do
        if write_mib $i; then
            acked="$acked $i"
        else
            failed=$((failed + 1))
            say "write-error mib=$i $(head -n 1 /tmp/err)"
        fi
        [ $i -ne 0 ] || echo "@@VUC-WAIT restart-now"
        i=$((i + 1))
    done
    lost=0
    for i in $acked; do
        check_mib "$i" || {
            lost=$((lost + 1))
            say "lost mib=$i"
        }
    done
    say "fault-io acked=$(echo $acked | wc -w) failed=$failed lost=$lost status=$(cat /sys/bus/ccw/devices/$devno/status)"
    [ $lost -eq 0 ] || fail "$lost acknowledged MiB lost"
}

# Prints the centiseconds that $PASSES runs of dd "$@" take together
# (several passes, so that /proc/uptime's resolution does not matter).
PASSES=4
timed_dd() {
    start=$(uptime_cs)
    pass=0
    while [ $pass -lt $PASSES ]; do
        dd "$@" bs=1M 2>/tmp/err || fail "dd $*: $(cat /tmp/err)"
        pass=$((pass + 1))
    done
    echo $(($(uptime_cs) - start))
}

step_bench() {
    dasd_block
    [ -n "$virtio" ] || fail "no vuc.virtio"
    dbytes=$(($(cat /sys/block/$block/$part/size) * 512))
    say "bench-disk $devno $part"
    disks=$part
    for busid in $(echo "$dasds" | tr , ' '); do
        dev=/sys/bus/ccw/devices/$busid
        [ -e "$dev" ] || fail "no ccw device $busid"
        echo 1 >"$dev/online" 2>/tmp/err || fail "set $busid online: $(cat /tmp/err)"
        wait_for 60 "$dev/block" || fail "$busid: no block device after 60 s"
        b=$(ls -d "$dev"/block/dasd* | head -n 1)
        wait_for 60 "$b/${b##*/}1" || fail "$busid: no partition after 60 s"
        wait_for 10 "/dev/${b##*/}1" || fail "no /dev/${b##*/}1"
        [ $(($(cat "$b/${b##*/}1/size") * 512)) -eq "$dbytes" ] || fail "sizes differ: $part, ${b##*/}1"
        say "bench-disk $busid ${b##*/}1"
        disks="$disks ${b##*/}1"
    done
    for busid in $(echo "$virtio" | tr , ' '); do
        n=0 vb=""
        while [ -z "$vb" ] && [ $n -lt 300 ]; do
            vb=$(ls -d /sys/bus/ccw/devices/$busid/virtio*/block/* 2>/dev/null | head -n 1)
            [ -n "$vb" ] || sleep 0.1
            n=$((n + 1))
        done
        [ -n "$vb" ] || fail "no virtio block device on $busid"
        vb=${vb##*/}
        vbytes=$(($(cat /sys/block/$vb/size) * 512))
        [ "$dbytes" -eq "$vbytes" ] || fail "sizes differ: $part $dbytes, $vb $vbytes"
        say "bench-disk $busid $vb"
        disks="$disks $vb"
    done
    count=$((dbytes / 1048576))
    round=1
    while [ $round -le "$rounds" ]; do
        for disk in $disks; do
            r=$(timed_dd if=/dev/$disk of=/dev/null count=$count iflag=direct)
            w=$(timed_dd if=/dev/zero of=/dev/$disk count=$count oflag=direct)
            say "bench round=$round disk=$disk bytes=$((PASSES * count * 1048576)) read_cs=$r write_cs=$w"
        done
        round=$((round + 1))
    done
}

step_run() {
    [ -f "$run" ] || fail "no $run in the initramfs"
    sh "$run" || fail "$run exited with $?"
}

for step in $steps; do
    case "$step" in
    probe | modules | online | pattern | mkfs | verify | hold | bench | run) "step_$step" ;;
    fault-io) step_fault_io ;;
    *) fail "unknown step" ;;
    esac
    echo "@@VUC-STEP $step ok"
done
finish ok
