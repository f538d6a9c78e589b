"""linux.resources on the real kernel: memory (OOM kill), pids (fork bomb), cpu
quota, and the freezer, measured through `corral runtime events --stats`.

Tests without a version marker read only what `events --stats` reports, so
they run unchanged on cgroup v1 here and on v2 inside user-mode-linux. The
cgroup_v1 ones read the v1 files themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import partial
import time
from pathlib import Path

import pytest

from .conftest import corral, run_detached, wait_for, with_resources

# Version-independent: run here on v1, and under v2 inside user-mode-linux (-m cgroup_v2).
pytestmark = [pytest.mark.root, pytest.mark.cgroup_v2]

TIMEOUT = 60
# Runs here allocate memory and burn CPU (slowly, under UML): a longer bound for every call.
corral = partial(corral, timeout=TIMEOUT)
run_detached = partial(run_detached, timeout=TIMEOUT)
MiB = 1 << 20
# A shell variable of 200 MB: busybox sh keeps command substitution output in memory.
HOG = 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}'
BUSY = "while :; do :; done"


def stats(state_root: Path, cid: str) -> dict:
    out = corral(state_root, "events", "--stats", cid)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["data"]


def cpu_ns(state_root: Path, cid: str) -> tuple[int, int]:
    """(container CPU time, wall clock), both in ns, read together."""
    return stats(state_root, cid)["cpu"]["usage"]["total"], time.monotonic_ns()


def v1_dir(pid: int, controller: str) -> Path:
    """The v1 cgroup directory of ``pid`` for ``controller``, from /proc/PID/cgroup."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controllers / path.lstrip("/")
    raise AssertionError(f"PID {pid} is in no {controller} hierarchy")


# --- memory ---------------------------------------------------------------------------


@pytest.mark.skipif(os.environ.get("CORRAL_IN_UML") == "1",
                    reason="a check of busybox, not of cgroups: shown on the host; too slow on UML's emulated CPU")
def test_memory_hog_really_holds_200mb_without_a_limit(bundle, state_root):
    b = bundle.write(["sh", "-c", HOG], cgroup="hog")
    out = corral(state_root, "run", "-b", str(b), "hog")
    assert (out.returncode, out.stdout, out.stderr) == (0, "200000000\n", "")


def test_over_the_memory_limit_is_oom_killed(bundle, state_root):
    limit = with_resources(memory={"limit": 32 * MiB, "swap": 32 * MiB})   # memory+swap = memory: no swap
    b = bundle.write(["sh", "-c", HOG], cgroup="oom", edit=limit)
    out = corral(state_root, "run", "-b", str(b), "oom")
    assert (out.returncode, out.stdout) == (137, "")
    assert out.stderr == "corral runtime: container oom was OOM-killed (killed by signal SIGKILL)\n"
    assert corral(state_root, "list", "-q").stdout == ""


def test_under_the_memory_limit_runs_and_reports_no_oom(bundle, state_root, tmp_path):
    limit = with_resources(memory={"limit": 32 * MiB, "swap": 32 * MiB})
    b = bundle.write(["sh", "-c", 'x=$(head -c 8000000 /dev/zero | tr "\\0" a); echo ${#x}; exec sleep 100'],
                     cgroup="fits", edit=limit)
    run_detached(state_root, b, "fits", tmp_path)
    wait_for(lambda: (tmp_path / "fits.out").read_text() == "8000000\n", what="the 8 MB string")
    data = stats(state_root, "fits")
    assert data["memory"]["usage"]["limit"] == 32 * MiB
    assert 8_000_000 <= data["memory"]["usage"]["max"] <= 32 * MiB
    assert data["oom_kill"] == 0
    assert corral(state_root, "delete", "-f", "fits").returncode == 0


@pytest.mark.cgroup_v1
def test_v1_limit_files(bundle, state_root, tmp_path):
    edit = with_resources(memory={"limit": 32 * MiB, "swap": 48 * MiB}, cpu={"quota": 20000, "period": 100000},
                     pids={"limit": 20})
    b = bundle.write(["sleep", "100"], cgroup="files", edit=edit)
    run_detached(state_root, b, "files", tmp_path)
    pid = json.loads(corral(state_root, "state", "files").stdout)["pid"]
    memory, cpu, pids = v1_dir(pid, "memory"), v1_dir(pid, "cpu"), v1_dir(pid, "pids")
    assert memory.name == cpu.name == pids.name == "files"
    assert (memory / "memory.limit_in_bytes").read_text() == f"{32 * MiB}\n"
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == f"{48 * MiB}\n"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "20000\n"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000\n"
    assert (pids / "pids.max").read_text() == "20\n"
    assert corral(state_root, "delete", "-f", "files").returncode == 0


# --- pids -------------------------------------------------------------------------------

# The inner shell forks sleepers until fork fails (ash then exits 2); its sleepers
# stay, reparented to PID 1, which reports and then becomes a sleeper too (no fork).
BOMB = ('sh -c \'i=0; while [ $i -lt 200 ]; do sleep 100 & i=$((i+1)); done\'; '
        'echo inner=$?; exec sleep 100')


def test_fork_bomb_stops_at_pids_limit(bundle, state_root, tmp_path):
    b = bundle.write(["sh", "-c", BOMB], cgroup="bomb", edit=with_resources(pids={"limit": 20}))
    run_detached(state_root, b, "bomb", tmp_path)
    seen = []

    def reported() -> bool:
        seen.append(stats(state_root, "bomb")["pids"]["current"])
        return (tmp_path / "bomb.out").read_text() == "inner=2\n"

    wait_for(reported, timeout=20, what="the inner shell to give up")
    assert "can't fork" in (tmp_path / "bomb.err").read_text()
    data = stats(state_root, "bomb")
    assert data["pids"]["limit"] == 20
    seen.append(data["pids"]["current"])
    assert max(seen) <= 20
    # At the refusal: PID 1, the inner shell and 18 sleepers (20); the inner shell is gone since.
    assert data["pids"]["current"] == 19
    ps = json.loads(corral(state_root, "ps", "--format", "json", "bomb").stdout)
    assert len(ps) == 19
    # The host still forks.
    assert subprocess.run(["true"], timeout=TIMEOUT).returncode == 0
    assert corral(state_root, "delete", "-f", "bomb").returncode == 0
    assert corral(state_root, "list", "-q").stdout == ""


@pytest.mark.cgroup_v1
def test_v1_fork_bomb_peak_and_refusals(bundle, state_root, tmp_path):
    b = bundle.write(["sh", "-c", BOMB], cgroup="bomb1", edit=with_resources(pids={"limit": 20}))
    run_detached(state_root, b, "bomb1", tmp_path)
    wait_for(lambda: (tmp_path / "bomb1.out").read_text() == "inner=2\n", timeout=20, what="the bomb to stop")
    pid = json.loads(corral(state_root, "state", "bomb1").stdout)["pid"]
    pids = v1_dir(pid, "pids")
    events = dict(line.split() for line in (pids / "pids.events").read_text().splitlines())
    assert int(events["max"]) >= 1                          # forks were refused ...
    if (pids / "pids.peak").exists():                       # Linux 6.12+
        assert int((pids / "pids.peak").read_text()) == 20  # ... and the count never passed the limit
    assert corral(state_root, "delete", "-f", "bomb1").returncode == 0


# --- cpu ------------------------------------------------------------------------------


def busy_share(state_root: Path, cid: str, seconds: float = 2.5) -> float:
    """CPUs' worth of time the container used over ``seconds`` of wall clock."""
    used0, wall0 = cpu_ns(state_root, cid)
    time.sleep(seconds)
    used1, wall1 = cpu_ns(state_root, cid)
    return (used1 - used0) / (wall1 - wall0)


def test_cpu_quota_caps_usage(bundle, state_root, tmp_path):
    edit = with_resources(cpu={"quota": 20000, "period": 100000})
    b = bundle.write(["sh", "-c", BUSY], cgroup="quota", edit=edit)
    run_detached(state_root, b, "quota", tmp_path)
    share = busy_share(state_root, "quota")
    assert 0.10 <= share <= 0.30, f"used {share:.3f} CPU under a 0.2 CPU quota"
    assert stats(state_root, "quota")["cpu"]["throttling"]["throttled_periods"] > 0
    assert corral(state_root, "delete", "-f", "quota").returncode == 0


def test_cpu_without_quota_uses_a_whole_cpu(bundle, state_root, tmp_path):
    # The control for the test above. 0.5, not ~1.0: other tests may share the host's CPUs.
    b = bundle.write(["sh", "-c", BUSY], cgroup="free")
    run_detached(state_root, b, "free", tmp_path)
    share = busy_share(state_root, "free")
    assert share > 0.5, f"used only {share:.3f} CPU without a quota"
    assert corral(state_root, "delete", "-f", "free").returncode == 0


def test_paused_container_uses_no_cpu(bundle, state_root, tmp_path):
    b = bundle.write(["sh", "-c", BUSY], cgroup="frz")
    run_detached(state_root, b, "frz", tmp_path)
    assert corral(state_root, "pause", "frz").returncode == 0
    before, _ = cpu_ns(state_root, "frz")
    time.sleep(1.0)
    after, _ = cpu_ns(state_root, "frz")
    assert after - before <= 5_000_000, f"{after - before} ns of CPU while frozen"
    assert corral(state_root, "resume", "frz").returncode == 0
    share = busy_share(state_root, "frz", seconds=1.0)
    assert share > 0.3, f"used only {share:.3f} CPU after resume"
    assert corral(state_root, "delete", "-f", "frz").returncode == 0
