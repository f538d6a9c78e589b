"""The one seam between the trio daemon and runtime/: an async facade over blocking Linux work.

Rules:

1. Supervisor logic depends on the ``Host`` protocol only; tests pass a fake.
2. Blocking runtime calls (cgroup files, the spawner round trip) hop to a
   worker thread behind one CapacityLimiter, so a storm of container starts
   cannot eat every thread.
3. Waiting is never a thread: a pidfd and the exec sync socket are plain fds,
   awaited with ``trio.lowlevel.wait_readable``, then read without blocking.
4. Signals go through the pidfd (``Child.send_signal``), never by PID.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Protocol

import trio

from runtime import cgroups
from runtime.errors import CgroupError
from runtime.spawn import Child, ExitStatus
from runtime.spawner import Spawner

from .keeper import KeeperClient, KeeperError

log = logging.getLogger("corral.host")

# An adopted child's exit: how long its new parent (the host's init) may take to reap it
# before its status is "unknown". systemd reaps at once; some inits poll every few seconds.
REAP_WAIT_S = 60.0


class Host(Protocol):
    async def prepare_cgroup(self, path: str, resources: cgroups.Resources) -> None: ...
    async def spawn(self, config: dict, *, bundle: str, cgroup: str, stdio: tuple[int, int, int]) -> Child: ...
    async def exec(self, init_pidfd: int, process: dict, *, namespaces: list[str], cgroup: str,
                   stdio: tuple[int, int, int]) -> Child: ...
    async def wait_exec(self, child: Child) -> None: ...
    async def wait_exit(self, child: Child) -> ExitStatus: ...
    def send_signal(self, child: Child, signum: int) -> None: ...
    async def oom_kills(self, cgroup: str) -> int: ...
    async def remove_cgroup(self, cgroup: str) -> None: ...
    async def freeze(self, cgroup: str, frozen: bool) -> None: ...
    async def is_frozen(self, cgroup: str) -> bool: ...
    async def pids(self, cgroup: str) -> list[int]: ...
    async def cgroup_stats(self, cgroup: str) -> cgroups.CgroupStats | None: ...


class LinuxHost:
    """``Host`` on this kernel: runtime/ in worker threads, inits cloned by the spawner."""

    def __init__(self, spawner: Spawner, *, limiter: trio.CapacityLimiter | None = None) -> None:
        self._spawner = spawner
        self._limiter = limiter or trio.CapacityLimiter(8)
        # Spawns in flight: an init may exist before its task knows its pid,
        # so the orphan reaper waits while this is not 0.
        self.spawning = 0
        # Relative cgroup paths are below the daemon's own cgroups (runc's rule).
        self._cgroup_base = Path("/proc/self/cgroup").read_text()
        # The cgroups made by prepare_cgroup until remove_cgroup, resolved once (~0.2 ms each;
        # a Cgroup is only its paths).
        self._cgroups: dict[str, cgroups.Cgroup] = {}

    def _cgroup(self, path: str) -> cgroups.Cgroup:
        cg = self._cgroups.get(path)
        if cg is None:
            cg = cgroups.open_cgroup(path, mountinfo=cgroups.read_mountinfo(), self_cgroup=self._cgroup_base)
        return cg

    async def _run(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def prepare_cgroup(self, path: str, resources: cgroups.Resources) -> None:
        def prepare() -> None:
            cg = self._cgroup(path)
            cg.create()
            self._cgroups[path] = cg
            cg.apply(resources)
        await self._run(prepare)

    @property
    def spawner_pid(self) -> int:
        return self._spawner.pid

    async def spawn(self, config: dict, *, bundle: str, cgroup: str, stdio: tuple[int, int, int]) -> Child:
        self.spawning += 1
        try:
            return await self._run(lambda: self._spawner.spawn(
                config, bundle=bundle, cgroup=cgroup, cgroup_base=self._cgroup_base, stdio=stdio))
        finally:
            self.spawning -= 1

    async def exec(self, init_pidfd: int, process: dict, *, namespaces: list[str], cgroup: str,
                   stdio: tuple[int, int, int]) -> Child:
        """A process in the running container of the init ``init_pidfd`` names (runtime/exec.py),
        cloned by the spawner. The caller keeps ``init_pidfd`` open until this returns."""
        self.spawning += 1
        try:
            return await self._run(lambda: self._spawner.exec(
                init_pidfd, process, namespaces=namespaces, cgroup=cgroup, cgroup_base=self._cgroup_base,
                stdio=stdio))
        finally:
            self.spawning -= 1

    async def wait_exec(self, child: Child) -> None:
        sync = child._sync
        if sync is not None:
            await trio.lowlevel.wait_readable(sync)
        child.wait_exec()            # readable: EOF or the error message, no blocking

    async def wait_exit(self, child: Child) -> ExitStatus:
        """How the child ended. An adopted one (not ours to reap) is readable once it exited and
        tells its status once its new parent reaped it: we poll for that, bounded."""
        await trio.lowlevel.wait_readable(child.pidfd)       # readable once it exited
        delay, waited = 0.001, 0.0
        while (status := child.poll()) is None:
            if waited >= REAP_WAIT_S:
                log.warning("pid %d exited but nobody reaped it in %.0f s: exit status unknown", child.pid, waited)
                return ExitStatus()
            await trio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.25)
        return status

    def send_signal(self, child: Child, signum: int) -> None:
        child.send_signal(signum)

    async def oom_kills(self, cgroup: str) -> int:
        def read() -> int:
            try:
                return self._cgroup(cgroup).stats().oom_kill_count or 0
            except CgroupError:
                return 0
        return await self._run(read)

    async def freeze(self, cgroup: str, frozen: bool) -> None:
        await self._run(lambda: self._cgroup(cgroup).set_frozen(frozen))

    async def is_frozen(self, cgroup: str) -> bool:
        """The freezer's own word (a record may be older than it); False once the cgroup is gone."""
        def read() -> bool:
            try:
                return self._cgroup(cgroup).is_frozen()
            except CgroupError:
                return False
        return await self._run(read)

    async def pids(self, cgroup: str) -> list[int]:
        """Host PIDs in the cgroup (``cgroup.procs``); [] once it is gone."""
        def read() -> list[int]:
            try:
                return self._cgroup(cgroup).pids()
            except CgroupError:
                return []
        return await self._run(read)

    async def cgroup_stats(self, cgroup: str) -> cgroups.CgroupStats | None:
        """The cgroup's counters (``Cgroup.stats()``, the parser /metrics uses too); None once it is gone."""
        def read() -> cgroups.CgroupStats | None:
            try:
                return self._cgroup(cgroup).stats()
            except CgroupError:
                return None
        return await self._run(read)

    async def remove_cgroup(self, cgroup: str) -> None:
        """Kill what is left in it and remove it; a cgroup that is already gone is fine."""
        def remove() -> None:
            cg = self._cgroup(cgroup)
            try:
                cg.kill()
            except CgroupError:
                pass                  # not there (never started, or removed after its last run)
            cg.remove()
            self._cgroups.pop(cgroup, None)
        await self._run(remove)


@asynccontextmanager
async def open_linux_host() -> AsyncIterator[LinuxHost]:
    """Start the spawner (our child: inits cloned with CLONE_PARENT are ours) and stop it after."""
    spawner = await trio.to_thread.run_sync(Spawner.start)
    try:
        yield LinuxHost(spawner)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(spawner.close)


class KeeperLink:
    """``task.Keep`` over the keeper (keeper.py): its blocking calls in worker threads.

    A keeper that fails is logged and forgotten: containers run on, they only
    lose what the keeper gives them (outliving the daemon with their output).
    """

    def __init__(self, client: KeeperClient) -> None:
        self._client: KeeperClient | None = client
        self._limiter = trio.CapacityLimiter(1)     # one socket: one call at a time anyway

    @property
    def alive(self) -> bool:
        """False once a call failed: nothing is held from then on."""
        return self._client is not None

    async def hold(self, c, child: Child, fds: dict[str, int]) -> None:
        try:
            if self._client is None:
                return
            settings = None if c.log_path is None else {
                "path": c.log_path, "max_size": c.log_config.max_size_bytes, "max_files": c.log_config.max_files}
            await self._call(self._client.hold, c.id, child.pid, {"pidfd": child.pidfd, **fds}, settings)
        finally:
            for fd in fds.values():
                os.close(fd)

    async def release(self, c) -> None:
        if self._client is not None:
            await self._call(self._client.release, c.id)

    async def _call(self, fn, *args) -> None:
        try:
            await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except KeeperError as exc:
            log.error("%s; containers will not outlive this daemon", exc)
            self._client = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
