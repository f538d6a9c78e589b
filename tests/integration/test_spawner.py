"""The spawner helper: inits cloned for us (CLONE_PARENT), stdio passed, errors carried back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.cgroups import open_cgroup
from runtime.errors import SpawnError
from runtime.spawn import read_start_time
from runtime.spawner import Spawner

from .conftest import runc_spec

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
        in_cgroup = [line for line in Path(f"/proc/{child.pid}/cgroup").read_text().splitlines()
                     if line.endswith(f"/{cgroup_parent}/s1")]
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
    assert in_cgroup


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
