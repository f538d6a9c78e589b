"""Fixtures for tests on the real kernel: a busybox OCI bundle, a private cgroup
parent and state root, removed whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runtime.images import BUSYBOX, make_busybox_rootfs

REPO = Path(__file__).resolve().parents[2]


RUNTIME_TIMEOUT_S = 30


def corral_command() -> list[str]:
    """`corral` as installed in the venv that runs the tests."""
    exe = Path(sys.executable).parent / "corral"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "supervisor.cli"]


def runtime_argv(state_root: Path, *args: str) -> list[str]:
    """`corral runtime --root STATE ARGS...`."""
    return [*corral_command(), "runtime", "--root", str(state_root), *args]


def corral(state_root: Path, *args: str, timeout: float = RUNTIME_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run one `corral runtime` verb to completion, output captured."""
    return subprocess.run(runtime_argv(state_root, *args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def corral_detached(state_root: Path, logs: Path, *args: str,
                    timeout: float = RUNTIME_TIMEOUT_S) -> subprocess.CompletedProcess:
    """For create / run -d: the container keeps our stdio, so it gets files, not pipes
    we would wait on forever. ``stderr`` of the result holds what the command wrote."""
    name = args[-1]
    with open(logs / f"{name}.out", "w") as out, open(logs / f"{name}.err", "w") as err:
        done = subprocess.run(runtime_argv(state_root, *args), stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err, timeout=timeout)
    done.stderr = (logs / f"{name}.err").read_text()
    return done


def run_detached(state_root: Path, bundle_dir: Path, cid: str, logs: Path, *,
                 timeout: float = RUNTIME_TIMEOUT_S) -> None:
    """`run -d`, which must succeed."""
    done = corral_detached(state_root, logs, "run", "-d", "-b", str(bundle_dir), cid, timeout=timeout)
    assert done.returncode == 0, done.stderr


def container_state(state_root: Path, cid: str) -> dict:
    out = corral(state_root, "state", cid)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_for(predicate, *, timeout: float = 10.0, what: str = "condition"):
    """Poll ``predicate`` every 50 ms until it returns something true; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def with_resources(**sections):
    """A Bundle.write edit that sets linux.resources sections."""
    def edit(config: dict) -> None:
        config["linux"].setdefault("resources", {}).update(sections)
    return edit


def make_rootfs(path: Path) -> Path:
    """A minimal root: busybox-static and its applets in /bin (Debian's busybox-static)."""
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (Debian package busybox-static; make setup installs it)")
    return make_busybox_rootfs(path)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


def runc_spec() -> dict:
    """The config.json that `runc spec` writes, straight from runc."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (Debian package runc; make setup installs it)")
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"corral-spec-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        subprocess.run(["runc", "spec"], cwd=tmp, check=True)
        return json.loads((tmp / "config.json").read_text())
    finally:
        shutil.rmtree(tmp)


class Bundle:
    """An OCI bundle on a shared busybox rootfs; ``write(args, **edits)`` sets config.json."""

    def __init__(self, path: Path, rootfs: Path, cgroup_parent: str) -> None:
        self.path = path
        self.rootfs = rootfs
        self.cgroup_parent = cgroup_parent
        self.base = runc_spec()

    def write(self, args: list[str], *, cgroup: str, edit=None) -> Path:
        config = json.loads(json.dumps(self.base))
        config["process"]["terminal"] = False
        config["process"]["args"] = args
        config["root"]["path"] = str(self.rootfs)
        config["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{cgroup}"
        if edit is not None:
            edit(config)
        (self.path / "config.json").write_text(json.dumps(config, indent=2))
        return self.path


def _cgroup_dirs(parent: str) -> list[Path]:
    """Every directory named by a relative cgroup ``parent``, in each hierarchy we are in.

    Also the same name at each hierarchy's root: crun 1.8 takes a relative
    path from there in the memory hierarchy. The name is unique, so it is ours.
    """
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, own = line.split(":", 2)
        for mount in _cgroup_mounts():
            if mount[1] == controllers:
                for d in (Path(mount[0]) / own.lstrip("/") / parent, Path(mount[0]) / parent):
                    if d not in dirs:
                        dirs.append(d)
    return dirs


def _cgroup_mounts() -> list[tuple[str, str]]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ")
        fstype, _source, options = right.split()[:3]
        mountpoint = left.split()[4]
        if fstype == "cgroup2":
            out.append((mountpoint, ""))
        elif fstype == "cgroup":
            names = [o for o in options.split(",") if o not in ("rw", "ro") and "=" not in o or o.startswith("name=")]
            out.append((mountpoint, ",".join(names)))
    return out


def remove_cgroup_tree(parent: str) -> list[str]:
    """rmdir every cgroup under ``parent`` (deepest first); returns what could not go."""
    left = []
    for top in _cgroup_dirs(parent):
        if not top.exists():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [top]:
            try:
                d.rmdir()
            except OSError:
                left.append(str(d))
    return left


@pytest.fixture
def cgroup_parent() -> str:
    """A relative cgroup parent of our own; the test fails if anything is left under it."""
    parent = f"corral-test-{uuid.uuid4().hex[:12]}"
    yield parent
    # The parent itself is ours to remove; a container's cgroup under it is a leak.
    leftovers = [str(c) for d in _cgroup_dirs(parent) if d.exists() for c in d.iterdir() if c.is_dir()]
    left = remove_cgroup_tree(parent)
    assert not left, f"could not remove cgroups: {left}"
    assert not leftovers, f"cgroups left behind under {parent}: {leftovers}"


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path, cgroup_parent: str) -> Bundle:
    path = tmp_path / "bundle"
    path.mkdir()
    return Bundle(path, busybox_rootfs, cgroup_parent)


@pytest.fixture
def state_root(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    yield root
    # Any container a test forgot: force-delete it so no process outlives the test.
    if root.exists():
        for entry in root.iterdir():
            subprocess.run([*corral_command(), "runtime", "--root", str(root), "delete", "--force", entry.name],
                           capture_output=True, timeout=30)
