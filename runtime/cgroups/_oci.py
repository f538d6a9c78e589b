"""OCI runtime-spec ``linux.resources`` → ``Resources``: pure, validated.

The spec (config-linux.md, "Control groups") is written in v1 terms: shares,
blkio weight, and ``memory.swap`` as memory+swap. This is where they become
corral units, and where impossible values are refused before any cgroup file
is written.

SPEC: the spec is silent on 0; like runc and Docker, we read 0 as "not set"
for memory limits, reservation, swap, shares, quota, period and blkio weight.
``pids.limit`` <= 0 means unlimited (runc: "0 or -1 means max").

Keys we do not (yet) turn into limits are ignored: hugepageLimits, network,
rdma, unified, blockIO device throttles, cpu realtime, devices (those belong
to the device cgroup/eBPF code).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import _convert
from ._base import Resources

# Kernel bounds for CFS bandwidth (kernel/sched/core.c): period 1ms..1s, quota >= 1ms.
CFS_PERIOD_MIN_USEC, CFS_PERIOD_MAX_USEC = 1000, 1_000_000
CFS_QUOTA_MIN_USEC = 1000

_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _section(resources: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = resources.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"linux.resources.{key} must be an object, got {type(value).__name__}")
    return value


def _int(section: Mapping[str, Any], key: str, where: str) -> int | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"linux.resources.{where}.{key} must be an integer, got {value!r}")
    return value


def _limit(section: Mapping[str, Any], key: str, where: str) -> int | None:
    """A byte count where -1 means unlimited and 0 means unset: both give ``None``."""
    value = _int(section, key, where)
    if value is None or value in (0, -1):
        return None
    if value < 0:
        raise ValueError(f"linux.resources.{where}.{key} must be positive or -1 (unlimited), got {value}")
    return value


def _list(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CPU_LIST.match(value.replace(" ", "")):
        raise ValueError(f"linux.resources.{where}.{key} must be a list like '0-3,5', got {value!r}")
    for part in value.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise ValueError(f"linux.resources.{where}.{key} has a decreasing range {part!r}")
    return value.replace(" ", "")


def resources_from_oci(linux_resources: Mapping[str, Any]) -> Resources:
    """Convert a config.json ``linux.resources`` object into ``Resources``.

    Args:
        linux_resources: The decoded JSON object (``{}`` or missing sections mean
            "no limit").

    Returns:
        Corral units: ``swap_max_bytes`` is swap alone (OCI ``memory.swap`` is
        memory+swap), ``cpu_weight`` converted from ``cpu.shares``,
        ``io_weight`` from ``blockIO.weight``.

    Raises:
        ValueError: A value is of the wrong type or impossible: negative limits
            other than -1, swap below the memory limit or without one, a quota
            below 1 ms or a period outside 1 ms..1 s, shares outside 2..262144,
            blkio weight outside 10..1000, malformed cpu/mem lists.
    """
    if not isinstance(linux_resources, Mapping):
        raise ValueError(f"linux.resources must be an object, got {type(linux_resources).__name__}")
    memory = _section(linux_resources, "memory")
    cpu = _section(linux_resources, "cpu")
    pids = _section(linux_resources, "pids")
    block_io = _section(linux_resources, "blockIO")

    memory_max = _limit(memory, "limit", "memory")
    reservation = _limit(memory, "reservation", "memory")
    swap_total = _limit(memory, "swap", "memory")
    swap_max = None
    if swap_total is not None:
        if memory_max is None:
            raise ValueError("linux.resources.memory.swap needs memory.limit: OCI swap counts memory and swap together")
        if swap_total < memory_max:
            raise ValueError(
                f"linux.resources.memory.swap ({swap_total}) must be at least memory.limit ({memory_max}): "
                f"it counts memory and swap together"
            )
        swap_max = swap_total - memory_max

    shares = _int(cpu, "shares", "cpu")
    cpu_weight = None
    if shares:
        if not _convert.CPU_SHARES_MIN <= shares <= _convert.CPU_SHARES_MAX:
            raise ValueError(
                f"linux.resources.cpu.shares must be within {_convert.CPU_SHARES_MIN}..{_convert.CPU_SHARES_MAX}, "
                f"got {shares}"
            )
        cpu_weight = _convert.cpu_shares_to_weight(shares)

    quota = _int(cpu, "quota", "cpu")
    if quota in (0, -1):
        quota = None
    if quota is not None and quota < CFS_QUOTA_MIN_USEC:
        raise ValueError(f"linux.resources.cpu.quota must be -1 or at least {CFS_QUOTA_MIN_USEC} usec, got {quota}")
    period = _int(cpu, "period", "cpu")
    if period == 0:
        period = None
    if period is not None and not CFS_PERIOD_MIN_USEC <= period <= CFS_PERIOD_MAX_USEC:
        raise ValueError(
            f"linux.resources.cpu.period must be within {CFS_PERIOD_MIN_USEC}..{CFS_PERIOD_MAX_USEC} usec, "
            f"got {period}"
        )

    pids_limit = _int(pids, "limit", "pids")
    pids_max = pids_limit if pids_limit is not None and pids_limit > 0 else None

    blkio_weight = _int(block_io, "weight", "blockIO")
    io_weight = None
    if blkio_weight:
        if not _convert.BLKIO_WEIGHT_MIN <= blkio_weight <= _convert.BLKIO_WEIGHT_MAX:
            raise ValueError(
                f"linux.resources.blockIO.weight must be within "
                f"{_convert.BLKIO_WEIGHT_MIN}..{_convert.BLKIO_WEIGHT_MAX}, got {blkio_weight}"
            )
        io_weight = _convert.blkio_weight_to_io_weight(blkio_weight)

    return Resources(
        memory_max_bytes=memory_max,
        memory_low_bytes=reservation,
        swap_max_bytes=swap_max,
        cpu_weight=cpu_weight,
        cpu_quota_usec=quota,
        cpu_period_usec=period,
        cpuset_cpus=_list(cpu, "cpus", "cpu"),
        cpuset_mems=_list(cpu, "mems", "cpu"),
        pids_max=pids_max,
        io_weight=io_weight,
    )
