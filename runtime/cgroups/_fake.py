"""Cgroups that touch no kernel: ``NullCgroup`` (rootless/dev runs) and ``FakeCgroup`` (tests).

``NullCgroup`` is crun's disabled cgroup manager: every operation succeeds and
does nothing, stats are all ``None``. ``FakeCgroup`` records each call, as
youki's ``TestManager`` does, so supervisor tests assert call order and can
make one operation fail.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CgroupError
from ._base import CgroupStats, Resources


class NullCgroup:
    """A cgroup that limits and counts nothing."""

    def __init__(self, name: str = "/") -> None:
        self.name = name

    def create(self) -> None: ...
    def add_process(self, pid: int) -> None: ...
    def join_self(self, *, cloned_into: bool) -> None: ...
    def apply(self, resources: Resources) -> None: ...
    def set_frozen(self, frozen: bool) -> None: ...
    def kill(self) -> None: ...
    def remove(self) -> None: ...

    def clone_target(self) -> Path | None:
        return None

    def is_frozen(self) -> bool:
        return False

    def pids(self) -> list[int]:
        return []

    def stats(self) -> CgroupStats:
        return CgroupStats()

    def open_oom_watch(self) -> int:
        # An eventfd nobody writes: it never becomes readable. The caller closes it.
        return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def mount_sources(self) -> list[tuple[str, Path]]:
        return []


class FakeCgroup:
    """Records calls in ``calls`` as ``(method, args...)`` tuples.

    Args:
        name: Its ``name``.
        stats: What ``stats()`` returns.
        fail: Method names that raise ``CgroupError`` instead (after being recorded).
    """

    def __init__(self, name: str = "/fake", *, stats: CgroupStats | None = None, fail: set[str] | None = None) -> None:
        self.name = name
        self.calls: list[tuple[object, ...]] = []
        self.frozen = False
        self.processes: list[int] = []
        self.resources: Resources | None = None
        self.next_stats = stats or CgroupStats()
        self.fail = set(fail or ())

    def _record(self, method: str, *args: object) -> None:
        self.calls.append((method, *args))
        if method in self.fail:
            raise CgroupError(f"fake failure of {method} on cgroup {self.name}")

    def create(self) -> None:
        self._record("create")

    def add_process(self, pid: int) -> None:
        self._record("add_process", pid)
        self.processes.append(pid)

    def clone_target(self) -> Path | None:
        return None

    def join_self(self, *, cloned_into: bool) -> None:
        self._record("join_self", cloned_into)      # in the child: only a failure is seen, through it
        self.processes.append(os.getpid())

    def apply(self, resources: Resources) -> None:
        self._record("apply", resources)
        self.resources = resources

    def set_frozen(self, frozen: bool) -> None:
        self._record("set_frozen", frozen)
        self.frozen = frozen

    def is_frozen(self) -> bool:
        self._record("is_frozen")
        return self.frozen

    def kill(self) -> None:
        self._record("kill")
        self.processes.clear()

    def pids(self) -> list[int]:
        self._record("pids")
        return list(self.processes)

    def stats(self) -> CgroupStats:
        self._record("stats")
        return self.next_stats

    def open_oom_watch(self) -> int:
        # The test makes it readable with os.eventfd_write(fd, 1).
        self._record("open_oom_watch")
        return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def mount_sources(self) -> list[tuple[str, Path]]:
        self._record("mount_sources")
        return []

    def remove(self) -> None:
        self._record("remove")
