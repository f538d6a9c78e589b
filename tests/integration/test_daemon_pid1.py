"""The daemon as PID 1 of a PID namespace: a services file, orphans reaped, a clean SIGTERM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import corral_command, wait_for

pytestmark = pytest.mark.root


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def test_pid1_daemon_runs_services_reaps_orphans_and_stops(tmp_path: Path, cgroup_parent: str) -> None:
    services = tmp_path / "services.yaml"
    services.write_text("name: init\nservices:\n  app:\n    image: busybox:latest\n    command: sleep 1000\n"
                        "    stop_grace_period: 1s\n    restart: always\n")
    sock = tmp_path / "run/corral.sock"
    log = open(tmp_path / "daemon.log", "w")
    unshare = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *corral_command(), "daemon",
         "--data-root", str(tmp_path / "data"), "--exec-root", str(tmp_path / "run"),
         "--cgroup-parent", cgroup_parent, "--services", str(services), "--metrics-addr", "none"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*corral_command(), "-H", f"unix://{sock}", *args], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    try:
        wait_for(lambda: sock.exists() and cli("ps").returncode == 0, timeout=30, what="the daemon's socket")
        daemon = _children(unshare.pid)[0]
        nspid = next(line for line in Path(f"/proc/{daemon}/status").read_text().splitlines()
                     if line.startswith("NSpid:"))
        assert nspid.split()[-1] == "1", nspid        # PID 1 in its namespace
        assert cli("image", "bootstrap", "busybox").returncode == 0
        subprocess.run(["kill", "-HUP", str(daemon)], check=True)
        wait_for(lambda: "init-app-1" in cli("ps").stdout, timeout=30, what="the service to run")

        # An orphan in the daemon's namespace: its parent (sh) exits at once, so
        # the sleep is reparented to PID 1, the daemon, which must reap it.
        out = subprocess.run(["nsenter", "-t", str(daemon), "-p", "-m", "sh", "-c", "sleep 0.3 & echo $!"],
                             capture_output=True, text=True, timeout=10, check=True)
        orphan = out.stdout.strip()

        def reaped() -> bool:
            r = subprocess.run(["nsenter", "-t", str(daemon), "-m", "cat", f"/proc/{orphan}/stat"],
                               capture_output=True, text=True, timeout=10)
            return r.returncode != 0          # gone: not running, not a zombie
        wait_for(reaped, timeout=10, what=f"orphan {orphan} to be reaped")

        subprocess.run(["kill", "-TERM", str(daemon)], check=True)   # unshare passes on the exit status
        assert unshare.wait(timeout=60) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    finally:
        if unshare.poll() is None:
            # --kill-child: the daemon dies with unshare, and as PID 1 it takes its
            # whole namespace (containers included) with it.
            unshare.kill()
            unshare.wait()
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert "corral daemon stopped" in text
