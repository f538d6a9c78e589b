"""The pure parts of spawning: flags, lookups, exit statuses, start times, capability masks."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from protocols.runtime_spec import parse_spec
from protocols.runtime_spec import Capabilities
from runtime import _syscalls as sc
from runtime import caps
from runtime.errors import SpawnError
from runtime.spawn import ExitStatus, check_spec, clone_flags, exit_status_of, find_executable, read_start_time


def spec(namespaces, **extra) -> object:
    return parse_spec({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"args": ["true"]},
                       "linux": {"namespaces": namespaces}, **extra})


def test_clone_flags_skip_joined_and_cgroup_namespaces() -> None:
    s = spec([{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/proc/1/ns/net"},
              {"type": "cgroup"}, {"type": "uts"}, {"type": "ipc"}])
    assert clone_flags(s) == sc.CLONE_NEWPID | sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC


@pytest.mark.parametrize(("namespaces", "extra", "message"), [
    ([{"type": "pid"}], {}, "a new mount namespace is required"),
    ([{"type": "mount"}, {"type": "user"}], {}, "user namespaces are not supported"),
    ([{"type": "mount"}, {"type": "network", "path": "/nonexistent/ns"}], {}, "namespace path /nonexistent/ns"),
    ([{"type": "mount"}], {"hostname": "h"}, "without a private UTS namespace"),
])
def test_check_spec_refuses_with_the_cause(tmp_path: Path, namespaces, extra, message: str) -> None:
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(SpawnError, match=message):
        check_spec(spec(namespaces, **extra), str(tmp_path / "rootfs"))


def test_check_spec_missing_rootfs(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match=f"rootfs {tmp_path}/nope does not exist"):
        check_spec(spec([{"type": "mount"}]), str(tmp_path / "nope"))


def test_find_executable_codes(tmp_path: Path) -> None:
    exe = tmp_path / "bin/tool"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    plain = tmp_path / "bin/plain"
    plain.write_text("")
    plain.chmod(0o644)
    path = f"/nonexistent:{tmp_path}/bin"
    assert find_executable("tool", path) == str(exe)
    assert find_executable(str(exe), None) == str(exe)
    with pytest.raises(SpawnError, match="executable file not found in \\$PATH") as info:
        find_executable("missing", path)
    assert info.value.exit_code == 127
    for denied in ("plain", str(tmp_path / "bin")):
        with pytest.raises(SpawnError, match="permission denied") as info:
            find_executable(denied, path)
        assert info.value.exit_code == 126
    with pytest.raises(SpawnError, match="no such file") as info:
        find_executable("/no/such/binary", path)
    assert info.value.exit_code == 127


def test_exit_status_conventions() -> None:
    assert ExitStatus(code=3).exit_code == 3 and str(ExitStatus(code=3)) == "exit status 3"
    killed = ExitStatus(signal=signal.SIGKILL)
    assert killed.exit_code == 137 and str(killed) == "killed by signal SIGKILL"

    class Result:
        si_code, si_status = os.CLD_DUMPED, signal.SIGSEGV

    assert exit_status_of(Result()) == ExitStatus(signal=signal.SIGSEGV, core_dumped=True)


def test_read_start_time_survives_hostile_comm(tmp_path: Path) -> None:
    # comm may contain spaces and ')' : field 22 is counted after the last ')'.
    (tmp_path / "42").mkdir()
    fields = ["S"] + [str(i) for i in range(4, 22)] + ["987654"] + ["0"] * 30
    (tmp_path / "42/stat").write_text("42 (evil) (name ) " + " ".join(fields))
    assert read_start_time(42, proc=tmp_path) == 987654
    assert read_start_time(43, proc=tmp_path) is None
    assert read_start_time(os.getpid()) is not None


def test_capability_masks() -> None:
    assert caps.mask_of(["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"], last=40) == 0x20000420
    assert caps.mask_of(["CAP_CHECKPOINT_RESTORE"], last=39) == 0           # newer than this kernel: left out
    with pytest.raises(ValueError, match="unknown capability 'CAP_FOO'"):
        caps.mask_of(["CAP_FOO"], last=40)
    assert caps.names_of(0x20000420) == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
    assert len(caps.DOCKER_DEFAULT_CAPABILITIES) == 14


class CapRecorder:
    def __init__(self, bounding: set[int]) -> None:
        self.bounding = set(bounding)
        self.calls: list[tuple] = []

    def capbset_read(self, cap):
        return cap in self.bounding

    def capbset_drop(self, cap):
        self.bounding.discard(cap)
        self.calls.append(("drop", cap))

    def capset(self, eff, prm, inh):
        self.calls.append(("capset", eff, prm, inh))

    def cap_ambient_clear_all(self):
        self.calls.append(("ambient_clear",))

    def cap_ambient_raise(self, cap):
        if cap == caps.CAPABILITY_NUMBERS["CAP_KILL"]:
            raise OSError(1, "not permitted and inheritable")
        self.calls.append(("ambient", cap))


def test_bounding_set_drop_and_capability_sets() -> None:
    rec = CapRecorder(set(range(41)) - {24})     # like this VM: no CAP_SYS_RESOURCE
    c = Capabilities(bounding=("CAP_KILL", "CAP_CHOWN"), effective=("CAP_KILL",), permitted=("CAP_KILL",),
                     ambient=("CAP_KILL", "CAP_CHOWN"))
    caps.drop_bounding_set(c, last=40, sc=rec)
    assert rec.bounding == {0, 5}
    assert ("drop", 24) not in rec.calls           # never dropped what was not there
    rec.calls.clear()
    caps.set_capabilities(c, last=40, sc=rec)
    # An ambient cap the kernel refuses (EPERM) is skipped, as runc does.
    assert rec.calls == [("capset", 1 << 5, 1 << 5, 0), ("ambient_clear",), ("ambient", 0)]


def test_home_comes_from_passwd_or_is_root(tmp_path: Path) -> None:
    from runtime.spawn import home_of

    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:1000:100::/srv/web:/bin/sh\nbad line\nnohome:x:7:7:::\n")
    assert home_of(1000, str(passwd)) == "/srv/web"
    assert home_of(0, str(passwd)) == "/root"
    assert home_of(7, str(passwd)) == "/"
    assert home_of(42, str(passwd)) == "/"
    assert home_of(0, str(tmp_path / "missing")) == "/"
