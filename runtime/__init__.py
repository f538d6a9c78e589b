"""Linux mechanics of corral: synchronous, no trio (see docs/architecture.md).

A runtime call is what runc is to Docker: it starts, limits, signals and reaps
container processes and hands back values and file descriptors (a pidfd, not
an awaitable). ctypes lives only in ``_syscalls``.
"""

from .errors import CgroupError, ContainerStateError, HostError, MountError, SpawnError
from .spawn import Child, ExitStatus, spawn_init

__all__ = [
    "CgroupError",
    "Child",
    "ContainerStateError",
    "ExitStatus",
    "HostError",
    "MountError",
    "SpawnError",
    "spawn_init",
]
