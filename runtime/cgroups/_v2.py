"""cgroup v2 (unified hierarchy): one directory, controllers enabled from above.

Rules this module lives by:

1. A controller is usable in a cgroup only if every ancestor enables it in
   ``cgroup.subtree_control``. ``create`` enables what we need on the way down
   and writes only where something is missing, so a delegated subtree whose
   owner already enabled them is never written above us.
2. The no-internal-processes rule: a non-root cgroup that enables a domain
   controller for its children cannot hold processes itself
   (Documentation/admin-guide/cgroup-v2.rst, "No Internal Process
   Constraint"). The kernel answers EBUSY; we say why.
3. ``max`` means unlimited in every file that has a limit.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from .. import _syscalls
from ..errors import CgroupError
from . import _parse
from ._base import CgroupStats, IoDeviceStats, Resources
from ._files import (
    make_dirs,
    read_file,
    read_parsed,
    read_pids,
    remove_dir,
    wait_until,
    write_file,
)

# What a container needs; each one is enabled only if the parent offers it.
WANTED_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "pids")


class V2Cgroup:
    """A cgroup in the unified hierarchy.

    Args:
        name: The cgroup's path inside the hierarchy, for display: ``/corral/web``.
        path: Its directory: ``/sys/fs/cgroup/corral/web``.
        mount_point: Where the cgroup2 hierarchy is mounted; ``create`` enables
            controllers from there down.
        freeze_timeout_s: How long ``set_frozen`` waits for ``cgroup.events``.
        remove_timeout_s: How long ``remove`` retries a busy rmdir.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        mount_point: Path,
        *,
        freeze_timeout_s: float = 2.0,
        remove_timeout_s: float = 1.0,
    ) -> None:
        if path == mount_point or mount_point not in path.parents:
            raise CgroupError(f"cgroup directory {path} is not below the cgroup2 mount {mount_point}")
        self.name = name
        self.path = path
        self.mount_point = mount_point
        self._freeze_timeout_s = freeze_timeout_s
        self._remove_timeout_s = remove_timeout_s

    def __repr__(self) -> str:
        return f"V2Cgroup({self.name!r})"

    # -- lifecycle -------------------------------------------------------------

    def create(self) -> None:
        """Enable the needed controllers in each ancestor, then mkdir the cgroup.

        Idempotent. Controllers the parent does not offer are skipped (their
        limits then fail in ``apply``, naming the missing file).

        Raises:
            CgroupError: A mkdir failed, or the kernel refused to enable a
                controller (for instance because the ancestor holds processes).
        """
        self._enable_controllers(self.mount_point)
        make_dirs(self.path.parent, self.mount_point, self._enable_controllers)
        make_dirs(self.path, self.path.parent)

    def _enable_controllers(self, level: Path) -> None:
        offered = read_file(level / "cgroup.controllers").split()
        enabled = read_file(level / "cgroup.subtree_control").split()
        subtree_control = level / "cgroup.subtree_control"
        for controller in WANTED_CONTROLLERS:
            if controller not in offered or controller in enabled:
                continue
            # One controller per write, so an error names the one refused.
            try:
                write_file(subtree_control, f"+{controller}")
            except CgroupError as exc:
                cause = exc.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.EBUSY:
                    raise CgroupError(
                        f"{exc}: {level} holds processes of its own, and cgroup v2 lets a cgroup "
                        f"that enables controllers for its children hold none (no internal processes rule)"
                    ) from cause
                raise

    def add_process(self, pid: int) -> None:
        """Move ``pid`` (and its threads) into the cgroup.

        Raises:
            CgroupError: The kernel refused (process gone, or the target breaks
                the no-internal-processes rule).
        """
        write_file(self.path / "cgroup.procs", str(pid))

    def clone_target(self) -> Path | None:
        """This directory: a child cloned into it (CLONE_INTO_CGROUP) is born here, no migration."""
        return self.path

    def join_self(self, *, cloned_into: bool) -> None:
        """Move the calling process in, unless the clone already did (``cloned_into``)."""
        if not cloned_into:
            write_file(self.path / "cgroup.procs", "0")

    def remove(self) -> None:
        """rmdir the cgroup, retrying while it is busy; a missing directory is fine.

        Raises:
            CgroupError: Still busy (live processes or child cgroups) after the timeout.
        """
        remove_dir(self.path, timeout_s=self._remove_timeout_s)

    def mount_sources(self) -> list[tuple[str, Path]]:
        """One source: the container's /sys/fs/cgroup is this directory."""
        return [("", self.path)]

    # -- limits ----------------------------------------------------------------

    def apply(self, resources: Resources) -> None:
        """Write every limit that is set (not ``None``) in ``resources``.

        ``swap_max_bytes`` is skipped when ``memory.swap.max`` does not exist
        (kernel without swap accounting), as on v1.

        Raises:
            CgroupError: A controller is not enabled (file missing) or the
                kernel refused a value.
        """
        r = resources
        p = self.path
        if r.memory_max_bytes is not None:
            write_file(p / "memory.max", str(r.memory_max_bytes))
        if r.memory_low_bytes is not None:
            write_file(p / "memory.low", str(r.memory_low_bytes))
        if r.swap_max_bytes is not None and (p / "memory.swap.max").exists():
            write_file(p / "memory.swap.max", str(r.swap_max_bytes))
        if r.cpu_weight is not None:
            write_file(p / "cpu.weight", str(r.cpu_weight))
        if r.cpu_quota_usec is not None or r.cpu_period_usec is not None:
            # "$MAX $PERIOD"; a lone "$MAX" keeps the current period.
            quota = "max" if r.cpu_quota_usec is None else str(r.cpu_quota_usec)
            value = quota if r.cpu_period_usec is None else f"{quota} {r.cpu_period_usec}"
            write_file(p / "cpu.max", value)
        if r.cpuset_cpus is not None:
            write_file(p / "cpuset.cpus", r.cpuset_cpus)
        if r.cpuset_mems is not None:
            write_file(p / "cpuset.mems", r.cpuset_mems)
        if r.pids_max is not None:
            write_file(p / "pids.max", str(r.pids_max))
        if r.io_weight is not None:
            self._apply_io_weight(r.io_weight)

    def _apply_io_weight(self, io_weight: int) -> None:
        # io.weight drives the iocost controller, io.bfq.weight the BFQ
        # scheduler; write each one present, as crun does.
        files = [self.path / f for f in ("io.bfq.weight", "io.weight") if (self.path / f).exists()]
        if not files:
            raise CgroupError(
                f"cannot set io weight for cgroup {self.name}: neither io.weight nor io.bfq.weight "
                f"exists in {self.path} (io controller not enabled?)"
            )
        for f in files:
            write_file(f, f"default {io_weight}")

    # -- freezer ---------------------------------------------------------------

    def _events(self) -> dict[str, int]:
        events = read_parsed(self.path / "cgroup.events", _parse.parse_flat_keyed)
        if events is None:
            raise CgroupError(f"failed to read {self.path / 'cgroup.events'}: No such file or directory")
        return events

    def is_frozen(self) -> bool:
        """Whether the cgroup is frozen now (``cgroup.events`` ``frozen 1``)."""
        return self._events().get("frozen") == 1

    def set_frozen(self, frozen: bool) -> None:
        """Freeze or thaw through ``cgroup.freeze`` (5.2+) and wait until it settles.

        The write only starts the transition; ``cgroup.events`` says when every
        task has stopped. After ``freeze_timeout_s`` a freeze is undone and this
        raises, so no half-frozen cgroup is left.

        Raises:
            CgroupError: No ``cgroup.freeze`` (kernel < 5.2), a write failed, or
                the state did not settle in time.
        """
        want = 1 if frozen else 0
        write_file(self.path / "cgroup.freeze", str(want))
        if wait_until(lambda: self._events().get("frozen") == want, timeout_s=self._freeze_timeout_s):
            return
        if frozen:
            write_file(self.path / "cgroup.freeze", "0")
        raise CgroupError(
            f"cgroup {self.name} did not become {'frozen' if frozen else 'thawed'} "
            f"within {self._freeze_timeout_s}s ({self.path / 'cgroup.events'})"
        )

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (and its descendants).

        ``cgroup.kill`` (5.14+) does it atomically in the kernel, forks included.
        Older kernels: freeze, signal each listed PID, thaw, so a fork cannot
        slip between listing and signal. Returns once signalled.

        Raises:
            CgroupError: The kill or the freeze failed.
        """
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            write_file(kill_file, "1")
            return
        self.set_frozen(True)
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            self.set_frozen(False)

    def pids(self) -> list[int]:
        """PIDs (thread-group ids) in this cgroup itself, not in its children."""
        return read_pids(self.path / "cgroup.procs")

    # -- stats -----------------------------------------------------------------

    def stats(self) -> CgroupStats:
        """Read every counter of the enabled controllers; absent ones are ``None``.

        Raises:
            CgroupError: A file exists but cannot be read or parsed (cgroup removed).
        """
        p = self.path
        fields: dict[str, object] = {}
        # cpu.stat exists even without the cpu controller (usage only); the
        # throttling keys appear with it.
        cpu = read_parsed(p / "cpu.stat", _parse.parse_flat_keyed)
        if cpu is not None:
            fields.update(
                cpu_usage_usec=cpu.get("usage_usec"),
                cpu_user_usec=cpu.get("user_usec"),
                cpu_system_usec=cpu.get("system_usec"),
                cpu_nr_periods=cpu.get("nr_periods"),
                cpu_nr_throttled=cpu.get("nr_throttled"),
                cpu_throttled_usec=cpu.get("throttled_usec"),
            )
        usage = read_parsed(p / "memory.current", _parse.parse_int)
        if usage is not None:
            fields.update(self._memory_stats(usage))
        fields["pids_current"] = read_parsed(p / "pids.current", _parse.parse_int)
        if fields["pids_current"] is not None:
            fields["pids_max"] = read_parsed(p / "pids.max", _parse.parse_max)
        io = read_parsed(p / "io.stat", _parse.parse_nested_keyed)
        if io is not None:
            fields["io_devices"] = {
                dev: IoDeviceStats(
                    read_bytes=c.get("rbytes") or 0, write_bytes=c.get("wbytes") or 0,
                    read_ops=c.get("rios") or 0, write_ops=c.get("wios") or 0,
                )
                for dev, c in io.items()
            }
        return CgroupStats(**fields)  # type: ignore[arg-type]

    def _memory_stats(self, usage: int) -> dict[str, object]:
        p = self.path
        stat = read_parsed(p / "memory.stat", _parse.parse_flat_keyed) or {}
        events = read_parsed(p / "memory.events", _parse.parse_flat_keyed) or {}
        inactive_file = stat.get("inactive_file")
        out: dict[str, object] = {
            "memory_usage_bytes": usage,
            "memory_max_usage_bytes": read_parsed(p / "memory.peak", _parse.parse_int),   # 5.19+
            "memory_limit_bytes": read_parsed(p / "memory.max", _parse.parse_max),
            "memory_working_set_bytes": max(0, usage - (inactive_file or 0)),
            "memory_rss_bytes": stat.get("anon"),
            "memory_cache_bytes": stat.get("file"),
            "memory_inactive_file_bytes": inactive_file,
            "memory_failcnt": events.get("max"),
            "swap_usage_bytes": read_parsed(p / "memory.swap.current", _parse.parse_int),
            "oom_events": events.get("oom"),
            "oom_kill_count": events.get("oom_kill"),
            "memory_stat": stat,
        }
        return out

    # -- OOM notification ------------------------------------------------------

    def open_oom_watch(self) -> int:
        """Return an inotify fd that becomes readable when ``memory.events`` changes.

        cgroup v2 signals every change of ``memory.events`` as a file-modified
        event (cgroup-v2.rst). Changes include the ``high`` and ``max`` counters,
        so a reader drains the fd and compares ``stats().oom_kill_count`` (or
        ``oom_events``) with the value it saw before. The fd is non-blocking and
        close-on-exec; the caller owns (and closes) it.

        Raises:
            CgroupError: No ``memory.events`` (memory controller not enabled) or
                inotify failed.
        """
        events = self.path / "memory.events"
        try:
            fd = _syscalls.inotify_init1(_syscalls.IN_CLOEXEC | _syscalls.IN_NONBLOCK)
        except OSError as exc:
            raise CgroupError(f"failed to create an inotify instance for {events}: {os.strerror(exc.errno)}") from exc
        try:
            _syscalls.inotify_add_watch(fd, str(events), _syscalls.IN_MODIFY)
        except OSError as exc:
            os.close(fd)
            raise CgroupError(f"failed to watch {events}: {os.strerror(exc.errno)}") from exc
        return fd
