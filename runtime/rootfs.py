"""The container's root filesystem, mounted by its init inside a new mount namespace.

The choreography, one step per function, in the order runc and crun use
(libcontainer/rootfs_linux.go, src/libcrun/linux.c):

1. ``mount_rootfs``: make every mount a slave so nothing we do reaches the host,
   bind the rootfs onto itself (pivot_root(2) wants a mount point), mount the
   spec's mounts under it, create /dev nodes and links.
2. ``pivot_to``: pivot_root(".", ".") and detach the old root (pivot_root(2) NOTES).
3. ``finalize_rootfs``: read-only paths, masked paths, then the read-only root.

Every destination is resolved inside the rootfs with ``secure_join``: a symlink
in an image (``/proc -> /etc``) can never make us mount over a host path.
Each step takes the syscalls module as ``sc`` so unit tests record the calls.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from protocols.runtime_spec import Device, Mount, Spec

from . import _syscalls
from ._syscalls import (
    MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT,
)
from .errors import MountError
from .mounts import PROPAGATION, parse_mount_options

# (path, major, minor): runc's AllowedDevices that it creates in every container.
DEFAULT_DEVICES = (
    ("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
    ("/dev/random", 1, 8), ("/dev/urandom", 1, 9), ("/dev/tty", 5, 0),
)
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
)
_MAX_SYMLINKS = 40   # as the kernel's path walk (path_resolution(7))

# statvfs f_flag bits -> MS_* flags a bind remount must keep (statvfs(3)).
_ST_TO_MS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
             (os.ST_NOATIME, _syscalls.MS_NOATIME), (os.ST_NODIRATIME, _syscalls.MS_NODIRATIME),
             (os.ST_RELATIME, _syscalls.MS_RELATIME))


def secure_join(root: str, unsafe: str) -> str:
    """``root`` + ``unsafe``, with every symlink on the way resolved as if ``root`` were /.

    The result is always inside ``root``; ``..`` and absolute links stop at it.
    Components that do not exist yet are kept as they are (they will be created).

    Raises:
        MountError: more than 40 symlinks on the way (a loop).
    """
    parts = [p for p in unsafe.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)       # not a link, or missing: kept literally
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise MountError(f"too many levels of symbolic links resolving {unsafe} in {root}")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return os.path.join(root, *resolved)


def mount_rootfs(spec: Spec, rootfs: str, *, bundle: str, cgroup_sources: list[tuple[str, Path]],
                 cgroup_fresh: bool = False, devpts: int | None = None, console: bool = False,
                 sc=_syscalls) -> None:
    """Steps before pivot_root: propagation, the rootfs bind, the spec's mounts, /dev.

    Args:
        spec: the container's spec.
        rootfs: absolute path of the root filesystem, as the host sees it.
        bundle: directory that relative bind sources are taken from.
        cgroup_sources: (name, host directory) of the container's cgroup in each
            hierarchy, from ``Cgroup.mount_sources()``, for "cgroup" mounts.
        cgroup_fresh: mount a new cgroup2 instead of binding the host directory
            (v2 in a cgroup namespace, where the new mount shows the namespace root).
        devpts: a devpts instance made for this container (``terminal.open_devpts``,
            holding its terminal): attached at /dev/pts instead of a new one there.
        console: our fd 0 is the container's terminal: bind it at /dev/console.

    Raises:
        MountError: names the mount and the path that failed.
    """
    # Step 1: slave, not private: host mounts still propagate in, ours never leak out.
    _do(sc.mount, None, "/", None, PROPAGATION[spec.rootfs_propagation or "rslave"])
    # Step 2: pivot_root needs the new root to be a mount point of its own.
    _do(sc.mount, rootfs, rootfs, None, MS_BIND | MS_REC)
    for m in spec.mounts:
        if devpts is not None and m.type == "devpts" and m.destination == "/dev/pts":
            # The instance the daemon took the terminal from: it has a name in here then.
            dest = secure_join(rootfs, m.destination)
            _make_mountpoint(dest, directory=True)
            _do(sc.move_mount, devpts, dest)
            for propagation in parse_mount_options(m.options).propagation:
                _do(sc.mount, None, dest, None, propagation)
            devpts = None
            continue
        _mount_one(m, rootfs, bundle=bundle, cgroup_sources=cgroup_sources, cgroup_fresh=cgroup_fresh, sc=sc)
    if _has_own_dev(spec):
        create_devices(rootfs, spec.devices)
    process = spec.process
    if console:
        mount_console(rootfs, sc=sc)
    if process is not None:
        os.makedirs(secure_join(rootfs, process.cwd), mode=0o755, exist_ok=True)


def pivot_to(rootfs: str, *, sc=_syscalls) -> None:
    """Make ``rootfs`` the root and detach the old one (pivot_root(2) NOTES: "." twice)."""
    os.chdir(rootfs)
    _do(sc.pivot_root, ".", ".")
    # The old root is now stacked on "/"; it is a slave since step 1, so the
    # detach below cannot propagate to the host.
    _do(sc.umount2, ".", MNT_DETACH)
    os.chdir("/")


def finalize_rootfs(spec: Spec, *, sc=_syscalls) -> None:
    """After pivot_root: read-only paths, masked paths, then the read-only root."""
    for path in spec.readonly_paths:
        if os.path.lexists(path):
            _do(sc.mount, path, path, None, MS_BIND | MS_REC)
            _do(sc.mount, path, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | _kept_flags(path))
    for path in spec.masked_paths:
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            _do(sc.mount, "tmpfs", path, "tmpfs", MS_RDONLY)
        else:
            _do(sc.mount, "/dev/null", path, None, MS_BIND)
    if spec.root.readonly:
        _do(sc.mount, None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | _kept_flags("/"))


def mount_binds(spec: Spec, rootfs: str, *, bundle: str, sc=_syscalls) -> None:
    """A stopped container's view for ``cp``: the spec's bind mounts under ``rootfs``, then the root
    read-only if the spec's is.

    The binds are what holds the container's files outside its overlay
    (volumes, ``-v`` binds, /etc/hosts and friends), mounted as step 1 mounts
    them; the caller is in a mount namespace of its own (``runtime.archive``).
    Mounts under /proc, /sys and /dev are left out, as their kernel
    filesystems are. The root goes read-only after the binds, so a read-only
    container still takes files into its writable volumes, as in Docker.

    Raises:
        MountError: names the mount and the path that failed.
    """
    for m in spec.mounts:
        kernel = any(m.destination == d or m.destination.startswith(d + "/") for d in ("/proc", "/sys", "/dev"))
        if kernel or not (m.type == "bind" or parse_mount_options(m.options).is_bind):
            continue
        _mount_one(m, rootfs, bundle=bundle, cgroup_sources=[], cgroup_fresh=False, sc=sc)
    if spec.root.readonly:
        _do(sc.mount, None, rootfs, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _kept_flags(rootfs))


def mount_console(rootfs: str, *, sc=_syscalls) -> None:
    """/dev/console is the container's terminal, our fd 0 (its pty slave), as runc binds it.

    Programs that write to the console (init systems, getty, ``echo > /dev/console``)
    reach the terminal the container was given, not the host's.
    """
    dest = secure_join(rootfs, "/dev/console")
    _make_mountpoint(dest, directory=False)
    _do(sc.mount, "/proc/self/fd/0", dest, None, MS_BIND)


def create_devices(rootfs: str, extra: tuple[Device, ...] = ()) -> None:
    """/dev nodes (runc's defaults plus the spec's), symlinks and /dev/ptmx."""
    for path, major, minor in DEFAULT_DEVICES:
        _mknod(secure_join(rootfs, path), stat.S_IFCHR | 0o666, os.makedev(major, minor), 0, 0)
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    for dev in extra:
        mode = kinds[dev.type] | (dev.file_mode if dev.file_mode is not None else 0o666)
        _mknod(secure_join(rootfs, dev.path), mode, os.makedev(dev.major, dev.minor), dev.uid or 0, dev.gid or 0)
    for target, link in DEV_SYMLINKS + (("pts/ptmx", "/dev/ptmx"),):
        dest = secure_join(rootfs, link)
        if not os.path.lexists(dest):
            os.symlink(target, dest)


def _mount_one(m: Mount, rootfs: str, *, bundle: str, cgroup_sources: list[tuple[str, Path]],
               cgroup_fresh: bool, sc) -> None:
    opts = parse_mount_options(m.options)
    dest = secure_join(rootfs, m.destination)
    if m.type == "cgroup" or m.type == "cgroup2":
        _mount_cgroup(m, dest, opts.flags, cgroup_sources, cgroup_fresh, sc=sc)
    elif opts.is_bind or m.type == "bind":
        source = m.source or ""
        if not source.startswith("/"):
            source = os.path.join(bundle, source)
        if not os.path.exists(source):
            raise MountError(f"bind mount source {source} for {m.destination} does not exist")
        _make_mountpoint(dest, directory=os.path.isdir(source))
        flags = opts.flags | MS_BIND
        _do(sc.mount, source, dest, None, flags & (MS_BIND | MS_REC))
        # mount(2): other flags of a bind only take effect on a remount.
        if flags & ~(MS_BIND | MS_REC):
            _do(sc.mount, source, dest, None, flags | MS_REMOUNT | _kept_flags(dest))
    else:
        _make_mountpoint(dest, directory=True)
        _do(sc.mount, m.source or m.type or "none", dest, m.type, opts.flags, opts.data)
    for propagation in opts.propagation:
        _do(sc.mount, None, dest, None, propagation)


def _mount_cgroup(m: Mount, dest: str, flags: int, sources: list[tuple[str, Path]], fresh: bool, *, sc) -> None:
    _make_mountpoint(dest, directory=True)
    if len(sources) == 1 and sources[0][0] == "":     # v2: one hierarchy
        if fresh:
            _do(sc.mount, "cgroup", dest, "cgroup2", flags)
        else:
            _do(sc.mount, str(sources[0][1]), dest, None, MS_BIND)
            _do(sc.mount, str(sources[0][1]), dest, None, MS_BIND | MS_REMOUNT | flags)
        return
    # v1: a tmpfs holding one bind of the container's directory per hierarchy (runc).
    _do(sc.mount, "tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    for name, host_dir in sources:
        sub = os.path.join(dest, name)
        os.makedirs(sub, exist_ok=True)
        _do(sc.mount, str(host_dir), sub, None, MS_BIND)
        _do(sc.mount, str(host_dir), sub, None, MS_BIND | MS_REMOUNT | flags)
        if "," in name:                               # co-mounted: cpu,cpuacct -> cpu, cpuacct
            for part in name.split(","):
                link = os.path.join(dest, part)
                if not os.path.lexists(link):
                    os.symlink(name, link)


def _has_own_dev(spec: Spec) -> bool:
    return any(m.destination == "/dev" and m.type != "bind" and "bind" not in m.options
               and "rbind" not in m.options for m in spec.mounts)


def _make_mountpoint(path: str, *, directory: bool) -> None:
    if directory:
        os.makedirs(path, mode=0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _mknod(path: str, mode: int, device: int, uid: int, gid: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)     # /dev/net/tun, /dev/cpu/0/cpuid
    try:
        os.mknod(path, mode, device)
    except FileExistsError:
        return
    except OSError as exc:
        raise MountError(f"failed to create device {path}: {exc.strerror}") from exc
    os.chmod(path, mode & 0o7777)        # mknod honours the umask; the spec's mode must not
    os.chown(path, uid, gid)


def _kept_flags(path: str) -> int:
    """Flags of the mount under ``path`` that a remount must repeat, or it clears them."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _ST_TO_MS if f_flag & st)


def _do(call, *args) -> None:
    try:
        call(*args)
    except OSError as exc:
        raise MountError(exc.strerror or str(exc)) from exc
