#!/bin/sh
# /init of the vmdev test rig's guest (busybox sh, runs as PID 1 from the initramfs).
# Loads the drivers listed in /lib/modules/load.order, waits for devices to settle and prints a
# machine-readable report on the console between "QH-REPORT-BEGIN <tag>" and "QH-REPORT-END <tag>"
# (parsed by report.py). Values never contain whitespace (trimmed, inner whitespace -> "_").
# Kernel command-line switches:
#   qh.wait=N          after the boot report print QH-READY-FOR-HOTPLUG, then poll for device
#                      changes for N seconds, printing a full report "hotplug-<n>" per change
#   qh.virtiofs=T[,T]  mount virtiofs tag(s) T, list files, read hello.txt, write from-guest.txt
#   qh.9p=T[,T]        the same for 9p (trans=virtio; needs the generic kernel flavour)
#   qh.dmesg=1         print the kernel log (QH-DMESG-BEGIN/END) before powering off
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
# Keep kernel messages from interleaving with report lines.
dmesg -n 1
HWRNG=/sys/class/misc/hw_random

read_uptime() { read -r UP _ < /proc/uptime; }

# rd FILE -> R: first line of FILE (empty if unreadable).
rd() { R=; [ -r "$1" ] && read -r R < "$1" 2>/dev/null; }

# trim VALUE -> R: without leading and trailing whitespace.
trim() {
    R=$1
    R=${R#"${R%%[![:space:]]*}"}
    R=${R%"${R##*[![:space:]]}"}
}

# clean VALUE -> R: trimmed, inner whitespace replaced by "_".
clean() { trim "$1"; R=${R//[[:space:]]/_}; }

# rdc FILE -> R: rd + clean.
rdc() { rd "$1"; clean "$R"; }

# linkname LINK -> R: last path component of LINK's target (empty if not a link).
linkname() { R=; [ -L "$1" ] && R=$(readlink "$1") && clean "${R##*/}"; }

parse_cmdline() {
    WAIT=; VIRTIOFS=; NINEP=; DMESG=
    set -f
    for arg in $(cat /proc/cmdline); do
        case $arg in
            qh.wait=*) WAIT=${arg#*=} ;;
            qh.virtiofs=*) VIRTIOFS=${arg#*=} ;;
            qh.9p=*) NINEP=${arg#*=} ;;
            qh.dmesg=*) DMESG=${arg#*=} ;;
        esac
    done
    set +f
}

load_modules() {
    while read -r mod; do
        args=
        [ "$mod" = scsi_mod ] && args=scan=sync
        echo "QH-INSMOD $mod"  # shows in the serial tail if a driver probe hangs
        if ! insmod "/lib/modules/$mod.ko" $args 2>/tmp/insmod.err; then
            rdc /tmp/insmod.err
            echo "QH-INSMOD-FAIL $mod $R"
        fi
    done < /lib/modules/load.order
}

# snapshot -> S: what a device change alters (functions, driver bindings, disks, rng, pmem).
snapshot() {
    S=$(ls /sys/bus/pci/devices /sys/bus/pci/drivers/*/ /sys/block /sys/bus/nd/devices \
        /sys/bus/virtio/devices /sys/bus/scsi/devices 2>/dev/null
        cat /sys/block/*/size $HWRNG/rng_available $HWRNG/rng_current 2>/dev/null)
}

# settle: wait until the snapshot is unchanged for 3 polls 0.1 s apart (at most ~8 s).
settle() {
    prev=; same=0; polls=0
    while [ $polls -lt 80 ]; do
        snapshot
        if [ "$S" = "$prev" ]; then
            same=$((same + 1))
            [ $same -ge 3 ] && return
        else
            same=0; prev=$S
        fi
        sleep 0.1; polls=$((polls + 1))
    done
}

report_pci() {
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d/vendor" ] || continue
        rd "$d/vendor"; ven=$R; rd "$d/device"; dev=$R; rd "$d/class"; cls=$R
        linkname "$d/driver"
        echo "pci ${d##*/} vendor=$ven device=$dev class=$cls driver=$R"
    done
}

report_virtio() {
    for d in /sys/bus/virtio/devices/*; do
        [ -e "$d/device" ] || continue
        rd "$d/device"; dev=$R; rd "$d/vendor"; ven=$R
        linkname "$d/driver"; drv=$R
        parent=$(readlink -f "$d"); parent=${parent%/*}; parent=${parent##*/}
        echo "virtio ${d##*/} device=$dev vendor=$ven driver=$drv parent=$parent"
    done
}

block_serial() {
    if [ -r "$1/serial" ]; then
        rdc "$1/serial"
    elif [ -r "$1/device/serial" ]; then
        rdc "$1/device/serial"
    elif [ -r "$1/device/vpd_pg80" ]; then
        clean "$(tail -c +5 "$1/device/vpd_pg80" 2>/dev/null | tr -d '\000')"
    else
        R=
    fi
}

report_block() {
    for b in /sys/block/*; do
        name=${b##*/}
        case $name in loop* | ram* | zram* | \*) continue ;; esac
        rd "$b/size"; size=$R; rd "$b/ro"; ro=$R; rd "$b/queue/logical_block_size"; lbs=$R
        block_serial "$b"; serial=$R
        linkname "$b/device"; hctl=
        case $R in *:*:*:*) hctl=$R ;; esac
        if [ -r "$b/wwid" ]; then rdc "$b/wwid"; else rdc "$b/device/wwid"; fi; wwid=$R
        marker=$(head -c 16 "/dev/$name" 2>/dev/null | tr -c '!-~' '\n' | head -n 1)
        echo "block $name size512=$size ro=$ro serial=$serial hctl=$hctl wwid=$wwid lbs=$lbs marker=$marker"
    done
}

report_scsi() {
    for d in /sys/bus/scsi/devices/*:*:*:*; do
        [ -e "$d/type" ] || continue
        rd "$d/type"; type=$R; rdc "$d/vendor"; vendor=$R; rdc "$d/model"; model=$R
        rdc "$d/rev"
        echo "scsi ${d##*/} type=$type vendor=$vendor model=$model rev=$R"
    done
}

report_rng() {
    rd "$HWRNG/rng_available"; trim "$R"; avail=${R//[[:space:]]/,}
    rdc "$HWRNG/rng_current"; current=$R
    echo "rng available=$avail current=$current"
    if [ -n "$current" ] && [ "$current" != none ]; then
        sample=$(timeout 2 head -c 8 /dev/hwrng 2>/dev/null | od -An -tx1 | tr -d ' \n')
        echo "rng sample=$sample"
    fi
}

report_nd() {
    for d in /sys/bus/nd/devices/*; do
        [ -e "$d" ] || continue
        rd "$d/devtype"; devtype=$R; rd "$d/size"; size=$R; rd "$d/mode"; mode=$R
        echo "nd ${d##*/} devtype=$devtype size=$size mode=$mode"
    done
    for p in /dev/pmem* /dev/dax*; do
        [ -e "$p" ] && echo "pmemdev $p"
    done
}

report_mounts() {
    while read -r src target fstype opts _; do
        case $fstype in
            rootfs | proc | sysfs | devtmpfs | tmpfs | devpts | securityfs | cgroup | cgroup2 | \
                debugfs | tracefs | configfs | fusectl | mqueue | pstore | bpf | hugetlbfs | \
                ramfs | efivarfs | binfmt_misc | autofs) continue ;;
        esac
        echo "mount $target source=$src type=$fstype opts=$opts"
    done < /proc/mounts
}

report() {
    echo "QH-REPORT-BEGIN $1"
    report_pci
    report_virtio
    report_block
    report_scsi
    report_rng
    report_nd
    report_mounts
    [ -n "$SHARES" ] && echo "$SHARES"
    echo "QH-REPORT-END $1"
}

# mount_share KIND TAG FSTYPE [OPTIONS] -> appends one "virtiofs"/"9p" line to SHARES.
mount_share() {
    dir=/mnt/$1-$2
    mkdir -p "$dir"
    if mount -t "$3" ${4:+-o "$4"} "$2" "$dir" 2>/tmp/mount.err; then
        files=$(ls -A "$dir" | tr ' \n' '_,'); files=${files%,}
        hello=
        [ -r "$dir/hello.txt" ] && clean "$(head -c 200 "$dir/hello.txt")" && hello=$R
        write=0
        echo hello-from-guest > "$dir/from-guest.txt" && sync && write=1
        line="$1 $2 mounted=1 files=$files hello=$hello write=$write"
    else
        rdc /tmp/mount.err
        line="$1 $2 mounted=0 error=$R"
    fi
    SHARES="${SHARES:+$SHARES
}$line"
}

mount_shares() {
    SHARES=
    for tag in ${VIRTIOFS//,/ }; do mount_share virtiofs "$tag" virtiofs; done
    for tag in ${NINEP//,/ }; do mount_share 9p "$tag" 9p trans=virtio,version=9p2000.L; done
}

# wait_for_hotplug SECONDS: print a "hotplug-<n>" report whenever the devices change.
wait_for_hotplug() {
    echo QH-READY-FOR-HOTPLUG
    read_uptime; deadline=$((${UP%.*} + $1)); n=0
    snapshot; last=$S
    while :; do
        read_uptime
        [ "${UP%.*}" -lt "$deadline" ] || break
        sleep 0.2
        snapshot
        [ "$S" = "$last" ] && continue
        settle; last=$S; n=$((n + 1))
        report "hotplug-$n"
    done
    echo "QH-HOTPLUG-DONE reports=$n"
}

main() {
    read_uptime
    echo "QH-INIT-START uptime=$UP kernel=$(uname -r)"
    parse_cmdline
    load_modules
    settle
    mount_shares
    report boot
    [ -n "$WAIT" ] && wait_for_hotplug "$WAIT"
    if [ "$DMESG" = 1 ]; then
        echo QH-DMESG-BEGIN; dmesg; echo QH-DMESG-END
    fi
    sync
    read_uptime
    echo "QH-POWEROFF uptime=$UP"
    poweroff -f
    sleep 2
    reboot -f  # QEMU runs with -no-reboot, so this ends it too
}

main
