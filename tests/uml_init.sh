#!/bin/busybox sh
# PID 1 of the user-mode-linux guest started by tests/uml.py.
#
# Kernel command line (built by tests/uml.py):
#   rootfstype=hostfs rootflags=/ rw init=<this file> -- <job dir>
# The job dir is a host directory (seen through hostfs) holding:
#   run.sh     written by the host: cd to the cwd, exec the command with its env
#   modules    kernel modules (.ko paths) to load, in order, one a line
# and this script writes there:
#   output     the command's stdout and stderr
#   status     its exit status (written last, after output is complete)
#   guest.txt  what the guest kernel offers (mounts, controllers, modules)
#
# It runs under busybox's (static) ash, whose applets need no exec of a
# dynamically linked binary read through hostfs: every exec costs ~30-100 ms in
# UML, so this keeps the boot at ~2.5 s.
#
# Everything mounted here is guest-only: the host's /tmp, /run and
# /sys/fs/cgroup are untouched, the guest just mounts over them.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

job=${1:-}
J=/run/corral-uml           # the job dir, bind-mounted here (host /tmp gets hidden)

say() { echo "uml-init: $*"; }

halt_now() {
    sync
    echo o > /proc/sysrq-trigger 2>/dev/null
    # Not reached when sysrq works; try the other ways, then let the kernel panic.
    poweroff -f 2>/dev/null || busybox poweroff -f 2>/dev/null
    sleep 5
    exit 1
}

die() { say "FATAL: $*"; halt_now; }

# Until proc is mounted, /proc is the HOST's /proc seen through hostfs: there,
# /proc/self/exe is linux.uml itself, and busybox's standalone shell execs
# /proc/self/exe to run an applet. Hence the explicit path for this one.
/bin/busybox mount -t proc proc /proc || die "mount proc"
echo 1 > /proc/sys/kernel/sysrq 2>/dev/null
mount -t sysfs sysfs /sys || die "mount sysfs"
# CONFIG_DEVTMPFS_MOUNT mounts /dev before init; mount it if a kernel did not.
grep -q ' /dev devtmpfs ' /proc/mounts || mount -t devtmpfs devtmpfs /dev || say "no devtmpfs"
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts || say "no devpts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || say "no /dev/shm"
mount -t mqueue mqueue /dev/mqueue 2>/dev/null
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr

[ -n "$job" ] && [ -d "$job" ] || die "no job dir on the kernel command line (got '$job')"
mount -t tmpfs -o mode=0755 tmpfs /run || die "mount /run"
mkdir -p "$J"
mount --bind "$job" "$J" || die "bind $job"
# A working directory under the host's /tmp (a clone made there) must stay
# visible: keep the host's /tmp reachable, then bind the directory back in.
mkdir -p /run/host-tmp && mount --bind /tmp /run/host-tmp || die "bind host /tmp"
mount -t tmpfs -o mode=1777 tmpfs /tmp || die "mount /tmp"
cwd=$(cat "$J/cwd" 2>/dev/null)
case "$cwd" in
/tmp/?*)
    rel=${cwd#/tmp/}
    mkdir -p "/tmp/$rel" && mount --bind "/run/host-tmp/$rel" "/tmp/$rel" || die "bind $cwd"
    ;;
esac

mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || die "mount cgroup2"
read -r controllers < /sys/fs/cgroup/cgroup.controllers
for c in $controllers; do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || say "cannot enable controller $c"
done

# Modules: the kernel's modprobe helper (/sbin/modprobe) does not exist on the
# host, so the host side resolved the dependencies (modules.dep) and wrote the
# .ko paths to load, in order, to $J/modules; busybox insmod loads them.
read -r t0 _ < /proc/uptime
for ko in $(cat "$J/modules" 2>/dev/null); do
    busybox insmod "$ko" || say "insmod $ko failed"
done
read -r t1 _ < /proc/uptime
say "modules loaded in $t0..${t1}s (guest uptime)"

echo corral-uml > /proc/sys/kernel/hostname
ip link set lo up || say "cannot bring lo up"

read -r subtree < /sys/fs/cgroup/cgroup.subtree_control
{
    echo "controllers: $controllers"
    echo "subtree_control: $subtree"
    echo "--- /proc/modules"; cat /proc/modules
    echo "--- /proc/filesystems"; cat /proc/filesystems
    echo "--- /proc/mounts"; cat /proc/mounts
} > "$J/guest.txt" 2>&1

say "running $job/run.sh"
HOME=/root
export HOME
cd /
sh "$J/run.sh" < /dev/null > "$J/output" 2>&1
rc=$?
echo "$rc" > "$J/status.tmp" && mv "$J/status.tmp" "$J/status"
say "command exited with status $rc"
halt_now
