"""Choosing the hierarchy version once, and finding a cgroup's directories.

``detect_mode`` is pure (mountinfo text in); ``open_cgroup`` reads /proc only
when it is not handed the text, and touches no cgroupfs file: creating is
``Cgroup.create``'s job. Long-lived callers (the daemon, the spawner) read
mountinfo once and hand the same text to every call: cgroup hierarchies are
mounted at boot, and the text grows with every container's root mount, so
reading and parsing it per container would cost more as more of them run.
The parse of a text is cached.

Path rules (runc's ``cgroupsPath``):

- ``/corral/web`` is absolute: that path from the root of each hierarchy.
- ``corral/web`` is relative to the calling process's own cgroup *in each
  hierarchy*, so it may land in different places per hierarchy (on a host where
  our memory cgroup is ``/process_api/x`` and the others ``/``).
- A hierarchy path becomes a directory through the mount's root field: a mount
  of ``/docker/abc`` at /sys/fs/cgroup/memory shows ``/docker/abc/web`` at
  /sys/fs/cgroup/memory/web.

Rejected: guessing from directory names under /sys/fs/cgroup (``cpu,cpuacct``
vs ``cpu`` and ``cpuacct`` apart) instead of mountinfo super options; and
probing statfs magic per path, which needs the mount to be readable and says
nothing about which controller lives where.
"""

from __future__ import annotations

import functools
import posixpath
from pathlib import Path, PurePosixPath

from ..errors import CgroupError
from ._base import Cgroup, CgroupMode
from ._parse import CgroupMount, parse_mountinfo_cgroups, parse_proc_cgroup
from ._v1 import V1Cgroup, V1Hierarchy
from ._v2 import V2Cgroup

UNIFIED_MOUNT_POINT = "/sys/fs/cgroup"


def detect_mode(mountinfo: str) -> CgroupMode:
    """Tell legacy, hybrid and unified hosts apart from /proc/self/mountinfo text.

    - cgroup2 mounted at /sys/fs/cgroup: UNIFIED (systemd's test too), even
      if some v1 hierarchy is mounted elsewhere.
    - v1 controller hierarchies and a cgroup2 mount beside them: HYBRID.
    - v1 controller hierarchies only: LEGACY.
    - a cgroup2 mount and no v1 controller hierarchy (named ones such as
      ``name=systemd`` carry no controller): UNIFIED.

    Raises:
        CgroupError: No cgroup filesystem is mounted, or mountinfo is malformed.
    """
    mounts = _mounts(mountinfo)
    v2 = [m for m in mounts if m.version == 2]
    v1_controllers = [m for m in mounts if m.version == 1 and any(not c.startswith("name=") for c in m.controllers)]
    if any(m.mount_point == UNIFIED_MOUNT_POINT for m in v2):
        return CgroupMode.UNIFIED
    if v1_controllers:
        return CgroupMode.HYBRID if v2 else CgroupMode.LEGACY
    if v2:
        return CgroupMode.UNIFIED
    raise CgroupError("no cgroup filesystem is mounted (no cgroup or cgroup2 line in mountinfo)")


def open_cgroup(
    path: str,
    *,
    mountinfo: str | None = None,
    self_cgroup: str | None = None,
    fs_root: Path = Path("/"),
) -> Cgroup:
    """Return the cgroup at ``path``, v1 or v2 as this host runs them (not created yet).

    Args:
        path: ``/corral/web`` (from each hierarchy's root) or ``corral/web``
            (below the caller's own cgroup in each hierarchy). ``.`` and ``..``
            components are refused.
        mountinfo: /proc/self/mountinfo text; read from /proc when ``None``.
        self_cgroup: /proc/self/cgroup text; read from /proc when ``None``
            (only needed for a relative ``path``).
        fs_root: Prefix for the mount points, so tests can use a fixture tree.

    Returns:
        A ``V2Cgroup`` on UNIFIED hosts, a ``V1Cgroup`` on LEGACY and HYBRID ones.

    Raises:
        CgroupError: The path is invalid, or a hierarchy does not contain it
            (our own cgroup lies outside the mounted part).
    """
    rel = _check_path(path)
    if mountinfo is None:
        mountinfo = _read_proc("/proc/self/mountinfo")
    mode = detect_mode(mountinfo)
    mounts = _mounts(mountinfo)
    own: dict[str, str] | None = None
    if not path.startswith("/"):
        try:
            own = parse_proc_cgroup(self_cgroup if self_cgroup is not None else _read_proc("/proc/self/cgroup"))
        except ValueError as exc:
            raise CgroupError(f"failed to parse /proc/self/cgroup: {exc}") from exc

    if mode is CgroupMode.UNIFIED:
        v2 = [m for m in mounts if m.version == 2]
        mount = next((m for m in v2 if m.mount_point == UNIFIED_MOUNT_POINT), v2[0])
        hpath = _hierarchy_path(rel, own, "")
        return V2Cgroup(hpath, _directory(mount, hpath, fs_root), _on(fs_root, mount.mount_point))

    hierarchies: list[V1Hierarchy] = []
    names: dict[str, str] = {}
    for mount in mounts:
        if mount.version == 1:
            key = mount.controllers[0] if mount.controllers else ""
            if not key:
                continue   # a controller-less v1 mount ("none") cannot be joined by name
        else:
            key = ""   # hybrid: the v2 hierarchy beside the v1 ones
        hpath = _hierarchy_path(rel, own, key)
        names[key] = hpath
        hierarchies.append(V1Hierarchy(
            name=PurePosixPath(mount.mount_point).name,
            controllers=mount.controllers,
            mount_point=_on(fs_root, mount.mount_point),
            path=_directory(mount, hpath, fs_root),
        ))
    # name: the path in the memory hierarchy when paths differ per hierarchy
    # (relative path, caller in different cgroups); memory is what a reader of
    # the name most often looks up.
    name = names.get("memory") or next(iter(names.values()), "/" + rel)
    return V1Cgroup(name, hierarchies)


@functools.lru_cache(maxsize=4)
def _mounts(mountinfo: str) -> tuple[CgroupMount, ...]:
    try:
        return tuple(parse_mountinfo_cgroups(mountinfo))
    except ValueError as exc:
        raise CgroupError(f"failed to parse mountinfo: {exc}") from exc


@functools.cache
def read_mountinfo() -> str:
    """This process's /proc/self/mountinfo, read once: for long-lived callers (see above)."""
    return _read_proc("/proc/self/mountinfo")


def _read_proc(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise CgroupError(f"failed to read {path}: {exc.strerror}") from exc


def _check_path(path: str) -> str:
    """Return ``path`` without its leading ``/``; refuse what could escape or name the root."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise CgroupError(f"invalid cgroup path {path!r}: it names the root (or the caller's own) cgroup")
    if any(p in (".", "..") for p in parts):
        raise CgroupError(f"invalid cgroup path {path!r}: '.' and '..' components are not allowed")
    return "/".join(parts)


def _hierarchy_path(rel: str, own: dict[str, str] | None, key: str) -> str:
    if own is None:
        return "/" + rel
    try:
        base = own[key]
    except KeyError:
        label = key or "the unified (v2) hierarchy"
        raise CgroupError(f"/proc/self/cgroup has no line for {label}; cannot resolve a relative cgroup path") from None
    if ".." in base.split("/"):
        # A cgroup namespace shows ancestors outside it as "/..": we cannot go there.
        raise CgroupError(f"our own cgroup {base} lies outside this cgroup namespace; use an absolute path")
    return posixpath.join(base, rel)


def _directory(mount: CgroupMount, hpath: str, fs_root: Path) -> Path:
    # The mount shows the hierarchy from mount.root down; hpath must lie below it.
    try:
        below = PurePosixPath(hpath).relative_to(mount.root)
    except ValueError:
        raise CgroupError(
            f"cgroup {hpath} is outside the part {mount.root} of the hierarchy mounted at {mount.mount_point}"
        ) from None
    return _on(fs_root, mount.mount_point) / below


def _on(fs_root: Path, mount_point: str) -> Path:
    return fs_root / mount_point.lstrip("/")
