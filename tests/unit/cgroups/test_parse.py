from __future__ import annotations

import pytest

from runtime.cgroups._parse import (
    CgroupMount,
    parse_blkio_rwstat,
    parse_flat_keyed,
    parse_int_list,
    parse_max,
    parse_mountinfo_cgroups,
    parse_nested_keyed,
    parse_proc_cgroup,
)

from .conftest import mountinfo


@pytest.mark.parametrize(("text", "value"), [("max\n", None), ("64\n", 64), ("0", 0), (" 9223372036854771712 ", 9223372036854771712)])
def test_parse_max(text: str, value: int | None) -> None:
    assert parse_max(text) == value


@pytest.mark.parametrize("text", ["", "maximum", "12k"])
def test_parse_max_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_max(text)


def test_parse_flat_keyed() -> None:
    assert parse_flat_keyed("usage_usec 10\nuser_usec 7\n\nsystem_usec 3\n") == {
        "usage_usec": 10, "user_usec": 7, "system_usec": 3,
    }
    assert parse_flat_keyed("") == {}


@pytest.mark.parametrize("text", ["usage_usec\n", "a 1 2\n", "a x\n"])
def test_parse_flat_keyed_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_flat_keyed(text)


def test_parse_nested_keyed() -> None:
    text = "8:0 rbytes=90112 wbytes=0 rios=3 wios=0 dbytes=0 dios=0\n253:1 rbps=max wbps=1048576\n"
    assert parse_nested_keyed(text) == {
        "8:0": {"rbytes": 90112, "wbytes": 0, "rios": 3, "wios": 0, "dbytes": 0, "dios": 0},
        "253:1": {"rbps": None, "wbps": 1048576},
    }
    assert parse_nested_keyed("8:0\n") == {"8:0": {}}


def test_parse_nested_keyed_rejects_field_without_equals() -> None:
    with pytest.raises(ValueError, match="rbytes"):
        parse_nested_keyed("8:0 rbytes 1\n")


def test_parse_blkio_rwstat_drops_the_grand_total() -> None:
    text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\nTotal 12288\n"
    assert parse_blkio_rwstat(text) == {
        "8:0": {"read": 4096, "write": 8192, "sync": 0, "async": 12288, "discard": 0, "total": 12288},
    }
    assert parse_blkio_rwstat("Total 0\n") == {}


def test_parse_blkio_rwstat_rejects() -> None:
    with pytest.raises(ValueError):
        parse_blkio_rwstat("8:0 Read\n")


def test_parse_int_list() -> None:
    assert parse_int_list("2211076 300645726 \n") == (2211076, 300645726)


def test_mountinfo_of_this_hybrid_host_has_cpu_and_cpuacct_apart() -> None:
    mounts = parse_mountinfo_cgroups(mountinfo("hybrid-host"))
    by_point = {m.mount_point: m for m in mounts}
    assert by_point["/sys/fs/cgroup/cpu"].controllers == ("cpu",)
    assert by_point["/sys/fs/cgroup/cpuacct"].controllers == ("cpuacct",)
    assert by_point["/sys/fs/cgroup/systemd"].controllers == ("name=systemd",)
    assert by_point["/sys/fs/cgroup/systemd"].key == "systemd"
    assert by_point["/sys/fs/cgroup/unified"] == CgroupMount("/sys/fs/cgroup/unified", "/", 2)
    assert len(mounts) == 10   # 9 v1 hierarchies and the v2 one; tmpfs is not a cgroup mount


def test_mountinfo_combined_controllers_and_options() -> None:
    mounts = {m.mount_point: m for m in parse_mountinfo_cgroups(mountinfo("legacy-combined"))}
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].controllers == ("cpu", "cpuacct")
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].key == "cpu,cpuacct"
    # xattr and release_agent=... are options, not controllers
    assert mounts["/sys/fs/cgroup/systemd"].controllers == ("name=systemd",)
    assert mounts["/sys/fs/cgroup/cpuset"].controllers == ("cpuset",)   # clone_children dropped


def test_mountinfo_root_field_and_escapes() -> None:
    text = (
        "612 611 0:30 /docker/abc /sys/fs/cgroup/memory ro,relatime - cgroup memory rw,memory\n"
        "613 611 0:31 / /mnt/my\\040cgroups rw shared:3 master:1 - cgroup2 cgroup2 rw\n"
    )
    memory, v2 = parse_mountinfo_cgroups(text)
    assert memory.root == "/docker/abc"
    assert v2.mount_point == "/mnt/my cgroups"   # optional fields before "-" are skipped


def test_mountinfo_same_hierarchy_twice_keeps_first() -> None:
    line = "35 31 0:32 / {} rw,relatime - cgroup cgroup rw,memory\n"
    mounts = parse_mountinfo_cgroups(line.format("/sys/fs/cgroup/memory") + line.format("/mnt/memory"))
    assert [m.mount_point for m in mounts] == ["/sys/fs/cgroup/memory"]


def test_mountinfo_rejects_line_without_separator() -> None:
    with pytest.raises(ValueError, match="separator"):
        parse_mountinfo_cgroups("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime cgroup cgroup rw,memory\n")


def test_parse_proc_cgroup() -> None:
    text = "9:name=systemd:/\n4:memory:/process_api/34bc\n2:cpu,cpuacct:/user.slice\n0::/init.scope\n"
    assert parse_proc_cgroup(text) == {
        "name=systemd": "/", "memory": "/process_api/34bc", "cpu": "/user.slice", "cpuacct": "/user.slice",
        "": "/init.scope",
    }


def test_parse_proc_cgroup_rejects() -> None:
    with pytest.raises(ValueError):
        parse_proc_cgroup("garbage\n")
