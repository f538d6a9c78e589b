"""--privileged: every capability the daemon holds (this VM lacks CAP_SYS_RESOURCE, where
runc's privileged start fails), the host's devices, no masked or read-only paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.root

DOCKER_DEFAULT_CAPEFF = 0xA80425FB      # moby's 14 capabilities


def cap(status: str, name: str) -> int:
    return int(next(line for line in status.splitlines() if line.startswith(name + ":")).split()[1], 16)


def test_privileged_gets_what_the_daemon_holds(daemon: Daemon) -> None:
    held = cap(Path(f"/proc/{daemon.process.pid}/status").read_text(), "CapBnd")
    out = daemon.cli("run", "--rm", "--privileged", "busybox", "sh", "-c",
                     "grep Cap /proc/self/status; ls /dev/fuse /dev/loop0; grep ' /sys ' /proc/self/mountinfo;"
                     " grep -c ' /proc/sys ' /proc/self/mountinfo; true")
    assert out.returncode == 0, out.stderr
    assert cap(out.stdout, "CapEff") == held and cap(out.stdout, "CapBnd") == held
    assert "/dev/fuse" in out.stdout and "/dev/loop0" in out.stdout
    sys_line = next(line for line in out.stdout.splitlines() if " /sys " in line)
    assert " rw," in sys_line                                     # sysfs writable
    assert out.stdout.splitlines()[-1] == "0"                     # /proc/sys not re-mounted read-only


def test_default_is_dockers_capabilities_and_masks(daemon: Daemon) -> None:
    out = daemon.cli("run", "--rm", "busybox", "sh", "-c",
                     "grep Cap /proc/self/status; ls /dev/fuse 2>&1; grep -c ' /proc/sys ' /proc/self/mountinfo")
    assert out.returncode == 0, out.stderr
    assert cap(out.stdout, "CapEff") == DOCKER_DEFAULT_CAPEFF
    assert "No such file" in out.stdout
    assert out.stdout.splitlines()[-1] == "1"
