#!/usr/bin/env python3
"""Side-by-side start-up cost of one container: corral, crun, runc, and corral's library.

What one sample is (all run the same busybox bundle's ``/bin/true``):

- ``corral``: ``corral runtime --root R run -b B ID`` as a whole process, from
  spawn to reaped exit: interpreter start-up, imports, create, run, delete.
- ``runc``: ``runc --root R run -b B ID``, timed the same way.
- ``crun``: ``crun --root R run -b B ID``, timed the same way, but spawned by a
  helper that lives in a private mount namespace (see below).
- ``library``: in this already-warm process, ``Container.create`` ->
  ``wait_exec`` -> ``wait`` -> ``delete(force=True)``: one container run
  without interpreter start-up (what the daemon's pre-imported spawner pays).

Rules this file lives by:

Rule 1: interleave. Every round runs each path once, the order rotating from
round to round, so drift (page cache, CPU frequency, a noisy neighbour) lands
on all paths alike. Warm-up rounds come first and are not counted.

Rule 2: time every subprocess the same way: ``posix_spawn`` + ``waitpid``
around ``perf_counter``, stdin and stdout on /dev/null, stderr in a file kept
for the error message. The crun helper imports this same file and calls the
same function, so the launcher costs the same on both sides (the bench prints
that floor, measured from both places, next to the results).

Rule 3: trust nothing that did not succeed. Every counted run must exit 0, and
before any timing each path runs ``sh -c 'exit 3'`` once and must report 3.

Rule 4: leave nothing behind. Every cgroupsPath is relative and under a parent
``corral-bench-<uuid>``; at the end every directory under that parent is
rmdir'd, in every hierarchy and for every way a tool maps a relative path
(own cgroup per hierarchy, as runc and corral do; own unified cgroup, which
crun 1.8 uses for every hierarchy on hybrid hosts). Nothing else is touched.

Why a helper for crun: crun 1.8 refuses a hybrid host unless
/sys/fs/cgroup/unified/cgroup.controllers reads empty. The helper is started
once as ``unshare -m --propagation private python bench/run.py --crun-helper``,
bind-mounts an empty file over that file in its own mount namespace, and then
spawns and times crun runs on request (one JSON line in, one out). Rejected:
``unshare -m sh -c 'mount ...; exec crun ...'`` per run, with the unshare+sh
overhead measured on a no-op and subtracted: a difference of two noisy
medians, for a tool whose whole run is a few milliseconds.

Standard library and the project only. Exit status: 0 whatever the targets
say; 1 when a run failed, a sanity check failed or clean-up left something.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
UNIFIED_CONTROLLERS = Path("/sys/fs/cgroup/unified/cgroup.controllers")
PATHS = ("corral", "runc", "crun", "library", "spawner")
LIBRARY_TARGET_FACTOR = 1.5


class BenchError(Exception):
    """Something broke: the numbers can't be trusted."""


class Sample(NamedTuple):
    rc: int
    seconds: float        # wall, spawn to reaped exit (library: create to delete)
    cpu: float            # user+sys seconds, the process tree's (library: ours and our children's)
    stderr: str = ""


# --- timing one process (shared with the crun helper) -------------------------


def timed_spawn(argv: list[str], err_fd: int, env: dict[str, str] | None = None) -> tuple[int, float, float]:
    """Run ``argv`` (absolute argv[0]) to completion; (exit code, wall seconds, CPU seconds).

    stderr goes to ``err_fd``, truncated first; stdin and stdout to /dev/null.
    CPU is user+sys of the process and of every descendant it reaped (wait4's
    rusage), so a runtime's init and its container process are in it.
    """
    os.ftruncate(err_fd, 0)
    os.lseek(err_fd, 0, os.SEEK_SET)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_DUP2, err_fd, 2),
    ]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ if env is None else env, file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    return os.waitstatus_to_exitcode(status), elapsed, usage.ru_utime + usage.ru_stime


def read_err(err_fd: int) -> str:
    os.lseek(err_fd, 0, os.SEEK_SET)
    return os.read(err_fd, 1 << 16).decode(errors="replace").strip()


def crun_helper(empty: str) -> int:
    """The helper's main loop; runs inside ``unshare -m --propagation private``."""
    if UNIFIED_CONTROLLERS.exists() and UNIFIED_CONTROLLERS.read_text().strip():
        subprocess.run(["mount", "--bind", empty, str(UNIFIED_CONTROLLERS)], check=True)
        if UNIFIED_CONTROLLERS.read_text().strip():
            print(json.dumps({"error": f"{UNIFIED_CONTROLLERS} still lists controllers after the bind mount"}), flush=True)
            return 1
    err = tempfile.TemporaryFile()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        argv = json.loads(line)
        rc, seconds, cpu = timed_spawn(argv, err.fileno())
        print(json.dumps({"rc": rc, "seconds": seconds, "cpu": cpu, "stderr": read_err(err.fileno()) if rc else ""}),
              flush=True)
    return 0


class CrunHelper:
    """The parent's handle on the helper process (stdin/stdout JSON lines)."""

    def __init__(self, empty: Path) -> None:
        unshare = _which("unshare")
        self.proc = subprocess.Popen(
            [unshare, "-m", "--propagation", "private", sys.executable, str(Path(__file__).resolve()),
             "--crun-helper", str(empty)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        hello = self._reply()
        if "error" in hello:
            raise BenchError(f"crun helper: {hello['error']}")

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"crun helper exited (status {self.proc.wait()})")
        return json.loads(line)

    def run(self, argv: list[str]) -> Sample:
        self.proc.stdin.write(json.dumps(argv) + "\n")
        reply = self._reply()
        return Sample(reply["rc"], reply["seconds"], reply["cpu"], reply["stderr"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _which(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BenchError(f"{name} is not installed (Debian package {name})")
    return path


# --- the bundle and the cgroups -------------------------------------------------


def make_rootfs(path: Path) -> Path:
    from runtime.images import BUSYBOX, make_busybox_rootfs

    if not BUSYBOX.exists():
        raise BenchError(f"{BUSYBOX} is missing (Debian package busybox-static)")
    return make_busybox_rootfs(path)


def runc_spec(workdir: Path) -> dict:
    """The config.json that ``runc spec`` writes."""
    d = workdir / "spec"
    d.mkdir()
    subprocess.run([_which("runc"), "spec"], cwd=d, check=True)
    return json.loads((d / "config.json").read_text())


def write_bundle(path: Path, base: dict, rootfs: Path, args: list[str], cgroup: str) -> Path:
    config = json.loads(json.dumps(base))
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["root"]["path"] = str(rootfs)
    config["linux"]["cgroupsPath"] = cgroup
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path


def _cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, mount root, hierarchy key as /proc/self/cgroup names it)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fields = left.split()
        fstype, _source, options = right.split()[:3]
        if fstype == "cgroup2":
            out.append((fields[4], fields[3], ""))
        elif fstype == "cgroup":
            names = [o for o in options.split(",") if o in _V1_CONTROLLERS or o.startswith("name=")]
            out.append((fields[4], fields[3], ",".join(names)))
    return out


_V1_CONTROLLERS = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
                   "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"}


def cgroup_dirs(parent: str) -> list[Path]:
    """Every directory a relative cgroup ``parent`` may map to, in each hierarchy.

    Two mappings: below our own cgroup in that hierarchy (runc, corral), and
    below our own *unified* cgroup in every hierarchy (crun 1.8 on a hybrid
    host puts e.g. the memory cgroup there). ``parent`` holds a fresh uuid,
    so whatever exists under these names is the bench's own.
    """
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, key, path = line.split(":", 2)
        own[key] = path
    bases = {own.get(""), "/"}
    dirs: list[Path] = []
    for mount_point, mount_root, key in _cgroup_mounts():
        for base in {own.get(key), *bases} - {None}:
            rel = os.path.relpath(base, mount_root)
            if rel.startswith(".."):
                continue          # that base is not visible through this mount
            d = Path(os.path.normpath(Path(mount_point) / rel / parent))
            if d not in dirs:
                dirs.append(d)
    return dirs


def remove_cgroup_tree(parent: str) -> list[str]:
    """rmdir every cgroup under ``parent`` (deepest first); returns what could not go."""
    left = []
    for top in cgroup_dirs(parent):
        if not top.is_dir():
            continue
        subdirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for d in subdirs + [top]:
            try:
                d.rmdir()
            except OSError as exc:
                left.append(f"{d} ({exc.strerror})")
    return left


def leaked_cgroups(parent: str) -> list[str]:
    """Container cgroups still there: a tool's ``run`` should have removed its own."""
    return sorted(str(c) for d in cgroup_dirs(parent) if d.is_dir() for c in d.iterdir() if c.is_dir())


# --- the bench --------------------------------------------------------------------


class Bench:
    """Owns the temp dir, the bundles, the helper and the cgroup parent; ``close()`` removes them."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="corral-bench-"))
        self.cgroup_parent = f"corral-bench-{uuid.uuid4().hex[:12]}"
        self.helper: CrunHelper | None = None
        self.err = tempfile.TemporaryFile(dir=self.tmp)
        self.roots = {p: self.tmp / "state" / p for p in PATHS}
        self.bundles: dict[tuple[str, str], Path] = {}
        self.serial = 0
        self.problems: list[str] = []

    def set_up(self) -> None:
        rootfs = make_rootfs(self.tmp / "rootfs")
        base = runc_spec(self.tmp)
        # One bundle per path, differing only in cgroupsPath, so a cgroup a tool
        # leaks is never reused by another and can be traced to it.
        for p in PATHS:
            for kind, args in (("true", ["/bin/true"]), ("exit3", ["/bin/sh", "-c", "exit 3"])):
                self.bundles[p, kind] = write_bundle(self.tmp / "bundles" / p / kind, base, rootfs, args,
                                                     f"{self.cgroup_parent}/{p}-{kind}")
        empty = self.tmp / "empty"
        empty.write_bytes(b"")
        self.corral = _corral_command()
        # Bytecode as an installed corral has it: pip compiles a wheel's .pyc at
        # install time, but a work tree under PYTHONDONTWRITEBYTECODE=1 (set in
        # some dev shells) recompiles every module edited since its .pyc was
        # written, on every run. A private cache, filled by the warm-up rounds,
        # takes that out without writing into the tree.
        self.corral_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.corral_env["PYTHONPYCACHEPREFIX"] = str(self.tmp / "pycache")
        self.runc = _which("runc")
        self.crun = _which("crun")
        self.true = _which("true")
        self.helper = CrunHelper(empty)
        from runtime.container import Container   # warm: the library path pays no import
        from runtime.spawner import Spawner
        self.Container = Container
        self.spawner = Spawner.start()
        self.cgroup_base = Path("/proc/self/cgroup").read_text()

    def _next_id(self, p: str) -> str:
        self.serial += 1
        return f"{p}-{self.serial}"

    def run_once(self, p: str, kind: str = "true") -> Sample:
        """One run of path ``p``."""
        bundle, root, cid = str(self.bundles[p, kind]), str(self.roots[p]), self._next_id(p)
        if p == "library":
            return self._library_once(root, cid, bundle)
        if p == "spawner":
            return self._spawner_once(cid, bundle)
        if p == "crun":
            return self.helper.run([self.crun, "--root", root, "run", "-b", bundle, cid])
        if p == "corral":
            argv, env = [*self.corral, "runtime", "--root", root, "run", "-b", bundle, cid], self.corral_env
        else:
            argv, env = [self.runc, "--root", root, "run", "-b", bundle, cid], None
        rc, seconds, cpu = timed_spawn(argv, self.err.fileno(), env)
        return Sample(rc, seconds, cpu, read_err(self.err.fileno()) if rc else "")

    def _library_once(self, root: str, cid: str, bundle: str) -> Sample:
        """One container run the way a warm spawner does it, in this process:

            container, child = Container.create(root, id, bundle, detached=False)
            child.wait_exec(); status = child.wait(); child.close(); container.delete(force=True)
        """
        from runtime.errors import HostError
        r0 = _cpu_self_and_children()
        t0 = time.perf_counter()
        try:
            container, child = self.Container.create(Path(root), cid, bundle, detached=False)
            try:
                child.wait_exec()
                status = child.wait()
            finally:
                child.close()
                container.delete(force=True)
        except HostError as exc:
            return Sample(getattr(exc, "exit_code", 1) or 1, time.perf_counter() - t0, 0.0, str(exc))
        elapsed = time.perf_counter() - t0
        return Sample(status.exit_code, elapsed, _cpu_self_and_children() - r0)

    def _spawner_once(self, cid: str, bundle: str) -> Sample:
        """One container run the way the daemon does it, with its warm spawner helper:

            cgroup.create(); cgroup.apply(...)              (the daemon, here)
            child = spawner.spawn(config, cgroup=...)      (cloned by the helper, our child)
            child.wait_exec(); child.wait(); cgroup.remove()
        """
        from runtime.cgroups import open_cgroup, resources_from_oci
        from runtime.errors import HostError
        config = json.loads((Path(bundle) / "config.json").read_text())
        path = f"{self.cgroup_parent}/{cid}"
        r0 = _cpu_self_and_children()
        t0 = time.perf_counter()
        try:
            cgroup = open_cgroup(path, self_cgroup=self.cgroup_base)
            cgroup.create()
            try:
                cgroup.apply(resources_from_oci(config["linux"].get("resources", {})))
                child = self.spawner.spawn(config, bundle=bundle, cgroup=path, cgroup_base=self.cgroup_base)
                try:
                    child.wait_exec()
                    status = child.wait()
                finally:
                    child.close()
            finally:
                cgroup.remove()
        except HostError as exc:
            return Sample(getattr(exc, "exit_code", 1) or 1, time.perf_counter() - t0, 0.0, str(exc))
        elapsed = time.perf_counter() - t0
        return Sample(status.exit_code, elapsed, _cpu_self_and_children() - r0)

    def floor(self, where: str) -> Sample:
        """The launcher's own cost: a host /bin/true, spawned from here or from the helper."""
        if where == "helper":
            return self.helper.run([self.true])
        rc, seconds, cpu = timed_spawn([self.true], self.err.fileno())
        return Sample(rc, seconds, cpu)

    def close(self) -> None:
        # Containers a failed run left: force-delete them before their cgroups go.
        for p in PATHS:
            root = self.roots[p]
            if not root.is_dir():
                continue
            for entry in sorted(root.iterdir()):
                if not entry.is_dir():
                    continue
                self.problems.append(f"{p}: container {entry.name} was left in {root}")
                try:
                    if p == "library":
                        self.Container.load(root, entry.name).delete(force=True)
                    elif p == "crun" and self.helper is not None:
                        self.helper.run([self.crun, "--root", str(root), "delete", "-f", entry.name])
                    elif p == "runc":
                        subprocess.run([self.runc, "--root", str(root), "delete", "-f", entry.name],
                                       capture_output=True, timeout=30)
                    elif p == "corral":
                        subprocess.run([*self.corral, "runtime", "--root", str(root), "delete", "-f", entry.name],
                                       capture_output=True, timeout=30)
                except Exception as exc:  # noqa: BLE001 - clean-up goes on
                    self.problems.append(f"{p}: could not delete {entry.name}: {exc}")
        if self.helper is not None:
            self.helper.close()
        if getattr(self, "spawner", None) is not None:
            self.spawner.close()
        for leak in leaked_cgroups(self.cgroup_parent):
            self.problems.append(f"cgroup left by a run: {leak}")
        for left in remove_cgroup_tree(self.cgroup_parent):
            self.problems.append(f"could not remove cgroup {left}")
        self.err.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _cpu_self_and_children() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _corral_command() -> list[str]:
    exe = Path(sys.executable).parent / "corral"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "supervisor.cli"]


def measure(bench: Bench, runs: int, warmup: int, log) -> dict[str, list[Sample]]:
    """Warm-up rounds, then ``runs`` interleaved rounds; samples per path, plus the floors."""
    names = [*PATHS, "floor-main", "floor-helper"]
    samples: dict[str, list[Sample]] = {n: [] for n in names}
    for rnd in range(warmup + runs):
        k = rnd % len(names)
        for name in names[k:] + names[:k]:           # rotate the order every round
            if name.startswith("floor-"):
                s = bench.floor(name.removeprefix("floor-"))
            else:
                s = bench.run_once(name)
            if s.rc != 0:
                raise BenchError(f"{name} run {rnd + 1} exited {s.rc}: {s.stderr or '(no stderr)'}")
            if rnd >= warmup:
                samples[name].append(s)
        if rnd + 1 == warmup:
            log(f"  warm-up: {warmup} round(s) done")
        elif rnd >= warmup and (rnd + 1 - warmup) % 10 == 0:
            log(f"  {rnd + 1 - warmup}/{runs} rounds")
    return samples


def sanity(bench: Bench) -> dict[str, dict]:
    """``sh -c 'exit 3'`` once per path: the container's status must come back as 3."""
    out = {}
    for p in PATHS:
        s = bench.run_once(p, "exit3")
        out[p] = {"exit_status": s.rc, "expected": 3, "ok": s.rc == 3, "stderr": s.stderr}
    return out


def summarize(samples: list[Sample]) -> dict[str, float]:
    ms = sorted(s.seconds * 1000 for s in samples)
    return {
        "n": len(ms),
        "cpu_median_ms": statistics.median(s.cpu * 1000 for s in samples),
        "median_ms": statistics.median(ms),
        "p90_ms": statistics.quantiles(ms, n=10, method="inclusive")[8] if len(ms) > 1 else ms[0],
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
        "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def write_results(directory: Path, name: str, result: dict, markdown: str) -> None:
    """``directory/name.json`` (every figure) and ``directory/name.md`` (the table people read)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (directory / f"{name}.md").write_text(markdown)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def environment() -> dict[str, str]:
    try:
        from importlib.metadata import version
        corral = version("corral")
    except Exception:  # noqa: BLE001 - not installed: run from the tree
        corral = "unknown"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    mode = "hybrid" if UNIFIED_CONTROLLERS.exists() else ("unified" if Path("/sys/fs/cgroup/cgroup.controllers").exists()
                                                         else "legacy")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpu": f"{cpu} x{os.cpu_count()}",
        "cgroups": mode,
        "python": platform.python_version(),
        "corral": f"{corral} (git {commit})",
        "runc": _version(["runc", "--version"]),
        "crun": _version(["crun", "--version"]),
        "busybox": _version(["/bin/busybox"]).split(" multi-call")[0],
    }


def verdicts(stats: dict[str, dict]) -> tuple[dict[str, float], list[dict]]:
    med = {k: v["median_ms"] for k, v in stats.items()}
    ratios = {
        "corral/runc": med["corral"] / med["runc"],
        "corral/crun": med["corral"] / med["crun"],
        "library/crun": med["library"] / med["crun"],
        "library/runc": med["library"] / med["runc"],
        "spawner/crun": med["spawner"] / med["crun"],
        "spawner/runc": med["spawner"] / med["runc"],
    }
    targets = [
        {"target": "faster than runc: corral CLI median < runc median",
         "pass": med["corral"] < med["runc"], "detail": f"{med['corral']:.1f} ms vs {med['runc']:.1f} ms"},
        {"target": "faster than runc: library median < runc median",
         "pass": med["library"] < med["runc"], "detail": f"{med['library']:.1f} ms vs {med['runc']:.1f} ms"},
        {"target": "faster than runc: warm spawner median < runc median",
         "pass": med["spawner"] < med["runc"], "detail": f"{med['spawner']:.1f} ms vs {med['runc']:.1f} ms"},
        {"target": f"warm library path within {LIBRARY_TARGET_FACTOR}x of crun's whole-process time",
         "pass": med["library"] <= LIBRARY_TARGET_FACTOR * med["crun"],
         "detail": f"{med['library']:.1f} ms vs {LIBRARY_TARGET_FACTOR}x {med['crun']:.1f} = "
                   f"{LIBRARY_TARGET_FACTOR * med['crun']:.1f} ms"},
        {"target": f"warm spawner path within {LIBRARY_TARGET_FACTOR}x of crun's whole-process time",
         "pass": med["spawner"] <= LIBRARY_TARGET_FACTOR * med["crun"],
         "detail": f"{med['spawner']:.1f} ms vs {LIBRARY_TARGET_FACTOR}x {med['crun']:.1f} = "
                   f"{LIBRARY_TARGET_FACTOR * med['crun']:.1f} ms"},
    ]
    return ratios, targets


_LABELS = {
    "corral": "`corral runtime run` (whole process)",
    "runc": "`runc run` (whole process)",
    "crun": "`crun run` (whole process)",
    "library": "corral library, warm process",
    "spawner": "corral warm spawner (the daemon's path)",
    "floor-main": "floor: host `/bin/true` spawned by the bench",
    "floor-helper": "floor: host `/bin/true` spawned by the crun helper",
}


def render_table(stats: dict[str, dict]) -> list[str]:
    rows = ["| path | median ms | p90 ms | min ms | mean ms | CPU median ms | n |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in stats.items():
        rows.append(f"| {_LABELS[name]} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['min_ms']:.1f} "
                    f"| {s['mean_ms']:.1f} | {s['cpu_median_ms']:.1f} | {s['n']} |")
    return rows


def render_markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# corral runtime start-up: corral vs crun vs runc",
        "",
        f"Date {env['date']}; `bench/run.py --runs {result['config']['runs']}` "
        f"({result['config']['warmup']} warm-up rounds, interleaved round-robin). See bench/README.md.",
        "",
        "Each sample is one run of `/bin/true` from a busybox OCI bundle (runc's default spec: "
        "pid, network, ipc, uts, mount namespaces; relative cgroupsPath). Whole-process paths are timed "
        "from spawn to reaped exit; crun is spawned by a helper in a private mount namespace (it needs "
        "an empty unified cgroup.controllers on this hybrid host), timed there the same way; the floor "
        "rows show that both launchers cost the same. CPU is user+sys of the process tree (wait4 rusage). "
        "The corral CLI runs with a private bytecode cache filled during warm-up, as an installed corral "
        "has its .pyc files.",
        "",
        *render_table(result["stats"]),
        "",
        "| ratio of medians | value |",
        "| --- | ---: |",
        *(f"| {k} | {v:.2f}x |" for k, v in result["ratios"].items()),
        "",
        "| target | result | medians |",
        "| --- | --- | --- |",
        *(f"| {t['target']} | {'PASS' if t['pass'] else 'MISS'} | {t['detail']} |" for t in result["targets"]),
        "",
        "Exit-status sanity (`sh -c 'exit 3'`): "
        + ", ".join(f"{p} {'ok' if s['ok'] else 'WRONG'} ({s['exit_status']})" for p, s in result["sanity"].items()),
        "",
        "| environment | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in env.items()),
        "",
    ]
    if result["problems"]:
        lines += ["Problems:", "", *(f"- {p}" for p in result["problems"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=30, help="counted rounds (default 30)")
    ap.add_argument("--warmup", type=int, default=3, help="uncounted rounds first (default 3)")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results",
                    help="where runtime.json and runtime.md go (default bench/results)")
    ap.add_argument("--crun-helper", metavar="EMPTY_FILE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.crun_helper:
        return crun_helper(args.crun_helper)
    if args.runs < 2:
        ap.error("--runs must be at least 2")
    if os.geteuid() != 0:
        print("bench/run.py: needs root (it creates namespaces and cgroups)", file=sys.stderr)
        return 1
    sys.path.insert(0, str(REPO))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    load_before = _loadavg()
    bench = Bench()
    result: dict = {"config": {"runs": args.runs, "warmup": args.warmup}}
    failed = None
    try:
        log(f"bench: building the bundle in {bench.tmp} (cgroup parent {bench.cgroup_parent})")
        bench.set_up()
        log("bench: exit-status sanity (sh -c 'exit 3') for each path")
        result["sanity"] = sanity(bench)
        log(f"bench: {args.warmup} warm-up + {args.runs} counted rounds of {', '.join(PATHS)}")
        samples = measure(bench, args.runs, args.warmup, log)
    except BenchError as exc:
        failed = str(exc)
    finally:
        bench.close()
    if failed:
        print(f"bench/run.py: {failed}", file=sys.stderr)
        for p in bench.problems:
            print(f"bench/run.py: {p}", file=sys.stderr)
        return 1

    result["environment"] = environment()
    result["environment"]["load average (1/5/15 min) before / after"] = f"{load_before} / {_loadavg()}"
    result["stats"] = {name: summarize(v) for name, v in samples.items()}
    result["ratios"], result["targets"] = verdicts(result["stats"])
    result["samples_ms"] = {name: [round(s.seconds * 1000, 3) for s in v] for name, v in samples.items()}
    result["cpu_samples_ms"] = {name: [round(s.cpu * 1000, 3) for s in v] for name, v in samples.items()}
    result["problems"] = bench.problems
    result["wall_s"] = round(time.monotonic() - started, 1)

    write_results(args.results, "runtime", result, render_markdown(result))

    print("\n".join(render_table(result["stats"])))
    print()
    for k, v in result["ratios"].items():
        print(f"{k:>14}: {v:.2f}x")
    print()
    for t in result["targets"]:
        print(f"{'PASS' if t['pass'] else 'MISS'}  {t['target']}  ({t['detail']})")
    bad_sanity = [p for p, s in result["sanity"].items() if not s["ok"]]
    for p in bad_sanity:
        s = result["sanity"][p]
        print(f"SANITY  {p}: sh -c 'exit 3' came back as {s['exit_status']} {s['stderr']}")
    for p in bench.problems:
        print(f"PROBLEM  {p}")
    print(f"\nwrote {args.results / 'runtime.json'} and {args.results / 'runtime.md'} ({result['wall_s']} s)")
    return 1 if bad_sanity or bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
