"""V1Cgroup against the captured v1 tree (tests/fixtures/cgroupfs/v1) in tmp_path."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

import pytest

from runtime.cgroups import IoDeviceStats, Resources, V1Cgroup, open_cgroup
from runtime.errors import CgroupError

from .conftest import mountinfo

CG = "sys/fs/cgroup"


def open_v1(root: Path, path: str = "/corral/web", **kwargs) -> V1Cgroup:
    cg = open_cgroup(path, mountinfo=mountinfo("hybrid-host"), fs_root=root)
    assert isinstance(cg, V1Cgroup)
    if kwargs:
        cg = V1Cgroup(cg.name, cg.hierarchies, **kwargs)
    return cg


def read(root: Path, rel: str) -> str:
    return (root / CG / rel).read_text().strip()


def test_stats_from_captured_tree(v1_root: Path) -> None:
    s = open_v1(v1_root).stats()
    assert s.cpu_usage_usec == 302856
    assert s.cpu_percpu_usec == (2211, 300645)
    assert (s.cpu_user_usec, s.cpu_system_usec) == (260000, 30000)   # 26 and 3 ticks at USER_HZ 100
    assert (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_usec) == (6, 5, 243518)
    assert s.memory_usage_bytes == 29962240
    assert s.memory_max_usage_bytes == 38273024
    assert s.memory_limit_bytes == 256 << 20
    assert s.memory_inactive_file_bytes == 8388608
    assert s.memory_working_set_bytes == 29962240 - 8388608
    assert (s.memory_rss_bytes, s.memory_cache_bytes) == (21110784, 8400896)
    assert s.memory_failcnt == 0
    assert s.swap_usage_bytes == 0
    assert (s.oom_events, s.oom_kill_count) == (0, 0)
    assert (s.pids_current, s.pids_max) == (1, 64)
    assert s.io_devices == {
        "254:0": IoDeviceStats(read_bytes=1048576, write_bytes=4194304, read_ops=16, write_ops=64),
        "8:16": IoDeviceStats(read_bytes=4096, write_bytes=0, read_ops=1, write_ops=0),
    }
    assert s.io_read_bytes == 1048576 + 4096
    assert s.memory_stat["total_pgfault"] == 7309


def test_stats_unlimited_and_edge_values(v1_root: Path) -> None:
    mem = v1_root / CG / "memory/corral/web"
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "memory.usage_in_bytes").write_text("1000\n")   # below inactive_file: working set clamps at 0
    (mem / "memory.memsw.usage_in_bytes").write_text("5096\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (v1_root / CG / "pids/corral/web/pids.max").write_text("max\n")
    s = open_v1(v1_root).stats()
    assert s.memory_limit_bytes is None
    assert s.memory_working_set_bytes == 0
    assert s.swap_usage_bytes == 4096
    assert (s.oom_kill_count, s.oom_events) == (3, 3)
    assert s.pids_max is None


def test_stats_of_absent_controllers_are_none(v1_root: Path) -> None:
    cg = open_v1(v1_root)
    only_pids = V1Cgroup(cg.name, [h for h in cg.hierarchies if h.controllers == ("pids",)])
    s = only_pids.stats()
    assert s.pids_current == 1
    assert s.cpu_usage_usec is None and s.memory_usage_bytes is None and s.io_devices == {}


def test_stats_of_a_bad_file_names_it(v1_root: Path) -> None:
    (v1_root / CG / "memory/corral/web/memory.stat").write_text("cache lots\n")
    with pytest.raises(CgroupError, match=r"failed to parse .*/memory/corral/web/memory.stat"):
        open_v1(v1_root).stats()


def test_apply_writes_each_file_in_v1_units(v1_root: Path) -> None:
    open_v1(v1_root).apply(Resources(
        memory_max_bytes=64 << 20, memory_low_bytes=32 << 20, swap_max_bytes=16 << 20,
        cpu_weight=100, cpu_quota_usec=20000, cpu_period_usec=50000,
        cpuset_cpus="1", cpuset_mems="0", pids_max=16, io_weight=100,
    ))
    assert read(v1_root, "memory/corral/web/memory.limit_in_bytes") == str(64 << 20)
    assert read(v1_root, "memory/corral/web/memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(v1_root, "memory/corral/web/memory.memsw.limit_in_bytes") == str(80 << 20)   # memory + swap
    assert read(v1_root, "cpu/corral/web/cpu.shares") == "2598"
    assert read(v1_root, "cpu/corral/web/cpu.cfs_quota_us") == "20000"
    assert read(v1_root, "cpu/corral/web/cpu.cfs_period_us") == "50000"
    assert read(v1_root, "cpuset/corral/web/cpuset.cpus") == "1"
    assert read(v1_root, "pids/corral/web/pids.max") == "16"
    assert read(v1_root, "blkio/corral/web/blkio.bfq.weight") == "20"   # io.weight 100 -> blkio 20


def test_apply_none_writes_nothing(v1_root: Path) -> None:
    before = {p: p.read_text() for p in (v1_root / CG).rglob("*") if p.is_file()}
    open_v1(v1_root).apply(Resources())
    assert before == {p: p.read_text() for p in (v1_root / CG).rglob("*") if p.is_file()}


def test_apply_memory_and_swap_order(v1_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.cgroups._v1 as v1

    writes: list[str] = []
    real = v1.write_file
    monkeypatch.setattr(v1, "write_file", lambda path, value: (writes.append(path.name), real(path, value)))
    mem = v1_root / CG / "memory/corral/web"
    # Raising above the current memsw limit: memsw first.
    (mem / "memory.memsw.limit_in_bytes").write_text(str(32 << 20))
    open_v1(v1_root).apply(Resources(memory_max_bytes=64 << 20, swap_max_bytes=0))
    assert writes == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    # Lowering: memory first.
    writes.clear()
    open_v1(v1_root).apply(Resources(memory_max_bytes=16 << 20, swap_max_bytes=0))
    assert writes == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_apply_swap_needs_memory_limit(v1_root: Path) -> None:
    with pytest.raises(CgroupError, match="without a memory limit"):
        open_v1(v1_root).apply(Resources(swap_max_bytes=1 << 20))


def test_apply_swap_skipped_without_swap_accounting(v1_root: Path) -> None:
    (v1_root / CG / "memory/corral/web/memory.memsw.limit_in_bytes").unlink()
    open_v1(v1_root).apply(Resources(memory_max_bytes=1 << 20, swap_max_bytes=1 << 20))
    assert read(v1_root, "memory/corral/web/memory.limit_in_bytes") == str(1 << 20)


def test_apply_io_weight_without_a_weight_file(v1_root: Path) -> None:
    (v1_root / CG / "blkio/corral/web/blkio.bfq.weight").unlink()
    with pytest.raises(CgroupError, match="neither blkio.weight nor blkio.bfq.weight"):
        open_v1(v1_root).apply(Resources(io_weight=100))


def test_apply_to_a_missing_controller(v1_root: Path) -> None:
    cg = open_v1(v1_root)
    no_pids = V1Cgroup(cg.name, [h for h in cg.hierarchies if "pids" not in h.controllers])
    with pytest.raises(CgroupError, match="the pids controller is not mounted"):
        no_pids.apply(Resources(pids_max=5))


def test_write_error_names_file_and_value(v1_root: Path) -> None:
    (v1_root / CG / "pids/corral/web/pids.max").unlink()
    (v1_root / CG / "pids/corral/web/pids.max").mkdir()
    with pytest.raises(CgroupError, match=r"failed to write '64' to .*/pids/corral/web/pids.max: Is a directory"):
        open_v1(v1_root).apply(Resources(pids_max=64))


def test_create_makes_every_hierarchy_and_fills_cpuset(v1_root: Path) -> None:
    # cgroupfs creates cpuset.cpus/mems empty in a new cgroup; plain mkdir does not, so
    # pre-make the levels with empty files as the kernel would.
    for level in ("corral/new", "corral/new/leaf"):
        d = v1_root / CG / "cpuset" / level
        d.mkdir()
        (d / "cpuset.cpus").write_text("\n")
        (d / "cpuset.mems").write_text("\n")
    cg = open_v1(v1_root, "/corral/new/leaf")
    cg.create()
    cg.create()   # idempotent
    for name, path in cg.mount_sources():
        assert path.is_dir(), name
    assert read(v1_root, "cpuset/corral/new/cpuset.cpus") == "0-1"
    assert read(v1_root, "cpuset/corral/new/leaf/cpuset.cpus") == "0-1"
    assert read(v1_root, "cpuset/corral/new/leaf/cpuset.mems") == "0"


def test_add_process_writes_every_hierarchy(v1_root: Path) -> None:
    cg = open_v1(v1_root)
    cg.add_process(4242)
    for name, path in cg.mount_sources():
        assert (path / "cgroup.procs").read_text() == "4242", name
    assert cg.pids() == [4242]


def test_join_self_writes_itself_into_each_v1_tasks_file(v1_root: Path) -> None:
    # "0" in tasks: the caller alone, without the global lock cgroup.procs takes (an RCU grace period).
    cg = open_v1(v1_root)
    unified = [h for h in cg.hierarchies if not h.controllers]
    assert [h.path for h in unified] == [cg.clone_target()]
    for h in cg.hierarchies:
        (h.path / "tasks").write_text("")
        (h.path / "cgroup.procs").write_text("")
    cg.join_self(cloned_into=True)
    for h in cg.hierarchies:
        assert (h.path / "tasks").read_text() == ("0" if h.controllers else ""), h.name
        assert (h.path / "cgroup.procs").read_text() == "", h.name
    cg.join_self(cloned_into=False)         # no CLONE_INTO_CGROUP: the v2 hierarchy by cgroup.procs
    assert [(h.path / "cgroup.procs").read_text() for h in unified] == ["0"]


def test_a_legacy_host_has_no_v2_hierarchy_to_clone_into() -> None:
    cg = open_cgroup("/corral/web", mountinfo=mountinfo("legacy-combined"), fs_root=Path("/nonexistent"))
    assert isinstance(cg, V1Cgroup) and cg.clone_target() is None
    assert all(h.controllers for h in cg.hierarchies)       # each joined through its tasks file


def test_freeze_and_thaw(v1_root: Path) -> None:
    cg = open_v1(v1_root)
    assert not cg.is_frozen()
    cg.set_frozen(True)
    assert cg.is_frozen()
    cg.set_frozen(False)
    assert read(v1_root, "freezer/corral/web/freezer.state") == "THAWED"


def test_freeze_that_never_settles_is_undone(v1_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.cgroups._v1 as v1

    state = v1_root / CG / "freezer/corral/web/freezer.state"
    real = v1.write_file

    def stuck(path: Path, value: str) -> None:   # the kernel answering FREEZING forever
        real(path, "FREEZING" if value == "FROZEN" else value)

    monkeypatch.setattr(v1, "write_file", stuck)
    cg = open_v1(v1_root, freeze_timeout_s=0.05)
    with pytest.raises(CgroupError, match="did not become FROZEN within 0.05s"):
        cg.set_frozen(True)
    assert state.read_text() == "THAWED"


def test_kill_freezes_signals_and_thaws(v1_root: Path) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        cg = open_v1(v1_root)
        (v1_root / CG / "freezer/corral/web/cgroup.procs").write_text(f"{child.pid}\n")
        cg.kill()
        assert child.wait(timeout=5) == -9
        assert read(v1_root, "freezer/corral/web/freezer.state") == "THAWED"
    finally:
        child.kill()
        child.wait()


def test_open_oom_watch_registers_an_eventfd(v1_root: Path) -> None:
    fd = open_v1(v1_root).open_oom_watch()
    try:
        efd, cfd = read(v1_root, "memory/corral/web/cgroup.event_control").split()
        assert int(efd) == fd
        assert not os.get_inheritable(fd)
        assert select.select([fd], [], [], 0)[0] == []
        os.eventfd_write(fd, 1)   # what the kernel does on OOM
        assert select.select([fd], [], [], 0)[0] == [fd]
        with pytest.raises(OSError):
            os.fstat(int(cfd))   # the control file's fd was closed after registering
    finally:
        os.close(fd)


def test_remove_every_hierarchy_and_missing_is_fine(v1_root: Path) -> None:
    for f in (v1_root / CG).glob("*/corral/web/*"):
        f.unlink()
    cg = open_v1(v1_root)
    cg.remove()
    cg.remove()
    assert not any(path.exists() for _, path in cg.mount_sources())


def test_remove_busy_gives_up_with_the_directories(v1_root: Path) -> None:
    cg = open_v1(v1_root, remove_timeout_s=0.01)
    with pytest.raises(CgroupError, match=r"failed to remove cgroup .*/memory/corral/web: Directory not empty"):
        cg.remove()
