"""Pure parsers for cgroupfs files, /proc/self/mountinfo and /proc/<pid>/cgroup.

Text in, values out; nothing here opens a file, so unit tests feed captured
text (youki keeps the same split in ``libcgroups/src/stats.rs``).

Rules:

1. ``"max"`` (v2) means unlimited and parses to ``None``.
2. Malformed input raises ``ValueError`` naming the offending line; callers
   that read a file turn it into a ``CgroupError`` naming the file.
3. Unknown keys are kept, never rejected: kernels add counters over time.
"""

from __future__ import annotations

from dataclasses import dataclass


def parse_max(text: str) -> int | None:
    """Parse a single-value file where ``max`` means unlimited (``pids.max``, ``memory.max``).

    Args:
        text: The file's content, trailing newline allowed.

    Returns:
        The integer, or ``None`` for ``max``.

    Raises:
        ValueError: The content is neither ``max`` nor an integer.
    """
    value = text.strip()
    if value == "max":
        return None
    return int(value)


def parse_int(text: str) -> int:
    """Parse a single-integer file (``memory.usage_in_bytes``, ``pids.current``)."""
    return int(text.strip())


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse a flat-keyed file: one ``key value`` per line.

    ``memory.stat``, ``cpu.stat``, ``memory.events``, v1 ``cpuacct.stat`` and
    ``memory.oom_control`` all have this shape.

    Raises:
        ValueError: A non-empty line is not ``key integer``.
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"expected 'key value', got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


def parse_nested_keyed(text: str) -> dict[str, dict[str, int | None]]:
    """Parse a nested-keyed file: ``key sub=value sub=value ...`` per line (v2 ``io.stat``).

    Values of ``max`` parse to ``None`` (``io.max`` uses them).

    Raises:
        ValueError: A field is not ``sub=value``.
    """
    out: dict[str, dict[str, int | None]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        fields: dict[str, int | None] = {}
        for item in parts[1:]:
            sub, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"expected 'key=value' in {line!r}, got {item!r}")
            fields[sub] = parse_max(value)
        out[parts[0]] = fields
    return out


def parse_blkio_rwstat(text: str) -> dict[str, dict[str, int]]:
    """Parse a v1 blkio "rwstat" file (``blkio.throttle.io_service_bytes``, ``..._serviced``).

    Lines are ``MAJ:MIN Op N`` with Op in Read/Write/Sync/Async/Discard/Total,
    ending with a lone ``Total N`` summed over devices, which is dropped.

    Returns:
        ``{"8:0": {"read": N, "write": N, ...}}`` with lower-case op names.

    Raises:
        ValueError: A line has another shape.
    """
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or (len(parts) == 2 and parts[0] == "Total"):
            continue
        if len(parts) != 3 or ":" not in parts[0]:
            raise ValueError(f"expected 'MAJ:MIN Op N', got {line!r}")
        out.setdefault(parts[0], {})[parts[1].lower()] = int(parts[2])
    return out


def parse_int_list(text: str) -> tuple[int, ...]:
    """Parse whitespace-separated integers (v1 ``cpuacct.usage_percpu``)."""
    return tuple(int(v) for v in text.split())


@dataclass(frozen=True)
class CgroupMount:
    """One cgroup filesystem mount, as /proc/self/mountinfo shows it.

    Attributes:
        mount_point: Where it is mounted: ``/sys/fs/cgroup/memory``.
        root: Which hierarchy directory is mounted there (mountinfo field 4):
            ``/`` normally, a sub-path under a bind mount or a cgroup namespace.
        version: 1 or 2.
        controllers: v1 only: the controllers bound to this hierarchy, from the
            super options (``("cpu", "cpuacct")``); a named hierarchy shows as
            ``("name=systemd",)``. Empty for v2.
    """

    mount_point: str
    root: str
    version: int
    controllers: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The hierarchy's name as /sys/fs/cgroup spells it: ``cpu,cpuacct``, ``systemd``."""
        if self.version == 2:
            return ""
        return ",".join(c.removeprefix("name=") for c in self.controllers)


# Super options of a v1 cgroup mount that are not controller names.
_V1_NON_CONTROLLER_OPTIONS = frozenset(
    {"rw", "ro", "none", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods"}
)


def _is_v1_controller_option(option: str) -> bool:
    # "name=systemd" names a hierarchy; other "k=v" options (release_agent=...) do not.
    if option.startswith("name="):
        return True
    return "=" not in option and option not in _V1_NON_CONTROLLER_OPTIONS


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo_cgroups(text: str) -> list[CgroupMount]:
    """Find the cgroup mounts in /proc/self/mountinfo text (proc(5)).

    Each line is ``id parent maj:min root mount_point options [optional...] -
    fstype source super_options``. v1 controllers are read from the super
    options, so ``cpu,cpuacct`` mounted together and ``cpu`` and ``cpuacct``
    mounted apart are both understood. When the same hierarchy is mounted twice
    (a bind mount), the first mount wins.

    Raises:
        ValueError: A line lacks the ``-`` separator or fields.
    """
    mounts: list[CgroupMount] = []
    seen: set[tuple[int, tuple[str, ...]]] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            raise ValueError(f"mountinfo line without ' - ' separator: {line!r}") from None
        if len(fields) < sep + 3 or len(fields) < 6:
            raise ValueError(f"short mountinfo line: {line!r}")
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root = _unescape_mountinfo(fields[3])
        mount_point = _unescape_mountinfo(fields[4])
        if fstype == "cgroup2":
            mount = CgroupMount(mount_point=mount_point, root=root, version=2)
        else:
            options = fields[sep + 3].split(",")
            controllers = tuple(o for o in options if _is_v1_controller_option(o))
            mount = CgroupMount(mount_point=mount_point, root=root, version=1, controllers=controllers)
        identity = (mount.version, mount.controllers)
        if identity in seen:
            continue
        seen.add(identity)
        mounts.append(mount)
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Parse /proc/<pid>/cgroup (cgroups(7)): ``hierarchy-id:controllers:path`` per line.

    Returns:
        A map from each controller (``"memory"``, ``"name=systemd"``) to the
        process's path in that hierarchy, and ``""`` to its v2 path. A line
        like ``2:cpu,cpuacct:/x`` yields both ``cpu`` and ``cpuacct``.

    Raises:
        ValueError: A line does not have three ``:``-separated fields.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"expected 'id:controllers:path', got {line!r}")
        _, controllers, path = parts
        if not controllers:
            out[""] = path
        else:
            for controller in controllers.split(","):
                out[controller] = path
    return out
