from __future__ import annotations

from pathlib import Path

import pytest

from runtime.cgroups import CgroupMode, V1Cgroup, V2Cgroup, detect_mode, open_cgroup
from runtime.errors import CgroupError

from .conftest import mountinfo, self_cgroup


@pytest.mark.parametrize(
    ("fixture", "mode"),
    [
        ("hybrid-host", CgroupMode.HYBRID),        # this host: v1 apart, empty cgroup2 at /sys/fs/cgroup/unified
        ("hybrid-systemd", CgroupMode.HYBRID),
        ("legacy-combined", CgroupMode.LEGACY),
        ("container-v1", CgroupMode.LEGACY),
        ("unified-systemd", CgroupMode.UNIFIED),
        ("unified-uml", CgroupMode.UNIFIED),
    ],
)
def test_detect_mode(fixture: str, mode: CgroupMode) -> None:
    assert detect_mode(mountinfo(fixture)) is mode


def test_detect_mode_named_v1_only_beside_cgroup2_is_unified() -> None:
    text = (
        "31 22 0:27 / /mnt/unified rw - cgroup2 cgroup2 rw\n"
        "32 22 0:28 / /mnt/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
    )
    assert detect_mode(text) is CgroupMode.UNIFIED


def test_detect_mode_without_cgroups() -> None:
    with pytest.raises(CgroupError, match="no cgroup filesystem is mounted"):
        detect_mode(mountinfo("no-cgroups"))


def test_open_relative_on_this_host_follows_our_cgroup_per_hierarchy(tmp_path: Path) -> None:
    cg = open_cgroup("corral/web", mountinfo=mountinfo("hybrid-host"), self_cgroup=self_cgroup("hybrid-host"),
                     fs_root=tmp_path)
    assert isinstance(cg, V1Cgroup)
    sources = dict(cg.mount_sources())
    own_memory = self_cgroup("hybrid-host").split("4:memory:")[1].split()[0]
    assert sources["memory"] == tmp_path / f"sys/fs/cgroup/memory{own_memory}/corral/web"
    assert sources["cpu"] == tmp_path / "sys/fs/cgroup/cpu/corral/web"
    assert sources["cpuacct"] == tmp_path / "sys/fs/cgroup/cpuacct/corral/web"
    assert sources["systemd"] == tmp_path / "sys/fs/cgroup/systemd/corral/web"
    # The empty v2 hierarchy is joined but not mounted in the container (runc).
    assert "unified" not in sources
    assert set(sources) == {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd"}
    assert cg.name == f"{own_memory}/corral/web"


def test_open_absolute_ignores_our_cgroup(tmp_path: Path) -> None:
    cg = open_cgroup("/corral/web", mountinfo=mountinfo("hybrid-host"), self_cgroup="garbage", fs_root=tmp_path)
    assert cg.name == "/corral/web"
    assert dict(cg.mount_sources())["memory"] == tmp_path / "sys/fs/cgroup/memory/corral/web"


def test_open_legacy_combined_mount(tmp_path: Path) -> None:
    cg = open_cgroup("corral/web", mountinfo=mountinfo("legacy-combined"),
                     self_cgroup=self_cgroup("legacy-combined"), fs_root=tmp_path)
    sources = dict(cg.mount_sources())
    assert sources["cpu,cpuacct"] == tmp_path / "sys/fs/cgroup/cpu,cpuacct/user.slice/corral/web"
    assert sources["net_cls,net_prio"] == tmp_path / "sys/fs/cgroup/net_cls,net_prio/corral/web"
    assert cg.name == "/user.slice/user-1000.slice/session-2.scope/corral/web"


def test_open_unified(tmp_path: Path) -> None:
    cg = open_cgroup("corral/web", mountinfo=mountinfo("unified-systemd"),
                     self_cgroup=self_cgroup("unified-systemd"), fs_root=tmp_path)
    assert isinstance(cg, V2Cgroup)
    assert cg.name == "/user.slice/user-1000.slice/session-2.scope/corral/web"
    assert cg.mount_sources() == [("", tmp_path / "sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope/corral/web")]


def test_open_maps_hierarchy_paths_through_the_mount_root(tmp_path: Path) -> None:
    # Inside a container whose hierarchies are mounted from /docker/abc.
    cg = open_cgroup("sub", mountinfo=mountinfo("container-v1"), self_cgroup=self_cgroup("container-v1"),
                     fs_root=tmp_path)
    sources = dict(cg.mount_sources())
    assert sources["memory"] == tmp_path / "sys/fs/cgroup/memory/app/sub"
    assert sources["systemd"] == tmp_path / "sys/fs/cgroup/systemd/sub"
    with pytest.raises(CgroupError, match="outside the part /docker/abc"):
        open_cgroup("/elsewhere", mountinfo=mountinfo("container-v1"), fs_root=tmp_path)


@pytest.mark.parametrize("path", ["", "/", "//", "a/../b", "./a", "/a/.."])
def test_open_refuses_bad_paths(path: str) -> None:
    with pytest.raises(CgroupError, match="invalid cgroup path"):
        open_cgroup(path, mountinfo=mountinfo("hybrid-host"), self_cgroup=self_cgroup("hybrid-host"))


def test_open_relative_outside_our_namespace() -> None:
    with pytest.raises(CgroupError, match="outside this cgroup namespace"):
        open_cgroup("x", mountinfo=mountinfo("unified-systemd"), self_cgroup="0::/../../user.slice\n")


def test_open_relative_without_our_line() -> None:
    with pytest.raises(CgroupError, match="no line for cpuacct"):
        open_cgroup("x", mountinfo=mountinfo("hybrid-host"), self_cgroup="1:cpu:/\n")
