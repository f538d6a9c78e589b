"""Linux capabilities: names <-> numbers, Docker's default set, and applying a spec's sets.

The order of ``apply_*`` calls matters and follows runc's finalizeNamespace:
drop the bounding set while still root (needs CAP_SETPCAP), keep the
permitted set across setuid with PR_SET_KEEPCAPS, change user, then set the
effective/permitted/inheritable sets and raise ambient ones.
"""

from __future__ import annotations

import errno
from pathlib import Path

from protocols.runtime_spec import Capabilities

from . import _syscalls

# <linux/capability.h>, in kernel order: the index is the capability number.
CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAPABILITY_NUMBERS = {name: i for i, name in enumerate(CAPABILITY_NAMES)}

# moby oci/caps/defaults.go: what `docker run` grants without --privileged/--cap-add.
DOCKER_DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)


def last_cap(proc: Path = Path("/proc")) -> int:
    """The highest capability number this kernel knows (``cap_last_cap``)."""
    try:
        return int((proc / "sys/kernel/cap_last_cap").read_text())
    except OSError:
        return len(CAPABILITY_NAMES) - 1


def mask_of(names: tuple[str, ...] | list[str], *, last: int) -> int:
    """The bit mask of ``names``; names this kernel does not know are left out (runc).

    Raises:
        ValueError: a name no kernel knows (``CAP_FOO``).
    """
    mask = 0
    for name in names:
        try:
            number = CAPABILITY_NUMBERS[name]
        except KeyError:
            raise ValueError(f"unknown capability {name!r}") from None
        if number <= last:
            mask |= 1 << number
    return mask


def names_of(mask: int) -> list[str]:
    return [name for i, name in enumerate(CAPABILITY_NAMES) if mask >> i & 1]


def held_bounding_set(*, sc=_syscalls) -> list[str]:
    """Every capability in this process's bounding set: what --privileged can grant."""
    return [name for i, name in enumerate(CAPABILITY_NAMES) if sc.capbset_read(i)]


def drop_bounding_set(caps: Capabilities, *, last: int, sc=_syscalls) -> None:
    """Drop every capability not in ``caps.bounding`` from the bounding set (needs CAP_SETPCAP)."""
    keep = mask_of(caps.bounding, last=last)
    for cap in range(last + 1):
        if not keep >> cap & 1 and sc.capbset_read(cap):
            sc.capbset_drop(cap)


def set_capabilities(caps: Capabilities, *, last: int, sc=_syscalls) -> None:
    """Set the effective, permitted and inheritable sets, then the ambient set.

    Raises:
        OSError: capset refused: a capability outside what this process holds
            (EPERM names the masks).
    """
    sc.capset(mask_of(caps.effective, last=last), mask_of(caps.permitted, last=last),
              mask_of(caps.inheritable, last=last))
    sc.cap_ambient_clear_all()
    for name in caps.ambient:
        number = CAPABILITY_NUMBERS[name]
        if number > last:
            continue
        try:
            sc.cap_ambient_raise(number)
        except OSError as exc:
            # SPEC: an ambient capability must be permitted and inheritable
            # (capabilities(7)); runc warns and goes on, and so do we: the
            # process still gets what the other sets allow.
            if exc.errno != errno.EPERM:
                raise
