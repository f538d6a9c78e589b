"""The one cgroup interface; v1 and v2 implement it (see ../../docs/architecture.md).

Rules this package lives by:

1. The hierarchy version is chosen once, by ``detect_mode``, when a cgroup is
   opened. Nothing outside ``runtime/cgroups/`` branches on it.
2. ``Resources`` is in corral units: bytes, microseconds, v2 weights
   (1..10000). v1 converts at the edge with the pure functions in ``_convert``.
3. ``None`` means "not set": leave the kernel's default (which is unlimited).
4. ``stats()`` fields are ``None`` when the controller (or file) is absent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class CgroupMode(enum.Enum):
    LEGACY = "legacy"      # v1 only
    HYBRID = "hybrid"      # v1 controllers, an empty v2 mount beside them; driven as v1
    UNIFIED = "unified"    # v2 only


@dataclass(frozen=True)
class Resources:
    memory_max_bytes: int | None = None
    memory_low_bytes: int | None = None       # reservation: v1 soft_limit_in_bytes, v2 memory.low
    swap_max_bytes: int | None = None         # swap alone (v2 memory.swap.max); v1 writes memory+swap
    cpu_weight: int | None = None             # 1..10000 (v1 cpu.shares converted)
    cpu_quota_usec: int | None = None         # per period; None = unlimited
    cpu_period_usec: int | None = None
    cpuset_cpus: str | None = None            # "0-1,3"
    cpuset_mems: str | None = None
    pids_max: int | None = None
    io_weight: int | None = None              # 1..10000 (v1 blkio.weight 10..1000 converted)


@dataclass(frozen=True)
class IoDeviceStats:
    read_bytes: int = 0
    write_bytes: int = 0
    read_ops: int = 0
    write_ops: int = 0


@dataclass(frozen=True)
class CgroupStats:
    cpu_usage_usec: int | None = None
    cpu_user_usec: int | None = None
    cpu_system_usec: int | None = None
    cpu_percpu_usec: tuple[int, ...] | None = None
    cpu_nr_periods: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_throttled_usec: int | None = None
    memory_usage_bytes: int | None = None
    memory_max_usage_bytes: int | None = None     # v1 max_usage_in_bytes, v2 memory.peak
    memory_limit_bytes: int | None = None         # None: unlimited
    memory_working_set_bytes: int | None = None   # usage - inactive_file, never below 0 (cAdvisor)
    memory_rss_bytes: int | None = None           # v1 total_rss, v2 anon
    memory_cache_bytes: int | None = None         # v1 total_cache, v2 file
    memory_inactive_file_bytes: int | None = None
    memory_failcnt: int | None = None             # v1 failcnt, v2 memory.events max
    swap_usage_bytes: int | None = None
    oom_events: int | None = None                 # v1 under_oom transitions / v2 memory.events oom
    oom_kill_count: int | None = None             # v1 memory.oom_control oom_kill, v2 memory.events oom_kill
    pids_current: int | None = None
    pids_max: int | None = None                   # None: unlimited
    io_devices: dict[str, IoDeviceStats] = field(default_factory=dict)   # "MAJ:MIN" -> counters
    memory_stat: dict[str, int] = field(default_factory=dict)            # raw memory.stat

    @property
    def io_read_bytes(self) -> int:
        return sum(d.read_bytes for d in self.io_devices.values())

    @property
    def io_write_bytes(self) -> int:
        return sum(d.write_bytes for d in self.io_devices.values())


class Cgroup(Protocol):
    """One container's cgroup, whichever the hierarchy version."""

    name: str           # the path inside the hierarchy, absolute: "/corral/web"

    def create(self) -> None: ...
    def add_process(self, pid: int) -> None: ...
    def clone_target(self) -> Path | None: ...
    def join_self(self, *, cloned_into: bool) -> None: ...
    def apply(self, resources: Resources) -> None: ...
    def set_frozen(self, frozen: bool) -> None: ...
    def is_frozen(self) -> bool: ...
    def kill(self) -> None: ...
    def pids(self) -> list[int]: ...
    def stats(self) -> CgroupStats: ...
    def open_oom_watch(self) -> int: ...
    def mount_sources(self) -> list[tuple[str, Path]]: ...
    def remove(self) -> None: ...
