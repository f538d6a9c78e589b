"""runtime/terminal.py without root: the devpts instance's configuration, and a ptmx that is not one refused."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from runtime import _syscalls as real
from runtime.terminal import open_devpts, open_pty


class RecordingMountApi:
    """The fsopen/fsconfig/fsmount calls of ``open_devpts``; fds are real (a pipe) so closing them works."""

    FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = (
        real.FSCONFIG_SET_FLAG, real.FSCONFIG_SET_STRING, real.FSCONFIG_CMD_CREATE)
    FSMOUNT_CLOEXEC = real.FSMOUNT_CLOEXEC

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def fsopen(self, name: str) -> int:
        r, w = os.pipe()
        os.close(w)
        self.calls.append(("fsopen", name))
        return r

    def fsconfig(self, fd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
        self.calls.append(("fsconfig", cmd, key, value))

    def fsmount(self, fd: int, flags: int, attrs: int) -> int:
        self.calls.append(("fsmount", flags, attrs))
        return 99


def test_open_devpts_passes_the_specs_options_and_flags() -> None:
    sc = RecordingMountApi()
    assert open_devpts(["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"], sc=sc) == 99
    assert sc.calls == [
        ("fsopen", "devpts"),
        ("fsconfig", real.FSCONFIG_SET_FLAG, "newinstance", None),
        ("fsconfig", real.FSCONFIG_SET_STRING, "ptmxmode", "0666"),
        ("fsconfig", real.FSCONFIG_SET_STRING, "mode", "0620"),
        ("fsconfig", real.FSCONFIG_SET_STRING, "gid", "5"),
        ("fsconfig", real.FSCONFIG_CMD_CREATE, None, None),
        # Mount flags are the mount's attributes, not options of the instance.
        ("fsmount", real.FSMOUNT_CLOEXEC, real.MOUNT_ATTR_NOSUID | real.MOUNT_ATTR_NOEXEC),
    ]


@pytest.mark.parametrize("kind", ["file", "symlink", "fifo"])
def test_a_ptmx_that_is_not_the_ptmx_device_is_never_opened(tmp_path: Path, kind: str) -> None:
    # A container controls its /dev/pts: what is called ptmx there may be anything (rule 2).
    if kind == "file":
        (tmp_path / "ptmx").write_text("")
    elif kind == "symlink":
        (tmp_path / "ptmx").symlink_to("/dev/ptmx")        # the host's: never followed
    else:
        os.mkfifo(tmp_path / "ptmx")                      # opening it for reading would block
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            open_pty(devpts=fd)
        assert caught.value.errno == errno.ENODEV
    finally:
        os.close(fd)
