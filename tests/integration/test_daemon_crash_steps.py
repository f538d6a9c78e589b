"""A daemon SIGKILLed at each step of create, start, remove and restart comes back consistent.

Each test starts a daemon with ``CORRAL_TEST_CRASH_AT=<point>`` (supervisor/_crashpoints.py),
so it kills itself at exactly that step; the test then looks at what the dead daemon left
(directories, cgroup members, mounts), restarts it on the same data root without the variable,
and checks the state: a container exists fully or not at all, is never "running" without a
process, and no process, cgroup, mount or directory of the first daemon is left.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from supervisor._crashpoints import ENV

from ._daemon import Daemon
from .conftest import _cgroup_dirs, wait_for

pytestmark = pytest.mark.root


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def crash_at(d: Daemon, point: str, *args: str) -> None:
    """Start ``d`` armed at ``point``, run ``corral ARGS`` (which the crash cuts short), wait for the SIGKILL."""
    d.start(env={ENV: point})
    d.ok("image", "bootstrap", "busybox")
    if args:
        d.cli(*args)
    wait_for(lambda: d.process.poll() is not None, timeout=30, what=f"the daemon to crash at {point}")
    assert d.process.returncode == -signal.SIGKILL, d.log.read_text()[-3000:]
    assert f"crash point {point.partition('@')[0]} " in d.log.read_text()
    d.process = None


def container_dirs(d: Daemon) -> list[str]:
    root = d.data_root / "containers"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def cgroups_of(d: Daemon, cid: str) -> list[Path]:
    return [p for p in _cgroup_dirs(f"{d.cgroup_parent}/{cid}") if p.exists()]


def pids_in_cgroup(d: Daemon, cid: str) -> set[int]:
    pids: set[int] = set()
    for cg in cgroups_of(d, cid):
        try:
            pids.update(int(p) for p in (cg / "cgroup.procs").read_text().split())
        except OSError:
            continue
    return pids


def mounted(path: Path) -> bool:
    target = str(path)
    return any(line.split()[4] == target for line in Path("/proc/self/mountinfo").read_text().splitlines())


def rootfs(d: Daemon, cid: str) -> Path:
    return d.data_root / "containers" / cid / "rootfs"


def no_leftovers(d: Daemon, cid: str, old_pids: set[int] = frozenset()) -> None:
    """Nothing of ``cid`` runs or is mounted, and it has no cgroup (the restarted daemon cleaned up)."""
    wait_for(lambda: not any(alive(p) for p in old_pids), timeout=10, what=f"old processes {old_pids} gone")
    assert not cgroups_of(d, cid)
    assert not mounted(rootfs(d, cid))


def container_events(d: Daemon, cid: str) -> list[dict]:
    return [e for e in d.events("--filter", "type=container") if e["id"] == cid]


@pytest.mark.parametrize("point", ["create:mid-dir", "create:before-record", "journal:after-writes"])
def test_crash_mid_create_leaves_no_container(tmp_path: Path, cgroup_parent: str, point: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    try:
        crash_at(d, point, "create", "--name", "web", "busybox", "sleep", "1000")
        (cid,) = container_dirs(d)                  # the crash came with the directory made

        d.start()
        assert d.json_lines("ps", "-a") == []
        assert container_dirs(d) == []              # restore deleted the directory without a record
        assert container_events(d, cid) == []       # no event for a record that is not there
        assert not cgroups_of(d, cid)
        # The name is free again, and a container made now runs.
        d.ok("run", "-d", "--name", "web", "busybox", "sleep", "1000")
        assert d.inspect("web")["State"]["Running"] is True
    finally:
        d.close()


def test_crash_after_create_record_keeps_the_whole_container(tmp_path: Path, cgroup_parent: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    try:
        crash_at(d, "create:after-record", "create", "--name", "web", "busybox", "sleep", "1000")
        (cid,) = container_dirs(d)

        d.start()
        assert d.inspect("web")["Id"] == cid and d.inspect("web")["State"]["Status"] == "created"
        assert [e["action"] for e in container_events(d, cid)] == ["create"]
        d.ok("start", "web")
        wait_for(lambda: d.inspect("web")["State"]["Running"], timeout=10, what="web to run")
        d.ok("rm", "-f", "web")
        assert container_dirs(d) == []
        no_leftovers(d, cid)
    finally:
        d.close()


@pytest.mark.parametrize(("point", "policy"), [
    ("start:before-event", "no"), ("start:after-event", "no"), ("start:after-event", "always"),
])
def test_crash_mid_start(tmp_path: Path, cgroup_parent: str, point: str, policy: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    try:
        crash_at(d, point, "run", "-d", "--name", "web", "--restart", policy, "busybox", "sleep", "1000")
        (cid,) = container_dirs(d)
        old_pids = pids_in_cgroup(d, cid)
        assert old_pids and all(alive(p) for p in old_pids)       # the init outlived the daemon
        assert mounted(rootfs(d, cid))

        d.start()
        wait_for(lambda: not any(alive(p) for p in old_pids), timeout=10, what="the old init gone")
        state = d.inspect("web")["State"]
        if policy == "always":
            wait_for(lambda: d.inspect("web")["State"]["Running"], timeout=20, what="web restarted by policy")
            info = d.inspect("web")
            assert info["State"]["Pid"] not in old_pids and alive(info["State"]["Pid"])
            assert info["RestartCount"] == 1
            assert pids_in_cgroup(d, cid) == {info["State"]["Pid"]}
        else:
            assert state["Running"] is False and state["Pid"] == 0
            # Before the start was journaled it never started; after, it ran and its exit is unknown.
            assert state["Status"] == ("created" if point == "start:before-event" else "exited")
            no_leftovers(d, cid, old_pids)
            assert [row["Names"] for row in d.json_lines("ps")] == []
            d.ok("start", "web")                                  # and it runs again
            wait_for(lambda: d.inspect("web")["State"]["Running"], timeout=10, what="web to run")
        d.ok("rm", "-f", "web")
        no_leftovers(d, cid)
    finally:
        d.close()


def test_crash_mid_run_removes_an_rm_container(tmp_path: Path, cgroup_parent: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    try:
        crash_at(d, "start:after-event", "run", "-d", "--rm", "--name", "temp", "busybox", "sleep", "1000")
        (cid,) = container_dirs(d)
        old_pids = pids_in_cgroup(d, cid)
        assert old_pids

        d.start()
        # Its run is over, so --rm applies: gone with its directory, cgroup and mount.
        assert d.json_lines("ps", "-a") == [] and container_dirs(d) == []
        assert [e["action"] for e in container_events(d, cid)][-1] == "destroy"
        no_leftovers(d, cid, old_pids)
    finally:
        d.close()


@pytest.mark.parametrize("point", ["remove:before-record", "remove:after-record"])
def test_crash_mid_remove(tmp_path: Path, cgroup_parent: str, point: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    try:
        d.start(env={ENV: point})
        d.ok("image", "bootstrap", "busybox")
        cid = d.ok("run", "-d", "--name", "web", "busybox", "sleep", "1000").strip()
        old_pid = d.inspect("web")["State"]["Pid"]
        d.cli("rm", "-f", "web")
        wait_for(lambda: d.process.poll() is not None, timeout=30, what=f"the daemon to crash at {point}")
        assert d.process.returncode == -signal.SIGKILL
        d.process = None
        assert not alive(old_pid)                     # stopped before the remove began
        assert container_dirs(d) == [cid]

        d.start()
        no_leftovers(d, cid, {old_pid})
        if point == "remove:before-record":
            # Still all there, stopped, and removable.
            assert d.inspect("web")["State"]["Status"] == "exited"
            assert container_dirs(d) == [cid] and (d.data_root / "containers" / cid / "hostname").exists()
            d.ok("rm", "web")
        else:
            # Gone: the record with its destroy event; restore deleted the directory.
            assert d.cli("inspect", "web").returncode != 0
            assert [e["action"] for e in container_events(d, cid)].count("destroy") == 1
        assert d.json_lines("ps", "-a") == []
        assert container_dirs(d) == []
        d.ok("create", "--name", "web", "busybox", "true")      # the name is free
    finally:
        d.close()


@pytest.mark.parametrize("point", ["restart:backoff@2", "restart:before-event@1"])
def test_crash_mid_restart_keeps_on_failure_count(tmp_path: Path, cgroup_parent: str, point: str) -> None:
    d = Daemon(tmp_path, cgroup_parent)
    try:
        crash_at(d, point, "run", "-d", "--name", "flaky", "--restart", "on-failure:3", "busybox", "sh", "-c", "exit 3")
        (cid,) = container_dirs(d)

        d.start()
        wait_for(lambda: d.inspect("flaky")["State"]["Status"] == "exited"
                 and d.inspect("flaky")["RestartCount"] == 3
                 and not cgroups_of(d, cid), timeout=30, what="flaky to give up")
        info = d.inspect("flaky")
        assert info["State"]["ExitCode"] == 3
        events = container_events(d, cid)
        # Three restarts in all, across the crash: each announced once, counted 1, 2, 3.
        assert [e["attributes"]["restartCount"] for e in events if e["action"] == "restart"] == ["1", "2", "3"]
        assert [e["action"] for e in events].count("start") == 4
        no_leftovers(d, cid)
    finally:
        d.close()


@pytest.mark.parametrize("point", ["restart:backoff", "restart:before-event"])
def test_crash_mid_restart_always_keeps_running(tmp_path: Path, cgroup_parent: str, point: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # The first run fails, every later one runs on: the restart the crash cuts is the one that stays up.
    script = "if [ -e /marks/failed ]; then exec sleep 1000; fi; touch /marks/failed; exit 1"
    d = Daemon(tmp_path, cgroup_parent)
    try:
        crash_at(d, point, "run", "-d", "--name", "keeper", "--restart", "always", "-v", f"{marks}:/marks",
                 "busybox", "sh", "-c", script)
        (cid,) = container_dirs(d)
        old_pids = pids_in_cgroup(d, cid)           # the restart's init, when the crash came after it
        assert bool(old_pids) == (point == "restart:before-event")

        d.start()
        wait_for(lambda: d.inspect("keeper")["State"]["Running"], timeout=20, what="keeper to run again")
        wait_for(lambda: not any(alive(p) for p in old_pids), timeout=10, what="the cut-short init gone")
        info = d.inspect("keeper")
        assert info["RestartCount"] == 1                  # the restart in flight, made once
        assert pids_in_cgroup(d, cid) == {info["State"]["Pid"]}
        events = container_events(d, cid)
        assert [e["attributes"]["restartCount"] for e in events if e["action"] == "restart"] == ["1"]
        assert [e["action"] for e in events].count("start") == 2
        d.ok("rm", "-f", "keeper")
        no_leftovers(d, cid, old_pids)
    finally:
        d.close()
