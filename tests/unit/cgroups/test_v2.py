"""V2Cgroup against the v2 tree captured in user-mode-linux (tests/fixtures/cgroupfs/v2)."""

from __future__ import annotations

import errno
import os
import select
import subprocess
from pathlib import Path

import pytest

import runtime.cgroups._v2 as v2
from runtime.cgroups import IoDeviceStats, Resources, V2Cgroup, open_cgroup
from runtime.errors import CgroupError

from .conftest import mountinfo

CG = "sys/fs/cgroup"


def open_v2(root: Path, path: str = "/corral/web", **kwargs) -> V2Cgroup:
    cg = open_cgroup(path, mountinfo=mountinfo("unified-uml"), fs_root=root)
    assert isinstance(cg, V2Cgroup)
    if kwargs:
        cg = V2Cgroup(cg.name, cg.path, cg.mount_point, **kwargs)
    return cg


def web(root: Path) -> Path:
    return root / CG / "corral/web"


def test_stats_from_captured_tree(v2_root: Path) -> None:
    s = open_v2(v2_root).stats()
    assert (s.cpu_usage_usec, s.cpu_user_usec, s.cpu_system_usec) == (550000, 550000, 0)
    assert s.cpu_percpu_usec is None   # v2 has no per-cpu usage
    assert (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_usec) == (11, 10, 500000)
    assert s.memory_usage_bytes == 34525184
    assert s.memory_max_usage_bytes == 42934272
    assert s.memory_limit_bytes == 256 << 20
    assert s.memory_inactive_file_bytes == 4194304
    assert s.memory_working_set_bytes == 34525184 - 4194304
    assert (s.memory_rss_bytes, s.memory_cache_bytes) == (25804800, 8388608)
    assert (s.memory_failcnt, s.oom_events, s.oom_kill_count) == (0, 0, 0)
    assert s.swap_usage_bytes == 0
    assert (s.pids_current, s.pids_max) == (1, 64)
    assert s.io_devices["254:0"] == IoDeviceStats(read_bytes=1048576, write_bytes=4194304, read_ops=16, write_ops=64)
    assert s.io_write_bytes == 4194304
    assert s.memory_stat["pgfault"] == 9364


def test_stats_max_and_events(v2_root: Path) -> None:
    (web(v2_root) / "memory.max").write_text("max\n")
    (web(v2_root) / "pids.max").write_text("max\n")
    (web(v2_root) / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n")
    (web(v2_root) / "memory.peak").unlink()   # kernels before 5.19
    s = open_v2(v2_root).stats()
    assert s.memory_limit_bytes is None and s.pids_max is None
    assert (s.memory_failcnt, s.oom_events, s.oom_kill_count) == (7, 2, 1)
    assert s.memory_max_usage_bytes is None


def test_apply_writes_v2_files(v2_root: Path) -> None:
    (web(v2_root) / "cpuset.cpus").write_text("")
    (web(v2_root) / "cpuset.mems").write_text("")
    open_v2(v2_root).apply(Resources(
        memory_max_bytes=64 << 20, memory_low_bytes=1 << 20, swap_max_bytes=0, cpu_weight=250,
        cpu_quota_usec=20000, cpu_period_usec=100000, cpuset_cpus="0", cpuset_mems="0", pids_max=8, io_weight=300,
    ))
    w = web(v2_root)
    assert (w / "memory.max").read_text() == str(64 << 20)
    assert (w / "memory.low").read_text() == str(1 << 20)
    assert (w / "memory.swap.max").read_text() == "0"
    assert (w / "cpu.weight").read_text() == "250"
    assert (w / "cpu.max").read_text() == "20000 100000"
    assert (w / "cpuset.cpus").read_text() == "0"
    assert (w / "pids.max").read_text() == "8"
    assert (w / "io.weight").read_text() == "default 300"


@pytest.mark.parametrize(
    ("quota", "period", "written"),
    [(None, 50000, "max 50000"), (30000, None, "30000")],
)
def test_apply_cpu_max_forms(v2_root: Path, quota: int | None, period: int | None, written: str) -> None:
    open_v2(v2_root).apply(Resources(cpu_quota_usec=quota, cpu_period_usec=period))
    assert (web(v2_root) / "cpu.max").read_text() == written


def test_apply_io_weight_prefers_neither_writes_both(v2_root: Path) -> None:
    (web(v2_root) / "io.bfq.weight").write_text("default 100\n")
    open_v2(v2_root).apply(Resources(io_weight=50))
    assert (web(v2_root) / "io.bfq.weight").read_text() == "default 50"
    assert (web(v2_root) / "io.weight").read_text() == "default 50"


def test_apply_io_weight_without_files(v2_root: Path) -> None:
    (web(v2_root) / "io.weight").unlink()
    with pytest.raises(CgroupError, match="neither io.weight nor io.bfq.weight"):
        open_v2(v2_root).apply(Resources(io_weight=50))


def test_apply_missing_controller_names_the_file(v2_root: Path) -> None:
    (web(v2_root) / "pids.max").unlink()
    with pytest.raises(CgroupError, match=r"failed to write '8' to .*/corral/web/pids.max: No such file"):
        open_v2(v2_root).apply(Resources(pids_max=8))


def test_create_enables_controllers_top_down_where_missing(v2_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[tuple[str, str]] = []
    real = v2.write_file

    def record(path: Path, value: str) -> None:
        writes.append((str(path.relative_to(v2_root / CG)), value))
        real(path, value)

    monkeypatch.setattr(v2, "write_file", record)
    # /corral/new exists (as the kernel would show it) offering cpu memory pids, enabling none.
    new = v2_root / CG / "corral/new"
    new.mkdir()
    (new / "cgroup.controllers").write_text("cpu memory pids\n")
    (new / "cgroup.subtree_control").write_text("\n")
    cg = open_v2(v2_root, "/corral/new/leaf")
    cg.create()
    assert cg.path.is_dir()
    # root and /corral already enable everything: untouched
    assert writes == [("corral/new/cgroup.subtree_control", "+cpu"),
                      ("corral/new/cgroup.subtree_control", "+memory"),
                      ("corral/new/cgroup.subtree_control", "+pids")]


def test_create_explains_the_no_internal_processes_rule(v2_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(path: Path, value: str) -> None:
        err = OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        raise CgroupError(f"failed to write '{value}' to {path}: {err.strerror}") from err

    monkeypatch.setattr(v2, "write_file", busy)
    (v2_root / CG / "corral/cgroup.subtree_control").write_text("cpu\n")
    with pytest.raises(CgroupError, match=r"failed to write '\+io' to .*corral/cgroup.subtree_control: "
                                          r"Device or resource busy: .* \(no internal processes rule\)"):
        open_v2(v2_root).create()


def test_freeze_waits_for_cgroup_events(v2_root: Path) -> None:
    events = web(v2_root) / "cgroup.events"
    cg = open_v2(v2_root, freeze_timeout_s=0.05)
    assert not cg.is_frozen()
    with pytest.raises(CgroupError, match="did not become frozen within 0.05s"):
        cg.set_frozen(True)   # cgroup.events never says frozen 1 here
    assert (web(v2_root) / "cgroup.freeze").read_text() == "0"   # undone
    events.write_text("populated 1\nfrozen 1\n")
    cg.set_frozen(True)
    assert (web(v2_root) / "cgroup.freeze").read_text() == "1"
    assert cg.is_frozen()


def test_kill_uses_cgroup_kill(v2_root: Path) -> None:
    open_v2(v2_root).kill()
    assert (web(v2_root) / "cgroup.kill").read_text() == "1"


def test_kill_without_cgroup_kill_freezes_and_signals(v2_root: Path) -> None:
    (web(v2_root) / "cgroup.kill").unlink()
    child = subprocess.Popen(["sleep", "30"])
    try:
        (web(v2_root) / "cgroup.procs").write_text(f"{child.pid}\n")
        (web(v2_root) / "cgroup.events").write_text("populated 1\nfrozen 1\n")
        cg = open_v2(v2_root, freeze_timeout_s=0.05)
        with pytest.raises(CgroupError, match="thawed"):   # a plain file never reports the thaw
            cg.kill()
        assert child.wait(timeout=5) == -9
        assert (web(v2_root) / "cgroup.freeze").read_text() == "0"
    finally:
        child.kill()
        child.wait()


def test_oom_watch_is_readable_when_memory_events_changes(v2_root: Path) -> None:
    fd = open_v2(v2_root).open_oom_watch()
    try:
        assert not os.get_inheritable(fd)
        assert select.select([fd], [], [], 0)[0] == []
        with open(web(v2_root) / "memory.events", "a") as f:
            f.write("oom 1\n")
        assert select.select([fd], [], [], 1)[0] == [fd]
    finally:
        os.close(fd)


def test_oom_watch_without_memory_events(v2_root: Path) -> None:
    (web(v2_root) / "memory.events").unlink()
    with pytest.raises(CgroupError, match=r"failed to watch .*memory.events: No such file"):
        open_v2(v2_root).open_oom_watch()


def test_mount_sources_and_pids(v2_root: Path) -> None:
    cg = open_v2(v2_root)
    assert cg.mount_sources() == [("", web(v2_root))]
    cg.add_process(77)
    assert cg.pids() == [77]


def test_a_child_is_cloned_into_the_directory_or_joins_it_itself(v2_root: Path) -> None:
    cg = open_v2(v2_root)
    assert cg.clone_target() == web(v2_root)
    procs = web(v2_root) / "cgroup.procs"
    procs.write_text("")
    cg.join_self(cloned_into=True)          # clone3 put it there: nothing to write
    assert procs.read_text() == ""
    cg.join_self(cloned_into=False)         # a kernel without CLONE_INTO_CGROUP
    assert procs.read_text() == "0"


def test_remove(v2_root: Path) -> None:
    cg = open_v2(v2_root, remove_timeout_s=0.01)
    with pytest.raises(CgroupError, match="failed to remove cgroup"):
        cg.remove()
    for f in web(v2_root).iterdir():
        f.unlink()
    cg.remove()
    cg.remove()
    assert not web(v2_root).exists()


def test_refuses_a_directory_outside_the_mount(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="not below the cgroup2 mount"):
        V2Cgroup("/x", tmp_path / "elsewhere", tmp_path / "sys/fs/cgroup")
