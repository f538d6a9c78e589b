"""The same busybox bundle under corral, runc and crun: same stdout, same exit status.

crun 1.8 refuses this host's hybrid hierarchy unless the empty cgroup2 mount
also lists no controllers; it runs in a private mount namespace where an empty
file is bound over /sys/fs/cgroup/unified/cgroup.controllers, touching nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import runtime_argv

pytestmark = pytest.mark.root

CASES = {
    "echo": ["echo", "hello from the container"],
    "exit 3": ["sh", "-c", "exit 3"],
    "hostname": ["hostname"],
    "id": ["id"],
    "capabilities": ["sh", "-c", "grep ^Cap /proc/self/status"],
    "pid 1": ["sh", "-c", "echo $$"],
    "mount points": ["sh", "-c", "cut -d' ' -f5 /proc/self/mountinfo"],
    "mount types": ["sh", "-c", "cut -d' ' -f5,8 /proc/self/mountinfo"],
    "stderr and status": ["sh", "-c", "echo out; echo err >&2; exit 42"],
}
UNIFIED_CONTROLLERS = Path("/sys/fs/cgroup/unified/cgroup.controllers")


def _runc(state: Path, bundle: Path, cid: str) -> list[str]:
    return ["runc", "--root", str(state), "run", "-b", str(bundle), cid]


def _crun(state: Path, bundle: Path, cid: str) -> list[str]:
    argv = ["crun", "--root", str(state), "run", "-b", str(bundle), cid]
    if UNIFIED_CONTROLLERS.exists() and UNIFIED_CONTROLLERS.read_text().strip():
        empty = state / "empty"
        state.mkdir(parents=True, exist_ok=True)
        empty.write_text("")
        script = f'mount --bind {empty} {UNIFIED_CONTROLLERS} && exec "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]
    return argv


def _corral(state: Path, bundle: Path, cid: str) -> list[str]:
    return runtime_argv(state, "run", "-b", str(bundle), cid)


TOOLS = {"runc": _runc, "crun": _crun, "corral": _corral}


def run_under(tool: str, bundle, args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    if shutil.which(tool if tool != "corral" else "true") is None:
        pytest.skip(f"{tool} is not installed (Debian package {tool}; make setup installs it)")
    cid = f"{tool}-{os.getpid()}"
    b = bundle.write(args, cgroup=cid)
    out = subprocess.run(TOOLS[tool](tmp_path / f"state-{tool}", b, cid), capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_output_as_runc_and_crun(case: str, bundle, tmp_path: Path) -> None:
    results = {tool: run_under(tool, bundle, CASES[case], tmp_path) for tool in TOOLS}
    reference = results["runc"][:2]
    # crun mounts the same points in another order (cgroup hierarchies reversed,
    # masked paths before read-only ones): against crun, compare them as sets.
    unordered = case.startswith("mount")
    same = lambda a, b: (a[0], sorted(a[1].splitlines())) == (b[0], sorted(b[1].splitlines())) if unordered else a == b  # noqa: E731
    if case != "mount types":   # crun masks files with the host's /dev/null (devtmpfs), runc with the container's
        assert same(results["crun"][:2], reference), f"crun and runc disagree, so the case proves nothing: {results}"
    assert results["corral"][:2] == reference, f"corral differs from runc: {results}"
    assert results["corral"][2] == results["runc"][2] == ("err\n" if case == "stderr and status" else "")


# --- spec features: the same config edit under all three runtimes ----------------

def _set(path: str, value):
    """An edit setting config[a][b]... = value for path "a.b..."."""
    def edit(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return edit


def _edits(*edits):
    def edit(config: dict) -> None:
        for e in edits:
            e(config)
    return edit


def _binds(host_dir: Path):
    def edit(config: dict) -> None:
        config["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(host_dir), "options": ["rbind", "rw"]},
            {"destination": "/ro", "type": "bind", "source": str(host_dir), "options": ["rbind", "ro"]},
        ]
    return edit


FEATURES = {
    "user and groups": (
        ["sh", "-c", "id; grep -E '^(Uid|Gid|Groups|Cap)' /proc/self/status"],
        _set("process.user", {"uid": 1000, "gid": 100, "additionalGids": [5, 27]}),
    ),
    "rlimits": (
        ["sh", "-c", "grep -E 'open files|processes|core file' /proc/self/limits"],
        _set("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
                                 {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
                                 {"type": "RLIMIT_CORE", "soft": 0, "hard": 18446744073709551615}]),
    ),
    "oom score": (["cat", "/proc/self/oom_score_adj"], _set("process.oomScoreAdj", 300)),
    "sysctl": (
        ["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced"],
        _set("linux.sysctl", {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}),
    ),
    "devices": (
        ["stat", "-c", "%n %A %u %g %t %T", "/dev/fuse", "/dev/null", "/dev/tty"],
        _set("linux.devices", [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                "fileMode": 0o620, "uid": 0, "gid": 5}]),
    ),
    "umask and cwd": (
        ["sh", "-c", "umask; pwd; touch /tmp/f; stat -c '%a' /tmp/f"],
        _edits(_set("process.user", {"uid": 0, "gid": 0, "umask": 0o077}), _set("process.cwd", "/made/for/you"),
               _set("root.readonly", False)),
    ),
    "environment": (["env"], _set("process.env", ["PATH=/bin", "A=1", "B=two words"])),
    "read-only root": (["sh", "-c", "touch /x; echo status $?"], None),
    "loopback": (["sh", "-c", "cat /sys/class/net/lo/operstate; ip -o addr show lo | cut -d' ' -f2,7"], None),
}


def _feature_cases():
    return sorted(FEATURES) + ["bind mounts", "joined network namespace"]


@pytest.mark.parametrize("case", _feature_cases())
def test_spec_features_same_as_runc_and_crun(case: str, bundle, tmp_path: Path) -> None:
    cleanup = []
    if case == "bind mounts":
        host_dir = tmp_path / "shared"
        host_dir.mkdir()
        args = ["sh", "-c", "echo written > /data/f; cat /data/f; echo x > /ro/g; echo status $?; rm /data/f"]
        edit = _binds(host_dir)
    elif case == "joined network namespace":
        name = f"corral-test-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        cleanup.append(lambda: subprocess.run(["ip", "netns", "delete", name], check=True))
        ns_path = f"/run/netns/{name}"
        own_netns = os.readlink("/proc/self/ns/net")
        args = ["sh", "-c", "readlink /proc/self/ns/net; cat /sys/class/net/lo/operstate"]

        def edit(config: dict) -> None:
            config["linux"]["namespaces"] = [
                {"type": "network", "path": ns_path} if n["type"] == "network" else n
                for n in config["linux"]["namespaces"]]
    else:
        args, edit = FEATURES[case]
    try:
        results = {}
        for tool in TOOLS:
            cid = f"{tool}-{os.getpid()}"
            b = bundle.write(args, cgroup=cid, edit=edit)
            out = subprocess.run(TOOLS[tool](tmp_path / f"state-{tool}", b, cid),
                                 capture_output=True, text=True, timeout=60)
            results[tool] = (out.returncode, out.stdout, out.stderr)
    finally:
        for fn in cleanup:
            fn()
    reference = results["runc"]
    assert reference[0] == 0, f"runc itself failed, so the case proves nothing: {results}"
    assert results["crun"][:2] == reference[:2], f"crun and runc disagree, so the case proves nothing: {results}"
    assert results["corral"] == reference, f"corral differs from runc: {results}"
    if case == "joined network namespace":
        inode = reference[1].splitlines()[0]
        assert inode.startswith("net:[") and inode != own_netns   # the joined one, not ours
