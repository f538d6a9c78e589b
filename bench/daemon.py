#!/usr/bin/env python3
"""The daemon side by side: corral's daemon against dockerd (and crun), issue 3's bench.

Three parts, one run, results in ``bench/results/daemon.json`` and ``daemon.md``:

(a) **One short container, whole CLI process.** ``corral -H S run --rm busybox
    true`` against ``docker -H S run --rm --network none IMAGE true`` and
    ``crun run`` of a bundle, all on the same busybox rootfs
    (``runtime.images.make_busybox_rootfs``: corral bootstraps it, docker
    imports a tar of it, crun runs it as a bundle). Interleaved rounds as in
    ``bench/run.py`` (its launcher and crun helper are reused), every exit
    status checked, ``sh -c 'exit 3'`` must come back as 3 first. Rows that
    only explain (``version`` of both CLIs: start-up plus one round trip; the
    same run through the RPC client and through Docker's HTTP API from this
    warm process) are timed in the same rounds. Target: corral 5x faster
    than docker.
(b) **Many sleeping containers.** A fresh corral daemon starts ``--count``
    (default 200) ``sleep 1000`` containers through concurrent RPC calls,
    then goes on to ``--corral-count`` (default 1,000); dockerd starts
    ``--count`` through concurrent HTTP API calls. Time to start them all, and
    memory per container: RSS and PSS (``/proc/PID/smaps_rollup``) summed
    over the daemon and its helpers (corral: the daemon and its spawner;
    docker: dockerd, containerd and every containerd-shim), divided by the
    count; container processes themselves are excluded on both sides (they
    are found by their cgroup). Also ``corral run -d`` through the CLI for
    ``--cli-count`` containers. Target: 20x less memory per container than
    docker, on PSS at the same count.
(c) **Event fan-out to 10 subscribers.** 10 ``system.events`` streams
    (``supervisor.client``, one connection each) on a corral daemon, while
    the bench generates events: ``image.tag`` calls (one event each, cheap)
    and container lifecycles (create/start/die/destroy). Also in-process: an
    ``EventBus`` over a ``Journal`` in a temp dir, 10 subscribers, publishing
    one event at a time (``synchronous=FULL`` as the daemon) and in batches.
    Events per second delivered to all 10; every subscriber must have seen
    every seq exactly once, in order (else the bench exits 1).

Rules: every process the bench starts is started by it and stopped by PID
(dockerd's containerd-shims, which re-parent away, are found by the bench's
private containerd socket path in their command line); every container is
removed, daemons get SIGTERM (SIGKILL after a timeout), every cgroup under
the bench's ``corral-bench-<uuid>`` parent is removed, mounts under the temp
dir are unmounted, the temp dir is deleted. A missed target never fails the
bench; exit 1 only when a run failed, a check came back wrong or clean-up left
something behind.

dockerd: Debian's ``docker.io`` (``apt-get install docker.io``); it starts its
own containerd. Without it (or with ``--no-docker``) the docker rows are left
out and the targets say n/a.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import run as rt

SPEED_TARGET = 5.0       # corral run --rm at least this many times faster than docker run --rm
MEMORY_TARGET = 20.0     # corral memory per container at most 1/this of docker's
SUBSCRIBERS = 10
DOCKER_IMAGE = "corral-bench-busybox:latest"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RPC_TIMEOUT = 120.0

BenchError = rt.BenchError
Sample = rt.Sample


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- processes and their memory -------------------------------------------------------


def _proc_ids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> set[int]:
    """``root`` and every process below it, as the PPID links say now."""
    children: dict[int, list[int]] = {}
    for pid in _proc_ids():
        ppid = _ppid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_with_cmdline(fragment: str) -> list[int]:
    me = os.getpid()
    return [p for p in _proc_ids() if p != me and fragment in cmdline(p)]


def in_cgroup_tree(pid: int, marker: str) -> bool:
    """Is ``pid`` in a cgroup whose path holds ``marker`` (the bench's cgroup parent)?"""
    return f"/{marker}/" in _read(f"/proc/{pid}/cgroup")


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) in kB; PSS from smaps_rollup, RSS alone if that is unreadable."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    fields = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.MULTILINE))
    if "Rss" in fields and "Pss" in fields:
        return int(fields["Rss"]), int(fields["Pss"])
    m = re.search(r"^VmRSS:\s+(\d+) kB", _read(f"/proc/{pid}/status"), re.MULTILINE)
    return (int(m.group(1)), int(m.group(1))) if m else None


def memory_of(pids: set[int] | list[int]) -> dict[str, Any]:
    procs = []
    for pid in sorted(set(pids)):
        mem = memory_kb(pid)
        if mem is None:
            continue
        comm = _read(f"/proc/{pid}/comm").strip()
        procs.append({"pid": pid, "comm": comm, "rss_kb": mem[0], "pss_kb": mem[1]})
    by_comm: dict[str, dict[str, int]] = {}
    for p in procs:
        c = by_comm.setdefault(p["comm"], {"n": 0, "rss_kb": 0, "pss_kb": 0})
        c["n"] += 1
        c["rss_kb"] += p["rss_kb"]
        c["pss_kb"] += p["pss_kb"]
    return {"processes": len(procs), "rss_kb": sum(p["rss_kb"] for p in procs),
            "pss_kb": sum(p["pss_kb"] for p in procs), "by_comm": by_comm}


def stop_process(proc: subprocess.Popen, timeout: float, problems: list[str], what: str) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        problems.append(f"{what} (pid {proc.pid}) ignored SIGTERM for {timeout:.0f} s: SIGKILLed")
        proc.kill()
        return proc.wait()


# --- the corral daemon ------------------------------------------------------------------


class CorralDaemon:
    """A private ``corral daemon``: its own data root, exec root and cgroup parent."""

    def __init__(self, tmp: Path, name: str, cgroup_parent: str, corral: list[str], env: dict[str, str],
                 extra_args: tuple[str, ...] = ()) -> None:
        self.extra_args = extra_args
        self.dir = tmp / name
        self.data_root = self.dir / "data"
        self.exec_root = self.dir / "run"
        self.socket = self.exec_root / "corral.sock"
        self.cgroup_parent = f"{cgroup_parent}/{name}"
        self.corral, self.env = corral, env
        self.log = self.dir / "daemon.log"
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> list[str]:
        return ["-H", f"unix://{self.socket}"]

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.corral, "daemon", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                 "--cgroup-parent", self.cgroup_parent, "--log-level", "warning", *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"corral daemon exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if self.socket.exists() and self.cli("version").returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise BenchError(f"corral daemon did not answer within 60 s: {self.log.read_text()[-2000:]}")
        out = self.cli("image", "bootstrap", "busybox")
        if out.returncode != 0:
            raise BenchError(f"corral image bootstrap busybox failed: {out.stderr}")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*self.corral, *self.host, *args], capture_output=True, text=True, env=self.env,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)

    def helpers(self, marker: str) -> set[int]:
        """The daemon and its helpers (the spawner), not the containers (found by cgroup)."""
        assert self.proc is not None
        return {p for p in descendants(self.proc.pid) if not in_cgroup_tree(p, marker)}

    def last_seq(self) -> int:
        """The journal's last seq, read straight from state.db (read-only)."""
        db = sqlite3.connect(f"file:{self.data_root / 'state.db'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        finally:
            db.close()

    def stop(self, problems: list[str]) -> None:
        if self.proc is None:
            return
        try:
            ids = self.cli("ps", "-aq", "--no-trunc").stdout.split()
            if ids:
                problems.append(f"corral daemon {self.dir.name}: {len(ids)} container(s) left at clean-up")
                rpc(self.socket, _remove_all, 8)
        except Exception as exc:  # noqa: BLE001 - clean-up goes on
            problems.append(f"corral daemon {self.dir.name}: could not remove containers: {exc}")
        code = stop_process(self.proc, 90, problems, f"corral daemon {self.dir.name}")
        if code != 0:
            problems.append(f"corral daemon {self.dir.name} exited {code}: {self.log.read_text()[-1500:]}")
        self.proc = None


# --- corral through its RPC client (trio) ---------------------------------------------


def rpc(sock: Path, fn: Callable, *args: Any) -> Any:
    """Run ``await fn(client, *args)`` on a fresh connection, in a fresh trio loop."""
    import trio

    from supervisor.client import connect

    async def main() -> Any:
        with trio.fail_after(RPC_TIMEOUT * 5):
            async with connect(sock) as client:
                return await fn(client, *args)

    return trio.run(main)


async def _run_once(client, cmd: list[str], name: str | None = None) -> int:
    """create + start + wait + remove of one container: what ``corral run --rm`` asks for.

    Concurrent callers pass a unique ``name``: the Engine reserves a generated
    name only once the create is done, so two creates in flight can draw the
    same one (an INTERNAL error, UNIQUE constraint failed: containers.name).
    """
    created = await client.call("container.create", body={"Image": "busybox", "Cmd": cmd, "HostConfig": {}},
                                name=name)
    cid = created["Id"]
    try:
        await client.call("container.start", id=cid)
        return int((await client.call("container.wait", id=cid))["StatusCode"])
    finally:
        await client.call("container.remove", id=cid, force=True, volumes=True)


async def _start_many(client, n: int, concurrency: int, first: int = 0) -> list[str]:
    """Start ``n`` sleepers named sleep-<first>... (unique names: see ``_run_once``)."""
    import trio

    limiter, ids = trio.CapacityLimiter(concurrency), []

    async def one(k: int) -> None:
        async with limiter:
            with trio.fail_after(RPC_TIMEOUT):
                created = await client.call("container.create",
                                            body={"Image": "busybox", "Cmd": ["sleep", "1000"], "HostConfig": {}},
                                            name=f"sleep-{k}")
                await client.call("container.start", id=created["Id"])
            ids.append(created["Id"])

    async with trio.open_nursery() as nursery:
        for k in range(first, first + n):
            nursery.start_soon(one, k)
    return ids


async def _remove_all(client, concurrency: int) -> int:
    import trio

    ids = [c["Id"] for c in await client.call("container.list", all=True)]
    limiter = trio.CapacityLimiter(concurrency)

    async def one(cid: str) -> None:
        async with limiter:
            with trio.fail_after(RPC_TIMEOUT):
                await client.call("container.remove", id=cid, force=True, volumes=True)

    async with trio.open_nursery() as nursery:
        for cid in ids:
            nursery.start_soon(one, cid)
    return len(ids)


async def _running(client) -> int:
    return sum(1 for c in await client.call("container.list") if c.get("State") == "running")


# --- dockerd ------------------------------------------------------------------------------


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class DockerDaemon:
    """A private dockerd (and the containerd it starts): data root, exec root, socket, cgroup parent."""

    API = "/v1.41"

    def __init__(self, tmp: Path, cgroup_parent: str, cli: str) -> None:
        self.dir = tmp / "docker"
        self.data_root = self.dir / "data"
        self.exec_root = self.dir / "exec"
        self.socket = self.dir / "docker.sock"
        self.pidfile = self.dir / "dockerd.pid"
        self.cgroup_parent = f"{cgroup_parent}/docker"
        self.cli_path = cli
        self.log = self.dir / "dockerd.log"
        self.env = {**os.environ, "DOCKER_CONFIG": str(self.dir / "cli-config"), "DOCKER_CLI_HINTS": "false"}
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> list[str]:
        return ["-H", f"unix://{self.socket}"]

    def start(self, rootfs_tar: Path) -> None:
        dockerd = rt._which("dockerd")
        if Path("/run/containerd/containerd.sock").exists():
            # dockerd 20.10 would use that system containerd instead of starting its own.
            raise BenchError("/run/containerd/containerd.sock exists: dockerd would use the host's containerd")
        self.dir.mkdir(parents=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [dockerd, "--data-root", str(self.data_root), "--exec-root", str(self.exec_root),
                 "--pidfile", str(self.pidfile), "-H", f"unix://{self.socket}", "--bridge=none",
                 "--iptables=false", "--ip6tables=false", "--cgroup-parent", self.cgroup_parent,
                 "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"dockerd exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if self.socket.exists() and self.request("GET", "/_ping", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise BenchError(f"dockerd did not answer within 90 s: {self.log.read_text()[-2000:]}")
        out = self.cli("import", "-c", f"ENV {DEFAULT_PATH}", "-c", 'CMD ["sh"]', str(rootfs_tar), DOCKER_IMAGE)
        if out.returncode != 0:
            raise BenchError(f"docker import failed: {out.stderr}")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.cli_path, *self.host, *args], capture_output=True, text=True, env=self.env,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)

    def request(self, method: str, path: str, body: Any = None, timeout: float = RPC_TIMEOUT) -> tuple[int, Any]:
        conn = _UnixHTTP(str(self.socket), timeout)
        try:
            payload = json.dumps(body) if body is not None else None
            conn.request(method, path if path == "/_ping" else self.API + path, body=payload,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, data.decode(errors="replace")

    def _ok(self, expected: int, method: str, path: str, body: Any = None) -> Any:
        status, data = self.request(method, path, body)
        if status != expected:
            raise BenchError(f"docker API {method} {path}: {status} {data}")
        return data

    def run_once(self, cmd: list[str]) -> int:
        """create + start + wait + delete through the HTTP API (what the CLI asks for, minus attach)."""
        cid = self._ok(201, "POST", "/containers/create",
                       {"Image": DOCKER_IMAGE, "Cmd": cmd, "HostConfig": {"NetworkMode": "none"}})["Id"]
        try:
            self._ok(204, "POST", f"/containers/{cid}/start")
            return int(self._ok(200, "POST", f"/containers/{cid}/wait")["StatusCode"])
        finally:
            self._ok(204, "DELETE", f"/containers/{cid}?force=1")

    def start_one_sleeper(self, k: int) -> str:
        cid = self._ok(201, "POST", f"/containers/create?name=sleep-{k}",
                       {"Image": DOCKER_IMAGE, "Cmd": ["sleep", "1000"], "HostConfig": {"NetworkMode": "none"}})["Id"]
        self._ok(204, "POST", f"/containers/{cid}/start")
        return cid

    def container_ids(self, all_: bool = True) -> list[str]:
        return [c["Id"] for c in self._ok(200, "GET", f"/containers/json?all={1 if all_ else 0}")]

    def remove_all(self, concurrency: int) -> int:
        ids = self.container_ids()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda cid: self._ok(204, "DELETE", f"/containers/{cid}?force=1"), ids))
        return len(ids)

    def shims(self) -> list[int]:
        return pids_with_cmdline(str(self.exec_root / "containerd"))

    def helpers(self, marker: str) -> set[int]:
        """dockerd, containerd and the shims; not the containers (found by cgroup)."""
        assert self.proc is not None
        pids = descendants(self.proc.pid) | set(self.shims())
        return {p for p in pids if not in_cgroup_tree(p, marker)}

    def stop(self, problems: list[str]) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                left = self.container_ids()
                if left:
                    problems.append(f"dockerd: {len(left)} container(s) left at clean-up")
                    self.remove_all(8)
        except Exception as exc:  # noqa: BLE001 - clean-up goes on
            problems.append(f"dockerd: could not remove containers: {exc}")
        code = stop_process(self.proc, 60, problems, "dockerd")
        if code not in (0, None):
            problems.append(f"dockerd exited {code}")
        self.proc = None
        time.sleep(0.5)
        for pid in self.shims():      # started (indirectly) by us; matched by our private socket path
            problems.append(f"dockerd left a process behind: {pid} {cmdline(pid)[:120]}: SIGKILLed")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


ENGINE_CGROUPS = ("corral-a", "corral-b", "docker")   # each engine's --cgroup-parent, below the bench's


def leaked_container_cgroups(parent: str) -> list[str]:
    """Container cgroups still there once every engine stopped.

    Each engine leaves its own cgroup parent (``<parent>/corral-a``...) as
    dockerd does; anything below one, or beside them (crun's ``crun-true``
    is the container's own cgroup), is a container's that was not removed.
    """
    left = []
    for top in rt.cgroup_dirs(parent):
        if not top.is_dir():
            continue
        for d in top.iterdir():
            if not d.is_dir():
                continue
            if d.name not in ENGINE_CGROUPS:
                left.append(str(d))
            else:
                left.extend(str(c) for c in d.iterdir() if c.is_dir())
    return sorted(left)


def clean_up(tmp: Path, cgroup_parent: str, problems: list[str]) -> None:
    """What every bench does last, whatever happened: unmount under ``tmp``, report container
    cgroups left behind, remove the bench's cgroup parent and ``tmp``."""
    unmount_under(tmp, problems)
    for leak in leaked_container_cgroups(cgroup_parent):
        problems.append(f"container cgroup left behind: {leak}")
    for left in rt.remove_cgroup_tree(cgroup_parent):
        problems.append(f"could not remove cgroup {left}")
    shutil.rmtree(tmp, ignore_errors=True)
    if tmp.exists():
        problems.append(f"could not remove {tmp}")


def unmount_under(tmp: Path, problems: list[str]) -> None:
    """Unmount whatever is still mounted below the bench's temp dir (deepest first)."""
    prefix = str(tmp) + "/"
    for _ in range(3):
        points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split()[4].startswith(prefix)]
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    problems.append(f"mounts left under {tmp}")


# --- part (a): one short container --------------------------------------------------------

A_PATHS = ("corral", "docker", "crun", "corral-rpc", "docker-api", "corral-version", "docker-version", "floor")
A_LABELS = {
    "corral": "`corral run --rm busybox true` (whole CLI process)",
    "docker": "`docker run --rm --network none IMAGE true` (whole CLI process)",
    "crun": "`crun run` of a bundle (whole process, no daemon)",
    "corral-rpc": "corral: create/start/wait/remove over RPC from this warm process",
    "docker-api": "docker: create/start/wait/delete over the HTTP API from this warm process",
    "corral-version": "`corral version` (CLI start-up + one round trip)",
    "docker-version": "`docker version` (CLI start-up + one round trip)",
    "floor": "floor: host `/bin/true` through the same launcher",
}


class PartA:
    def __init__(self, tmp: Path, cgroup_parent: str, corral: CorralDaemon, docker: DockerDaemon | None,
                 rootfs: Path, corral_env: dict[str, str]) -> None:
        self.corral, self.docker, self.env = corral, docker, corral_env
        self.err = tempfile.TemporaryFile(dir=tmp)  # noqa: SIM115 - closed in close()
        self.crun = rt._which("crun")
        self.true = rt._which("true")
        self.crun_root = tmp / "crun-state"
        base = rt.runc_spec(tmp)
        self.bundles = {kind: rt.write_bundle(tmp / "bundles" / kind, base, rootfs, args, f"{cgroup_parent}/crun-{kind}")
                        for kind, args in (("true", ["/bin/true"]), ("exit3", ["/bin/sh", "-c", "exit 3"]))}
        empty = tmp / "empty"
        empty.write_bytes(b"")
        self.helper = rt.CrunHelper(empty)
        self.serial = 0
        self.paths = [p for p in A_PATHS if docker is not None or not p.startswith("docker")]

    def _spawn(self, argv: list[str], env: dict[str, str] | None) -> Sample:
        rc, seconds, cpu = rt.timed_spawn(argv, self.err.fileno(), env)
        return Sample(rc, seconds, cpu, rt.read_err(self.err.fileno()) if rc else "")

    def run_once(self, path: str, exit3: bool = False) -> Sample:
        cmd = ["sh", "-c", "exit 3"] if exit3 else ["true"]
        if path == "corral":
            return self._spawn([*self.corral.corral, *self.corral.host, "run", "--rm", "busybox", *cmd], self.env)
        if path == "docker":
            assert self.docker is not None
            return self._spawn([self.docker.cli_path, *self.docker.host, "run", "--rm", "--network", "none",
                                DOCKER_IMAGE, *cmd], self.docker.env)
        if path == "crun":
            self.serial += 1
            bundle = self.bundles["exit3" if exit3 else "true"]
            return self.helper.run([self.crun, "--root", str(self.crun_root), "run", "-b", str(bundle),
                                    f"bench-{self.serial}"])
        if path == "corral-version":
            return self._spawn([*self.corral.corral, *self.corral.host, "version"], self.env)
        if path == "docker-version":
            assert self.docker is not None
            return self._spawn([self.docker.cli_path, *self.docker.host, "version"], self.docker.env)
        if path == "floor":
            return self._spawn([self.true], None)
        if path == "corral-rpc":
            return self._timed_call(lambda: rpc(self.corral.socket, _run_once, cmd))
        if path == "docker-api":
            assert self.docker is not None
            return self._timed_call(lambda: self.docker.run_once(cmd))
        raise ValueError(path)

    @staticmethod
    def _timed_call(fn: Callable[[], int]) -> Sample:
        t0 = time.perf_counter()
        try:
            rc = fn()
        except Exception as exc:  # noqa: BLE001 - becomes a failed sample
            return Sample(1, time.perf_counter() - t0, 0.0, f"{type(exc).__name__}: {exc}")
        return Sample(rc, time.perf_counter() - t0, 0.0)

    def sanity(self) -> dict[str, dict]:
        out = {}
        for p in self.paths:
            if p in ("floor", "corral-version", "docker-version"):
                continue
            s = self.run_once(p, exit3=True)
            out[p] = {"exit_status": s.rc, "expected": 3, "ok": s.rc == 3, "stderr": s.stderr[-500:]}
        return out

    def measure(self, runs: int, warmup: int) -> dict[str, list[Sample]]:
        samples: dict[str, list[Sample]] = {p: [] for p in self.paths}
        for rnd in range(warmup + runs):
            k = rnd % len(self.paths)
            for p in self.paths[k:] + self.paths[:k]:
                s = self.run_once(p)
                if s.rc != 0:
                    raise BenchError(f"(a) {p} run {rnd + 1} exited {s.rc}: {s.stderr or '(no stderr)'}")
                if rnd >= warmup:
                    samples[p].append(s)
            if rnd + 1 == warmup:
                log(f"  warm-up: {warmup} round(s) done")
            elif rnd >= warmup and (rnd + 1 - warmup) % 10 == 0:
                log(f"  {rnd + 1 - warmup}/{runs} rounds")
        return samples

    def close(self, problems: list[str]) -> None:
        if self.crun_root.is_dir():
            for entry in self.crun_root.iterdir():
                if entry.is_dir():
                    problems.append(f"crun: container {entry.name} was left")
                    self.helper.run([self.crun, "--root", str(self.crun_root), "delete", "-f", entry.name])
        self.helper.close()
        self.err.close()


# --- part (b): many sleeping containers ---------------------------------------------------


def settle_and_measure(helpers: Callable[[], set[int]], count: int, settle: float = 2.0) -> dict[str, Any]:
    time.sleep(settle)
    mem = memory_of(helpers())
    mem["containers"] = count
    if count:
        mem["rss_kb_per_container"] = mem["rss_kb"] / count
        mem["pss_kb_per_container"] = mem["pss_kb"] / count
    return mem


def part_b_corral(daemon: CorralDaemon, marker: str, count: int, big: int, cli_count: int,
                  concurrency: int) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": concurrency}
    helpers = lambda: daemon.helpers(marker)
    out["idle"] = settle_and_measure(helpers, 0, settle=1.0)
    log(f"(b) corral: starting {count} sleepers over RPC ({concurrency} in flight)")
    t0 = time.perf_counter()
    ids = rpc(daemon.socket, _start_many, count, concurrency)
    first = time.perf_counter() - t0
    running = rpc(daemon.socket, _running)
    if len(ids) != count or running != count:
        raise BenchError(f"(b) corral: asked for {count}, started {len(ids)}, {running} running")
    out["at_count"] = {"containers": count, "start_s": first, "per_s": count / first,
                       "memory": settle_and_measure(helpers, count)}
    if big > count:
        log(f"(b) corral: {big - count} more, up to {big}")
        t0 = time.perf_counter()
        more = rpc(daemon.socket, _start_many, big - count, concurrency, count)
        second = time.perf_counter() - t0
        running = rpc(daemon.socket, _running)
        if len(more) != big - count or running != big:
            raise BenchError(f"(b) corral: asked for {big}, {running} running")
        out["at_big"] = {"containers": big, "start_s": first + second, "per_s": big / (first + second),
                         "memory": settle_and_measure(helpers, big)}
    log("(b) corral: removing them")
    t0 = time.perf_counter()
    removed = rpc(daemon.socket, _remove_all, concurrency)
    out["remove"] = {"containers": removed, "seconds": time.perf_counter() - t0}
    if cli_count:
        log(f"(b) corral: {cli_count} x `corral run -d busybox sleep 1000` (4 CLI processes at a time)")
        argv = [*daemon.corral, *daemon.host, "run", "-d"]

        def one(k: int) -> tuple[int, str, str]:
            p = subprocess.run([*argv, "--name", f"cli-{k}", "busybox", "sleep", "1000"], capture_output=True, text=True, env=daemon.env, stdin=subprocess.DEVNULL,
                               timeout=RPC_TIMEOUT, check=False)
            return p.returncode, p.stdout.strip(), p.stderr.strip()

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(cli_count)))
        elapsed = time.perf_counter() - t0
        bad = [r for r in results if r[0] != 0 or not re.fullmatch(r"[0-9a-f]{64}", r[1])]
        running = rpc(daemon.socket, _running)
        if bad or running != cli_count:
            raise BenchError(f"(b) corral run -d: {len(bad)} failed ({bad[:1]}), {running} running")
        out["cli"] = {"containers": cli_count, "start_s": elapsed, "per_s": cli_count / elapsed, "parallel": 4}
        rpc(daemon.socket, _remove_all, concurrency)
    return out


def part_b_docker(docker: DockerDaemon, marker: str, count: int, concurrency: int, deadline_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": concurrency}
    helpers = lambda: docker.helpers(marker)
    out["idle"] = settle_and_measure(helpers, 0, settle=1.0)
    log(f"(b) docker: starting {count} sleepers over the HTTP API ({concurrency} in flight)")
    stop_at = time.monotonic() + deadline_s
    errors: list[str] = []

    def one(k: int) -> str | None:
        if time.monotonic() > stop_at:
            return None
        try:
            return docker.start_one_sleeper(k)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(str(exc))
            return None

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        ids = [i for i in pool.map(one, range(count)) if i]
    elapsed = time.perf_counter() - t0
    running = len(docker.container_ids(all_=False))
    if errors:
        raise BenchError(f"(b) docker: {len(errors)} start(s) failed: {errors[0]}")
    out["at_count"] = {"containers": len(ids), "asked": count, "start_s": elapsed, "per_s": len(ids) / elapsed,
                       "running": running, "memory": settle_and_measure(helpers, running)}
    if len(ids) < count:
        out["note"] = f"stopped at the {deadline_s:.0f} s deadline with {len(ids)} of {count} started"
    log("(b) docker: removing them")
    t0 = time.perf_counter()
    removed = docker.remove_all(concurrency)
    out["remove"] = {"containers": removed, "seconds": time.perf_counter() - t0}
    return out


# --- part (c): event fan-out ------------------------------------------------------------------


def check_seqs(seen: list[list[int]], first: int, last: int) -> list[str]:
    want = list(range(first, last + 1))
    wrong = []
    for i, seqs in enumerate(seen):
        if seqs[:len(want)] != want:
            missing = len(set(want) - set(seqs))
            dups = len(seqs) - len(set(seqs))
            wrong.append(f"subscriber {i}: {len(seqs)} seqs, {missing} missing, {dups} duplicated"
                         f"{', out of order' if not missing and not dups else ''}")
    return wrong


def fanout_daemon(daemon: CorralDaemon, workload: str, n: int, concurrency: int) -> dict[str, Any]:
    """10 RPC subscribers; ``workload`` generates events through another connection."""
    import trio

    from supervisor.client import connect

    s0 = daemon.last_seq()
    seen: list[list[int]] = [[] for _ in range(SUBSCRIBERS)]
    stamps: list[list[float]] = [[] for _ in range(SUBSCRIBERS)]
    failures: list[str] = []

    async def subscriber(i: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with connect(daemon.socket) as client, client.stream("system.events", since=s0) as events:
                task_status.started()
                async for ev in events:
                    seen[i].append(ev["seq"])
                    stamps[i].append(time.perf_counter())
        except Exception as exc:  # noqa: BLE001 - reported, the check below fails
            failures.append(f"subscriber {i}: {type(exc).__name__}: {exc}")
            task_status.started()

    async def generate(client) -> int:
        limiter, done = trio.CapacityLimiter(concurrency), [0]

        async def one(k: int) -> None:
            async with limiter:
                with trio.fail_after(RPC_TIMEOUT):
                    if workload == "image.tag":
                        await client.call("image.tag", source="busybox", reference=f"bench-fanout:t{k % 8}")
                    else:
                        rc = await _run_once(client, ["true"], name=f"fanout-{k}")
                        if rc != 0:
                            raise BenchError(f"(c) container exited {rc}")
                done[0] += 1

        async with trio.open_nursery() as nursery:
            for k in range(n):
                nursery.start_soon(one, k)
        return done[0]

    async def main() -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            for i in range(SUBSCRIBERS):
                await nursery.start(subscriber, i)
            await trio.sleep(0.2)       # every stream is registered and caught up (nothing new yet)
            t0 = time.perf_counter()
            async with connect(daemon.socket) as client:
                done = await generate(client)
            t_gen = time.perf_counter() - t0
            last = await trio.to_thread.run_sync(daemon.last_seq)
            with trio.move_on_after(60):
                while not all(s and s[-1] >= last for s in seen) and not failures:
                    await trio.sleep(0.01)
            await trio.sleep(0.2)       # anything after `last` would show up as a wrong seq
            nursery.cancel_scope.cancel()
        ends = [st[s.index(last)] for s, st in zip(seen, stamps) if last in s]
        events = last - s0
        elapsed = (max(ends) - t0) if len(ends) == SUBSCRIBERS else float("nan")
        wrong = failures + check_seqs(seen, s0 + 1, last)
        return {"workload": workload, "operations": done, "concurrency": concurrency, "events": events,
                "subscribers": SUBSCRIBERS, "generate_s": t_gen, "all_delivered_s": elapsed,
                "events_per_s": 0.0 if math.isnan(elapsed) else events / elapsed,
                "deliveries_per_s": 0.0 if math.isnan(elapsed) else SUBSCRIBERS * events / elapsed,
                "every_seq_once": not wrong, "wrong": wrong, "seqs": [s0 + 1, last]}

    return trio.run(main)


def fanout_inprocess(tmp: Path, n: int, batch: int, synchronous: str, max_s: float) -> dict[str, Any]:
    """An EventBus over a Journal in ``tmp``: 10 subscribers, publish ``n`` events (or for ``max_s``)."""
    import trio

    from supervisor.events import EventBus
    from supervisor.journal import Journal

    db = tmp / f"fanout-{batch}-{synchronous}.db"
    journal = Journal(db, synchronous=synchronous)
    seen: list[list[int]] = [[] for _ in range(SUBSCRIBERS)]
    stamps: list[list[float]] = [[] for _ in range(SUBSCRIBERS)]
    end_at: list[float | None] = [None] * SUBSCRIBERS
    published = [0]

    async def main() -> dict[str, Any]:
        bus = EventBus(journal)
        target = trio.Event()

        async def subscriber(i: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
            async with bus.subscribe(since_seq=0) as sub:
                task_status.started()
                async for ev in sub:
                    seen[i].append(ev.seq)
                    stamps[i].append(time.perf_counter())
                    if target.is_set() and ev.seq >= published[0]:
                        # When it got the last counted seq (the wake-up event is not counted).
                        end_at[i] = stamps[i][seen[i].index(published[0])] if published[0] in seen[i] else None
                        return

        async with trio.open_nursery() as nursery:
            for i in range(SUBSCRIBERS):
                await nursery.start(subscriber, i)
            t0 = time.perf_counter()
            stop = t0 + max_s
            k = 0
            while k < n and time.perf_counter() < stop:
                drafts = [("container", "start", f"c{k + j}", {"name": f"bench{k + j}", "image": "busybox"})
                          for j in range(min(batch, n - k))]
                if batch == 1:
                    ev = await bus.publish(*drafts[0])
                    last = ev.seq
                else:
                    last = (await bus.publish_many(drafts))[-1].seq
                k += len(drafts)
            published[0] = last
            target.set()
            # One more event wakes subscribers already idle at `last`; it is not counted.
            await bus.publish("container", "stop", "wake", {})
            with trio.move_on_after(60):
                while not all(end_at):
                    await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
        bus.close()
        elapsed = max(e for e in end_at if e) - t0 if all(end_at) else float("nan")
        trimmed = [[x for x in s if x <= published[0]] for s in seen]
        wrong = check_seqs(trimmed, 1, published[0])
        return {"batch": batch, "synchronous": synchronous, "events": published[0], "subscribers": SUBSCRIBERS,
                "all_delivered_s": elapsed, "events_per_s": published[0] / elapsed,
                "deliveries_per_s": SUBSCRIBERS * published[0] / elapsed, "every_seq_once": not wrong,
                "wrong": wrong}

    try:
        return trio.run(main)
    finally:
        journal.close()


# --- results -----------------------------------------------------------------------------------


def environment(docker: DockerDaemon | None) -> dict[str, str]:
    env = rt.environment()
    if docker is not None:
        env["dockerd"] = rt._version(["dockerd", "--version"])
        env["containerd"] = rt._version(["containerd", "--version"])
        env["docker CLI"] = f"{docker.cli_path}: {rt._version([docker.cli_path, '--version'])}"
    return env


def verdicts(result: dict) -> list[dict]:
    targets = []
    a = result.get("a", {}).get("stats", {})
    if "docker" in a and "corral" in a:
        ratio = a["docker"]["median_ms"] / a["corral"]["median_ms"]
        targets.append({"target": f"(a) corral run --rm {SPEED_TARGET:.0f}x faster than docker run --rm",
                        "pass": ratio >= SPEED_TARGET,
                        "detail": f"{a['corral']['median_ms']:.1f} ms vs {a['docker']['median_ms']:.1f} ms: "
                                  f"{ratio:.2f}x"})
    else:
        targets.append({"target": f"(a) corral run --rm {SPEED_TARGET:.0f}x faster than docker run --rm",
                        "pass": None, "detail": "n/a: no docker"})
    b = result.get("b", {})
    cm, dm = b.get("corral", {}).get("at_count", {}), b.get("docker", {}).get("at_count", {})
    if cm and dm and dm.get("containers"):
        c_pss, d_pss = cm["memory"]["pss_kb_per_container"], dm["memory"]["pss_kb_per_container"]
        ratio = d_pss / c_pss
        targets.append({"target": f"(b) daemon memory per container {MEMORY_TARGET:.0f}x less than docker's (PSS)",
                        "pass": ratio >= MEMORY_TARGET,
                        "detail": f"{c_pss:.0f} kB vs {d_pss:.0f} kB per container at {cm['containers']}: {ratio:.1f}x "
                                  f"(RSS {cm['memory']['rss_kb_per_container']:.0f} vs "
                                  f"{dm['memory']['rss_kb_per_container']:.0f} kB: "
                                  f"{dm['memory']['rss_kb_per_container'] / cm['memory']['rss_kb_per_container']:.1f}x)"})
    else:
        targets.append({"target": f"(b) daemon memory per container {MEMORY_TARGET:.0f}x less than docker's (PSS)",
                        "pass": None, "detail": "n/a: no docker"})
    return targets


def _pf(v: bool | None) -> str:
    return "n/a" if v is None else ("PASS" if v else "MISS")


def render_markdown(result: dict) -> str:
    env, cfg = result["environment"], result["config"]
    lines = ["# corral daemon vs dockerd (and crun): issue 3's bench", "",
             f"Date {env['date']}; `bench/daemon.py` ({cfg}). See bench/README.md, section \"bench/daemon.py\".", ""]
    lines += ["| target | result | detail |", "| --- | --- | --- |",
              *(f"| {t['target']} | {_pf(t['pass'])} | {t['detail']} |" for t in result["targets"]), ""]
    a = result.get("a")
    if a:
        lines += ["## (a) one short container, whole process", "",
                  "Interleaved rounds (order rotating), every run's exit status checked; "
                  "`sh -c 'exit 3'` came back as: "
                  + ", ".join(f"{p} {'ok' if s['ok'] else 'WRONG'} ({s['exit_status']})" for p, s in a["sanity"].items()),
                  "", "| path | median ms | p90 ms | min ms | mean ms | CPU median ms | n |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, s in a["stats"].items():
            cpu = f"{s['cpu_median_ms']:.1f}" if name not in ("corral-rpc", "docker-api") else "-"
            lines.append(f"| {A_LABELS[name]} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['min_ms']:.1f} "
                         f"| {s['mean_ms']:.1f} | {cpu} | {s['n']} |")
        lines += ["", "| ratio of medians | value |", "| --- | ---: |",
                  *(f"| {k} | {v:.2f}x |" for k, v in a["ratios"].items()), ""]
    b = result.get("b")
    if b:
        lines += ["## (b) many `sleep 1000` containers", ""]
        if b.get("note"):
            lines += [b["note"], ""]
        lines += [("| engine | containers | how | start all s | per s | RSS kB/container | PSS kB/container "
                   "| helpers RSS MB | helpers PSS MB | processes |"),
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for eng in ("corral", "docker"):
            e = b.get(eng)
            if not e:
                continue
            how = "RPC client" if eng == "corral" else "HTTP API"
            for key in ("at_count", "at_big"):
                r = e.get(key)
                if not r:
                    continue
                m = r["memory"]
                lines.append(f"| {eng} | {r['containers']} | {how}, {e['concurrency']} in flight | {r['start_s']:.1f} "
                             f"| {r['per_s']:.1f} | {m['rss_kb_per_container']:.0f} | {m['pss_kb_per_container']:.0f} "
                             f"| {m['rss_kb'] / 1024:.1f} | {m['pss_kb'] / 1024:.1f} | {m['processes']} |")
            if e.get("cli"):
                c = e["cli"]
                lines.append(f"| {eng} | {c['containers']} | `corral run -d`, {c['parallel']} CLIs at a time "
                             f"| {c['start_s']:.1f} | {c['per_s']:.1f} | | | | | |")
        lines += ["", "| engine | idle helpers RSS MB | idle PSS MB | removal of all: containers, s | processes at the count |",
                  "| --- | ---: | ---: | --- | --- |"]
        for eng in ("corral", "docker"):
            e = b.get(eng)
            if e:
                comm = ", ".join(f"{k} x{v['n']} ({v['pss_kb'] / 1024:.1f} MB PSS)"
                                 for k, v in e["at_count"]["memory"]["by_comm"].items())
                lines.append(f"| {eng} | {e['idle']['rss_kb'] / 1024:.1f} | {e['idle']['pss_kb'] / 1024:.1f} "
                             f"| {e['remove']['containers']} in {e['remove']['seconds']:.1f} | {comm} |")
        lines.append("")
    c = result.get("c")
    if c:
        lines += ["## (c) event fan-out to 10 subscribers", "",
                  "| source | events | how | delivered to all 10 in s | events/s | deliveries/s | every seq once |",
                  "| --- | ---: | --- | ---: | ---: | ---: | --- |"]
        for r in c.get("daemon", []):
            lines.append(f"| daemon, 10 RPC streams | {r['events']} | {r['operations']} x {r['workload']}, "
                         f"{r['concurrency']} in flight | {r['all_delivered_s']:.2f} | {r['events_per_s']:.0f} "
                         f"| {r['deliveries_per_s']:.0f} | {'yes' if r['every_seq_once'] else 'NO'} |")
        for r in c.get("inprocess", []):
            how = "publish() one at a time" if r["batch"] == 1 else f"publish_many() of {r['batch']}"
            lines.append(f"| in-process EventBus + Journal | {r['events']} | {how}, synchronous={r['synchronous']} "
                         f"| {r['all_delivered_s']:.2f} | {r['events_per_s']:.0f} | {r['deliveries_per_s']:.0f} "
                         f"| {'yes' if r['every_seq_once'] else 'NO'} |")
        lines.append("")
    lines += ["## environment", "", "| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in env.items()), ""]
    if result.get("skipped"):
        lines += ["Skipped:", "", *(f"- {s}" for s in result["skipped"]), ""]
    if result["problems"]:
        lines += ["Problems:", "", *(f"- {p}" for p in result["problems"]), ""]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=20, help="(a) counted rounds (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="(a) uncounted rounds first (default 3)")
    ap.add_argument("--count", type=int, default=200,
                    help="(b) containers in both engines (default 200: dockerd does ~5/s on 2 cores)")
    ap.add_argument("--corral-count", type=int, default=1000, help="(b) corral goes on to this many (default 1000)")
    ap.add_argument("--cli-count", type=int, default=200, help="(b) containers started with `corral run -d` (0: skip)")
    ap.add_argument("--docker-deadline", type=float, default=180.0, help="(b) seconds docker may take to start them")
    ap.add_argument("--tags", type=int, default=2000, help="(c) image.tag calls (default 2000)")
    ap.add_argument("--lifecycles", type=int, default=60, help="(c) container runs (default 60)")
    ap.add_argument("--events", type=int, default=20000, help="(c) in-process events per case (default 20000)")
    ap.add_argument("--parts", default="abc", help="which parts to run (default abc)")
    ap.add_argument("--no-docker", action="store_true", help="leave dockerd out")
    ap.add_argument("--docker-cli", default="/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker",
                    help="docker CLI (default Debian's /usr/bin/docker, the dockerd's own version)")
    ap.add_argument("--results", type=Path, default=BENCH / "results", help="where daemon.json/.md go")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/daemon.py: needs root", file=sys.stderr)
        return 1

    started = time.monotonic()
    load_before = rt._loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bd-"))
    cgroup_parent = f"corral-bench-{uuid.uuid4().hex[:12]}"
    problems: list[str] = []
    skipped: list[str] = []
    result: dict[str, Any] = {"config": " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                  if k not in ("results",))}
    corral_cmd = rt._corral_command()
    corral_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    corral_env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    daemons: list[Any] = []
    part_a: PartA | None = None
    docker: DockerDaemon | None = None
    failed = None
    try:
        log(f"bench: temp dir {tmp}, cgroup parent {cgroup_parent}")
        rootfs = rt.make_rootfs(tmp / "rootfs")
        if not args.no_docker and ("a" in args.parts or "b" in args.parts):
            if shutil.which("dockerd") is None:
                skipped.append("docker: dockerd is not installed (apt-get install docker.io)")
            else:
                tar = tmp / "rootfs.tar"
                subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
                docker = DockerDaemon(tmp, cgroup_parent, args.docker_cli)
                daemons.append(docker)
                log("bench: starting dockerd")
                try:
                    docker.start(tar)
                except BenchError as exc:
                    skipped.append(f"docker: {exc}")
                    docker.stop(problems)
                    daemons.remove(docker)
                    docker = None
        if "a" in args.parts or "c" in args.parts:
            main_daemon = CorralDaemon(tmp, "corral-a", cgroup_parent, corral_cmd, corral_env)
            daemons.append(main_daemon)
            log("bench: starting corral daemon (a, c)")
            main_daemon.start()

        if "a" in args.parts:
            part_a = PartA(tmp, cgroup_parent, main_daemon, docker, rootfs, corral_env)
            log("(a) exit-status sanity (sh -c 'exit 3')")
            sanity = part_a.sanity()
            log(f"(a) {args.warmup} warm-up + {args.runs} counted rounds of {', '.join(part_a.paths)}")
            samples = part_a.measure(args.runs, args.warmup)
            stats = {p: rt.summarize(v) for p, v in samples.items()}
            med = {p: s["median_ms"] for p, s in stats.items()}
            ratios = {"corral/crun": med["corral"] / med["crun"]}
            if "docker" in med:
                ratios = {"docker/corral": med["docker"] / med["corral"], **ratios,
                          "docker/crun": med["docker"] / med["crun"],
                          "docker-api/corral-rpc": med["docker-api"] / med["corral-rpc"]}
            result["a"] = {"sanity": sanity, "stats": stats, "ratios": ratios,
                           "samples_ms": {p: [round(s.seconds * 1000, 3) for s in v] for p, v in samples.items()}}
            if not all(s["ok"] for s in sanity.values()):
                problems.extend(f"(a) {p}: sh -c 'exit 3' came back as {s['exit_status']}: {s['stderr']}"
                                for p, s in sanity.items() if not s["ok"])

        if "b" in args.parts:
            b: dict[str, Any] = {}
            bd = CorralDaemon(tmp, "corral-b", cgroup_parent, corral_cmd, corral_env)
            daemons.append(bd)
            log("bench: starting a fresh corral daemon (b)")
            bd.start()
            b["corral"] = part_b_corral(bd, cgroup_parent, args.count, args.corral_count, args.cli_count, 16)
            bd.stop(problems)
            daemons.remove(bd)
            if docker is not None:
                b["docker"] = part_b_docker(docker, cgroup_parent, args.count, 8, args.docker_deadline)
                if b["docker"].get("note"):
                    b["note"] = b["docker"]["note"]
            result["b"] = b

        if "c" in args.parts:
            c: dict[str, Any] = {"daemon": [], "inprocess": []}
            log(f"(c) daemon fan-out: {args.tags} image.tag calls, 10 RPC subscribers")
            c["daemon"].append(fanout_daemon(main_daemon, "image.tag", args.tags, 8))
            log(f"(c) daemon fan-out: {args.lifecycles} container runs, 10 RPC subscribers")
            c["daemon"].append(fanout_daemon(main_daemon, "container run", args.lifecycles, 4))
            for batch, sync, n in ((1, "FULL", args.events), (100, "FULL", args.events), (1, "NORMAL", args.events)):
                log(f"(c) in-process fan-out: batch {batch}, synchronous={sync}")
                c["inprocess"].append(fanout_inprocess(tmp, n, batch, sync, max_s=10.0))
            for r in c["daemon"] + c["inprocess"]:
                if not r["every_seq_once"]:
                    problems.append(f"(c) fan-out lost, duplicated or reordered events: {r['wrong'][:3]}")
            result["c"] = c
    except BenchError as exc:
        failed = str(exc)
    finally:
        if part_a is not None:
            part_a.close(problems)
        for d in reversed(daemons):
            d.stop(problems)
        clean_up(tmp, cgroup_parent, problems)
    if failed:
        print(f"bench/daemon.py: {failed}", file=sys.stderr)
        for p in problems:
            print(f"bench/daemon.py: {p}", file=sys.stderr)
        return 1

    result["environment"] = environment(docker)
    result["environment"]["load average (1/5/15 min) before / after"] = f"{load_before} / {rt._loadavg()}"
    result["targets"] = verdicts(result)
    result["skipped"] = skipped
    result["problems"] = problems
    result["wall_s"] = round(time.monotonic() - started, 1)
    rt.write_results(args.results, "daemon", result, render_markdown(result))

    print(render_markdown(result))
    print(f"wrote {args.results / 'daemon.json'} and {args.results / 'daemon.md'} ({result['wall_s']} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
