from __future__ import annotations

import inspect
import os
import select

import pytest

from runtime.cgroups import Cgroup, CgroupStats, FakeCgroup, NullCgroup, Resources
from runtime.errors import CgroupError

PROTOCOL_METHODS = {name for name, _ in inspect.getmembers(Cgroup, inspect.isfunction) if not name.startswith("_")}


@pytest.mark.parametrize("cls", [FakeCgroup, NullCgroup])
def test_implements_every_protocol_method(cls: type) -> None:
    assert PROTOCOL_METHODS <= {name for name, _ in inspect.getmembers(cls, inspect.isfunction)}
    assert len(PROTOCOL_METHODS) == 13
    assert hasattr(cls(), "name")


def test_null_cgroup_does_nothing() -> None:
    cg = NullCgroup()
    cg.create()
    cg.apply(Resources(pids_max=1))
    cg.add_process(1)
    assert cg.pids() == [] and cg.stats() == CgroupStats() and not cg.is_frozen()
    fd = cg.open_oom_watch()
    try:
        assert select.select([fd], [], [], 0)[0] == []
    finally:
        os.close(fd)


def test_fake_cgroup_records_and_fails_on_demand() -> None:
    cg = FakeCgroup(fail={"remove"})
    r = Resources(memory_max_bytes=1)
    cg.create()
    cg.apply(r)
    cg.add_process(42)
    cg.set_frozen(True)
    assert cg.is_frozen() and cg.pids() == [42]
    cg.kill()
    with pytest.raises(CgroupError, match="fake failure of remove"):
        cg.remove()
    assert cg.calls == [("create",), ("apply", r), ("add_process", 42), ("set_frozen", True), ("is_frozen",),
                        ("pids",), ("kill",), ("remove",)]
