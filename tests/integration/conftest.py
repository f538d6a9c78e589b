"""Fixtures for tests on the real kernel: a busybox OCI bundle, a private cgroup
parent and state root, removed whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")


def corral_command() -> list[str]:
    """`corral` as installed in the venv that runs the tests."""
    exe = Path(sys.executable).parent / "corral"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "supervisor.cli"]


def make_rootfs(path: Path) -> Path:
    """A minimal root: busybox-static and its applets in /bin (Debian's busybox-static)."""
    if not BUSYBOX.exists():
        pytest.skip("busybox-static is not installed (Debian package busybox-static; make setup installs it)")
    (path / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, path / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (path / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "dev", "sys", "tmp", "etc", "root"):
        (path / d).mkdir(exist_ok=True)
    return path


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
