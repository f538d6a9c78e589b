"""A container's root: an overlay of image snapshots (read-only) under its own upper dir.

``mount_container_root`` mounts ``overlay`` on a target in the caller's mount
namespace (the daemon's, or the host's); the container's init later binds it
as its rootfs (``runtime.rootfs``).

Choices:

- ``index=off,redirect_dir=off,metacopy=off`` always, whatever the module
  parameters of this kernel say. With the inode index, a lower directory
  becomes tied to the first upper that used it, so a snapshot shared by many
  containers fails to mount (Docker's overlay2 passes ``index=off`` for the
  same reason). Without redirects and metacopy the upper dir is a complete,
  self-contained diff: a renamed directory is copied up whole (rename(2)
  returns EXDEV and ``mv`` falls back to copying), so a future ``commit`` can
  pack the upper dir as it is (``layers.pack_directory(whiteouts=True)``).
- The mount data of mount(2) is limited to one page (4096 bytes here). Absolute
  snapshot paths are ~90 bytes, so about 40 layers fit. Past that we open each
  lower dir with ``O_PATH`` and name it ``/proc/self/fd/<n>`` (~17 bytes:
  ~200 layers, and overlayfs stops at 500 anyway). Rejected: relative paths
  from a ``chdir`` into a common parent (what Docker does in a forked child):
  the cwd belongs to the whole process, and the daemon is multi-threaded.
  Rejected for now: the new mount API (fsopen/fsconfig ``lowerdir+``) which
  has no page limit but needs Linux 6.8 and more ctypes.
- ``\\``, ``,`` and ``:`` in paths are escaped with a backslash, as overlayfs
  parses them (``:`` separates lower dirs, ``,`` options).
"""

from __future__ import annotations

import os
from pathlib import Path

from . import _syscalls
from ._syscalls import MNT_DETACH
from .errors import MountError

OVERLAY_OPTIONS = ("index=off", "redirect_dir=off", "metacopy=off")
# mount(2) copies at most one page of data; the final NUL counts.
_DATA_MAX = os.sysconf("SC_PAGE_SIZE") - 1


def escape_path(path: str) -> str:
    """A path as overlayfs reads it inside ``lowerdir=``/``upperdir=``."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def overlay_data(lowerdirs: list[str], upper: str, work: str, *, options: tuple[str, ...] = OVERLAY_OPTIONS) -> str:
    """The mount data string (pure): ``lowerdir=top:...:bottom,upperdir=...,workdir=...,<options>``."""
    return ",".join([
        "lowerdir=" + ":".join(escape_path(p) for p in lowerdirs),
        "upperdir=" + escape_path(upper),
        "workdir=" + escape_path(work),
        *options,
    ])


def mount_container_root(lowerdirs: list[Path], upper: Path, work: Path, target: Path, *,
                         sc=_syscalls, data_max: int = _DATA_MAX) -> None:
    """Mount an overlay of ``lowerdirs`` (top first, as overlayfs lists them) with ``upper`` on ``target``.

    Args:
        lowerdirs: the image's snapshot directories, topmost first; at least one.
        upper: the container's writable layer, an existing directory.
        work: overlayfs' scratch directory, empty, on the same filesystem as ``upper``.
        target: an existing directory to mount on.
        sc: the syscalls module (tests record the calls).
        data_max: the longest mount data string; past it lower dirs are passed
            as ``/proc/self/fd/<n>`` (module docstring).

    Raises:
        MountError: no lower dir, or mount(2) failed; the message has the data
            string (the kernel writes the precise reason to its log, dmesg).
    """
    if not lowerdirs:
        raise MountError(f"cannot mount the root on {target}: overlayfs needs at least one lower dir")
    lowers = [os.fspath(p) for p in lowerdirs]
    data = overlay_data(lowers, os.fspath(upper), os.fspath(work))
    fds: list[int] = []
    try:
        if len(data) > data_max:
            for p in lowers:
                fds.append(os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            data = overlay_data([f"/proc/self/fd/{fd}" for fd in fds], os.fspath(upper), os.fspath(work))
            if len(data) > data_max:
                raise MountError(f"cannot mount the root on {target}: {len(lowers)} layers do not fit "
                                 f"in {data_max} bytes of mount options")
        sc.mount("overlay", os.fspath(target), "overlay", 0, data)
    except OSError as exc:
        raise MountError(f"failed to mount overlay on {target} with {data!r}: {exc.strerror or exc} "
                         "(see dmesg for overlayfs' reason)") from exc
    finally:
        for fd in fds:
            os.close(fd)   # overlayfs holds its own references once mounted


def unmount(target: Path, *, detach: bool = False, sc=_syscalls) -> None:
    """Unmount a container root.

    Args:
        detach: MNT_DETACH: take it out of the tree now even if it is busy
            (a process still has its cwd there); the kernel frees it later.

    Raises:
        MountError: not mounted (EINVAL) or busy (EBUSY) without ``detach``.
    """
    try:
        sc.umount2(os.fspath(target), MNT_DETACH if detach else 0)
    except OSError as exc:
        raise MountError(f"failed to unmount {target}: {exc.strerror or exc}") from exc


def is_mounted(target: Path, *, mountinfo: str | None = None) -> bool:
    """Whether ``target`` is a mount point, from /proc/self/mountinfo (or the text given)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    wanted = os.path.realpath(target)
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and _unescape_mountinfo(fields[4]) == wanted:
            return True
    return False


def mounts_under(root: Path, *, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``root``, deepest first (the order to unmount them in)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    top = os.path.realpath(root)
    points = {_unescape_mountinfo(fields[4]) for fields in (line.split() for line in mountinfo.splitlines())
              if len(fields) > 4}
    return sorted((p for p in points if p == top or p.startswith(top + "/")), key=lambda p: -p.count("/"))


def _unescape_mountinfo(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in octal (\040 ...).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
