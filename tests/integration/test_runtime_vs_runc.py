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
