"""Root filesystems from what is on the host.

For now one maker: a busybox root from Debian's busybox-static, which the demo,
the tests and the benchmarks run, and which ``corral image bootstrap busybox``
will turn into an image. The content store comes with the supervisor issue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import HostError

BUSYBOX = Path("/bin/busybox")
_DIRS = ("proc", "dev", "sys", "tmp", "etc", "root")


def make_busybox_rootfs(path: Path, *, busybox: Path = BUSYBOX) -> Path:
    """Fill ``path`` (created, must not exist) with busybox and a symlink per applet in /bin.

    Raises:
        HostError: the busybox binary is missing or cannot list its applets.
    """
    if not busybox.is_file():
        raise HostError(f"{busybox} is missing (Debian package busybox-static)")
    try:
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise HostError(f"cannot list the applets of {busybox}: {exc}") from exc
    (path / "bin").mkdir(parents=True)
    shutil.copy2(busybox, path / "bin/busybox")
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", path / "bin" / applet)
    for d in _DIRS:
        (path / d).mkdir(exist_ok=True)
    return path
