"""Pure unit conversions between cgroup v1 knobs and corral's (v2) units.

``Resources`` holds v2 weights; v1 converts at the edge with these functions.
The mappings are linear between the two ranges' end points, the ones crun
documents for OCI specs written against v1 and run on v2
(crun ``docs/crun.1.md`` "CGROUP v2", ``convert_shares_to_weight`` in
``src/libcrun/cgroup-utils.c``). A linear map is not exact both ways: integer
division cannot be exact both ways. The forward maps round down (as crun and
runc do) and the inverse maps round up, which makes a round trip that starts
on the finer scale exact: weight -> shares -> weight, and
blkio weight -> io weight -> blkio weight. End points always map onto each other.

Rejected: a log-scale shares→weight map (as newer crun releases adopted),
which keeps the v1 default 1024 near v2's default 100. It is nicer for
defaults, but the linear map is what runc uses, is trivially invertible, and
keeps weights that other tools computed from specs identical to ours.
"""

from __future__ import annotations

CPU_SHARES_MIN, CPU_SHARES_MAX = 2, 262144          # kernel/sched: MIN_SHARES, MAX_SHARES
CPU_WEIGHT_MIN, CPU_WEIGHT_MAX = 1, 10000           # CGROUP_WEIGHT_MIN/MAX
BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX = 10, 1000       # CFQ_WEIGHT_LEGACY_MIN/MAX
IO_WEIGHT_MIN, IO_WEIGHT_MAX = 1, 10000             # CGROUP_WEIGHT_MIN/MAX


def _check(value: int, low: int, high: int, what: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside {low}..{high}")


def cpu_shares_to_weight(shares: int) -> int:
    """Map v1 ``cpu.shares`` (2..262144) onto v2 ``cpu.weight`` (1..10000).

    weight = 1 + (shares - 2) * 9999 / 262142   (integer division)

    2 maps to 1 and 262144 to 10000; the v1 default 1024 maps to 39.

    Raises:
        ValueError: ``shares`` is outside 2..262144.
    """
    _check(shares, CPU_SHARES_MIN, CPU_SHARES_MAX, "cpu shares")
    return 1 + (shares - 2) * 9999 // 262142


def cpu_weight_to_shares(weight: int) -> int:
    """Map v2 ``cpu.weight`` (1..10000) onto v1 ``cpu.shares`` (2..262144); the inverse line.

    shares = 2 + ceil((weight - 1) * 262142 / 9999)

    Raises:
        ValueError: ``weight`` is outside 1..10000.
    """
    _check(weight, CPU_WEIGHT_MIN, CPU_WEIGHT_MAX, "cpu weight")
    return 2 + -(-(weight - 1) * 262142 // 9999)   # ceil without floats


def blkio_weight_to_io_weight(blkio_weight: int) -> int:
    """Map v1 ``blkio.weight`` (10..1000) onto v2 ``io.weight`` (1..10000).

    io_weight = 1 + (blkio_weight - 10) * 9999 / 990   (integer division)

    Raises:
        ValueError: ``blkio_weight`` is outside 10..1000.
    """
    _check(blkio_weight, BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX, "blkio weight")
    return 1 + (blkio_weight - 10) * 9999 // 990


def io_weight_to_blkio_weight(io_weight: int) -> int:
    """Map v2 ``io.weight`` (1..10000) onto v1 ``blkio.weight`` (10..1000); the inverse line.

    blkio_weight = 10 + ceil((io_weight - 1) * 990 / 9999)

    Raises:
        ValueError: ``io_weight`` is outside 1..10000.
    """
    _check(io_weight, IO_WEIGHT_MIN, IO_WEIGHT_MAX, "io weight")
    return 10 + -(-(io_weight - 1) * 990 // 9999)   # ceil without floats


def ns_to_usec(ns: int) -> int:
    """Nanoseconds (v1 ``cpuacct.usage``, ``throttled_time``) to microseconds, rounded down."""
    return ns // 1000


def ticks_to_usec(ticks: int, clk_tck: int) -> int:
    """USER_HZ ticks (v1 ``cpuacct.stat``) to microseconds.

    usec = ticks * 1_000_000 / clk_tck, where clk_tck is ``sysconf(_SC_CLK_TCK)``
    (100 on every mainstream architecture).
    """
    return ticks * 1_000_000 // clk_tck
