"""Pseudo-terminals for containers and execs: the pair, the window size, the controlling terminal.

The daemon opens the pair (``open_pty``) and keeps the master: the copier
reads the container's output from it, attached clients' keys are written to
it, and ``set_window_size`` resizes it (the kernel then sends SIGWINCH to the
terminal's foreground process group). The slave becomes the process's 0, 1
and 2, and its controlling terminal (``make_controlling_terminal``, in the
child between fork and exec).

Rules:

1. The pair belongs to the container's own devpts, the instance mounted at
   its /dev/pts, so the terminal has a name there: ``tty`` prints
   /dev/pts/0, as under Docker (glibc's ttyname() checks the name it reads
   from /proc/self/fd/0 against the device, and a pty of the host's devpts
   has no name in the container's). For ``run -t`` the daemon makes that
   instance itself (``open_devpts``: mounted nowhere yet), takes the pair
   from it, and the init mounts it at /dev/pts (``rootfs.mount_rootfs``);
   for ``exec -t`` it opens the running container's /dev/pts
   (``open_container_pts``).
2. A ptmx is opened by descriptor only: ``O_PATH`` without following a
   symlink, checked to be the ptmx device (5:2), then reopened. A container
   controls its /dev/pts, and could put a symlink or another device node
   there; opening some devices has effects (a watchdog starts ticking).
3. Where the container's devpts cannot be had (no fsmount before Linux 5.2,
   no devpts at /dev/pts), the pair is the host's: a working terminal
   whose ``tty`` says "not a tty".

Rejected: allocating the pty inside the container (runc's
``--console-socket``: the init opens /dev/ptmx after pivot_root and sends
the master back over a socket). The master then exists only once the init
has set up, but the daemon's copier and stdin need it before the spawn, and
it would travel back through the spawner's reply as one more descriptor.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import struct
import termios
from collections.abc import Sequence

from . import _syscalls
from .mounts import parse_mount_options

_WINSIZE = struct.Struct("HHHH")     # struct winsize { unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel; }
# <asm-generic/ioctls.h>: unlockpt(3) is TIOCSPTLCK 0; TIOCGPTPEER (4.13+) opens the slave of a master
# through the master's own devpts mount, without a path lookup.
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
PTMX_DEVICE = os.makedev(5, 2)
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# MS_* flags of a mount's options -> MOUNT_ATTR_* of fsmount(2); the rest are no devpts matter.
_MOUNT_ATTRS = (
    (_syscalls.MS_RDONLY, _syscalls.MOUNT_ATTR_RDONLY),
    (_syscalls.MS_NOSUID, _syscalls.MOUNT_ATTR_NOSUID),
    (_syscalls.MS_NODEV, _syscalls.MOUNT_ATTR_NODEV),
    (_syscalls.MS_NOEXEC, _syscalls.MOUNT_ATTR_NOEXEC),
    (_syscalls.MS_NOATIME, _syscalls.MOUNT_ATTR_NOATIME),
    (_syscalls.MS_STRICTATIME, _syscalls.MOUNT_ATTR_STRICTATIME),
    (_syscalls.MS_NODIRATIME, _syscalls.MOUNT_ATTR_NODIRATIME),
)


def open_devpts(options: Sequence[str], *, sc=_syscalls) -> int:
    """A new devpts instance, mounted nowhere yet: the descriptor of its root (rule 1).

    ``move_mount`` attaches it (the init does, at its /dev/pts); until then
    it is in no namespace, and closing the last descriptor unmounts it.

    Args:
        options: the spec's mount options of /dev/pts (``["nosuid", "noexec",
            "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]``).

    Raises:
        OSError: ENOSYS before Linux 5.2; an option devpts refuses (EINVAL).
    """
    opts = parse_mount_options(options)
    fs = sc.fsopen("devpts")
    try:
        for item in (opts.data or "").split(","):
            if item:
                key, eq, value = item.partition("=")
                if eq:
                    sc.fsconfig(fs, sc.FSCONFIG_SET_STRING, key, value)
                else:
                    sc.fsconfig(fs, sc.FSCONFIG_SET_FLAG, key)
        sc.fsconfig(fs, sc.FSCONFIG_CMD_CREATE)
        attrs = 0
        for ms, attr in _MOUNT_ATTRS:
            if opts.flags & ms:
                attrs |= attr
        return sc.fsmount(fs, sc.FSMOUNT_CLOEXEC, attrs)
    finally:
        os.close(fs)


def open_container_pts(pid: int, pidfd: int) -> int:
    """A descriptor (``O_PATH``) of /dev/pts as the running container of init ``pid`` sees it (rule 1).

    Walked from /proc/PID/root one component at a time, never through a
    symlink; the init is checked through ``pidfd`` after /proc/PID/root is
    open, so a recycled PID cannot lend us another root.

    Raises:
        OSError: the init is gone (ESRCH), or /dev or /dev/pts is missing or a symlink.
    """
    fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)    # a magic link: followed
    try:
        signal.pidfd_send_signal(pidfd, 0)
        for part in ("dev", "pts"):
            child = os.open(part, _PATH_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_pty(*, rows: int = 0, cols: int = 0, devpts: int | None = None) -> tuple[int, int]:
    """A new pseudo-terminal pair ``(master, slave)``, both close-on-exec.

    Args:
        rows, cols: the initial window size; 0 and 0 leave the kernel's (0x0).
        devpts: a descriptor of a devpts directory (``open_devpts``,
            ``open_container_pts``) to allocate the pair in; None: the host's (``/dev/ptmx``).

    Raises:
        OSError: no pty could be allocated; ENODEV: the ``ptmx`` in ``devpts``
            is not the ptmx device (rule 2).
    """
    if devpts is None:
        master, slave = os.openpty()          # openpty(3): O_CLOEXEC is set by Python (PEP 446)
    else:
        master, slave = _open_pair_in(devpts)
    try:
        if rows or cols:
            set_window_size(master, rows, cols)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def _open_pair_in(devpts: int) -> tuple[int, int]:
    ptmx = os.open("ptmx", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=devpts)
    try:
        st = os.fstat(ptmx)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != PTMX_DEVICE:
            raise OSError(errno.ENODEV, "ptmx in the devpts directory is not the ptmx device (5:2)")
        master = os.open(f"/proc/self/fd/{ptmx}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(ptmx)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def set_window_size(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on ``fd`` (the master or the slave); the foreground group gets SIGWINCH.

    Raises:
        ValueError: a size outside 0..65535.
        OSError: ``fd`` is not a terminal.
    """
    if not (0 <= rows <= 0xFFFF and 0 <= cols <= 0xFFFF):
        raise ValueError(f"window size {rows}x{cols} is out of range (0-65535)")
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, cols, 0, 0))


def window_size(fd: int) -> tuple[int, int]:
    """TIOCGWINSZ: ``(rows, cols)`` of the terminal ``fd``.

    Raises:
        OSError: ``fd`` is not a terminal.
    """
    rows, cols, _, _ = _WINSIZE.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(_WINSIZE.size)))
    return rows, cols


def make_controlling_terminal(fd: int = 0) -> None:
    """In a child before exec: a new session (setsid(2)) whose controlling terminal is ``fd``.

    TIOCSCTTY needs a session leader without a terminal (tty_ioctl(4)); a
    cloned child is not a group leader, so setsid() cannot fail with EPERM.

    Raises:
        OSError: ``fd`` is not a terminal, or is another session's.
    """
    os.setsid()
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
