"""The spawner helper: inits cloned for us (CLONE_PARENT), stdio passed, errors carried back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.cgroups import open_cgroup
from runtime.errors import SpawnError
from runtime.spawn import read_start_time
from runtime.spawner import Spawner

from .conftest import REPO, runc_spec

pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]


@pytest.fixture
def spawner():
    s = Spawner.start()
    yield s
    s.close()


def config(rootfs: Path, args: list[str]) -> dict:
    c = runc_spec()
    c["process"].update(terminal=False, args=args)
    c["root"]["path"] = str(rootfs)
    return c


def test_init_is_our_child_and_writes_to_the_stdio_we_pass(spawner, busybox_rootfs, tmp_path, cgroup_parent) -> None:
    cg = open_cgroup(f"{cgroup_parent}/s1")
    cg.create()
    r, w = os.pipe()
    r_in, w_in = os.pipe()
    try:
        child = spawner.spawn(config(busybox_rootfs, ["sh", "-c", "echo $$ from pid 1; read x; exit 7"]),
                              bundle=str(tmp_path), cgroup=f"{cgroup_parent}/s1",
                              cgroup_base=Path("/proc/self/cgroup").read_text(), stdio=(r_in, w, 2))
        os.close(w)
        os.close(r_in)
        child.wait_exec()
        # In the cgroup we named, in every hierarchy (seen from here: `runc spec`
        # on a v2 host adds a cgroup namespace, which hides the path inside).
        lines = Path(f"/proc/{child.pid}/cgroup").read_text().splitlines()
        os.close(w_in)                            # EOF on its stdin: `read` returns
        # waitid(P_PIDFD) succeeds only for our own child: CLONE_PARENT made it ours.
        assert read_start_time(child.pid) is not None
        assert child.wait().exit_code == 7
        child.close()
        out = os.read(r, 4096).decode()
    finally:
        os.close(r)
        cg.remove()
    assert out.splitlines() == ["1 from pid 1"]
    # Every hierarchy: the v1 ones joined by the init itself, a v2 one by clone3 (CLONE_INTO_CGROUP).
    assert lines and all(line.endswith(f"/{cgroup_parent}/s1") for line in lines), lines


def test_without_clone_into_cgroup_the_init_joins_every_hierarchy_itself(busybox_rootfs, tmp_path,
                                                                           cgroup_parent) -> None:
    # A kernel before 5.7 has no CLONE_INTO_CGROUP: clone3 answers ENOSYS (or E2BIG), spawn
    # clones plainly and the init writes itself into the v2 hierarchy too. spawn_init clones,
    # which only a single-threaded process may do (pytest is not one): a fresh interpreter.
    script = textwrap.dedent("""
        import errno, json, os, sys
        from protocols.runtime_spec import parse_spec
        from runtime import _syscalls
        from runtime.cgroups import open_cgroup
        from runtime.spawn import spawn_init

        real_clone = _syscalls.clone

        def clone_before_5_7(flags, *, cgroup_fd=None):
            if cgroup_fd is not None:
                raise OSError(errno.ENOSYS, "clone3: Function not implemented")
            return real_clone(flags)

        _syscalls.clone = clone_before_5_7
        cg = open_cgroup(sys.argv[3])
        cg.create()
        r, w = os.pipe()
        try:
            child = spawn_init(parse_spec(json.loads(sys.argv[1])), bundle=sys.argv[2], cgroup=cg,
                               stdio=(r, 1, 2))
            child.wait_exec()
            print(open(f"/proc/{child.pid}/cgroup").read(), end="")
            os.close(w)                        # EOF: its `read` returns
            code = child.wait().exit_code
            child.close()
        finally:
            cg.remove()
        sys.exit(code)
    """)
    doc = config(busybox_rootfs, ["sh", "-c", "read x; exit 5"])
    done = subprocess.run([sys.executable, "-c", script, json.dumps(doc), str(tmp_path), f"{cgroup_parent}/old"],
                          capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL,
                          check=False)
    assert (done.returncode, done.stderr) == (5, ""), done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.endswith(f"/{cgroup_parent}/old") for line in lines), lines


def test_a_cgroup_that_was_never_made_is_an_error_not_a_crash(spawner, busybox_rootfs, tmp_path,
                                                                cgroup_parent) -> None:
    with pytest.raises(SpawnError, match=f"failed to start the container's init: .*{cgroup_parent}/never-made"):
        spawner.spawn(config(busybox_rootfs, ["true"]), bundle=str(tmp_path), cgroup=f"{cgroup_parent}/never-made",
                      cgroup_base=Path("/proc/self/cgroup").read_text())
    child = spawner.spawn(config(busybox_rootfs, ["true"]), bundle=str(tmp_path))     # it lives on
    child.wait_exec()
    assert child.wait().exit_code == 0
    child.close()


def test_errors_come_back_with_their_code(spawner, busybox_rootfs, tmp_path) -> None:
    with pytest.raises(SpawnError, match="executable file not found") as info:
        spawner.spawn(config(busybox_rootfs, ["no-such-command"]), bundle=str(tmp_path))
    assert info.value.exit_code == 127
    with pytest.raises(SpawnError, match="rootfs .* does not exist"):
        spawner.spawn(config(tmp_path / "missing", ["true"]), bundle=str(tmp_path))
    bad = config(busybox_rootfs, ["true"])
    bad["process"]["args"] = "true"
    with pytest.raises(SpawnError, match="process.args"):
        spawner.spawn(bad, bundle=str(tmp_path))
    # The spawner survived all of that.
    child = spawner.spawn(config(busybox_rootfs, ["true"]), bundle=str(tmp_path))
    child.wait_exec()
    assert child.wait().exit_code == 0
    child.close()


def test_many_inits_in_a_row(spawner, busybox_rootfs, tmp_path) -> None:
    children = [spawner.spawn(config(busybox_rootfs, ["sh", "-c", f"exit {i}"]), bundle=str(tmp_path)) for i in range(20)]
    codes = []
    for child in children:
        child.wait_exec()
        codes.append(child.wait().exit_code)
        child.close()
    assert codes == list(range(20))


def test_a_dead_spawner_is_a_clear_error(busybox_rootfs, tmp_path) -> None:
    s = Spawner.start()
    s._process.kill()
    s._process.wait()
    with pytest.raises(SpawnError, match=f"spawner \\(pid {s.pid}\\)"):
        s.spawn(config(busybox_rootfs, ["true"]), bundle=str(tmp_path))
    s.close()
