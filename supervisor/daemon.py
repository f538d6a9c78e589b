"""``corral daemon``: the trio process that owns every container.

Life: become a child subreaper (or be PID 1), open state.db, start the spawner,
restore the containers of a previous run, serve RPC on ``<exec-root>/corral.sock``,
then wait for signals: SIGTERM/SIGINT stop everything gracefully and exit 0;
SIGHUP re-reads the services file (``--services``) and brings the containers to it;
SIGCHLD reaps orphans that landed on us (never our containers' inits: their
tasks reap them through their pidfds).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
import time
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from metrics import SupervisorCollector
from protocols.distribution import DistributionError, check_insecure_entries, parse_remote, repositories
from protocols.events import EventFilter
from runtime import _syscalls
from runtime.caps import held_bounding_set
from runtime.cgroups import CgroupMode, detect_mode, read_mountinfo

from . import attach, registry
from ._host import KeeperLink, open_linux_host
from .config import KEYS, ConfigError, apply_config, given_dests, read_config
from .engine import Engine
from .errors import CorralError, InvalidRequest
from .events import EventBus
from .execs import stream_exec_output
from .journal import Journal
from .keeper import Held, KeeperClient, KeeperError
from .metrics_server import (
    DEFAULT_METRICS_ADDR,
    MetricsHub,
    parse_metrics_addr,
    serve_metrics,
)
from .rpc_server import Methods, serve_unix
from .services import ServiceManager, parse_project, read_project
from .state import StateStore
from .version import server_version

log = logging.getLogger("corral.daemon")
DEFAULT_DATA_ROOT = Path("/var/lib/corral")
DEFAULT_EXEC_ROOT = Path("/run/corral")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corral daemon", description="Run the corral supervisor.")
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help=f"persistent state (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--exec-root", type=Path, default=DEFAULT_EXEC_ROOT, help=f"sockets and run state (default {DEFAULT_EXEC_ROOT})")
    p.add_argument("-H", "--host", action="append", default=[], help="unix://PATH to listen on (repeatable)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--config-file", type=Path, help="TOML file with these settings (keys: the flags' long names)")
    p.add_argument("--cgroup-parent", default="corral", help="cgroup parent of the containers (relative: below ours)")
    p.add_argument("--group", default="corral", help="group allowed on the socket (default corral)")
    p.add_argument("--services", type=Path, help="a Compose file whose services the daemon keeps running")
    p.add_argument("--live-restore", action="store_true",
                   help="containers keep running (and logging) while the daemon is down; the next one re-adopts them")
    p.add_argument("--metrics-addr", default=DEFAULT_METRICS_ADDR,
                   help=f"HOST:PORT serving Prometheus /metrics (default {DEFAULT_METRICS_ADDR}; '' or none: off)")
    p.add_argument("--registry-mirror", action="append", default=[], metavar="URL",
                   help="a mirror tried first for Docker Hub images (repeatable)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]|CIDR",
                   help="a registry reached over plain HTTP or unverified TLS (repeatable; localhost always is)")
    p.add_argument("--metrics-label", action="append", default=[], metavar="LABEL",
                   help="a container label exported as a metric label (repeatable; none by default)")
    return p


def build_methods(engine: Engine, bus: EventBus, services: ServiceManager | None = None) -> Methods:
    """The RPC surface: one method per Engine call (docs/protocol.md lists them)."""
    m = Methods()
    services = services or ServiceManager(engine)

    @m.unary("compose.up")
    async def compose_up(text: str, base_dir: str, env_files: dict | None = None, environ: dict | None = None,
                         project: str | None = None) -> dict:
        parsed = parse_project(text, base_dir=base_dir, env_files=env_files, environ=environ, project=project)
        return {"project": parsed.name, "actions": await services.up(parsed), "warnings": list(parsed.warnings)}

    @m.unary("compose.down")
    async def compose_down(text: str, base_dir: str, env_files: dict | None = None, environ: dict | None = None,
                           project: str | None = None) -> dict:
        parsed = parse_project(text, base_dir=base_dir, env_files=env_files, environ=environ, project=project)
        return {"project": parsed.name, "actions": await services.down(parsed.name)}

    @m.unary("system.ping")
    async def ping() -> str:
        return "OK"

    @m.unary("container.create")
    async def create(body: dict, name: str | None = None) -> dict:
        return await engine.container_create(body, name=name)

    @m.unary("container.start")
    async def start(id: str) -> bool:
        return await engine.container_start(id)

    @m.unary("container.stop")
    async def stop(id: str, timeout: float | None = None) -> bool:
        return await engine.container_stop(id, timeout_s=timeout)

    @m.unary("container.restart")
    async def restart(id: str, timeout: float | None = None) -> None:
        await engine.container_restart(id, timeout_s=timeout)

    @m.unary("container.kill")
    async def kill(id: str, signal: str | int = "SIGKILL") -> None:
        await engine.container_kill(id, signal_name=signal)

    @m.unary("container.wait")
    async def wait(id: str) -> dict:
        return await engine.container_wait(id)

    @m.unary("container.remove")
    async def remove(id: str, force: bool = False, volumes: bool = False) -> None:
        await engine.container_remove(id, force=force, volumes=volumes)

    @m.unary("container.prune")
    async def prune(filters: dict | None = None) -> dict:
        return await engine.container_prune(filters)

    @m.unary("container.top")
    async def top(id: str, ps_args: str = "-ef") -> dict:
        return await engine.container_top(id, ps_args)

    # cp, export, diff, stats (supervisor/files.py, supervisor/stats.py). Bulk bytes are
    # pulled with transfer.read / pushed with transfer.write, a chunk per call (files.py rule 3).
    @m.unary("container.archive_stat")
    async def archive_stat(id: str, path: str) -> dict:
        return await engine.container_archive_stat(id, path)

    @m.unary("container.archive_get")
    async def archive_get(id: str, path: str) -> dict:
        stat, tar = await engine.container_archive_get(id, path)
        return {"stat": stat, "transfer": engine.files.open_download(tar)}

    @m.unary("container.archive_put")
    async def archive_put(id: str, path: str, transfer: str, no_overwrite_dir_non_dir: bool = True,
                          copy_uid_gid: bool = False) -> None:
        with engine.files.take_upload(transfer) as tar:
            await engine.container_archive_put(id, path, tar, no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                                               copy_uid_gid=copy_uid_gid)

    @m.unary("container.export")
    async def export(id: str) -> dict:
        tar = await engine.container_export(id)
        return {"transfer": engine.files.open_download(tar)}

    @m.unary("container.changes")
    async def changes(id: str) -> list:
        return await engine.container_changes(id)

    @m.stream("container.stats")
    async def stats(id: str, stream: bool = True):
        async with aclosing(engine.container_stats(id, stream=stream)) as docs:
            async for doc in docs:
                yield doc

    @m.unary("transfer.read")
    async def transfer_read(transfer: str, size: int = 1 << 20) -> bytes:
        return await engine.files.read(transfer, size)

    @m.unary("transfer.write")
    async def transfer_write(data: bytes, transfer: str | None = None) -> str:
        return await engine.files.write(data, transfer)

    @m.unary("transfer.close")
    async def transfer_close(transfer: str) -> None:
        await engine.files.close_transfer(transfer)

    @m.unary("container.pause")
    async def pause(id: str) -> None:
        await engine.container_pause(id)

    @m.unary("container.unpause")
    async def unpause(id: str) -> None:
        await engine.container_unpause(id)

    @m.unary("container.rename")
    async def rename(id: str, name: str) -> None:
        await engine.container_rename(id, name)

    @m.unary("container.list")
    async def list_(all: bool = False, filters: dict | None = None, limit: int = 0) -> list:
        return await engine.container_list(all=all, filters=filters, limit=limit)

    @m.unary("container.inspect")
    async def inspect(id: str) -> dict:
        return engine.container_inspect(id)

    @m.stream("container.logs")
    async def logs(id: str, follow: bool = False, stdout: bool = True, stderr: bool = True,
                   since: str | float | None = None, until: str | float | None = None, timestamps: bool = False,
                   tail: str | int | None = "all"):
        async with aclosing(engine.container_logs(id, follow=follow, stdout=stdout, stderr=stderr, since=since,
                                                  until=until, timestamps=timestamps, tail=tail)) as batches:
            async for batch in batches:
                yield batch

    @m.unary("image.list")
    async def images(all: bool = False, filters: dict | None = None) -> list:
        return await trio.to_thread.run_sync(partial(engine.image_list, all=all, filters=filters))

    @m.unary("image.history")
    async def image_history(id: str) -> list:
        return await engine.image_history(id)

    @m.unary("image.prune")
    async def image_prune(all: bool = False, filters: dict | None = None) -> dict:
        return await engine.image_prune(all=all, filters=filters)

    @m.unary("system.df")
    async def system_df() -> dict:
        return await engine.system_df()

    @m.unary("image.bootstrap")
    async def bootstrap(name: str = "busybox") -> dict:
        return await engine.image_bootstrap(name)

    @m.unary("image.import")
    async def image_import(source: str, reference: str | None = None, changes: list | None = None,
                           message: str | None = None) -> dict:
        return await engine.image_import(source, reference, changes=changes, message=message)

    # Registries (supervisor/registry.py): progress as stream items, Docker's JSON messages.
    # ``auth`` is {"username", "password"} from the CLI's credentials file, per call.
    @m.stream("image.pull")
    async def image_pull(name: str, auth: dict | None = None):
        async with aclosing(engine.image_pull(name, auth=auth)) as messages:
            async for message in messages:
                yield message

    @m.stream("image.push")
    async def image_push(name: str, auth: dict | None = None):
        async with aclosing(engine.image_push(name, auth=auth)) as messages:
            async for message in messages:
                yield message

    @m.unary("image.search")
    async def image_search(term: str, registry: str, limit: int = 25, auth: dict | None = None) -> list:
        return await engine.image_search(term, registry_host=registry, limit=limit, auth=auth)

    @m.unary("system.login")
    async def login(server: str, username: str, password: str) -> dict:
        return await engine.registry_login(server, username, password)

    # docker save / load: the tar moves as a transfer (transfer.read / transfer.write), as cp's.
    @m.unary("image.save")
    async def image_save(names: list, format: str = "docker") -> dict:
        return {"transfer": await engine.image_save(names, fmt=format)}

    @m.unary("image.load")
    async def image_load(transfer: str) -> list:
        return await engine.image_load(transfer)

    @m.unary("image.remove")
    async def image_remove(id: str, force: bool = False, noprune: bool = False) -> list:
        return await engine.image_remove(id, force=force, noprune=noprune)

    @m.unary("image.tag")
    async def image_tag(source: str, reference: str) -> None:
        await engine.image_tag(source, reference)

    @m.unary("image.inspect")
    async def image_inspect(id: str) -> dict:
        return await engine.image_inspect(id)

    # docker commit and build (supervisor/commit.py, supervisor/build.py); build's context is an upload,
    # or a directory of this host (build.py rule 6).
    @m.unary("image.commit")
    async def image_commit(id: str, reference: str | None = None, author: str = "", message: str = "",
                           changes: list | None = None, pause: bool = True) -> dict:
        return await engine.image_commit(id, reference=reference, author=author, message=message, changes=changes,
                                         pause=pause)

    @m.stream("image.build")
    async def image_build(dockerfile: str, transfer: str | None = None, tags: list | None = None,
                          build_args: dict | None = None, target: str | None = None, no_cache: bool = False,
                          labels: dict | None = None, context: dict | None = None):
        async with aclosing(engine.image_build(transfer, dockerfile, tags=tags, build_args=build_args,
                                               target=target, no_cache=no_cache, labels=labels,
                                               context=context)) as items:
            async for item in items:
                yield item

    @m.unary("volume.create")
    async def volume_create(name: str | None = None, driver: str = "local", labels: dict | None = None,
                            driver_opts: dict | None = None) -> dict:
        return await engine.volume_create(name, driver=driver, labels=labels, driver_opts=driver_opts)

    @m.unary("volume.list")
    async def volume_list(filters: dict | None = None) -> dict:
        return engine.volume_list(filters)

    @m.unary("volume.inspect")
    async def volume_inspect(name: str) -> dict:
        return engine.volume_inspect(name)

    @m.unary("volume.remove")
    async def volume_remove(name: str, force: bool = False) -> None:
        await engine.volume_remove(name, force=force)

    # docker exec (supervisor/execs.py): create, then start (output as stream items), inspect.
    @m.unary("exec.create")
    async def exec_create(id: str, body: dict) -> dict:
        return await engine.exec_create(id, body)

    @m.stream("exec.start")
    async def exec_start(id: str, detach: bool = False):
        async with aclosing(stream_exec_output(engine, id, detach=detach)) as items:
            async for item in items:
                yield item

    @m.unary("exec.inspect")
    async def exec_inspect(id: str) -> dict:
        return engine.exec_inspect(id)

    # attach and terminals (supervisor/attach.py): output as stream items, input and size as unary calls.
    @m.stream("container.attach")
    async def container_attach(id: str, stdout: bool = True, stderr: bool = True):
        async with aclosing(attach.attach_container(engine, id, stdout=stdout, stderr=stderr)) as items:
            async for item in items:
                yield item

    @m.unary("container.stdin")
    async def container_stdin(id: str, data: bytes = b"", eof: bool = False) -> None:
        await attach.container_stdin(engine, id, data, eof)

    @m.unary("container.resize")
    async def container_resize(id: str, h: int, w: int) -> None:
        attach.container_resize(engine, id, h, w)

    @m.unary("exec.stdin")
    async def exec_stdin(id: str, data: bytes = b"", eof: bool = False) -> None:
        await attach.exec_stdin(engine, id, data, eof)

    @m.unary("exec.resize")
    async def exec_resize(id: str, h: int, w: int) -> None:
        await attach.exec_resize(engine, id, h, w)

    @m.unary("system.info")
    async def info() -> dict:
        return await engine.system_info()

    @m.unary("system.version")
    async def version() -> dict:
        return engine.system_version()

    @m.stream("system.events")
    async def events(filters: dict | None = None, since: int | None = None, until: int | None = None):
        try:
            flt = EventFilter.from_docker(filters or {})
        except Exception as exc:     # a filter the protocol rejects is the caller's error
            raise InvalidRequest(str(exc)) from None
        async with bus.subscribe(filter=flt, since_seq=since, until_seq=until) as subscription:
            async for event in subscription:
                yield event.to_dict()

    return m


def _raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, as dockerd and containerd do at start.

    Each running container holds several of the daemon's descriptors (its pidfd,
    log pipes and file, its network namespace for metrics): the usual soft limit
    of 1024 would stop a host at about a hundred containers. A container whose
    spec names no RLIMIT_NOFILE inherits this one, as under dockerd.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)


def _collect_garbage(images) -> None:
    images.gc_temp()
    blobs, snapshots = images.gc(grace_s=0)
    if blobs or snapshots:
        log.info("image store: removed %d unreferenced blob(s) and %d snapshot(s)", len(blobs), len(snapshots))


def _registry_settings(args: argparse.Namespace) -> registry.Settings:
    """--registry-mirror and --insecure-registry, checked (a bad one stops the daemon at start)."""
    insecure = tuple(args.insecure_registry)
    check_insecure_entries(insecure)
    mirrors = tuple(args.registry_mirror)
    for mirror in mirrors:
        repositories(parse_remote("busybox"), mirrors=(mirror,))
    return registry.Settings(mirrors=mirrors, insecure=insecure)


async def serve(args: argparse.Namespace) -> int:
    args.data_root.mkdir(parents=True, exist_ok=True)
    args.exec_root.mkdir(parents=True, exist_ok=True)
    _raise_nofile_limit()
    # A worker thread (a scrape of a thousand containers, a layer unpack) holds the GIL
    # for this long before the event loop gets it back, and a request needs it back
    # several times: CPython's 5 ms made a scrape hold an RPC answer for ~50 ms, 1 ms
    # keeps it near 15 (bench/metrics.py).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    registry_settings = _registry_settings(args)
    if os.getpid() != 1:
        _syscalls.set_child_subreaper()     # orphans of our containers' helpers land on us
    sockets = [h.removeprefix("unix://") for h in args.host] or [str(args.exec_root / "corral.sock")]
    for s in sockets:
        if not s.startswith("/"):
            raise SystemExit(f"corral daemon: -H {s}: only unix:///absolute/path is supported")
    try:
        metrics_addr = parse_metrics_addr(args.metrics_addr)
    except ValueError as exc:
        raise SystemExit(f"corral daemon: --metrics-addr: {exc}") from None
    db = args.data_root / "state.db"
    journal = await trio.to_thread.run_sync(Journal, db)
    store = await trio.to_thread.run_sync(StateStore, db)
    bus = EventBus(journal)
    from runtime.images import ImageStore
    images = await trio.to_thread.run_sync(ImageStore, args.data_root)
    # Nothing is in flight yet: what an interrupted import, pull or prune left goes now.
    await trio.to_thread.run_sync(_collect_garbage, images)
    mountinfo = read_mountinfo()
    mode = detect_mode(mountinfo)
    try:
        async with open_linux_host() as host, trio.open_nursery() as nursery:
            # The host's own /proc/self/cgroup reading, so metrics open the very cgroups it made.
            hub = MetricsHub(mountinfo=mountinfo, self_cgroup=host._cgroup_base,
                             allowed_labels=tuple(args.metrics_label))
            engine = Engine(data_root=args.data_root, host=host, bus=bus, store=store, images=images,
                            nursery=nursery, cgroup_parent=args.cgroup_parent,
                            privileged_caps=held_bounding_set(), cgroup_namespace=mode is CgroupMode.UNIFIED,
                            metrics=hub)
            engine.registry_settings = registry_settings
            hub.registry.register(SupervisorCollector(
                states=engine.container_states, all_states=("created", "running", "paused", "restarting", "exited"),
                events_total=journal.last_seq, subscribers=lambda: bus.subscriber_count,
                journal_events=journal.size, start_time_s=time.time(), version=server_version()))
            if metrics_addr is not None:
                await _start_metrics(nursery, metrics_addr, hub)
                nursery.start_soon(_watch_loop_lag, hub)
            keeper = await _open_keeper(args.exec_root)
            engine.keep = keeper.link if keeper is not None else None
            engine.live_restore = args.live_restore
            await engine.restore(held=keeper.held if keeper is not None else None, live_restore=args.live_restore)
            services = ServiceManager(engine)
            methods = build_methods(engine, bus, services)
            for s in sockets:
                await nursery.start(partial(serve_unix, group=args.group), s, methods)
            log.info("corral daemon ready (pid %d, data root %s, sockets %s)", os.getpid(), args.data_root, sockets)

            def apply_services() -> None:
                if args.services is not None:
                    nursery.start_soon(_apply_services, services, args.services)

            def reload() -> None:
                if args.config_file is not None:
                    _reload_config(args)
                    engine.live_restore = args.live_restore
                apply_services()

            apply_services()
            await _signals(engine, host, reload)
            live_restore = engine.live_restore and keeper is not None and keeper.link.alive
            if live_restore:
                log.info("shutting down: containers keep running (--live-restore)")
            else:
                log.info("shutting down: stopping containers")
            await engine.shutdown(live_restore=live_restore)
            if keeper is not None:
                keeper.link.close()       # the keeper copies the output of what still runs from now on
            hub.close()
            nursery.cancel_scope.cancel()
    finally:
        bus.close()
        store.close()
        journal.close()
    log.info("corral daemon stopped")
    return 0


@dataclass
class _Keeper:
    link: KeeperLink
    held: dict[str, Held]


async def _open_keeper(exec_root: Path) -> _Keeper | None:
    """Connect to the keeper (starting it when none runs) and take back what it held for the
    daemon before. None when it cannot be had: containers then die with the daemon."""
    def open_() -> _Keeper:
        for attempt in (1, 2):     # a keeper holding nothing may be exiting just as we connect
            client = KeeperClient.open(exec_root / "keeper.sock", log_path=exec_root / "keeper.log")
            try:
                held = client.hello()
            except KeeperError:
                client.close()
                if attempt == 2:
                    raise
                continue
            return _Keeper(KeeperLink(client), {h.id: h for h in held})
        raise AssertionError("unreachable")
    try:
        keeper = await trio.to_thread.run_sync(open_)
    except KeeperError as exc:
        log.error("%s; containers will not outlive this daemon", exc)
        return None
    for h in keeper.held.values():
        if h.copied or h.dropped:
            log.info("container %s: the keeper logged %d byte(s) of output while no daemon ran%s", h.id[:12],
                     h.copied, f", and could not write {h.dropped}" if h.dropped else "")
    return keeper


LOOP_LAG_SAMPLE_S = 0.25
SWITCH_INTERVAL_S = 0.001


async def _watch_loop_lag(hub: MetricsHub) -> None:
    """Sleep, and record how late the loop woke us: the daemon's health as a histogram."""
    while True:
        asked = trio.current_time() + LOOP_LAG_SAMPLE_S
        await trio.sleep_until(asked)
        hub.corral.loop_lag_seconds.observe(max(0.0, trio.current_time() - asked))


async def _start_metrics(nursery: trio.Nursery, addr: tuple[str | None, int], hub: MetricsHub) -> None:
    # SPEC: a metrics address that cannot be bound is logged, not fatal (dockerd
    # refuses to start). corral may be a host's PID 1 or the supervisor of
    # everything on it; a port clash must not keep every container down.
    try:
        await nursery.start(serve_metrics, *addr, hub.registry)
    except OSError as exc:
        log.error("metrics: cannot listen on %s:%d: %s; /metrics is off", addr[0] or "*", addr[1], exc)


REAP_RETRY_S = 1.0


async def _signals(engine: Engine, host, reload) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD) as signals:
        while True:
            # A SIGCHLD can come while reaping must wait (a spawn in flight), and no other
            # may follow: look again after a while rather than keep a zombie for good.
            signum = None
            with trio.move_on_after(REAP_RETRY_S):
                signum = await signals.__anext__()
            if signum is None or signum == signal.SIGCHLD:
                _reap_orphans(engine, host)
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: reloading the services file")
                reload()
            else:
                return


def _reload_config(args: argparse.Namespace) -> None:
    """SIGHUP: re-read the config file; log-level and services apply now, the rest at the next start."""
    try:
        config = read_config(args.config_file)
    except ConfigError as exc:
        log.error("config reload: %s; keeping the current settings", exc)
        return
    for key, (dest, _, live) in KEYS.items():
        if dest not in config or config[dest] == getattr(args, dest):
            continue
        if live:
            setattr(args, dest, config[dest])
            if dest == "log_level":
                logging.getLogger().setLevel(config[dest].upper())
            log.info("config reload: %s is now %s", key, config[dest])
        else:
            log.warning("config reload: %s changed; it applies at the next start", key)


async def _apply_services(services: ServiceManager, path: Path) -> None:
    """Bring the containers to the services file; a bad file is logged, the daemon goes on."""
    try:
        kwargs = await trio.to_thread.run_sync(read_project, path, dict(os.environ))
        project = parse_project(**kwargs)
        for warning in project.warnings:
            log.warning("services file %s: %s", path, warning)
        for action in await services.up(project):
            log.info("services %s: %s", project.name, action)
    except CorralError as exc:
        log.error("services file %s: %s", path, exc)


def _reap_orphans(engine: Engine, host) -> None:
    """Reap zombies that are ours to reap: not the spawner, not a container init."""
    if host.spawning or engine.helpers_running:
        # An init may be between the spawner's reply and its task, and a helper's (ps)
        # status belongs to trio's wait: the next SIGCHLD reaps what is left.
        return
    keep = {host.spawner_pid} | engine.child_pids()
    for pid in _children():
        if pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.config_file is not None:
        try:
            apply_config(args, given_dests(p, argv), read_config(args.config_file), path=str(args.config_file))
        except ConfigError as exc:
            print(f"corral daemon: {exc}", file=sys.stderr)
            return 1
    try:
        _registry_settings(args)
    except DistributionError as exc:
        print(f"corral daemon: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return trio.run(serve, args)
