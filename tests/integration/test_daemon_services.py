"""The services file: `corral up/down -f`, `--services` at start, SIGHUP reload."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .conftest import REPO, wait_for
from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.root


def running(d: Daemon) -> dict[str, str]:
    """container name -> id, of the running ones."""
    return {row["Names"][0].lstrip("/"): row["Id"] for row in d.json_lines("ps")}


def test_up_and_down_the_example_project(daemon: Daemon) -> None:
    out = daemon.ok("up", "-d", "-f", str(REPO / "examples/compose.yaml"))
    assert "corral-demo: started web" in out
    names = running(daemon)
    assert {"corral-demo-web-1", "corral-demo-worker-1", "corral-demo-cache-1"} <= set(names)
    cache = daemon.inspect("corral-demo-cache-1")
    assert cache["HostConfig"]["Memory"] == 32 << 20 and cache["HostConfig"]["PidsLimit"] == 16
    assert cache["Config"]["Labels"]["com.docker.compose.service"] == "cache"
    assert "corral-demo_cache-data" in daemon.ok("volume", "ls", "-q")
    again = daemon.ok("up", "-f", str(REPO / "examples/compose.yaml"))
    assert "recreated" not in again and running(daemon)["corral-demo-web-1"] == names["corral-demo-web-1"]
    down = daemon.ok("down", "-f", str(REPO / "examples/compose.yaml"))
    assert "removed web" in down and daemon.ok("ps", "-aq") == ""


def write(path: Path, b_command: str, with_a: bool = True) -> None:
    a = "  a:\n    image: busybox:latest\n    command: sleep 1000\n    stop_grace_period: 1s\n" if with_a else ""
    depends = "    depends_on: [a]\n" if with_a else ""
    path.write_text(f"name: proj\nservices:\n{a}  b:\n    image: busybox:latest\n"
                    f"    command: {b_command}\n    stop_grace_period: 1s\n{depends}")


def test_services_at_start_and_sighup_reload(tmp_path: Path, cgroup_parent: str) -> None:
    compose = tmp_path / "services.yaml"
    write(compose, "sleep 1000")
    d = Daemon(tmp_path, cgroup_parent, "--services", str(compose))
    d.start()
    try:
        d.ok("image", "bootstrap", "busybox")
        d.process.send_signal(signal.SIGHUP)       # the image was not there at start
        wait_for(lambda: {"proj-a-1", "proj-b-1"} <= set(running(d)), timeout=30, what="a and b running")
        b_before = running(d)["proj-b-1"]
        write(compose, "sleep 2000", with_a=False)
        d.process.send_signal(signal.SIGHUP)
        wait_for(lambda: set(running(d)) == {"proj-b-1"} and running(d)["proj-b-1"] != b_before,
                 timeout=30, what="a removed and b recreated")
        assert d.inspect("proj-b-1")["Args"] == ["2000"]
        compose.write_text("services: [not, a, mapping]\n")
        d.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "services file" in d.log.read_text() and "ERROR" in d.log.read_text(),
                 timeout=10, what="the bad file to be logged")
        assert set(running(d)) == {"proj-b-1"}              # a bad file changes nothing
    finally:
        d.close()
