"""Every call corral makes into libc through ctypes, and the kernel constants.

Rules:

1. This is the only module of corral that imports ctypes (tests/unit/test_layering.py).
   Everything else calls these functions by name, and logic that issues them takes
   this module as a parameter (``sc=_syscalls``) so tests can record the calls.
2. The stdlib comes first: ``os.pidfd_open``, ``signal.pidfd_send_signal``,
   ``os.waitid(os.P_PIDFD, ...)``, ``os.setgroups``, ``os.setresuid``, ``os.mknod``,
   ``resource.prlimit`` are used directly. Only the gaps are here.
3. A failing call raises ``OSError(errno, "<operation> <argument>: <strerror>")``,
   with the file name set, so the message says what failed where.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
# clone() must run with the GIL held and inside PyOS_BeforeFork/AfterFork, as
# os.fork() does; a PyDLL (ctypes.pythonapi's kind) never releases the GIL.
# use_errno, unlike ctypes.pythonapi: get_errno() then reads the call's errno.
_pyapi = ctypes.PyDLL(None, use_errno=True)

_MACHINE = os.uname().machine
_NR = {
    "x86_64": {"clone": 56, "pivot_root": 155, "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438},
    "aarch64": {"clone": 220, "pivot_root": 41, "pidfd_open": 434, "clone3": 435, "pidfd_getfd": 438},
}[_MACHINE]

# <linux/sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_PARENT = 0x00008000
CLONE_INTO_CGROUP = 0x200000000     # clone3 only (Linux 5.7)

# <sys/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/pidfd.h> (6.15+): PIDFD_GET_INFO = _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info),
# asked with the first version of the struct (64 bytes; exit_code at offset 60).
_PIDFD_INFO_SIZE = 64
PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO_SIZE << 16) | (0xFF << 8) | 11
PIDFD_INFO_EXIT = 1 << 3

# <linux/inotify.h>
IN_MODIFY = 0x00000002
IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK

_libc.syscall.restype = ctypes.c_long
_pyapi.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _fail(operation: str, argument: object = None) -> OSError:
    err = ctypes.get_errno()
    where = f"{operation} {argument}" if argument is not None else operation
    return OSError(err, f"{where}: {os.strerror(err)}", None if argument is None else str(argument))


def _check(result: int, operation: str, argument: object = None) -> int:
    if result < 0:
        raise _fail(operation, argument)
    return result


def _b(value: str | bytes | None) -> bytes | None:
    return os.fsencode(value) if value is not None else None


def clone(flags: int, *, cgroup_fd: int | None = None) -> int:
    """fork() with namespace flags: returns 0 in the child, the child's PID in the parent.

    A raw clone(2) with no new stack behaves like fork(2), so the child resumes
    here. Python's own fork bookkeeping runs around it exactly as os.fork() runs
    it (PyOS_BeforeFork/AfterFork_*). glibc's fork handlers do not: call this
    only from a single-threaded process (the spawner, or a one-shot command),
    and only to exec soon after.

    With ``cgroup_fd`` (a cgroup v2 directory) it is clone3(2) with
    CLONE_INTO_CGROUP: the child is born in that cgroup, no migration needed.

    Raises:
        OSError: clone failed (EINVAL for an unknown flag, EPERM, ENOSPC...);
            ENOSYS or E2BIG with ``cgroup_fd``: the kernel has no clone3, or one
            without CLONE_INTO_CGROUP (before 5.7).
    """
    if cgroup_fd is None:
        args = (ctypes.c_long(_NR["clone"]), ctypes.c_ulong(flags | 17),    # 17 = SIGCHLD to the parent
                ctypes.c_void_p(0), ctypes.c_void_p(0), ctypes.c_void_p(0), ctypes.c_void_p(0))
    else:
        # struct clone_args, CLONE_ARGS_SIZE_VER2: flags, pidfd, child_tid, parent_tid,
        # exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup. No stack: as fork.
        # With CLONE_PARENT the exit signal must be 0: the child gets our parent's (SIGCHLD).
        exit_signal = 0 if flags & CLONE_PARENT else 17
        packed = struct.pack("=11Q", flags | CLONE_INTO_CGROUP, 0, 0, 0, exit_signal, 0, 0, 0, 0, 0, cgroup_fd)
        args = (ctypes.c_long(_NR["clone3"]), ctypes.create_string_buffer(packed, len(packed)),
                ctypes.c_size_t(len(packed)))
    _pyapi.PyOS_BeforeFork()
    ctypes.set_errno(0)
    pid = _pyapi.syscall(*args)
    if pid == 0:
        _pyapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _pyapi.PyOS_AfterFork_Parent()
    if pid < 0:
        call = "clone" if cgroup_fd is None else "clone3 into a cgroup,"
        raise OSError(err, f"{call} flags={flags:#x}: {os.strerror(err)}")
    return pid


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare", f"{flags:#x}")


def setns(fd: int, nstype: int = 0, *, path: str | None = None) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", path or fd)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) < 0:
        raise _fail(f"mount {source or fstype or 'none'} ({fstype or 'bind'}, flags={flags:#x}, data={data!r}) on", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    # glibc has no wrapper; see pivot_root(2).
    _check(_libc.syscall(ctypes.c_long(_NR["pivot_root"]), _b(new_root), _b(put_old)), "pivot_root", new_root)


# <linux/mount.h>: the mount API of Linux 5.2 (fsopen(2), fsconfig(2), fsmount(2), move_mount(2)).
# Its syscall numbers are the same on every architecture (added after the tables were unified).
_NR_MOUNT_API = {"move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432}
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOVE_MOUNT_F_EMPTY_PATH = 0x4
_AT_FDCWD = -100


def fsopen(fs_name: str, flags: int = FSOPEN_CLOEXEC) -> int:
    """A filesystem context for ``fs_name`` ("devpts"); ENOSYS before Linux 5.2."""
    return _check(_libc.syscall(ctypes.c_long(_NR_MOUNT_API["fsopen"]), _b(fs_name), ctypes.c_uint(flags)),
                  "fsopen", fs_name)


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    _check(_libc.syscall(ctypes.c_long(_NR_MOUNT_API["fsconfig"]), ctypes.c_int(fd), ctypes.c_uint(cmd),
                         _b(key), _b(value), ctypes.c_int(aux)),
           "fsconfig", f"{key}={value}" if value is not None else (key or f"cmd {cmd}"))


def fsmount(fd: int, flags: int = FSMOUNT_CLOEXEC, attr_flags: int = 0) -> int:
    """A mount of the created context, attached nowhere: its descriptor (a directory)."""
    return _check(_libc.syscall(ctypes.c_long(_NR_MOUNT_API["fsmount"]), ctypes.c_int(fd), ctypes.c_uint(flags),
                                ctypes.c_uint(attr_flags)), "fsmount", fd)


def move_mount(from_fd: int, to_path: str, flags: int = MOVE_MOUNT_F_EMPTY_PATH) -> None:
    """Attach the mount ``from_fd`` refers to (an ``fsmount`` one) at ``to_path``."""
    _check(_libc.syscall(ctypes.c_long(_NR_MOUNT_API["move_mount"]), ctypes.c_int(from_fd), b"",
                         ctypes.c_int(_AT_FDCWD), _b(to_path), ctypes.c_uint(flags)), "move_mount", to_path)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname", name)


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_libc.setdomainname(raw, ctypes.c_size_t(len(raw))), "setdomainname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl", option)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_keepcaps(keep: bool) -> None:
    prctl(PR_SET_KEEPCAPS, int(keep))


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum)


def capbset_read(cap: int) -> bool:
    """Whether ``cap`` is in the bounding set; False past the kernel's last cap."""
    result = _libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0)
    if result < 0:
        if ctypes.get_errno() == errno.EINVAL:
            return False
        raise _fail("prctl PR_CAPBSET_READ", cap)
    return bool(result)


def capbset_drop(cap: int) -> None:
    _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "prctl PR_CAPBSET_DROP", cap)


def cap_ambient_raise(cap: int) -> None:
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), "prctl PR_CAP_AMBIENT_RAISE", cap)


def cap_ambient_clear_all() -> None:
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl PR_CAP_AMBIENT_CLEAR_ALL")


class _CapHeader(ctypes.Structure):
    """struct __user_cap_header_struct { __u32 version; int pid; };"""

    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    """struct __user_cap_data_struct { __u32 effective, permitted, inheritable; };"""

    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget", pid)
    join = lambda name: getattr(data[0], name) | (getattr(data[1], name) << 32)  # noqa: E731
    return join("effective"), join("permitted"), join("inheritable")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset", f"eff={effective:#x} prm={permitted:#x} inh={inheritable:#x}")


def inotify_init1(flags: int = IN_CLOEXEC | IN_NONBLOCK) -> int:
    return _check(_libc.inotify_init1(ctypes.c_int(flags)), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    return _check(_libc.inotify_add_watch(ctypes.c_int(fd), _b(path), ctypes.c_uint32(mask)), "inotify_add_watch", path)


def pidfd_exit_info(pidfd: int) -> int | None:
    """The wait status (as waitpid gives it) of the process behind ``pidfd`` once it was
    reaped, by anyone; None while it runs or waits, a zombie, for its reaper.

    Raises:
        OSError: ENOTTY or EINVAL on kernels before 6.15 (no PIDFD_GET_INFO or no
            PIDFD_INFO_EXIT); the caller says "unknown" then.
    """
    buf = bytearray(struct.pack("=Q", PIDFD_INFO_EXIT) + bytes(_PIDFD_INFO_SIZE - 8))
    try:
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf, True)
    except OSError as exc:
        if exc.errno == errno.ESRCH:       # not reaped yet and no longer running: no info
            return None
        raise OSError(exc.errno, f"ioctl PIDFD_GET_INFO {pidfd}: {os.strerror(exc.errno)}") from None
    mask, = struct.unpack_from("=Q", buf)
    if not mask & PIDFD_INFO_EXIT:
        return None
    return struct.unpack_from("=i", buf, 60)[0]
