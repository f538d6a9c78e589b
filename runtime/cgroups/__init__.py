"""Cgroups behind one interface: v1 and v2, chosen once by ``detect_mode``.

Callers open a cgroup with ``open_cgroup("corral/web")`` and use the ``Cgroup``
protocol; nothing outside this package branches on the hierarchy version.
"""

from __future__ import annotations

from ._base import Cgroup, CgroupMode, CgroupStats, IoDeviceStats, Resources
from ._convert import (
    blkio_weight_to_io_weight,
    cpu_shares_to_weight,
    cpu_weight_to_shares,
    io_weight_to_blkio_weight,
)
from ._fake import FakeCgroup, NullCgroup
from ._oci import resources_from_oci
from ._open import detect_mode, open_cgroup, read_mountinfo
from ._v1 import V1Cgroup, V1Hierarchy
from ._v2 import V2Cgroup

__all__ = [
    "Cgroup",
    "CgroupMode",
    "CgroupStats",
    "FakeCgroup",
    "IoDeviceStats",
    "NullCgroup",
    "Resources",
    "V1Cgroup",
    "V1Hierarchy",
    "V2Cgroup",
    "blkio_weight_to_io_weight",
    "cpu_shares_to_weight",
    "cpu_weight_to_shares",
    "detect_mode",
    "io_weight_to_blkio_weight",
    "open_cgroup",
    "read_mountinfo",
    "resources_from_oci",
]
