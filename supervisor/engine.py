"""The Engine: corral's one service API. Every front end (RPC, CLI, Docker HTTP) calls it.

Rules:

1. Options are Docker's create body (``Config`` fields with ``HostConfig``
   inside), and answers are shaped like Docker's, so the Docker API maps onto
   these methods one to one.
2. The Engine owns the records; each running container's process belongs to
   its task (``task.supervise``), started in the Engine's nursery with a
   cancel scope of its own. Stop = mark "stopped by the user", cancel, wait.
3. Every change is persisted (``StateStore``) and published (``EventBus``);
   the event follows the write, so a subscriber never hears of a state that a
   crash could take back.
4. Blocking work (mounts, files, SQLite) runs in worker threads; nothing here
   blocks the event loop.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from protocols.container_config import InvalidContainerConfig, runtime_config
from runtime import overlay
from runtime.cgroups import resources_from_oci
from runtime.images import ImageError, ImageNotFound
from runtime.spawn import open_pidfd

from ._host import Host
from .errors import Conflict, CorralError, InvalidRequest, NameInUse, NoSuchContainer, NoSuchImage, StartFailed
from .events import EventBus
from .restart import parse_restart_policy, restart_on_daemon_start
from .state import StateStore
from .task import Supervised, supervise

_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")      # moby's validContainerNamePattern
_STOPPING_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_ADJECTIVES = ("brave", "calm", "eager", "fond", "keen", "lucid", "quiet", "sharp", "sunny", "witty")
_NOUNS = ("ada", "babbage", "curie", "dijkstra", "euler", "gauss", "hopper", "knuth", "lovelace", "turing")


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


class Engine:
    def __init__(self, *, data_root: Path, host: Host, bus: EventBus, store: StateStore, images,
                 nursery: trio.Nursery, cgroup_parent: str = "corral", privileged_caps: list[str],
                 cgroup_namespace: bool = False) -> None:
        self.data_root = data_root
        self.host = host
        self.bus = bus
        self.store = store
        self.images = images
        self._nursery = nursery
        self.cgroup_parent = cgroup_parent
        self.privileged_caps = privileged_caps
        self.cgroup_namespace = cgroup_namespace
        self._containers: dict[str, Entry] = {}
        (data_root / "containers").mkdir(parents=True, exist_ok=True)

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
        image_ref = body.get("Image")
        if not image_ref or not isinstance(image_ref, str):
            raise InvalidRequest("Image: required")
        image = await trio.to_thread.run_sync(self._find_image, image_ref)
        cid = secrets.token_hex(32)
        cdir = self.data_root / "containers" / cid
        host_config = body.get("HostConfig") or {}
        try:
            policy = parse_restart_policy(_restart_text(host_config.get("RestartPolicy")))
            if policy.name != "no" and host_config.get("AutoRemove"):
                raise InvalidRequest("conflicting options: cannot combine --restart and --rm")
            config = await trio.to_thread.run_sync(self._prepare_dir, cid, cdir, body, image)
            resources = resources_from_oci(config["linux"]["resources"])
        except (InvalidContainerConfig, ValueError) as exc:
            shutil.rmtree(cdir, ignore_errors=True)
            raise InvalidRequest(str(exc)) from None
        except BaseException:
            shutil.rmtree(cdir, ignore_errors=True)
            raise
        sup = Supervised(
            id=cid, name=name, config=config, bundle=str(cdir), cgroup=config["linux"]["cgroupsPath"],
            resources=resources, policy=policy,
            stop_signal=_signal_number(body.get("StopSignal") or image.config.stop_signal or "SIGTERM"),
            stop_timeout_s=float(body["StopTimeout"]) if body.get("StopTimeout") is not None else 10.0,
            log_path=str(cdir / "output.log"),
        )
        entry = Entry(sup, body, image_ref, image.id, time.time_ns(), cdir, auto_remove=bool(host_config.get("AutoRemove")))
        self._containers[cid] = entry
        await self._save(entry)
        await self._publish("create", sup, {})
        return {"Id": cid, "Warnings": []}

    def _new_name(self, name: str | None) -> str:
        if name:
            if not _NAME.match(name):
                raise InvalidRequest(f"invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
            name = name.lstrip("/")
            if any(e.sup.name == name for e in self._containers.values()):
                raise NameInUse(f'the container name "/{name}" is already in use')
            return name
        taken = {e.sup.name for e in self._containers.values()}
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
        try:
            await self._nursery.start(self._run, e)
        except CorralError:
            raise
        except Exception as exc:          # SpawnError, MountError, CgroupError: the start failed
            await self._save(e)
            raise StartFailed(str(exc), exit_code=getattr(exc, "exit_code", 1) or 1) from None
        return True

    async def _run(self, e: Entry, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        e.done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                e.scope = scope
                if not e.mounted:
                    await trio.to_thread.run_sync(self._mount, e)
                await supervise(e.sup, self.host, self._publish, task_status=task_status)
        finally:
            with trio.CancelScope(shield=True):
                e.scope = None
                e.paused = False
                if e.mounted:
                    await trio.to_thread.run_sync(self._unmount, e)
                await self._save(e)
                e.done.set()
                if e.auto_remove and e.sup.id in self._containers:
                    await self._remove(e)

    def _mount(self, e: Entry) -> None:
        image = self.images.get(e.image_id)
        overlay.mount_container_root(list(reversed(image.rootfs_layers())), e.dir / "upper", e.dir / "work",
                                     e.dir / "rootfs")
        e.mounted = True

    def _unmount(self, e: Entry) -> None:
        overlay.unmount(e.dir / "rootfs")
        e.mounted = False

    async def container_stop(self, ref: str, *, timeout_s: float | None = None) -> bool:
        """docker stop: the stop signal, the grace period, then SIGKILL. False if not running (304)."""
        e = self._get(ref)
        if not e.running:
            return False
        e.sup.stopped_by_user = True
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
        await self._save(e)
        await self._publish("rename", e.sup, {"oldName": "/" + old})

    async def container_remove(self, ref: str, *, force: bool = False) -> None:
        e = self._get(ref)
        if e.running:
            if not force:
                raise Conflict(f"you cannot remove a running container {e.sup.id}. "
                               f"Stop the container before attempting removal or force remove")
            await self.container_stop(e.sup.id, timeout_s=0)
        await self._remove(e)

    async def _remove(self, e: Entry) -> None:
        self._containers.pop(e.sup.id, None)
        await self.host.remove_cgroup(e.sup.cgroup)
        await trio.to_thread.run_sync(lambda: (self.store.delete_container(e.sup.id),
                                               shutil.rmtree(e.dir, ignore_errors=True)))
        await self._publish("destroy", e.sup, {})

    # --- queries -------------------------------------------------------------------

    def container_list(self, *, all: bool = False) -> list[dict[str, Any]]:
        """docker ps: newest first, running only unless ``all``."""
        entries = sorted(self._containers.values(), key=lambda e: e.created_ns, reverse=True)
        return [self._summary(e) for e in entries if all or e.running]

    def _summary(self, e: Entry) -> dict[str, Any]:
        args = e.sup.config["process"]["args"]
        return {
            "Id": e.sup.id, "Names": ["/" + e.sup.name], "Image": e.image, "ImageID": e.image_id,
            "Command": " ".join(args), "Created": e.created_ns // 1_000_000_000,
            "State": e.status, "Status": _status_text(e), "Labels": dict(e.body.get("Labels") or {}),
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
            },
            "RestartCount": s.restart_count,
            "HostConfig": {**(e.body.get("HostConfig") or {}), "RestartPolicy": {
                "Name": s.policy.name, "MaximumRetryCount": s.policy.max_retries}},
            "Config": {"Hostname": s.config["hostname"], "Env": process["env"], "Cmd": e.body.get("Cmd"),
                       "Image": e.image, "Entrypoint": e.body.get("Entrypoint"), "WorkingDir": process["cwd"],
                       "Labels": dict(e.body.get("Labels") or {}), "StopSignal": signal.Signals(s.stop_signal).name},
            "LogPath": s.log_path, "ResolvConfPath": str(e.dir / "resolv.conf"),
            "HostnamePath": str(e.dir / "hostname"), "HostsPath": str(e.dir / "hosts"),
            "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(e.dir / "upper"),
                                                         "WorkDir": str(e.dir / "work"),
                                                         "MergedDir": str(e.dir / "rootfs")}},
        }

    def child_pids(self) -> set[int]:
        """PIDs of the inits our tasks wait on (the orphan reaper leaves them alone)."""
        return {e.sup.child.pid for e in self._containers.values() if e.sup.child is not None}

    # --- images --------------------------------------------------------------------------

    def image_list(self) -> list[dict[str, Any]]:
        """docker images (worker thread)."""
        return [_image_summary(i) for i in self.images.list()]

    async def image_bootstrap(self, name: str = "busybox") -> dict[str, Any]:
        """``corral image bootstrap busybox``: an image from the host's busybox-static."""
        if name != "busybox":
            raise InvalidRequest(f"cannot bootstrap {name!r}: only busybox (from the host's busybox-static)")
        image = await trio.to_thread.run_sync(self.images.bootstrap_busybox)
        await self.bus.publish("image", "import", image.id, {"name": "busybox:latest"})
        return _image_summary(image)

    # --- persistence, events, daemon life -----------------------------------------------

    async def _publish(self, action: str, sup: Supervised, attributes: dict[str, str]) -> None:
        e = self._containers.get(sup.id)
        if e is not None and action in ("start", "die", "restart", "stop", "parked", "oom"):
            await self._save(e)
        attrs = {**{k: str(v) for k, v in ((e.body.get("Labels") or {}) if e else {}).items()},
                 "name": sup.name, "image": e.image if e else "", **attributes}
        await self.bus.publish("container", action, sup.id, attrs)

    async def _save(self, e: Entry) -> None:
        record = _record(e)
        await trio.to_thread.run_sync(self.store.put_container, record)

    async def restore(self) -> None:
        """Load records after a (re)start. A container that was running when the daemon died
        is killed (it cannot be re-adopted yet), recorded as exited, then its policy decides."""
        records = await trio.to_thread.run_sync(self.store.containers)
        to_start = []
        for r in records:
            e = _entry_from_record(r)
            self._containers[e.sup.id] = e
            if r.get("status") in ("running", "restarting", "paused"):
                await trio.to_thread.run_sync(_kill_leftover, r)
                await trio.to_thread.run_sync(_unmount_quietly, e.dir / "rootfs")
                e.sup.status, e.sup.pid = "exited", 0
                e.sup.error = "the daemon stopped while the container ran; its exit status is unknown"
                await self._save(e)
                if restart_on_daemon_start(e.sup.policy, stopped_by_user=e.sup.stopped_by_user,
                                           was_running=True, exit_code=None):
                    to_start.append(e)
        for e in to_start:
            try:
                await self.container_start(e.sup.id)
            except CorralError:
                pass               # recorded on the container; the daemon goes on

    async def shutdown(self) -> None:
        """Stop every container (stop signal, grace, SIGKILL) in parallel."""
        async with trio.open_nursery() as nursery:
            for e in list(self._containers.values()):
                if e.running:
                    nursery.start_soon(self._stop_for_shutdown, e)

    async def _stop_for_shutdown(self, e: Entry) -> None:
        # Not the user's doing: the policy still applies when the daemon comes back.
        if e.paused:
            await self.host.freeze(e.sup.cgroup, False)
        e.scope.cancel()
        await e.done.wait()


def _image_defaults(c) -> dict[str, Any]:
    """An image's ContainerConfig in the create body's field names (what runtime_config reads)."""
    return {"Env": list(c.env), "Cmd": list(c.cmd) if c.cmd is not None else None,
            "Entrypoint": list(c.entrypoint) if c.entrypoint is not None else None,
            "WorkingDir": c.working_dir, "User": c.user}


def _image_summary(image) -> dict[str, Any]:
    return {"Id": image.id, "RepoTags": list(image.repo_tags), "Created": image.created, "Size": image.size}


def _record(e: Entry) -> dict[str, Any]:
    s = e.sup
    return {
        "id": s.id, "name": s.name, "config": s.config, "bundle": s.bundle, "cgroup": s.cgroup,
        "policy": str(s.policy), "stop_signal": s.stop_signal, "stop_timeout_s": s.stop_timeout_s,
        "log_path": s.log_path, "status": e.status, "pid": s.pid,
        "start_time": _start_time(s.pid) if s.pid else 0,
        "exit_code": s.exit_code, "oom_killed": s.oom_killed, "restart_count": s.restart_count,
        "started_at_ns": s.started_at_ns, "finished_at_ns": s.finished_at_ns,
        "stopped_by_user": s.stopped_by_user, "parked_reason": s.parked_reason, "error": s.error,
        "body": e.body, "image": e.image, "image_id": e.image_id, "created_ns": e.created_ns,
        "dir": str(e.dir), "auto_remove": e.auto_remove,
        "resources": s.config["linux"].get("resources", {}),
    }


def _entry_from_record(r: dict[str, Any]) -> Entry:
    sup = Supervised(
        id=r["id"], name=r["name"], config=r["config"], bundle=r["bundle"], cgroup=r["cgroup"],
        resources=resources_from_oci(r.get("resources") or {}), policy=parse_restart_policy(r["policy"]),
        stop_signal=r["stop_signal"], stop_timeout_s=r["stop_timeout_s"], log_path=r["log_path"],
        status="created" if r["status"] == "created" else "exited", exit_code=r["exit_code"],
        oom_killed=r["oom_killed"], restart_count=r["restart_count"], started_at_ns=r["started_at_ns"],
        finished_at_ns=r["finished_at_ns"], stopped_by_user=r["stopped_by_user"],
        parked_reason=r["parked_reason"], error=r["error"],
    )
    return Entry(sup, r["body"], r["image"], r["image_id"], r["created_ns"], Path(r["dir"]),
                 auto_remove=r["auto_remove"])


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


def _unmount_quietly(target: Path) -> None:
    try:
        overlay.unmount(target)
    except Exception:     # noqa: BLE001 - not mounted is the common case
        pass


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


def _status_text(e: Entry) -> str:
    """docker ps STATUS: "Up 3 minutes", "Exited (0) 2 seconds ago", "Created"."""
    s = e.sup
    if e.status == "created":
        return "Created"
    if e.status in ("running", "paused"):
        return f"Up {_human(time.time_ns() - s.started_at_ns)}" + (" (Paused)" if e.paused else "")
    if e.status == "restarting":
        return f"Restarting ({s.exit_code}) {_human(time.time_ns() - s.finished_at_ns)} ago"
    return f"Exited ({s.exit_code}) {_human(time.time_ns() - s.finished_at_ns)} ago"


def _human(ns: int) -> str:
    """go-units HumanDuration, as docker ps prints it."""
    seconds = ns / 1e9
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{int(seconds)} seconds" if int(seconds) != 1 else "1 second"
    minutes = seconds / 60
    if minutes < 60:
        return "About a minute" if int(minutes) == 1 else f"{int(minutes)} minutes"
    hours = minutes / 60
    if hours < 48:
        return "About an hour" if int(hours) == 1 else f"{int(hours)} hours"
    days = hours / 24
    return f"{int(days)} days"
