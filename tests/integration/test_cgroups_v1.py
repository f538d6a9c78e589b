"""cgroup v1 on this host's real kernel (legacy or hybrid hierarchies). Root only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.cgroups import CgroupMode, V1Cgroup

from . import _cgroup_cases as cases

pytestmark = [
    pytest.mark.root,
    pytest.mark.cgroup_v1,
    pytest.mark.skipif(cases.host_mode() not in (CgroupMode.LEGACY, CgroupMode.HYBRID),
                       reason="needs cgroup v1 hierarchies (a legacy or hybrid host)"),
]


@pytest.fixture
def work(cgroup_parent: str) -> Iterator[cases.Work]:
    for w in cases.work_cgroup(cgroup_parent):
        assert isinstance(w.cg, V1Cgroup)
        yield w


def test_memory_limit_oom_kills(work: cases.Work) -> None:
    cases.case_memory_limit_oom_kills(work)


def test_pids_max_stops_forks(work: cases.Work) -> None:
    cases.case_pids_max_stops_forks(work)


def test_cpu_quota_limits_usage(work: cases.Work) -> None:
    cases.case_cpu_quota_limits_usage(work)


def test_freeze_stops_progress_and_thaw_resumes(work: cases.Work) -> None:
    cases.case_freeze_stops_progress_and_thaw_resumes(work)


def test_kill_empties_the_cgroup(work: cases.Work) -> None:
    cases.case_kill_empties_the_cgroup(work)


def test_stats_are_populated(work: cases.Work) -> None:
    cases.case_stats_are_populated(work, percpu=True)


def test_errors_name_file_and_value(work: cases.Work) -> None:
    cases.case_errors_name_file_and_value(work)


def test_remove_leaves_nothing(cgroup_parent: str) -> None:
    cases.case_remove_leaves_nothing(cgroup_parent)


def test_every_mounted_hierarchy_is_joined(work: cases.Work) -> None:
    # v1 specific: the cgroup exists in each hierarchy, named ones included, and a
    # process added is listed in each.
    p = work.command("sleep", "30")
    names = [name for name, _ in work.cg.mount_sources()]
    assert "memory" in names and "systemd" in names
    for name, path in work.cg.mount_sources():
        assert str(p.pid) in (path / "cgroup.procs").read_text().split(), name
