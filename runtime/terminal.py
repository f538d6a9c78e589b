"""Pseudo-terminals for containers and execs: the pair, the window size, the controlling terminal.

The daemon opens the pair (``open_pty``) and keeps the master: the copier
reads the container's output from it, attached clients' keys are written to
it, and ``set_window_size`` resizes it (the kernel then sends SIGWINCH to the
terminal's foreground process group). The slave becomes the process's 0, 1
and 2, and its controlling terminal (``make_controlling_terminal``, in the
child between fork and exec).

Rejected: allocating the pty inside the container's own devpts (runc's
``--console-socket``: the init opens /dev/ptmx after pivot_root and sends the
master back over a socket). It makes ``tty`` print a /dev/pts path inside
the container, but needs one more fd through the init's handshake; the
daemon-side pair gives the same terminal behaviour (job control, echo,
window size) with stdlib calls only.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

_WINSIZE = struct.Struct("HHHH")     # struct winsize { unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel; }


def open_pty(*, rows: int = 0, cols: int = 0) -> tuple[int, int]:
    """A new pseudo-terminal pair ``(master, slave)``, both close-on-exec.

    Args:
        rows, cols: the initial window size; 0 and 0 leave the kernel's (0x0).

    Raises:
        OSError: no pty could be allocated (``/dev/ptmx``).
    """
    master, slave = os.openpty()          # openpty(3): O_CLOEXEC is set by Python (PEP 446)
    try:
        if rows or cols:
            set_window_size(master, rows, cols)
    except BaseException:
        os.close(master)
        os.close(slave)
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
