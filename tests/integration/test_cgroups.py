"""runtime.cgroups on the real kernel, whichever version the host runs.

The same tests run here on cgroup v1 (this host is hybrid) and, selected by
``-m cgroup_v2``, inside user-mode-linux on v2 (tests/integration/test_in_uml.py).
A few tests at the end are for one version only.

Each test gets a fresh cgroup ``<unique parent>/work`` from the ``work``
fixture and registers every process it starts; the fixture kills those by PID,
empties and removes the cgroup and its parent whatever happens. No assertion is
on speed: CPU bands are generous and every wait is a bounded poll.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cgroups import Cgroup, CgroupMode, Resources, V1Cgroup, V2Cgroup, detect_mode, open_cgroup
from runtime.errors import CgroupError

from .conftest import wait_for

MiB = 1 << 20


def host_mode() -> CgroupMode | None:
    try:
        return detect_mode(Path("/proc/self/mountinfo").read_text())
    except CgroupError:
        return None



class Work:
    """The cgroup under test and the processes a test started in it."""

    def __init__(self, cg: Cgroup) -> None:
        self.cg = cg
        self.procs: list[subprocess.Popen] = []

    def python(self, code: str) -> subprocess.Popen:
        """Start ``python -c code`` inside the cgroup; the code runs only once it is in."""
        p = subprocess.Popen([sys.executable, "-c", "import sys\nsys.stdin.readline()\n" + code],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        self.cg.add_process(p.pid)
        p.stdin.write("go\n")
        p.stdin.flush()
        return p

    def command(self, *argv: str) -> subprocess.Popen:
        p = subprocess.Popen(list(argv))
        self.procs.append(p)
        self.cg.add_process(p.pid)
        return p

    def usage_usec(self) -> int:
        usage = self.cg.stats().cpu_usage_usec
        assert usage is not None
        return usage


V2_NEEDED = {"memory", "pids", "cpu"}


def _usable() -> str | None:
    """Why this host cannot run these tests, or None."""
    mode = host_mode()
    if mode is None:
        return "no cgroup filesystem is mounted"
    if mode is CgroupMode.UNIFIED:
        try:
            controllers = set(Path("/sys/fs/cgroup/cgroup.controllers").read_text().split())
        except OSError:
            controllers = set()
        if not V2_NEEDED <= controllers:
            return "needs a cgroup v2 hierarchy with controllers memory, pids, cpu (or v1 hierarchies)"
    return None


pytestmark = [
    pytest.mark.root,
    pytest.mark.cgroup_v2,      # also run inside user-mode-linux
    pytest.mark.skipif(_usable() is not None, reason=str(_usable())),
]


@pytest.fixture
def work(cgroup_parent: str) -> Iterator[Work]:
    top = open_cgroup(cgroup_parent)
    cg = open_cgroup(f"{cgroup_parent}/work")
    assert isinstance(cg, V2Cgroup if host_mode() is CgroupMode.UNIFIED else V1Cgroup)
    cg.create()
    work = Work(cg)
    try:
        yield work
    finally:
        for p in work.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()
        try:
            # Grandchildren (fork tests) are ours too; the cgroup holds nothing else.
            if cg.pids():
                cg.kill()
                wait_for(lambda: not cg.pids(), timeout=5, what="the cgroup to empty")
        finally:
            cg.remove()
            top.remove()


BUSY_LOOP = "while True:\n    pass\n"


def test_memory_limit_oom_kills(work: Work) -> None:
    work.cg.apply(Resources(memory_max_bytes=64 * MiB, swap_max_bytes=0))
    fd = work.cg.open_oom_watch()
    try:
        p = work.python(
            "chunks = []\n"
            "for _ in range(64):\n"
            "    chunks.append(b'x' * (16 << 20))   # touched pages: 1 GiB in all\n"
            "print('survived', flush=True)\n"
        )
        assert p.wait(timeout=30) == -9, "the allocating process was not OOM-killed"
        readable, _, _ = select.select([fd], [], [], 5)
        assert readable == [fd], "the OOM watch did not become readable"
        stats = work.cg.stats()
        assert stats.oom_kill_count is not None and stats.oom_kill_count >= 1
        assert stats.oom_events is not None and stats.oom_events >= 1
        # v1 counts the hit on memory.memsw.failcnt when memsw is the tighter limit
        assert stats.memory_failcnt is not None
        assert stats.memory_limit_bytes == 64 * MiB
    finally:
        os.close(fd)


def test_pids_max_stops_forks(work: Work) -> None:
    work.cg.apply(Resources(pids_max=8))
    p = work.python(
        "import os\n"
        "r, w = os.pipe()\n"
        "kids, err = [], None\n"
        "for _ in range(64):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        err = e.errno\n"
        "        break\n"
        "    if pid == 0:\n"
        "        os.close(w)\n"
        "        os.read(r, 1)   # until the parent closes (or dies)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "os.close(w)\n"
        "for k in kids:\n"
        "    os.waitpid(k, 0)\n"
        "print(len(kids), err, flush=True)\n"
    )
    out, _ = p.communicate(timeout=30)
    forked, err = out.split()
    assert err == str(errno.EAGAIN), out
    assert 1 <= int(forked) <= 7, out   # the parent itself is one of the 8
    stats = work.cg.stats()
    assert stats.pids_max == 8


def test_cpu_quota_limits_usage(work: Work) -> None:
    work.cg.apply(Resources(cpu_quota_usec=20_000, cpu_period_usec=100_000))   # 0.2 CPU
    work.python(BUSY_LOOP)
    wait_for(lambda: work.usage_usec() > 0, timeout=5, what="the busy loop to run")
    u0, t0 = work.usage_usec(), time.monotonic()
    time.sleep(2.0)
    u1, t1 = work.usage_usec(), time.monotonic()
    cpus = (u1 - u0) / ((t1 - t0) * 1e6)
    assert 0.1 <= cpus <= 0.35, f"busy loop used {cpus:.3f} CPU under a 0.2 CPU quota"
    stats = work.cg.stats()
    assert stats.cpu_nr_throttled is not None and stats.cpu_nr_throttled > 0
    assert stats.cpu_throttled_usec is not None and stats.cpu_throttled_usec > 0


def test_freeze_stops_progress_and_thaw_resumes(work: Work) -> None:
    p = work.python(BUSY_LOOP)
    wait_for(lambda: work.usage_usec() > 0, timeout=5, what="the busy loop to run")
    work.cg.set_frozen(True)
    assert work.cg.is_frozen()
    u0 = work.usage_usec()
    time.sleep(0.5)
    assert work.usage_usec() - u0 < 1000, "a frozen busy loop kept using CPU"
    assert work.cg.pids() == [p.pid]
    work.cg.set_frozen(False)
    assert not work.cg.is_frozen()
    u1 = work.usage_usec()
    wait_for(lambda: work.usage_usec() > u1 + 50_000, timeout=5, what="the thawed loop to use 50 ms of CPU")
    assert p.poll() is None


def test_kill_empties_the_cgroup(work: Work) -> None:
    sleeps = [work.command("sleep", "30") for _ in range(2)]
    forker = work.python(
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "time.sleep(30)\n"
    )
    wait_for(lambda: len(work.cg.pids()) == 6, timeout=10, what="2 sleeps, the forker and its 3 children")
    work.cg.kill()
    for p in [*sleeps, forker]:
        assert p.wait(timeout=5) == -9
    wait_for(lambda: work.cg.pids() == [], timeout=5, what="the cgroup to empty")
    assert not work.cg.is_frozen()


def test_stats_are_populated(work: Work) -> None:
    work.cg.apply(Resources(memory_max_bytes=256 * MiB, pids_max=32, cpu_weight=100))
    p = work.python(
        "import os, tempfile, time\n"
        "data = b'x' * (32 << 20)\n"
        "with tempfile.TemporaryFile() as f:\n"
        "    f.write(b'y' * (4 << 20))\n"
        "    t = time.monotonic()\n"
        "    while time.monotonic() - t < 0.2:\n"
        "        pass\n"
        "    print('ready', flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    assert p.stdout.readline().strip() == "ready"
    s = work.cg.stats()
    assert s.cpu_usage_usec and s.cpu_usage_usec > 50_000
    assert s.cpu_user_usec is not None and s.cpu_system_usec is not None
    if isinstance(work.cg, V1Cgroup):   # v2's cpu.stat has no per-CPU usage
        assert s.cpu_percpu_usec is not None and len(s.cpu_percpu_usec) == os.cpu_count()
        assert sum(s.cpu_percpu_usec) <= s.cpu_usage_usec + len(s.cpu_percpu_usec)
    assert s.cpu_nr_periods is not None and s.cpu_nr_throttled is not None and s.cpu_throttled_usec is not None
    assert s.memory_usage_bytes and s.memory_usage_bytes >= 32 * MiB
    assert s.memory_max_usage_bytes is None or s.memory_max_usage_bytes >= s.memory_usage_bytes
    assert s.memory_limit_bytes == 256 * MiB
    assert s.memory_rss_bytes and s.memory_rss_bytes >= 30 * MiB
    assert s.memory_cache_bytes is not None and s.memory_inactive_file_bytes is not None
    assert s.memory_working_set_bytes is not None and 0 <= s.memory_working_set_bytes <= s.memory_usage_bytes
    assert s.memory_failcnt == 0 and s.oom_kill_count == 0 and s.oom_events == 0
    assert s.swap_usage_bytes is not None
    assert (s.pids_current, s.pids_max) == (1, 32)
    assert isinstance(s.io_devices, dict)
    assert s.memory_stat
    assert work.cg.pids() == [p.pid]
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(timeout=10) == 0


def test_errors_name_file_and_value(work: Work) -> None:
    with pytest.raises(CgroupError, match=r"failed to write '-5' to /.*/pids.max: Invalid argument"):
        work.cg.apply(Resources(pids_max=-5))


def test_remove_leaves_nothing(cgroup_parent: str) -> None:
    top = open_cgroup(cgroup_parent)
    cg = open_cgroup(f"{cgroup_parent}/gone")
    cg.create()
    cg.create()   # idempotent
    dirs = [path for _, path in cg.mount_sources()]
    assert dirs and all(d.is_dir() for d in dirs)
    p = subprocess.Popen(["sleep", "30"])
    try:
        cg.add_process(p.pid)
        started = time.monotonic()
        with pytest.raises(CgroupError, match="failed to remove cgroup"):
            cg.remove()   # busy: gives up after its bounded retries
        assert time.monotonic() - started < 5
        cg.kill()
        assert p.wait(timeout=5) == -9
        cg.remove()
        cg.remove()   # already gone: fine
        assert not any(d.exists() for d in dirs)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        cg.remove()
        top.remove()
    assert not any(path.exists() for _, path in top.mount_sources())


# -- one version only ----------------------------------------------------------------


@pytest.mark.cgroup_v1
def test_every_mounted_hierarchy_is_joined(work: Work) -> None:
    # v1 specific: the cgroup exists in each hierarchy, named ones included, and a
    # process added is listed in each.
    p = work.command("sleep", "30")
    names = [name for name, _ in work.cg.mount_sources()]
    assert "memory" in names and "systemd" in names
    for name, path in work.cg.mount_sources():
        assert str(p.pid) in (path / "cgroup.procs").read_text().split(), name


@pytest.mark.skipif(host_mode() is not CgroupMode.UNIFIED, reason="cgroup v2 only (runs inside user-mode-linux)")
def test_controllers_are_enabled_down_to_the_cgroup(work: Work) -> None:
    # v2 specific: every ancestor below the root delegates what the leaf needs.
    assert isinstance(work.cg, V2Cgroup)
    enabled = set((work.cg.path.parent / "cgroup.subtree_control").read_text().split())
    assert V2_NEEDED <= enabled
    assert V2_NEEDED <= set((work.cg.path / "cgroup.controllers").read_text().split())
