"""cgroup v2 on a real kernel: runs inside user-mode-linux (tests/uml.py), skips elsewhere. Root only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cgroups import CgroupMode, V2Cgroup

from . import _cgroup_cases as cases

NEEDED = {"memory", "pids", "cpu"}


def _has_v2_with_controllers() -> bool:
    if cases.host_mode() is not CgroupMode.UNIFIED:
        return False
    try:
        controllers = set(Path("/sys/fs/cgroup/cgroup.controllers").read_text().split())
    except OSError:
        return False
    return NEEDED <= controllers


pytestmark = [
    pytest.mark.root,
    pytest.mark.cgroup_v2,
    pytest.mark.skipif(not _has_v2_with_controllers(),
                       reason="needs a cgroup v2 hierarchy with controllers (runs inside user-mode-linux)"),
]


@pytest.fixture
def work(cgroup_parent: str) -> Iterator[cases.Work]:
    for w in cases.work_cgroup(cgroup_parent):
        assert isinstance(w.cg, V2Cgroup)
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
    cases.case_stats_are_populated(work, percpu=False)


def test_errors_name_file_and_value(work: cases.Work) -> None:
    cases.case_errors_name_file_and_value(work)


def test_remove_leaves_nothing(cgroup_parent: str) -> None:
    cases.case_remove_leaves_nothing(cgroup_parent)


def test_controllers_are_enabled_down_to_the_cgroup(work: cases.Work) -> None:
    # v2 specific: every ancestor below the root delegates what the leaf needs.
    assert isinstance(work.cg, V2Cgroup)
    enabled = set((work.cg.path.parent / "cgroup.subtree_control").read_text().split())
    assert NEEDED <= enabled
    assert NEEDED <= set((work.cg.path / "cgroup.controllers").read_text().split())
