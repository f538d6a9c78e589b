"""The root cgroup tests, written once and run by test_cgroups_v1.py and test_cgroups_v2.py.

Each case gets a fresh cgroup ``<unique parent>/work`` (created by the
``work_cgroup`` fixture of the calling module) and a list to register every
process it starts; the fixture kills those by PID, empties and removes the
cgroup and its parent whatever happens. No assertion is on speed: CPU bands
are generous and every wait is a bounded poll.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.cgroups import Cgroup, CgroupMode, Resources, detect_mode, open_cgroup
from runtime.errors import CgroupError

MiB = 1 << 20


def host_mode() -> CgroupMode | None:
    try:
        return detect_mode(Path("/proc/self/mountinfo").read_text())
    except CgroupError:
        return None


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


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


def work_cgroup(parent: str) -> Iterator[Work]:
    """Body of the per-module fixture: ``parent`` comes from conftest's ``cgroup_parent``."""
    top = open_cgroup(parent)
    cg = open_cgroup(f"{parent}/work")
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
                wait_for(lambda: not cg.pids(), 5, "the cgroup to empty")
        finally:
            cg.remove()
            top.remove()


BUSY_LOOP = "while True:\n    pass\n"


# -- the cases ---------------------------------------------------------------------


def case_memory_limit_oom_kills(w: Work) -> None:
    w.cg.apply(Resources(memory_max_bytes=64 * MiB, swap_max_bytes=0))
    fd = w.cg.open_oom_watch()
    try:
        p = w.python(
            "chunks = []\n"
            "for _ in range(64):\n"
            "    chunks.append(b'x' * (16 << 20))   # touched pages: 1 GiB in all\n"
            "print('survived', flush=True)\n"
        )
        assert p.wait(timeout=30) == -9, "the allocating process was not OOM-killed"
        readable, _, _ = select.select([fd], [], [], 5)
        assert readable == [fd], "the OOM watch did not become readable"
        stats = w.cg.stats()
        assert stats.oom_kill_count is not None and stats.oom_kill_count >= 1
        assert stats.oom_events is not None and stats.oom_events >= 1
        # v1 counts the hit on memory.memsw.failcnt when memsw is the tighter limit
        assert stats.memory_failcnt is not None
        assert stats.memory_limit_bytes == 64 * MiB
    finally:
        os.close(fd)


def case_pids_max_stops_forks(w: Work) -> None:
    w.cg.apply(Resources(pids_max=8))
    p = w.python(
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
    stats = w.cg.stats()
    assert stats.pids_max == 8


def case_cpu_quota_limits_usage(w: Work) -> None:
    w.cg.apply(Resources(cpu_quota_usec=20_000, cpu_period_usec=100_000))   # 0.2 CPU
    w.python(BUSY_LOOP)
    wait_for(lambda: w.usage_usec() > 0, 5, "the busy loop to run")
    u0, t0 = w.usage_usec(), time.monotonic()
    time.sleep(2.0)
    u1, t1 = w.usage_usec(), time.monotonic()
    cpus = (u1 - u0) / ((t1 - t0) * 1e6)
    assert 0.1 <= cpus <= 0.35, f"busy loop used {cpus:.3f} CPU under a 0.2 CPU quota"
    stats = w.cg.stats()
    assert stats.cpu_nr_throttled is not None and stats.cpu_nr_throttled > 0
    assert stats.cpu_throttled_usec is not None and stats.cpu_throttled_usec > 0


def case_freeze_stops_progress_and_thaw_resumes(w: Work) -> None:
    p = w.python(BUSY_LOOP)
    wait_for(lambda: w.usage_usec() > 0, 5, "the busy loop to run")
    w.cg.set_frozen(True)
    assert w.cg.is_frozen()
    u0 = w.usage_usec()
    time.sleep(0.5)
    assert w.usage_usec() - u0 < 1000, "a frozen busy loop kept using CPU"
    assert w.cg.pids() == [p.pid]
    w.cg.set_frozen(False)
    assert not w.cg.is_frozen()
    u1 = w.usage_usec()
    wait_for(lambda: w.usage_usec() > u1 + 50_000, 5, "the thawed loop to use 50 ms of CPU")
    assert p.poll() is None


def case_kill_empties_the_cgroup(w: Work) -> None:
    sleeps = [w.command("sleep", "30") for _ in range(2)]
    forker = w.python(
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "time.sleep(30)\n"
    )
    wait_for(lambda: len(w.cg.pids()) == 6, 10, "2 sleeps, the forker and its 3 children")
    w.cg.kill()
    for p in [*sleeps, forker]:
        assert p.wait(timeout=5) == -9
    wait_for(lambda: w.cg.pids() == [], 5, "the cgroup to empty")
    assert not w.cg.is_frozen()


def case_stats_are_populated(w: Work, *, percpu: bool) -> None:
    w.cg.apply(Resources(memory_max_bytes=256 * MiB, pids_max=32, cpu_weight=100))
    p = w.python(
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
    s = w.cg.stats()
    assert s.cpu_usage_usec and s.cpu_usage_usec > 50_000
    assert s.cpu_user_usec is not None and s.cpu_system_usec is not None
    if percpu:
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
    assert w.cg.pids() == [p.pid]
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(timeout=10) == 0


def case_errors_name_file_and_value(w: Work) -> None:
    with pytest.raises(CgroupError, match=r"failed to write '-5' to /.*/pids.max: Invalid argument"):
        w.cg.apply(Resources(pids_max=-5))


def case_remove_leaves_nothing(parent: str) -> None:
    top = open_cgroup(parent)
    cg = open_cgroup(f"{parent}/gone")
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
