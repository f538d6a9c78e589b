"""ps filters, top, container prune, info and version through `corral` on the real kernel.

Each test runs its own daemon (``tests/integration/_daemon.py``); the fixture
force-removes every container and stops the daemon afterwards.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from runtime.cgroups import CgroupMode, detect_mode

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the `daemon` fixture
from .conftest import wait_for

pytestmark = pytest.mark.root


def _names(daemon: Daemon, *args: str) -> set[str]:
    return {r["Names"][0].lstrip("/") for r in daemon.json_lines("ps", *args)}


@pytest.fixture
def five(daemon: Daemon) -> dict[str, str]:
    """One container in each state we can hold still: name -> id."""
    ids = {
        "f-run": daemon.ok("run", "-d", "--name", "f-run", "-l", "tier=web", "busybox", "sleep", "1000"),
        "f-exit0": daemon.ok("run", "-d", "--name", "f-exit0", "-l", "tier=db", "busybox", "true"),
        "f-exit3": daemon.ok("run", "-d", "--name", "f-exit3", "-l", "tier=web", "-l", "x=1",
                             "busybox", "sh", "-c", "exit 3"),
        "f-created": daemon.ok("create", "--name", "f-created", "busybox", "true"),
        "f-paused": daemon.ok("run", "-d", "--name", "f-paused", "busybox", "sleep", "1000"),
    }
    daemon.ok("wait", "f-exit0", "f-exit3")
    daemon.ok("pause", "f-paused")
    return {name: cid.strip() for name, cid in ids.items()}


def test_ps_filters(daemon: Daemon, five: dict[str, str]) -> None:
    assert _names(daemon) == {"f-run", "f-paused"}                        # running (and paused) only
    assert _names(daemon, "-a") == set(five)
    # status: a status filter implies -a (moby); values of one key are OR-ed.
    assert _names(daemon, "--filter", "status=exited") == {"f-exit0", "f-exit3"}
    assert _names(daemon, "--filter", "status=running") == {"f-run"}
    assert _names(daemon, "--filter", "status=paused") == {"f-paused"}
    assert _names(daemon, "--filter", "status=created") == {"f-created"}
    assert _names(daemon, "-f", "status=created", "-f", "status=paused") == {"f-created", "f-paused"}
    assert _names(daemon, "--filter", "status=restarting") == set()
    # name: a pattern searched in "/name".
    assert _names(daemon, "-a", "--filter", "name=f-exit") == {"f-exit0", "f-exit3"}
    assert _names(daemon, "-a", "--filter", "name=^/f-run$") == {"f-run"}
    # label: key, key=value; several label filters must all hold (moby's MatchKVList).
    assert _names(daemon, "-a", "--filter", "label=tier") == {"f-run", "f-exit0", "f-exit3"}
    assert _names(daemon, "-a", "--filter", "label=tier=web") == {"f-run", "f-exit3"}
    assert _names(daemon, "-a", "-f", "label=tier=web", "-f", "label=x") == {"f-exit3"}
    # id: a prefix; two prefixes OR-ed.
    assert _names(daemon, "-a", "--filter", f"id={five['f-run'][:10]}") == {"f-run"}
    assert _names(daemon, "-a", "-f", f"id={five['f-run'][:10]}", "-f", f"id={five['f-created']}") == {
        "f-run", "f-created"}
    # ancestor: by name, name:tag, id prefix; an unknown image matches nothing.
    image_id = daemon.json_lines("images")[0]["Id"]
    for ref in ("busybox", "busybox:latest", image_id, image_id.removeprefix("sha256:")[:12]):
        assert _names(daemon, "-a", "--filter", f"ancestor={ref}") == set(five), ref
    assert _names(daemon, "-a", "--filter", "ancestor=nosuchimage") == set()
    # exited: the exit code, exited containers only.
    assert _names(daemon, "-a", "--filter", "exited=3") == {"f-exit3"}
    assert _names(daemon, "-a", "--filter", "exited=0") == {"f-exit0"}
    # Different keys are AND-ed.
    assert _names(daemon, "-f", "status=exited", "-f", "label=tier=web") == {"f-exit3"}
    assert _names(daemon, "-a", "-f", "name=f-", "-f", "label=tier=db", "-f", "status=running") == set()


def test_ps_errors_and_output_forms(daemon: Daemon, five: dict[str, str]) -> None:
    out = daemon.cli("ps", "--filter", "bogus=1")
    assert out.returncode == 125 and "invalid filter 'bogus'" in out.stderr
    out = daemon.cli("ps", "--filter", "status=sleeping")
    assert out.returncode == 125 and "invalid filter 'status=sleeping'" in out.stderr
    out = daemon.cli("ps", "--filter", "since=f-run")
    assert out.returncode == 125 and "not supported" in out.stderr
    # -q: short ids, --no-trunc: full ids, newest first.
    assert daemon.ok("ps", "-aq", "--filter", "status=exited").split() == [five["f-exit3"][:12], five["f-exit0"][:12]]
    assert daemon.ok("ps", "-q", "--no-trunc", "--filter", "name=f-run").split() == [five["f-run"]]
    assert daemon.ok("ps", "-lq").split() == [five["f-paused"][:12]]
    assert daemon.ok("ps", "-n", "2", "-q").split() == [five["f-paused"][:12], five["f-created"][:12]]
    # The table: docker's header, columns aligned at the header's offsets, ages in words.
    lines = daemon.ok("ps", "-a").splitlines()
    header = lines[0]
    assert re.match(r"CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES$", header)
    row = next(line for line in lines if line.endswith("f-exit3"))
    assert row.startswith(five["f-exit3"][:12] + " ")
    assert row[header.index("IMAGE"):].startswith("busybox ")
    # Words as docker prints them; how many seconds depends on the machine's load, not on us.
    assert re.match(r"(Less than a second|1 second|\d+ seconds|About a minute) ago ", row[header.index("CREATED"):])
    assert row[header.index("STATUS"):].startswith("Exited (3) ")
    assert '"sh -c \'exit 3\'"' in row
    paused = next(line for line in lines if line.endswith("f-paused"))
    assert re.search(r"Up (Less than a second|\d+ seconds?) \(Paused\)", paused)


def test_top_lists_the_containers_processes_with_host_pids(daemon: Daemon) -> None:
    # The init forks a second sleep, then becomes the first: two processes, parent and child.
    daemon.ok("run", "-d", "--name", "topper", "busybox", "sh", "-c", "sleep 1001 & exec sleep 1000")
    pid = daemon.inspect("topper")["State"]["Pid"]

    def both() -> list[list[str]] | None:
        rows = _top(daemon, "topper")[1]
        return rows if {r[-1] for r in rows} == {"sleep 1000", "sleep 1001"} else None
    rows = wait_for(both, timeout=10, what="both sleeps in top")
    titles = _top(daemon, "topper")[0]
    # Docker's columns, plus CPID (the PID inside the container) after PID.
    assert titles == ["UID", "PID", "CPID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    by_cmd = {r[-1]: r for r in rows}
    assert by_cmd["sleep 1000"][1] == str(pid) and by_cmd["sleep 1000"][0] == "root"
    assert by_cmd["sleep 1000"][2] == "1"                           # the init is PID 1 inside
    assert by_cmd["sleep 1001"][3] == str(pid)                      # its parent is the init, by host PID
    child = int(by_cmd["sleep 1001"][1])
    assert Path(f"/proc/{child}/cmdline").read_bytes() == b"sleep\x001001\x00"
    # ps options pass through; with -o the columns are the caller's (and CPID).
    titles, rows = _top(daemon, "topper", "-o", "pid,comm")
    assert titles == ["PID", "CPID", "COMMAND"]
    assert sorted(rows) == sorted([[str(pid), "1", "sleep"], [str(child), by_cmd["sleep 1001"][2], "sleep"]])
    out = daemon.cli("top", "topper", "-o", "comm")
    assert out.returncode == 125 and "no PID column" in out.stderr
    daemon.ok("kill", "topper")
    daemon.ok("wait", "topper")
    out = daemon.cli("top", "topper")
    assert out.returncode == 125 and "is not running" in out.stderr
    assert any(e["action"] == "top" for e in daemon.events("--filter", "container=topper"))


def _top(daemon: Daemon, *args: str) -> tuple[list[str], list[list[str]]]:
    """The top table back into cells: the header's words, each row split as many times."""
    lines = daemon.ok("top", *args).splitlines()
    titles = lines[0].split()
    return titles, [line.split(None, len(titles) - 1) for line in lines[1:]]


def test_container_prune_removes_exactly_the_stopped_ones(daemon: Daemon) -> None:
    created = daemon.ok("create", "--name", "p-created", "-l", "keep", "busybox", "true").strip()
    daemon.ok("run", "--name", "p-exited", "busybox", "sh", "-c", "head -c 100000 /dev/zero > /big")
    exited = daemon.inspect("p-exited")["Id"]
    running = daemon.inspect(daemon.ok("run", "-d", "--name", "p-running", "busybox", "sleep", "1000").strip())["Id"]
    daemon.ok("run", "-d", "--name", "p-paused", "busybox", "sleep", "1000")
    daemon.ok("pause", "p-paused")
    paused = daemon.inspect("p-paused")["Id"]

    out = daemon.ok("container", "prune", "-f", "--filter", "label!=keep")
    assert out.splitlines()[:3] == ["Deleted Containers:", exited, ""]
    space = re.search(r"^Total reclaimed space: ([\d.]+)kB$", out, re.MULTILINE)
    assert space and 100 <= float(space.group(1)) < 110, out          # the 100 kB the container wrote
    assert set(daemon.ok("ps", "-aq", "--no-trunc").split()) == {created, running, paused}

    out = daemon.ok("container", "prune", "-f")
    assert out.splitlines() == ["Deleted Containers:", created, "", "Total reclaimed space: 0B"]
    assert set(daemon.ok("ps", "-aq", "--no-trunc").split()) == {running, paused}
    assert daemon.ok("container", "prune", "-f").splitlines() == ["Total reclaimed space: 0B"]
    # Without -f it asks; no answer (stdin is /dev/null) means no.
    daemon.ok("stop", "-t", "0", "p-running")
    assert "Are you sure" in daemon.ok("container", "prune") and running in daemon.ok("ps", "-aq", "--no-trunc")
    prunes = daemon.events("--filter", "type=container", "--filter", "event=prune")
    assert [int(e["attributes"]["reclaimed"]) for e in prunes][:2] == [int(float(space.group(1)) * 1000), 0]


def test_info_and_version(daemon: Daemon) -> None:
    daemon.ok("run", "-d", "--name", "i-run", "busybox", "sleep", "1000")
    daemon.ok("run", "-d", "--name", "i-paused", "busybox", "sleep", "1000")
    daemon.ok("pause", "i-paused")
    daemon.ok("create", "--name", "i-created", "busybox", "true")
    daemon.ok("run", "--name", "i-exited", "busybox", "true")
    info = daemon.json_lines("info")[0]
    assert (info["Containers"], info["ContainersRunning"], info["ContainersPaused"], info["ContainersStopped"]) == (
        4, 1, 1, 2)
    assert info["Images"] == 1 and info["DockerRootDir"] == str(daemon.data_root)
    mode = detect_mode(Path("/proc/self/mountinfo").read_text())
    assert info["CgroupVersion"] == ("2" if mode is CgroupMode.UNIFIED else "1")
    assert info["CgroupDriver"] == "cgroupfs" and info["Driver"] == "overlay2"
    assert info["KernelVersion"] == os.uname().release and info["OSType"] == "linux"
    assert info["NCPU"] == len(os.sched_getaffinity(0)) and info["MemTotal"] > 0
    assert info["OperatingSystem"] and re.match(r"^\d+\.\d+", info["ServerVersion"])
    assert len(info["ID"]) == 32 and daemon.json_lines("info")[0]["ID"] == info["ID"]    # stable
    text = daemon.ok("info")
    for line in (" Containers: 4", "  Running: 1", "  Paused: 1", "  Stopped: 2", " Images: 1",
                 f" Docker Root Dir: {daemon.data_root}", f" Kernel Version: {os.uname().release}",
                 f" Cgroup Version: {info['CgroupVersion']}", " Cgroup Driver: cgroupfs"):
        assert line in text.splitlines(), (line, text)

    version = daemon.json_lines("version")[0]
    assert version["Server"]["ApiVersion"] == version["Client"]["ApiVersion"] == "1.41"
    assert version["Server"]["Version"] == version["Client"]["Version"] == info["ServerVersion"]
    assert version["Server"]["KernelVersion"] == os.uname().release and version["Server"]["Os"] == "linux"
    text = daemon.ok("version")
    assert text.startswith("Client:\n") and "\nServer: corral\n Engine:\n" in text
    assert re.search(r"^  API version:\s+1\.41 \(minimum version 1\.41\)$", text, re.MULTILINE)
