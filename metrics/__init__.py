"""Prometheus collectors for corral: cAdvisor's per-container names, and the supervisor's own.

Sync and trio-free: the supervisor tells the collectors what runs
(``CgroupCollector.track``), updates ``CorralMetrics`` as things happen, and
calls ``render`` from a worker thread. Counters are read through
``runtime.cgroups``; nothing here parses a cgroup file.
"""

from ._cgroup import CgroupCollector, TrackedContainer, container_label_name
from ._corral import RESTART_REASONS, CorralMetrics, SupervisorCollector, restart_reason
from ._exposition import render

__all__ = [
    "RESTART_REASONS",
    "CgroupCollector",
    "CorralMetrics",
    "SupervisorCollector",
    "TrackedContainer",
    "container_label_name",
    "render",
    "restart_reason",
]
