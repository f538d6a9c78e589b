"""Shared test set-up.

Root tests (marker ``root``) need euid 0 and a real kernel; they run only with
``--run-root``, which the README's ``make test`` passes. Opting in without root
is an error, never a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-root", action="store_true", help="run tests needing root and a real kernel")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--run-root") and os.geteuid() != 0:
        raise pytest.UsageError("--run-root needs euid 0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--run-root"):
        skip = pytest.mark.skip(reason="needs --run-root (root and a real kernel)")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)
        return
    # cgroup_v2 tests skip themselves when there is no v2 hierarchy with
    # controllers (they run inside user-mode-linux); cgroup_v1 ones skip here.
    from runtime.cgroups import CgroupMode, detect_mode

    if detect_mode(Path("/proc/self/mountinfo").read_text()) is CgroupMode.UNIFIED:
        skip_v1 = pytest.mark.skip(reason="needs cgroup v1 controllers (legacy or hybrid host); this one is unified")
        for item in items:
            if "cgroup_v1" in item.keywords:
                item.add_marker(skip_v1)


@pytest.fixture
def anyio_backend():
    # Async tests run on trio; sleeps finish at once when every task is blocked.
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
