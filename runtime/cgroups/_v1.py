"""cgroup v1 (legacy and hybrid hosts): one directory per mounted hierarchy.

Rules this module lives by:

1. A v1 cgroup is the same relative directory in *every* mounted hierarchy,
   named ones (``name=systemd``) included, and in hybrid mode the empty v2
   hierarchy too: runc joins them all, so tools that read /proc/<pid>/cgroup
   see the container everywhere.
2. A limit goes to the hierarchy whose mount carries its controller, found by
   controller name, never by directory name: ``cpu`` and ``cpuacct`` may be
   one mount (``cpu,cpuacct``) or two.
3. Values arrive in corral units (v2 weights, bytes, usec) and are converted
   here, at the edge (``_convert``).
4. Asking for a limit whose controller is not mounted is an error, not a
   silent no-op; the one exception is swap, which kernels without swap
   accounting (no ``memory.memsw.*``) cannot limit at all (Docker warns and
   goes on the same way).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CgroupError
from . import _convert, _parse
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

# v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes: LONG_MAX rounded
# down to the page size (9223372036854771712 with 4 KiB pages, less with 64 KiB
# pages). Anything above 2**62 bytes (4 EiB) is treated as that sentinel.
_V1_UNLIMITED_FLOOR = 1 << 62


@dataclass(frozen=True)
class V1Hierarchy:
    """This cgroup's place in one mounted v1 hierarchy.

    Attributes:
        name: The hierarchy's directory name under /sys/fs/cgroup as the host
            mounts it: ``"memory"``, ``"cpu,cpuacct"``, ``"systemd"``, ``"unified"``.
        controllers: Controllers bound to it (``("cpu",)``, ``("name=systemd",)``);
            empty for the v2 hierarchy of a hybrid host.
        mount_point: Where the hierarchy is mounted (under the filesystem root used).
        path: This cgroup's directory, below ``mount_point``.
    """

    name: str
    controllers: tuple[str, ...]
    mount_point: Path
    path: Path


class V1Cgroup:
    """A cgroup on a legacy or hybrid host.

    Args:
        name: The cgroup's path inside the hierarchy, for display: ``/corral/web``.
        hierarchies: Its directory in each mounted hierarchy.
        clk_tck: USER_HZ, to convert ``cpuacct.stat`` ticks (``sysconf(_SC_CLK_TCK)``).
        freeze_timeout_s: How long ``set_frozen`` waits for FREEZING to become FROZEN.
        remove_timeout_s: How long ``remove`` retries a busy rmdir.
    """

    def __init__(
        self,
        name: str,
        hierarchies: list[V1Hierarchy],
        *,
        clk_tck: int | None = None,
        freeze_timeout_s: float = 2.0,
        remove_timeout_s: float = 1.0,
    ) -> None:
        if not hierarchies:
            raise CgroupError(f"cgroup {name}: no cgroup v1 hierarchy is mounted")
        self.name = name
        self.hierarchies = list(hierarchies)
        self._clk_tck = clk_tck or os.sysconf("SC_CLK_TCK")
        self._freeze_timeout_s = freeze_timeout_s
        self._remove_timeout_s = remove_timeout_s

    def __repr__(self) -> str:
        return f"V1Cgroup({self.name!r})"

    # -- where things are ------------------------------------------------------

    def _dir(self, controller: str) -> Path | None:
        for h in self.hierarchies:
            if controller in h.controllers:
                return h.path
        return None

    def _need(self, controller: str, what: str) -> Path:
        path = self._dir(controller)
        if path is None:
            raise CgroupError(f"cannot {what} for cgroup {self.name}: the {controller} controller is not mounted")
        return path

    def _procs_dir(self) -> Path:
        # Every hierarchy holds the same processes (add_process writes them all);
        # read one that has a controller, pids first since it counts them.
        for controller in ("pids", "freezer", "memory", "cpu", "cpuacct"):
            path = self._dir(controller)
            if path is not None:
                return path
        return self.hierarchies[0].path

    # -- lifecycle -------------------------------------------------------------

    def create(self) -> None:
        """mkdir the cgroup in every mounted hierarchy (idempotent).

        In the cpuset hierarchy each new level starts with empty ``cpuset.cpus``
        and ``cpuset.mems``, and a task cannot join a cpuset without both
        (ENOSPC). Each empty level is filled from its parent, top-down, as runc's
        ``cpusetEnsureParent`` does.

        Raises:
            CgroupError: A mkdir or the cpuset copy failed.
        """
        for h in self.hierarchies:
            fill = _fill_cpuset_from_parent if "cpuset" in h.controllers else None
            make_dirs(h.path, h.mount_point, fill)

    def add_process(self, pid: int) -> None:
        """Move ``pid`` (and its threads) into the cgroup in every hierarchy.

        Raises:
            CgroupError: A hierarchy refused the PID (gone, or cpuset empty).
        """
        for h in self.hierarchies:
            write_file(h.path / "cgroup.procs", str(pid))

    def clone_target(self) -> Path | None:
        """The hybrid host's v2 hierarchy, which a child can be cloned into (CLONE_INTO_CGROUP)."""
        return next((h.path for h in self.hierarchies if not h.controllers), None)

    def join_self(self, *, cloned_into: bool) -> None:
        """Move the calling process, single-threaded and just cloned, in: ``add_process`` for itself.

        Each v1 hierarchy gets "0" in ``tasks``: the kernel moves the caller
        alone without the global threadgroup lock, whose first writer waits out
        an RCU grace period (~5-15 ms); ``cgroup.procs`` would wait it out.
        One thread is the whole process here. ``cloned_into``: the clone already
        put it in ``clone_target()``.

        Raises:
            CgroupError: A hierarchy refused it (cpuset empty, say).
        """
        for h in self.hierarchies:
            if h.controllers:
                write_file(h.path / "tasks", "0")
            elif not cloned_into:
                write_file(h.path / "cgroup.procs", "0")

    def remove(self) -> None:
        """rmdir the cgroup in every hierarchy; a missing directory is fine.

        Retries a busy directory for a while (processes still exiting after
        ``kill``), then gives up.

        Raises:
            CgroupError: A directory is still busy (processes or child cgroups).
        """
        # One deadline for all hierarchies: a busy cgroup is busy in each of them.
        deadline = time.monotonic() + self._remove_timeout_s
        errors: list[str] = []
        for h in self.hierarchies:
            try:
                remove_dir(h.path, timeout_s=max(0.0, deadline - time.monotonic()))
            except CgroupError as exc:
                errors.append(str(exc))
        if errors:
            raise CgroupError("; ".join(errors))

    def mount_sources(self) -> list[tuple[str, Path]]:
        """(name under /sys/fs/cgroup in a container, host directory) per v1 hierarchy.

        The empty v2 hierarchy of a hybrid host is joined but not shown to the
        container, as runc does: it carries no controller to look at.
        """
        return [(h.name, h.path) for h in self.hierarchies if h.controllers]

    # -- limits ----------------------------------------------------------------

    def apply(self, resources: Resources) -> None:
        """Write every limit that is set (not ``None``) in ``resources``.

        Raises:
            CgroupError: A controller is missing or the kernel refused a value.
        """
        r = resources
        if r.memory_max_bytes is not None or r.memory_low_bytes is not None or r.swap_max_bytes is not None:
            self._apply_memory(r)
        if r.cpu_weight is not None:
            cpu = self._need("cpu", "set cpu shares")
            write_file(cpu / "cpu.shares", str(_convert.cpu_weight_to_shares(r.cpu_weight)))
        if r.cpu_period_usec is not None or r.cpu_quota_usec is not None:
            cpu = self._need("cpu", "set cpu quota")
            # Period first: the quota is checked against the period in force.
            if r.cpu_period_usec is not None:
                write_file(cpu / "cpu.cfs_period_us", str(r.cpu_period_usec))
            if r.cpu_quota_usec is not None:
                write_file(cpu / "cpu.cfs_quota_us", str(r.cpu_quota_usec))
        if r.cpuset_cpus is not None:
            write_file(self._need("cpuset", "set cpus") / "cpuset.cpus", r.cpuset_cpus)
        if r.cpuset_mems is not None:
            write_file(self._need("cpuset", "set memory nodes") / "cpuset.mems", r.cpuset_mems)
        if r.pids_max is not None:
            write_file(self._need("pids", "set pids limit") / "pids.max", str(r.pids_max))
        if r.io_weight is not None:
            self._apply_io_weight(r.io_weight)

    def _apply_memory(self, r: Resources) -> None:
        memory = self._need("memory", "set memory limits")
        if r.memory_low_bytes is not None:
            write_file(memory / "memory.soft_limit_in_bytes", str(r.memory_low_bytes))
        memsw = memory / "memory.memsw.limit_in_bytes"
        if r.swap_max_bytes is None or not memsw.exists():
            # Swap unset, or no swap accounting on this kernel (rule 4).
            if r.memory_max_bytes is not None:
                write_file(memory / "memory.limit_in_bytes", str(r.memory_max_bytes))
            return
        if r.memory_max_bytes is None:
            raise CgroupError(
                f"cannot limit swap of cgroup {self.name} without a memory limit: "
                f"v1 {memsw.name} counts memory and swap together"
            )
        total = r.memory_max_bytes + r.swap_max_bytes
        # The kernel keeps memory.limit <= memsw.limit at every step, so raise
        # memsw first when the new memory limit would exceed the current memsw,
        # and lower memory first otherwise (runc's setMemoryAndSwap).
        current_memsw = read_parsed(memsw, _parse.parse_int)
        if current_memsw is not None and r.memory_max_bytes > current_memsw:
            write_file(memsw, str(total))
            write_file(memory / "memory.limit_in_bytes", str(r.memory_max_bytes))
        else:
            write_file(memory / "memory.limit_in_bytes", str(r.memory_max_bytes))
            write_file(memsw, str(total))

    def _apply_io_weight(self, io_weight: int) -> None:
        blkio = self._need("blkio", "set io weight")
        value = str(_convert.io_weight_to_blkio_weight(io_weight))
        # CFQ (gone since 5.0) had blkio.weight; BFQ has blkio.bfq.weight. Write
        # each one present, so the weight holds whichever scheduler a disk uses.
        files = [blkio / f for f in ("blkio.weight", "blkio.bfq.weight") if (blkio / f).exists()]
        if not files:
            raise CgroupError(
                f"cannot set io weight for cgroup {self.name}: neither blkio.weight nor "
                f"blkio.bfq.weight exists in {blkio} (no proportional io scheduler)"
            )
        for f in files:
            write_file(f, value)

    # -- freezer ---------------------------------------------------------------

    def is_frozen(self) -> bool:
        """Whether the cgroup is FROZEN now (FREEZING counts as not yet)."""
        freezer = self._need("freezer", "read the freezer state")
        return read_file(freezer / "freezer.state").strip() == "FROZEN"

    def set_frozen(self, frozen: bool) -> None:
        """Freeze or thaw, and wait until the state settles.

        Writing FROZEN starts FREEZING; tasks that are busy in the kernel
        (vfork, uninterruptible sleep) can keep it there. Re-writing FROZEN
        retries the stragglers (runc writes it in a loop too). After
        ``freeze_timeout_s`` we thaw again, so no half-frozen cgroup is left,
        and raise.

        Raises:
            CgroupError: No freezer hierarchy, a write failed, or the freeze did
                not settle in time.
        """
        freezer = self._need("freezer", "freeze" if frozen else "thaw")
        state_file = freezer / "freezer.state"
        want = "FROZEN" if frozen else "THAWED"

        def settled() -> bool:
            if read_file(state_file).strip() == want:
                return True
            write_file(state_file, want)
            return False

        write_file(state_file, want)
        if wait_until(settled, timeout_s=self._freeze_timeout_s):
            return
        if frozen:
            write_file(state_file, "THAWED")
        raise CgroupError(
            f"cgroup {self.name} did not become {want} within {self._freeze_timeout_s}s "
            f"({state_file} is {read_file(state_file).strip()})"
        )

    def kill(self) -> None:
        """SIGKILL every process in the cgroup.

        v1 has no ``cgroup.kill``. With a freezer: freeze, signal every listed
        PID, thaw; a frozen task cannot fork, so no child escapes the list, and
        the SIGKILLs take effect on thaw. Without one, signal in rounds until the
        list stops changing. Returns once signalled; the exits follow.

        Raises:
            CgroupError: The process list cannot be read, or freezing failed.
        """
        freezer = self._dir("freezer")
        if freezer is None:
            _kill_in_rounds(self._procs_dir() / "cgroup.procs")
            return
        self.set_frozen(True)
        try:
            for pid in read_pids(freezer / "cgroup.procs"):
                _sigkill(pid)
        finally:
            self.set_frozen(False)

    def pids(self) -> list[int]:
        """PIDs (thread-group ids) in the cgroup, as ``cgroup.procs`` lists them."""
        return read_pids(self._procs_dir() / "cgroup.procs")

    # -- stats -----------------------------------------------------------------

    def stats(self) -> CgroupStats:
        """Read every counter of every mounted controller; absent ones are ``None``.

        Raises:
            CgroupError: A file exists but cannot be read or parsed (cgroup removed).
        """
        fields: dict[str, object] = {}
        cpuacct = self._dir("cpuacct")
        if cpuacct is not None:
            usage_ns = read_parsed(cpuacct / "cpuacct.usage", _parse.parse_int)
            if usage_ns is not None:
                fields["cpu_usage_usec"] = _convert.ns_to_usec(usage_ns)
            percpu = read_parsed(cpuacct / "cpuacct.usage_percpu", _parse.parse_int_list)
            if percpu is not None:
                fields["cpu_percpu_usec"] = tuple(_convert.ns_to_usec(v) for v in percpu)
            ticks = read_parsed(cpuacct / "cpuacct.stat", _parse.parse_flat_keyed)
            if ticks is not None:
                if "user" in ticks:
                    fields["cpu_user_usec"] = _convert.ticks_to_usec(ticks["user"], self._clk_tck)
                if "system" in ticks:
                    fields["cpu_system_usec"] = _convert.ticks_to_usec(ticks["system"], self._clk_tck)
        cpu = self._dir("cpu")
        if cpu is not None:
            cpu_stat = read_parsed(cpu / "cpu.stat", _parse.parse_flat_keyed) or {}
            fields["cpu_nr_periods"] = cpu_stat.get("nr_periods")
            fields["cpu_nr_throttled"] = cpu_stat.get("nr_throttled")
            if "throttled_time" in cpu_stat:
                fields["cpu_throttled_usec"] = _convert.ns_to_usec(cpu_stat["throttled_time"])
        memory = self._dir("memory")
        if memory is not None:
            fields.update(self._memory_stats(memory))
        pids = self._dir("pids")
        if pids is not None:
            fields["pids_current"] = read_parsed(pids / "pids.current", _parse.parse_int)
            fields["pids_max"] = read_parsed(pids / "pids.max", _parse.parse_max)
        blkio = self._dir("blkio")
        if blkio is not None:
            fields["io_devices"] = _blkio_devices(blkio)
        return CgroupStats(**fields)  # type: ignore[arg-type]

    def _memory_stats(self, memory: Path) -> dict[str, object]:
        usage = read_parsed(memory / "memory.usage_in_bytes", _parse.parse_int)
        limit = read_parsed(memory / "memory.limit_in_bytes", _parse.parse_int)
        stat = read_parsed(memory / "memory.stat", _parse.parse_flat_keyed) or {}
        # total_* include descendants; the plain keys are this level only.
        inactive_file = stat.get("total_inactive_file", stat.get("inactive_file"))
        out: dict[str, object] = {
            "memory_usage_bytes": usage,
            "memory_max_usage_bytes": read_parsed(memory / "memory.max_usage_in_bytes", _parse.parse_int),
            "memory_limit_bytes": None if limit is None or limit >= _V1_UNLIMITED_FLOOR else limit,
            "memory_rss_bytes": stat.get("total_rss", stat.get("rss")),
            "memory_cache_bytes": stat.get("total_cache", stat.get("cache")),
            "memory_inactive_file_bytes": inactive_file,
            "memory_failcnt": read_parsed(memory / "memory.failcnt", _parse.parse_int),
            "memory_stat": stat,
        }
        if usage is not None:
            out["memory_working_set_bytes"] = max(0, usage - (inactive_file or 0))
        memsw_usage = read_parsed(memory / "memory.memsw.usage_in_bytes", _parse.parse_int)
        if memsw_usage is not None and usage is not None:
            out["swap_usage_bytes"] = max(0, memsw_usage - usage)
        oom = read_parsed(memory / "memory.oom_control", _parse.parse_flat_keyed)
        if oom is not None:
            kills = oom.get("oom_kill")   # since Linux 4.13
            out["oom_kill_count"] = kills
            # v1 keeps no OOM counter. Every OOM ends in a kill unless
            # oom_kill_disable is set; then under_oom stays 1 while it is stuck.
            out["oom_events"] = (kills or 0) + oom.get("under_oom", 0)
        return out

    # -- OOM notification ------------------------------------------------------

    def open_oom_watch(self) -> int:
        """Return an eventfd the kernel signals on each OOM of this cgroup.

        Registered through ``cgroup.event_control`` with ``memory.oom_control``
        (Documentation/admin-guide/cgroup-v1/memory.rst, "OOM Control"). The
        eventfd is non-blocking and close-on-exec; reading it returns the number
        of events since the last read. It also fires once when the cgroup is
        removed. The caller owns (and closes) the fd.

        Raises:
            CgroupError: No memory hierarchy, or the registration was refused.
        """
        memory = self._need("memory", "watch for OOM")
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            oom_control = memory / "memory.oom_control"
            try:
                cfd = os.open(oom_control, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise CgroupError(f"failed to open {oom_control}: {exc.strerror}") from exc
            try:
                # "<event_fd> <fd of memory.oom_control>"; the kernel keeps its
                # own reference to the eventfd, not to the control file.
                write_file(memory / "cgroup.event_control", f"{efd} {cfd}")
            finally:
                os.close(cfd)
        except BaseException:
            os.close(efd)
            raise
        return efd


def _fill_cpuset_from_parent(level: Path) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = level / name
        if read_file(mine).strip():
            continue
        parent_value = read_file(level.parent / name).strip()
        if parent_value:
            write_file(mine, parent_value)


def _blkio_devices(blkio: Path) -> dict[str, IoDeviceStats]:
    # The *_recursive files include child cgroups (a container may nest some);
    # the throttle files count every bio on current kernels, whatever the
    # scheduler, so prefer them to the BFQ ones.
    def first(*names: str) -> dict[str, dict[str, int]]:
        for name in names:
            parsed = read_parsed(blkio / name, _parse.parse_blkio_rwstat)
            if parsed is not None:
                return parsed
        return {}

    nbytes = first("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes",
                   "blkio.io_service_bytes_recursive")
    nops = first("blkio.throttle.io_serviced_recursive", "blkio.throttle.io_serviced",
                 "blkio.io_serviced_recursive")
    devices = {}
    for dev in sorted(set(nbytes) | set(nops)):
        b, o = nbytes.get(dev, {}), nops.get(dev, {})
        devices[dev] = IoDeviceStats(
            read_bytes=b.get("read", 0), write_bytes=b.get("write", 0),
            read_ops=o.get("read", 0), write_ops=o.get("write", 0),
        )
    return devices


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass   # exited between the listing and the signal


def _kill_in_rounds(procs: Path, rounds: int = 10) -> None:
    # Without a freezer a process may fork between listing and signal; list
    # again until no new PID shows up (bounded: a fork bomb is pids.max's job).
    signalled: set[int] = set()
    for _ in range(rounds):
        fresh = [pid for pid in read_pids(procs) if pid not in signalled]
        if not fresh:
            return
        for pid in fresh:
            _sigkill(pid)
        signalled.update(fresh)
