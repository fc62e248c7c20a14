#!/bin/busybox sh
# PID 1 of the vfiod real-kernel test guest (packed into the initramfs by initramfs.py).
#
# Stage 1 (in the initramfs): mount this machine's / read-only over virtio-9p under a
# tmpfs overlay, give it the guest's own /proc /sys /dev /tmp /run, the read-write
# results share and the kernel's modules, then switch_root into it. The new root must
# be PID 1's root: systemd's tools (udevadm settle, trigger) ignore requests "in a
# chroot".
# Stage 2 (PID 1 in the new root, run from a copy of this script and busybox in /run):
# load PCI drivers by modalias, start systemd-udevd when there is one, run the job the
# host wrote into the results share, record its exit code, power off.
#
# It unbinds nothing itself, but the job it runs does: it refuses to run anywhere but in
# the test guest (the marker on the kernel command line).

MARKER=vfiod.testguest=1
RESULTS=/run/vfiod-vm            # the results share, in the new root
STAGE2=/run/vfiod-vm-init        # this script and busybox, for stage 2
NEWROOT=/newroot

# Should anything below fail badly, PID 1 exits: the kernel panics, panic=-1 reboots at
# once and QEMU, started with -no-reboot, exits. The guest never waits for the timeout.
say() { echo "vfiod-init: $*"; }
stage() { echo "$1 $(cut -d' ' -f1 /proc/uptime)" >> "$STAGES"; }
check_marker() {
    case " $(cat /proc/cmdline) " in
        *" $MARKER "*) ;;
        *) say "$MARKER is not on the kernel command line: refusing to run"; exit 1 ;;
    esac
}

stage1() {
    /bin/busybox mkdir -p /bin /proc /sys /dev
    /bin/busybox --install -s /bin
    export PATH=/bin
    mount -t proc proc /proc
    check_marker
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    STAGES=/stages
    die() { say "FAILED: $*"; poweroff -f; }
    stage init

    # The 9p, virtio and overlay modules, in dependency order (written by initramfs.py).
    while read -r ko; do
        insmod "/modules/$ko" || die "insmod $ko"
    done < /modules/order
    stage modules

    mkdir -p /lower /upper "$NEWROOT"
    # cache=loose: the exported / does not change under a test run, and Python's many
    # stats and opens are much faster with it.
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \
        || die "mount the host's / over 9p"
    mount -t tmpfs -o mode=0755 upper /upper
    mkdir -p /upper/data /upper/work
    mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay \
        "$NEWROOT" || die "mount the overlay"
    mount -t proc proc "$NEWROOT/proc"
    mount -t sysfs sysfs "$NEWROOT/sys"
    mount -t devtmpfs devtmpfs "$NEWROOT/dev"
    mkdir -p "$NEWROOT/dev/pts" "$NEWROOT/dev/shm"
    mount -t devpts devpts "$NEWROOT/dev/pts"
    mount -t tmpfs shm "$NEWROOT/dev/shm"
    mount -t tmpfs -o mode=0755 run "$NEWROOT/run"
    mkdir -p "$NEWROOT$RESULTS" "$NEWROOT$STAGE2"
    mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000 results "$NEWROOT$RESULTS" \
        || die "mount the results share"

    # job.env (from run.py): KERNEL_MODULES (host path of the unpacked modules), WORKDIR.
    . "$NEWROOT$RESULTS/job.env" || die "read job.env"
    # The host has no modules for this kernel: lend it the unpacked ones (merged /usr
    # keeps /lib a relative link, so this lands inside the new root). Bound before the
    # guest's /tmp covers the host's, where the cache may be.
    mkdir -p "$NEWROOT/lib/modules/$(uname -r)"
    mount --bind "$NEWROOT$KERNEL_MODULES" "$NEWROOT/lib/modules/$(uname -r)" \
        || die "bind the kernel modules"
    # A repo under the host's /tmp (a CI checkout) stays visible above the guest's /tmp.
    case "$WORKDIR/" in
        /tmp/*) mkdir -p /stash && mount --bind "$NEWROOT$WORKDIR" /stash \
                    || die "keep $WORKDIR" ;;
    esac
    mount -t tmpfs -o mode=1777 tmp "$NEWROOT/tmp"
    if [ -d /stash ]; then
        mkdir -p "$NEWROOT$WORKDIR" && mount --move /stash "$NEWROOT$WORKDIR" \
            || die "put $WORKDIR back"
    fi

    cp /bin/busybox /init "$NEWROOT$STAGE2/"
    stage rootfs
    cp "$STAGES" "$NEWROOT$STAGE2/stages"
    umount /dev /sys /proc
    exec switch_root "$NEWROOT" "$STAGE2/busybox" sh "$STAGE2/init" stage2
    die "switch_root"
}

stage2() {
    BB="$STAGE2/busybox"
    check_marker
    STAGES="$STAGE2/stages"
    finish() {  # $1: the job's exit code, or empty when it never ran
        [ -n "$1" ] && echo "$1" > "$RESULTS/exit_code.tmp" \
            && "$BB" mv "$RESULTS/exit_code.tmp" "$RESULTS/exit_code"
        "$BB" cp "$STAGES" "$RESULTS/stages"
        "$BB" sync
        "$BB" umount "$RESULTS"
        "$BB" poweroff -f
        exit 1
    }
    die() { say "FAILED: $*"; echo "$*" > "$RESULTS/init-error"; finish ""; }
    . "$RESULTS/job.env" || die "read job.env"
    # The host's own tools (kmod, udev, python) from here on, in a clean environment.
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    run() {
        /usr/bin/env -i PATH="$PATH" HOME=/root LANG=C.UTF-8 TERM=dumb \
            PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 VFIOD_VM_RESULTS="$RESULTS" "$@"
    }

    # The first Python start reads hundreds of files over 9p; let it do that while the
    # drivers probe and udevd settles (job.env's WARMUP, a command; may be empty).
    if [ -n "$WARMUP" ]; then
        (cd "$WORKDIR" && run /bin/sh -c "$WARMUP" > /dev/null 2>&1) &
        warmup=$!
    fi
    # One modprobe for every device: a process start costs 60-100 ms in this guest.
    run /bin/sh -c 'modprobe -q -b -a $(cat /sys/bus/pci/devices/*/modalias)'
    stage drivers

    UDEVD=/lib/systemd/systemd-udevd
    if [ -x "$UDEVD" ]; then
        run "$UDEVD" --daemon || say "systemd-udevd did not start"
        stage udevd
        # Coldplug only what vfiod looks at (PCI functions and the host devices below
        # them): all 450 devices take several times longer under TCG.
        run udevadm trigger --type=devices --action=add --subsystem-match=pci \
            --subsystem-match=net --subsystem-match=drm --subsystem-match=sound \
            --subsystem-match=block --subsystem-match=input --subsystem-match=vfio
        run udevadm settle --timeout=60 || say "udevadm settle timed out"
        echo yes > "$RESULTS/udevd"
    else
        say "no systemd-udevd on this machine: uevents come from the kernel only"
        echo no > "$RESULTS/udevd"
    fi
    stage udev

    [ -n "$warmup" ] && wait "$warmup"
    stage warmup
    say "running the job"
    cd "$WORKDIR" || die "cd $WORKDIR"
    run /bin/sh "$RESULTS/job.sh" > "$RESULTS/output.log" 2>&1 < /dev/null
    rc=$?
    stage job
    say "job exited with $rc"
    finish "$rc"
}

case "$1" in
    stage2) stage2 ;;
    *) stage1 ;;
esac
