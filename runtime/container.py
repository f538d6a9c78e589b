"""A runc-like container: a state directory, a cgroup and an init, across commands.

``corral runtime create`` and ``start`` run as separate processes, so all that
ties them together is on disk, under ``<root>/<id>/``:

- ``state.json``: the init's PID *and start time* (a PID alone could be
  recycled), the bundle, the cgroup path, the creation time;
- ``exec.fifo``: present from create until start; the init blocks opening it
  for writing, and ``start`` releases it by opening it for reading (runc's design).

Status is derived, never stored: no process (or a zombie) -> stopped;
``exec.fifo`` still there -> created; frozen cgroup -> paused; else running.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import time
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from protocols.runtime_spec import Spec, parse_spec

from . import cgroups
from .errors import CgroupError, ContainerStateError, HostError, SpawnError
from .spawn import Child, open_pidfd, process_exited, read_start_time, spawn_init

DEFAULT_ROOT = Path("/run/corral/runtime")
_START_TIMEOUT_S = 30
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")   # runc's id rule, bounded


@dataclass
class State:
    id: str
    pid: int
    start_time: int
    bundle: str
    rootfs: str
    created: str
    cgroup: str                 # as the spec gave it: may be relative...
    cgroup_base: str            # ...to the creator's cgroups: its /proc/self/cgroup
    oci_version: str
    annotations: dict[str, str] = field(default_factory=dict)


class Container:
    """One container under a state root; see the module docstring."""

    def __init__(self, root: Path, state: State) -> None:
        self.root = root
        self.state = state
        self.dir = root / state.id

    # --- construction -------------------------------------------------------

    @classmethod
    def create(cls, root: Path, container_id: str, bundle: str, *, detached: bool = True,
               default_cgroup_parent: str = "corral") -> tuple["Container", Child]:
        """Set up the container and leave its init ready to exec.

        Args:
            root: the state root (``--root``).
            container_id: the new container's id.
            bundle: the OCI bundle directory (holds config.json).
            detached: leave the init blocked on exec.fifo until ``start``
                (``create``); False starts at once (``run``), and the caller
                must ``wait_exec()`` the returned child.
            default_cgroup_parent: where the cgroup goes when the spec has no
                cgroupsPath: relative to our own cgroup, as runc does.

        Raises:
            ContainerStateError: the id is taken or invalid.
            SpawnError, CgroupError, MountError: set-up failed; nothing is left behind.
        """
        if not _ID.match(container_id):
            raise ContainerStateError(f"invalid container id {container_id!r}")
        bundle = os.path.abspath(bundle)
        spec = load_spec(bundle)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        cdir = root / container_id
        try:
            cdir.mkdir(mode=0o700)
        except FileExistsError:
            raise ContainerStateError(f"container with id {container_id} already exists") from None
        cgroup = None
        child = None
        try:
            try:
                resources = cgroups.resources_from_oci(spec.resources)
            except ValueError as exc:
                raise SpawnError(f"invalid linux.resources: {exc}") from None
            cgroup_path = spec.cgroups_path or f"{default_cgroup_parent}/{container_id}"
            # A relative path is below the creator's cgroup in each hierarchy;
            # later commands run elsewhere, so the creator's view is kept.
            cgroup_base = Path("/proc/self/cgroup").read_text()
            cgroup = cgroups.open_cgroup(cgroup_path, self_cgroup=cgroup_base)
            cgroup.create()
            cgroup.apply(resources)
            fifo = None
            if detached:
                fifo = str(cdir / "exec.fifo")
                os.mkfifo(fifo, 0o600)
            child = spawn_init(spec, bundle=bundle, cgroup=cgroup, exec_fifo=fifo)
            state = State(
                id=container_id, pid=child.pid, start_time=read_start_time(child.pid) or 0,
                bundle=bundle, rootfs=os.path.join(bundle, spec.root.path),
                created=_now_rfc3339(), cgroup=cgroup_path, cgroup_base=cgroup_base, oci_version=spec.oci_version,
                annotations=dict(spec.annotations),
            )
            container = cls(root, state)
            container._write_state()
            return container, child
        except BaseException as exc:
            if child is not None:
                child.send_signal(signal.SIGKILL)
                child.wait()
                child.close()
            oom = False
            if cgroup is not None:
                oom = isinstance(exc, SpawnError) and _oom_killed(cgroup)
                cgroup.kill()
                cgroup.remove()
            shutil.rmtree(cdir, ignore_errors=True)
            if oom:
                raise SpawnError(f"container init was OOM-killed before it could exec (memory limit too low?): {exc}") from exc
            raise

    @classmethod
    def load(cls, root: Path, container_id: str) -> "Container":
        """Raises ContainerStateError when there is no such container."""
        path = root / container_id / "state.json"
        if not _ID.match(container_id) or not path.exists():
            raise ContainerStateError(f"container {container_id} does not exist")
        try:
            return cls(root, State(**json.loads(path.read_text())))
        except (ValueError, TypeError) as exc:
            raise ContainerStateError(f"state of container {container_id} is unreadable ({path}): {exc}") from exc

    @classmethod
    def list(cls, root: Path) -> list["Container"]:
        if not root.is_dir():
            return []
        out = []
        for entry in sorted(root.iterdir()):
            if (entry / "state.json").exists():
                try:
                    out.append(cls.load(root, entry.name))
                except ContainerStateError:
                    continue
        return out

    # --- queries -------------------------------------------------------------

    @property
    def cgroup(self) -> cgroups.Cgroup:
        return cgroups.open_cgroup(self.state.cgroup, self_cgroup=self.state.cgroup_base)

    def open_pidfd(self) -> int | None:
        """A pidfd for the init if it still runs (not a zombie, not a recycled PID)."""
        pidfd = open_pidfd(self.state.pid, self.state.start_time)
        if pidfd is not None and (process_exited(pidfd) or _is_zombie(self.state.pid)):
            os.close(pidfd)
            return None
        return pidfd

    def status(self) -> str:
        pidfd = self.open_pidfd()
        if pidfd is None:
            return "stopped"
        os.close(pidfd)
        # Frozen first: a created container can be paused too (runc).
        try:
            if self.cgroup.is_frozen():
                return "paused"
        except CgroupError:
            pass
        if (self.dir / "exec.fifo").exists():
            return "created"
        return "running"

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this container."""
        return _oom_killed(self.cgroup)

    def oci_state(self) -> dict[str, object]:
        """The state as ``runc state`` prints it (runtime-spec runtime.md "State")."""
        status = self.status()
        return {
            "ociVersion": self.state.oci_version,
            "id": self.state.id,
            "pid": self.state.pid if status != "stopped" else 0,
            "status": status,
            "bundle": self.state.bundle,
            "rootfs": self.state.rootfs,
            "created": self.state.created,
            "owner": "",
            **({"annotations": self.state.annotations} if self.state.annotations else {}),
        }

    # --- operations ------------------------------------------------------------

    def start(self) -> None:
        """Let a created init exec its command (reads exec.fifo).

        Raises:
            ContainerStateError: the container is not in the created state, or its init died.
        """
        status = self.status()
        if status != "created":
            raise ContainerStateError(f"cannot start a container in the {status} state")
        fifo = self.dir / "exec.fifo"
        pidfd = self.open_pidfd()
        if pidfd is None:
            raise ContainerStateError(f"container {self.state.id} stopped before it was started")
        try:
            # Non-blocking open: a reader never waits for a writer; then wait for the
            # init's byte, or for the init to die (its pidfd turns readable).
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                ready, _, _ = select.select([fd, pidfd], [], [], _START_TIMEOUT_S)
                data = os.read(fd, 1) if fd in ready else b""
            finally:
                os.close(fd)
            exited = process_exited(pidfd)
        finally:
            os.close(pidfd)
        if data == b"0":
            fifo.unlink(missing_ok=True)     # from now on the container is running
        elif exited:
            raise ContainerStateError(f"container {self.state.id} did not start: its init exited before exec")
        else:
            raise ContainerStateError(f"container {self.state.id} did not start within {_START_TIMEOUT_S} s")

    def kill(self, signum: int, *, all_processes: bool = False) -> None:
        """Signal the init through a pidfd (or every process of the cgroup with ``all``)."""
        if all_processes:
            if signum == signal.SIGKILL:
                self.cgroup.kill()
            else:
                for pid in self.cgroup.pids():
                    _signal_pid_checked(pid, signum)
            return
        pidfd = self.open_pidfd()
        if pidfd is None:
            raise ContainerStateError("container not running")
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            raise ContainerStateError("container not running") from None
        except OSError as exc:
            raise HostError(f"failed to send signal {signum} to container {self.state.id}: {exc.strerror}") from exc
        finally:
            os.close(pidfd)

    def pause(self) -> None:
        status = self.status()
        if status not in ("running", "created"):
            raise ContainerStateError(f"container not running ({status})")
        self.cgroup.set_frozen(True)

    def resume(self) -> None:
        if self.status() != "paused":
            raise ContainerStateError("container not paused")
        self.cgroup.set_frozen(False)

    def delete(self, *, force: bool = False) -> None:
        """Remove a stopped container (``force``: kill it first, whatever its state).

        Raises:
            ContainerStateError: it still runs and ``force`` is not set.
        """
        status = self.status()
        if status not in ("stopped", "created") and not force:
            raise ContainerStateError(f"cannot delete container {self.state.id} that is not stopped: {status}")
        pidfd = self.open_pidfd()
        try:
            cgroup = self.cgroup
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            try:
                cgroup.kill()
            except CgroupError:
                pass
            if pidfd is not None:
                select.select([pidfd], [], [], 10)     # the init's exit, bounded
            cgroup.remove()
        finally:
            if pidfd is not None:
                os.close(pidfd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def stats(self) -> dict[str, object]:
        """One sample as ``runc events --stats`` prints it."""
        return {"type": "stats", "id": self.state.id, "data": stats_to_runc(self.cgroup.stats())}

    def _write_state(self) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, self.dir / "state.json")


def load_spec(bundle: str) -> Spec:
    """Read and parse ``<bundle>/config.json``; SpawnError names what is wrong."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise SpawnError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_spec(raw)
    except HostError:
        raise
    except Exception as exc:   # SpecError; protocols errors carry the field's path
        raise SpawnError(f"{path}: {exc}") from None


def stats_to_runc(s: cgroups.CgroupStats) -> dict[str, object]:
    """CgroupStats in the shape of runc's ``types.Stats`` (events.go)."""
    ns = lambda usec: usec * 1000 if usec is not None else 0  # noqa: E731
    blkio = {
        "io_service_bytes_recursive": [
            {"major": int(dev.split(":")[0]), "minor": int(dev.split(":")[1]), "op": op, "value": value}
            for dev, d in sorted(s.io_devices.items())
            for op, value in (("Read", d.read_bytes), ("Write", d.write_bytes))
        ],
        "io_serviced_recursive": [
            {"major": int(dev.split(":")[0]), "minor": int(dev.split(":")[1]), "op": op, "value": value}
            for dev, d in sorted(s.io_devices.items())
            for op, value in (("Read", d.read_ops), ("Write", d.write_ops))
        ],
    }
    return {
        "cpu": {
            "usage": {"total": ns(s.cpu_usage_usec), "percpu": [ns(u) for u in s.cpu_percpu_usec or ()],
                      "kernel": ns(s.cpu_system_usec), "user": ns(s.cpu_user_usec)},
            "throttling": {"periods": s.cpu_nr_periods or 0, "throttled_periods": s.cpu_nr_throttled or 0,
                           "throttled_time": ns(s.cpu_throttled_usec)},
        },
        "memory": {
            "usage": {"limit": s.memory_limit_bytes or 0, "usage": s.memory_usage_bytes or 0,
                      "max": s.memory_max_usage_bytes or 0, "failcnt": s.memory_failcnt or 0},
            "swap": {"usage": s.swap_usage_bytes or 0},
            "cache": s.memory_cache_bytes or 0,
            "raw": dict(s.memory_stat),
        },
        "pids": {"current": s.pids_current or 0, "limit": s.pids_max or 0},
        "blkio": blkio,
        "oom_kill": s.oom_kill_count or 0,
    }


def _oom_killed(cgroup: cgroups.Cgroup) -> bool:
    try:
        return bool(cgroup.stats().oom_kill_count)
    except CgroupError:
        return False


def _is_zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return raw[raw.rindex(b")") + 2:raw.rindex(b")") + 3] in (b"Z", b"X")


def _signal_pid_checked(pid: int, signum: int) -> None:
    start = read_start_time(pid)
    if start is None:
        return
    pidfd = open_pidfd(pid, start)
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        pass
    except OSError as exc:
        raise HostError(f"failed to send signal {signum} to process {pid}: {exc.strerror}") from exc
    finally:
        os.close(pidfd)


def _now_rfc3339() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
