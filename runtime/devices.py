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
