"""Mount options of a runtime spec -> mount(2) flags, propagation and data (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from . import _syscalls as sc

# option -> (clear, set); "rw" clears MS_RDONLY, "ro" sets it (mount(8) names).
_FLAGS = {
    "ro": (0, sc.MS_RDONLY), "rw": (sc.MS_RDONLY, 0),
    "nosuid": (0, sc.MS_NOSUID), "suid": (sc.MS_NOSUID, 0),
    "nodev": (0, sc.MS_NODEV), "dev": (sc.MS_NODEV, 0),
    "noexec": (0, sc.MS_NOEXEC), "exec": (sc.MS_NOEXEC, 0),
    "sync": (0, sc.MS_SYNCHRONOUS), "async": (sc.MS_SYNCHRONOUS, 0),
    "dirsync": (0, sc.MS_DIRSYNC),
    "remount": (0, sc.MS_REMOUNT),
    "mand": (0, sc.MS_MANDLOCK), "nomand": (sc.MS_MANDLOCK, 0),
    "noatime": (0, sc.MS_NOATIME), "atime": (sc.MS_NOATIME, 0),
    "nodiratime": (0, sc.MS_NODIRATIME), "diratime": (sc.MS_NODIRATIME, 0),
    "relatime": (0, sc.MS_RELATIME), "norelatime": (sc.MS_RELATIME, 0),
    "strictatime": (0, sc.MS_STRICTATIME), "nostrictatime": (sc.MS_STRICTATIME, 0),
    "lazytime": (0, sc.MS_LAZYTIME), "nolazytime": (sc.MS_LAZYTIME, 0),
    "nosymfollow": (0, sc.MS_NOSYMFOLLOW), "symfollow": (sc.MS_NOSYMFOLLOW, 0),
    "bind": (0, sc.MS_BIND), "rbind": (0, sc.MS_BIND | sc.MS_REC),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}


@dataclass(frozen=True)
class MountOptions:
    flags: int = 0                    # MS_* for mount(2)
    propagation: tuple[int, ...] = ()  # applied one by one after the mount
    data: str | None = None            # fs-specific options: "mode=755,size=65536k"

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse_mount_options(options: tuple[str, ...] | list[str]) -> MountOptions:
    """Split OCI mount options into flags, propagation changes and fs data.

    Unknown words are fs-specific and go to ``data`` in order, as runc does.
    """
    flags = 0
    propagation = []
    data = []
    for option in options:
        if option in _FLAGS:
            clear, set_ = _FLAGS[option]
            flags = (flags & ~clear) | set_
        elif option in PROPAGATION:
            propagation.append(PROPAGATION[option])
        else:
            data.append(option)
    return MountOptions(flags, tuple(propagation), ",".join(data) or None)
