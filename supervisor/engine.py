"""The Engine: corral's one service API. Every front end (RPC, CLI, Docker HTTP) calls it.

Rules:

1. Options are Docker's create body (``Config`` fields with ``HostConfig``
   inside), and answers are shaped like Docker's, so the Docker API maps onto
   these methods one to one.
2. The Engine owns the records; each running container's process belongs to
   its task (``task.supervise``), started in the Engine's nursery with a
   cancel scope of its own. Stop = mark "stopped by the user", cancel, wait.
3. Every change is persisted and published in one SQLite transaction: the
   record's statement (``state.container_put``/``container_delete``) rides
   with the event through ``EventBus.publish(writes=...)`` (journal.py rule
   6), so a crash leaves both or neither, and a subscriber never hears of a
   state that a crash could take back. Every record write goes through the
   bus's one writer, so records are stored in the order they were made.
4. Blocking work (mounts, files, SQLite) runs in worker threads; nothing here
   blocks the event loop.
5. Filters are Docker's: values of one key are OR-ed, keys are AND-ed (except
   ``label``, which moby AND-s too: every label filter must hold). An unknown
   key is the caller's error, never silently ignored.
6. Crash order (docs/architecture.md, "Crash safety"): create writes the
   directory, then the record; remove deletes the record, then the
   directory; ``restore`` deletes directories without a record and kills
   and removes every container's cgroup and root mount, whatever the
   record says, so a daemon SIGKILLed at any step comes back consistent.

Volumes are moby's "local" driver: a directory ``<data-root>/volumes/<name>/_data``
bind-mounted into containers. A ``HostConfig.Binds`` source without a leading
"/" names a volume, created on first use; ``Config.Volumes`` entries not
covered by a bind get anonymous volumes (64-hex names, labelled
``com.docker.volume.anonymous``), which ``rm -v`` and ``--rm`` remove.
Rejected: resolving volumes inside ``protocols.container_config``; it is pure
and must not create directories, so the Engine rewrites the binds first.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import logging
import math
import os
import platform
import posixpath
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import trio

from protocols.container_config import InvalidContainerConfig, runtime_config
from protocols.distribution import DistributionError
from protocols.oci_image import ContainerConfig, ImageFormatError, parse_reference
from protocols.units import human_duration
from runtime import image_archive, overlay
from runtime.build_context import BUILD_CACHE_FILE, BuildCache
from runtime.cgroups import CgroupMode, detect_mode, read_mountinfo, resources_from_oci
from runtime.devices import host_devices
from runtime.errors import HostError
from runtime.images import ImageError, ImageNotFound
from runtime.layers import LayerError
from runtime.spawn import Child, ExitStatus, open_pidfd, process_exited, reaped_status

from . import registry
from ._crashpoints import crash_point
from ._host import Host
from .attach import streams_of
from .errors import (
    Conflict,
    CorralError,
    InvalidRequest,
    NameInUse,
    NoSuchContainer,
    NoSuchImage,
    NoSuchVolume,
    PermissionDenied,
    StartFailed,
    Unavailable,
)
from .events import EventBus
from .execs import Execs, find_init_binary
from .files import Archive, Files, SpooledDownload
from .health import HealthMonitors
from .logs import LogQuery, log_config_of, log_path_for, make_query, read_logs
from .metrics_server import MetricsHub
from .restart import parse_restart_policy, restart_on_daemon_start
from .state import StateStore, container_delete, container_put, volume_delete, volume_put
from .keeper import Held
from .version import API_VERSION, go_arch, server_version
from .task import Adopted, Keep, Supervised, supervise

log = logging.getLogger("corral.engine")
_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")      # moby's validContainerNamePattern
_STOPPING_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_ADJECTIVES = ("brave", "calm", "eager", "fond", "keen", "lucid", "quiet", "sharp", "sunny", "witty")
_NOUNS = ("ada", "babbage", "curie", "dijkstra", "euler", "gauss", "hopper", "knuth", "lovelace", "turing")
# moby's container states (container/state.go IsValidStateString); "removing"
# and "dead" never occur here but are valid filter values all the same.
STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")
PS_FILTERS = frozenset({"status", "name", "label", "id", "ancestor", "exited", "volume"})
_PS_FILTERS_NOT_YET = frozenset({"before", "since", "health", "network", "publish", "expose", "is-task", "isolation"})
PRUNE_FILTERS = frozenset({"label", "label!"})
VOLUME_FILTERS = frozenset({"name", "label", "dangling", "driver"})
IMAGE_FILTERS = frozenset({"dangling", "label", "reference"})
ANONYMOUS_LABEL = "com.docker.volume.anonymous"      # what moby 23+ puts on anonymous volumes
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")   # moby's RestrictedNamePattern
# Container events that change the record: it is written in the event's transaction.
_RECORDED_ACTIONS = frozenset({"create", "start", "die", "restart", "stop", "parked", "oom", "rename", "pause",
                               "unpause"})
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class Entry:
    """A container record: the task's ``Supervised`` plus what only the Engine needs."""

    sup: Supervised
    body: dict[str, Any]
    image: str                      # as the user named it
    image_id: str
    created_ns: int
    dir: Path
    auto_remove: bool = False
    paused: bool = False
    mounted: bool = False
    # A start made (or may have made) a cgroup that no run's end has removed yet.
    cgroup_may_exist: bool = False
    stopped_by_daemon: bool = False   # running when the daemon shut down: its policy resumes at restore
    # Docker's MountPoint objects (inspect "Mounts"), volume sources resolved.
    mounts: list[dict[str, Any]] = field(default_factory=list)
    scope: trio.CancelScope | None = field(default=None, repr=False)
    done: trio.Event | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.done is not None and not self.done.is_set()

    @property
    def status(self) -> str:
        if self.running:
            return "paused" if self.paused else ("restarting" if self.sup.status == "restarting" else "running")
        return "created" if self.sup.status == "created" else "exited"


class _Started:
    """A task's ``task_status`` that remembers whether the task said it started."""

    def __init__(self, task_status) -> None:
        self._task_status = task_status
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self._task_status.started(value)


class Engine:
    def __init__(self, *, data_root: Path, host: Host, bus: EventBus, store: StateStore, images,
                 nursery: trio.Nursery, cgroup_parent: str = "corral", privileged_caps: list[str],
                 cgroup_namespace: bool = False, metrics: MetricsHub | None = None) -> None:
        self.data_root = data_root
        self.host = host
        self.bus = bus
        self.store = store
        self.images = images
        self._nursery = nursery
        self.cgroup_parent = cgroup_parent
        self.privileged_caps = privileged_caps
        self.cgroup_namespace = cgroup_namespace
        # Told every container event (supervisor/metrics_server.py); None: no metrics.
        self.metrics = metrics
        self._containers: dict[str, Entry] = {}
        self._names_pending: set[str] = set()     # names of creates still in flight
        self._volumes: dict[str, dict[str, Any]] = {}
        # Volumes named by creates in flight: not yet in any Entry, but not removable.
        self._volumes_pending: Counter[str] = Counter()
        # Image ids that creates in flight resolved but have not yet put in an Entry: rmi
        # treats them as used. ``_image_lock`` makes "resolve + count" (create) and "check
        # users + delete" (rmi) atomic with respect to each other; nothing else takes it.
        self._images_pending: Counter[str] = Counter()
        self._image_lock = trio.Lock()
        # Helper processes (ps) running: the daemon's orphan reaper must not steal their status.
        self.helpers_running = 0
        self.registry_settings = registry.Settings()   # --registry-mirror, --insecure-registry
        self.execs = Execs(self)                  # docker exec (supervisor/execs.py)
        self.health = HealthMonitors(self)        # health checks (supervisor/health.py)
        self.files = Files(self)          # cp, export, diff (supervisor/files.py)
        # Holds each run's pidfd and output across daemon restarts (keeper.py); None: nothing does.
        self.keep: Keep | None = None
        self.live_restore = False       # --live-restore: containers outlive the daemon's shutdown
        (data_root / "containers").mkdir(parents=True, exist_ok=True)
        (data_root / "volumes").mkdir(mode=0o701, parents=True, exist_ok=True)

    # --- lookup ------------------------------------------------------------------

    def _get(self, ref: str) -> Entry:
        """By full id, name, or unique id prefix (Docker's rules)."""
        ref = ref.lstrip("/")
        if ref in self._containers:
            return self._containers[ref]
        for e in self._containers.values():
            if e.sup.name == ref:
                return e
        matches = [e for cid, e in self._containers.items() if ref and cid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidRequest(f"multiple containers match the prefix {ref!r}")
        raise NoSuchContainer(f"no such container: {ref}")

    # --- create ------------------------------------------------------------------

    async def container_create(self, body: dict[str, Any], *, name: str | None = None) -> dict[str, Any]:
        """Docker's POST /containers/create; returns {"Id": ..., "Warnings": []}.

        Raises:
            NoSuchImage, NameInUse, InvalidRequest.
        """
        if not isinstance(body, dict):
            raise InvalidRequest("create body must be an object")
        name = self._new_name(name)
        # Taken from here on: creates run concurrently and await before they
        # register their container, so a free name must not be handed out twice.
        self._names_pending.add(name)
        try:
            return await self._create(body, name)
        finally:
            self._names_pending.discard(name)

    async def _create(self, body: dict[str, Any], name: str) -> dict[str, Any]:
        image_ref = body.get("Image")
        if not image_ref or not isinstance(image_ref, str):
            raise InvalidRequest("Image: required")
        log_config = log_config_of(body)          # a bad --log-opt fails before anything is made
        async with self._image_lock:
            image = await trio.to_thread.run_sync(self._find_image, image_ref)
            self._images_pending[image.id] += 1
        cid = secrets.token_hex(32)
        cdir = self.data_root / "containers" / cid
        host_config = body.get("HostConfig") or {}
        if not isinstance(host_config, dict):
            raise InvalidRequest("HostConfig: must be an object")
        mounts = plan_mounts(host_config.get("Binds"), body.get("Volumes"))
        volume_names = [m["Name"] for m in mounts if m["Type"] == "volume" and m["Name"]]
        self._volumes_pending.update(volume_names)
        anonymous: list[str] = []          # created by this call: removed again if it fails
        try:
            policy = parse_restart_policy(_restart_text(host_config.get("RestartPolicy")))
            if policy.name != "no" and host_config.get("AutoRemove"):
                raise InvalidRequest("conflicting options: cannot combine --restart and --rm")
            for m in mounts:
                if m["Type"] == "volume":
                    if not m["Name"]:
                        m["Name"] = secrets.token_hex(32)
                        anonymous.append(m["Name"])
                        self._volumes_pending[m["Name"]] += 1
                    volume = await self._ensure_volume(m["Name"], anonymous=m["Name"] in anonymous)
                    m["Source"] = volume["Mountpoint"]
            # runtime_config sees host paths only; the body we keep names the volumes, as Docker's does.
            resolved = {**body, "HostConfig": {**host_config, "Binds": [_bind_text(m) for m in mounts] or None}}
            config = await trio.to_thread.run_sync(self._prepare_dir, cid, cdir, resolved, image)
            resources = resources_from_oci(config["linux"]["resources"])
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                shutil.rmtree(cdir, ignore_errors=True)
                for name in anonymous:
                    self._volumes_pending[name] -= 1
                    await self._drop_volume(name)
                anonymous.clear()
            if isinstance(exc, (InvalidContainerConfig, ValueError)):
                raise InvalidRequest(str(exc)) from None
            raise
        finally:
            self._volumes_pending.subtract(volume_names + anonymous)
            self._volumes_pending += Counter()          # drop the zero counts
            # No checkpoint between here and the Entry going into _containers below, so
            # rmi never sees the image neither pending nor used.
            self._images_pending[image.id] -= 1
            self._images_pending += Counter()
        sup = Supervised(
            id=cid, name=name, config=config, bundle=str(cdir), cgroup=config["linux"]["cgroupsPath"],
            resources=resources, policy=policy,
            stop_signal=_signal_number(body.get("StopSignal") or image.config.stop_signal or "SIGTERM"),
            stop_timeout_s=float(body["StopTimeout"]) if body.get("StopTimeout") is not None else 10.0,
            log_path=log_path_for(cdir, log_config), log_config=log_config,
        )
        entry = Entry(sup, body, image_ref, image.id, time.time_ns(), cdir, auto_remove=bool(host_config.get("AutoRemove")),
                      mounts=mounts)
        self._containers[cid] = entry
        # The directory is complete; the record and its event commit together (rule 6).
        crash_point("create:before-record")
        try:
            await self._publish("create", sup, {})
        except BaseException:
            with trio.CancelScope(shield=True):
                self._containers.pop(cid, None)
                await trio.to_thread.run_sync(_remove_dir, cdir)
            raise
        crash_point("create:after-record")
        return {"Id": cid, "Warnings": []}

    def _new_name(self, name: str | None) -> str:
        if name:
            if not _NAME.match(name):
                raise InvalidRequest(f"invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.lstrip("/")
            if name in self._names_pending or any(e.sup.name == name for e in self._containers.values()):
                raise NameInUse(f'the container name "/{name}" is already in use')
            return name
        taken = {e.sup.name for e in self._containers.values()} | self._names_pending
        while True:
            candidate = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}"
            if candidate not in taken:
                return candidate
            candidate += str(secrets.randbelow(100))
            if candidate not in taken:
                return candidate

    def _find_image(self, ref: str):
        try:
            return self.images.get(ref)
        except ImageNotFound:
            raise NoSuchImage(f"no such image: {ref}") from None
        except ImageError as exc:            # a malformed reference
            raise InvalidRequest(str(exc)) from None

    def _prepare_dir(self, cid: str, cdir: Path, body: dict[str, Any], image) -> dict[str, Any]:
        """Container directory, generated /etc files and the OCI config (worker thread)."""
        for sub in ("upper", "work", "rootfs"):
            (cdir / sub).mkdir(parents=True, exist_ok=True)
        crash_point("create:mid-dir")
        hostname = body.get("Hostname") or cid[:12]
        _write(cdir / "hostname", hostname + "\n")
        _write(cdir / "hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                               f"127.0.1.1\t{hostname}\n")
        try:
            resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            resolv = ""
        _write(cdir / "resolv.conf", resolv)
        layers = image.rootfs_layers()
        config = runtime_config(
            body, _image_defaults(image.config), container_id=cid, rootfs=str(cdir / "rootfs"),
            etc_files={"/etc/hostname": str(cdir / "hostname"), "/etc/hosts": str(cdir / "hosts"),
                       "/etc/resolv.conf": str(cdir / "resolv.conf")},
            privileged_caps=self.privileged_caps, cgroups_path=f"{self.cgroup_parent}/{cid}",
            cgroup_namespace=self.cgroup_namespace,
            passwd=_top_file(layers, "etc/passwd"), group=_top_file(layers, "etc/group"),
            privileged_devices=host_devices() if (body.get("HostConfig") or {}).get("Privileged") else [],
            init_path=find_init_binary() if (body.get("HostConfig") or {}).get("Init") else None,
        )
        return config

    # --- start / stop / kill ---------------------------------------------------------

    async def container_start(self, ref: str) -> bool:
        """Start; False when it already runs (Docker answers 304 Not Modified).

        Raises:
            StartFailed: the init could not start (exit_code 126/127 when the command is the cause).
        """
        e = self._get(ref)
        if e.running:
            return False
        e.sup.stopped_by_user = False
        e.sup.parked_reason = ""
        e.sup.restart_count = 0           # a user's start gives the policy its full count again (moby)
        return await self._start(e)

    async def _start(self, e: Entry) -> bool:
        """Start ``e``'s task; ``restore`` calls this directly to resume a policy with its count."""
        e.stopped_by_daemon = False
        streams_of(e.sup).configure(e.body, e.sup.config)      # -i/-t: stdin and terminal (attach.py)
        if self.metrics is not None:
            self.metrics.starting(e.sup.id)
        try:
            await self._nursery.start(self._run, e)
        except CorralError:
            raise
        except Exception as exc:          # SpawnError, MountError, CgroupError: the start failed
            await self._save(e)
            raise StartFailed(str(exc), exit_code=getattr(exc, "exit_code", 1) or 1) from None
        return True

    async def _run(self, e: Entry, *, adopted: Adopted | None = None,
                   task_status=trio.TASK_STATUS_IGNORED) -> None:
        e.done = trio.Event()
        e.cgroup_may_exist = True
        held = False
        started = _Started(task_status)
        try:
            with trio.CancelScope() as scope:
                e.scope = scope
                # Counted with the copies in flight (supervisor/files.py): mounts unless one holds it.
                await self.files.hold(e)
                held = True
                if adopted is None:
                    await self._publish_volume_mounts(e, "mount")
                await supervise(e.sup, self.host, self._publish, task_status=started, keep=self.keep,
                                adopted=adopted)
        except Exception as exc:
            if not started.done:
                raise                 # a failed start: the caller's nursery.start reports it
            # A bug, or a journal that cannot be written: this container's supervision ends
            # (the teardown below kills what is left in its cgroup); the daemon and every
            # other container go on.
            log.exception("container %s: its supervision failed; it is stopped", e.sup.id[:12])
            e.sup.status, e.sup.error = "exited", f"supervision failed: {exc}"
        finally:
            with trio.CancelScope(shield=True):
                e.scope = None
                if e.sup.detaching:
                    # Left running for the next daemon (--live-restore): its root stays
                    # mounted, its cgroup and its record stay as they are.
                    e.done.set()
                    return
                e.paused = False
                try:
                    async with trio.open_nursery() as teardown:     # independent: side by side
                        if held:
                            teardown.start_soon(self._release_root, e)
                        teardown.start_soon(self._remove_cgroup, e)
                    await self._save(e)
                except Exception:      # as above: logged, and the daemon goes on
                    log.exception("container %s: cleaning up after its run failed", e.sup.id[:12])
                e.done.set()
                if e.auto_remove and e.sup.id in self._containers:
                    try:
                        await self._remove(e, volumes=True)       # --rm takes anonymous volumes too (moby)
                    except Exception:
                        log.exception("container %s: removing it after its run failed", e.sup.id[:12])

    async def _release_root(self, e: Entry) -> None:
        await self.files.release(e)        # unmounts unless a copy still holds it
        await self._publish_volume_mounts(e, "unmount")

    async def _remove_cgroup(self, e: Entry) -> None:
        """A stopped container holds no cgroup (as runc delete does for Docker); the next
        start makes a fresh one."""
        try:
            await self.host.remove_cgroup(e.sup.cgroup)
        except HostError as exc:      # logged; the container is stopped all the same
            log.warning("container %s: %s", e.sup.id[:12], exc)
        else:
            e.cgroup_may_exist = False

    def _mount(self, e: Entry) -> None:
        image = self.images.get(e.image_id)
        overlay.mount_container_root(list(reversed(image.rootfs_layers())), e.dir / "upper", e.dir / "work",
                                     e.dir / "rootfs")
        e.mounted = True

    def _unmount(self, e: Entry) -> None:
        try:
            overlay.unmount(e.dir / "rootfs")
        except HostError as exc:
            # Busy: a host process has its working directory or a file in there (an
            # operator's shell). Out of the tree now; the kernel frees it once let go.
            log.warning("container %s: %s; detaching it", e.sup.id[:12], exc)
            _unmount_quietly(e.dir / "rootfs")
        e.mounted = False

    async def container_stop(self, ref: str, *, timeout_s: float | None = None) -> bool:
        """docker stop: the stop signal, the grace period, then SIGKILL. False if not running (304)."""
        e = self._get(ref)
        if not e.running:
            return False
        e.sup.stopped_by_user = True
        if self.metrics is not None:
            self.metrics.stopping(e.sup.id)
        if timeout_s is not None:
            e.sup.stop_timeout_s = max(0.0, float(timeout_s))
        if e.paused:                      # a frozen process gets no signal: thaw it first (moby)
            await self.host.freeze(e.sup.cgroup, False)
            e.paused = False
        e.scope.cancel()
        await e.done.wait()
        return True

    async def container_kill(self, ref: str, *, signal_name: str | int = "SIGKILL") -> None:
        e = self._get(ref)
        signum = _signal_number(signal_name)
        child = e.sup.child
        if not e.running or child is None:
            raise Conflict(f"container {e.sup.id[:12]} is not running")
        if signum in _STOPPING_SIGNALS or signum == e.sup.stop_signal:
            e.sup.stopped_by_user = True          # a user's kill is never undone by the policy
        await self._publish("kill", e.sup, {"signal": str(signum)})
        self.host.send_signal(child, signum)

    async def container_restart(self, ref: str, *, timeout_s: float | None = None) -> None:
        await self.container_stop(ref, timeout_s=timeout_s)
        await self.container_start(ref)

    async def container_wait(self, ref: str) -> dict[str, Any]:
        """docker wait: block until it is not running; {"StatusCode": N, "Error": null}."""
        e = self._get(ref)
        if e.running:
            await e.done.wait()
        return {"StatusCode": e.sup.exit_code if e.sup.exit_code is not None else 0, "Error": None}

    async def container_pause(self, ref: str) -> None:
        e = self._get(ref)
        if not e.running or e.paused:
            raise Conflict(f"container {e.sup.id[:12]} is not running" if not e.running
                           else f"container {e.sup.id[:12]} is already paused")
        await self.host.freeze(e.sup.cgroup, True)
        e.paused = True
        await self._publish("pause", e.sup, {})

    async def container_unpause(self, ref: str) -> None:
        e = self._get(ref)
        if not e.paused:
            raise Conflict(f"container {e.sup.id[:12]} is not paused")
        await self.host.freeze(e.sup.cgroup, False)
        e.paused = False
        await self._publish("unpause", e.sup, {})

    async def container_rename(self, ref: str, new_name: str) -> None:
        e = self._get(ref)
        old = e.sup.name
        e.sup.name = self._new_name(new_name)
        await self._publish("rename", e.sup, {"oldName": "/" + old})      # with the record (rule 3)

    async def container_remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        """docker rm. ``volumes`` (-v) also removes the container's anonymous volumes that no
        other container uses; named volumes always stay (Docker's rule).

        Raises:
            NoSuchContainer; Conflict: it runs and ``force`` is false.
        """
        e = self._get(ref)
        if e.running:
            if not force:
                raise Conflict(f"you cannot remove a running container {e.sup.id}. "
                               f"Stop the container before attempting removal or force remove")
            await self.container_stop(e.sup.id, timeout_s=0)
        await self._remove(e, volumes=volumes)

    async def _remove(self, e: Entry, *, volumes: bool = False) -> None:
        self._containers.pop(e.sup.id, None)
        await self.files.forget(e)        # no copy in flight reads a directory we delete
        if e.cgroup_may_exist:
            # Killing a missing cgroup fails (the v1 freezer write), and the end of a run
            # removed its cgroup already unless that failed.
            await self.host.remove_cgroup(e.sup.cgroup)
        # The record goes with its destroy event, then the directory (rule 6): a
        # crash in between leaves a directory without a record, which restore deletes.
        crash_point("remove:before-record")
        await self._publish("destroy", e.sup, {}, entry=e)
        crash_point("remove:after-record")
        await trio.to_thread.run_sync(_remove_dir, e.dir)
        if volumes:
            for m in e.mounts:
                name = m.get("Name")
                if (m["Type"] == "volume" and name in self._volumes
                        and ANONYMOUS_LABEL in (self._volumes[name].get("Labels") or {})
                        and not self._volume_users(name)):
                    await self._drop_volume(name)

    async def container_prune(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """docker container prune: remove every container that is not running.

        Args:
            filters: ``label`` (key or key=value; all must hold) and ``label!`` (none may hold).

        Returns:
            Docker's shape: {"ContainersDeleted": [ids], "SpaceReclaimed": bytes of their writable layers}.

        Raises:
            InvalidRequest: an unknown filter key.
        """
        flt = normalize_filters(filters, PRUNE_FILTERS)
        deleted, reclaimed = [], 0
        for e in list(self._containers.values()):
            if e.running or e.sup.id not in self._containers:
                continue
            labels = e.body.get("Labels") or {}
            if not labels_match(labels, flt.get("label", [])):
                continue
            if flt.get("label!") and any(labels_match(labels, [want]) for want in flt["label!"]):
                continue
            reclaimed += await trio.to_thread.run_sync(_disk_usage, e.dir / "upper")
            await self._remove(e)
            deleted.append(e.sup.id)
        await self.bus.publish("container", "prune", "", {"reclaimed": str(reclaimed)})
        return {"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}

    async def container_top(self, ref: str, ps_args: str = "-ef") -> dict[str, Any]:
        """docker top: ``ps ps_args`` on the host, narrowed to the processes of the container's cgroup.

        Returns:
            Docker's shape: {"Titles": [...], "Processes": [[...], ...]}; the last column
            (the command) keeps its spaces. A ``CPID`` column after ``PID`` has each
            process's PID inside the container (``NSpid``).

        Raises:
            NoSuchContainer; Conflict: not running; InvalidRequest: ps refused the options or
            printed no PID column; Unavailable: no ``ps`` on the host.
        """
        e = self._get(ref)
        if not e.running:
            raise Conflict(f"container {e.sup.id} is not running")
        pids = await self.host.pids(e.sup.cgroup)
        args = ps_args.split()
        out = None
        if pids:
            # -q selects just our PIDs (cheap on a busy host); some options (forest
            # listings) refuse it, so fall back to every process and filter (moby does too).
            out = await self._ps([*args, "-q", ",".join(map(str, pids))])
        if out is None:
            out = await self._ps(args, check=True)
        try:
            titles, processes = parse_ps_output(out, pids)
        except ValueError as exc:
            raise InvalidRequest(f"top {ps_args!r}: {exc}") from None
        # The PID inside the container (its PID namespace) right after the host's.
        titles, processes = await trio.to_thread.run_sync(with_container_pids, titles, processes)
        await self._publish("top", e.sup, {})
        return {"Titles": titles, "Processes": processes}

    # --- files and stats (supervisor/files.py, supervisor/stats.py): Docker's archive API -------

    async def container_archive_stat(self, ref: str, path: str) -> dict[str, Any]:
        """HEAD /containers/{id}/archive: ``{"name", "size", "mode", "mtime", "linkTarget"}``."""
        return await self.files.archive_stat(ref, path)

    async def container_archive_get(self, ref: str, path: str) -> tuple[dict[str, Any], Archive]:
        """GET /containers/{id}/archive: (stat, tar stream); the caller ``aclose``s the stream."""
        return await self.files.archive_get(ref, path)

    async def container_archive_put(self, ref: str, path: str, tar_stream, *, no_overwrite_dir_non_dir: bool = True,
                                    copy_uid_gid: bool = False) -> None:
        """PUT /containers/{id}/archive: extract ``tar_stream`` (a binary file) into the directory ``path``."""
        await self.files.archive_put(ref, path, tar_stream, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                                     copy_uid_gid=copy_uid_gid)

    async def container_export(self, ref: str) -> Archive:
        """GET /containers/{id}/export: the merged root as a tar stream; the caller ``aclose``s it."""
        return await self.files.export(ref)

    async def container_changes(self, ref: str) -> list[dict[str, Any]]:
        """GET /containers/{id}/changes: ``[{"Path", "Kind"}]`` (0 changed, 1 added, 2 deleted)."""
        return await self.files.changes(ref)

    async def container_stats(self, ref: str, *, stream: bool = True):
        """GET /containers/{id}/stats: Docker's stats documents, one a second (one with ``stream=False``)."""
        from .stats import container_stats
        async with aclosing(container_stats(self, ref, stream=stream)) as docs:
            async for doc in docs:
                yield doc

    async def _ps(self, args: list[str], *, check: bool = False) -> str | None:
        """``ps ARGS`` output, or None when it failed and ``check`` is false."""
        exe = shutil.which("ps")
        if exe is None:
            raise Unavailable("top needs ps (procps) on the host: none on PATH")
        # A plain exec of ps (vfork/exec in the stdlib, no Python code in the child), so
        # the daemon's no-fork rule holds. helpers_running keeps the orphan reaper off it.
        self.helpers_running += 1
        try:
            done = await trio.run_process([exe, *args], capture_stdout=True, capture_stderr=True, check=False,
                                          stdin=subprocess.DEVNULL)
        finally:
            self.helpers_running -= 1
        if done.returncode != 0:
            if check:
                # SPEC: moby answers 500; a ps that refuses its options is the caller's mistake, so 400.
                raise InvalidRequest(f"ps {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
            return None
        return done.stdout.decode(errors="replace")

    # --- queries -------------------------------------------------------------------

    async def container_list(self, *, all: bool = False, filters: dict[str, Any] | None = None,
                             limit: int = 0) -> list[dict[str, Any]]:
        """docker ps (GET /containers/json): newest first.

        Args:
            all: stopped containers too. A ``status`` filter or a ``limit`` implies it (moby).
            filters: ``{key: [values]}`` or Docker's older ``{key: {value: true}}``. Keys:
                status, name (regex, searched in "/name"), label (key or key=value), id (prefix),
                ancestor (image name or id), exited (exit code), volume (name or destination).
            limit: the newest ``limit`` only (``-n``, ``-l``); 0 for no limit.

        Raises:
            InvalidRequest: an unknown key, a bad status or exit code, a bad name regex.
        """
        flt = normalize_filters(filters, PS_FILTERS, not_yet=_PS_FILTERS_NOT_YET)
        for value in flt.get("status", []):
            if value not in STATES:
                raise InvalidRequest(f"invalid filter 'status={value}'")
        if "status" in flt or limit > 0:
            all = True
        ancestors = None
        if "ancestor" in flt:
            ancestors = await trio.to_thread.run_sync(self._image_ids, flt["ancestor"])
        entries = sorted(self._containers.values(), key=lambda e: e.created_ns, reverse=True)
        out = []
        for e in entries:
            if not (all or e.running):
                continue
            summary = self._summary(e)
            exit_code = e.sup.exit_code if e.status == "exited" else None
            if container_matches(summary, flt, exit_code=exit_code, ancestor_ids=ancestors):
                out.append(summary)
        return out[:limit] if limit > 0 else out

    def _image_ids(self, refs: list[str]) -> set[str]:
        """Ids of the images named (worker thread); a name that matches nothing is skipped (moby)."""
        ids = set()
        for ref in refs:
            try:
                ids.add(self.images.get(ref).id)
            except ImageError:
                continue
        return ids

    def _summary(self, e: Entry) -> dict[str, Any]:
        args = e.sup.config["process"]["args"]
        return {
            "Id": e.sup.id, "Names": ["/" + e.sup.name], "Image": e.image, "ImageID": e.image_id,
            # moby's list.go: an argument with a space is shown in single quotes.
            "Command": " ".join(f"'{a}'" if " " in a else a for a in args), "Created": e.created_ns // 1_000_000_000,
            "State": e.status, "Status": _status_text(e) + (self.health.ps_suffix(e.sup.id) if e.status == "running" else ""), "Labels": dict(e.body.get("Labels") or {}),
            "Mounts": [dict(m) for m in e.mounts],
        }

    def container_inspect(self, ref: str) -> dict[str, Any]:
        e = self._get(ref)
        s = e.sup
        process = s.config["process"]
        return {
            "Id": s.id, "Name": "/" + s.name, "Created": _rfc3339(e.created_ns), "Image": e.image_id,
            "Path": process["args"][0], "Args": process["args"][1:],
            "State": {
                "Status": e.status, "Running": e.running and not e.paused, "Paused": e.paused,
                "Restarting": e.status == "restarting", "OOMKilled": s.oom_killed, "Dead": False,
                "Pid": s.pid, "ExitCode": s.exit_code or 0, "Error": s.error or s.parked_reason,
                "StartedAt": _rfc3339(s.started_at_ns), "FinishedAt": _rfc3339(s.finished_at_ns),
                **({"Health": h} if (h := self.health.inspect(s.id)) is not None else {}),
            },
            "RestartCount": s.restart_count,
            "HostConfig": {**(e.body.get("HostConfig") or {}), "RestartPolicy": {
                "Name": s.policy.name, "MaximumRetryCount": s.policy.max_retries}},
            "Config": {"Hostname": s.config["hostname"], "Env": process["env"], "Cmd": e.body.get("Cmd"),
                       "Image": e.image, "Entrypoint": e.body.get("Entrypoint"), "WorkingDir": process["cwd"],
                       "Labels": dict(e.body.get("Labels") or {}), "StopSignal": signal.Signals(s.stop_signal).name},
            "Mounts": [dict(m) for m in e.mounts],
            "LogPath": s.log_path or "", "ResolvConfPath": str(e.dir / "resolv.conf"),
            "HostnamePath": str(e.dir / "hostname"), "HostsPath": str(e.dir / "hosts"),
            "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(e.dir / "upper"),
                                                         "WorkDir": str(e.dir / "work"),
                                                         "MergedDir": str(e.dir / "rootfs")}},
        }

    async def container_logs(self, ref: str, *, follow: bool = False, stdout: bool = True, stderr: bool = True,
                             since: str | float | None = None, until: str | float | None = None,
                             timestamps: bool = False, tail: str | int | None = "all"):
        """docker logs (GET /containers/{id}/logs): batches of ``[stream, bytes]``, oldest first.

        ``stream`` is "stdout" or "stderr"; the bytes are one entry's text (ending in a
        newline unless it was a partial line), after its RFC 3339 time and a space with
        ``timestamps``. With ``follow`` the stream goes on until the container stops.
        ``since``/``until``/``tail`` as ``logs.make_query``.

        Raises:
            NoSuchContainer; InvalidRequest: bad parameters, or the driver is "none"
            (moby: the configured logging driver does not support reading).
        """
        e = self._get(ref)
        q: LogQuery = make_query(stdout=stdout, stderr=stderr, since=since, until=until,
                                 timestamps=timestamps, tail=tail)
        if e.sup.log_path is None:
            raise InvalidRequest('configured logging driver does not support reading ("none")')
        # Not running now: nothing to follow (docker logs -f of a stopped container ends).
        running = (lambda: e.running) if follow and e.running else None
        async with aclosing(read_logs(e.sup.log_path, q, running=running, stopped=e.done)) as batches:
            async for batch in batches:
                yield batch

    # --- exec (supervisor/execs.py) ---------------------------------------------------

    async def exec_create(self, ref: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /containers/{id}/exec -> {"Id": ...}; Conflict when it is not running or paused."""
        return await self.execs.create(ref, body)

    async def exec_start(self, exec_id: str, *, detach: bool = False, output: Any = None) -> None:
        """POST /exec/{id}/start; returns once the process runs (``output`` gets its stdout/stderr)."""
        await self.execs.start(exec_id, detach=detach, output=output)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        """GET /exec/{id}/json."""
        return self.execs.inspect(exec_id)

    def child_pids(self) -> set[int]:
        """PIDs of the inits our tasks wait on (the orphan reaper leaves them alone)."""
        return {e.sup.child.pid for e in self._containers.values() if e.sup.child is not None} | self.execs.pids()

    # --- images --------------------------------------------------------------------------

    def image_list(self, *, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """docker images (GET /images/json; worker thread).

        Args:
            filters: ``dangling`` (true: untagged only; false: tagged only), ``label``
                (key or key=value on the image config's labels, all must hold),
                ``reference`` (a glob on ``repo`` or ``repo:tag``, familiar names).
            all: docker's ``-a``: also the intermediate images (untagged ones that
                another image was committed on, or that ``build``'s cache names), hidden
                otherwise as Docker hides images that have children.

        Raises:
            InvalidRequest: an unknown filter key or a bad dangling value.
        """
        flt = normalize_filters(filters, IMAGE_FILTERS)
        dangling = None
        for value in flt.get("dangling", []):
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidRequest(f"invalid filter 'dangling={value}'")
            dangling = value.lower() in ("true", "1")
        used = self._image_users()
        images = self.images.list()
        intermediate = set(BuildCache(self.data_root / BUILD_CACHE_FILE).load().values()) | \
            {image.parent for image in images}
        out = []
        for image in images:
            if not image.repo_tags and image.id in intermediate and (not all or dangling):
                continue
            if dangling is not None and dangling != (not image.repo_tags):
                continue
            if not labels_match(dict(image.config.labels), flt.get("label", [])):
                continue
            if flt.get("reference") and not any(_reference_matches(pattern, tag) for pattern in flt["reference"]
                                                for tag in image.repo_tags):
                continue
            out.append({**_image_summary(image), "Containers": used.get(image.id, 0)})
        return out

    def _image_users(self) -> Counter[str]:
        return Counter(e.image_id for e in self._containers.values())

    async def image_history(self, ref: str) -> list[dict[str, Any]]:
        """docker history (GET /images/{name}/history): newest first; the top entry carries the image id,
        the others ``<missing>`` (their ids are not images here, as on a pulled image in Docker)."""
        image = await trio.to_thread.run_sync(self._find_image, ref)
        sizes = await trio.to_thread.run_sync(self.images.layer_sizes, image)
        layers = iter(sizes)
        rows = []
        for entry in image.image_config.history:
            empty = bool(entry.get("empty_layer"))
            rows.append({"Id": "<missing>", "Created": _epoch_s(entry.get("created")),
                         "CreatedBy": str(entry.get("created_by", "")), "Tags": None,
                         "Size": 0 if empty else next(layers, 0), "Comment": str(entry.get("comment", ""))})
        rows.reverse()
        if rows:
            rows[0].update(Id=image.id, Tags=list(image.repo_tags) or None)
        return rows

    async def image_prune(self, *, all: bool = False, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """docker image prune (POST /images/prune): untagged images no container uses (``all``: every
        image no container uses), then the blobs and snapshots nothing references.

        Returns:
            ``{"ImagesDeleted": [{"Untagged": ...} | {"Deleted": ...}], "SpaceReclaimed": bytes}``.
        """
        flt = normalize_filters(filters, PRUNE_FILTERS)
        deleted: list[dict[str, str]] = []
        reclaimed = 0
        used = self._image_users()
        images = await trio.to_thread.run_sync(self.images.list)
        # Without ``all``, an image others were committed on is not dangling (Docker's rule): it goes with
        # its last child (ImageStore.remove's pruning), and a build's cache or a running build's base stays.
        parents = {image.parent for image in images}
        sizes = {image.id: image.size for image in images}
        for image in images:
            if used.get(image.id) or self._images_pending.get(image.id) or (image.repo_tags and not all) \
                    or (image.id in parents and not all):
                continue
            if not labels_match(dict(image.config.labels), flt.get("label", [])):
                continue
            if flt.get("label!") and any(labels_match(dict(image.config.labels), [w]) for w in flt["label!"]):
                continue
            try:
                records = await trio.to_thread.run_sync(self._remove_image, image.id, True, True,
                                                        self._images_in_use())
            except (NoSuchImage, InvalidRequest):
                continue            # gone meanwhile
            reclaimed += sum(sizes.get(name, 0) for action, name in records if action == "Deleted")
            for action, name in records:
                deleted.append({action: name})
                await self.bus.publish("image", "untag" if action == "Untagged" else "delete",
                                       image.id if action == "Untagged" else name, {"name": name})
        await trio.to_thread.run_sync(lambda: self.images.gc())
        await self.bus.publish("image", "prune", "", {"reclaimed": str(reclaimed)})
        return {"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    async def system_df(self) -> dict[str, Any]:
        """docker system df (GET /system/df): images, containers, volumes and what each takes."""
        used = self._image_users()
        images = await trio.to_thread.run_sync(self.images.list)

        def container_sizes() -> dict[str, int]:
            return {e.sup.id: _disk_usage(e.dir / "upper") for e in list(self._containers.values())}

        def volume_sizes() -> dict[str, int]:
            return {name: _disk_usage(self._volume_dir(name) / "_data") for name in list(self._volumes)}

        sizes = await trio.to_thread.run_sync(container_sizes)
        vsizes = await trio.to_thread.run_sync(volume_sizes)
        return {
            "LayersSize": sum(i.size for i in images),
            "Images": [{**_image_summary(i), "Containers": used.get(i.id, 0), "SharedSize": -1} for i in images],
            "Containers": [{**self._summary(e), "SizeRw": sizes.get(e.sup.id, 0)}
                           for e in list(self._containers.values()) if e.sup.id in sizes],
            "Volumes": [{**dict(v), "UsageData": {"Size": vsizes.get(name, 0), "RefCount": len(self._volume_users(name))}}
                        for name, v in sorted(self._volumes.items())],
            "BuildCache": [],
        }

    async def image_bootstrap(self, name: str = "busybox") -> dict[str, Any]:
        """``corral image bootstrap busybox``: an image from the host's busybox-static."""
        if name != "busybox":
            raise InvalidRequest(f"cannot bootstrap {name!r}: only busybox (from the host's busybox-static)")
        image = await trio.to_thread.run_sync(self.images.bootstrap_busybox)
        await self.bus.publish("image", "import", image.id, {"name": "busybox:latest"})
        return _image_summary(image)

    async def image_import(self, source: str, reference: str | None = None, *, changes: list[str] | None = None,
                           message: str | None = None) -> dict[str, Any]:
        """docker import: a root filesystem tar (plain or compressed) or a directory as a one-layer image.

        ``source`` is a path on this host that the daemon reads. SPEC: Docker streams the
        tar in the request body; corral's RPC frames are capped at 1 MiB, and the CLI and
        the daemon share the host (and the socket admits root and the corral group only,
        who can bind-mount any host path into a container anyway), so a path grants
        nothing new. The CLI spools stdin (``-``) to a temp file and passes that.

        Args:
            reference: ``name[:tag]`` to give it (moved from any image that had it), or None.
            changes: Dockerfile instructions, ``docker import --change`` (``parse_changes``).
            message: the history comment (``-m``); ``Imported from <source>`` by default.

        Returns:
            The image summary (``Id``: ``sha256:...``).

        Raises:
            InvalidRequest: a relative or missing path, neither a regular file nor a
                directory, not a tar, an unsafe tar entry (``../x``, absolute, through a
                symlink), a bad reference or change.
        """
        if not isinstance(source, str) or not source.startswith("/"):
            raise InvalidRequest(f"import source must be an absolute path on the daemon's host: {source!r}")
        config = parse_changes(changes or [])
        tag = _familiar(reference) if reference else None          # a bad reference fails before any work

        def work():
            try:
                mode = os.stat(source).st_mode
            except OSError as exc:
                raise InvalidRequest(f"import {source}: {exc.strerror.lower()}") from None
            try:
                if stat.S_ISDIR(mode):
                    return self.images.import_directory(Path(source), reference, config=config, comment=message)
                if stat.S_ISREG(mode):
                    # Only regular files: a FIFO or a device would block a worker thread forever.
                    return self.images.import_tar(Path(source), reference, config=config, comment=message)
            except LayerError as exc:       # not a tar, truncated, or an entry that would escape
                raise InvalidRequest(f"import {source}: not a valid root filesystem tar: {exc}") from None
            except ImageError as exc:
                raise InvalidRequest(f"import {source}: {exc}") from None
            except OSError as exc:
                raise InvalidRequest(f"import {source}: {exc.strerror or exc}") from None
            raise InvalidRequest(f"import {source}: neither a tar file nor a directory")

        image = await trio.to_thread.run_sync(work)
        # moby's order: the tag event (when named), then the import.
        if tag is not None:
            await self.bus.publish("image", "tag", image.id, {"name": tag})
        await self.bus.publish("image", "import", image.id, {"name": tag or image.id})
        return _image_summary(image)

    async def image_commit(self, ref: str, *, reference: str | None = None, author: str = "", message: str = "",
                           changes: list[str] | None = None, pause: bool = True) -> dict[str, Any]:
        """docker commit (POST /commit): the container's upper dir as a new layer on its image,
        ``{"Id": ...}`` (supervisor/commit.py)."""
        from .commit import commit_container
        return await commit_container(self, ref, reference=reference, author=author, message=message,
                                      changes=changes, pause=pause)

    async def image_build(self, transfer: str | None, dockerfile: str, **options: Any):
        """docker build: the context (a tar upload's ``transfer``, or ``context=``: a directory of
        this host) built by ``dockerfile``'s text; yields progress items (supervisor/build.py)."""
        from .build import build_image
        async with aclosing(build_image(self, transfer, dockerfile, **options)) as items:
            async for item in items:
                yield item

    async def image_save(self, refs: list[str], *, fmt: str = "docker") -> str:
        """docker save (GET /images/get): the images as one tar; a transfer token to read it from.

        ``fmt`` is "docker" (docker-archive, as ``docker save`` writes) or "oci" (an
        OCI image layout). The tar is written to an anonymous spool file first, so a
        slow reader never holds the image store.

        Raises:
            InvalidRequest: no image named, or an unknown format. NoSuchImage: a name matches nothing.
        """
        if not refs or not all(isinstance(r, str) and r for r in refs):
            raise InvalidRequest("save: name at least one image")
        if fmt not in image_archive.FORMATS:
            raise InvalidRequest(f"save: unknown format {fmt!r} (docker or oci)")

        def write() -> BinaryIO:
            self.files.spool_dir.mkdir(mode=0o700, exist_ok=True)
            f = tempfile.TemporaryFile(dir=self.files.spool_dir)
            try:
                image_archive.save(self.images, refs, f, fmt=fmt)
                f.seek(0)
            except BaseException:
                f.close()
                raise
            return f

        try:
            f = await trio.to_thread.run_sync(write)
        except ImageNotFound as exc:
            raise NoSuchImage(str(exc)) from None
        except ImageError as exc:
            raise InvalidRequest(f"save: {exc}") from None
        for ref in refs:
            image = await trio.to_thread.run_sync(self.images.get, ref)
            await self.bus.publish("image", "save", image.id, {"name": ref})
        return self.files.open_download(SpooledDownload(f))

    async def image_load(self, transfer: str) -> list[str]:
        """docker load (POST /images/load): every image of an uploaded docker-archive or OCI
        layout tar; Docker's lines, ``Loaded image: busybox:latest`` or ``Loaded image ID: sha256:...``.

        Raises:
            InvalidRequest: not an image archive, or one that lies (the message says where);
                the store is left as it was.
        """
        source = self.files.take_upload(transfer)
        try:
            loaded = await trio.to_thread.run_sync(image_archive.load, self.images, source)
        except (image_archive.ArchiveFormatError, LayerError, ImageError) as exc:
            raise InvalidRequest(f"load: {exc}") from None
        finally:
            source.close()
        lines = []
        for image in loaded:
            for tag in image.tags:
                await self.bus.publish("image", "tag", image.id, {"name": tag})
                lines.append(f"Loaded image: {tag}")
            if not image.tags:
                lines.append(f"Loaded image ID: {image.id}")
            await self.bus.publish("image", "load", image.id, {"name": image.tags[0] if image.tags else image.id})
        return lines

    # --- registries (supervisor/registry.py: blocking, in worker threads) ------------------

    async def image_pull(self, name: str, *, auth: dict[str, str] | None = None):
        """docker pull (POST /images/create?fromImage=): Docker's progress messages, then the
        image is in the store. By digest (``name@sha256:...``) the image stays untagged.

        Raises:
            InvalidRequest: a malformed name. NoSuchImage: the registry has no such manifest.
            PermissionDenied: the registry wants credentials. Unavailable: it cannot be reached
            or refused otherwise.
        """
        box: dict[str, Any] = {}
        async for message in self._registry_call(box, registry.pull, self.images, name, self.registry_settings,
                                                 credentials=_credentials(auth)):
            yield message
        pulled = box["value"]
        if self.metrics is not None:
            self.metrics.corral.image_pulled(pulled.bytes)
        await self.bus.publish("image", "pull", pulled.image.id, {"name": name})

    async def image_push(self, name: str, *, auth: dict[str, str] | None = None):
        """docker push (POST /images/{name}/push): progress messages; the last names the digest.

        Raises:
            NoSuchImage: no such tag here. As ``image_pull`` otherwise.
        """
        box: dict[str, Any] = {}
        async for message in self._registry_call(box, registry.push, self.images, name, self.registry_settings,
                                                 credentials=_credentials(auth)):
            yield message
        image = await trio.to_thread.run_sync(self.images.get, name)
        await self.bus.publish("image", "push", image.id, {"name": name})

    async def image_search(self, term: str, *, registry_host: str, limit: int = 25,
                           auth: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """docker search (GET /images/search) through the registry's catalog."""
        return await self._registry_thread(registry.search, term, registry_host, self.registry_settings,
                                           _credentials(auth), limit)

    async def registry_login(self, server: str, username: str, password: str) -> dict[str, str]:
        """docker login (POST /auth): whether the registry takes these credentials."""
        await self._registry_thread(registry.check_login, server, self.registry_settings,
                                    registry.Credentials(username, password))
        return {"Status": "Login Succeeded"}

    async def _registry_thread(self, fn, *args):
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except BaseException as exc:
            raise _registry_error(exc) from None

    async def _registry_call(self, box: dict[str, Any], fn, *args, credentials):
        """Run ``fn(*args, progress, credentials)`` in a worker thread of the Engine's nursery and
        yield its progress messages; its value lands in ``box``. A client that goes away stops
        listening, not the transfer: the image still lands in the store."""
        send, receive = trio.open_memory_channel(math.inf)
        token = trio.lowlevel.current_trio_token()

        def progress(message: dict[str, Any]) -> None:
            try:
                trio.from_thread.run_sync(send.send_nowait, message, trio_token=token)
            except (trio.BrokenResourceError, trio.RunFinishedError):
                pass

        async def work() -> None:
            async with send:
                try:
                    box["value"] = await trio.to_thread.run_sync(lambda: fn(*args, progress, credentials))
                except BaseException as exc:      # noqa: BLE001 - handed to the listener below
                    box["error"] = exc

        self._nursery.start_soon(work)
        async with receive:
            async for message in receive:
                yield message
        if "error" in box:
            if fn is registry.pull and self.metrics is not None:
                self.metrics.corral.image_pull_failed()
            raise _registry_error(box["error"])

    async def image_tag(self, source: str, reference: str) -> None:
        """docker tag: give the image ``source`` names the tag ``reference`` (moved from any other).

        An image that loses its last tag this way stays, untagged, as in Docker.

        Raises:
            NoSuchImage; InvalidRequest: a bad reference or an ambiguous id prefix.
        """
        tag = _familiar(reference)

        def work():
            try:
                return self.images.tag(source, reference)
            except ImageNotFound:
                raise NoSuchImage(f"no such image: {source}") from None
            except ImageError as exc:
                raise InvalidRequest(str(exc)) from None

        image = await trio.to_thread.run_sync(work)
        await self.bus.publish("image", "tag", image.id, {"name": tag})

    async def image_inspect(self, ref: str) -> dict[str, Any]:
        """docker image inspect (GET /images/{name}/json), in Docker's shape.

        Raises:
            NoSuchImage; InvalidRequest: an ambiguous id prefix.
        """
        image = await trio.to_thread.run_sync(self._find_image, ref)
        return image_inspect_document(image)

    async def image_remove(self, ref: str, *, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        """docker rmi (DELETE /images/{name}): untag, and delete the image once no tag is left,
        with its untagged parents that nothing else needs (``noprune``: not those; ImageStore.remove).

        The containers are checked first (moby's rules, image_delete.go):

        - by tag, the image's only tag, a container (any state) uses it: refused
          unless ``force``;
        - by id: refused if a running container uses it (even with ``force``), or,
          without ``force``, if it has several tags or a stopped container uses it.

        SPEC: with ``force`` and a container using it, moby deletes the image record
        (its layers live on, refcounted by the container's RW layer). Here a container
        mounts the image's snapshots on every start, so ``force`` only untags and the
        image stays, dangling (``<none>``), until its last container is removed and
        rmi is run again.

        Returns:
            Docker's shape: ``[{"Untagged": "busybox:latest"}, {"Deleted": "sha256:..."}]``.

        Raises:
            NoSuchImage; Conflict as above; InvalidRequest: an ambiguous id prefix.
        """
        async with self._image_lock:
            image = await trio.to_thread.run_sync(self._find_image, ref)
            by_tag = _names_tag_of(ref, image)
            users = [e for e in self._containers.values() if e.image_id == image.id]
            pending = self._images_pending[image.id]
            if by_tag and (users or pending):
                if not force and len(image.repo_tags) == 1:
                    who = f"container {users[0].sup.id[:12]}" if users else "a container being created"
                    raise Conflict(f'conflict: unable to remove repository reference "{ref}" (must force) '
                                   f"- {who} is using its referenced image {image.short_id}")
                done = await trio.to_thread.run_sync(self._untag_only, image.id, [by_tag])
            elif not by_tag:
                running = [e for e in users if e.running]
                if running:
                    raise Conflict(f"conflict: unable to delete {image.short_id} (cannot be forced) "
                                   f"- image is being used by running container {running[0].sup.id[:12]}")
                if not force and len(image.repo_tags) > 1:
                    raise Conflict(f"conflict: unable to delete {image.short_id} (must be forced) "
                                   f"- image is referenced in multiple repositories")
                if users or pending:
                    if not force:
                        who = (f"stopped container {users[0].sup.id[:12]}" if users
                               else "a container being created")
                        raise Conflict(f"conflict: unable to delete {image.short_id} (must be forced) "
                                       f"- image is being used by {who}")
                    done = await trio.to_thread.run_sync(self._untag_only, image.id, list(image.repo_tags))
                else:
                    done = await trio.to_thread.run_sync(self._remove_image, image.id, force, not noprune,
                                                         self._images_in_use())
            else:
                done = await trio.to_thread.run_sync(self._remove_image, by_tag, force, not noprune,
                                                     self._images_in_use())
        for what, name in done:
            if what == "Untagged":
                await self.bus.publish("image", "untag", image.id, {"name": name})
            else:
                await self.bus.publish("image", "delete", name, {"name": name})
        return [{what: name} for what, name in done]

    def _images_in_use(self) -> frozenset[str]:
        """Ids of the images containers (and creates in flight) use: rmi never prunes those."""
        return frozenset({e.image_id for e in self._containers.values()} | set(self._images_pending))

    def _remove_image(self, ref: str, force: bool, prune: bool = True,
                      in_use: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        """ImageStore.remove (worker thread), its errors as the API's."""
        try:
            return self.images.remove(ref, force=force, prune=prune, in_use=in_use)
        except ImageNotFound:
            raise NoSuchImage(f"no such image: {ref}") from None
        except ImageError as exc:
            raise InvalidRequest(str(exc)) from None

    def _untag_only(self, image_id: str, tags: list[str]) -> list[tuple[str, str]]:
        """Drop ``tags`` (familiar form) from the image but keep it, even with no tag left (worker thread).

        ImageStore.remove deletes an image with its last tag, and its snapshots with it;
        an image a container uses must stay (rmi -f), so this edits the index directly,
        under its lock. TODO: an ``ImageStore.untag`` would be the better home for this.
        """
        wanted = {str(parse_reference(t)) for t in tags}
        with self.images.index.transaction() as records:
            record = records.get(image_id)
            if record is None:                        # removed since it was resolved
                raise NoSuchImage(f"no such image: {image_id}")
            gone = [t for t in record.tags if t in wanted]
            records[image_id] = replace(record, tags=tuple(t for t in record.tags if t not in wanted))
        return [("Untagged", parse_reference(t).familiar) for t in gone]

    # --- volumes ---------------------------------------------------------------------------

    def _volume_dir(self, name: str) -> Path:
        return self.data_root / "volumes" / name

    def _volume_users(self, name: str) -> list[str]:
        """Ids of the containers (any state) that mount the volume."""
        return [cid for cid, e in self._containers.items()
                if any(m["Type"] == "volume" and m.get("Name") == name for m in e.mounts)]

    async def volume_create(self, name: str | None = None, *, driver: str = "local",
                            labels: dict[str, str] | None = None,
                            driver_opts: dict[str, str] | None = None) -> dict[str, Any]:
        """docker volume create (POST /volumes/create). An existing name answers the existing
        volume, as moby does, so scripts may "create" before every run.

        Args:
            name: ``[a-zA-Z0-9][a-zA-Z0-9_.-]+``; a random 64-hex name when empty.

        Raises:
            InvalidRequest: a bad name, a driver other than "local", driver options (none supported).
        """
        if driver not in ("", "local"):
            raise InvalidRequest(f"volume driver {driver!r} is not supported (only \"local\")")
        if driver_opts:
            # SPEC: moby's local driver takes type/device/o for mount(8); we bind a directory only.
            raise InvalidRequest(f"volume driver options are not supported: {', '.join(sorted(driver_opts))}")
        if labels is not None and (not isinstance(labels, dict)
                                   or not all(isinstance(v, str) for v in labels.values())):
            raise InvalidRequest("Labels: must be an object of strings")
        name = name or secrets.token_hex(32)
        return dict(await self._ensure_volume(name, labels=labels))

    async def _ensure_volume(self, name: str, *, anonymous: bool = False,
                             labels: dict[str, str] | None = None) -> dict[str, Any]:
        _check_volume_name(name)
        if name in self._volumes:
            return self._volumes[name]
        mountpoint = self._volume_dir(name) / "_data"
        labels = dict(labels or {})
        if anonymous:
            labels[ANONYMOUS_LABEL] = ""
        volume = {"CreatedAt": _rfc3339_seconds(time.time_ns()), "Driver": "local", "Labels": labels,
                  "Mountpoint": str(mountpoint), "Name": name, "Options": {}, "Scope": "local"}
        # Claimed before the first await: a concurrent create of the same name finds it.
        self._volumes[name] = volume
        try:
            # The directory, then the record with its event (rule 3): a crash in
            # between leaves an empty directory, never a volume without one.
            await trio.to_thread.run_sync(partial(mountpoint.mkdir, mode=0o755, parents=True, exist_ok=True))
            await self.bus.publish("volume", "create", name, {"driver": "local"}, writes=[volume_put(name, volume)])
        except BaseException:
            self._volumes.pop(name, None)
            raise
        return volume

    def volume_list(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """docker volume ls (GET /volumes): {"Volumes": [...], "Warnings": []}, sorted by name.

        Args:
            filters: name (regex, searched), label (key or key=value; all must hold),
                dangling (true/false: used by no container), driver.

        Raises:
            InvalidRequest: an unknown key or a bad dangling value.
        """
        flt = normalize_filters(filters, VOLUME_FILTERS)
        dangling = None
        for value in flt.get("dangling", []):
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidRequest(f"invalid filter 'dangling={value}'")
            dangling = value.lower() in ("true", "1")
        out = []
        for name, v in sorted(self._volumes.items()):
            if flt.get("name") and not any(_search(pattern, name, "name") for pattern in flt["name"]):
                continue
            if flt.get("driver") and v["Driver"] not in flt["driver"]:
                continue
            if not labels_match(v.get("Labels") or {}, flt.get("label", [])):
                continue
            if dangling is not None and dangling != (not self._volume_users(name)):
                continue
            out.append(dict(v))
        return {"Volumes": out, "Warnings": []}

    def volume_inspect(self, name: str) -> dict[str, Any]:
        """docker volume inspect (GET /volumes/{name}). Raises NoSuchVolume."""
        if name not in self._volumes:
            raise NoSuchVolume(f"get {name}: no such volume")
        return dict(self._volumes[name])

    async def volume_remove(self, name: str, *, force: bool = False) -> None:
        """docker volume rm (DELETE /volumes/{name}).

        Raises:
            NoSuchVolume: unless ``force``. Conflict: a container (any state) or a create in
            flight uses it; ``force`` does not override that (moby neither).
        """
        if name not in self._volumes:
            if force:
                return
            raise NoSuchVolume(f"get {name}: no such volume")
        users = self._volume_users(name)
        if users or self._volumes_pending[name]:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        await self._drop_volume(name)

    async def _drop_volume(self, name: str) -> None:
        if self._volumes.pop(name, None) is None:
            return
        vdir = self._volume_dir(name)
        # The record goes first, with its event: a crash half way leaves a stray directory, never a
        # volume without one.
        await self.bus.publish("volume", "destroy", name, {"driver": "local"}, writes=[volume_delete(name)])
        await trio.to_thread.run_sync(partial(shutil.rmtree, vdir, ignore_errors=True))

    async def _publish_volume_mounts(self, e: Entry, action: str) -> None:
        for m in e.mounts:
            if m["Type"] == "volume":
                await self.bus.publish("volume", action, m["Name"], {
                    "driver": "local", "container": e.sup.id, "destination": m["Destination"],
                    "read/write": "true" if m["RW"] else "false", "propagation": ""})

    # --- system ----------------------------------------------------------------------------

    async def system_info(self) -> dict[str, Any]:
        """docker info (GET /info), in Docker's field names."""
        counts = Counter(e.status for e in self._containers.values())
        images = await trio.to_thread.run_sync(self.images.list)
        host = await trio.to_thread.run_sync(_host_facts, self.data_root)
        # moby counts by state string: restarting ones are neither running nor paused.
        return {
            "ID": host["ID"], "Name": host["Name"], "Containers": len(self._containers),
            "ContainersRunning": counts["running"], "ContainersPaused": counts["paused"],
            "ContainersStopped": len(self._containers) - counts["running"] - counts["paused"],
            "Images": len(images), "Volumes": len(self._volumes), "Driver": "overlay2",
            "DockerRootDir": str(self.data_root), "CgroupDriver": "cgroupfs",
            "CgroupVersion": host["CgroupVersion"], "KernelVersion": host["KernelVersion"],
            "OperatingSystem": host["OperatingSystem"], "OSType": "linux", "Architecture": platform.machine(),
            "NCPU": host["NCPU"], "MemTotal": host["MemTotal"], "ServerVersion": server_version(),
            "CgroupParent": self.cgroup_parent, "LiveRestoreEnabled": self.live_restore,
        }

    def system_version(self) -> dict[str, Any]:
        """docker version's server half (GET /version)."""
        uname = os.uname()
        return {
            "Platform": {"Name": "corral"}, "Version": server_version(), "ApiVersion": API_VERSION,
            # SPEC: only the 1.41 shapes are answered, so that is also the minimum.
            "MinAPIVersion": API_VERSION, "Os": "linux", "Arch": go_arch(uname.machine),
            "KernelVersion": uname.release, "PythonVersion": platform.python_version(),
            "Components": [{"Name": "Engine", "Version": server_version(),
                            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": API_VERSION}}],
        }

    # --- persistence, events, daemon life -----------------------------------------------

    async def _publish(self, action: str, sup: Supervised, attributes: dict[str, str], *,
                       entry: Entry | None = None) -> None:
        """Journal a container event, with the record it changes in the same transaction (rule 3).

        ``entry``: the container when it is no longer in ``_containers`` (destroy).
        """
        e = entry or self._containers.get(sup.id)
        if action == "destroy":
            writes = [container_delete(sup.id)]
        elif e is not None and action in _RECORDED_ACTIONS and self._containers.get(sup.id) is e:
            writes = [container_put(_record(e))]
        else:
            writes = []
        labels = {k: str(v) for k, v in ((e.body.get("Labels") or {}) if e else {}).items()}
        attrs = {**labels, "name": sup.name, "image": e.image if e else "", **attributes}
        await self.bus.publish("container", action, sup.id, attrs, writes=writes)
        if action in ("start", "die", "destroy"):
            self.health.container_event(action, sup.id, e)
        if self.metrics is not None:
            self.metrics.observe(action, sup, image=e.image if e else "", labels=labels, attributes=attributes)

    def container_states(self) -> Counter[str]:
        """How many containers are in each state; safe to call from a worker thread (a
        metrics scrape): it reads a snapshot of the records and changes nothing."""
        return Counter(e.status for e in list(self._containers.values()))

    async def _save(self, e: Entry) -> None:
        """Store the record of a change that has no event of its own.

        Through the bus's one writer, so it is ordered with the records that
        ride with events; a removed container is never written back.
        """
        if self._containers.get(e.sup.id) is e:
            await self.bus.publish_many([], writes=[container_put(_record(e))])

    async def restore(self, *, held: dict[str, Held] | None = None, live_restore: bool = False) -> None:
        """Load the records after a (re)start and make the host agree with them.

        ``held``: what the keeper kept of the runs of the daemon before, by
        container id (keeper.py). With ``live_restore``, a container recorded
        running whose init still runs (the keeper's pidfd, or its pid with the
        recorded start time) is re-adopted as it is, output and all (``_adopt``);
        one that exited while no daemon ran is re-adopted too, and its task
        records the exit status the pidfd tells. Without it, or where no init
        is found, the rules below apply.

        The daemon may have died at any step (rule 6; docs/architecture.md,
        "Crash safety"). Nothing of a container runs now, whatever its record
        says: an init spawned before its ``start`` was journaled has no pid in
        the record, but it is in the container's cgroup, so every container's
        cgroup is killed and removed and its root unmounted. Then, by record:

        - running or paused with a pid: the daemon died while it ran. Its init
          is killed (pidfd, start-time check) and its exit status is unknown.
        - running with pid 0: it exited and ``die`` was journaled; the
          policy's answer was not.
        - restarting: ``restart`` was journaled (and counted); it is made now.
        - exited, stopped by the daemon's shutdown: the policy resumes.

        A restart decided here for a container the crash cut short is counted
        and journaled (``restart``, cause ``daemon restart``), so on-failure:N
        never runs more than N restarts in all. A ``--rm`` container whose run
        the crash cut short is removed (moby's restore does the same), and so is
        a build's RUN step container (label ``corral.build=run``). A
        directory under ``containers/`` without a record (a create or a remove
        cut short) is deleted.
        """
        volumes = await trio.to_thread.run_sync(self.store.volumes)
        self._volumes = {v["Name"]: v for v in volumes}
        records = await trio.to_thread.run_sync(self.store.containers)
        held = dict(held or {})
        to_start: list[tuple[Entry, bool]] = []       # (container, count it as a restart)
        to_remove: list[Entry] = []
        to_adopt: list[tuple[Entry, Child, dict[str, int]]] = []
        for r in records:
            e = _entry_from_record(r)
            self._containers[e.sup.id] = e
            status, policy, by_user = r.get("status"), e.sup.policy, e.sup.stopped_by_user
            h = held.pop(e.sup.id, None)
            # A build's RUN step: the build it belonged to died with the daemon (build.py), so it goes.
            build_step = (e.body.get("Labels") or {}).get("corral.build") == "run"
            if live_restore and status in ("running", "paused") and r.get("pid") and not build_step:
                child = await trio.to_thread.run_sync(_adoptable, r, h)
                if child is not None:
                    fds = h.fds if h is not None and h.pid == child.pid else {}
                    if h is not None and not fds:
                        h.close()
                    to_adopt.append((e, child, fds))
                    # The freezer says, not the record: a frozen init that we think runs would
                    # never see the signals of a stop.
                    e.paused = await self.host.is_frozen(e.sup.cgroup)
                    continue
            ended = await trio.to_thread.run_sync(_end_held, h) if h is not None else None
            await trio.to_thread.run_sync(_kill_leftover, r)
            await self._clean_up_after_crash(e)
            if (e.auto_remove and status in ("running", "paused", "restarting")) or build_step:
                to_remove.append(e)
                continue
            if status in ("running", "paused") and r.get("pid"):
                # The keeper kept its pidfd: how it ended is known (exited while we were away,
                # or killed just now), unless the kernel cannot tell.
                if ended is not None and not ended.unknown and h is not None and h.pid == r["pid"]:
                    e.sup.exit_code = ended.exit_code
                    e.sup.error = f"the daemon restarted without --live-restore while the container ran ({ended})"
                else:
                    e.sup.exit_code = ExitStatus().exit_code
                    e.sup.error = "the daemon stopped while the container ran; its exit status is unknown"
                e.sup.finished_at_ns = time.time_ns()
                go = restart_on_daemon_start(policy, stopped_by_user=by_user, was_running=True, exit_code=None,
                                             restart_count=e.sup.restart_count)
                count = True
            elif status in ("running", "paused"):
                go = restart_on_daemon_start(policy, stopped_by_user=by_user, was_running=False,
                                             exit_code=e.sup.exit_code, restart_count=e.sup.restart_count)
                count = True
            elif status == "restarting":
                go, count = not by_user, False
            elif e.stopped_by_daemon:
                # The shutdown stopped a healthy run: resumed, not a retry.
                go = restart_on_daemon_start(policy, stopped_by_user=by_user, was_running=True,
                                             exit_code=e.sup.exit_code)
                count = False
            else:
                continue
            e.sup.status, e.sup.pid = "exited", 0
            await self._save(e)
            if go and not e.sup.parked_reason:
                to_start.append((e, count))
        for h in held.values():           # held for containers without a record: a create cut short
            await trio.to_thread.run_sync(_end_held, h)
        for e in to_remove:
            await self._remove(e, volumes=True)           # --rm takes anonymous volumes too (moby)
        await trio.to_thread.run_sync(_remove_orphan_dirs, self.data_root / "containers", set(self._containers))
        for e, child, fds in to_adopt:
            await self._adopt(e, child, fds)
        for e, count in to_start:
            try:
                if count:
                    e.sup.status = "restarting"
                    e.sup.restart_count += 1
                    await self._publish("restart", e.sup, {"restartCount": str(e.sup.restart_count),
                                                           "cause": "daemon restart", "delay": "0.000"})
                await self._start(e)
            except CorralError:
                pass               # recorded on the container; the daemon goes on

    async def _adopt(self, e: Entry, child: Child, fds: dict[str, int]) -> None:
        """Supervise a container the daemon before started and left running (--live-restore).

        Its root is still mounted and its cgroup still there; its task waits on
        the pidfd and records how it ends as for any run. No event: Docker's
        live restore publishes none either. Output the keeper did not keep
        (no keeper ran, or the stream ended) is not read any more.
        """
        e.mounted = True
        streams = streams_of(e.sup)
        streams.configure(e.body, e.sup.config)
        try:
            capture = streams.adopt_run(e.sup.log_path, e.sup.log_config, fds)
        except OSError as exc:
            log.warning("container %s: cannot reopen its log (%s); its output is dropped", e.sup.id[:12], exc)
            capture = None
        if not fds and not process_exited(child.pidfd):
            log.warning("container %s: re-adopted without its output (no keeper held it)", e.sup.id[:12])
        await self._nursery.start(partial(self._run, e, adopted=Adopted(child, capture)))
        self.health.container_event("start", e.sup.id, e)
        if self.metrics is not None:
            labels = {k: str(v) for k, v in (e.body.get("Labels") or {}).items()}
            self.metrics.observe("start", e.sup, image=e.image, labels=labels, attributes={})
        log.info("container %s re-adopted (pid %d)", e.sup.id[:12], child.pid)

    async def _clean_up_after_crash(self, e: Entry) -> None:
        """No process, cgroup or root mount of ``e`` is left from a daemon that died."""
        try:
            await self.host.remove_cgroup(e.sup.cgroup)
        except HostError as exc:      # logged; the next start makes the cgroup afresh or fails visibly
            log.warning("container %s: %s", e.sup.id[:12], exc)
        await trio.to_thread.run_sync(_unmount_quietly, e.dir / "rootfs")

    async def shutdown(self, *, live_restore: bool = False) -> None:
        """Stop every container (stop signal, grace, SIGKILL) in parallel; with ``live_restore``
        leave them running for the next daemon (task.py rule 6)."""
        async with trio.open_nursery() as nursery:
            for e in list(self._containers.values()):
                if e.running:
                    nursery.start_soon(self._detach if live_restore else self._stop_for_shutdown, e)

    async def _detach(self, e: Entry) -> None:
        e.sup.detaching = True
        e.scope.cancel()
        await e.done.wait()

    async def _stop_for_shutdown(self, e: Entry) -> None:
        # Not the user's doing: the policy still applies when the daemon comes back.
        e.stopped_by_daemon = True
        if e.paused:
            await self.host.freeze(e.sup.cgroup, False)
        e.scope.cancel()
        await e.done.wait()


# --- filters, mounts, ps: pure helpers (tests/unit/supervisor/test_engine_helpers.py) ---------

def normalize_filters(filters: Any, accepted: frozenset[str], *,
                      not_yet: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Docker's filter argument -> ``{key: [values]}``.

    Accepts ``{"status": ["exited"]}`` and the map form older clients send,
    ``{"status": {"exited": true}}``; ``None`` is no filter.

    Raises:
        InvalidRequest: not an object, a non-string value, or a key outside ``accepted``
            (moby's message: ``invalid filter 'key'``; keys Docker has and we lack say so).
    """
    if not filters:
        return {}
    if not isinstance(filters, dict):
        raise InvalidRequest("filters: must be an object of key -> list of values")
    out: dict[str, list[str]] = {}
    for key, values in filters.items():
        if key not in accepted:
            if key in not_yet:
                raise InvalidRequest(f"filter '{key}' is not supported yet")
            raise InvalidRequest(f"invalid filter '{key}'")
        if isinstance(values, dict):
            values = [v for v, on in values.items() if on]
        elif isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidRequest(f"filters: values of '{key}' must be strings")
        if values:
            out[key] = list(values)
    return out


def labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    """moby's MatchKVList: every ``key`` or ``key=value`` in ``wanted`` holds (AND, not OR)."""
    for want in wanted:
        key, sep, value = want.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _search(pattern: str, text: str, key: str) -> bool:
    """moby's filter Match: the value is a regular expression searched anywhere in the text."""
    try:
        return re.search(pattern, text) is not None
    except re.error as exc:
        # SPEC: moby treats a bad pattern as no match; an error tells the user why nothing matched.
        raise InvalidRequest(f"invalid filter '{key}={pattern}': {exc}") from None


def container_matches(summary: dict[str, Any], filters: dict[str, list[str]], *, exit_code: int | None = None,
                      ancestor_ids: set[str] | None = None) -> bool:
    """Whether a ``container_list`` row passes normalized ``filters`` (rule 5 of this module).

    Args:
        summary: the row (Id, Names, State, Labels, ImageID, Mounts).
        exit_code: the exit status, only for an exited container (``exited=`` matches no other).
        ancestor_ids: image ids the ``ancestor`` values name (resolved by the caller; the
            value may also be the row's image id or a prefix of it).

    Raises:
        InvalidRequest: a bad ``name`` pattern or a non-numeric ``exited`` value.
    """
    if "status" in filters and summary["State"] not in filters["status"]:
        return False
    if "id" in filters and not any(summary["Id"].startswith(v) for v in filters["id"]):
        # SPEC: moby searches the id with a regex; a prefix is what users type and never surprises.
        return False
    if "name" in filters and not any(_search(v, n, "name") for v in filters["name"] for n in summary["Names"]):
        return False
    if not labels_match(summary.get("Labels") or {}, filters.get("label", [])):
        return False
    if "exited" in filters:
        codes = set()
        for v in filters["exited"]:
            if not v.lstrip("-").isdigit():
                raise InvalidRequest(f"invalid filter 'exited={v}'")
            codes.add(int(v))
        if exit_code is None or exit_code not in codes:
            return False
    if "ancestor" in filters:
        image_id = summary["ImageID"]
        bare = image_id.removeprefix("sha256:")
        by_id = any(v.removeprefix("sha256:") and bare.startswith(v.removeprefix("sha256:")) for v in filters["ancestor"])
        if not by_id and image_id not in (ancestor_ids or set()):
            return False
    if "volume" in filters:
        mounts = summary.get("Mounts") or []
        if not any(v in (m.get("Name"), m.get("Destination")) for v in filters["volume"] for m in mounts):
            return False
    return True


def plan_mounts(binds: Any, volumes: Any) -> list[dict[str, Any]]:
    """``HostConfig.Binds`` and ``Config.Volumes`` -> Docker MountPoint objects, in mount order.

    A bind source without a leading "/" names a volume. A ``Config.Volumes``
    destination not covered by a bind gets an anonymous volume: ``Name`` is ""
    until the Engine picks one. Volume ``Source`` is filled in by the Engine.

    Raises:
        InvalidRequest: a malformed bind, a bad volume name.
    """
    if binds is not None and (not isinstance(binds, list) or not all(isinstance(b, str) for b in binds)):
        raise InvalidRequest("HostConfig.Binds: must be a list of strings")
    if volumes is not None and not isinstance(volumes, dict):
        raise InvalidRequest("Volumes: must be an object of container path -> {}")
    mounts = []
    for i, spec in enumerate(binds or []):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
            raise InvalidRequest(f"HostConfig.Binds[{i}]: invalid bind {spec!r} "
                                 f"(use /host/path:/container/path[:ro] or volume:/container/path[:ro])")
        source, destination, mode = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
        rw = "ro" not in mode.split(",")
        if source.startswith("/"):
            mounts.append({"Type": "bind", "Source": source, "Destination": destination, "Mode": mode,
                           "RW": rw, "Propagation": "rprivate"})
        else:
            _check_volume_name(source)
            mounts.append({"Type": "volume", "Name": source, "Source": "", "Destination": destination,
                           "Driver": "local", "Mode": mode, "RW": rw, "Propagation": ""})
    taken = {m["Destination"] for m in mounts}
    for destination in volumes or {}:
        if not isinstance(destination, str) or not destination.startswith("/"):
            raise InvalidRequest(f"Volumes: {destination!r} is not an absolute path")
        if destination not in taken:
            mounts.append({"Type": "volume", "Name": "", "Source": "", "Destination": destination,
                           "Driver": "local", "Mode": "", "RW": True, "Propagation": ""})
    return mounts


def _bind_text(m: dict[str, Any]) -> str:
    """A planned mount as the ``/host:/ctr[:mode]`` bind runtime_config reads."""
    return f"{m['Source']}:{m['Destination']}" + (f":{m['Mode']}" if m["Mode"] else "")


def _check_volume_name(name: str) -> None:
    if not _VOLUME_NAME.match(name):
        raise InvalidRequest(f'create {name}: "{name}" includes invalid characters for a local volume name, '
                             f'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                             f'directory, use absolute path')


def parse_ps_output(text: str, pids: list[int]) -> tuple[list[str], list[list[str]]]:
    """``ps`` output -> (titles, rows of the processes in ``pids``).

    The header gives the columns; the last column (the command) may hold
    spaces, so a row is split into at most as many fields as there are titles.

    Raises:
        ValueError: no header, or no PID column to match rows by (e.g. ``-o comm``).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("ps printed nothing")
    titles = lines[0].split()
    if "PID" not in titles:
        raise ValueError("ps output has no PID column (with -o, include pid)")
    at = titles.index("PID")
    wanted = {str(p) for p in pids}
    rows = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > at and fields[at] in wanted:
            rows.append(fields)
    return titles, rows


def _credentials(auth: dict[str, str] | None) -> registry.Credentials | None:
    if not auth:
        return None
    if not isinstance(auth.get("username"), str) or not isinstance(auth.get("password"), str):
        raise InvalidRequest("auth: needs username and password strings")
    return registry.Credentials(auth["username"], auth["password"])


def _registry_error(exc: BaseException) -> BaseException:
    """A registry failure as the API error a client gets (the message is the registry's)."""
    if isinstance(exc, CorralError):
        return exc
    if isinstance(exc, (DistributionError, ImageFormatError)):
        return InvalidRequest(str(exc))
    if isinstance(exc, ImageNotFound):
        return NoSuchImage(str(exc))
    if isinstance(exc, registry.NotFound):
        return NoSuchImage(str(exc))
    if isinstance(exc, registry.Unauthorized):
        return PermissionDenied(str(exc))
    if isinstance(exc, (registry.RegistryError, HostError)):
        return Unavailable(str(exc))
    return exc


def parse_nspid(status: str) -> str:
    """The PID a process has in its own PID namespace: the last field of ``NSpid:`` in
    /proc/PID/status (proc(5)); "-" when the line is missing (a kernel before 4.1)."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            fields = line.split()
            return fields[-1] if len(fields) > 1 else "-"
    return "-"


def with_container_pids(titles: list[str], rows: list[list[str]], *,
                        proc: Path = Path("/proc")) -> tuple[list[str], list[list[str]]]:
    """top's table with a ``CPID`` column after ``PID``: each process's PID inside the container
    (worker thread: reads /proc/PID/status; "-" for a process gone since ps ran)."""
    at = titles.index("PID") + 1
    out = []
    for row in rows:
        try:
            cpid = parse_nspid((proc / row[at - 1] / "status").read_text())
        except OSError:
            cpid = "-"
        out.append([*row[:at], cpid, *row[at:]])
    return [*titles[:at], "CPID", *titles[at:]], out


def _disk_usage(path: Path) -> int:
    """Bytes of the regular files under ``path``, each inode once (worker thread)."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _host_facts(data_root: Path) -> dict[str, Any]:
    """What docker info says about the host (worker thread: files under /proc, /etc, the data root)."""
    try:
        mode = detect_mode(read_mountinfo())
        cgroup_version = "2" if mode is CgroupMode.UNIFIED else "1"
    except Exception:       # noqa: BLE001 - no cgroupfs: info still answers
        cgroup_version = ""
    os_name = "Linux"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    mem_total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    # A daemon id that survives restarts, as moby's engine-id file does.
    id_file = data_root / "engine-id"
    try:
        engine_id = id_file.read_text().strip()
    except FileNotFoundError:
        engine_id = secrets.token_hex(16)
        _write(id_file, engine_id + "\n")
    return {"ID": engine_id, "Name": os.uname().nodename, "CgroupVersion": cgroup_version,
            "KernelVersion": os.uname().release, "OperatingSystem": os_name,
            # Go's runtime.NumCPU, which docker info prints, counts the CPUs we may run on.
            "NCPU": len(os.sched_getaffinity(0)), "MemTotal": mem_total}


def _image_defaults(c) -> dict[str, Any]:
    """An image's ContainerConfig in the create body's field names (what runtime_config reads)."""
    return {"Env": list(c.env), "Cmd": list(c.cmd) if c.cmd is not None else None,
            "Entrypoint": list(c.entrypoint) if c.entrypoint is not None else None,
            "WorkingDir": c.working_dir, "User": c.user}


def _image_summary(image) -> dict[str, Any]:
    return {"Id": image.id, "RepoTags": list(image.repo_tags), "RepoDigests": list(image.repo_digests),
            "Created": image.created, "Size": image.size, "Labels": dict(image.config.labels) or None}


def _reference_matches(pattern: str, tag: str) -> bool:
    """moby's reference filter: a path glob on ``repo:tag``, or on ``repo`` alone when the pattern has no tag."""
    repo = tag.rpartition(":")[0]
    return fnmatch.fnmatchcase(tag, pattern) or (":" not in pattern.rpartition("/")[2]
                                                 and fnmatch.fnmatchcase(repo, pattern))


def _epoch_s(created: Any) -> int:
    """An RFC 3339 ``created`` as Unix seconds (0 when absent or unreadable)."""
    if not isinstance(created, str):
        return 0
    try:
        return int(datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", created.replace("Z", "+00:00")))
                   .timestamp())
    except ValueError:
        return 0


def image_inspect_document(image) -> dict[str, Any]:
    """A ``runtime.images.Image`` as Docker's image inspect answers it (the fields corral has).

    Absent values are ``null`` as in Docker's JSON (an imported image without
    ``--change`` has ``"Cmd": null``), so clients can tell "unset" from "empty".
    """
    c = image.config
    config: dict[str, Any] = {
        "User": c.user, "Env": list(c.env) or None,
        "Cmd": list(c.cmd) if c.cmd is not None else None,
        "Entrypoint": list(c.entrypoint) if c.entrypoint is not None else None,
        "WorkingDir": c.working_dir, "Labels": dict(c.labels) or None,
        "ExposedPorts": {p: {} for p in c.exposed_ports} or None,
        "Volumes": {v: {} for v in c.volumes} or None,
    }
    if c.stop_signal:
        config["StopSignal"] = c.stop_signal            # omitempty in moby
    for key in ("Healthcheck", "OnBuild", "Shell"):     # kept raw in extra (build writes them)
        if c.extra.get(key) is not None:
            config[key] = c.extra[key]
    ic = image.image_config
    history = ic.history[-1] if ic.history else {}
    doc = {
        "Id": image.id, "RepoTags": list(image.repo_tags), "RepoDigests": list(image.repo_digests), "Parent": image.parent,
        "Comment": history.get("comment", ""), "Created": image.created or "", "DockerVersion": "",
        "Container": ic.extra.get("container", ""),
        "Author": ic.author, "Config": config, "Architecture": ic.architecture, "Os": ic.os,
        "Size": image.size,
        # overlay2's names; lower dirs topmost first, as overlayfs takes them.
        "GraphDriver": {"Name": "overlay2",
                        "Data": {"LowerDir": ":".join(str(d) for d in reversed(image.layer_dirs))}},
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
    }
    if ic.variant:
        doc["Variant"] = ic.variant
    return doc


def _familiar(reference: str) -> str:
    """``busybox`` -> ``busybox:latest``; a bad reference is the caller's error."""
    try:
        return parse_reference(reference).familiar
    except ImageFormatError as exc:
        raise InvalidRequest(str(exc)) from None


def _names_tag_of(ref: str, image) -> str | None:
    """The tag (familiar form) ``ref`` names when it is one of ``image``'s tags; None for an id or prefix."""
    try:
        familiar = parse_reference(ref).familiar
    except ImageFormatError:
        return None
    return familiar if familiar in image.repo_tags else None


# docker import --change: the Dockerfile instructions moby's import accepts that corral's image
# config can hold (HEALTHCHECK and ONBUILD are not modelled).
IMPORT_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def parse_changes(changes: list[str], base: ContainerConfig | None = None) -> ContainerConfig:
    """``docker import --change`` instructions applied in order to ``base`` (empty by default).

    Dockerfile forms: ``CMD ["cat", "/f"]`` (JSON) or ``CMD cat /f`` (shell form:
    ``/bin/sh -c``), same for ENTRYPOINT; ``ENV k=v k2="v 2"`` or ``ENV k v``; ``LABEL k=v``;
    ``WORKDIR`` relative to the previous one; ``EXPOSE 80 53/udp``; ``VOLUME ["/a"]`` or ``/a /b``.
    SPEC: no ``$VAR`` substitution, and quoting is shell-like (shlex), close to but not
    exactly the Dockerfile parser's.

    Raises:
        InvalidRequest: an instruction outside ``IMPORT_CHANGES`` (moby's message) or a malformed one.
    """
    if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
        raise InvalidRequest("changes: must be a list of strings")
    c = base or ContainerConfig()
    for change in changes:
        instruction, _, rest = change.strip().partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction not in IMPORT_CHANGES:
            raise InvalidRequest(f"{instruction or change!r} is not a valid change command")
        if not rest:
            raise InvalidRequest(f"{instruction} requires at least one argument")
        if instruction in ("CMD", "ENTRYPOINT"):
            args = _json_form(rest)
            value = tuple(args) if args is not None else ("/bin/sh", "-c", rest)
            c = replace(c, cmd=value) if instruction == "CMD" else replace(c, entrypoint=value)
        elif instruction in ("ENV", "LABEL"):
            pairs = _key_values(instruction, rest)
            if instruction == "ENV":
                env = [e for e in c.env if e.partition("=")[0] not in dict(pairs)]
                c = replace(c, env=tuple(env + [f"{k}={v}" for k, v in pairs]))
            else:
                c = replace(c, labels={**c.labels, **dict(pairs)})
        elif instruction == "WORKDIR":
            c = replace(c, working_dir=posixpath.normpath(posixpath.join("/", c.working_dir, rest)))
        elif instruction == "USER":
            c = replace(c, user=rest)
        elif instruction == "STOPSIGNAL":
            c = replace(c, stop_signal=rest)
        elif instruction == "EXPOSE":
            ports = [p if "/" in p else f"{p}/tcp" for p in _words(instruction, rest)]
            c = replace(c, exposed_ports=tuple(sorted({*c.exposed_ports, *ports})))
        else:                                        # VOLUME
            paths = _json_form(rest) or _words(instruction, rest)
            c = replace(c, volumes=tuple(sorted({*c.volumes, *paths})))
    return c


def _json_form(text: str) -> list[str] | None:
    """The exec (JSON array of strings) form of an instruction's argument, or None for shell form."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None                    # as Dockerfile: not valid JSON means shell form
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _words(instruction: str, text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise InvalidRequest(f"{instruction} {text}: {exc}") from None


def _key_values(instruction: str, text: str) -> list[tuple[str, str]]:
    """``k=v k2="v 2"``, or the legacy ``k value with spaces`` (one pair)."""
    words = _words(instruction, text)
    if "=" not in words[0]:
        if len(words) < 2:
            raise InvalidRequest(f"{instruction} {text}: needs a value (KEY=VALUE or KEY VALUE)")
        # Legacy form: the value is the rest of the line, quotes removed.
        return [(words[0], " ".join(words[1:]))]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"{instruction} {text}: {word!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _record(e: Entry) -> dict[str, Any]:
    s = e.sup
    return {
        "id": s.id, "name": s.name, "config": s.config, "bundle": s.bundle, "cgroup": s.cgroup,
        "policy": str(s.policy), "stop_signal": s.stop_signal, "stop_timeout_s": s.stop_timeout_s,
        "log_path": s.log_path, "status": _record_status(e), "pid": s.pid,
        "start_time": _start_time(s.pid) if s.pid else 0,
        "exit_code": s.exit_code, "oom_killed": s.oom_killed, "restart_count": s.restart_count,
        "started_at_ns": s.started_at_ns, "finished_at_ns": s.finished_at_ns,
        "stopped_by_user": s.stopped_by_user, "parked_reason": s.parked_reason, "error": s.error,
        "body": e.body, "image": e.image, "image_id": e.image_id, "created_ns": e.created_ns,
        "dir": str(e.dir), "auto_remove": e.auto_remove, "mounts": e.mounts,
        "ran": e.cgroup_may_exist,           # the key's name from before the end of a run cleared it
        "stopped_by_daemon": e.stopped_by_daemon,
        "resources": s.config["linux"].get("resources", {}),
    }


def _entry_from_record(r: dict[str, Any]) -> Entry:
    sup = Supervised(
        id=r["id"], name=r["name"], config=r["config"], bundle=r["bundle"], cgroup=r["cgroup"],
        resources=resources_from_oci(r.get("resources") or {}), policy=parse_restart_policy(r["policy"]),
        stop_signal=r["stop_signal"], stop_timeout_s=r["stop_timeout_s"],
        # Derived, not read back: records older than the json-file logs name output.log.
        log_path=log_path_for(r["dir"], log_config_of(r["body"], strict=False)),
        log_config=log_config_of(r["body"], strict=False),
        status="created" if r["status"] == "created" else "exited", exit_code=r["exit_code"],
        oom_killed=r["oom_killed"], restart_count=r["restart_count"], started_at_ns=r["started_at_ns"],
        finished_at_ns=r["finished_at_ns"], stopped_by_user=r["stopped_by_user"],
        parked_reason=r["parked_reason"], error=r["error"],
    )
    return Entry(sup, r["body"], r["image"], r["image_id"], r["created_ns"], Path(r["dir"]),
                 auto_remove=r["auto_remove"], mounts=r.get("mounts") or [], cgroup_may_exist=r.get("ran", True),
                 stopped_by_daemon=r.get("stopped_by_daemon", False))


def _record_status(e: Entry) -> str:
    """The status a record stores: the task's own (``Entry.status`` says "running" until
    ``done`` is set, which comes after the last write of a run)."""
    if e.sup.status == "running" and e.paused:
        return "paused"
    return e.sup.status


def _start_time(pid: int) -> int:
    from runtime.spawn import read_start_time
    return read_start_time(pid) or 0


def _kill_leftover(r: dict[str, Any]) -> None:
    """The init of a container the dead daemon ran, if it still lives: SIGKILL through a pidfd."""
    if not r.get("pid") or not r.get("start_time"):
        return
    pidfd = open_pidfd(r["pid"], r["start_time"])
    if pidfd is None:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def _adoptable(r: dict[str, Any], h: Held | None) -> Child | None:
    """The init of a container recorded running, to re-adopt: the keeper's pidfd when it holds this
    run (whether it still runs or ended while no daemon ran), else the recorded pid if that
    process, by its start time, still runs. None: nothing to adopt (worker thread)."""
    if h is not None and h.pid == r["pid"] and "pidfd" in h.fds:
        return Child(h.pid, h.fds.pop("pidfd"), adopted=True)      # h.fds: the output, for adopt_run
    pidfd = open_pidfd(r["pid"], r.get("start_time") or 0) if r.get("start_time") else None
    return Child(r["pid"], pidfd, adopted=True) if pidfd is not None else None


def _end_held(h: Held) -> ExitStatus | None:
    """What the keeper held for a run that is not re-adopted: SIGKILL it if it still runs. How it
    ended: killed by us, or what its pidfd tells once its new parent reaped it (None before,
    never waited for). Closes the fds (worker thread)."""
    try:
        pidfd = h.fds.get("pidfd")
        if pidfd is None:
            return None
        if not process_exited(pidfd):
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                return ExitStatus(signal=signal.SIGKILL)
            except ProcessLookupError:
                pass
        return reaped_status(pidfd)
    finally:
        h.close()


def _unmount_quietly(target: Path) -> None:
    try:
        overlay.unmount(target, detach=True)
    except Exception:     # noqa: BLE001 - not mounted is the common case
        pass


def _remove_dir(cdir: Path) -> None:
    """A container's directory, its root unmounted first so the delete never walks an overlay."""
    _unmount_quietly(cdir / "rootfs")
    shutil.rmtree(cdir, ignore_errors=True)


def _remove_orphan_dirs(containers: Path, known: set[str]) -> None:
    """Delete ``containers/<id>`` dirs with no record: a create or remove the daemon died in (worker thread)."""
    try:
        names = os.listdir(containers)
    except FileNotFoundError:
        return
    for name in names:
        if name not in known and _CONTAINER_ID.match(name):
            log.info("container %s: deleting its directory, which has no record", name[:12])
            _remove_dir(containers / name)


def _top_file(layers: list[Path], rel: str) -> str:
    for layer in reversed(layers):
        path = layer / rel
        if path.is_file():
            try:
                return path.read_text(errors="replace")
            except OSError:
                return ""
    return ""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _restart_text(policy: Any) -> str:
    if not policy:
        return "no"
    if not isinstance(policy, dict):
        raise InvalidRequest("HostConfig.RestartPolicy: must be an object")
    name = policy.get("Name") or "no"
    count = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{count}" if name == "on-failure" and count else name


def _signal_number(value: str | int) -> int:
    if isinstance(value, int) or str(value).isdigit():
        number = int(value)
        if 0 < number < signal.NSIG:
            return number
        raise InvalidRequest(f"invalid signal: {value}")
    name = str(value).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return signal.Signals[name].value
    except KeyError:
        raise InvalidRequest(f"invalid signal: {value}") from None


def _rfc3339(ns: int) -> str:
    if not ns:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def _rfc3339_seconds(ns: int) -> str:
    """Whole seconds, UTC: the CreatedAt of a Docker volume."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


def _status_text(e: Entry) -> str:
    """docker ps STATUS: "Up 3 minutes", "Exited (0) 2 seconds ago", "Created"."""
    s = e.sup
    if e.status == "created":
        return "Created"
    if e.status in ("running", "paused"):
        return f"Up {human_duration(time.time_ns() - s.started_at_ns)}" + (" (Paused)" if e.paused else "")
    if e.status == "restarting":
        return f"Restarting ({s.exit_code}) {human_duration(time.time_ns() - s.finished_at_ns)} ago"
    return f"Exited ({s.exit_code}) {human_duration(time.time_ns() - s.finished_at_ns)} ago"
