"""The host's device nodes, for --privileged (moby's HostDevices).

A privileged container gets every character and block device of the host's
/dev, created as nodes in its own /dev tmpfs (not a bind of /dev: the
container keeps its own pts, shm and mqueue). Pseudo-filesystem directories
are skipped, as moby skips them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_SKIP = {"pts", "shm", "mqueue", ".lxc", ".lxd-mounts", ".udev"}
# The container's own: /dev/ptmx links to its pts instance, /dev/console is its terminal.
_OWN = {"ptmx", "console"}


def host_devices(root: Path = Path("/dev")) -> list[dict[str, object]]:
    """OCI ``linux.devices`` entries for every device node under ``root``, sorted by path.

    Symlinks are not followed; a node that vanishes while we walk is skipped.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) == root and d in _SKIP))
        for name in filenames:
            if Path(dirpath) == root and name in _OWN:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rel = os.path.relpath(path, root)
                out.append({"path": "/dev/" + rel, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return sorted(out, key=lambda d: d["path"])


def block_device_name(majmin: str, *, sys_root: Path = Path("/sys")) -> str:
    """``/dev/NAME`` of the block device ``MAJ:MIN`` (the kernel's DEVNAME from
    /sys/dev/block/MAJ:MIN/uevent), as cAdvisor labels block I/O; ``MAJ:MIN``
    itself when the kernel names none (the device went away, or no sysfs).

    Cached by the caller: see ``BlockDeviceNames``.
    """
    try:
        uevent = (sys_root / "dev" / "block" / majmin / "uevent").read_text()
    except OSError:
        return majmin
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return "/dev/" + value
    return majmin


class BlockDeviceNames:
    """``block_device_name`` with a bounded memory of earlier answers, so a scrape of a
    thousand containers reads sysfs once per device, not once per container."""

    def __init__(self, *, sys_root: Path = Path("/sys"), max_entries: int = 1024) -> None:
        self._sys_root = sys_root
        self._max = max_entries
        self._names: dict[str, str] = {}

    def __call__(self, majmin: str) -> str:
        name = self._names.get(majmin)
        if name is None:
            name = block_device_name(majmin, sys_root=self._sys_root)
            if len(self._names) >= self._max:
                self._names.clear()   # devices come and go rarely: start over rather than grow
            self._names[majmin] = name
        return name
