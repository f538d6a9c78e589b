"""Errors raised by runtime/: what failed, where, with which value.

Messages are lower-case, without a trailing period, and name the operation,
the path and the value: ``failed to write '64' to /sys/fs/cgroup/pids/corral/web/pids.max``.
"""

from __future__ import annotations


class HostError(Exception):
    """A Linux operation on this host failed."""


class CgroupError(HostError):
    """A cgroup could not be created, configured, read or removed."""


class MountError(HostError):
    """A mount, bind, pivot or mask step of the rootfs failed."""


class SpawnError(HostError):
    """The container's init could not be started.

    ``exit_code`` is what a runc-like command exits with: 127 when the binary
    is not found, 126 when it cannot be executed, 1 otherwise (runc's codes).
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ContainerStateError(HostError):
    """An operation does not fit the container's current state (runc's wording)."""
